"""Score weights on a dataset split the paper's way, optionally beside the PyTorch reference.

The confusion matrix is accumulated on the device inside the jitted step (no host round-trip
per image); it is folded into an int64 host total every ``FOLD_EVERY`` batches so int32 counts
cannot overflow on huge splits. Whole-image evaluation (batch 1, the paper's) compiles once per
distinct image shape; bucketed evaluation pads batches to a few sizes with void labels and
spreads them over all local devices, the last partial batch padded with void examples so every
real pixel counts exactly once. A multi-head network (SIFT Flow) is scored once per head, each
against its own label key.

:class:`EvalOptions` reads how to evaluate from an experiment config (``eval.bucket``,
``eval.batch_size``, ``dtype``, ``num_devices``, ``data.buckets`` / ``max_size`` /
``bucket_step``, ``data.worker_count``), checked before any work.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm import tqdm

from fcn_jax.checkpoint import WeightsMetadata
from fcn_jax.data.base import SegmentationDataset
from fcn_jax.data.pipeline import PipelineOptions, make_pipeline
from fcn_jax.data.transforms import default_buckets
from fcn_jax.errors import FCNError
from fcn_jax.eval.metrics import Metrics, compute_metrics, confusion_matrix
from fcn_jax.types import Array, PyTree

FOLD_EVERY = 256  # batches between host folds of the int32 device confusion matrices
# |mean IU (JAX) - mean IU (PyTorch)| allowed by --against-torch, as a fraction (0.1 points).
TORCH_MIOU_TOLERANCE = 1e-3
COMPUTE_DTYPES = ("float32", "bfloat16")
# |mean IU (bfloat16) - mean IU (float32)| we promise for the same float32 weights, as a
# fraction (0.5 points): bf16 keeps 8 bits of mantissa, so logits move by ~1% of their scale
# and only pixels whose top two classes are that close flip (tests/eval: measured on converted
# weights).
BF16_MIOU_TOLERANCE = 5e-3
# Head suffix -> (label key of the records, name of its metric set). The first head of any
# network reads ``label``; SIFT Flow's are the semantic and geometric classes.
HEAD_LABELS = {"sem": ("label", "semantic"), "geo": ("label_geo", "geometric")}


def head_targets(metadata: WeightsMetadata) -> dict[str, tuple[str, str]]:
    """Output key -> (label key, metric-set name) for every head of a network."""
    if not metadata.heads:
        return {"": ("label", "")}
    targets = {}
    for i, head in enumerate(metadata.heads):
        key, name = HEAD_LABELS.get(head, (f"label_{head}", head))
        targets[head] = ("label" if i == 0 else key, name)
    return targets


@dataclasses.dataclass(frozen=True)
class EvalOptions:
    """How to evaluate: the keyword arguments of :func:`evaluate` a config decides.

    Attributes:
        bucket: pad batches to ``buckets`` over the devices, instead of whole images one by one.
        batch_size: global batch size of bucketed evaluation (whole images go one at a time).
        buckets: bucket sizes (bucketed evaluation).
        worker_count: data-loading worker processes.
        dtype: compute dtype of the network.
        num_devices: local devices to spread buckets over; None for all.
    """

    bucket: bool = False
    batch_size: int = 1
    buckets: tuple[int, ...] = ()
    worker_count: int = 0
    dtype: str = "float32"
    num_devices: int | None = None

    @classmethod
    def from_config(
        cls, config: ml_collections.ConfigDict, bucket: bool | None = None
    ) -> EvalOptions:
        """The options ``config`` holds, checked now rather than after loading weights and data.

        Args:
            config: the experiment config: ``eval.bucket``, ``eval.batch_size``, ``dtype``,
                ``num_devices``, ``data.buckets`` (else multiples of ``data.bucket_step`` up to
                ``data.max_size``) and ``data.worker_count``.
            bucket: a command line's explicit choice, overriding ``config.eval.bucket``; None
                leaves it to the config.

        Raises:
            FCNError: an unknown dtype, a batch size below 1 or (bucketed) not a multiple of the
                device count, a device count this host does not have; each names its key.
        """
        d = config.data
        options = cls(
            bucket=bool(config.eval.bucket if bucket is None else bucket),
            batch_size=config.eval.batch_size,
            buckets=tuple(d.get("buckets") or default_buckets(d.max_size, d.bucket_step)),
            worker_count=d.get("worker_count") or 0,
            dtype=config.dtype,
            num_devices=config.get("num_devices"),
        )
        options.check()
        return options

    def check(self) -> list[jax.Device]:
        """Fail on options that cannot work on this host; returns the devices to use.

        Raises:
            FCNError: see :meth:`from_config`.
        """
        if self.dtype not in COMPUTE_DTYPES:
            raise FCNError(f"config.dtype {self.dtype!r} is not one of {COMPUTE_DTYPES}")
        if self.batch_size < 1:
            raise FCNError(f"config.eval.batch_size must be at least 1, got {self.batch_size}")
        devices = jax.local_devices()
        if self.num_devices is not None:
            if not 1 <= self.num_devices <= len(devices):
                raise FCNError(
                    f"config.num_devices={self.num_devices} but this host has {len(devices)} "
                    "devices"
                )
            devices = devices[: self.num_devices]
        if self.bucket:
            if not self.buckets:
                raise FCNError(
                    "bucketed evaluation needs bucket sizes (config.data.buckets or "
                    "config.data.max_size)"
                )
            if self.batch_size % len(devices):
                raise FCNError(
                    f"eval batch size {self.batch_size} does not divide over {len(devices)} "
                    f"devices (config.eval.batch_size): use a multiple of {len(devices)}, or "
                    "fewer devices (config.num_devices)"
                )
        return devices


@dataclasses.dataclass(frozen=True)
class EvalResult:
    """Scores of one evaluation.

    Attributes:
        metrics: metric-set name -> the paper's metrics over the whole split (one set, keyed
            ``""``, for a single-head network; ``semantic`` and ``geometric`` for SIFT Flow).
        n_images: images scored.
        seconds: wall time of the loop (compilation included).
        compilations: XLA compilations of the evaluation step (one per distinct batch shape).
        batches: steps run (one per image scored whole; bucketed, padded batches).
        torch: the PyTorch reference's metrics on the same images (same keys), if asked for.
        pixel_agreement: fraction of image pixels where both frameworks predict the same class.
    """

    metrics: dict[str, Metrics]
    n_images: int
    seconds: float
    compilations: int
    batches: int = 0
    torch: dict[str, Metrics] | None = None
    pixel_agreement: float | None = None

    @property
    def torch_miou_diff(self) -> float | None:
        """Largest |mean IU difference| between JAX and PyTorch over the heads, if compared."""
        if self.torch is None:
            return None
        return max(abs(m.mean_iou - self.torch[k].mean_iou) for k, m in self.metrics.items())

    @property
    def torch_agrees(self) -> bool:
        """Whether the PyTorch comparison (if any) is within :data:`TORCH_MIOU_TOLERANCE`."""
        diff = self.torch_miou_diff
        return diff is None or diff <= TORCH_MIOU_TOLERANCE

    def to_json(self) -> dict[str, Any]:
        """The metrics JSON.

        Metric keys (flat, or under ``semantic`` / ``geometric``), ``n_images``, ``seconds``,
        ``compilations``, ``batches`` and, compared with PyTorch, ``torch`` (same keys +
        ``pixel_agreement``).
        """
        out = _metrics_json(self.metrics)
        out |= {"n_images": self.n_images, "seconds": self.seconds}
        out["compilations"] = self.compilations
        out["batches"] = self.batches
        if self.torch is not None:
            out["torch"] = {**_metrics_json(self.torch), "pixel_agreement": self.pixel_agreement}
        return out

    def format(self) -> str:
        """The metrics tables and, with a PyTorch comparison, both side by side."""
        lines = []
        for name, metrics in self.metrics.items():
            if name:
                lines += [f"== {name} ==", ""]
            lines += [metrics.format_table(), ""]
        if self.torch is not None:
            lines.append(f"{'':<24}{'JAX':>10}{'PyTorch':>10}{'diff':>10}")
            for name, metrics in self.metrics.items():
                for key, label in (
                    ("pixel_acc", "pixel acc"),
                    ("mean_acc", "mean acc"),
                    ("mean_iou", "mean IU"),
                    ("fw_iou", "f.w. IU"),
                ):
                    a, b = getattr(metrics, key), getattr(self.torch[name], key)
                    row = f"{name} {label}".strip()
                    lines.append(
                        f"{row:<24}{100 * a:>10.3f}{100 * b:>10.3f}{100 * (a - b):>+10.3f}"
                    )
            lines.append(
                f"pixel agreement of the two predictions: {100 * self.pixel_agreement:.4f}%"
            )
            verdict = "within" if self.torch_agrees else "OUTSIDE"
            lines.append(
                f"mean IU difference {self.torch_miou_diff:.2e} is {verdict} the tolerance "
                f"{TORCH_MIOU_TOLERANCE:.0e}"
            )
        lines.append(
            f"{self.n_images} images in {self.batches} batch(es), {self.seconds:.1f} s, "
            f"{self.compilations} compilation(s)"
        )
        return "\n".join(lines)


def _metrics_json(metrics: dict[str, Metrics]) -> dict[str, Any]:
    if list(metrics) == [""]:
        return metrics[""].to_json()
    return {name: m.to_json() for name, m in metrics.items()}


def _outputs(logits: Any) -> dict[str, Any]:
    """A network's output as ``{head: logits}`` (key ``""`` for a single head)."""
    return logits if isinstance(logits, dict) else {"": logits}


