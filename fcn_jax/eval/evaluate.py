"""Score weights on a dataset split the paper's way, optionally beside the PyTorch reference.

The confusion matrix is accumulated on the device inside the jitted step (no host round-trip
per image); it is folded into an int64 host total every ``FOLD_EVERY`` batches so int32 counts
cannot overflow on huge splits. Whole-image evaluation (batch 1, the paper's) compiles once per
distinct image shape; bucketed evaluation pads batches to a few sizes with void labels and
spreads them over all local devices, the last partial batch padded with void examples so every
real pixel counts exactly once.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm import tqdm

from fcn_jax.checkpoint import WeightsMetadata
from fcn_jax.data.base import SegmentationDataset
from fcn_jax.data.pipeline import PipelineOptions, make_pipeline
from fcn_jax.errors import FCNError
from fcn_jax.eval.metrics import Metrics, compute_metrics, confusion_matrix
from fcn_jax.types import Array, PyTree

FOLD_EVERY = 256  # batches between host folds of the int32 device confusion matrix
# |mean IU (JAX) - mean IU (PyTorch)| allowed by --against-torch, as a fraction (0.1 points).
TORCH_MIOU_TOLERANCE = 1e-3


@dataclasses.dataclass(frozen=True)
class EvalResult:
    """Scores of one evaluation.

    Attributes:
        metrics: the paper's metrics over the whole split.
        n_images: images scored.
        seconds: wall time of the loop (compilation included).
        compilations: XLA compilations of the evaluation step (one per distinct batch shape).
        torch: the PyTorch reference's metrics on the same images, if asked for.
        pixel_agreement: fraction of image pixels where both frameworks predict the same class.
    """

    metrics: Metrics
    n_images: int
    seconds: float
    compilations: int
    torch: Metrics | None = None
    pixel_agreement: float | None = None

    @property
    def torch_miou_diff(self) -> float | None:
        """|mean IU difference| between JAX and PyTorch, if compared."""
        if self.torch is None:
            return None
        return abs(self.metrics.mean_iou - self.torch.mean_iou)

    @property
    def torch_agrees(self) -> bool:
        """Whether the PyTorch comparison (if any) is within :data:`TORCH_MIOU_TOLERANCE`."""
        diff = self.torch_miou_diff
        return diff is None or diff <= TORCH_MIOU_TOLERANCE

    def to_json(self) -> dict[str, Any]:
        """Metric keys plus ``n_images``, ``seconds``, ``compilations`` (and ``torch``)."""
        out = {
            **self.metrics.to_json(),
            "n_images": self.n_images,
            "seconds": self.seconds,
            "compilations": self.compilations,
        }
        if self.torch is not None:
            out["torch"] = {**self.torch.to_json(), "pixel_agreement": self.pixel_agreement}
        return out

    def format(self) -> str:
        """The metrics table and, with a PyTorch comparison, both side by side."""
        lines = [self.metrics.format_table()]
        if self.torch is not None:
            lines += ["", f"{'':<16}{'JAX':>10}{'PyTorch':>10}{'diff':>10}"]
            for key, label in (
                ("pixel_acc", "pixel acc"),
                ("mean_acc", "mean acc"),
                ("mean_iou", "mean IU"),
                ("fw_iou", "f.w. IU"),
            ):
                a, b = getattr(self.metrics, key), getattr(self.torch, key)
                lines.append(f"{label:<16}{100 * a:>10.3f}{100 * b:>10.3f}{100 * (a - b):>+10.3f}")
            lines.append(
                f"pixel agreement of the two predictions: {100 * self.pixel_agreement:.4f}%"
            )
            verdict = "within" if self.torch_agrees else "OUTSIDE"
            lines.append(
                f"mean IU difference {self.torch_miou_diff:.2e} is {verdict} the tolerance "
                f"{TORCH_MIOU_TOLERANCE:.0e}"
            )
        lines.append(
            f"{self.n_images} images in {self.seconds:.1f} s, {self.compilations} compilation(s)"
        )
        return "\n".join(lines)


def _eval_step(metadata: WeightsMetadata) -> tuple[Any, list[int]]:
    """The jitted step ``(hist, params, images, labels) -> (hist, preds)`` and its trace count."""
    model = metadata.model()
    preprocessing = metadata.preprocessing
    traces = [0]

    @functools.partial(jax.jit, donate_argnums=0)
    def step(hist: Array, params: PyTree, images: Array, labels: Array) -> tuple[Array, Array]:
        traces[0] += 1  # runs at trace time only: one per compilation
        logits = model.apply({"params": params}, preprocessing.apply(images))
        preds = jnp.argmax(logits, axis=-1).astype(jnp.uint8)
        return hist + confusion_matrix(labels, preds, metadata.n_class), preds

    return step, traces


class _TorchReference:
    """The project's PyTorch FCN holding the same weights, scoring the same batches."""

    def __init__(self, params: PyTree, metadata: WeightsMetadata) -> None:
        import torch

        from fcn_jax.convert.torchfcn import flax_to_torchfcn
        from fcn_jax.torch_reference import TorchFCN

        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        self.torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.net = TorchFCN(metadata.arch, metadata.n_class, metadata.width)
        state = {k: torch.from_numpy(np.array(v)) for k, v in flax_to_torchfcn(params).items()}
        self.net.load_state_dict(state, strict=True)
        self.net.eval().to(self.device)
        self.preprocessing = metadata.preprocessing
        self.n_class = metadata.n_class
        self.hist = np.zeros((self.n_class, self.n_class), np.int64)
        self.agree = 0
        self.pixels = 0

    def update(self, batch: dict[str, np.ndarray], jax_preds: np.ndarray) -> None:
        x = np.asarray(self.preprocessing.apply(batch["image"])).transpose(0, 3, 1, 2)
        with self.torch.no_grad():
            logits = self.net(self.torch.from_numpy(np.ascontiguousarray(x)).to(self.device))
        preds = logits.argmax(1).to(self.torch.uint8).cpu().numpy()
        self.hist += np.asarray(confusion_matrix(batch["label"], preds, self.n_class))
        for i in np.flatnonzero(batch["valid"]):
            h, w = batch["height"][i], batch["width"][i]
            self.agree += int((preds[i, :h, :w] == jax_preds[i, :h, :w]).sum())
            self.pixels += int(h) * int(w)


