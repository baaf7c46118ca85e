"""VGG16-BN: torchvision's ``vgg16_bn`` into the FCN init of every variant, torchfcn-layout FCNs
on it converted both ways, and full-width parity with non-trivial BatchNorm statistics.

The torch side is :class:`~fcn_jax.torch_reference.TorchFCN` with ``batch_norm=True`` (eval mode:
BatchNorm normalises with the random running statistics, so they must arrive right).
"""

import jax
import numpy as np
import pytest
import torch
from torch import nn

from fcn_jax.checkpoint import save_weights
from fcn_jax.convert import convert_torch_file, export_torchfcn, read_torch_weights
from fcn_jax.convert.check import PARITY_TOLERANCE, check_parity
from fcn_jax.convert.layout import conv_to_flax, torchfcn_names
from fcn_jax.convert.torch_files import TORCHFCN, TORCHVISION_VGG16, TORCHVISION_VGG16_BN
from fcn_jax.errors import FCNError
from fcn_jax.models import VARIANTS, NetSpec, abstract_variables, get_variant
from fcn_jax.models.backbones.vgg16 import VGG16_BLOCKS, bn_name
from fcn_jax.preprocessing import TORCHVISION
from fcn_jax.torch_reference import TorchFCN, random_state_dict, random_vgg16_state_dict
from tests.convert.cli import load_cli
from tests.utils import NARROW, random_image, run_script, write_jpeg

pytestmark = pytest.mark.torch

ALL = sorted(VARIANTS)
CONVS = [s.name for block in VGG16_BLOCKS for s in block]
BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def save_fcn_bn(path, variant, n_class=21, width=NARROW, seed=0):
    """A torchfcn-layout VGG16-BN FCN checkpoint with random weights and statistics."""
    state = random_state_dict(variant, n_class, width, seed, batch_norm=True)
    torch.save({"model_state_dict": state, "arch": get_variant(variant).torch_name}, path)
    return state


