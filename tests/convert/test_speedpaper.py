"""SpeedPaper's FCN: the PyTorch reference, conversion both ways, --check, every bad input.

Full width only for parity (converted from a torch state dict, never a full-width JAX init);
narrow widths elsewhere. The bad inputs run through the CLI's own runner in this process
(exit status 2, ``error: ...`` on stderr); two subprocess runs prove the real command line.
"""

import pickle

import jax
import numpy as np
import pytest

from fcn_jax.checkpoint import load_weights, save_weights
from fcn_jax.convert import convert_torch_file, custom_preprocessing, export_torch
from fcn_jax.convert.check import PARITY_TOLERANCE, check_parity, fit_to_stride
from fcn_jax.convert.speedpaper import key_table
from fcn_jax.errors import FCNError
from fcn_jax.preprocessing import TORCHVISION, Preprocessing
from tests.convert.cli import assert_exits_2
from tests.utils import NARROW, random_image, run_script

pytestmark = pytest.mark.torch

N_CLASS = 5
# SpeedPaper's second version: grey-level statistics, replicated to three channels.
GREY_MEAN, GREY_STD = [0.16328026] * 3, [0.2432042] * 3


def save_speedpaper(path, n_class=N_CLASS, width=NARROW, seed=0, form="pth", drop=(), **extra):
    """A random SpeedPaper state dict saved as ``form``: ``pth`` (bare) or ``pkl`` (CustomNet)."""
    import torch

    from fcn_jax.torch_reference import random_speedpaper_state_dict

    state = random_speedpaper_state_dict(n_class, width, seed)
    saved = {k: v for k, v in state.items() if k not in drop}
    torch.save({"CustomNet": saved, **extra} if form == "pkl" else saved, path)
    return state


# ---------------------------------------------------------------- the torch reference


def test_reference_has_speedpaper_keys_and_shapes():
    # SpeedPaper slices vgg16_bn().features; nn.Sequential slices keep the children's names, so
    # its checkpoints carry the torchvision index in every stage key.
    from fcn_jax.torch_reference import TorchSpeedPaperFCN

    state = TorchSpeedPaperFCN(12).state_dict()
    tops = list(dict.fromkeys(k.split(".")[0] for k in state))
    assert tops == [
        *(f"stage{i}" for i in range(1, 6)),
        "scores1", "scores2", "scores3", "conv_trans1", "conv_trans2",
        "upsample_8x", "upsample_2x_1", "upsample_2x_2",
    ]  # fmt: skip
    convs = {"stage1": [0, 3], "stage2": [7, 10], "stage3": [14, 17, 20]}
    convs |= {"stage4": [24, 27, 30], "stage5": [34, 37, 40]}
    for stage, indices in convs.items():
        weights = sorted(int(k.split(".")[1]) for k in state if k.startswith(f"{stage}."))
        assert sorted(set(weights)) == sorted(i + d for i in indices for d in (0, 1)), stage
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    assert shapes["stage1.0.weight"] == (64, 3, 3, 3)
    assert shapes["stage1.1.running_var"] == (64,)
    assert shapes["stage1.1.num_batches_tracked"] == ()
    assert shapes["stage2.7.weight"] == (128, 64, 3, 3)
    assert shapes["stage5.40.weight"] == (512, 512, 3, 3)
    assert shapes["scores1.weight"] == shapes["scores2.weight"] == (12, 512, 1, 1)
    assert shapes["scores3.weight"] == (12, 128, 1, 1)
    assert shapes["conv_trans1.weight"] == (256, 512, 1, 1)
    assert shapes["conv_trans2.weight"] == (12, 256, 1, 1)
    assert shapes["upsample_2x_1.weight"] == (512, 512, 4, 4)
    assert shapes["upsample_2x_2.weight"] == (256, 256, 4, 4)
    assert shapes["upsample_8x.weight"] == (12, 12, 16, 16)
    assert "upsample_8x.bias" not in shapes
    # The converter's table covers every key but the unused scores and the batch counters.
    used = {k for k in state if not k.startswith("scores") and "num_batches" not in k}
    assert set(key_table()) == used


