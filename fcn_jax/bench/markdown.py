"""Benchmark records as text: a case in one line, a record's summary, the markdown tables."""

from __future__ import annotations

from typing import Any

from fcn_jax.bench.flops import format_breakdown, layer_costs
from fcn_jax.bench.plan import Case, Plan


def describe(case: Case) -> str:
    """``fcn8s train 256x256 b1 float32 w0.25``."""
    return (
        f"{case.variant} {case.mode} {case.height}x{case.width} b{case.batch} {case.dtype} "
        f"w{case.width_mult:g}"
    )


def summary_line(r: dict[str, Any]) -> str:
    """JAX and torch ms/image, and their ratio."""
    torch_part = "n/a" if r["torch_ms"] is None else f"{r['torch_ms']:.2f}"
    ratio = "n/a" if r["ratio"] is None else f"{r['ratio']:.2f}"
    return f"JAX {r['jax_ms']:.2f} ms/img, torch {torch_part} ms/img, JAX/torch {ratio}"


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def format_table(records: list[dict[str, Any]]) -> str:
    """Markdown table, one row per case; JAX/torch (ms per image, <1: JAX faster) leads."""
    header = (
        "| variant | mode | size | batch | dtype | width | **JAX/torch** | JAX ms/img [IQR] "
        "| torch ms/img [IQR] | torch.compile ms/img | JAX compile s | GFLOP/img "
        "| JAX TFLOP/s (% peak) | torch TFLOP/s (% peak) |"
    )
    rows = [header, _separator(header)]
    for r in records:
        case = (
            f"| {r['variant']} | {r['mode']} | {r['height']}x{r['width']} | {r['batch']} "
            f"| {r['dtype']} | {r['width_mult']:g} "
        )
        if r.get("skipped"):
            rows.append(case + f"| skipped: {r['skipped']} |" + " |" * 7)
            continue

        compiled = (
            _fmt(r["torch_compile_ms"], ".2f")
            if r["torch_compile_ms"] is not None
            else r["torch_compile_status"].split(":")[0]
        )
        rows.append(
            case + f"| **{_fmt(r['ratio'], '.2f')}** | {_timing(r, 'jax')} | {_timing(r, 'torch')} "
            f"| {compiled} | {_fmt(r['jax_compile_s'], '.1f')} | {r['gflop']:.2f} "
            f"| {_rate(r, 'jax')} | {_rate(r, 'torch')} |"
        )
    return "\n".join(rows)


def _timing(r: dict[str, Any], p: str) -> str:
    """``median [q1, q3]`` ms per image of framework ``p``."""
    if r[f"{p}_ms"] is None:
        return "n/a"
    return f"{r[f'{p}_ms']:.2f} [{r[f'{p}_ms_q1']:.2f}, {r[f'{p}_ms_q3']:.2f}]"


def _rate(r: dict[str, Any], p: str) -> str:
    """``TFLOP/s (% of peak)`` of framework ``p``."""
    if r[f"{p}_tflops"] is None:
        return "n/a"
    frac = r[f"{p}_peak_fraction"]
    pct = "" if frac is None else f" ({100 * frac:.1f}%)"
    return f"{r[f'{p}_tflops']:.3f}{pct}"


def _separator(header: str) -> str:
    return "|" + "---|" * (header.count("|") - 1)


def flop_breakdowns(plan: Plan) -> str:
    """Markdown: the per-layer forward MACs of each network and size in the plan."""
    parts = []
    seen = set()
    for c in plan.cases:
        key = (c.variant, c.height, c.width, c.width_mult)
        if key in seen:
            continue
        seen.add(key)
        layers = layer_costs(c.variant, c.height, c.width, c.width_mult, plan.n_class)
        parts.append(
            f"## {c.variant} {c.height}x{c.width}, width {c.width_mult:g}\n\n```\n"
            f"{format_breakdown(layers)}\n```\n"
        )
    return "\n".join(parts)
