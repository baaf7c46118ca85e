"""predict.py and the library behind it."""

import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from fcn_jax.checkpoint import save_weights
from fcn_jax.data.io import read_image
from fcn_jax.errors import FCNError
from fcn_jax.inference import Predictor, predict_files, save_index_png
from fcn_jax.models import abstract_variables
from fcn_jax.preprocessing import CAFFE_VOC
from fcn_jax.resources import VOC_SAMPLE_LABEL, voc_palette
from fcn_jax.visualize import display_scale, overlay_picture
from tests.utils import NARROW, REPO, metadata_for, run_script


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory):
    meta = metadata_for("fcn8s", 21, NARROW, CAFFE_VOC)
    leaves, tree = jax.tree.flatten(abstract_variables(meta.spec)["params"])
    rng = np.random.default_rng(0)
    params = jax.tree.unflatten(
        tree, [(0.05 * rng.standard_normal(x.shape)).astype(np.float32) for x in leaves]
    )
    return save_weights(tmp_path_factory.mktemp("w") / "weights", {"params": params}, meta)


def test_palette_png_round_trip(tmp_path):
    labels = np.array([[0, 1, 2], [15, 20, 255]], np.uint8)
    path = save_index_png(labels, tmp_path / "x.png")
    with Image.open(path) as im:
        assert im.mode == "P"
        np.testing.assert_array_equal(np.asarray(im), labels)
        np.testing.assert_array_equal(
            np.array(im.getpalette()[:768]).reshape(256, 3), voc_palette()
        )
    # The palette is VOC's own: the bundled label PNG carries the same one.
    with Image.open(VOC_SAMPLE_LABEL) as im:
        np.testing.assert_array_equal(
            np.array(im.getpalette()[:768]).reshape(256, 3), voc_palette()
        )


def test_predict_folder_writes_maps_overlays_and_logits(weights_dir, tmp_path, rng):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(rng.integers(0, 256, (23, 31, 3), dtype=np.uint8)).save(src / "b.jpg")
    Image.fromarray(rng.integers(0, 256, (17, 9), dtype=np.uint8)).save(src / "a_grey.png")
    (src / "notes.txt").write_text("not an image")
    result = predict_files(weights_dir, src, tmp_path / "out", save_logits=True)
    # Named by stem, never by index; sorted by name.
    assert [p.name for p in result.written] == ["a_grey.png", "b.png"]
    assert result.failed == []
    for stem, shape in (("b", (23, 31)), ("a_grey", (17, 9))):
        with Image.open(tmp_path / "out" / f"{stem}.png") as im:
            labels = np.asarray(im)
            assert im.mode == "P" and labels.shape == shape
            np.testing.assert_array_equal(
                np.array(im.getpalette()[:768]).reshape(256, 3), voc_palette()
            )
        logits = np.load(tmp_path / "out" / f"{stem}.npy")
        assert logits.shape == (*shape, 21) and logits.dtype == np.float32
        np.testing.assert_array_equal(labels, logits.argmax(-1))
        with Image.open(tmp_path / "out" / f"{stem}_overlay.png") as im:
            overlay = np.asarray(im)
        k = display_scale(*shape)  # small images are enlarged, each pixel a k x k square
        h, w = k * shape[0], k * shape[1]
        assert overlay.shape[0] > h and overlay.shape[1] >= 2 * w  # + legend
        np.testing.assert_array_equal(overlay[:h:k, w : 2 * w : k], voc_palette()[labels])
    assert len({*np.unique(labels)}) > 1  # random weights: not a constant map