def torchvision_vgg16_bn_layout(width: float) -> nn.Module:
    """torchvision's ``vgg16_bn`` module tree (``make_layers(cfg "D", batch_norm=True)``), written
    out here independently of fcn-jax's index table, at ``width`` (torchvision is not needed)."""
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
    layers, in_ch = [], 3
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
            continue
        out = max(1, round(v * width))
        layers += [nn.Conv2d(in_ch, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU(True)]
        in_ch = out
    fc = max(1, round(4096 * width))
    module = nn.Module()
    module.features = nn.Sequential(*layers)
    module.avgpool = nn.AdaptiveAvgPool2d((7, 7))
    module.classifier = nn.Sequential(
        nn.Linear(in_ch * 49, fc),
        nn.ReLU(True),
        nn.Dropout(),
        nn.Linear(fc, fc),
        nn.ReLU(True),
        nn.Dropout(),
        nn.Linear(fc, 1000),
    )
    return module


# ---------------------------------------------------------------- the torch side


def test_random_vgg16_bn_has_torchvisions_layout():
    ours = random_vgg16_state_dict(NARROW, seed=0, batch_norm=True)
    theirs = torchvision_vgg16_bn_layout(NARROW).state_dict()
    assert {k: tuple(v.shape) for k, v in ours.items()} == {
        k: tuple(v.shape) for k, v in theirs.items()
    }
    assert ours["features.41.num_batches_tracked"].dtype == torch.int64
    assert torch.all(ours["features.1.running_var"] > 0)


def test_torch_fcn_with_batch_norm():
    plain = set(TorchFCN("fcn8s", 21, NARROW).state_dict())
    model = TorchFCN("fcn8s", 21, NARROW, batch_norm=True)
    keys = set(model.state_dict())
    assert keys - plain == {f"{bn_name(c)}.{k}" for c in CONVS for k in BN_KEYS}
    # The torchfcn layout's names are the Flax model's (num_batches_tracked is torch's alone).
    net = NetSpec.single("fcn8s", 21, width=NARROW, backbone="vgg16_bn")
    names = torchfcn_names(abstract_variables(net))
    assert set(names) == {k for k in keys if not k.endswith("num_batches_tracked")}
    assert names["bn3_2.running_var"] == ("batch_stats", "vgg16_bn", "bn3_2", "var")
    assert names["bn3_2.weight"] == ("params", "vgg16_bn", "bn3_2", "scale")
    assert isinstance(TorchFCN.from_spec(net).bn5_3, nn.BatchNorm2d)

    # Each BatchNorm follows its convolution, before the ReLU.
    state = random_state_dict("fcn32s", 3, NARROW, seed=4, batch_norm=True)
    model = TorchFCN("fcn32s", 3, NARROW, batch_norm=True).eval()
    model.load_state_dict(state, strict=True)
    x = torch.randn(1, 3, 8, 8)
    inter = {}
    with torch.no_grad():
        model(x, intermediates=inter)
        h = x
        for i, block in enumerate(VGG16_BLOCKS, start=1):
            for s in block:
                h = torch.relu(getattr(model, bn_name(s.name))(getattr(model, s.name)(h)))
            h = torch.nn.functional.max_pool2d(h, 2, 2, ceil_mode=True)
            torch.testing.assert_close(inter[f"pool{i}"], h, rtol=0, atol=0)


# ---------------------------------------------------------------- torchvision vgg16_bn -> FCN


@pytest.fixture(scope="module")
def vgg_bn_file(tmp_path_factory):
    state = random_vgg16_state_dict(NARROW, seed=3, batch_norm=True)
    for key in state:  # a trained net's counters: ignored on import
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(12345)
    path = tmp_path_factory.mktemp("vgg_bn") / "vgg16_bn.pth"
    torch.save(state, path)
    return path, {k: v.numpy() for k, v in state.items()}


def test_vgg16_bn_initialises_every_variant(vgg_bn_file, rng):
    path, state = vgg_bn_file
    convs = {c: i for i, c in enumerate(CONVS)}
    index = {c: 3 * i + sum(i >= e for e in (2, 4, 7, 10)) for c, i in convs.items()}
    trunks = []
    for variant in ALL:
        variables, meta, source = convert_torch_file(path, variant, n_class=5)
        assert source.kind == TORCHVISION_VGG16_BN
        assert meta.spec.backbone == "vgg16_bn" and meta.arch == variant
        assert meta.preprocessing == TORCHVISION and meta.n_class == 5
        params, stats = variables["params"], variables["batch_stats"]
        assert set(params) - {"vgg16_bn"} == set(abstract_variables(meta.spec)["params"]) - {
            "vgg16_bn"
        }
        for conv in CONVS:
            n = index[conv]
            np.testing.assert_array_equal(
                params["vgg16_bn"][conv]["kernel"], conv_to_flax(state[f"features.{n}.weight"])
            )
            bn, f = params["vgg16_bn"][bn_name(conv)], f"features.{n + 1}"
            np.testing.assert_array_equal(bn["scale"], state[f"{f}.weight"])
            np.testing.assert_array_equal(bn["bias"], state[f"{f}.bias"])
            np.testing.assert_array_equal(
                stats["vgg16_bn"][bn_name(conv)]["mean"], state[f"{f}.running_mean"]
            )
            np.testing.assert_array_equal(
                stats["vgg16_bn"][bn_name(conv)]["var"], state[f"{f}.running_var"]
            )
        # New score layers zero (the paper's init); the upsampling kernels bilinear.
        assert not np.any(params["score_fr"]["kernel"]) and not np.any(params["score_fr"]["bias"])
        trunks.append(variables)
    for other in trunks[1:]:  # the same trunk and statistics for every variant
        jax.tree.map(
            np.testing.assert_array_equal,
            (trunks[0]["params"]["vgg16_bn"], trunks[0]["batch_stats"]),
            (other["params"]["vgg16_bn"], other["batch_stats"]),
        )
    report = check_parity(source, variables, meta, random_image(rng, 30, 41))
    assert report.compared == "fc7" and report.passed, report.format()
    assert report.final.rel < 1e-5


def test_vgg16_bn_initialises_speedpapers_fcn(vgg_bn_file, rng, tmp_path):
    # SpeedPaper's stages are vgg16_bn's features: the same tensors, no classifier.
    path, state = vgg_bn_file
    variables, meta, source = convert_torch_file(path, "speedpaper", n_class=5)
    assert meta.arch == "speedpaper" and meta.spec.learn_upsampling
    trunk = variables["params"]["vgg16_bn"]
    assert "fc6" not in trunk and set(variables["batch_stats"]["vgg16_bn"]) == {
        bn_name(c) for c in CONVS
    }
    np.testing.assert_array_equal(
        trunk["conv5_3"]["kernel"], conv_to_flax(state["features.40.weight"])
    )
    report = check_parity(source, variables, meta, random_image(rng, 70, 90))
    assert report.compared == "s5" and report.passed, report.format()
    assert [d.name for d in report.layers] == ["s1", "s2", "s3", "s4", "s5"]
    assert "centre-cropped to 64x64" in report.note
    torch.save(random_vgg16_state_dict(NARROW, seed=1), tmp_path / "vgg16.pth")
    with pytest.raises(FCNError, match=r"--arch must be one of fcn32s.* not speedpaper"):
        convert_torch_file(tmp_path / "vgg16.pth", "speedpaper")


def test_plain_vgg16_is_still_vgg16(tmp_path):
    torch.save(random_vgg16_state_dict(NARROW, seed=1), tmp_path / "vgg16.pth")
    variables, meta, source = convert_torch_file(tmp_path / "vgg16.pth", "fcn32s")
    assert source.kind == TORCHVISION_VGG16 and meta.spec.backbone == "vgg16"
    assert set(variables) == {"params"}


def test_vgg16_bn_statistics_are_used(vgg_bn_file, rng):
    """Default statistics in place of the file's fail the fc7 check: it sees them."""
    path, _ = vgg_bn_file
    variables, meta, source = convert_torch_file(path, "fcn32s")
    reset = jax.tree.map(np.zeros_like, variables["batch_stats"])
    report = check_parity(
        source, {**variables, "batch_stats": reset}, meta, random_image(rng, 20, 20)
    )
    assert not report.passed


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("features.11.running_var", r"missing keys: features\.11\.running_var"),
        ("features.41.weight", r"missing keys: features\.41\.weight"),
    ],
)
def test_vgg16_bn_missing_key(tmp_path, key, message):
    state = random_vgg16_state_dict(NARROW, seed=0, batch_norm=True)
    del state[key]
    torch.save(state, tmp_path / "vgg.pth")
    with pytest.raises(FCNError, match=message) as e:
        convert_torch_file(tmp_path / "vgg.pth", "fcn8s")
    assert "VGG16-BN trunk" in str(e.value)