@functools.cache
def _eval_step(metadata: WeightsMetadata, dtype: str = "float32") -> tuple[Any, list[int]]:
    """The jitted step ``(hists, params, inputs, labels) -> (hists, preds)`` and its traces.

    ``inputs`` maps record keys to uint8 images, ``labels`` head -> uint8 labels, ``hists``
    head -> int32 confusion matrix; preprocessing runs on the device. Cached per network and
    compute dtype, so the periodic validations of a training run compile each shape once.
    """
    model = metadata.model(dtype=jnp.dtype(dtype))
    classes = {head: len(names) for head, names in metadata.head_classes.items()}
    traces = [0]

    @functools.partial(jax.jit, donate_argnums=0)
    def step(
        hists: dict[str, Array], params: PyTree, inputs: dict[str, Array], labels: dict[str, Array]
    ) -> tuple[dict[str, Array], dict[str, Array]]:
        traces[0] += 1  # runs at trace time only: one per compilation
        logits = _outputs(model.apply({"params": params}, metadata.preprocess(inputs)))
        preds = {h: jnp.argmax(x, axis=-1).astype(jnp.uint8) for h, x in logits.items()}
        hists = {h: hists[h] + confusion_matrix(labels[h], preds[h], classes[h]) for h in hists}
        return hists, preds

    return step, traces


