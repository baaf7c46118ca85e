"""Conversion at narrow width: round trips, metadata, parity over random sizes, every bad input."""

import pickle
import re
import sys

import jax
import numpy as np
import pytest

from fcn_jax.checkpoint import load_weights, save_weights
from fcn_jax.convert import convert_torch_file, export_torchfcn, read_torch_weights
from fcn_jax.convert.check import check_parity
from fcn_jax.convert.layout import conv_to_flax, conv_to_torch, deconv_to_flax, deconv_to_torch
from fcn_jax.errors import FCNError
from fcn_jax.models import VARIANTS, get_variant, random_variables
from fcn_jax.models.backbones.vgg16 import TORCHVISION_CONVS
from fcn_jax.preprocessing import CAFFE_VOC, TORCHVISION
from fcn_jax.resources import voc_class_names
from tests.convert.cli import load_cli
from tests.utils import NARROW, metadata_for, random_image, run_script

ALL = sorted(VARIANTS)


def save_fcn(path, variant="fcn8s", n_class=21, width=NARROW, wrap=True, seed=0, **extra):
    import torch

    from fcn_jax.torch_reference import random_state_dict

    state = random_state_dict(variant, n_class, width, seed)
    obj = {"model_state_dict": state, "arch": get_variant(variant).torch_name, **extra}
    torch.save(obj if wrap else state, path)
    return state


def test_torchvision_index_table():
    assert list(TORCHVISION_CONVS) == [
        f"features.{i}" for i in (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
    ]
    assert TORCHVISION_CONVS["features.28"] == "conv5_3"


def test_layout_functions_are_inverse(rng):
    w = rng.standard_normal((4, 3, 5, 5)).astype(np.float32)
    np.testing.assert_array_equal(conv_to_torch(conv_to_flax(w)), w)
    np.testing.assert_array_equal(deconv_to_torch(deconv_to_flax(w)), w)


@pytest.mark.torch
@pytest.mark.parametrize("variant", ALL)
@pytest.mark.parametrize("wrap", [True, False], ids=["model_state_dict", "bare"])
def test_torchfcn_round_trip_is_bitwise(tmp_path, variant, wrap):
    import torch

    src = tmp_path / "in.pth"
    state = save_fcn(src, variant, n_class=7, wrap=wrap)
    variables, meta, _ = convert_torch_file(src, variant)
    save_weights(tmp_path / "w", variables, meta)
    out = export_torchfcn(tmp_path / "w", tmp_path / "out.pth")
    back = torch.load(out, weights_only=True)
    assert back["arch"] == get_variant(variant).torch_name
    assert back["model_state_dict"].keys() == state.keys()
    for k, v in state.items():
        assert torch.equal(back["model_state_dict"][k], v), k
    # The exported file converts again to the same params.
    again, meta2, _ = convert_torch_file(out, variant)
    assert meta2.n_class == 7 and meta2.width == NARROW
    jax.tree.map(np.testing.assert_array_equal, again, variables)


@pytest.mark.torch
def test_torchfcn_metadata(tmp_path):
    src = tmp_path / "in.pth"
    save_fcn(src, "fcn16s")
    variables, meta, _ = convert_torch_file(src, "fcn16s")
    assert (meta.arch, meta.n_class, meta.width, meta.source) == ("fcn16s", 21, NARROW, "torchfcn")
    assert meta.preprocessing == CAFFE_VOC
    assert meta.preprocessing.channel_order == "BGR" and meta.preprocessing.scale == 255
    assert meta.class_names == voc_class_names()
    assert len(meta.source_sha256) == 64
    save_weights(tmp_path / "w", variables, meta)
    loaded, meta_loaded = load_weights(tmp_path / "w")
    assert meta_loaded == meta
    jax.tree.map(np.testing.assert_array_equal, loaded, variables)


@pytest.mark.torch
def test_module_prefix_is_stripped(tmp_path):
    import torch

    from fcn_jax.torch_reference import random_state_dict

    state = random_state_dict("fcn32s", 21, NARROW)
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "dp.pth")
    assert set(read_torch_weights(tmp_path / "dp.pth").state) == set(state)


@pytest.fixture(scope="module")
def narrow_sources(tmp_path_factory):
    """Narrow random torchfcn checkpoints of every variant, converted."""
    d = tmp_path_factory.mktemp("narrow")
    out = {}
    for i, variant in enumerate(ALL):
        save_fcn(d / f"{variant}.pth", variant, seed=i)
        variables, meta, weights = convert_torch_file(d / f"{variant}.pth", variant)
        out[variant] = (variables, meta, weights)
    return out


