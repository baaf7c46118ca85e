"""Score weights on a dataset split the paper's way, optionally beside the PyTorch reference.

The confusion matrix is accumulated on the device inside the jitted step (no host round-trip
per image); it is folded into an int64 host total every ``FOLD_EVERY`` batches so int32 counts
cannot overflow on huge splits. Whole-image evaluation (batch 1, the paper's) compiles once per
distinct image shape; bucketed evaluation pads batches to a few sizes with void labels and
spreads them over all local devices, the last partial batch padded with void examples so every
real pixel counts exactly once. A multi-head network (SIFT Flow) is scored once per head, each
against its own label key.

Anything else a caller wants from the same forward passes is an observer
(:mod:`fcn_jax.eval.observers`): the PyTorch comparison (:mod:`fcn_jax.eval.torch_observer`,
installed by ``against_torch=True``) and per-image scores are two.

How to evaluate comes from :class:`~fcn_jax.eval.options.EvalOptions`; the scores are an
:class:`~fcn_jax.eval.result.EvalResult`. Both, and :func:`head_targets`, are importable from
here too.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, Sharding
from jax.sharding import PartitionSpec as P
from tqdm import tqdm

from fcn_jax.checkpoint import WeightsMetadata
from fcn_jax.data.base import SegmentationDataset
from fcn_jax.data.pipeline import PipelineOptions, make_pipeline
from fcn_jax.data.resize import ResizedDataset
from fcn_jax.data.transforms import default_buckets
from fcn_jax.errors import FCNError
from fcn_jax.eval.heads import HEAD_LABELS, head_class_counts, head_targets
from fcn_jax.eval.metrics import Metrics, compute_metrics, confusion_matrix
from fcn_jax.eval.observers import Observer
from fcn_jax.eval.options import BF16_MIOU_TOLERANCE, COMPUTE_DTYPES, EvalOptions
from fcn_jax.eval.result import TORCH_MIOU_TOLERANCE, EvalResult
from fcn_jax.eval.torch_observer import TorchComparison
from fcn_jax.types import Array, PyTree

__all__ = [
    "BF16_MIOU_TOLERANCE",
    "COMPUTE_DTYPES",
    "FOLD_EVERY",
    "HEAD_LABELS",
    "TORCH_MIOU_TOLERANCE",
    "EvalOptions",
    "EvalResult",
    "evaluate",
    "head_targets",
]

FOLD_EVERY = 256  # batches between host folds of the int32 device confusion matrices


@functools.cache
def _eval_step(metadata: WeightsMetadata, dtype: str = "float32") -> tuple[Any, list[int]]:
    """The jitted step ``(hists, variables, inputs, labels) -> (hists, preds)`` and its traces.

    ``inputs`` maps record keys to uint8 images, ``labels`` head -> uint8 labels, ``hists``
    head -> int32 confusion matrix; preprocessing runs on the device. Cached per network and
    compute dtype, so the periodic validations of a training run compile each shape once.
    """
    spec = metadata.spec.replace(dtype=dtype)
    classes = head_class_counts(metadata.spec)
    traces = [0]

    @functools.partial(jax.jit, donate_argnums=0)
    def step(
        hists: dict[str, Array],
        variables: PyTree,
        inputs: dict[str, Array],
        labels: dict[str, Array],
    ) -> tuple[dict[str, Array], dict[str, Array]]:
        traces[0] += 1  # runs at trace time only: one per compilation
        logits = spec.logits(variables, inputs)
        preds = {h: jnp.argmax(x, axis=-1).astype(jnp.uint8) for h, x in logits.items()}
        hists = {h: hists[h] + confusion_matrix(labels[h], preds[h], classes[h]) for h in hists}
        return hists, preds

    return step, traces


def check_dataset(metadata: WeightsMetadata, dataset: SegmentationDataset) -> None:
    """Fail unless ``dataset``'s records hold the network's inputs and each head's classes.

    Raises:
        FCNError: an input key the records lack, or a head whose class count differs from its
            label key's in the dataset; each says what to change.
    """
    missing = [k for k in metadata.inputs if k not in dataset[0]]
    if missing:
        raise FCNError(
            f"the weights read {metadata.inputs} but {dataset!r} records lack {missing}: set the "
            "dataset's modalities (data.modalities) to the network's inputs"
        )
    several = len(metadata.spec.heads) > 1
    for head, (key, _) in head_targets(metadata.spec).items():
        wanted = len(metadata.head_classes[head])
        have = len(dataset.label_classes.get(key, ()))
        if have != wanted:
            raise FCNError(
                f"the weights predict {wanted} classes{f' ({head})' if several else ''} but "
                f"{dataset!r} has {have} for {key!r}: evaluate them on a dataset with the "
                "same classes"
            )


@dataclasses.dataclass(frozen=True)
class _Feed:
    """Where batches and variables go, and how the pipeline batches the split.

    Attributes:
        data: sharding of the batch arrays (split over the batch axis when bucketed).
        replicated: sharding of the variables and the confusion matrices.
        pipeline: batching of the split.
    """

    data: Sharding
    replicated: Sharding
    pipeline: PipelineOptions


def _feed(options: EvalOptions, devices: list[jax.Device], metadata: WeightsMetadata) -> _Feed:
    """Whole images one by one on the first device, or padded buckets over all ``devices``."""
    if not options.bucket:
        single = jax.sharding.SingleDeviceSharding(devices[0])
        return _Feed(single, single, PipelineOptions(worker_count=options.worker_count))
    # Auto axes: XLA propagates the batch sharding through the network (the confusion matrix
    # sum over the batch becomes a cross-device reduction), no mesh context needed.
    mesh = jax.make_mesh((len(devices),), ("data",), (jax.sharding.AxisType.Auto,), devices=devices)
    pipeline = PipelineOptions(
        batch_size=options.batch_size,
        buckets=options.buckets,
        pad_last_batch=True,
        worker_count=options.worker_count,
        fill=metadata.spec.mean_pixels(),
    )
    return _Feed(NamedSharding(mesh, P("data")), NamedSharding(mesh, P()), pipeline)


class _Confusions:
    """Per-head confusion matrices: int32 on the device, folded now and then into int64 totals.

    Attributes:
        device: head -> [n, n] int32 counts since the last fold (the step's ``hists``).
        totals: head -> [n, n] int64 counts folded so far, on the host.
    """

    def __init__(self, classes: dict[str, int], sharding: Sharding) -> None:
        self._classes, self._sharding = classes, sharding
        self.totals = {h: np.zeros((n, n), np.int64) for h, n in classes.items()}
        self.device = self._zeros()

    def _zeros(self) -> dict[str, Array]:
        return {
            h: jax.device_put(jnp.zeros((n, n), jnp.int32), self._sharding)
            for h, n in self._classes.items()
        }

    def fold(self) -> dict[str, np.ndarray]:
        """Add the device counts to the totals and restart them; returns the totals."""
        for h in self.totals:
            self.totals[h] += np.asarray(self.device[h])
        self.device = self._zeros()
        return self.totals


def _run(
    step: Any,
    variables: PyTree,
    metadata: WeightsMetadata,
    dataset: SegmentationDataset,
    feed: _Feed,
    observers: Sequence[Observer],
    progress: bool,
) -> tuple[dict[str, np.ndarray], int, int]:
    """Score every batch of ``dataset``, showing each to ``observers``.

    Returns:
        (head -> [n, n] int64 confusion matrix of the split, images scored, batches run).
    """
    targets = head_targets(metadata.spec)
    variables = jax.device_put(variables, feed.replicated)
    confusions = _Confusions(head_class_counts(metadata.spec), feed.replicated)
    n_images = batches = 0
    bar = tqdm(total=len(dataset), unit="img", desc="eval", disable=not progress)
    # try/finally: a bad record raises mid-loop; closing the bar ends its line, so the CLI's
    # "error: ..." is not glued onto the progress bar.
    try:
        for batch in make_pipeline(dataset, feed.pipeline):
            inputs = {k: jax.device_put(batch[k], feed.data) for k in metadata.inputs}
            labels = jax.device_put({h: batch[key] for h, (key, _) in targets.items()}, feed.data)
            confusions.device, preds = step(confusions.device, variables, inputs, labels)
            for observer in observers:
                observer.on_batch(batch, labels, preds)
            batches += 1
            if batches % FOLD_EVERY == 0:
                confusions.fold()
            real = int(batch["valid"].sum())
            n_images += real
            bar.update(real)
    finally:
        bar.close()
    return confusions.fold(), n_images, batches


def _score(
    confusions: dict[str, np.ndarray], metadata: WeightsMetadata, dataset: SegmentationDataset
) -> dict[str, Metrics]:
    """Metric-set name -> the paper's metrics of each head's confusion matrix."""
    present_only = getattr(dataset, "score_present_classes_only", False)
    return {
        name: compute_metrics(confusions[h], dataset.label_classes[key], present_only)
        for h, (key, name) in head_targets(metadata.spec).items()
    }


def resized_buckets(buckets: Sequence[int], shorter: int) -> tuple[int, ...]:
    """Buckets that hold images resized to shorter side ``shorter`` up to a 2:1 aspect ratio.

    ``buckets`` (sized for the data as stored, e.g. up to VOC's 500) gain the multiples of
    their step (the smallest bucket, 32 by default) up to ``2 * shorter``; a longer image gets
    :func:`~fcn_jax.data.transforms.bucket_for`'s error, which says to add a bucket.
    """
    step = min(buckets) if buckets else 32
    return tuple(sorted(set(buckets) | set(default_buckets(2 * shorter, step))))


def evaluate(
    variables: PyTree,
    metadata: WeightsMetadata,
    dataset: SegmentationDataset,
    *,
    bucket: bool = False,
    batch_size: int = 1,
    buckets: tuple[int, ...] | None = None,
    against_torch: bool = False,
    worker_count: int = 0,
    progress: bool = True,
    dtype: str = "float32",
    num_devices: int | None = None,
    observers: Sequence[Observer] = (),
) -> EvalResult:
    """Score the network's ``variables`` on every image of ``dataset``.

    The keyword arguments a config decides are :class:`EvalOptions`' fields (see there):
    ``evaluate(variables, metadata, dataset, **dataclasses.asdict(options))``.

    Weights with an evaluation resize (``metadata.eval_resize``: torchvision's FCN-ResNets,
    520) are scored on images and labels resized to that shorter side (bilinear, nearest), as
    torchvision's reference evaluates them; ``against_torch``'s reference sees the same ones.

    Args:
        variables: ``{"params": ..., <BatchNorm statistics>}`` (device or numpy arrays).
        metadata: their metadata (model, inputs, classes, preprocessing).
        dataset: the split; its records must hold the network's inputs and a label key per head.
        bucket: pad batches to ``buckets`` and spread them over the local devices, instead of
            the exact whole-image, batch-1 evaluation.
        batch_size: global batch size in bucket mode (a multiple of the device count).
        buckets: bucket sizes (bucket mode).
        worker_count: data-loading worker processes.
        num_devices: the first ``num_devices`` local devices take the buckets; None: all.
        against_torch: also run the project's PyTorch FCN (float32) with the same weights on the
            same images (:class:`TorchComparison`) and report its metrics and the pixel
            agreement; matmuls then run at full float32 precision on both sides.
        progress: show a tqdm progress bar.
        dtype: compute dtype of the JAX network (``bfloat16``: bf16 activations and matmuls,
            float32 params and argmax).
        observers: more :class:`~fcn_jax.eval.observers.Observer` s shown every batch (e.g.
            :class:`~fcn_jax.eval.observers.PerImageMetrics`); read their results afterwards.

    Returns:
        The :class:`EvalResult`.

    Raises:
        FCNError: options that cannot work here (:meth:`EvalOptions.check`), weights that read
            inputs or predict classes the dataset lacks (:func:`check_dataset`), or a bad record
            (the progress bar is closed first, so the message starts on its own line).
    """
    options = EvalOptions(
        bucket, batch_size, tuple(buckets or ()), worker_count, dtype, num_devices
    )
    devices = options.check()
    check_dataset(metadata, dataset)
    if metadata.eval_resize is not None:  # the weights' own evaluation resize (torchvision's)
        dataset = ResizedDataset(dataset, metadata.eval_resize)
        if options.bucket:  # buckets sized for the data as stored may be too small now
            options = dataclasses.replace(
                options, buckets=resized_buckets(options.buckets, metadata.eval_resize)
            )
    feed = _feed(options, devices, metadata)
    comparison = TorchComparison(variables, metadata) if against_torch else None
    watchers = [*observers, *([comparison] if comparison else [])]
    step, traces = _eval_step(metadata, dtype)
    traces_before = traces[0]
    start = time.perf_counter()
    # Beside torch, like for like: full float32 matmuls (no TF32 / bf16 passes).
    with jax.default_matmul_precision("highest" if against_torch else None):
        confusions, n_images, batches = _run(
            step, variables, metadata, dataset, feed, watchers, progress
        )
    seconds = time.perf_counter() - start
    if n_images != len(dataset):  # the pipeline must deliver every image exactly once
        raise AssertionError(f"scored {n_images} of {len(dataset)} images")
    metrics = _score(confusions, metadata, dataset)
    result = EvalResult(metrics, n_images, seconds, traces[0] - traces_before, batches)
    if comparison is None:
        return result
    torch = comparison.result()
    return dataclasses.replace(
        result,
        torch=_score(torch.confusions, metadata, dataset),
        pixel_agreement=torch.pixel_agreement,
    )
