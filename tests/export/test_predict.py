"""predict.py on artifacts: the weights directory's outputs, without flax; the refusals."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from fcn_jax.cli import run
from fcn_jax.export.build import export_weights
from fcn_jax.export.predictor import resize_bilinear
from fcn_jax.models.fcn_resnet import resize_bilinear as model_resize_bilinear
from tests.export.nets import save_case
from tests.test_cli import load_script
from tests.utils import REPO

# Runs predict.py with an import hook that fails any import of flax.
NO_FLAX = textwrap.dedent(
    """
    import importlib.abc, runpy, sys

    class NoFlax(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "flax" or name.startswith("flax."):
                raise ImportError(f"predict.py on an artifact imported {name}")

    sys.meta_path.insert(0, NoFlax())
    sys.argv = ["predict.py", *sys.argv[1:]]
    runpy.run_path("predict.py", run_name="__main__")
    assert not any(m == "flax" or m.startswith("flax.") for m in sys.modules)
    """
)


def predict(args, capsys):
    """predict.py's main through its runner: (exit status, stderr)."""
    cli = load_script("predict")
    with pytest.raises(SystemExit) as exit_info:
        run(lambda _: cli.main(list(map(str, args))))
    return exit_info.value.code, capsys.readouterr().err


def write_image(path, height, width, seed=0):
    rng = np.random.default_rng(seed)
    # Smooth, so that the prediction has regions rather than noise.
    small = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR).save(path)
    return path


def assert_same_predictions(want_dir, got_dir, stem):
    """Equal class maps away from ties, logits within 1e-4 of their scale, same overlay size."""
    want = np.load(want_dir / f"{stem}.npy")
    got = np.load(got_dir / f"{stem}.npy")
    scale = np.abs(want).max()
    np.testing.assert_allclose(got, want, atol=1e-4 * scale, rtol=0)
    top2 = np.sort(want, -1)[..., -2:]
    clear = top2[..., 1] - top2[..., 0] > 1e-4 * scale
    labels = [np.asarray(Image.open(d / f"{stem}.png")) for d in (want_dir, got_dir)]
    np.testing.assert_array_equal(labels[1][clear], labels[0][clear])
    assert clear.mean() > 0.99
    palettes = [Image.open(d / f"{stem}.png").getpalette() for d in (want_dir, got_dir)]
    assert palettes[0] == palettes[1]
    sizes = [Image.open(d / f"{stem}_overlay.png").size for d in (want_dir, got_dir)]
    assert sizes[0] == sizes[1]


@pytest.mark.parametrize("fmt", ["stablehlo", pytest.param("onnx", marks=pytest.mark.torch)])
def test_artifact_predicts_what_the_weights_do_without_flax(fmt, tmp_path, capsys):
    weights, _ = save_case(tmp_path / "w", "fcn8s")
    artifact = tmp_path / f"fcn8s.{fmt}"
    export_weights(weights, artifact, fmt, check=False)
    image = write_image(tmp_path / "photo.png", 45, 61)
    code, err = predict(
        ["--weights", weights, "--input", image, "--out", tmp_path / "w_out", "--save-logits"],
        capsys,
    )
    assert code == 0, err
    args = ["--weights", artifact, "--input", image, "--out", tmp_path / "a_out", "--save-logits"]
    r = subprocess.run(
        [sys.executable, "-c", NO_FLAX, *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert_same_predictions(tmp_path / "w_out", tmp_path / "a_out", "photo")


def test_evaluation_resize_is_applied_as_for_the_weights(tmp_path, capsys):
    # FCN-ResNet weights with an evaluation resize (shorter side 48): the image is resized
    # before the artifact and the logits back after it, as the weights directory's predict does.
    weights, _ = save_case(tmp_path / "w", "fcn_resnet50")
    artifact = tmp_path / "r50.stablehlo"
    export_weights(weights, artifact, "stablehlo", check=False)
    image = write_image(tmp_path / "photo.png", 70, 57)
    for src, out in ((weights, "w_out"), (artifact, "a_out")):
        args = ["--weights", src, "--input", image, "--out", tmp_path / out, "--save-logits"]
        code, err = predict(args, capsys)
        assert code == 0, err
    assert np.load(tmp_path / "a_out" / "photo.npy").shape == (70, 57, 21)
    assert_same_predictions(tmp_path / "w_out", tmp_path / "a_out", "photo")


def test_the_resize_back_is_the_models():
    x = np.random.default_rng(0).normal(size=(1, 9, 13, 4)).astype(np.float32)
    np.testing.assert_array_equal(resize_bilinear(x, 30, 21), model_resize_bilinear(x, 30, 21))


def test_artifacts_predict_cannot_take_exits_2(tmp_path, capsys):
    fixed, _ = save_case(tmp_path / "w", "fcn32s")
    export_weights(fixed, tmp_path / "fixed.stablehlo", "stablehlo", sizes=(1, 40, 40), check=False)
    export_weights(fixed, tmp_path / "labels.stablehlo", "stablehlo", outputs="labels", check=False)
    nyud, _ = save_case(tmp_path / "nyud", "nyud_rgbhha")
    export_weights(nyud, tmp_path / "nyud.stablehlo", "stablehlo", check=False)
    image = write_image(tmp_path / "photo.png", 36, 44)
    cases = [
        ("fixed.stablehlo", [], r"takes uint8 [1 x 40 x 40 x 3] (RGB), got uint8 [1, 36, 44, 3]"),
        ("labels.stablehlo", ["--save-logits"], "has no logits output"),
        ("nyud.stablehlo", [], "reads ['image', 'hha'], not RGB images alone"),
        ("labels.stablehlo", ["--step", "0"], "is an exported artifact"),
        ("labels.stablehlo", ["--best"], "is an artifact"),
        ("missing.onnx", [], "missing.onnx does not exist"),
    ]
    for name, more, message in cases:
        args = ["--weights", tmp_path / name, "--input", image, "--out", tmp_path / "out", *more]
        code, err = predict(args, capsys)
        assert code == 2 and message in err, (name, err)
    # A labels-only artifact predicts class maps (no logits to save).
    code, err = predict(
        ["--weights", tmp_path / "labels.stablehlo", "--input", image, "--out", tmp_path / "o"],
        capsys,
    )
    assert code == 0, err
    assert np.asarray(Image.open(tmp_path / "o" / "photo.png")).shape == (36, 44)