class _TorchReference:
    """The project's PyTorch FCN holding the same weights, scoring the same batches."""

    def __init__(self, params: PyTree, metadata: WeightsMetadata) -> None:
        from fcn_jax.convert.torch_files import import_torch_float32
        from fcn_jax.convert.torchfcn import flax_to_torchfcn

        torch = import_torch_float32()  # first: without torch, say how to install it
        from fcn_jax.torch_reference import TorchFCN

        self.torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        model = metadata.model()
        self.net = TorchFCN(
            metadata.arch, metadata.n_class, metadata.width, model.streams, model.heads
        )
        state = {k: torch.from_numpy(np.array(v)) for k, v in flax_to_torchfcn(params).items()}
        self.net.load_state_dict(state, strict=True)
        self.net.eval().to(self.device)
        self.metadata = metadata
        self.classes = {head: len(names) for head, names in metadata.head_classes.items()}
        self.hists = {h: np.zeros((n, n), np.int64) for h, n in self.classes.items()}
        self.agree = 0
        self.pixels = 0

    def update(
        self, batch: dict[str, np.ndarray], labels: dict[str, np.ndarray], jax_preds: dict
    ) -> None:
        x = self.metadata.preprocess({k: batch[k] for k in self.metadata.inputs})
        xs = tuple(
            self.torch.from_numpy(np.ascontiguousarray(np.asarray(xi).transpose(0, 3, 1, 2))).to(
                self.device
            )
            for xi in (x if self.metadata.streams else (x,))
        )
        with self.torch.no_grad():
            out = _outputs(self.net(xs if self.metadata.streams else xs[0]))
        for head, logits in out.items():
            preds = logits.argmax(1).to(self.torch.uint8).cpu().numpy()
            self.hists[head] += np.asarray(
                confusion_matrix(labels[head], preds, self.classes[head])
            )
            ours = np.asarray(jax_preds[head])
            for i in np.flatnonzero(batch["valid"]):
                h, w = batch["height"][i], batch["width"][i]
                self.agree += int((preds[i, :h, :w] == ours[i, :h, :w]).sum())
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
    dtype: str = "float32",
    num_devices: int | None = None,
) -> EvalResult:
    """Score ``params`` on every image of ``dataset``.

    The keyword arguments a config decides are :class:`EvalOptions`' fields:
    ``evaluate(params, metadata, dataset, **dataclasses.asdict(options))``.

    Args:
        params: Flax params (device or numpy arrays).
        metadata: their metadata (model, inputs, classes, preprocessing).
        dataset: the split to score; its records must hold the network's inputs and a label
            key per head.
        bucket: pad batches to ``buckets`` and spread them over the local devices, instead of
            the exact whole-image, batch-1 evaluation.
        batch_size: global batch size in bucket mode (a multiple of the device count).
        buckets: bucket sizes (bucket mode).
        against_torch: also run the project's PyTorch FCN with the same weights on the same
            images and report its metrics and the pixel agreement.
        worker_count: data-loading worker processes.
        progress: show a tqdm progress bar.
        dtype: compute dtype of the JAX network (``bfloat16``: bf16 activations and matmuls,
            float32 params and argmax); the PyTorch reference always runs in float32.
        num_devices: the first ``num_devices`` local devices take the buckets; None: all.

    Returns:
        The :class:`EvalResult`.

    Raises:
        FCNError: options that cannot work here (:meth:`EvalOptions.check`), weights that read
            inputs or predict classes the dataset lacks, or a bad record (the progress bar is
            closed first, so the message starts on its own line).
    """
    devices = EvalOptions(
        bucket=bucket,
        batch_size=batch_size,
        buckets=tuple(buckets or ()),
        worker_count=worker_count,
        dtype=dtype,
        num_devices=num_devices,
    ).check()
    targets = head_targets(metadata)
    label_classes = dataset.label_classes
    missing = [k for k in metadata.inputs if k not in dataset[0]]
    if missing:
        raise FCNError(
            f"the weights read {metadata.inputs} but {dataset!r} records lack {missing}: set the "
            "dataset's modalities (data.modalities) to the network's inputs"
        )
    for head, (key, _) in targets.items():
        wanted = len(metadata.head_classes[head])
        have = len(label_classes.get(key, ()))
        if have != wanted:
            raise FCNError(
                f"the weights predict {wanted} classes{f' ({head})' if head else ''} but "
                f"{dataset!r} has {have} for {key!r}: evaluate them on a dataset with the "
                "same classes"
            )
    if bucket:
        # Auto axes: XLA propagates the batch sharding through the network (the confusion
        # matrix sum over the batch becomes a cross-device reduction), no mesh context needed.
        mesh = jax.make_mesh(
            (len(devices),), ("data",), (jax.sharding.AxisType.Auto,), devices=devices
        )
        data_sharding = NamedSharding(mesh, P("data"))
        replicated = NamedSharding(mesh, P())
        options = PipelineOptions(
            batch_size=batch_size,
            buckets=buckets,
            pad_last_batch=True,
            worker_count=worker_count,
            fill=metadata.mean_pixels(),
        )
    else:
        data_sharding = replicated = jax.sharding.SingleDeviceSharding(devices[0])
        options = PipelineOptions(batch_size=1, worker_count=worker_count)

    step, traces = _eval_step(metadata, dtype)
    traces_before = traces[0]
    params = jax.device_put(params, replicated)
    classes = {head: len(names) for head, names in metadata.head_classes.items()}

    def zeros() -> dict[str, Array]:
        return {
            h: jax.device_put(jnp.zeros((n, n), jnp.int32), replicated) for h, n in classes.items()
        }

    hists = zeros()
    totals = {h: np.zeros((n, n), np.int64) for h, n in classes.items()}
    reference = _TorchReference(params, metadata) if against_torch else None
    precision = "highest" if against_torch else None  # like for like with torch, TF32 off

    start = time.perf_counter()
    n_images = batches = 0
    bar = tqdm(total=len(dataset), unit="img", desc="eval", disable=not progress)
    # try/finally: a bad record raises mid-loop; closing the bar ends its line, so the CLI's
    # "error: ..." is not glued onto the progress bar.
    try:
        with jax.default_matmul_precision(precision):
            for batch in make_pipeline(dataset, options):
                inputs = {k: jax.device_put(batch[k], data_sharding) for k in metadata.inputs}
                labels = {h: batch[key] for h, (key, _) in targets.items()}
                hists, preds = step(hists, params, inputs, jax.device_put(labels, data_sharding))
                if reference is not None:
                    reference.update(batch, labels, preds)
                batches += 1
                if batches % FOLD_EVERY == 0:
                    for h in totals:
                        totals[h] += np.asarray(hists[h])
                    hists = zeros()
                real = int(batch["valid"].sum())
                n_images += real
                bar.update(real)
    finally:
        bar.close()
    for h in totals:
        totals[h] += np.asarray(hists[h])
    seconds = time.perf_counter() - start
    if n_images != len(dataset):  # the pipeline must deliver every image exactly once
        raise AssertionError(f"scored {n_images} of {len(dataset)} images")

    present_only = getattr(dataset, "score_present_classes_only", False)

    def score(hist_by_head: dict[str, np.ndarray]) -> dict[str, Metrics]:
        return {
            name: compute_metrics(hist_by_head[h], label_classes[key], present_only)
            for h, (key, name) in targets.items()
        }

    result = EvalResult(score(totals), n_images, seconds, traces[0] - traces_before, batches)
    if reference is not None:
        result = dataclasses.replace(
            result,
            torch=score(reference.hists),
            pixel_agreement=reference.agree / max(reference.pixels, 1),
        )
    return result