def test_predict_uses_the_metadata_palette(tmp_path, rng):
    palette = ((10, 20, 30), (200, 100, 0), (0, 255, 0))
    meta = metadata_for(
        "fcn32s", 3, NARROW, CAFFE_VOC, class_names=("a", "b", "c"), palette=palette
    )
    leaves, tree = jax.tree.flatten(abstract_variables(meta.spec)["params"])
    params = jax.tree.unflatten(
        tree, [(0.05 * rng.standard_normal(x.shape)).astype(np.float32) for x in leaves]
    )
    save_weights(tmp_path / "w", {"params": params}, meta)
    Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(tmp_path / "x.png")
    predict_files(tmp_path / "w", tmp_path / "x.png", tmp_path / "out")
    with Image.open(tmp_path / "out" / "x.png") as im:
        assert np.array(im.getpalette()[:9]).reshape(3, 3).tolist() == [list(c) for c in palette]
        labels = np.asarray(im)
    k = display_scale(20, 24)
    with Image.open(tmp_path / "out" / "x_overlay.png") as im:
        np.testing.assert_array_equal(
            np.asarray(im)[: 20 * k : k, 24 * k : 48 * k : k], np.asarray(palette, np.uint8)[labels]
        )


def test_overlay_legend_lists_classes_present():
    image = np.zeros((30, 40, 3), np.uint8)
    labels = np.zeros((30, 40), np.uint8)
    labels[:, 20:] = 2
    labels[0] = 255
    names = ["background", "cat", "a-very-distinctive-name"]
    picture = overlay_picture(image, labels, voc_palette(), names)
    legend = picture[30 * display_scale(30, 40) :]
    assert legend.shape[0] >= 16
    colours = {tuple(c) for c in legend.reshape(-1, 3)}
    assert tuple(voc_palette()[2]) in colours and tuple(voc_palette()[1]) not in colours


def test_input_errors(weights_dir, tmp_path):
    with pytest.raises(FCNError, match="does not exist"):
        predict_files(weights_dir, tmp_path / "missing", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FCNError, match="holds no images"):
        predict_files(weights_dir, tmp_path / "empty", tmp_path / "out")
    dup = tmp_path / "dup"
    dup.mkdir()
    for name in ("x.jpg", "x.png"):
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(dup / name)
    with pytest.raises(FCNError, match=r"x\.jpg and x\.png .* share the stem 'x'"):
        predict_files(weights_dir, dup, tmp_path / "out")
    # Different stems, same output name: x.jpg's overlay would be x_overlay.png's class map.
    clash = tmp_path / "clash"
    clash.mkdir()
    for name in ("x.jpg", "x_overlay.png"):
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(clash / name)
    with pytest.raises(FCNError, match=r"x\.jpg and x_overlay\.png .* both write x_overlay\.png"):
        predict_files(weights_dir, clash, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_predictor_matches_plain_forward(weights_dir, rng):
    predictor = Predictor.from_dir(weights_dir)
    image = rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)
    logits, _ = predictor(image)
    model = predictor.metadata.spec.module()
    x = CAFFE_VOC.apply(image[None])
    expected = model.apply(predictor.variables, x)["out"][0]
    np.testing.assert_allclose(np.asarray(logits), np.asarray(expected), rtol=1e-5, atol=1e-5)


def test_bad_images(tmp_path):
    with pytest.raises(FCNError, match="does not exist"):
        read_image(tmp_path / "none.jpg")
    (tmp_path / "x.jpg").write_text("text")
    with pytest.raises(FCNError, match=r"x\.jpg is not an image"):
        read_image(tmp_path / "x.jpg")