def _sweep():
    # Seeded random sizes (each one compiles), odd and non-square, variants taking turns.
    rng = np.random.default_rng(2024)
    return [(ALL[i % 4], int(h), int(w)) for i, (h, w) in enumerate(rng.integers(1, 65, (8, 2)))]


@pytest.mark.torch
@pytest.mark.parametrize(("variant", "height", "width"), _sweep())
def test_narrow_parity_over_random_sizes(narrow_sources, variant, height, width, rng):
    variables, meta, weights = narrow_sources[variant]
    report = check_parity(weights, variables, meta, random_image(rng, height, width))
    assert report.passed, report.format()
    assert report.final.rel < 1e-4
    assert report.confident_agreement == 100.0
    assert report.final.shape == (1, height, width, 21)


@pytest.mark.torch
def test_check_fails_past_tolerance(narrow_sources, rng):
    variables, meta, weights = narrow_sources["fcn8s"]
    params = variables["params"]
    broken = {
        **params,
        "score_fr": {**params["score_fr"], "bias": params["score_fr"]["bias"] + 1.0},
    }
    report = check_parity(weights, {**variables, "params": broken}, meta, random_image(rng, 20, 20))
    assert not report.passed
    assert "FAIL" in report.format()
    # The block table points at the first broken layer: everything before it agrees.
    rows = {d.name: d.rel for d in report.layers}
    assert rows["fc7"] < 1e-5 and rows["score_fr"] > 1e-3


@pytest.mark.torch
def test_vgg16_conversion_narrow(tmp_path, rng):
    import torch

    from fcn_jax.torch_reference import random_vgg16_state_dict

    state = random_vgg16_state_dict(NARROW, seed=3)
    torch.save(state, tmp_path / "vgg.pth")
    variables, meta, weights = convert_torch_file(tmp_path / "vgg.pth", "fcn8s", n_class=5)
    params = variables["params"]
    assert weights.kind == "torchvision_vgg16"
    assert meta.preprocessing == TORCHVISION and meta.n_class == 5
    assert meta.class_names == tuple(f"class_{i}" for i in range(5))
    np.testing.assert_array_equal(
        params["vgg16"]["fc6"]["kernel"][:, :, 2, 7],
        state["classifier.0.weight"].numpy().reshape(-1, 64, 7, 7)[7, 2],
    )
    assert not np.any(params["score_pool3"]["kernel"]) and not np.any(params["score_fr"]["bias"])
    report = check_parity(weights, variables, meta, random_image(rng, 30, 41))
    assert report.compared == "fc7" and report.passed, report.format()


# ---------------------------------------------------------------- bad input


def test_missing_file(tmp_path):
    with pytest.raises(FCNError, match=r"nope\.pth does not exist"):
        convert_torch_file(tmp_path / "nope.pth", "fcn8s")


def test_without_torch_a_pth_says_how_to_install_it(tmp_path, monkeypatch):
    (tmp_path / "x.pth").write_bytes(b"a .pth file")
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    with pytest.raises(
        FCNError, match=r"PyTorch is needed for this: pip install 'fcn-jax\[torch\]'"
    ):
        convert_torch_file(tmp_path / "x.pth", "fcn8s")
    meta = metadata_for("fcn32s", 3, NARROW, CAFFE_VOC)
    save_weights(tmp_path / "w", random_variables(meta.spec), meta)
    with pytest.raises(FCNError, match="PyTorch is needed"):
        export_torchfcn(tmp_path / "w", tmp_path / "out.pth")
    assert not (tmp_path / "out.pth").exists()