def test_reference_starts_bilinear_and_keeps_sizes():
    import torch

    from fcn_jax.models.layers import bilinear_kernel
    from fcn_jax.torch_reference import TorchSpeedPaperFCN

    net = TorchSpeedPaperFCN(3, NARROW).eval()
    w = net.upsample_2x_2.weight.detach().numpy()
    np.testing.assert_array_equal(w[1, 1], bilinear_kernel(4))
    assert not w[0, 1].any()
    inter = {}
    with torch.no_grad():
        out = net(torch.zeros(2, 3, 64, 96), intermediates=inter)
    assert out.shape == (2, 3, 64, 96)
    assert inter["s3"].shape[2:] == (8, 12) and inter["s5"].shape[2:] == (2, 3)
    assert list(inter)[-1] == "upsample_8x"


# ---------------------------------------------------------------- parity


@pytest.fixture(scope="module")
def full_width(tmp_path_factory):
    """A full-width SpeedPaper checkpoint, random everywhere (BatchNorm statistics too)."""
    path = tmp_path_factory.mktemp("full") / "full.pth"
    save_speedpaper(path, n_class=12, width=1.0, seed=3)
    return convert_torch_file(path, "speedpaper")


@pytest.mark.full_width
@pytest.mark.parametrize(("height", "width"), [(64, 64), (96, 128)])
def test_full_width_parity(full_width, height, width, rng):
    variables, metadata, source = full_width
    assert metadata.width == 1.0 and metadata.n_class == 12
    report = check_parity(source, variables, metadata, random_image(rng, height, width))
    assert report.final.rel <= PARITY_TOLERANCE, report.format()
    assert report.confident_agreement == 100.0 and report.confident_pixels > 0.9 * height * width
    assert report.passed and not report.note
    names = [d.name for d in report.layers]
    layers = ["s1", "s2", "s3", "s4", "s5", "add1", "trans1", "add2", "trans2", "upsample_8x"]
    assert names == [*layers, "logits"]
    print(f"\n{height}x{width}:\n{report.format()}")


@pytest.fixture(scope="module")
def narrow(tmp_path_factory):
    path = tmp_path_factory.mktemp("narrow") / "sp.pth"
    state = save_speedpaper(path, seed=1)
    return path, state, convert_torch_file(path, "speedpaper")


def test_narrow_parity_crops_to_multiples_of_32(narrow, rng):
    _, _, (variables, metadata, source) = narrow
    report = check_parity(source, variables, metadata, random_image(rng, 75, 100))
    assert report.passed, report.format()
    assert report.final.shape == (1, 64, 96, N_CLASS)
    assert "input 75x100 centre-cropped to 64x96" in report.format()


def test_running_statistics_matter(narrow, rng):
    # Swapping running mean and variance must break parity: eval-mode BatchNorm is exercised.
    _, _, (variables, metadata, source) = narrow
    swapped = jax.tree.map(lambda x: x, variables)
    bn = swapped["batch_stats"]["vgg16_bn"]["bn3_2"]
    bn["mean"], bn["var"] = bn["var"], bn["mean"] + 1.0
    report = check_parity(source, swapped, metadata, random_image(rng, 64, 64))
    assert not report.passed
    assert next(d for d in report.layers if d.name == "s3").rel > 1e-2


def test_fit_to_stride():
    image = np.arange(375 * 500 * 3, dtype=np.uint32).reshape(375, 500, 3).astype(np.uint8)
    out, note = fit_to_stride(image, 32, (1, 2, 3))
    assert out.shape == (352, 480, 3)
    np.testing.assert_array_equal(out, image[11:363, 10:490])
    assert note == (
        "input 375x500 centre-cropped to 352x480: this network takes sides that are multiples of 32"
    )
    small, note = fit_to_stride(image[:20, :40], 32, (1, 2, 3))
    assert small.shape == (32, 32, 3) and "cropped / padded" in note
    np.testing.assert_array_equal(small[0, 0], (1, 2, 3))
    np.testing.assert_array_equal(small[6:26], image[:20, 4:36])
    assert fit_to_stride(image[:64, :96], 32, (0, 0, 0))[1] == ""


# ---------------------------------------------------------------- conversion both ways


