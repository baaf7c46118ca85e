"""bench.py's JSON: one record per case, its schema, its writer and its reader.

``bench.json`` is a list of records. Each holds its case's fields (:data:`CASE_FIELDS`, as
:meth:`fcn_jax.bench.plan.Case.key` writes them) and then either ``skipped`` (why the case was
not measured) or what was measured (:data:`MEASURED_FIELDS`: per-image times in ms, rates,
compile times, sizes in bytes; any of them null where not measured). ``run.json``, beside it,
describes the machine (:func:`fcn_jax.bench.env.run_metadata`).

:func:`case_record` writes a record, :func:`read_records` reads a file of them back and checks
it, so that a consumer (``reproduce.py --timing-json``) never re-parses the format itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fcn_jax.bench.flops import gflop
from fcn_jax.bench.plan import Case, Plan
from fcn_jax.errors import FCNError

if TYPE_CHECKING:  # env imports jax; a reader of records needs none
    from fcn_jax.bench.env import BenchEnv

Record = dict[str, Any]  # one case's record: CASE_FIELDS + SKIPPED, or + MEASURED_FIELDS

_NUMBER = (int, float)
_INT = (int,)
_STR = (str,)

# The case's fields (Case.key()): present in every record.
CASE_FIELDS: dict[str, tuple[type, ...]] = {
    "variant": _STR,
    "mode": _STR,
    "height": _INT,
    "width": _INT,
    "batch": _INT,
    "dtype": _STR,
    "width_mult": _NUMBER,
}
# Case fields that records written before they existed lack, and what those records meant.
CASE_DEFAULTS: dict[str, Any] = {"dtype": "float32", "width_mult": 1.0}
SKIPPED = "skipped"  # why a case was not measured (its record holds only the case's fields)
FRAMEWORKS = ("jax", "torch", "torch_compile")
_PER_FRAMEWORK: dict[str, tuple[type, ...]] = {
    "ms": _NUMBER,  # median ms per image
    "ms_q1": _NUMBER,
    "ms_q3": _NUMBER,
    "ms_min": _NUMBER,
    "ms_max": _NUMBER,
    "images_per_s": _NUMBER,
    "tflops": _NUMBER,  # analytic GFLOP per ms
    "peak_fraction": _NUMBER,  # of the device's peak for the case's dtype
}
# What a measured case records; each may be null (not measured, or not finite).
MEASURED_FIELDS: dict[str, tuple[type, ...]] = {
    "gflop": _NUMBER,
    **{f"{p}_{k}": t for p in FRAMEWORKS for k, t in _PER_FRAMEWORK.items()},
    "ratio": _NUMBER,  # JAX ms / torch ms: < 1, JAX is faster
    "ratio_compiled": _NUMBER,  # JAX ms / torch.compile ms
    "jax_compile_s": _NUMBER,
    "jax_first_call_s": _NUMBER,
    "torch_first_call_s": _NUMBER,
    "torch_compile_s": _NUMBER,
    "torch_compile_status": _STR,
    "jax_xla_bytes": _INT,
    "xla_gflop": _NUMBER,
    "jax_peak_bytes": _INT,
    "torch_peak_bytes": _INT,
    "max_rel_diff": _NUMBER,
    "torch_memory_format": _STR,
    "repeats": _INT,
    "warmup": _INT,
}
# Added by the accelerator suite (fcn_jax.bench.accelerator) to the records it writes.
SUITE_FIELDS: dict[str, tuple[type, ...]] = {"batch_requested": _INT, "case_s": _NUMBER}


def error_text(e: BaseException) -> str:
    """An exception in one line: its type and the first line of its message (300 chars)."""
    lines = [line for line in str(e).strip().splitlines() if line.strip()]
    return f"{type(e).__name__}: {lines[0][:300] if lines else ''}"


def skipped_record(case: Case, reason: str | None) -> Record:
    """The record of a case not measured: its fields and why."""
    return {**case.key(), SKIPPED: reason}


def case_record(
    case: Case,
    plan: Plan,
    env: BenchEnv,
    stats: dict[str, dict[str, float]],
    *,
    jax_compile_s: float | None,
    jax_first_call_s: float,
    torch_first_call_s: float | None,
    jax_xla_bytes: int | None,
    jax_xla_flop: float | None,
    jax_peak_bytes: int | None,
    torch_bytes: int | None,
    compile_status: str,
    torch_compile_first_s: float | None,
    rel_diff: float | None,
    torch_memory_format: str | None = None,
) -> dict[str, Any]:
    """The JSON record of one measured case (per-image times in ms, sizes in bytes).

    Args:
        case: the case measured.
        plan: the run's settings (classes, repeats, warm-up).
        env: the run's devices; its peaks give the fractions of peak.
        stats: framework (``jax``, ``torch``, ``torch_compile``) -> the statistics of
            :func:`~fcn_jax.bench.timing.per_image_ms`; a framework not run is absent.
        jax_compile_s: JAX's trace, lower and compile, seconds.
        jax_first_call_s: JAX's first call of the compiled executable, seconds.
        torch_first_call_s: torch's first (eager) call, seconds.
        jax_xla_bytes: XLA's buffer plan of the executable, bytes.
        jax_xla_flop: XLA's cost analysis of the executable, FLOPs per call.
        jax_peak_bytes: JAX's device high-water mark so far, bytes.
        torch_bytes: torch's peak allocation over one call, bytes.
        compile_status: ``ok``, ``failed: ...`` or ``skipped: ...`` for ``torch.compile``.
        torch_compile_first_s: ``torch.compile``'s first call, compile included, seconds.
        rel_diff: the forward outputs' max relative difference (None for train).
        torch_memory_format: torch's layout (``contiguous``, ``channels_last``).

    Returns:
        The record: the case's fields and every one of :data:`MEASURED_FIELDS`.
    """
    work = gflop(case.variant, case.height, case.width, case.mode, case.width_mult, plan.n_class)
    peak = env.peaks.get(case.dtype, (None, ""))[0]
    record: dict[str, Any] = {**case.key(), "gflop": work}

    def framework(prefix: str, s: dict[str, float] | None) -> None:
        keys = ("ms", "q1", "q3", "min", "max")
        for k in keys:
            name = f"{prefix}_ms" if k == "ms" else f"{prefix}_ms_{k}"
            record[name] = None if s is None else s[k]
        ms = None if s is None else s["ms"]
        record[f"{prefix}_images_per_s"] = None if ms is None else 1e3 / ms
        tflops = None if ms is None else work / ms  # GFLOP per ms = TFLOP/s
        record[f"{prefix}_tflops"] = tflops
        record[f"{prefix}_peak_fraction"] = None if tflops is None or not peak else tflops / peak

    framework("jax", stats["jax"])
    framework("torch", stats.get("torch"))
    framework("torch_compile", stats.get("torch_compile"))
    jax_ms, torch_ms = record["jax_ms"], record["torch_ms"]
    record["ratio"] = jax_ms / torch_ms if torch_ms else None
    tc_ms = record["torch_compile_ms"]
    record["ratio_compiled"] = jax_ms / tc_ms if tc_ms else None
    record["jax_compile_s"] = jax_compile_s
    record["jax_first_call_s"] = jax_first_call_s
    record["torch_first_call_s"] = torch_first_call_s
    record["torch_compile_s"] = (
        None
        if torch_compile_first_s is None or tc_ms is None
        else max(torch_compile_first_s - tc_ms * case.batch / 1e3, 0.0)
    )
    record["torch_compile_status"] = compile_status
    record["jax_xla_bytes"] = jax_xla_bytes
    record["xla_gflop"] = None if jax_xla_flop is None else jax_xla_flop / case.batch / 1e9
    record["jax_peak_bytes"] = jax_peak_bytes
    record["torch_peak_bytes"] = torch_bytes
    record["max_rel_diff"] = rel_diff
    record["torch_memory_format"] = torch_memory_format
    record["repeats"] = plan.repeats
    record["warmup"] = plan.warmup
    return record


def case_label(record: Record) -> str:
    """``fcn8s/forward/500x500/b1/float32/w1.0``: a record's case, for error messages."""
    r = record
    return (
        f"{r.get('variant')}/{r.get('mode')}/{r.get('height')}x{r.get('width')}/"
        f"b{r.get('batch')}/{r.get('dtype')}/w{r.get('width_mult')}"
    )


