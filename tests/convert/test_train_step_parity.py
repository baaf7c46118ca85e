"""One training step of a BatchNorm network equals torch's: params and running statistics.

Both frameworks start from one random PyTorch state dict (non-trivial BatchNorm statistics,
random transposed-conv kernels), take one SGD step in train mode (BatchNorm on the batch's
statistics, updating the running ones; dropout off, since the two frameworks draw different
masks) on the same batch with void pixels, mean cross-entropy over the valid pixels; the
updated variables are compared in torch's layout, each tensor against the size of its update.

torch runs in float64: behind the pad-100 border most of an early feature map is one constant,
and torch's float32 BatchNorm gradients there are ~2e-3 off its own float64 ones, while ours
(float32) stay within ~2e-5 (tests/convert/test_vgg16_bn.py measures both).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fcn_jax.convert import convert_torch_file, torch_state_dict
from fcn_jax.models.speedpaper import UNUSED
from fcn_jax.train.step import create_train_state, make_steps
from tests.utils import NARROW

pytestmark = pytest.mark.torch

N_CLASS = 5
LR = 0.05


def speedpaper(seed):
    from fcn_jax.torch_reference import TorchSpeedPaperFCN, random_speedpaper_state_dict

    return TorchSpeedPaperFCN(N_CLASS, NARROW), random_speedpaper_state_dict(N_CLASS, NARROW, seed)


def vgg16_bn_fcn8s(seed):
    from fcn_jax.torch_reference import TorchFCN, random_state_dict

    state = random_state_dict("fcn8s", N_CLASS, NARROW, seed, batch_norm=True)
    return TorchFCN("fcn8s", N_CLASS, NARROW, batch_norm=True), state


def fcn_resnet50(seed):
    # torchvision's own model, without the aux head (the step's loss reads the scored heads).
    from fcn_jax.torch_reference import random_fcn_resnet_state_dict, torchvision_fcn_resnet

    net = torchvision_fcn_resnet("fcn_resnet50", N_CLASS, aux=False, width=NARROW)
    return net, random_fcn_resnet_state_dict("fcn_resnet50", N_CLASS, False, NARROW, seed)


MODELS = {
    "speedpaper": ("speedpaper", speedpaper),
    "vgg16_bn-fcn8s": ("fcn8s", vgg16_bn_fcn8s),
    "fcn_resnet50": ("fcn_resnet50", fcn_resnet50),
}


def batch(n=2, h=64, w=64, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, N_CLASS, (n, h, w)).astype(np.uint8)
    labels[:, :5] = 255  # void rows: ignored by both losses
    return {"image": rng.integers(0, 256, (n, h, w, 3), np.uint8), "label": labels}


def torch_step(net, state, x, labels):
    import torch
    import torch.nn.functional as F

    net.load_state_dict(state, strict=True)
    net.double().train()
    for module in net.modules():  # dropout off (TorchFCN's fc6 / fc7, FCNHead's), as in JAX
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    for name, p in net.named_parameters():  # the FCNs' frozen bilinear upsampling
        p.requires_grad_(not (name.startswith("upscore")))
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=LR)
    out = net(x)
    out = out["out"] if isinstance(out, dict) else out  # torchvision's models return a dict
    loss = F.cross_entropy(out, torch.from_numpy(labels).long(), ignore_index=255)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return {k: v.detach().double().numpy() for k, v in net.state_dict().items()}, loss.item()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_one_train_step_equals_torch(name, tmp_path):
    import torch

    arch, build = MODELS[name]
    net, state = build(seed=1)
    torch.save(state, tmp_path / "net.pth")
    variables, meta, _ = convert_torch_file(tmp_path / "net.pth", arch, N_CLASS)
    spec = meta.spec
    b = batch()
    x = np.asarray(spec.preprocess(b)[0]).transpose(0, 3, 1, 2)
    after_torch, torch_loss = torch_step(
        net, state, torch.from_numpy(np.ascontiguousarray(x, np.float64)), b["label"]
    )

    steps = make_steps(spec, optax.sgd(LR), "mean", batch_size=2, dropout_rate=0.0)
    start = create_train_state(jax.tree.map(jnp.asarray, variables), optax.sgd(LR), seed=0)
    with jax.default_matmul_precision("highest"):
        new, metrics = steps.train_step(start, jax.tree.map(jnp.asarray, b))
    after_jax = torch_state_dict(jax.device_get(new.variables), spec)
    before = {k: v.double().numpy() for k, v in state.items()}

    assert float(metrics["loss"]) == pytest.approx(torch_loss, rel=1e-5)
    moved, worst = 0, 0.0
    for key, ref in after_torch.items():
        if key.split(".")[0] in UNUSED or key.endswith("num_batches_tracked"):
            continue  # SpeedPaper's unused scores (exported as zeros), torch's counters
        update = np.abs(ref - before[key]).max()
        diff = np.abs(after_jax[key] - ref).max()
        # float32 reassociation: a small fraction of the update, or a few ulps of the values.
        assert diff <= 1e-3 * update + 1e-6 * max(np.abs(ref).max(), 1.0), (key, diff, update)
        moved += bool(update > 0)
        if update > 1e-4 * max(np.abs(ref).max(), 1.0):  # updates well above float32 rounding
            worst = max(worst, diff / update)
    print(f"{name}: worst max|jax - torch| / max|update| of a tensor: {worst:.2e}")
    stats = [k for k in after_torch if k.endswith("running_var")]
    assert stats and all(np.abs(after_torch[k] - before[k]).max() > 0 for k in stats)
    assert moved > len(after_torch) // 2


def test_fcn_resnet_recipe_equals_torchvision_reference(tmp_path):
    """Two steps of voc_fcn_resnet50's recipe equal torchvision's reference training loop.

    ``references/segmentation/train.py --aux-loss``: loss ``out + 0.5 * aux``; SGD momentum
    0.9, weight decay 1e-4 on every parameter; the aux head's group at 10x the rate; the poly
    schedule stepped per iteration (``LambdaLR``). Two steps, so momentum and the schedule act.
    """
    import torch
    import torch.nn.functional as F

    from fcn_jax.configs import load_config_file
    from fcn_jax.torch_reference import random_fcn_resnet_state_dict, torchvision_fcn_resnet
    from fcn_jax.train.optim import make_optimizer
    from tests.utils import REPO

    config = load_config_file(REPO / "configs/voc_fcn_resnet50.py")
    config.num_steps, config.model.n_class = 4, N_CLASS  # poly over 4 steps: 2 of them taken
    net = torchvision_fcn_resnet("fcn_resnet50", N_CLASS, aux=True, width=NARROW)
    state = random_fcn_resnet_state_dict("fcn_resnet50", N_CLASS, True, NARROW, seed=2)
    torch.save(state, tmp_path / "net.pth")
    variables, meta, _ = convert_torch_file(tmp_path / "net.pth", "fcn_resnet50", N_CLASS)
    spec = meta.spec
    assert spec.aux
    batches = [batch(seed=s) for s in (0, 1)]

    net.load_state_dict(state, strict=True)
    net.double().train()
    for module in net.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0  # the two frameworks draw different masks
    lr, o = config.learning_rate, config.optim
    groups = [
        {"params": [*net.backbone.parameters(), *net.classifier.parameters()]},
        {"params": list(net.aux_classifier.parameters()), "lr": lr * 10},
    ]
    opt = torch.optim.SGD(groups, lr=lr, momentum=o.momentum, weight_decay=o.weight_decay)
    poly = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: (1 - i / config.num_steps) ** o.lr_poly_power
    )
    torch_losses = []
    for b in batches:
        x = np.asarray(spec.preprocess(b)[0]).transpose(0, 3, 1, 2)
        out = net(torch.from_numpy(np.ascontiguousarray(x, np.float64)))
        target = torch.from_numpy(b["label"]).long()
        losses = {k: F.cross_entropy(v, target, ignore_index=255) for k, v in out.items()}
        loss = losses["out"] + 0.5 * losses["aux"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        poly.step()
        torch_losses.append(loss.item())
    after_torch = {k: v.detach().double().numpy() for k, v in net.state_dict().items()}

    tx = make_optimizer(config, variables["params"])
    steps = make_steps(spec, tx, o.loss, batch_size=2, dropout_rate=0.0, aux_loss_weight=0.5)
    new = create_train_state(jax.tree.map(jnp.asarray, variables), tx, seed=0)
    jax_losses = []
    with jax.default_matmul_precision("highest"):
        for b in batches:
            new, metrics = steps.train_step(new, jax.tree.map(jnp.asarray, b))
            jax_losses.append(float(metrics["loss"]))
    after_jax = torch_state_dict(jax.device_get(new.variables), spec)
    before = {k: v.double().numpy() for k, v in state.items()}

    assert jax_losses == pytest.approx(torch_losses, rel=1e-5)
    worst = 0.0
    for key, ref in after_torch.items():
        if key.endswith("num_batches_tracked"):
            continue
        update = np.abs(ref - before[key]).max()
        diff = np.abs(after_jax[key] - ref).max()
        assert update > 0, key  # every tensor moves: weight decay reaches every parameter
        # float32 against float64 over two steps: measured up to ~5e-3 of a tensor's update
        # (~1e-3 after one); a missing 10x, poly factor or aux weight would be 20% or more.
        assert diff <= 1e-2 * update + 1e-6 * max(np.abs(ref).max(), 1.0), (key, diff, update)
        worst = max(worst, diff / update)
    print(f"recipe: worst max|jax - torch| / max|update| of a tensor after 2 steps: {worst:.2e}")