@pytest.mark.parametrize("form", ["pth", "pkl"])
def test_round_trip_is_bitwise(tmp_path, form):
    import torch

    from fcn_jax.torch_reference import TorchSpeedPaperFCN

    src = tmp_path / ("3.pth" if form == "pth" else "BaseLine_76e_43.7023%.pkl")
    state = save_speedpaper(src, form=form, epoch=76)
    variables, metadata, _ = convert_torch_file(src, "speedpaper", n_class=N_CLASS)
    assert set(variables) == {"params", "batch_stats"}
    save_weights(tmp_path / "w", variables, metadata)
    out = export_torch(tmp_path / "w", tmp_path / "back.pth")
    back = torch.load(out, weights_only=True)
    assert list(back) == list(state)  # SpeedPaper's keys, in its order
    net = TorchSpeedPaperFCN(N_CLASS, NARROW)
    net.load_state_dict(back, strict=True)
    for key, value in state.items():
        if key.startswith("scores"):
            assert not back[key].any() and back[key].dtype == torch.float32, key
        elif key.endswith("num_batches_tracked"):
            assert back[key].dtype == torch.int64 and back[key].shape == () and back[key] == 0
        else:
            assert torch.equal(back[key], value), key
    again, metadata2, _ = convert_torch_file(out, "speedpaper")
    assert metadata2.spec == metadata.spec
    jax.tree.map(np.testing.assert_array_equal, again, variables)


def test_metadata_and_weights_directory(narrow, tmp_path):
    path, _, (variables, metadata, _) = narrow
    spec = metadata.spec
    assert (spec.arch, spec.backbone, spec.n_class, spec.width) == (
        "speedpaper",
        "vgg16_bn",
        N_CLASS,
        NARROW,
    )
    assert spec.learn_upsampling and metadata.source == "speedpaper"
    assert metadata.preprocessing == TORCHVISION  # SpeedPaper's first version's
    save_weights(tmp_path / "w", variables, metadata)
    loaded, loaded_meta = load_weights(tmp_path / "w")
    assert loaded_meta == metadata  # learn_upsampling=True included
    jax.tree.map(np.testing.assert_array_equal, loaded, variables)
    grey = custom_preprocessing(GREY_MEAN, GREY_STD, grey=True)
    _, meta, _ = convert_torch_file(path, "speedpaper", preprocessing=grey)
    assert meta.preprocessing == Preprocessing(
        "custom", "RGB", 1, tuple(GREY_MEAN), tuple(GREY_STD), grey=True
    )
    save_weights(tmp_path / "grey", variables, meta)
    assert load_weights(tmp_path / "grey")[1].preprocessing.grey


def test_unused_scores_are_named_and_dropped(tmp_path, capsys):
    save_speedpaper(tmp_path / "a.pth")
    convert_torch_file(tmp_path / "a.pth", "speedpaper")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning: ")
    assert "scores1, scores2, scores3" in err and "unused: dropped" in err
    drop = [f"scores{i}.{leaf}" for i in (1, 2, 3) for leaf in ("weight", "bias")]
    save_speedpaper(tmp_path / "b.pth", drop=drop)
    convert_torch_file(tmp_path / "b.pth", "speedpaper")  # accepted without them, silently
    assert capsys.readouterr().err == ""


def test_num_batches_tracked_is_optional(tmp_path, rng):
    # torch before 0.4.1 wrote no num_batches_tracked; nothing reads it.
    path = tmp_path / "old.pth"
    state = save_speedpaper(path, drop=(), seed=2)
    import torch

    torch.save({k: v for k, v in state.items() if "num_batches" not in k}, path)
    variables, metadata, source = convert_torch_file(path, "speedpaper")
    assert check_parity(source, variables, metadata, random_image(rng, 32, 32)).passed


def test_custom_preprocessing_errors():
    assert custom_preprocessing(None, None) is None
    with pytest.raises(FCNError, match="--mean needs --std too"):
        custom_preprocessing([0.5] * 3, None)
    with pytest.raises(FCNError, match=r"--std takes three numbers .* got 2"):
        custom_preprocessing([0.5] * 3, [0.2, 0.2])
    with pytest.raises(FCNError, match=r"--std must be positive, got \[0.2, 0.0, 0.2\]"):
        custom_preprocessing([0.5] * 3, [0.2, 0.0, 0.2])
    with pytest.raises(FCNError, match="--grey goes with --mean and --std"):
        custom_preprocessing(None, None, grey=True)


# ---------------------------------------------------------------- bad input, exit status 2


class Config:
    """Stands for any Python object a checkpoint may pickle besides its tensors."""


