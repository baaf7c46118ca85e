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


def test_predict_files_writes_maps_and_logits(weights_dir, tmp_path, rng):
    Image.fromarray(rng.integers(0, 256, (23, 31, 3), dtype=np.uint8)).save(tmp_path / "a.jpg")
    Image.fromarray(rng.integers(0, 256, (17, 9), dtype=np.uint8)).save(tmp_path / "grey.png")
    written = predict_files(
        weights_dir, [tmp_path / "a.jpg", tmp_path / "grey.png"], tmp_path / "out", True, True
    )
    assert [p.name for p in written] == ["a.png", "grey.png"]
    for stem, shape in (("a", (23, 31)), ("grey", (17, 9))):
        with Image.open(tmp_path / "out" / f"{stem}.png") as im:
            labels = np.asarray(im)
            assert im.mode == "P" and labels.shape == shape
        logits = np.load(tmp_path / "out" / f"{stem}.npy")
        assert logits.shape == (*shape, 21) and logits.dtype == np.float32
        np.testing.assert_array_equal(labels, logits.argmax(-1))
        with Image.open(tmp_path / "out" / f"{stem}_side.png") as im:
            side = np.asarray(im)
        assert side.shape == (shape[0], 2 * shape[1], 3)
        np.testing.assert_array_equal(side[:, shape[1] :], voc_palette()[labels])
    assert len({*np.unique(labels)}) > 1  # random weights: not a constant map


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
            "x.jpg",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "nowhere does not exist" in r.stderr
    assert "Traceback" not in r.stderr