@pytest.mark.torch
def test_not_a_checkpoint(tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint at all")
    with pytest.raises(FCNError, match=r"junk\.pth is not a PyTorch checkpoint"):
        convert_torch_file(tmp_path / "junk.pth", "fcn8s")


class Exploit:
    def __reduce__(self):
        return (print, ("this ran",))


@pytest.mark.torch
def test_a_checkpoint_never_runs_code(tmp_path, capsys):
    import torch

    path = tmp_path / "evil.pth"
    torch.save({"model_state_dict": {"x": Exploit()}}, path, pickle_module=pickle)
    with pytest.raises(FCNError, match=r"evil\.pth is not a PyTorch checkpoint"):
        convert_torch_file(path, "fcn8s")
    assert "this ran" not in capsys.readouterr().out


@pytest.mark.torch
def test_no_state_dict(tmp_path):
    import torch

    torch.save({"epoch": 3, "optim_state_dict": {}}, tmp_path / "x.pth")
    with pytest.raises(FCNError, match=r"x\.pth holds no state dict.*epoch, optim_state_dict"):
        convert_torch_file(tmp_path / "x.pth", "fcn8s")


@pytest.mark.torch
def test_unrecognised_keys(tmp_path):
    import torch

    torch.save({"encoder.weight": torch.zeros(2)}, tmp_path / "x.pth")
    with pytest.raises(FCNError, match=r"neither a torchvision VGG16.*encoder\.weight"):
        convert_torch_file(tmp_path / "x.pth", "fcn8s")


@pytest.mark.torch
def test_missing_and_unexpected_keys_are_listed(tmp_path):
    import torch

    from fcn_jax.torch_reference import random_state_dict

    state = random_state_dict("fcn8s", 21, NARROW)
    del state["score_pool3.weight"], state["conv2_1.bias"]
    state["extra.weight"] = torch.zeros(3)
    torch.save(state, tmp_path / "x.pth")
    with pytest.raises(FCNError) as e:
        convert_torch_file(tmp_path / "x.pth", "fcn8s")
    msg = str(e.value)
    assert "x.pth does not fit an fcn8s" in msg
    assert "missing keys: conv2_1.bias, score_pool3.weight" in msg
    assert "unexpected keys: extra.weight" in msg


@pytest.mark.torch
def test_wrong_variant_keys_name_the_family(tmp_path):
    save_fcn(tmp_path / "x.pth", "fcn16s", wrap=False)
    with pytest.raises(FCNError) as e:
        convert_torch_file(tmp_path / "x.pth", "fcn8s")
    msg = str(e.value)
    assert "look like fcn16s" in msg
    assert "missing keys: score_pool3.bias, score_pool3.weight, upscore8.weight" in msg
    assert "unexpected keys: upscore16.weight" in msg


@pytest.mark.torch
def test_shape_mismatch_names_layer_and_shapes(tmp_path):
    import torch

    from fcn_jax.torch_reference import random_state_dict

    state = random_state_dict("fcn32s", 21, NARROW)
    state["conv3_2.weight"] = torch.zeros(32, 32, 5, 5)
    torch.save(state, tmp_path / "x.pth")
    with pytest.raises(
        FCNError,
        match=r"shape mismatch in conv3_2: conv3_2\.weight is "
        r"\(32, 32, 5, 5\) there, .* needs \(32, 32, 3, 3\)",
    ):
        convert_torch_file(tmp_path / "x.pth", "fcn32s")


@pytest.mark.torch
def test_class_count_disagreement(tmp_path):
    save_fcn(tmp_path / "x.pth", "fcn32s", n_class=21)
    with pytest.raises(FCNError, match=r"x\.pth has 21 classes .* but --n-class is 40"):
        convert_torch_file(tmp_path / "x.pth", "fcn32s", n_class=40)


@pytest.mark.torch
def test_arch_entry_disagreement(tmp_path):
    save_fcn(tmp_path / "x.pth", "fcn8s-atonce")
    with pytest.raises(FCNError, match=r"arch='FCN8sAtOnce' \(fcn8s-atonce\) but --arch is fcn8s"):
        convert_torch_file(tmp_path / "x.pth", "fcn8s")
    # Same keys, so the arch entry is the only thing that tells 8s from 8s-atonce.
    _, meta, _ = convert_torch_file(tmp_path / "x.pth", "fcn8s-atonce")
    assert meta.arch == "fcn8s-atonce"


@pytest.mark.torch
def test_vgg_shape_mismatch(tmp_path):
    import torch

    from fcn_jax.torch_reference import random_vgg16_state_dict

    state = random_vgg16_state_dict(NARROW)
    state["classifier.3.weight"] = torch.zeros(512, 100)
    torch.save(state, tmp_path / "vgg.pth")
    with pytest.raises(
        FCNError, match=r"shape mismatch in classifier\.3.*\(512, 100\).*\(512, 512\)"
    ):
        convert_torch_file(tmp_path / "vgg.pth", "fcn32s")


def test_unknown_arch(tmp_path):
    with pytest.raises(FCNError, match="unknown --arch 'fcn4s'"):
        convert_torch_file(tmp_path / "x.pth", "fcn4s")


# ---------------------------------------------------------------- the CLI


def run_cli(*args, cwd):
    return run_script("convert_torch_weights.py", *args, cwd=cwd)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--src", "missing.pth", "--arch", "fcn8s", "--out", "w"], "missing.pth does not exist"),
        pytest.param(
            ["--src", "junk.pth", "--arch", "fcn8s", "--out", "w"],
            "junk.pth is not a PyTorch",
            marks=pytest.mark.torch,  # torch.load is what tells
        ),
        (["--src", "junk.pth", "--out", "w"], "--arch is required"),
        (["--to-torch", "--src", "nowhere", "--out", "x.pth"], "nowhere does not exist"),
    ],
)
def test_cli_bad_input_exits_2_without_traceback(tmp_path, args, expected):
    (tmp_path / "junk.pth").write_bytes(b"\x00" * 10)
    r = run_cli(*args, cwd=tmp_path)
    assert r.returncode == 2, (args, r.stderr)
    assert expected in r.stderr and "Traceback" not in r.stderr, r.stderr