def _bad_missing_bn_key(tmp_path):
    save_speedpaper(tmp_path / "sp.pth", drop=("stage2.8.running_var",))
    return ["--src", "sp.pth", "--arch", "speedpaper"], [
        "sp.pth does not fit SpeedPaper's FCN",
        "missing keys: stage2.8.running_var",
    ]


def _bad_class_count(tmp_path):
    save_speedpaper(tmp_path / "sp.pth")
    return ["--src", "sp.pth", "--arch", "speedpaper", "--n-class", "12"], [
        "sp.pth has 5 classes (conv_trans2.weight is (5, 32, 1, 1)) but --n-class is 12"
    ]


def _bad_pkl_without_customnet(tmp_path):
    import torch

    from fcn_jax.torch_reference import random_speedpaper_state_dict

    torch.save({"net": random_speedpaper_state_dict(5, NARROW), "epoch": 3}, tmp_path / "x.pkl")
    return ["--src", "x.pkl", "--arch", "speedpaper"], [
        "x.pkl holds no state dict",
        "'CustomNet' (SpeedPaper's .pkl)",
        "with keys epoch, net",
    ]


def _bad_not_weights_only(tmp_path):
    save_speedpaper(tmp_path / "x.pkl", form="pkl", config=Config())
    return ["--src", "x.pkl", "--arch", "speedpaper"], [
        "x.pkl is not a PyTorch checkpoint that torch.load(weights_only=True) can read",
        "not weights-only",
        "test_speedpaper.Config",
    ]


def _bad_arch_for_speedpaper(tmp_path):
    save_speedpaper(tmp_path / "sp.pth")
    return ["--src", "sp.pth", "--arch", "fcn8s"], [
        "sp.pth is a SpeedPaper FCN state dict",
        "--arch must be speedpaper for it, not fcn8s",
    ]


def _bad_speedpaper_for_torchfcn(tmp_path):
    import torch

    from fcn_jax.torch_reference import random_state_dict

    torch.save(random_state_dict("fcn8s", 21, NARROW), tmp_path / "fcn.pth")
    return ["--src", "fcn.pth", "--arch", "speedpaper"], [
        "fcn.pth is a torchfcn FCN checkpoint",
        "--arch must be one of fcn32s, fcn16s, fcn8s, fcn8s-atonce for it, not speedpaper",
    ]


def _bad_mean_count(tmp_path):
    save_speedpaper(tmp_path / "sp.pth")
    args = ["--src", "sp.pth", "--arch", "speedpaper", "--mean", "0.5", "0.5"]
    return [*args, "--std", "0.2", "0.2", "0.2"], [
        "--mean takes three numbers (R G B, for pixels in [0, 1]), got 2: [0.5, 0.5]"
    ]


def _bad_std(tmp_path):
    save_speedpaper(tmp_path / "sp.pth")
    return ["--src", "sp.pth", "--arch", "speedpaper", "--mean=0.5,0.5,0.5", "--std=0.2,0,-1"], [
        "--std must be positive, got [0.2, 0.0, -1.0]"
    ]


def _bad_preset_and_numbers(tmp_path):
    save_speedpaper(tmp_path / "sp.pth")
    args = ["--src", "sp.pth", "--arch", "speedpaper", "--preprocessing", "torchvision"]
    return [*args, "--mean", "0.5", "0.5", "0.5", "--std", "0.2", "0.2", "0.2"], [
        "--mean / --std go with a conversion to fcn-jax, not with --preprocessing"
    ]


def _bad_mean_not_numbers(tmp_path):
    save_speedpaper(tmp_path / "sp.pth")
    return ["--src", "sp.pth", "--arch", "speedpaper", "--mean=a,b,c", "--std=1,1,1"], [
        "--mean takes numbers (R G B, pixels in [0, 1]), got 'a,b,c'"
    ]


