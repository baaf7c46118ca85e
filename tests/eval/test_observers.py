"""Observers of an evaluation: per-image scores, and what every observer is shown."""

import json
import math

import jax
import numpy as np
import pytest

from fcn_jax.checkpoint import WeightsMetadata
from fcn_jax.data.synthetic import SyntheticSegmentation
from fcn_jax.eval.evaluate import evaluate
from fcn_jax.eval.metrics import compute_metrics
from fcn_jax.eval.observers import ImageScore, PerImageMetrics
from fcn_jax.models import NetSpec
from fcn_jax.preprocessing import CAFFE_VOC
from tests.eval.test_evaluate import N_CLASS, random_variables, reference_confusion
from tests.utils import NARROW, metadata_for


@pytest.fixture(scope="module")
def setup():
    meta = metadata_for("fcn16s", N_CLASS, NARROW, CAFFE_VOC, class_names=("bg", "a", "b", "c"))
    dataset = SyntheticSegmentation("val", N_CLASS, num_images=6, min_size=20, max_size=30)
    return meta, random_variables(meta), dataset


class Recorder:
    """An observer keeping host copies of what it is shown."""

    def __init__(self):
        self.seen = []

    def on_batch(self, batch, labels, preds):
        assert all(isinstance(x, jax.Array) for x in (*labels.values(), *preds.values()))
        self.seen.append(
            (
                batch["id"].tolist(),
                batch["valid"].copy(),
                {h: np.asarray(x) for h, x in labels.items()},
                {h: np.asarray(x) for h, x in preds.items()},
            )
        )

    def result(self):
        return self.seen


def scores_of(label: np.ndarray, pred: np.ndarray, n: int) -> tuple[float, float]:
    """Pixel accuracy and mean IU of one image, from its own confusion matrix (numpy)."""
    keep = label < n
    hist = np.zeros((n, n), np.int64)
    np.add.at(hist, (label[keep], pred[keep]), 1)
    m = compute_metrics(hist, [str(c) for c in range(n)])
    return m.pixel_acc, m.mean_iou


def test_per_image_metrics_of_whole_images(setup):
    meta, variables, dataset = setup
    per_image = PerImageMetrics.for_network(meta)
    recorder = Recorder()
    result = evaluate(variables, meta, dataset, progress=False, observers=[per_image, recorder])
    scores = per_image.result()
    assert list(scores) == [""]  # keyed like result.metrics
    assert [s.id for s in scores[""]] == dataset.ids
    for score, (ids, _, labels, preds) in zip(scores[""], recorder.result(), strict=True):
        assert ids == [score.id]
        expected = scores_of(labels["out"][0], preds["out"][0], N_CLASS)
        np.testing.assert_allclose((score.pixel_acc, score.mean_iou), expected, rtol=1e-12)
    # The observers changed nothing: the split's confusion is the independent reference's.
    np.testing.assert_array_equal(
        result.metrics[""].confusion, reference_confusion(meta, variables, dataset)
    )
    json.dumps([s.to_json() for s in scores[""]], allow_nan=False)


def test_per_image_metrics_skip_padding_of_buckets(setup):
    # 6 images in batches of 4: the last batch holds 2 void examples, every batch void pixels.
    meta, variables, dataset = setup
    per_image, recorder = PerImageMetrics.for_network(meta), Recorder()
    evaluate(
        variables,
        meta,
        dataset,
        bucket=True,
        batch_size=4,
        buckets=(32,),
        progress=False,
        observers=[per_image, recorder],
    )
    scores = per_image.result()[""]
    assert [s.id for s in scores] == dataset.ids
    expected = [
        scores_of(labels["out"][i], preds["out"][i], N_CLASS)
        for _, valid, labels, preds in recorder.result()
        for i in np.flatnonzero(valid)
    ]
    assert [v.sum() for _, v, _, _ in recorder.result()] == [4, 2]
    np.testing.assert_allclose([(s.pixel_acc, s.mean_iou) for s in scores], expected, rtol=1e-12)


def test_per_image_metrics_by_hand():
    # Two heads; example 1 is padding (valid False) and is not scored; example 2 is all void.
    labels = np.array(
        [[[0, 1], [1, 255]], [[0, 0], [0, 0]], [[255, 255], [255, 255]]], np.uint8
    )  # [3, 2, 2]
    preds = np.array([[[0, 1], [0, 1]], [[1, 1], [1, 1]], [[0, 0], [0, 0]]], np.uint8)
    batch = {"id": np.array(["a", "pad", "void"]), "valid": np.array([True, False, True])}
    observer = PerImageMetrics({"sem": (2, "semantic"), "geo": (3, "geometric")})
    observer.on_batch(batch, {"sem": labels, "geo": labels}, {"sem": preds, "geo": preds})
    scores = observer.result()
    assert list(scores) == ["semantic", "geometric"]
    a, void = scores["semantic"]
    # image a: 3 labelled pixels, 2 right; IU(0) = 1/2, IU(1) = 1/2
    assert a == ImageScore("a", pytest.approx(2 / 3), pytest.approx(0.5))
    assert void.id == "void" and math.isnan(void.pixel_acc) and math.isnan(void.mean_iou)
    assert void.to_json() == {"id": "void", "pixel_acc": None, "mean_iou": None}
    assert [s.id for s in scores["geometric"]] == ["a", "void"]


def test_per_image_metrics_for_a_two_head_network():
    meta = WeightsMetadata(
        NetSpec(arch="fcn16s", heads=(("sem", 4), ("geo", 3)), width=NARROW),
        ("bg", "a", "b", "c"),
        head_class_names=(("sky", "horizontal", "vertical"),),
    )
    assert PerImageMetrics.for_network(meta).heads == {
        "sem": (4, "semantic"),
        "geo": (3, "geometric"),
    }
