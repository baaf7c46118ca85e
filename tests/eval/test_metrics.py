"""The paper's metrics against an independent, loop-by-loop NumPy reference."""

from __future__ import annotations

import json
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fcn_jax.eval.metrics import Metrics, compute_metrics, confusion_matrix

JSON_KEYS = {
    "pixel_acc",
    "mean_acc",
    "mean_iou",
    "fw_iou",
    "per_class_iou",
    "per_class_dice",
    "per_class_precision",
    "per_class_recall",
    "confusion_matrix",
}

jit_confusion = jax.jit(confusion_matrix, static_argnames=("n_class",))


# ----------------------------------------------------------------------------------------------
# Independent reference: plain loops, written from the definitions, sharing nothing with the code.


def ref_confusion(labels: np.ndarray, preds: np.ndarray, n: int) -> np.ndarray:
    hist = np.zeros((n, n), dtype=np.int64)
    for gt, pr in zip(labels.ravel().tolist(), preds.ravel().tolist(), strict=True):
        if 0 <= gt < n:
            hist[gt, pr] += 1
    return hist


def ratio(num: float, den: float) -> float:
    return num / den if den != 0 else math.nan


def mean_without_nan(values: list[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


def ref_metrics(hist: np.ndarray) -> dict:
    n = hist.shape[0]
    total = 0
    for a in range(n):
        for b in range(n):
            total += int(hist[a, b])
    tp, gt_count, pred_count = [], [], []
    for c in range(n):
        tp.append(int(hist[c, c]))
        gt_count.append(sum(int(hist[c, b]) for b in range(n)))
        pred_count.append(sum(int(hist[a, c]) for a in range(n)))
    recall = [ratio(tp[c], gt_count[c]) for c in range(n)]
    precision = [ratio(tp[c], pred_count[c]) for c in range(n)]
    iou = [ratio(tp[c], gt_count[c] + pred_count[c] - tp[c]) for c in range(n)]
    dice = [ratio(2 * tp[c], gt_count[c] + pred_count[c]) for c in range(n)]
    fw = 0.0  # a sum over the present classes: 0.0 when none is (an all-void split)
    for c in range(n):
        if gt_count[c] > 0:
            fw += gt_count[c] / total * iou[c]
    return {
        "pixel_acc": ratio(sum(tp), total),
        "mean_acc": mean_without_nan(recall),
        "mean_iou": mean_without_nan(iou),
        "fw_iou": fw,
        "iou": iou,
        "dice": dice,
        "precision": precision,
        "recall": recall,
    }


def assert_matches_reference(m: Metrics, hist: np.ndarray) -> None:
    ref = ref_metrics(hist)
    for key in ("pixel_acc", "mean_acc", "mean_iou", "fw_iou"):
        got = getattr(m, key)
        assert isinstance(got, float), key
        np.testing.assert_allclose(got, ref[key], rtol=1e-12, atol=0, equal_nan=True, err_msg=key)
    for key in ("iou", "dice", "precision", "recall"):
        got = getattr(m, key)
        assert got.dtype == np.float64 and got.shape == (hist.shape[0],), key
        np.testing.assert_allclose(got, ref[key], rtol=1e-12, atol=0, equal_nan=True, err_msg=key)
    np.testing.assert_array_equal(m.confusion, hist)
    assert m.confusion.dtype == np.int64


def names(n: int) -> list[str]:
    return [f"class{i}" for i in range(n)]


def random_batch(
    rng: np.random.Generator, n: int, shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Labels with some classes absent, void (255) and out-of-range (n + 9) pixels mixed in."""
    present = rng.choice(n, size=max(1, n - rng.integers(0, max(1, n // 2) + 1)), replace=False)
    labels = rng.choice(present, size=shape)
    special = rng.random(shape)
    labels = np.where(special < 0.1, 255, labels)
    labels = np.where((special >= 0.1) & (special < 0.15), n + 9, labels)
    # Predictions right about half the time, otherwise a class from a random pool (which may hold
    # classes absent from the labels and miss others: some classes end up in neither).
    pool = rng.choice(n, size=max(1, n - rng.integers(0, max(1, n // 2) + 1)), replace=False)
    wrong = rng.choice(pool, size=shape)
    preds = np.where((rng.random(shape) < 0.5) & (labels < n), labels, wrong)
    return labels.astype(np.uint8), preds.astype(np.int32)


# ----------------------------------------------------------------------------------------------
# Hand-computed example.


def test_hand_computed_example():
    labels = np.array([0, 0, 1, 1])
    preds = np.array([0, 1, 1, 1])
    hist = np.asarray(confusion_matrix(labels, preds, 2))
    np.testing.assert_array_equal(hist, [[1, 1], [0, 2]])
    m = compute_metrics(hist, ["a", "b"])
    assert m.pixel_acc == pytest.approx(0.75)
    assert m.mean_acc == pytest.approx(0.75)
    np.testing.assert_allclose(m.iou, [1 / 2, 2 / 3])
    assert m.mean_iou == pytest.approx(7 / 12)
    assert m.fw_iou == pytest.approx(7 / 12)
    np.testing.assert_allclose(m.dice, [2 / 3, 4 / 5])
    np.testing.assert_allclose(m.precision, [1, 2 / 3])
    np.testing.assert_allclose(m.recall, [0.5, 1])
    assert_matches_reference(m, hist)


# ----------------------------------------------------------------------------------------------
# Confusion matrix.


@pytest.mark.parametrize("seed", range(6))
def test_confusion_matches_reference_on_random_data(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 26))
    labels, preds = random_batch(rng, n, (3, 7, 9))
    hist = confusion_matrix(labels, preds, n)
    assert hist.shape == (n, n) and hist.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(hist), ref_confusion(labels, preds, n))


def test_confusion_drops_void_and_out_of_range_labels():
    labels = np.array([[0, 255, 30], [20, 1, 21]], dtype=np.uint8)
    preds = np.array([[0, 5, 7], [20, 2, 3]])
    hist = np.asarray(confusion_matrix(labels, preds, 21))
    assert hist.sum() == 3
    assert hist[0, 0] == 1 and hist[20, 20] == 1 and hist[1, 2] == 1


@pytest.mark.parametrize("n", [2, 21])
def test_jitted_confusion_equals_eager(n):
    rng = np.random.default_rng(n)
    labels, preds = random_batch(rng, n, (2, 11, 13))
    eager = confusion_matrix(labels, preds, n)
    jitted = jit_confusion(jnp.asarray(labels), jnp.asarray(preds), n_class=n)
    assert jitted.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(jitted), np.asarray(eager))
    np.testing.assert_array_equal(np.asarray(jitted), ref_confusion(labels, preds, n))


def test_uint8_labels_do_not_overflow():
    # n * label + pred would wrap in uint8 (21 * 20 + 20 = 440 > 255).
    n = 21
    labels = np.array([20, 20, 19, 12, 255], dtype=np.uint8)
    preds = np.array([20, 3, 19, 12, 0], dtype=np.uint8)
    hist = confusion_matrix(labels, preds, n)
    assert hist.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(hist), ref_confusion(labels, preds, n))
    assert int(hist[20, 20]) == 1 and int(hist[20, 3]) == 1


def test_confusion_rejects_mismatched_shapes_and_float_input():
    with pytest.raises(ValueError):
        confusion_matrix(np.zeros((2, 3), np.uint8), np.zeros((3, 2), np.int32), 2)
    with pytest.raises(TypeError):
        confusion_matrix(np.zeros(4, np.float32), np.zeros(4, np.int32), 2)


# ----------------------------------------------------------------------------------------------
# Metrics.


@pytest.mark.parametrize("seed", range(8))
def test_metrics_match_reference_on_random_data(seed):
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(2, 26))
    labels, preds = random_batch(rng, n, (2, 8, 10))
    hist = np.asarray(confusion_matrix(labels, preds, n))
    np.testing.assert_array_equal(hist, ref_confusion(labels, preds, n))
    assert_matches_reference(compute_metrics(hist, names(n)), hist)


def test_single_class_image():
    labels = np.full((4, 5), 3, dtype=np.uint8)
    preds = np.full((4, 5), 3)
    hist = np.asarray(confusion_matrix(labels, preds, 5))
    m = compute_metrics(hist, names(5))
    assert m.pixel_acc == 1.0 and m.mean_acc == 1.0 and m.mean_iou == 1.0 and m.fw_iou == 1.0
    assert m.iou[3] == 1.0 and np.isnan(np.delete(m.iou, 3)).all()
    assert_matches_reference(m, hist)

    wrong = np.asarray(confusion_matrix(labels, np.full((4, 5), 1), 5))
    m = compute_metrics(wrong, names(5))
    assert m.pixel_acc == 0.0 and m.mean_iou == 0.0 and m.fw_iou == 0.0
    assert_matches_reference(m, wrong)


def test_class_predicted_but_absent_from_ground_truth():
    labels = np.array([0, 0, 1, 1])
    preds = np.array([0, 2, 1, 1])  # class 2 predicted, never present
    hist = np.asarray(confusion_matrix(labels, preds, 3))
    m = compute_metrics(hist, names(3))
    assert m.iou[2] == 0.0 and m.precision[2] == 0.0 and m.dice[2] == 0.0
    assert np.isnan(m.recall[2])
    # IU 0 counts in the mean; the undefined recall does not.
    assert m.mean_iou == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert m.mean_acc == pytest.approx((1 / 2 + 1) / 2)
    assert_matches_reference(m, hist)


def test_class_absent_from_both_is_nan_and_left_out_of_means():
    labels = np.array([0, 0, 1, 1])
    preds = np.array([0, 1, 1, 1])
    hist3 = np.asarray(confusion_matrix(labels, preds, 3))
    m3 = compute_metrics(hist3, names(3))
    for values in (m3.iou, m3.dice, m3.precision, m3.recall):
        assert np.isnan(values[2])
    m2 = compute_metrics(np.asarray(confusion_matrix(labels, preds, 2)), names(2))
    for key in ("pixel_acc", "mean_acc", "mean_iou", "fw_iou"):
        assert getattr(m3, key) == pytest.approx(getattr(m2, key)), key
    assert m3.mean_iou == pytest.approx(7 / 12)
    assert_matches_reference(m3, hist3)


def test_all_void_batch_gives_empty_matrix_and_nan_without_warnings(recwarn):
    labels = np.full((2, 3, 4), 255, dtype=np.uint8)
    preds = np.zeros((2, 3, 4), dtype=np.int32)
    hist = np.asarray(confusion_matrix(labels, preds, 4))
    assert hist.sum() == 0
    with np.errstate(all="raise"):
        m = compute_metrics(hist, names(4))
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
    for key in ("pixel_acc", "mean_acc", "mean_iou"):
        assert math.isnan(getattr(m, key)), key
    assert m.fw_iou == 0.0  # as the paper's score.py and torchfcn: a sum over no class
    for values in (m.iou, m.dice, m.precision, m.recall):
        assert np.isnan(values).all()
    assert_matches_reference(m, hist)
    out = m.to_json()
    assert out["mean_iou"] is None and all(v is None for v in out["per_class_iou"].values())
    assert out["fw_iou"] == 0.0
    json.dumps(out, allow_nan=False)


def release_scores(hist: np.ndarray) -> tuple[float, float, float, float]:
    """The four scores as the release's score.py and torchfcn's label_accuracy_score compute
    them (float matrix, plain numpy division, nanmean, fwavacc over freq > 0)."""
    hist = hist.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nanmean of an all-NaN slice
        acc = np.diag(hist).sum() / hist.sum()
        acc_cls = np.nanmean(np.diag(hist) / hist.sum(1))
        iu = np.diag(hist) / (hist.sum(1) + hist.sum(0) - np.diag(hist))
        freq = hist.sum(1) / hist.sum()
        return (
            float(acc),
            float(acc_cls),
            float(np.nanmean(iu)),
            float((freq[freq > 0] * iu[freq > 0]).sum()),
        )


@pytest.mark.parametrize("all_void", [True, False])
def test_scores_follow_the_release_including_an_all_void_split(all_void):
    rng = np.random.default_rng(3)
    labels, preds = random_batch(rng, 5, (2, 6, 8))
    if all_void:
        labels = np.full_like(labels, 255)
    hist = np.asarray(confusion_matrix(labels, preds, 5)).astype(np.int64)
    m = compute_metrics(hist, names(5))
    got = (m.pixel_acc, m.mean_acc, m.mean_iou, m.fw_iou)
    np.testing.assert_allclose(got, release_scores(hist), rtol=1e-12, equal_nan=True)
    if all_void:  # NaN but f.w. IU, which is 0.0 (what used to be NaN here)
        assert math.isnan(m.pixel_acc) and math.isnan(m.mean_iou) and m.fw_iou == 0.0


def test_accumulation_over_batches_equals_one_matrix_over_all_data():
    rng = np.random.default_rng(7)
    n = 21
    batches = [random_batch(rng, n, (2, 6, 8)) for _ in range(4)]
    total = np.zeros((n, n), dtype=np.int64)
    for labels, preds in batches:
        total += np.asarray(jit_confusion(labels, preds, n_class=n))
    all_labels = np.concatenate([b[0] for b in batches])
    all_preds = np.concatenate([b[1] for b in batches])
    np.testing.assert_array_equal(total, ref_confusion(all_labels, all_preds, n))
    np.testing.assert_array_equal(total, np.asarray(confusion_matrix(all_labels, all_preds, n)))
    assert_matches_reference(compute_metrics(total, names(n)), total)


def test_whole_set_mean_iou_differs_from_mean_of_per_image_mean_iou():
    # Image 1: 8 pixels, all class 0, all right -> per-image mean IU 1.
    # Image 2: 2 pixels of class 1, one predicted 0 -> IU [0, 1/2], per-image mean IU 1/4.
    img1 = (np.zeros(8, np.uint8), np.zeros(8, np.int32))
    img2 = (np.array([1, 1], np.uint8), np.array([0, 1], np.int32))
    per_image = [
        compute_metrics(np.asarray(confusion_matrix(gt, pr, 2)), names(2)).mean_iou
        for gt, pr in (img1, img2)
    ]
    assert per_image == pytest.approx([1.0, 0.25])
    hist = sum(np.asarray(confusion_matrix(gt, pr, 2), dtype=np.int64) for gt, pr in (img1, img2))
    whole = compute_metrics(hist, names(2))
    # Whole set: hist [[8, 0], [1, 1]] -> IU [8/9, 1/2] -> mean IU 25/36.
    np.testing.assert_array_equal(hist, [[8, 0], [1, 1]])
    assert whole.mean_iou == pytest.approx(25 / 36)
    assert whole.mean_iou != pytest.approx(np.mean(per_image))  # 0.694 vs 0.625


def test_compute_metrics_accepts_any_integer_dtype_and_rejects_bad_input():
    hist = np.array([[1, 1], [0, 2]])
    for dtype in (np.int32, np.uint8, np.int64, np.uint32):
        m = compute_metrics(hist.astype(dtype), ["a", "b"])
        assert m.confusion.dtype == np.int64 and m.mean_iou == pytest.approx(7 / 12)
    with pytest.raises(ValueError):
        compute_metrics(hist, ["a"])
    with pytest.raises(ValueError):
        compute_metrics(np.zeros((2, 3), np.int64), ["a", "b"])
    with pytest.raises(TypeError):
        compute_metrics(hist.astype(np.float64), ["a", "b"])


def test_metrics_arrays_are_read_only_and_input_untouched():
    hist = np.array([[1, 1], [0, 2]], dtype=np.int64)
    m = compute_metrics(hist, ["a", "b"])
    with pytest.raises(ValueError):
        m.iou[0] = 0.0
    hist[0, 0] = 5  # the caller's accumulator stays theirs
    assert m.confusion[0, 0] == 1


# ----------------------------------------------------------------------------------------------
# Output.


def test_to_json_keys_nan_to_none_and_strict_json():
    labels = np.array([0, 0, 1, 1])
    preds = np.array([0, 2, 1, 1])
    class_names = ["background", "aeroplane", "bicycle", "bird"]  # bird absent from both
    m = compute_metrics(np.asarray(confusion_matrix(labels, preds, 4)), class_names)
    out = m.to_json()
    assert set(out) == JSON_KEYS
    for key in ("pixel_acc", "mean_acc", "mean_iou", "fw_iou"):
        assert isinstance(out[key], float)
    for key in ("per_class_iou", "per_class_dice", "per_class_precision", "per_class_recall"):
        assert list(out[key]) == class_names
    assert out["per_class_iou"]["bird"] is None
    assert out["per_class_recall"]["bicycle"] is None
    assert out["per_class_iou"]["bicycle"] == 0.0
    assert out["per_class_precision"]["bicycle"] == 0.0
    assert out["per_class_iou"]["aeroplane"] == 1.0
    assert out["confusion_matrix"] == [[1, 0, 1, 0], [0, 2, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert all(type(v) is int for row in out["confusion_matrix"] for v in row)
    text = json.dumps(out, allow_nan=False)
    assert json.loads(text) == out


def test_to_json_on_random_data_is_strict_json():
    rng = np.random.default_rng(3)
    labels, preds = random_batch(rng, 21, (2, 5, 6))
    m = compute_metrics(np.asarray(confusion_matrix(labels, preds, 21)), names(21))
    out = m.to_json()
    json.dumps(out, allow_nan=False)
    for c, name in enumerate(names(21)):
        expected = None if np.isnan(m.iou[c]) else pytest.approx(m.iou[c])
        assert out["per_class_iou"][name] == expected


def test_format_table_lists_summary_and_every_class():
    labels = np.array([0, 0, 1, 1])
    preds = np.array([0, 1, 1, 1])
    class_names = ["background", "aeroplane", "pottedplant"]
    table = compute_metrics(np.asarray(confusion_matrix(labels, preds, 3)), class_names)
    text = table.format_table()
    for name in class_names:
        assert name in text
    for label in ("pixel acc", "mean acc", "mean IU", "f.w. IU"):
        assert label in text
    assert "75.00" in text  # pixel acc, mean acc
    assert "58.33" in text  # mean IU, f.w. IU
    row = next(line for line in text.splitlines() if line.startswith("pottedplant"))
    assert row.split()[1:] == ["-", "-", "-", "-"]
    row = next(line for line in text.splitlines() if line.startswith("aeroplane"))
    assert row.split()[1:] == ["66.67", "80.00", "66.67", "100.00"]


def test_present_only_averages_over_ground_truth_classes():
    # Class 2 never occurs in the ground truth but is predicted: IU 0, left out when present_only.
    hist = np.array([[5, 0, 1], [0, 4, 0], [0, 0, 0]])
    names = ("a", "b", "c")
    full = compute_metrics(hist, names)
    present = compute_metrics(hist, names, present_only=True)
    assert full.iou[2] == 0.0
    assert np.isclose(full.mean_iou, (5 / 6 + 1 + 0) / 3)
    assert np.isclose(present.mean_iou, (5 / 6 + 1) / 2)
    assert present.pixel_acc == full.pixel_acc and present.fw_iou == full.fw_iou
