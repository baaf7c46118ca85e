"""StableHLO artifacts: :mod:`jax.export` of the artifact function, symbolic sizes by default.

``jax.export.export(jax.jit(fn))(*specs)`` traces the function once with symbolic ``batch``,
``height`` and ``width`` (``jax.export.symbolic_shape``) and ``Exported.serialize()`` gives
bytes that any jax of a compatible calling convention deserializes and runs
(``jax.export.deserialize(...).call``), compiling per concrete size; the same API in jax 0.10
and 0.12. Every network of :data:`~fcn_jax.models.spec.ARCHS` traces with symbolic sizes: the
paper's 100 px pad, ceil pooling (padded by a constant one, see
:func:`~fcn_jax.models.layers.max_pool_ceil`) and derived crops, SpeedPaper's padding to
multiples of 32, the ResNets' strided stem and bilinear resize. A network that did not would
be reported with the advice to export a fixed size (``--height`` / ``--width``).

The graph is lowered for ``platforms`` (default: the backend this process runs on); an artifact
runs only on a platform it was lowered for, so export with ``cpu,cuda`` to serve it on both.
The convolution implementation is chosen for the first platform (``gemm`` on a CPU, as
:func:`~fcn_jax.models.conv.resolve_conv_impl` chooses for the live model).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp

from fcn_jax.checkpoint import WeightsMetadata
from fcn_jax.errors import FCNError
from fcn_jax.export.graph import Sizes, artifact_fn, artifact_info
from fcn_jax.export.info import SYMBOLIC_DIMS, ArtifactInfo, write_sidecar
from fcn_jax.models.spec import Variables

PLATFORMS = ("cpu", "cuda", "rocm", "tpu")


def input_specs(n_inputs: int, sizes: Sizes) -> tuple[jax.ShapeDtypeStruct, ...]:
    """[N, H, W, 3] uint8 shapes of the inputs, symbolic where ``sizes`` has None.

    The inputs of a multi-stream net share one scope's ``batch``, ``height`` and ``width``.
    """
    names = [d for d, s in zip(SYMBOLIC_DIMS, sizes, strict=True) if s is None]
    symbols = iter(jax.export.symbolic_shape(", ".join(names)) if names else ())
    dims = tuple(s if s is not None else next(symbols) for s in sizes)
    return tuple(jax.ShapeDtypeStruct((*dims, 3), jnp.uint8) for _ in range(n_inputs))


def check_platforms(platforms: Sequence[str]) -> tuple[str, ...]:
    """The platforms to lower for, each checked (``gpu`` means ``cuda``)."""
    out = tuple(dict.fromkeys("cuda" if p == "gpu" else p for p in platforms))
    bad = [p for p in out if p not in PLATFORMS]
    if not out or bad:
        raise FCNError(f"--platforms {','.join(platforms)}: choose from {', '.join(PLATFORMS)}")
    return out


def export_stablehlo(
    variables: Variables,
    metadata: WeightsMetadata,
    out: str | Path,
    *,
    outputs: str = "both",
    sizes: Sizes = (None, None, None),
    dtype: str = "float32",
    platforms: Sequence[str] | None = None,
    source: dict | None = None,
) -> ArtifactInfo:
    """Write ``out`` (serialized :class:`jax.export.Exported`) and its sidecar ``out.json``.

    Args:
        variables: the weights' variables.
        metadata: their metadata (network, classes, palette, eval resize, provenance).
        out: the ``.stablehlo`` file to write.
        outputs: ``logits``, ``labels`` or ``both``.
        sizes: (batch, height, width), None where symbolic.
        dtype: compute dtype, ``float32`` or ``bfloat16`` (logits are float32 either way).
        platforms: lowering platforms (default: this process's backend).
        source: extra provenance for the description (weights directory, step).

    Returns:
        The artifact's description, as written to the sidecar.

    Raises:
        FCNError: a network that cannot be traced at symbolic sizes (export a fixed size).
    """
    platforms = check_platforms(platforms or (jax.default_backend(),))
    impl = "gemm" if platforms[0] == "cpu" else "xla"
    spec = metadata.spec.replace(dtype=dtype, conv_impl=impl)
    fn = artifact_fn(spec, variables, outputs)
    specs = input_specs(len(spec.inputs), sizes)
    try:
        exported = jax.export.export(jax.jit(fn), platforms=platforms)(*specs)
    except Exception as e:  # jax raises several types for shape polymorphism
        if all(s is not None for s in sizes[1:]):
            raise
        raise FCNError(
            f"{spec.arch} ({spec.backbone}) cannot be exported with symbolic sizes "
            f"({type(e).__name__}: {str(e).splitlines()[0]}): export a fixed size with "
            "--height and --width"
        ) from None
    info = artifact_info(
        "stablehlo",
        metadata,
        variables,
        outputs=outputs,
        sizes=sizes,
        dtype=dtype,
        source=dict(source or {}),
        more_versions={"platforms": list(platforms), "conv_impl": impl},
    )
    Path(out).write_bytes(exported.serialize())
    write_sidecar(info, out)
    return info