def test_vgg16_bn_shape_mismatch_names_the_layer(tmp_path):
    state = random_vgg16_state_dict(NARROW, seed=0, batch_norm=True)
    state["features.4.running_mean"] = torch.zeros(9)
    torch.save(state, tmp_path / "vgg.pth")
    with pytest.raises(FCNError, match=r"features\.4\.running_mean is \(9,\) there"):
        convert_torch_file(tmp_path / "vgg.pth", "fcn8s")


# ---------------------------------------------------------------- torchfcn layout, both ways


@pytest.mark.parametrize("variant", ["fcn32s", "fcn8s"])
def test_round_trip_is_bitwise(tmp_path, variant, rng):
    state = save_fcn_bn(tmp_path / "in.pth", variant, n_class=4, seed=ALL.index(variant))
    variables, meta, source = convert_torch_file(tmp_path / "in.pth", variant)
    assert source.kind == TORCHFCN
    assert meta.spec.backbone == "vgg16_bn" and meta.n_class == 4
    assert meta.preprocessing == TORCHVISION  # vgg16_bn's ImageNet weights are torchvision's
    assert set(variables) == {"params", "batch_stats"}
    report = check_parity(source, variables, meta, random_image(rng, 33, 29))
    assert report.passed and report.final.rel < 1e-5, report.format()

    save_weights(tmp_path / "w", variables, meta)
    export_torchfcn(tmp_path / "w", tmp_path / "back.pth")
    saved = torch.load(tmp_path / "back.pth", weights_only=True)
    assert saved["arch"] == get_variant(variant).torch_name
    back = saved["model_state_dict"]
    assert set(back) == set(state)
    for key, value in state.items():
        assert back[key].dtype == value.dtype, key
        assert torch.equal(back[key], value), key
    TorchFCN(variant, 4, NARROW, batch_norm=True).load_state_dict(back, strict=True)