@pytest.mark.torch
def test_cli_convert_check_and_back(tmp_path):
    import torch

    state = save_fcn(tmp_path / "in.pth", "fcn32s", n_class=3)
    (tmp_path / "names.txt").write_text("sky\nroad\ncar\n")
    r = run_cli(
        "--src",
        "in.pth",
        "--arch",
        "fcn32s",
        "--out",
        "w",
        "--check",
        "--class-names",
        "names.txt",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert "PASS" in r.stdout and "argmax agreement: 100.0000%" in r.stdout
    assert load_weights(tmp_path / "w")[1].class_names == ("sky", "road", "car")
    r = run_cli("--src", "in.pth", "--arch", "fcn32s", "--out", "w", cwd=tmp_path)
    assert r.returncode == 2 and "already exists" in r.stderr
    r = run_cli("--to-torch", "--src", "w", "--out", "back.pth", "--check", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    back = torch.load(tmp_path / "back.pth", weights_only=True)["model_state_dict"]
    assert all(torch.equal(back[k], v) for k, v in state.items())


@pytest.mark.torch
def test_cli_check_failure_exits_1(tmp_path, monkeypatch, capsys):
    # A conversion whose parity check fails must not look like success.
    import fcn_jax.convert.check as check

    failing = check.ParityReport(
        "logits", (check.LayerDiff("logits", (1,), 1.0, 1.0),), 50.0, 50.0, 1
    )
    monkeypatch.setattr(check, "check_parity", lambda *a: failing)
    save_fcn(tmp_path / "in.pth", "fcn32s")
    cli = load_cli()
    code = cli.main(
        [
            "--src",
            str(tmp_path / "in.pth"),
            "--arch",
            "fcn32s",
            "--out",
            str(tmp_path / "w"),
            "--check",
        ]
    )
    assert code == 1
    assert "FAIL" in capsys.readouterr().out


def test_cli_checks_outputs_before_converting(tmp_path, monkeypatch):
    # Issue 12: an existing --out was refused only after 13.7 s of loading and converting.
    import fcn_jax.convert as convert

    def must_not_run(*args, **kwargs):
        raise AssertionError("converted before checking --out")

    monkeypatch.setattr(convert, "convert_torch_file", must_not_run)
    monkeypatch.setattr(convert, "export_torchfcn", must_not_run)
    (tmp_path / "in.pth").write_bytes(b"never read: the outputs are refused first")
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "keep.txt").write_text("mine")
    (tmp_path / "back.pth").write_bytes(b"previous")
    (tmp_path / "file").write_text("a file")
    cli = load_cli()
    src = str(tmp_path / "in.pth")
    cases = [
        (["--src", src, "--arch", "fcn32s", "--out", str(tmp_path / "w")], "already exists"),
        (["--src", src, "--arch", "fcn32s", "--out", str(tmp_path / "file")], "is a file"),
        (["--src", src, "--arch", "fcn32s", "--out", str(tmp_path / "file" / "w")], "is a file"),
        (["--src", src, "--arch", "fcn32s", "--out", "/sys/fcn_jax_w"], "cannot be written"),
        # --overwrite replaces the folder: never one that holds the source.
        (["--src", src, "--arch", "fcn32s", "--out", str(tmp_path), "--overwrite"],
         "contains the --src"),
        (["--src", src, "--arch", "fcn32s", "--out", "x", "--check", "--image", "no.jpg"],
         "--image no.jpg does not exist"),
        (["--to-torch", "--src", str(tmp_path / "w"), "--out", str(tmp_path / "back.pth")],
         "already exists"),
        (["--to-torch", "--src", str(tmp_path / "w"), "--out", str(tmp_path / "w"),
          "--overwrite"], "is a folder"),
    ]  # fmt: skip
    for args, expected in cases:
        with pytest.raises(FCNError, match=re.escape(expected)):
            cli.main(args)
    assert (tmp_path / "w" / "keep.txt").read_text() == "mine"
    assert (tmp_path / "back.pth").read_bytes() == b"previous"


def test_cli_to_torch_into_existing_folder_is_a_clean_error(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "w").mkdir()
    r = run_cli("--to-torch", "--src", "w", "--out", "out", "--overwrite", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "error: --out out is a folder" in r.stderr
