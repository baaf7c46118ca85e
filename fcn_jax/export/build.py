"""From a weights directory to a checked artifact: what ``export.py`` runs."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from fcn_jax.checkpoint import load_weights
from fcn_jax.errors import FCNError
from fcn_jax.export.artifact import load_artifact
from fcn_jax.export.check import CaseResult, check_artifact
from fcn_jax.export.graph import Sizes, source_fields
from fcn_jax.export.info import FORMATS, OUTPUT_KINDS, ArtifactInfo, sidecar_path
from fcn_jax.outputs import output_file


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """What :func:`export_weights` wrote and found.

    Attributes:
        path: the artifact.
        info: its description.
        files: every file written (a StableHLO artifact's sidecar too) and its size in bytes.
        checks: the parity check's results (None without ``check``).
        export_seconds: time to trace, convert and write.
    """

    path: Path
    info: ArtifactInfo
    files: dict[Path, int]
    checks: list[CaseResult] | None
    export_seconds: float

    @property
    def ok(self) -> bool:
        """Whether the check passed (True when not run)."""
        return self.checks is None or all(c.ok for c in self.checks)


def check_sizes(sizes: Sizes) -> Sizes:
    """Positive sides; height and width fixed together (a crop needs both)."""
    for name, s in zip(("--batch", "--height", "--width"), sizes, strict=True):
        if s is not None and s < 1:
            raise FCNError(f"{name} {s}: give a positive size (or leave it out: symbolic)")
    if (sizes[1] is None) != (sizes[2] is None):
        raise FCNError("give --height and --width together (or neither: any image size)")
    return sizes


def export_weights(
    weights: str | Path,
    out: str | Path,
    fmt: str,
    *,
    step: int | None = None,
    outputs: str = "both",
    sizes: Sizes = (None, None, None),
    dtype: str = "float32",
    check: bool = True,
    platforms: list[str] | None = None,
) -> ExportResult:
    """Export a weights directory's step as a ``stablehlo`` or ``onnx`` artifact; check it.

    Everything the user gives is checked before the weights are loaded: the format and the
    suffix of ``out`` (predict.py recognises an artifact by it), the sizes, ``out`` (and a
    StableHLO artifact's sidecar) writable and not an input.

    Raises:
        FCNError: bad format, suffix, sizes, output, weights, or a network or dtype the
            format cannot take.
    """
    if fmt not in FORMATS:
        raise FCNError(f"--format {fmt!r}: choose {' or '.join(FORMATS)}")
    out = Path(out)
    if out.suffix.lower() != FORMATS[fmt]:
        raise FCNError(
            f"--out {out}: --format {fmt} writes *{FORMATS[fmt]} files (predict.py and "
            "load_artifact recognise the format by the suffix)"
        )
    if platforms and fmt != "stablehlo":
        raise FCNError("--platforms applies to --format stablehlo (ONNX Runtime picks its own)")
    sizes = check_sizes(sizes)
    if outputs not in OUTPUT_KINDS:
        raise FCNError(f"--outputs {outputs!r}: choose from {', '.join(OUTPUT_KINDS)}")
    inputs = {"weights": weights}
    output_file(out, "--out", inputs=inputs)
    if fmt == "stablehlo":
        output_file(sidecar_path(out), "--out (its .json description)", inputs=inputs)
    variables, metadata = load_weights(weights, step)
    source = source_fields(weights, step)
    start = time.perf_counter()
    if fmt == "stablehlo":
        from fcn_jax.export.stablehlo import export_stablehlo

        info = export_stablehlo(
            variables,
            metadata,
            out,
            outputs=outputs,
            sizes=sizes,
            dtype=dtype,
            platforms=platforms,
            source=source,
        )
    else:
        from fcn_jax.export.onnx_torch import export_onnx

        info = export_onnx(
            variables, metadata, out, outputs=outputs, sizes=sizes, dtype=dtype, source=source
        )
    seconds = time.perf_counter() - start
    files = [out, *([sidecar_path(out)] if fmt == "stablehlo" else [])]
    checks = None
    if check:
        checks = check_artifact(load_artifact(out), variables, metadata, dtype=dtype)
    return ExportResult(out, info, {f: f.stat().st_size for f in files}, checks, seconds)
