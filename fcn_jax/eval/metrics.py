"""The FCN paper's segmentation metrics (its ``score.py``), plus per-class Dice/precision/recall.

Everything derives from **one** confusion matrix accumulated over the whole evaluation set, not
from per-image scores averaged: ``hist[a, b]`` counts the pixels with ground truth ``a`` predicted
as ``b``. Pixels whose ground truth is outside ``[0, n)`` (255 = void) are not counted.

With ``d = diag(hist)``, row sums ``r`` (ground truth) and column sums ``c`` (prediction):

- pixel accuracy ``sum(d) / sum(hist)``;
- mean accuracy ``nanmean(d / r)``;
- IU ``d / (r + c - d)``, mean IU ``nanmean(IU)``: a class in neither ground truth nor prediction
  is 0/0 = NaN and left out of the mean; a class predicted but never present scores IU 0;
- frequency-weighted IU ``sum(freq * IU)`` over the classes with ``freq = r / sum(hist) > 0``;
- per class also precision ``d / c``, recall ``d / r`` and Dice ``2 d / (r + c)``.

A ratio with a zero denominator is NaN and every mean leaves NaN out.

A split whose every pixel is void gives an all-zero matrix. Its scores are those of the
release's ``score.py`` and torchfcn's ``label_accuracy_score`` on such a matrix: pixel accuracy,
mean accuracy, mean IU and every per-class value are NaN (0/0; NaN in the JSON is ``null``),
while f.w. IU is 0.0, a sum over no present class.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def confusion_matrix(labels: jax.Array, preds: jax.Array, n_class: int) -> jax.Array:
    """The confusion matrix of one batch, as the paper's ``fast_hist``.

    Jit-compatible with ``n_class`` static, e.g.
    ``jax.jit(confusion_matrix, static_argnames=("n_class",))``. Built with one masked
    ``bincount`` over ``n_class * label + pred`` (a scatter-add into ``n_class**2`` bins): no
    one-hot array is ever made.

    Args:
        labels: [...] ground-truth class indices, any integer dtype (uint8 fine), any shape
            (e.g. [B, H, W]); values outside ``[0, n_class)`` (255 = void) are not counted.
        preds: [...] predicted class indices, same shape as ``labels``, in ``[0, n_class)``
            (a prediction outside that range, which argmax never gives, is not counted either).
        n_class: the number of classes ``n``.

    Returns:
        [n_class, n_class] int32: ``[a, b]`` counts the pixels with ground truth ``a`` predicted
        ``b``. Sum the batches' matrices on the host in int64 and pass the total to
        :func:`compute_metrics`.
    """
    labels = jnp.asarray(labels)
    preds = jnp.asarray(preds)
    if labels.shape != preds.shape:
        raise ValueError(f"labels {labels.shape} and preds {preds.shape} differ in shape")
    if not jnp.issubdtype(labels.dtype, jnp.integer) or not jnp.issubdtype(
        preds.dtype, jnp.integer
    ):
        raise TypeError(
            f"labels and preds must be integer arrays, got {labels.dtype}, {preds.dtype}"
        )
    # int32 before any arithmetic: uint8 labels would wrap in n_class * label + pred.
    gt = labels.reshape(-1).astype(jnp.int32)
    pr = preds.reshape(-1).astype(jnp.int32)
    valid = (gt >= 0) & (gt < n_class) & (pr >= 0) & (pr < n_class)
    index = jnp.where(valid, n_class * gt + pr, 0)
    counts = jnp.bincount(index, weights=valid.astype(jnp.int32), length=n_class * n_class)
    return counts.astype(jnp.int32).reshape(n_class, n_class)


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` in float64, NaN where ``den == 0``, without warnings."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den != 0, num / np.where(den != 0, den, 1.0), np.nan)


def _nanmean(x: np.ndarray) -> float:
    """Mean of the non-NaN entries; NaN (and no 'empty slice' warning) when there are none."""
    x = np.asarray(x, dtype=np.float64)
    keep = ~np.isnan(x)
    return float(x[keep].mean()) if keep.any() else float("nan")


def _json_number(x: float) -> float | None:
    return None if np.isnan(x) else float(x)


def _percent(x: float) -> str:
    return "-" if np.isnan(x) else f"{100.0 * x:.2f}"


@dataclasses.dataclass(frozen=True, eq=False)
class Metrics:
    """The paper's scores of one confusion matrix, with per-class detail.

    Frozen, with read-only arrays; compared by identity (array fields have no single truth value).

    Attributes:
        pixel_acc: pixel accuracy, a fraction in [0, 1] (NaN for an empty matrix).
        mean_acc: mean over classes of per-class accuracy (recall), NaN classes left out.
        mean_iou: mean IU over the classes where it is defined.
        fw_iou: frequency-weighted IU (0.0 for an empty matrix, as the paper's ``score.py``).
        class_names: (n,) the class names, in index order.
        iou: [n] float64 per-class IU, NaN where undefined.
        dice: [n] float64 per-class Dice (F1), NaN where undefined.
        precision: [n] float64 per-class precision, NaN for a class never predicted.
        recall: [n] float64 per-class recall (= accuracy), NaN for a class absent from the
            ground truth.
        confusion: [n, n] int64 confusion matrix (rows ground truth, columns prediction).
    """

    pixel_acc: float
    mean_acc: float
    mean_iou: float
    fw_iou: float
    class_names: tuple[str, ...]
    iou: np.ndarray
    dice: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    confusion: np.ndarray

    def _per_class(self, values: np.ndarray) -> dict[str, float | None]:
        return {name: _json_number(v) for name, v in zip(self.class_names, values, strict=True)}

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict, NaN as ``None`` (``json.dumps(..., allow_nan=False)`` works).

        Returns:
            ``pixel_acc``, ``mean_acc``, ``mean_iou``, ``fw_iou`` (float or None);
            ``per_class_iou``, ``per_class_dice``, ``per_class_precision``,
            ``per_class_recall`` (class name -> float or None, in class order);
            ``confusion_matrix`` ([n][n] ints).
        """
        return {
            "pixel_acc": _json_number(self.pixel_acc),
            "mean_acc": _json_number(self.mean_acc),
            "mean_iou": _json_number(self.mean_iou),
            "fw_iou": _json_number(self.fw_iou),
            "per_class_iou": self._per_class(self.iou),
            "per_class_dice": self._per_class(self.dice),
            "per_class_precision": self._per_class(self.precision),
            "per_class_recall": self._per_class(self.recall),
            "confusion_matrix": [[int(v) for v in row] for row in self.confusion],
        }

    def format_table(self) -> str:
        """A plain-text report: the four summary scores, then one row per class, in %.

        Undefined (NaN) values show as ``-``.
        """
        lines = [
            f"pixel acc  {_percent(self.pixel_acc):>7}",
            f"mean acc   {_percent(self.mean_acc):>7}",
            f"mean IU    {_percent(self.mean_iou):>7}",
            f"f.w. IU    {_percent(self.fw_iou):>7}",
            "",
        ]
        width = max([len("class"), *(len(name) for name in self.class_names)])
        header = f"{'class':<{width}}  {'IU':>7}  {'Dice':>7}  {'prec.':>7}  {'recall':>7}"
        lines += [header, "-" * len(header)]
        for i, name in enumerate(self.class_names):
            values = (self.iou[i], self.dice[i], self.precision[i], self.recall[i])
            lines.append(f"{name:<{width}}  " + "  ".join(f"{_percent(v):>7}" for v in values))
        return "\n".join(lines)


def compute_metrics(
    hist: np.ndarray, class_names: Sequence[str], present_only: bool = False
) -> Metrics:
    """The paper's metrics from a confusion matrix accumulated over the whole evaluation set.

    Args:
        hist: [n, n] confusion matrix (any integer dtype; rows ground truth, columns
            prediction), e.g. the sum of :func:`confusion_matrix` over all batches.
        class_names: (n,) class names, in index order.
        present_only: average mean acc and mean IU over the classes present in the ground
            truth only (SIFT Flow, as the paper scores it: a class absent from the test set but
            predicted would otherwise count with IU 0).

    Returns:
        The :class:`Metrics`; an all-zero matrix (an all-void split) gives NaN everywhere but
        f.w. IU, which is 0.0 as in the paper's ``score.py``.
    """
    hist = np.asarray(hist)
    if hist.ndim != 2 or hist.shape[0] != hist.shape[1]:
        raise ValueError(f"hist must be a square [n, n] matrix, got shape {hist.shape}")
    if not np.issubdtype(hist.dtype, np.integer):
        raise TypeError(f"hist must hold integer counts, got {hist.dtype}")
    class_names = tuple(str(name) for name in class_names)
    if len(class_names) != hist.shape[0]:
        raise ValueError(f"{len(class_names)} class names for a {hist.shape[0]}-class matrix")
    hist = hist.astype(np.int64)  # a copy: the caller's accumulator stays writable
    diag = np.diag(hist).astype(np.float64)
    rows = hist.sum(axis=1).astype(np.float64)  # ground-truth pixels per class
    cols = hist.sum(axis=0).astype(np.float64)  # predicted pixels per class
    total = float(hist.sum())

    recall = _divide(diag, rows)
    precision = _divide(diag, cols)
    iou = _divide(diag, rows + cols - diag)
    dice = _divide(2.0 * diag, rows + cols)
    freq = _divide(rows, np.full_like(rows, total))
    present = freq > 0  # NaN > 0 is False: an empty matrix has no present class
    # An empty matrix sums over no class: 0.0, as the references' (freq[freq > 0] * iu[...]).sum().
    fw_iou = float((freq[present] * iou[present]).sum())
    for array in (hist, iou, dice, precision, recall):
        array.setflags(write=False)
    return Metrics(
        pixel_acc=float(_divide(diag.sum(), total)),
        mean_acc=_nanmean(recall),
        mean_iou=_nanmean(iou[present] if present_only else iou),
        fw_iou=fw_iou,
        class_names=class_names,
        iou=iou,
        dice=dice,
        precision=precision,
        recall=recall,
        confusion=hist,
    )
