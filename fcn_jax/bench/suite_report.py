"""The accelerator suite's ``report.md``: ratios and MFU first, then everything else."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from fcn_jax.bench.device_parity import format_checks, verdict
from fcn_jax.bench.machine import machine_lines
from fcn_jax.bench.markdown import describe
from fcn_jax.bench.plan import Case
from fcn_jax.bench.scaling import format_devices

if TYPE_CHECKING:  # the state imports this module to write its report
    from fcn_jax.bench.suite_state import SuiteState

PRECISION_SETTINGS = {
    "float32": "JAX default_matmul_precision 'highest'; torch allow_tf32 off (matmul and cuDNN)",
    "tf32": "JAX default precision (TF32 on NVIDIA Ampere+, one bf16 pass on TPU); torch "
    "allow_tf32 on (matmul and cuDNN)",
    "bfloat16": "float32 params, bfloat16 compute (Flax dtype; torch.autocast, channels_last), "
    "float32 loss",
}


def summary(r: dict[str, Any]) -> str:
    """One measured record in a line: JAX, torch and torch.compile ms/image and the ratios."""
    parts = [f"JAX {r['jax_ms']:.2f} ms/img"]
    if r["torch_ms"] is not None:
        parts.append(f"torch {r['torch_ms']:.2f} ms/img (JAX/torch {r['ratio']:.2f})")
    if r["torch_compile_ms"] is not None:
        parts.append(
            f"torch.compile {r['torch_compile_ms']:.2f} (JAX/compiled {r['ratio_compiled']:.2f})"
        )
    return ", ".join(parts)


def _f(value: float | None, spec: str, scale: float = 1.0, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value * scale:{spec}}{suffix}"


def speed_table(records: list[dict[str, Any]]) -> str:
    """Ratios and MFU first (<1: JAX faster), then throughput, latency, compile and memory."""
    header = (
        "| variant | mode | batch | dtype | **JAX/torch** | **JAX/torch.compile** | JAX MFU "
        "| torch MFU | torch.compile MFU | JAX img/s | torch img/s | torch.compile img/s "
        "| JAX ms/img [IQR] | torch ms/img [IQR] | JAX compile s | torch.compile s "
        "| JAX peak GiB | torch peak GiB |"
    )
    rows = [header, "|" + "---|" * (header.count("|") - 1)]
    gib = 1 / 2**30
    for r in records:
        if r.get("skipped"):
            continue
        iqr = {
            p: "n/a"
            if r[f"{p}_ms"] is None
            else f"{r[f'{p}_ms']:.2f} [{r[f'{p}_ms_q1']:.2f}, {r[f'{p}_ms_q3']:.2f}]"
            for p in ("jax", "torch")
        }
        tc = r["torch_compile_status"]
        tc_ratio = _f(r["ratio_compiled"], ".2f") if r["ratio_compiled"] else tc.split(":")[0]
        rows.append(
            f"| {r['variant']} | {r['mode']} | {r['batch']} | {r['dtype']} "
            f"| **{_f(r['ratio'], '.2f')}** | **{tc_ratio}** "
            f"| {_f(r['jax_peak_fraction'], '.1f', 100, '%')} "
            f"| {_f(r['torch_peak_fraction'], '.1f', 100, '%')} "
            f"| {_f(r['torch_compile_peak_fraction'], '.1f', 100, '%')} "
            f"| {_f(r['jax_images_per_s'], '.1f')} | {_f(r['torch_images_per_s'], '.1f')} "
            f"| {_f(r['torch_compile_images_per_s'], '.1f')} | {iqr['jax']} | {iqr['torch']} "
            f"| {_f(r['jax_compile_s'], '.1f')} | {_f(r['torch_compile_s'], '.1f')} "
            f"| {_f(r['jax_peak_bytes'], '.2f', gib)} | {_f(r['torch_peak_bytes'], '.2f', gib)} |"
        )
    return "\n".join(rows)


def format_report(state: SuiteState) -> str:
    """``report.md``: verdict, machine, parity, speed, scaling, what was skipped, peaks."""
    o, env = state.options, state.env
    measured = [r for r in state.records if not r.get("skipped")]
    skipped = [r for r in state.records if r.get("skipped")]
    pending = len(state.plan.cases) - len(state.records)
    title = "dry run on a CPU (times mean nothing)" if o.dry_run else env.device_kind
    lines = [
        f"# fcn-jax accelerator suite: {title}",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M %Z', time.localtime(state.started))}, commit "
        f"`{(state.commit or 'unknown')[:12]}`, `{o.command}`",
        "",
        f"- **parity: {verdict(state.checks).upper()}** ({len(state.checks)} checks)",
        f"- timing: {len(measured)} cases measured, {len(skipped)} skipped, {pending} pending; "
        f"{state.elapsed:.0f} s of the {o.budget_s:.0f} s budget used",
    ]
    lines += [f"- note: {n}" for n in state.notes]
    lines += ["", "## Machine", "", *machine_lines(state.machine), ""]
    lines += ["Precision:", ""]
    lines += [f"- {k}: {v}" for k, v in PRECISION_SETTINGS.items()]
    lines += ["", "## Parity on the device (before timing)", ""]
    lines.append(format_checks(state.checks) if state.checks else "(not yet run)")
    size = f"{state.plan.cases[0].height}x{state.plan.cases[0].width}" if state.plan.cases else ""
    lines += [
        "",
        f"## Speed: JAX against PyTorch, {size}, same device, interleaved",
        "",
        "Ratios are JAX time / torch time (below 1: JAX faster); MFU is achieved TFLOP/s (the "
        "analytic FLOP model, fcn_jax/bench/flops.py) over the device's dense peak for the "
        "case's dtype. Medians of the timed calls after warm-up; compile times apart.",
        "",
        speed_table(state.records) if measured else "(no case measured yet)",
        "",
        "## Data-parallel scaling (train step, bfloat16)",
        "",
        format_devices(state.scaling) if state.scaling else (state.scaling_note or "(not yet run)"),
    ]
    if skipped:
        lines += ["", "## Skipped", ""]
        lines += [f"- {describe(Case.from_record(r))}: {r['skipped']}" for r in skipped]
    lines += ["", "## Peaks used for MFU", ""]
    lines += [
        f"- {d}: {_f(p, '.1f', suffix=' TFLOP/s')} ({s})" for d, (p, s) in sorted(env.peaks.items())
    ]
    return "\n".join(lines) + "\n"