def test_predict_cli(weights_dir, tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            str(REPO / "predict.py"),
            "--weights",
            str(weights_dir),
            "--input",
            str(REPO / "fcn_jax/assets/voc_sample.jpg"),
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    with Image.open(tmp_path / "voc_sample.png") as im, Image.open(VOC_SAMPLE_LABEL) as ref:
        assert im.size == ref.size
    r = subprocess.run(
        [
            sys.executable,
            str(REPO / "predict.py"),
            "--weights",
            str(tmp_path / "nowhere"),
            "--input",
            str(REPO / "fcn_jax/assets/voc_sample.jpg"),
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "nowhere does not exist" in r.stderr
    assert "Traceback" not in r.stderr


# --- images as a viewer shows them, overlays --------------------------------------------------


def test_predict_applies_exif_orientation(weights_dir, tmp_path, rng):
    """A phone photo stored 60 wide, 40 high, shown turned (orientation 6): 40 wide, 60 high."""
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "phone.jpg"
    Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(path, exif=exif)
    predict_files(weights_dir, path, tmp_path / "out", save_logits=True, progress=False)
    upright = read_image(path)
    assert upright.shape == (60, 40, 3)
    with Image.open(tmp_path / "out" / "phone.png") as im:
        labels = np.asarray(im)
    assert labels.shape == (60, 40)
    assert np.load(tmp_path / "out" / "phone.npy").shape == (60, 40, 21)
    np.testing.assert_array_equal(labels, np.asarray(Predictor.from_dir(weights_dir)(upright)[1]))
    k = display_scale(60, 40)
    with Image.open(tmp_path / "out" / "phone_overlay.png") as im:
        overlay = np.asarray(im)
    np.testing.assert_array_equal(overlay[: 60 * k : k, : 40 * k : k], upright)  # drawn upright


def test_predict_blend_overlay(weights_dir, tmp_path, rng):
    image = rng.integers(0, 256, (9, 14, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "x.png")
    predict_files(weights_dir, tmp_path / "x.png", tmp_path / "out", overlay="blend", alpha=0.25)
    with Image.open(tmp_path / "out" / "x.png") as im:
        labels = np.asarray(im)
    with Image.open(tmp_path / "out" / "x_overlay.png") as im:
        overlay = np.asarray(im)
    k = display_scale(9, 14)
    top = overlay[: 9 * k : k, : 14 * k : k].astype(float)
    expected = 0.75 * image + 0.25 * voc_palette()[labels].astype(float)
    assert np.abs(top - expected).max() <= 0.5
    assert (overlay[: 9 * k, 14 * k :] == 255).all()  # one panel (white beyond: legend's width)


def test_predict_checks_everything_before_loading(weights_dir, tmp_path, rng):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(rng.integers(0, 256, (5, 5), dtype=np.uint8)).save(src / "gray.png")
    before = (src / "gray.png").read_bytes()
    with pytest.raises(FCNError, match=r"alpha 2\.0 is not between 0"):
        predict_files(tmp_path / "no-weights", src, tmp_path / "out", overlay="blend", alpha=2.0)
    with pytest.raises(FCNError, match=r"--out .*in is the input .*choose another --out"):
        predict_files(tmp_path / "no-weights", src, src)
    (tmp_path / "file").write_text("keep")
    with pytest.raises(FCNError, match=r"--out .*file is a file, not a folder"):
        predict_files(tmp_path / "no-weights", src, tmp_path / "file")
    with pytest.raises(FCNError, match=r"--out .*w.* is the weights"):
        predict_files(weights_dir, src, weights_dir)
    assert (src / "gray.png").read_bytes() == before and sorted(src.iterdir()) == [src / "gray.png"]
    assert (tmp_path / "file").read_text() == "keep"


def test_predict_folder_skips_unreadable_hidden_and_subfolders(weights_dir, tmp_path, rng):
    src = tmp_path / "in"
    (src / "more").mkdir(parents=True)
    for name in ("a.jpg", "c.png", "more/d.png"):
        Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).save(src / name)
    (src / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (src / "._a.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (src / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    result = predict_files(weights_dir, src, tmp_path / "out", progress=False)
    assert [p.name for p in result.written] == ["a.png", "c.png"]
    assert [(p.name, "b.png is not an image" in why) for p, why in result.failed] == [
        ("b.png", True)
    ]
    assert result.inputs.subfolders == [src / "more"]
    assert result.inputs.hidden == [src / ".DS_Store", src / "._a.jpg"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "a.png", "a_overlay.png", "c.png", "c_overlay.png"
    ]  # fmt: skip


def test_folder_of_subfolders_says_so(weights_dir, tmp_path):
    (tmp_path / "in" / "2024").mkdir(parents=True)
    (tmp_path / "in" / ".DS_Store").write_bytes(b"\x00")
    with pytest.raises(FCNError, match=r"holds no images .* subfolders \(2024\)"):
        predict_files(weights_dir, tmp_path / "in", tmp_path / "out")


# --- predict.py -----------------------------------------------------------------------------


def test_predict_cli_never_writes_over_its_input(weights_dir, tmp_path, rng):
    src = tmp_path / "imgs"
    src.mkdir()
    Image.fromarray(rng.integers(0, 256, (5, 7), dtype=np.uint8)).save(src / "gray.png")
    (tmp_path / "notes.txt").write_text("mine")
    before = {p.name: p.read_bytes() for p in src.iterdir()}
    for out in (src, tmp_path / "notes.txt"):
        r = run_script("predict.py", "--weights", weights_dir, "--input", src, "--out", out)
        assert r.returncode == 2, r.stderr
        assert r.stderr.startswith("error: --out") and "Traceback" not in r.stderr
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_predict_cli_folder_with_unreadable_files(weights_dir, tmp_path, rng):
    src = tmp_path / "imgs"
    (src / "holiday").mkdir(parents=True)
    for name in ("a.jpg", "c.png", "e.png"):
        Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).save(src / name)
    (src / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (src / "d.jpg").write_text("not a jpeg")
    (src / "._a.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (src / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    out = tmp_path / "out"
    r = run_script("predict.py", "--weights", weights_dir, "--input", src, "--out", out)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert sorted(p.name for p in out.glob("*.png")) == [
        "a.png", "a_overlay.png", "c.png", "c_overlay.png", "e.png", "e_overlay.png"
    ]  # fmt: skip
    assert "wrote 3 prediction(s)" in r.stdout
    assert "error: 2 of 5 image(s) could not be read" in r.stderr
    summary = r.stderr[r.stderr.index("error: ") :]
    reported = [line for line in summary.split("\n")[1:] if line.startswith("  ")]
    assert len(reported) == 2
    assert "b.png is not an image PIL can read" in reported[0]
    assert "d.jpg is not an image PIL can read" in reported[1]
    assert "._a.jpg" not in r.stderr and ".DS_Store" not in r.stderr
    assert "not read: holiday/" in r.stderr
    # Reported as met, each on a line of its own: never glued to the progress bar.
    segments = [s for line in r.stderr.split("\n") for s in line.split("\r")]
    met = [s for s in segments if "b.png" in s and "error" not in s and not s.startswith("  ")]
    assert met and all(s.startswith("skipped: ") for s in met), met


def test_predict_cli_overlay_flags(weights_dir, tmp_path):
    r = run_script("predict.py", "--help")
    assert r.returncode == 0
    assert all(flag in r.stdout for flag in ("--overlay {side,blend}", "--alpha", "Exit codes"))
    for bad in ("1.5", "-0.1", "half"):
        r = run_script(
            "predict.py", "--weights", weights_dir, "--input", tmp_path, "--out", tmp_path / "o",
            "--overlay", "blend", "--alpha", bad,
        )  # fmt: skip
        assert r.returncode == 2 and "--alpha" in r.stderr and "error:" in r.stderr
    assert not (tmp_path / "o").exists()


def test_predict_with_batch_norm_weights_at_any_size(tmp_path, rng):
    # SpeedPaper's FCN (vgg16_bn, statistics in the weights directory) on sides that are not
    # multiples of 32: padded with the mean pixel, logits cropped back to the image.
    from fcn_jax.models import random_variables
    from fcn_jax.preprocessing import TORCHVISION

    meta = metadata_for(
        "speedpaper", 4, NARROW, TORCHVISION, backbone="vgg16_bn", learn_upsampling=True
    )
    variables = random_variables(meta.spec, seed=2)
    save_weights(tmp_path / "w", variables, meta)
    image = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "x.png")
    predict_files(tmp_path / "w", tmp_path / "x.png", tmp_path / "out", save_logits=True)
    logits = np.load(tmp_path / "out" / "x.npy")
    assert logits.shape == (50, 70, 4)
    direct, _ = Predictor(variables, meta)(image)
    np.testing.assert_allclose(logits, np.asarray(direct), rtol=1e-5, atol=1e-5)