def test_counters_are_ignored_and_written_as_zero(tmp_path):
    state = random_state_dict("fcn32s", 3, NARROW, seed=2, batch_norm=True)
    state = {
        k: torch.tensor(77) if k.endswith("num_batches_tracked") else v for k, v in state.items()
    }
    torch.save(state, tmp_path / "in.pth")
    variables, meta, _ = convert_torch_file(tmp_path / "in.pth", "fcn32s")
    save_weights(tmp_path / "w", variables, meta)
    back = read_torch_weights(export_torchfcn(tmp_path / "w", tmp_path / "back.pth")).state
    counters = [k for k in back if k.endswith("num_batches_tracked")]
    assert len(counters) == 13
    assert all(back[k].dtype == np.int64 and back[k].shape == () and back[k] == 0 for k in counters)


def test_torchfcn_missing_bn_key(tmp_path):
    state = random_state_dict("fcn16s", 21, NARROW, seed=0, batch_norm=True)
    del state["bn3_2.running_var"]
    torch.save(state, tmp_path / "in.pth")
    with pytest.raises(FCNError, match=r"missing keys: bn3_2\.running_var") as e:
        convert_torch_file(tmp_path / "in.pth", "fcn16s")
    assert "vgg16_bn backbone" in str(e.value) and "in.pth" in str(e.value)


def test_cli_missing_bn_key_exits_2(tmp_path):
    state = random_vgg16_state_dict(NARROW, seed=0, batch_norm=True)
    del state["features.25.running_mean"]
    torch.save(state, tmp_path / "vgg.pth")
    r = run_script(
        "convert_torch_weights.py", "--src", "vgg.pth", "--arch", "fcn8s", "--out", "w",
        cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert "features.25.running_mean" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_cli_convert_check_and_back(tmp_path, capsys, rng):
    """In process (the subprocess path is the test above): convert + --check, then --to-torch
    + --check (TorchFCN with BatchNorm loads the export strictly). One network (fcn32s, 21
    classes, torchvision input) throughout: one compilation."""
    cli = load_cli()
    write_jpeg(tmp_path / "x.jpg", random_image(rng, 40, 52))
    torch.save(random_vgg16_state_dict(NARROW, seed=5, batch_norm=True), tmp_path / "vgg.pth")
    save_fcn_bn(tmp_path / "fcn.pth", "fcn32s", seed=6)

    def main(*args: str) -> int:
        return cli.main([*args, "--check", "--image", str(tmp_path / "x.jpg")])

    assert main("--src", f"{tmp_path}/vgg.pth", "--arch", "fcn32s", "--out", f"{tmp_path}/i") == 0
    printed = capsys.readouterr().out
    assert "converted torchvision_vgg16_bn" in printed and "fc7: max abs diff" in printed
    assert "PASS" in printed
    assert main("--src", f"{tmp_path}/fcn.pth", "--arch", "fcn32s", "--out", f"{tmp_path}/w") == 0
    assert main("--to-torch", "--src", f"{tmp_path}/w", "--out", f"{tmp_path}/back.pth") == 0
    printed = capsys.readouterr().out
    assert printed.count("PASS") == 2 and "argmax agreement: 100.0000%" in printed


def test_train_mode_forward_gradients_and_statistics_match_torch(tmp_path, rng):
    """Train-mode BatchNorm through the whole network (batch statistics in every layer, dropout
    off): logits, every parameter's gradient and the updated running statistics.

    Ours in float32 against torch in float64, within 1e-5 of the logits' scale and 1e-4 of each
    layer's largest gradient (measured: 2e-6 and 2e-5). torch's own float32 is no reference
    here: behind conv1_1's pad 100 most of every map is one constant, and its float32 gradient
    of conv1_2 is 2e-3 off its float64 one (its forward is 8e-4 off too when given the
    channels-last view of an NHWC array: the input is made contiguous).
    """
    import jax.numpy as jnp

    from fcn_jax.convert.torchfcn import flax_to_torchfcn

    save_fcn_bn(tmp_path / "in.pth", "fcn32s", n_class=4, seed=9)
    variables, meta, source = convert_torch_file(tmp_path / "in.pth", "fcn32s")
    model = TorchFCN("fcn32s", 4, NARROW, batch_norm=True).double().train()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in source.state.items()})
    model.dropout.p = 0.0
    x = rng.standard_normal((2, 27, 34, 3)).astype(np.float32)
    cot = rng.standard_normal((2, 27, 34, 4)).astype(np.float32)
    logits_t = model(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).double())
    (logits_t * torch.from_numpy(np.ascontiguousarray(cot.transpose(0, 3, 1, 2)))).sum().backward()
    logits_t = logits_t.detach().numpy().transpose(0, 2, 3, 1)

    def loss(params):
        out, state = meta.spec.apply(
            {**variables, "params": params},
            (jnp.asarray(x),),
            overrides={"dropout_rate": 0.0},
            train=True,
            mutable=["batch_stats"],
        )
        return jnp.sum(out["out"] * cot), (out["out"], state["batch_stats"])

    with jax.default_matmul_precision("highest"):
        grads, (logits, stats) = jax.jit(jax.grad(loss, has_aux=True))(variables["params"])
    scale = np.abs(logits_t).max()
    np.testing.assert_allclose(logits, logits_t, rtol=0, atol=1e-5 * scale)
    ours = flax_to_torchfcn({"params": grads, "batch_stats": stats})
    # Per layer, relative to its largest gradient: a conv bias before a train-mode BatchNorm
    # has a zero gradient (the normalisation removes it), of which each side has rounding.
    grads_t = {name: p.grad.numpy() for name, p in model.named_parameters()}
    # The upsampling is frozen bilinear here (learn_upsampling off): no gradient on our side.
    assert not np.any(ours.pop("upscore.weight")) and grads_t.pop("upscore.weight").any()
    for name, g in grads_t.items():
        layer = name.rsplit(".", 1)[0]
        scale = max(np.abs(v).max() for k, v in grads_t.items() if k.startswith(f"{layer}."))
        assert np.abs(ours[name] - g).max() <= 1e-4 * scale, name
    for name, b in model.named_buffers():
        if name.endswith(("running_mean", "running_var")):
            np.testing.assert_allclose(ours[name], b.numpy(), rtol=1e-5, atol=1e-6, err_msg=name)