BAD = {
    "missing_bn_key": _bad_missing_bn_key,
    "class_count": _bad_class_count,
    "pkl_without_customnet": _bad_pkl_without_customnet,
    "not_weights_only": _bad_not_weights_only,
    "speedpaper_as_fcn8s": _bad_arch_for_speedpaper,
    "torchfcn_as_speedpaper": _bad_speedpaper_for_torchfcn,
    "mean_count": _bad_mean_count,
    "std_not_positive": _bad_std,
    "preset_and_numbers": _bad_preset_and_numbers,
    "mean_not_numbers": _bad_mean_not_numbers,
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_exits_2_naming_it(tmp_path, monkeypatch, capsys, case):
    args, expected = BAD[case](tmp_path)
    assert_exits_2(args, expected, tmp_path, monkeypatch, capsys)


def test_not_weights_only_never_runs_code(tmp_path, capsys):
    import torch

    class Exploit:
        def __reduce__(self):
            return (print, ("this ran",))

    torch.save(
        {"CustomNet": {"stage1.0.weight": Exploit()}}, tmp_path / "e.pkl", pickle_module=pickle
    )
    with pytest.raises(FCNError, match=r"e\.pkl is not .*\(not weights-only.*it holds print"):
        convert_torch_file(tmp_path / "e.pkl", "speedpaper")
    assert "this ran" not in capsys.readouterr().out


# ---------------------------------------------------------------- the command line


def test_cli_pth_check_and_back(tmp_path):
    # The bare <epoch>.pth form, --check on the bundled VOC sample (cropped), then --to-torch.
    import torch

    from fcn_jax.torch_reference import TorchSpeedPaperFCN

    state = save_speedpaper(tmp_path / "200.pth", n_class=12)
    r = run_script(
        "convert_torch_weights.py",
        *("--src", "200.pth", "--arch", "speedpaper", "--out", "w", "--check"),
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert "converted speedpaper 200.pth -> w: speedpaper, 12 classes" in r.stdout
    assert "input 500x334 centre-cropped to 480x320" in r.stdout
    assert "PASS" in r.stdout and "argmax agreement: 100.0000%" in r.stdout
    for layer in ("s1", "s5", "add1", "trans1", "add2", "trans2", "upsample_8x", "logits"):
        assert f"\n{layer} " in r.stdout, layer
    assert "scores1, scores2, scores3" in r.stderr
    r = run_script(
        "convert_torch_weights.py",
        *("--to-torch", "--src", "w", "--out", "back.pth", "--check"),
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert "PASS" in r.stdout
    back = torch.load(tmp_path / "back.pth", weights_only=True)
    TorchSpeedPaperFCN(12, NARROW).load_state_dict(back, strict=True)
    assert torch.equal(back["upsample_2x_1.weight"], state["upsample_2x_1.weight"])


def test_cli_pkl_with_grey_statistics(tmp_path):
    # The {"CustomNet": ...} .pkl form, with SpeedPaper's second version's statistics.
    save_speedpaper(tmp_path / "BaseLine_76e_43.7023%.pkl", form="pkl", epoch=76)
    r = run_script(
        "convert_torch_weights.py",
        *("--src", "BaseLine_76e_43.7023%.pkl", "--arch", "speedpaper", "--out", "w"),
        *("--n-class", N_CLASS, "--mean", *GREY_MEAN, "--std", *GREY_STD),
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert "preprocessing custom" in r.stdout
    metadata = load_weights(tmp_path / "w")[1]
    assert metadata.preprocessing == Preprocessing(
        "custom", "RGB", 1, tuple(GREY_MEAN), tuple(GREY_STD)
    )
    assert metadata.arch == "speedpaper" and metadata.n_class == N_CLASS


def test_eval_torch_observer_pads_like_jax(narrow, rng):
    # eval.py --against-torch: the torch side gets the BatchNorm statistics and pads sides that
    # are not multiples of 32 as NetSpec.logits does, so both predict the same classes.
    from fcn_jax.eval.torch_observer import TorchComparison
    from fcn_jax.models import predict_fn

    _, _, (variables, metadata, _) = narrow
    spec = metadata.spec
    batch = {"image": np.stack([random_image(rng, 50, 70) for _ in range(2)])}
    torch_logits = TorchComparison(variables, metadata)._forward(batch)["out"].numpy()
    with jax.default_matmul_precision("highest"):
        ours = np.asarray(predict_fn(spec)(variables, batch)["out"])
    assert torch_logits.shape == (2, N_CLASS, 50, 70) and ours.shape == (2, 50, 70, N_CLASS)
    ref = torch_logits.transpose(0, 2, 3, 1)
    assert np.max(np.abs(ours - ref)) <= PARITY_TOLERANCE * np.max(np.abs(ref))
