"""torchvision's FCN-ResNets: proven against torchvision's own model code, converted both ways.

The PyTorch side is torchvision itself (``fcn_resnet50`` / ``fcn_resnet101`` / ``resnet50``;
at narrow widths its own classes with scaled channel counts, checked here against the builder),
imported by :func:`~fcn_jax.torch_reference.import_torchvision`. Full width only for parity
(converted from torch state dicts with random weights and BatchNorm statistics, never a
full-width JAX init); narrow widths elsewhere. Bad inputs run through the CLI's own runner in
this process (exit status 2, ``error: ...``); one subprocess run proves the real command line.
"""

import dataclasses
import json

import jax
import numpy as np
import pytest
import torch

from fcn_jax.checkpoint import load_weights, save_weights
from fcn_jax.convert import convert_torch_file, export_torch, torch_state_dict
from fcn_jax.convert.check import PARITY_TOLERANCE, check_parity
from fcn_jax.convert.torch_files import TORCHVISION_FCN_RESNET, TORCHVISION_RESNET
from fcn_jax.convert.torchvision_resnet import key_table
from fcn_jax.data.resize import resize_label, resized_size
from fcn_jax.preprocessing import TORCHVISION
from fcn_jax.torch_reference import (
    import_torchvision,
    random_fcn_resnet_state_dict,
    random_resnet_state_dict,
    torchvision_fcn_resnet,
)
from tests.convert.cli import assert_exits_2
from tests.utils import NARROW, REPO, random_image, run_script, write_voc_tree

pytestmark = pytest.mark.torch

N_CLASS = 5
LAYERS = ["stem", "layer1", "layer2", "layer3", "layer4"]


def save_fcn_resnet(
    path, arch="fcn_resnet50", aux=True, width=NARROW, seed=0, drop=(), n_class=N_CLASS
):
    state = random_fcn_resnet_state_dict(arch, n_class, aux, width, seed)
    torch.save({k: v for k, v in state.items() if k not in drop}, path)
    return state


def save_resnet(path, backbone="resnet50", width=NARROW, seed=0):
    state = random_resnet_state_dict(backbone, width, seed)
    torch.save(state, path)
    return state


def builder(arch, n_class, aux, device=None):
    """torchvision's own ``fcn_resnet50`` / ``fcn_resnet101``, optionally on the meta device."""
    tv = import_torchvision()
    build = getattr(tv.models.segmentation, arch)
    with torch.device(device or "cpu"):
        return build(weights=None, weights_backbone=None, num_classes=n_class, aux_loss=aux)


# ---------------------------------------------------------------- the reference itself