def _check_field(path: Path, i: int, name: str, value: Any, types: tuple[type, ...]) -> None:
    # bool is an int to isinstance, but never a valid size or time.
    if isinstance(value, bool) or not isinstance(value, types):
        want = " or ".join(t.__name__ for t in types)
        raise FCNError(
            f"{path} is not bench.py's JSON: record {i} has {name}={value!r}, expected {want}"
        )


def check_record(path: Path, i: int, record: Any) -> Record:
    """Record ``i`` of ``path`` checked against the schema, old records' defaults filled in.

    Case fields are required; other known fields are checked where present (a record may
    hold only some), unknown ones are kept as they are.

    Raises:
        FCNError: not an object, a case field missing, or a field of the wrong type.
    """
    if not isinstance(record, dict):
        raise FCNError(f"{path} is not bench.py's JSON: expected a list of objects")
    out = {**CASE_DEFAULTS, **record}
    missing = [name for name in CASE_FIELDS if name not in out]
    if missing:
        raise FCNError(
            f"{path} is not bench.py's JSON: record {i} lacks {', '.join(missing)} "
            f"(every record names its case: {', '.join(CASE_FIELDS)})"
        )
    for name, types in CASE_FIELDS.items():
        _check_field(path, i, name, out[name], types)
    if out.get(SKIPPED) is not None:
        _check_field(path, i, SKIPPED, out[SKIPPED], _STR)
    for name, types in (MEASURED_FIELDS | SUITE_FIELDS).items():
        if out.get(name) is not None:
            _check_field(path, i, name, out[name], types)
    return out


def read_records(path: str | Path) -> list[Record]:
    """The records of a ``bench.json`` (bench.py's or the accelerator suite's), checked.

    Args:
        path: the JSON file, a list of records.

    Returns:
        The records in file order, each with :data:`CASE_DEFAULTS` filled in where absent.

    Raises:
        FCNError: an unreadable file, not JSON, not a list of objects, or a record that does
            not fit the schema (see :func:`check_record`).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FCNError(f"cannot read bench.py's JSON {path}: {e}") from None
    if not isinstance(data, list):
        raise FCNError(f"{path} is not bench.py's JSON: expected a list of objects")
    return [check_record(path, i, r) for i, r in enumerate(data)]


def run_device(bench_json: str | Path) -> str | None:
    """The device of a bench.py run, from the ``run.json`` it writes beside its JSON, if any."""
    try:
        run = json.loads((Path(bench_json).parent / "run.json").read_text())
        return f"{run['device_kind']} ({run['platform']})"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        return None  # a bench.json on its own still gives its figures, without the device


def write_json(path: Path, data: Any) -> None:
    """Pretty, strict JSON: a NaN or infinity (a diverged output, say) becomes null."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_finite(data), indent=2, allow_nan=False) + "\n")


def _finite(data: Any) -> Any:
    if isinstance(data, float):
        return data if np.isfinite(data) else None
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_finite(v) for v in data]
    return data
