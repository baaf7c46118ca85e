"""predict.py and the library behind it."""

import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from fcn_jax.checkpoint import WeightsMetadata, save_weights
from fcn_jax.data.io import read_image
from fcn_jax.errors import FCNError
from fcn_jax.inference import Predictor, predict_files, save_index_png
from fcn_jax.models import abstract_params
from fcn_jax.preprocessing import CAFFE_VOC
from fcn_jax.resources import VOC_SAMPLE_LABEL, default_class_names, voc_palette
from fcn_jax.visualize import overlay_picture
from tests.utils import NARROW, REPO


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory):
    meta = WeightsMetadata("fcn8s", 21, default_class_names(21), NARROW, CAFFE_VOC)
    leaves, tree = jax.tree.flatten(abstract_params(meta.model()))
    rng = np.random.default_rng(0)
    params = jax.tree.unflatten(
        tree, [(0.05 * rng.standard_normal(x.shape)).astype(np.float32) for x in leaves]
    )
    return save_weights(tmp_path_factory.mktemp("w") / "weights", params, meta)


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
    written = predict_files(weights_dir, src, tmp_path / "out", save_logits=True)
    # Named by stem, never by index; sorted by name.
    assert [p.name for p in written] == ["a_grey.png", "b.png"]
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
        assert overlay.shape[0] > shape[0] and overlay.shape[1] == 2 * shape[1]  # + legend
        np.testing.assert_array_equal(overlay[: shape[0], shape[1] :], voc_palette()[labels])
    assert len({*np.unique(labels)}) > 1  # random weights: not a constant map


def test_predict_uses_the_metadata_palette(tmp_path, rng):
    palette = ((10, 20, 30), (200, 100, 0), (0, 255, 0))
    meta = WeightsMetadata("fcn32s", 3, ("a", "b", "c"), NARROW, CAFFE_VOC, palette=palette)
    leaves, tree = jax.tree.flatten(abstract_params(meta.model()))
    params = jax.tree.unflatten(
        tree, [(0.05 * rng.standard_normal(x.shape)).astype(np.float32) for x in leaves]
    )
    save_weights(tmp_path / "w", params, meta)
    Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(tmp_path / "x.png")
    predict_files(tmp_path / "w", tmp_path / "x.png", tmp_path / "out")
    with Image.open(tmp_path / "out" / "x.png") as im:
        assert np.array(im.getpalette()[:9]).reshape(3, 3).tolist() == [list(c) for c in palette]
        labels = np.asarray(im)
    with Image.open(tmp_path / "out" / "x_overlay.png") as im:
        np.testing.assert_array_equal(
            np.asarray(im)[:20, 24:], np.asarray(palette, np.uint8)[labels]
        )


def test_overlay_legend_lists_classes_present():
    image = np.zeros((30, 40, 3), np.uint8)
    labels = np.zeros((30, 40), np.uint8)
    labels[:, 20:] = 2
    labels[0] = 255
    names = ["background", "cat", "a-very-distinctive-name"]
    picture = overlay_picture(image, labels, voc_palette(), names)
    legend = picture[30:]
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


def test_predictor_matches_plain_forward(weights_dir, rng):
    predictor = Predictor.from_dir(weights_dir)
    image = rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)
    logits, _ = predictor(image)
    model = predictor.metadata.model()
    x = CAFFE_VOC.apply(image[None])
    expected = model.apply({"params": predictor.params}, x)[0]
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
