"""How cost grows: time and memory against input size and batch, and over devices.

:func:`run_scaling` measures a grid of sizes (128 to 1024 a side by default) and batches, forward
and train, in both frameworks (the cases of :mod:`fcn_jax.bench.schedule`), skips what would not
fit in memory (estimated from the layer geometry, :func:`estimate_bytes`), times the
data-parallel train step on 1, 2, 4 devices (:mod:`fcn_jax.bench.dataparallel`, in a
subprocess) and writes ``scaling.json``, ``scaling.md`` and ``scaling.png`` (ms/image against
megapixels, one line per framework, mode and batch).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fcn_jax.bench.env import BenchEnv, prepare, run_metadata
from fcn_jax.bench.flops import layer_costs, param_count
from fcn_jax.bench.markdown import format_table
from fcn_jax.bench.plan import Case, Plan
from fcn_jax.bench.records import write_json
from fcn_jax.bench.schedule import measure_all

GIB = 2**30
MEMORY_FRACTION = 0.8  # of the memory available when the run starts, left for the benchmark


# Bytes XLA's CPU buffer plan holds per byte of the layers' output maps in a train step (the
# outputs kept for the backward pass, ReLU masks, and the gradients of the maps): 2.6x to 3.5x
# measured with ``memory_analysis`` at widths 0.25 and 1 and 128 to 256 px; rounded up.
TRAIN_ACTIVATION_FACTOR = 4
# Train state held per framework, in copies of the float32 params: params, gradients, momentum
# and the update being written (measured: ~3.6 for the JAX step, state donated).
TRAIN_STATE_COPIES = 4


def estimate_bytes(case: Case, n_class: int = 21, frameworks: int = 2) -> int:
    """Memory a case needs at its peak, estimated from the layer geometry.

    Every framework keeps its float32 state at once (params; in training, with gradients and
    momentum); activations live only while one of them runs. Forward: the two largest maps (a
    layer's input and output). Training: :data:`TRAIN_ACTIVATION_FACTOR` times the sum of all
    the layers' output maps. Within 0.7x to 3x of XLA's own buffer plan (``memory_analysis``)
    in the tests; meant to tell 2 GiB from 40 GiB, not 2 from 3.

    Args:
        case: the case.
        n_class: classes.
        frameworks: how many frameworks (or torch.compile copies) hold their state at once.

    Returns:
        Bytes.
    """
    layers = layer_costs(case.variant, case.height, case.width, case.width_mult, n_class)
    maps = sorted((layer.out_elements for layer in layers), reverse=True)
    act_bytes = 2 if case.dtype == "bfloat16" else 4
    params = param_count(layers)
    if case.mode == "train":
        per_image = TRAIN_ACTIVATION_FACTOR * sum(maps)
        state = TRAIN_STATE_COPIES * params * 4
    else:
        per_image = maps[0] + maps[1]
        state = params * 4
    inputs = case.height * case.width * (3 + 4 + 4)  # uint8 images, float32 copy, int32 labels
    return frameworks * state + case.batch * (per_image * act_bytes + inputs)


def memory_cap(env: BenchEnv, cap_gib: float | None) -> tuple[int, str]:
    """(bytes a case may need, how that number was chosen)."""
    if cap_gib is not None:
        return int(cap_gib * GIB), "--mem-cap-gib"
    if env.platform == "cpu":
        available = _available_host_bytes()
        return int(MEMORY_FRACTION * available), (
            f"{MEMORY_FRACTION:.0%} of the host memory available at start "
            f"({available / GIB:.1f} GiB)"
        )
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    limit = stats.get("bytes_limit")
    if limit is None:
        return 2**62, "device reports no memory limit: nothing skipped"
    return int(
        MEMORY_FRACTION * limit
    ), f"{MEMORY_FRACTION:.0%} of the device's {limit / GIB:.1f} GiB"


def _available_host_bytes() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def device_scaling(
    case: Case,
    devices: Sequence[int],
    plan: Plan,
    timeout_s: float = 1800,
) -> list[dict[str, Any]]:
    """Time the data-parallel train step on each device count, in a fresh process.

    The child gets ``--xla_force_host_platform_device_count=max(devices)`` so that a CPU host
    offers that many (fake) devices; real accelerators are used as they are.

    Args:
        case: variant, size, dtype, width; ``batch`` is per device.
        devices: device counts, e.g. (1, 2, 4).
        plan: warm-up, repeats, classes and seed.
        timeout_s: give up on the child after this long.

    Returns:
        One record per device count (``images_per_s``, ``step_ms``, ``efficiency`` against one
        device, or ``skipped``).
    """
    env = dict(os.environ)
    flag = f"--xla_force_host_platform_device_count={max(devices)}"
    # First: XLA stops reading the flags at a token that does not start with "--".
    env["XLA_FLAGS"] = f"{flag} {env.get('XLA_FLAGS', '')}".strip()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "dp.json"
        cmd = [
            sys.executable,
            "-m",
            "fcn_jax.bench.dataparallel",
            "--case",
            json.dumps(dataclasses.asdict(case)),
            "--devices",
            ",".join(str(n) for n in devices),
            "--n-class",
            str(plan.n_class),
            "--warmup",
            str(plan.warmup),
            "--repeats",
            str(plan.repeats),
            "--seed",
            str(plan.seed),
            "--out",
            str(out),
        ]
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            why = f"child timed out after {timeout_s:g} s"
            return [{"devices": n, "skipped": why} for n in devices]
        if proc.returncode != 0 or not out.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            return [{"devices": n, "skipped": "child failed: " + " | ".join(tail)} for n in devices]
        records = json.loads(out.read_text())
    base = next((r for r in records if r.get("devices") == 1 and "images_per_s" in r), None)
    for r in records:
        if base is not None and "images_per_s" in r:
            r["efficiency"] = r["images_per_s"] / (r["devices"] * base["images_per_s"])
    return records


def format_devices(records: list[dict[str, Any]]) -> str:
    """Markdown table of the data-parallel scaling."""
    rows = [
        "| devices | global batch | step ms [IQR] | images/s | efficiency | compile s |",
        "|---|---|---|---|---|---|",
    ]
    for r in records:
        if "skipped" in r:
            rows.append(f"| {r['devices']} | skipped: {r['skipped']} | | | | |")
            continue
        eff = r.get("efficiency")
        rows.append(
            f"| {r['devices']} | {r['global_batch']} | {r['step_ms']:.1f} "
            f"[{r['step_ms_q1']:.1f}, {r['step_ms_q3']:.1f}] | {r['images_per_s']:.2f} "
            f"| {'n/a' if eff is None else f'{eff:.2f}'} | {r['compile_s']:.1f} |"
        )
    return "\n".join(rows)


def plot_scaling(records: list[dict[str, Any]], path: Path, title: str) -> None:
    """ms/image against megapixels, log-log: one line per framework x mode x batch.

    Colour: framework; line style: mode; marker: batch. Skipped cases leave gaps.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    measured = [r for r in records if not r.get("skipped")]
    colours = {"jax": "tab:blue", "torch": "tab:orange", "torch_compile": "tab:green"}
    names = {"jax": "JAX", "torch": "PyTorch", "torch_compile": "torch.compile"}
    styles = {"forward": "-", "train": "--"}
    markers = "os^Dvx*"
    batches = sorted({r["batch"] for r in measured})
    extra = sorted({(r["variant"], r["width_mult"], r["dtype"]) for r in measured})
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for framework in ("jax", "torch", "torch_compile"):
        for mode in ("forward", "train"):
            for i, batch in enumerate(batches):
                for net in extra:
                    pts = sorted(
                        (r["height"] * r["width"] / 1e6, r[f"{framework}_ms"])
                        for r in measured
                        if r["mode"] == mode
                        and r["batch"] == batch
                        and (r["variant"], r["width_mult"], r["dtype"]) == net
                        and r.get(f"{framework}_ms") is not None
                    )
                    if not pts:
                        continue
                    label = f"{names[framework]} {mode}, batch {batch}"
                    if len(extra) > 1:
                        label += f" ({net[0]} w{net[1]:g} {net[2]})"
                    ax.plot(
                        *zip(*pts, strict=True),
                        styles[mode],
                        color=colours[framework],
                        marker=markers[i % len(markers)],
                        label=label,
                    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):  # plain numbers (0.25, 40) rather than 2.5 x 10^-1
        axis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        axis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.set_xlabel("megapixels per image (H x W / 1e6)")
    ax.set_ylabel("ms per image (median)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    if measured:
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_scaling(
    plan: Plan,
    out_dir: str | Path,
    devices: Sequence[int] = (1, 2, 4),
    cap_gib: float | None = None,
    argv: list[str] | None = None,
) -> dict[str, Any]:
    """The size / batch sweep and the device scaling; writes scaling.{json,md,png}.

    Returns:
        What ``scaling.json`` holds: ``run`` (metadata), ``memory_cap``, ``cases`` (bench
        records, each with ``estimated_bytes``; skipped ones with ``skipped``),
        ``data_parallel`` (one record per device count).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    env = prepare(plan)
    cap, cap_source = memory_cap(env, cap_gib)
    print(
        f"device: {env.device_kind} ({env.platform}); memory cap {cap / GIB:.1f} GiB "
        f"({cap_source})",
        flush=True,
    )

    need = {
        c: estimate_bytes(c, plan.n_class, frameworks=2 + plan.torch_compile) for c in plan.cases
    }

    def skip(case: Case) -> str | None:
        if need[case] > cap:
            return f"estimated {need[case] / GIB:.1f} GiB > cap {cap / GIB:.1f} GiB"
        return None

    partial = out / "scaling.partial.json"  # the cases so far; replaced by scaling.json at the end
    records = measure_all(plan, env, skip, on_record=lambda rs: write_json(partial, rs))
    for r in records:
        r["estimated_bytes"] = need[Case.from_record(r)]
    first = plan.cases[0]
    smallest = min(plan.cases, key=lambda c: (c.height * c.width, c.batch))
    dp_case = Case(
        first.variant,
        "train",
        smallest.height,
        smallest.width,
        smallest.batch,
        first.dtype,
        first.width_mult,
    )
    print(f"data-parallel train step on {list(devices)} devices: {dp_case}", flush=True)
    dp = device_scaling(dp_case, devices, plan)
    result = {
        "run": run_metadata(plan, env, argv),
        "memory_cap": {"bytes": cap, "source": cap_source},
        "cases": records,
        "data_parallel": {"case": dataclasses.asdict(dp_case), "records": dp},
    }
    write_json(out / "scaling.json", result)
    partial.unlink(missing_ok=True)
    tables = f"{format_table(records)}\n\n## Data-parallel train step\n\n{format_devices(dp)}\n"
    (out / "scaling.md").write_text(tables)
    title = (
        f"{', '.join(sorted({c.variant for c in plan.cases}))}, width "
        f"{', '.join(f'{w:g}' for w in sorted({c.width_mult for c in plan.cases}))}, "
        f"on {env.device_kind} ({env.platform})"
    )
    plot_scaling(records, out / "scaling.png", title)
    print("\n" + tables)
    print(f"wrote {out / 'scaling.json'}, {out / 'scaling.md'}, {out / 'scaling.png'}")
    return result
