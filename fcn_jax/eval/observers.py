"""Observers of an evaluation: code that sees every scored batch beside the confusion matrices.

:func:`~fcn_jax.eval.evaluate.evaluate` accumulates the split's confusion matrices and nothing
else; anything more a caller wants from the same forward passes (the PyTorch comparison of
:mod:`fcn_jax.eval.torch_observer`, per-image scores) is an :class:`Observer` handed to it. The
loop calls :meth:`Observer.on_batch` once per batch, in split order; the caller reads
:meth:`Observer.result` after ``evaluate`` returns.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any, Protocol

import jax
import numpy as np

from fcn_jax.checkpoint import WeightsMetadata
from fcn_jax.eval.heads import head_class_counts, head_targets
from fcn_jax.eval.metrics import compute_metrics, confusion_matrix


class Observer(Protocol):
    """What :func:`~fcn_jax.eval.evaluate.evaluate` calls on every batch it scores."""

    def on_batch(
        self,
        batch: Mapping[str, np.ndarray],
        labels: Mapping[str, jax.Array],
        preds: Mapping[str, jax.Array],
    ) -> None:
        """See one scored batch.

        Args:
            batch: the pipeline's host batch (:func:`~fcn_jax.data.transforms.collate`): the
                inputs, label keys, ``id`` [B], ``height`` / ``width`` [B] and ``valid`` [B]
                (False for the void examples that pad the last batch).
            labels: head -> [B, H, W] uint8 labels, on the device, as the step scored them.
            preds: head -> [B, H, W] uint8 predicted classes, on the device.
        """

    def result(self) -> Any:
        """What the observer found, once the loop is over."""


@dataclasses.dataclass(frozen=True)
class ImageScore:
    """The paper's scores of one image (from its own confusion matrix).

    Attributes:
        id: the sample's id.
        pixel_acc: fraction of its labelled pixels predicted right (NaN if all are void).
        mean_iou: mean IU over the classes in its ground truth or prediction (NaN if all void).
    """

    id: str
    pixel_acc: float
    mean_iou: float

    def to_json(self) -> dict[str, Any]:
        """``id``, ``pixel_acc``, ``mean_iou``; NaN as None (strict JSON)."""
        return {
            "id": self.id,
            "pixel_acc": None if np.isnan(self.pixel_acc) else self.pixel_acc,
            "mean_iou": None if np.isnan(self.mean_iou) else self.mean_iou,
        }


@functools.partial(jax.jit, static_argnames="n_class")
def per_image_confusion(labels: jax.Array, preds: jax.Array, n_class: int) -> jax.Array:
    """One confusion matrix per example, on the device.

    Args:
        labels: [B, H, W] integer labels (outside ``[0, n_class)`` not counted: void, padding).
        preds: [B, H, W] predicted classes.
        n_class: class count.

    Returns:
        [B, n_class, n_class] int32.
    """
    return jax.vmap(functools.partial(confusion_matrix, n_class=n_class))(labels, preds)


class PerImageMetrics:
    """Pixel accuracy and mean IU of every scored image, per head.

    Each image's confusion matrix is made on the device from the predictions already there;
    only those [B, n, n] matrices come back to the host, not the predictions. Padding (void
    pixels, void examples of the last batch) is not scored.

    Attributes:
        heads: head -> (class count, metric-set name), as :func:`evaluate` keys its metrics.
    """

    def __init__(self, heads: Mapping[str, tuple[int, str]]) -> None:
        """Score the heads named.

        Args:
            heads: head (``""`` for a single-head network) -> (class count, metric-set name);
                e.g. ``{"": (21, "")}`` or ``{"sem": (33, "semantic"), "geo": (3, "geometric")}``.
        """
        self.heads = dict(heads)
        self._scores: dict[str, list[ImageScore]] = {name: [] for _, name in self.heads.values()}

    @classmethod
    def for_network(cls, metadata: WeightsMetadata) -> PerImageMetrics:
        """Every head of the network ``metadata`` describes, named as its metrics are."""
        counts = head_class_counts(metadata.spec)
        return cls({h: (counts[h], name) for h, (_, name) in head_targets(metadata.spec).items()})

    def on_batch(
        self,
        batch: Mapping[str, np.ndarray],
        labels: Mapping[str, jax.Array],
        preds: Mapping[str, jax.Array],
    ) -> None:
        """Score the batch's real examples (see :meth:`Observer.on_batch`)."""
        rows = np.flatnonzero(batch["valid"])
        for head, (n_class, name) in self.heads.items():
            hists = np.asarray(per_image_confusion(labels[head], preds[head], n_class))
            names = [str(c) for c in range(n_class)]
            for i in rows:
                m = compute_metrics(hists[i], names)
                self._scores[name].append(ImageScore(str(batch["id"][i]), m.pixel_acc, m.mean_iou))

    def result(self) -> dict[str, list[ImageScore]]:
        """Metric-set name -> one :class:`ImageScore` per image, in the order scored."""
        return {name: list(scores) for name, scores in self._scores.items()}