# ---------------------------------------------------------------- full width


@pytest.fixture(scope="module")
def full_width_fcn8s(tmp_path_factory):
    path = tmp_path_factory.mktemp("full") / "fcn8s_bn.pth"
    save_fcn_bn(path, "fcn8s", n_class=21, width=1.0, seed=8)
    return convert_torch_file(path, "fcn8s")


@pytest.mark.full_width
@pytest.mark.parametrize("size", [(64, 64), (96, 128)])
def test_full_width_fcn8s_parity(full_width_fcn8s, size, rng):
    variables, meta, source = full_width_fcn8s
    assert meta.width == 1.0 and meta.spec.backbone == "vgg16_bn"
    report = check_parity(source, variables, meta, random_image(rng, *size))
    print(f"\nVGG16-BN FCN-8s {size}\n{report.format()}")
    assert report.final.shape == (1, *size, 21)
    assert report.final.rel <= PARITY_TOLERANCE, report.format()
    assert report.confident_agreement == 100.0 and report.passed, report.format()


@pytest.mark.full_width
def test_full_width_vgg16_bn_trunk(tmp_path, rng):
    torch.save(random_vgg16_state_dict(1.0, seed=13, batch_norm=True), tmp_path / "vgg16_bn.pth")
    variables, meta, source = convert_torch_file(tmp_path / "vgg16_bn.pth", "fcn32s")
    assert source.kind == TORCHVISION_VGG16_BN and meta.width == 1.0
    report = check_parity(source, variables, meta, random_image(rng, 32, 32))
    print(f"\nVGG16-BN trunk 32x32\n{report.format()}")
    assert report.compared == "fc7" and report.final.shape == (1, 2, 2, 4096)
    assert report.passed, report.format()
