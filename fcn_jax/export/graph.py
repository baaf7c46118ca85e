"""The function every artifact holds: uint8 images in, logits and/or labels out.

What it computes is :meth:`~fcn_jax.models.NetSpec.logits` on the weights' variables, so the
preprocessing the weights' metadata stores (channel order, scale, mean, std, grey) and
SpeedPaper's padding to multiples of 32 (with the mean pixel, logits cropped back) happen inside
the graph; a consumer only needs RGB pixels as read from files. Then, per head, the float32
logits and/or their argmax as uint8 labels.

Not inside: the evaluation resize of torchvision's FCN-ResNets (shorter side 520, PIL bilinear
on uint8, then the logits resized back). The weights directory's predict path does it outside
the network too (:class:`fcn_jax.inference.Predictor`), PIL's uint8 resize has no exact
counterpart among graph ops, and a caller that wants the network at the image's own size (for
tiling, or its own resize) keeps that choice. The artifact's description carries
``eval_resize``, and :class:`fcn_jax.export.predictor.ArtifactPredictor` applies it exactly as
the weights directory does.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import fcn_jax
from fcn_jax.checkpoint import WeightsMetadata
from fcn_jax.errors import FCNError
from fcn_jax.export.info import OUTPUT_KINDS, SYMBOLIC_DIMS, ArtifactInfo, TensorSpec
from fcn_jax.models import NetSpec
from fcn_jax.models.spec import Variables
from fcn_jax.types import Array

Sizes = tuple[int | None, int | None, int | None]  # (batch, height, width); None: symbolic
MAX_LABEL_CLASSES = 256  # labels are uint8


def output_names(spec: NetSpec, outputs: str) -> list[tuple[str, str, str]]:
    """``(name, head, kind)`` of every output, in order: per head, logits then labels.

    A one-head net's are ``logits`` / ``labels``; a multi-head net's are suffixed by the head
    (``logits_sem``, ``labels_sem``, ``logits_geo``, ``labels_geo``).
    """
    if outputs not in OUTPUT_KINDS:
        raise FCNError(f"--outputs {outputs!r} is not one of {', '.join(OUTPUT_KINDS)}")
    kinds = ("logits", "labels") if outputs == "both" else (outputs,)
    several = len(spec.heads) > 1
    return [
        (f"{kind}_{head}" if several else kind, head, kind)
        for head, _ in spec.heads
        for kind in kinds
    ]


def check_labels(spec: NetSpec, outputs: str) -> None:
    """uint8 labels hold at most 256 classes: refuse them for a head with more."""
    if outputs == "logits":
        return
    for head, n in spec.heads:
        if n > MAX_LABEL_CLASSES:
            raise FCNError(
                f"head {head!r} has {n} classes: uint8 labels hold {MAX_LABEL_CLASSES}; export "
                "--outputs logits"
            )


def artifact_fn(
    spec: NetSpec, variables: Variables, outputs: str = "both"
) -> Callable[..., dict[str, Array]]:
    """The function an artifact holds, the variables closed over (they become its constants).

    Args:
        spec: the network (its ``dtype`` and ``conv_impl`` as the artifact should compute).
        variables: its variables.
        outputs: ``logits``, ``labels`` or ``both``.

    Returns:
        ``fn(*images) -> {output name: array}``: one [N, H, W, 3] uint8 RGB array per input of
        ``spec.inputs`` (same N, H, W), giving logits [N, H, W, C] float32 and/or labels
        [N, H, W] uint8 (:func:`output_names`).
    """
    check_labels(spec, outputs)
    names = output_names(spec, outputs)

    def fn(*images: Array) -> dict[str, Array]:
        logits = spec.logits(variables, dict(zip(spec.inputs, images, strict=True)))
        out = {}
        for name, head, kind in names:
            scores = logits[head].astype(jnp.float32)
            out[name] = scores if kind == "logits" else jnp.argmax(scores, -1).astype(jnp.uint8)
        return out

    return fn


def tensor_specs(spec: NetSpec, outputs: str, sizes: Sizes) -> tuple[list, list]:
    """Input and output :class:`TensorSpec` of an artifact of ``sizes`` (None: symbolic)."""
    dims = tuple(s if s is not None else d for s, d in zip(sizes, SYMBOLIC_DIMS, strict=True))
    inputs = [TensorSpec(k, (*dims, 3), "uint8") for k in spec.inputs]
    classes = dict(spec.heads)
    out = [
        TensorSpec(name, (*dims, classes[head]) if kind == "logits" else dims, dtype, head)
        for name, head, kind in output_names(spec, outputs)
        for dtype in ("float32" if kind == "logits" else "uint8",)
    ]
    return inputs, out


def variables_sha256(variables: Variables) -> str:
    """SHA-256 over every variable: its path, dtype, shape and bytes, paths sorted.

    Independent of how the weights directory stores them, so a weights directory and the
    artifacts made from it can be matched.
    """
    h = hashlib.sha256()
    leaves = jax.tree_util.tree_flatten_with_path(variables)[0]
    for path, leaf in sorted(leaves, key=lambda kv: jax.tree_util.keystr(kv[0])):
        a = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{jax.tree_util.keystr(path)}|{a.dtype}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def versions(**more: Any) -> dict[str, Any]:
    """fcn-jax's and jax's versions, plus ``more``."""
    return {"fcn_jax": fcn_jax.__version__, "jax": jax.__version__, **more}


def package_version(name: str) -> str:
    """An installed package's version (``unknown`` if it is not installed as a distribution)."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def artifact_info(
    fmt: str,
    metadata: WeightsMetadata,
    variables: Variables,
    *,
    outputs: str,
    sizes: Sizes,
    dtype: str,
    source: dict[str, Any],
    more_versions: dict[str, Any] | None = None,
) -> ArtifactInfo:
    """The description of an artifact made from ``metadata``'s weights."""
    spec = metadata.spec
    inputs, outs = tensor_specs(spec, outputs, sizes)
    fixed = [d for d, s in zip(SYMBOLIC_DIMS, sizes, strict=True) if s is not None]
    return ArtifactInfo(
        format=fmt,
        inputs=tuple(inputs),
        outputs=tuple(outs),
        head_classes=dict(metadata.head_classes),
        palette=tuple(
            tuple(int(v) for v in c)  # type: ignore[misc]  # RGB triples
            for c in metadata.palette_array()[: spec.n_class]
        ),
        eval_resize=metadata.eval_resize,
        network={
            "arch": spec.arch,
            "backbone": spec.backbone,
            "width": spec.width,
            "dtype": dtype,
            "streams": list(spec.streams),
            "preprocessing": [p.to_dict() for p in spec.preprocessing],
        },
        weights_sha256=variables_sha256(variables),
        source={
            "source": metadata.source,
            "source_sha256": metadata.source_sha256,
            **source,
        },
        versions=versions(**(more_versions or {})),
        note=f"fixed {', '.join(fixed)} (given at export)" if fixed else "",
    )


def example_images(spec: NetSpec, shape: Sequence[int], seed: int = 0) -> tuple[np.ndarray, ...]:
    """Random uint8 images of ``shape`` [N, H, W, 3], one per input (tracing, tests)."""
    rng = np.random.default_rng(seed)
    return tuple(rng.integers(0, 256, tuple(shape), dtype=np.uint8) for _ in spec.inputs)


def source_fields(weights: str | Path | None, step: int | None) -> dict[str, Any]:
    """The ``source`` fields that name the weights directory and step (when known)."""
    return {"weights": None if weights is None else Path(weights).name, "step": step}