def test_torchvision_imports_and_its_models_train_on_cpu():
    tv = import_torchvision()
    assert import_torchvision() is tv and callable(tv.models.segmentation.fcn_resnet101)
    net = torchvision_fcn_resnet("fcn_resnet50", N_CLASS, aux=True, width=NARROW).train()
    x = torch.randn(2, 3, 40, 52, requires_grad=True)
    out = net(x)
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "out": (2, N_CLASS, 40, 52),
        "aux": (2, N_CLASS, 40, 52),
    }
    (out["out"].square().mean() + 0.5 * out["aux"].square().mean()).backward()
    assert x.grad.abs().sum() > 0 and net.classifier[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize(("arch", "aux"), [("fcn_resnet50", True), ("fcn_resnet101", False)])
def test_key_table_is_torchvisions_state_dict(arch, aux):
    # Every key, in order, of torchvision's own model (built on the meta device: no memory).
    theirs = [k for k in builder(arch, 21, aux, "meta").state_dict() if "num_batches" not in k]
    assert list(key_table(arch.removeprefix("fcn_"), aux)) == theirs


def test_narrow_assembly_is_torchvisions_builder(rng):
    # At width 1 the assembly from torchvision's classes (what narrow tests use) has the
    # builder's keys and shapes and computes the same outputs from the same state.
    assembled = torchvision_fcn_resnet("fcn_resnet50", 3, aux=True, width=1.0, assemble=True)
    built = builder("fcn_resnet50", 3, True)
    state = {k: v.clone() for k, v in built.state_dict().items()}
    assert {k: v.shape for k, v in assembled.state_dict().items()} == {
        k: v.shape for k, v in state.items()
    }
    assembled.load_state_dict(state, strict=True)
    x = torch.from_numpy(rng.standard_normal((1, 3, 33, 47)).astype(np.float32))
    with torch.no_grad():
        a, b = assembled.eval()(x), built.eval()(x)
    assert list(a) == list(b) == ["out", "aux"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


# ---------------------------------------------------------------- parity at full width


@pytest.fixture(scope="module")
def full_resnet50(tmp_path_factory):
    """Full-width FCN-ResNet50 with the aux head, random everywhere (BatchNorm statistics too)."""
    path = tmp_path_factory.mktemp("r50") / "fcn_resnet50.pth"
    state = save_fcn_resnet(path, "fcn_resnet50", aux=True, width=1.0, seed=3, n_class=21)
    return (state, *convert_torch_file(path, "fcn_resnet50"))


def _check_report(report, size):
    rows = {d.name: d for d in report.layers}
    assert list(rows)[:-2] == [*LAYERS, "classifier", "aux_classifier"]
    assert set(list(rows)[-2:]) == {"logits_out", "logits_aux"}  # the worst of them last
    for name in ("logits_out", "logits_aux"):
        assert rows[name].shape == (1, *size, 21)  # the VOC classes
        assert rows[name].rel <= PARITY_TOLERANCE, report.format()
    assert report.passed and report.confident_agreement == 100.0, report.format()
    assert report.confident_pixels > 0.9 * 2 * size[0] * size[1]  # both outputs' pixels
    return rows


@pytest.mark.full_width
@pytest.mark.parametrize("size", [(64, 64), (97, 131)])
def test_full_width_resnet50_parity(full_resnet50, size, rng):
    _, variables, metadata, source = full_resnet50
    assert source.kind == TORCHVISION_FCN_RESNET
    assert (metadata.arch, metadata.width, metadata.n_class, metadata.spec.aux) == (
        "fcn_resnet50",
        1.0,
        21,
        True,
    )
    report = check_parity(source, variables, metadata, random_image(rng, *size))
    rows = _check_report(report, size)
    print(f"\nfcn_resnet50 {size[0]}x{size[1]}: out {rows['logits_out'].rel:.2e}, "
          f"aux {rows['logits_aux'].rel:.2e}\n{report.format()}")  # fmt: skip


@pytest.mark.full_width
def test_full_width_resnet101_parity(tmp_path, rng):
    path = tmp_path / "fcn_resnet101.pth"
    save_fcn_resnet(path, "fcn_resnet101", aux=True, width=1.0, seed=4)
    variables, metadata, source = convert_torch_file(path, "fcn_resnet101", n_class=N_CLASS)
    assert metadata.spec.backbone == "resnet101"
    report = check_parity(source, variables, metadata, random_image(rng, 64, 64))
    rows = {d.name: d for d in report.layers}
    for name in ("logits_out", "logits_aux"):
        assert rows[name].rel <= PARITY_TOLERANCE, report.format()
    assert report.passed, report.format()
    print(f"\nfcn_resnet101 64x64: out {rows['logits_out'].rel:.2e}, "
          f"aux {rows['logits_aux'].rel:.2e}\n{report.format()}")  # fmt: skip


@pytest.mark.full_width
def test_full_width_export_loads_strictly_into_torchvisions_builder(full_resnet50, tmp_path):
    state, variables, metadata, _ = full_resnet50
    save_weights(tmp_path / "w", variables, metadata)
    out = export_torch(tmp_path / "w", tmp_path / "back.pth")
    back = torch.load(out, weights_only=True)
    net = builder("fcn_resnet50", 21, True)
    net.load_state_dict(back, strict=True)
    assert list(back) == list(net.state_dict()) == list(state)
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            assert back[key].dtype == torch.int64 and back[key].shape == () and back[key] == 0
        else:
            assert torch.equal(back[key], value), key


# ---------------------------------------------------------------- narrow: both ways, sources


@pytest.mark.parametrize(("arch", "aux"), [("fcn_resnet50", False), ("fcn_resnet101", True)])
def test_round_trip_is_bitwise(tmp_path, arch, aux, rng):
    state = save_fcn_resnet(tmp_path / "a.pth", arch, aux=aux, seed=5)
    variables, metadata, _ = convert_torch_file(tmp_path / "a.pth", arch)
    spec = metadata.spec
    assert (spec.aux, spec.backbone, spec.width, metadata.source) == (
        aux,
        arch.removeprefix("fcn_"),
        NARROW,
        TORCHVISION_FCN_RESNET,
    )
    assert metadata.preprocessing == TORCHVISION and metadata.eval_resize == 520
    assert set(variables) == {"params", "batch_stats"}
    save_weights(tmp_path / "w", variables, metadata)
    loaded, loaded_meta = load_weights(tmp_path / "w")
    assert loaded_meta == metadata
    out = export_torch(tmp_path / "w", tmp_path / "back.pth")
    back = torch.load(out, weights_only=True)
    assert list(back) == list(state)
    torchvision_fcn_resnet(arch, N_CLASS, aux, NARROW).load_state_dict(back, strict=True)
    for key, value in state.items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(back[key], value), key
    again, metadata2, _ = convert_torch_file(out, arch)
    assert metadata2.spec == spec
    jax.tree.map(np.testing.assert_array_equal, again, variables)
    # In memory too (eval.py --against-torch's path), and --check on the re-read file.
    in_memory = torch_state_dict(jax.device_get(loaded), spec)
    assert all(np.array_equal(in_memory[k], back[k].numpy()) for k in back)
    report = check_parity(read_back(out), again, metadata2, random_image(rng, 37, 29))
    assert report.passed, report.format()


def read_back(path):
    from fcn_jax.convert import read_torch_weights

    return read_torch_weights(path)


def test_imagenet_resnet_starts_a_new_fcn(tmp_path, capsys, rng):
    state = save_resnet(tmp_path / "resnet50.pth", seed=6)
    variables, metadata, source = convert_torch_file(tmp_path / "resnet50.pth", "fcn_resnet50")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning: ")
    assert "fc.bias, fc.weight (the ImageNet classifier) unused: dropped" in err
    spec = metadata.spec
    assert source.kind == TORCHVISION_RESNET and metadata.source == TORCHVISION_RESNET
    assert (spec.arch, spec.backbone, spec.aux, spec.n_class, spec.width) == (
        "fcn_resnet50",
        "resnet50",
        True,
        21,
        NARROW,
    )
    # The trunk copied bit for bit (torch -> Flax layouts), through the shared name table.
    for key, (collection, path, layout) in key_table("resnet50", True, "", heads=False).items():
        leaf = variables[collection]
        for part in path:
            leaf = leaf[part]
        expected = state[key].numpy()
        expected = expected.transpose(2, 3, 1, 0) if layout == "conv" else expected
        np.testing.assert_array_equal(leaf, expected, err_msg=key)
    # The heads as torchvision initialises FCNHead; their statistics BatchNorm2d's initial ones.
    for head in ("classifier", "aux_classifier"):
        params = variables["params"][head]
        bound = 1 / np.sqrt(np.prod(params["0"]["kernel"].shape[:-1]))
        assert 0 < np.abs(params["0"]["kernel"]).max() <= bound
        np.testing.assert_array_equal(params["1"]["scale"], 1.0)
        np.testing.assert_array_equal(variables["batch_stats"][head]["1"]["var"], 1.0)
        np.testing.assert_array_equal(variables["batch_stats"][head]["1"]["mean"], 0.0)
    report = check_parity(source, variables, metadata, random_image(rng, 45, 38))
    assert report.compared == "layer4" and report.passed, report.format()
    assert [d.name for d in report.layers] == LAYERS
    # The new network trains and exports like any converted one.
    save_weights(tmp_path / "w", variables, metadata)
    back = torch.load(export_torch(tmp_path / "w", tmp_path / "fcn.pth"), weights_only=True)
    torchvision_fcn_resnet("fcn_resnet50", 21, True, NARROW).load_state_dict(back, strict=True)
    _, meta4, _ = convert_torch_file(tmp_path / "resnet50.pth", "fcn_resnet50", n_class=4)
    assert meta4.n_class == 4


def test_running_statistics_matter(tmp_path, rng):
    save_fcn_resnet(tmp_path / "a.pth", seed=7)
    variables, metadata, source = convert_torch_file(tmp_path / "a.pth", "fcn_resnet50")
    swapped = jax.tree.map(lambda x: x, variables)
    bn = swapped["batch_stats"]["resnet50"]["layer2"]["1"]["bn2"]
    bn["mean"], bn["var"] = bn["var"], bn["mean"] + 1.0
    report = check_parity(source, swapped, metadata, random_image(rng, 32, 32))
    assert not report.passed
    assert next(d for d in report.layers if d.name == "layer2").rel > 1e-2


def test_eval_torch_observer_scores_out_only(tmp_path, rng):
    # eval.py --against-torch: torchvision's model returns "out" and "aux"; only "out" is
    # scored, as on the JAX side.
    from fcn_jax.eval.torch_observer import TorchComparison
    from fcn_jax.models import predict_fn

    save_fcn_resnet(tmp_path / "a.pth", seed=8)
    variables, metadata, _ = convert_torch_file(tmp_path / "a.pth", "fcn_resnet50")
    batch = {"image": np.stack([random_image(rng, 41, 30) for _ in range(2)])}
    torch_out = TorchComparison(variables, metadata)._forward(batch)
    assert list(torch_out) == ["out"]
    with jax.default_matmul_precision("highest"):
        ours = np.asarray(predict_fn(metadata.spec)(variables, batch)["out"])
    ref = torch_out["out"].numpy().transpose(0, 2, 3, 1)
    assert np.max(np.abs(ours - ref)) <= PARITY_TOLERANCE * np.max(np.abs(ref))


# ---------------------------------------------------------------- bad input, exit status 2


def _bad_missing_key(tmp_path):
    save_fcn_resnet(tmp_path / "f.pth", drop=("backbone.layer2.1.bn2.running_var",))
    return ["--src", "f.pth", "--arch", "fcn_resnet50"], [
        "f.pth does not fit torchvision's fcn_resnet50",
        "missing keys: backbone.layer2.1.bn2.running_var",
    ]


def _bad_missing_score(tmp_path):
    save_fcn_resnet(tmp_path / "f.pth", drop=("classifier.4.weight",))
    return ["--src", "f.pth", "--arch", "fcn_resnet50"], ["lacks classifier.4.weight"]


def _bad_class_count(tmp_path):
    save_fcn_resnet(tmp_path / "f.pth")
    return ["--src", "f.pth", "--arch", "fcn_resnet50", "--n-class", "21"], [
        "f.pth has 5 classes (classifier.4.weight is (5, 64, 1, 1)) but --n-class is 21"
    ]


def _bad_depth_for_fcn(tmp_path):
    save_fcn_resnet(tmp_path / "f.pth")
    return ["--src", "f.pth", "--arch", "fcn_resnet101"], [
        "f.pth is a torchvision FCN-ResNet on resnet50 (6 blocks in layer3)",
        "--arch must be fcn_resnet50 for it, not fcn_resnet101",
    ]


def _bad_depth_for_imagenet(tmp_path):
    save_resnet(tmp_path / "r.pth", "resnet101")
    return ["--src", "r.pth", "--arch", "fcn_resnet50"], [
        "r.pth is a torchvision ImageNet ResNet on resnet101 (23 blocks in layer3)",
        "--arch must be fcn_resnet101 for it, not fcn_resnet50",
    ]


def _bad_paper_arch(tmp_path):
    save_fcn_resnet(tmp_path / "f.pth")
    return ["--src", "f.pth", "--arch", "fcn8s"], [
        "f.pth is a torchvision FCN-ResNet state dict",
        "--arch must be one of fcn_resnet50, fcn_resnet101 for it, not fcn8s",
    ]


def _bad_block_count(tmp_path):
    state = random_fcn_resnet_state_dict("fcn_resnet50", N_CLASS, False, NARROW)
    extra = {k.replace("layer3.5.", "layer3.6."): v for k, v in state.items() if "layer3.5." in k}
    torch.save(state | extra, tmp_path / "f.pth")
    return ["--src", "f.pth", "--arch", "fcn_resnet50"], [
        "its layer1 ... layer4 hold 3-4-7-3 Bottleneck blocks, not 3-4-6-3 (resnet50), "
        "3-4-23-3 (resnet101)"
    ]


def _bad_resnet_for_vgg_arch(tmp_path):
    save_resnet(tmp_path / "r.pth")
    return ["--src", "r.pth", "--arch", "speedpaper"], [
        "r.pth is a torchvision ImageNet ResNet state dict",
        "not speedpaper",
    ]


BAD = {
    "missing_key": _bad_missing_key,
    "missing_score": _bad_missing_score,
    "class_count": _bad_class_count,
    "fcn_depth": _bad_depth_for_fcn,
    "imagenet_depth": _bad_depth_for_imagenet,
    "paper_arch": _bad_paper_arch,
    "block_count": _bad_block_count,
    "resnet_as_speedpaper": _bad_resnet_for_vgg_arch,
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_exits_2_naming_it(tmp_path, monkeypatch, capsys, case):
    args, expected = BAD[case](tmp_path)
    assert_exits_2(args, expected, tmp_path, monkeypatch, capsys)


# ---------------------------------------------------------------- the command line


def test_cli_check_and_back(tmp_path):
    save_fcn_resnet(tmp_path / "fcn.pth", aux=True)
    r = run_script(
        "convert_torch_weights.py",
        *("--src", "fcn.pth", "--arch", "fcn_resnet50", "--out", "w", "--check"),
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert "converted torchvision_fcn_resnet fcn.pth -> w: fcn_resnet50, 5 classes" in r.stdout
    assert "preprocessing torchvision" in r.stdout
    for layer in (*LAYERS, "classifier", "aux_classifier", "logits_out", "logits_aux"):
        assert f"\n{layer} " in r.stdout, layer
    assert "PASS" in r.stdout and "argmax agreement: 100.0000%" in r.stdout
    r = run_script(
        "convert_torch_weights.py",
        *("--to-torch", "--src", "w", "--out", "back.pth", "--check"),
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert "PASS" in r.stdout
    back = torch.load(tmp_path / "back.pth", weights_only=True)
    torchvision_fcn_resnet("fcn_resnet50", N_CLASS, True, NARROW).load_state_dict(back, strict=True)


def test_eval_against_torch_on_generated_voc(tmp_path):
    # eval.py --against-torch with converted torchvision weights on a VOC tree: torchvision's
    # own model scores the same images to within 1e-3 mean IU (the weights' metadata decides
    # the network and its preprocessing over the config's, saying so), both on the images and
    # labels resized by the weights' evaluation resize (torchvision's 520; 45 here, cheaper).
    root = tmp_path / "pascal"
    sizes = {"2007_000033": (40, 52), "2007_000042": (33, 33), "2010_000003": (27, 61)}
    labels = write_voc_tree(root, sizes, split="seg11valid")
    save_fcn_resnet(tmp_path / "fcn.pth", aux=True, n_class=21, seed=9)
    variables, metadata, _ = convert_torch_file(tmp_path / "fcn.pth", "fcn_resnet50")
    assert metadata.eval_resize == 520
    metadata = dataclasses.replace(metadata, eval_resize=45)
    save_weights(tmp_path / "w", variables, metadata)
    r = run_script(
        "eval.py",
        *("--config", REPO / "configs/voc_fcn8s.py", "--weights", tmp_path / "w"),
        *(f"--config.data.root={root}", "--out", tmp_path / "m.json", "--against-torch"),
    )
    assert r.returncode == 0, r.stderr
    assert "weights decide" in r.stderr and "arch='fcn_resnet50'" in r.stderr
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["n_images"] == len(sizes)
    # Scored at the resized size: the nearest-resized labels' pixels, void excluded.
    scored = sum(
        int((resize_label(lab, *resized_size(*lab.shape, 45)) < 21).sum())
        for lab in labels.values()
    )
    assert (
        sum(map(sum, metrics["confusion_matrix"]))
        == scored
        != sum(int((lab < 21).sum()) for lab in labels.values())
    )
    assert abs(metrics["torch"]["mean_iou"] - metrics["mean_iou"]) <= 1e-3
    assert metrics["torch"]["pixel_agreement"] > 0.999


def test_predictor_resizes_like_torchvisions_transforms(tmp_path, rng):
    # predict.py: the image resized to the weights' shorter side, the scores resized back.
    from fcn_jax.data.resize import resize_image
    from fcn_jax.inference import Predictor
    from fcn_jax.models import predict_fn
    from fcn_jax.models.fcn_resnet import resize_bilinear

    save_fcn_resnet(tmp_path / "fcn.pth", aux=False, seed=10)
    variables, metadata, _ = convert_torch_file(tmp_path / "fcn.pth", "fcn_resnet50")
    metadata = dataclasses.replace(metadata, eval_resize=40)
    image = random_image(rng, 30, 50)
    logits, classes = Predictor(variables, metadata)(image)
    assert logits.shape == (30, 50, N_CLASS) and classes.shape == (30, 50)
    small = resize_image(image, 40, 66)  # shorter side 40, 50 * 40 / 30 = 66.7 -> 66
    at_40 = predict_fn(metadata.spec)(variables, {"image": small[None]})["out"]
    expected = resize_bilinear(at_40, 30, 50)[0]
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(classes, np.argmax(expected, -1))