def evaluate(
    params: PyTree,
    metadata: WeightsMetadata,
    dataset: SegmentationDataset,
    *,
    bucket: bool = False,
    batch_size: int = 1,
    buckets: tuple[int, ...] | None = None,
    against_torch: bool = False,
    worker_count: int = 0,
    progress: bool = True,
) -> EvalResult:
    """Score ``params`` on every image of ``dataset``.

    Args:
        params: Flax params (device or numpy arrays).
        metadata: their metadata (model, classes, preprocessing).
        dataset: the split to score.
        bucket: pad batches to ``buckets`` and spread them over all local devices, instead of
            the exact whole-image, batch-1 evaluation.
        batch_size: global batch size in bucket mode (a multiple of the device count).
        buckets: bucket sizes (bucket mode).
        against_torch: also run the project's PyTorch FCN with the same weights on the same
            images and report its metrics and the pixel agreement.
        worker_count: data-loading worker processes.
        progress: show a tqdm progress bar.

    Returns:
        The :class:`EvalResult`.
    """
    if dataset.n_class != metadata.n_class:
        raise FCNError(
            f"the weights predict {metadata.n_class} classes but {dataset!r} has "
            f"{dataset.n_class}: evaluate them on a dataset with the same classes"
        )
    devices = jax.local_devices()
    if bucket:
        if not buckets:
            raise FCNError("bucketed evaluation needs bucket sizes (data.buckets / max_size)")
        if batch_size % len(devices):
            raise FCNError(
                f"eval batch size {batch_size} does not divide over {len(devices)} devices: "
                f"use a multiple of {len(devices)}"
            )
        # Auto axes: XLA propagates the batch sharding through the network (the confusion
        # matrix sum over the batch becomes a cross-device reduction), no mesh context needed.
        mesh = jax.make_mesh(
            (len(devices),), ("data",), (jax.sharding.AxisType.Auto,), devices=devices
        )
        data_sharding = NamedSharding(mesh, P("data"))
        replicated = NamedSharding(mesh, P())
        options = PipelineOptions(
            batch_size=batch_size, buckets=buckets, pad_last_batch=True, worker_count=worker_count
        )
    else:
        data_sharding = replicated = jax.sharding.SingleDeviceSharding(devices[0])
        options = PipelineOptions(batch_size=1, worker_count=worker_count)

    step, traces = _eval_step(metadata)
    params = jax.device_put(params, replicated)
    n = metadata.n_class
    hist = jax.device_put(jnp.zeros((n, n), jnp.int32), replicated)
    total = np.zeros((n, n), np.int64)
    reference = _TorchReference(params, metadata) if against_torch else None
    precision = "highest" if against_torch else None  # like for like with torch, TF32 off

    start = time.perf_counter()
    n_images = 0
    bar = tqdm(total=len(dataset), unit="img", desc="eval", disable=not progress)
    with jax.default_matmul_precision(precision):
        for i, batch in enumerate(make_pipeline(dataset, options)):
            images = jax.device_put(batch["image"], data_sharding)
            labels = jax.device_put(batch["label"], data_sharding)
            hist, preds = step(hist, params, images, labels)
            if reference is not None:
                reference.update(batch, np.asarray(preds))
            if (i + 1) % FOLD_EVERY == 0:
                total += np.asarray(hist)
                hist = jax.device_put(jnp.zeros((n, n), jnp.int32), replicated)
            real = int(batch["valid"].sum())
            n_images += real
            bar.update(real)
    total += np.asarray(hist)
    bar.close()
    seconds = time.perf_counter() - start
    if n_images != len(dataset):  # the pipeline must deliver every image exactly once
        raise AssertionError(f"scored {n_images} of {len(dataset)} images")
    result = EvalResult(compute_metrics(total, dataset.class_names), n_images, seconds, traces[0])
    if reference is not None:
        result = dataclasses.replace(
            result,
            torch=compute_metrics(reference.hist, dataset.class_names),
            pixel_agreement=reference.agree / max(reference.pixels, 1),
        )
    return result
