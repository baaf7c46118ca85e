"""``bench.py``: JAX against PyTorch, same device, same weights, same inputs, interleaved repeats.

One run, :func:`run_bench`, put together from one module per job:

- :mod:`fcn_jax.bench.env`: devices, precision settings, peaks, the run's metadata;
- :mod:`fcn_jax.bench.network`: one network in both frameworks, its inputs, its recipe;
- :mod:`fcn_jax.bench.jax_side` and :mod:`fcn_jax.bench.torch_side`: each framework's runners;
- :mod:`fcn_jax.bench.timing`: precision and the interleaved timer (shared with ``paper/``);
- :mod:`fcn_jax.bench.schedule`: cases measured in turn, failures recorded, the run goes on;
- :mod:`fcn_jax.bench.records`: the JSON schema, its writer and reader;
- :mod:`fcn_jax.bench.markdown`: the tables.
"""

from __future__ import annotations

from pathlib import Path

from fcn_jax.bench.env import prepare, run_metadata
from fcn_jax.bench.markdown import flop_breakdowns, format_table
from fcn_jax.bench.plan import Plan
from fcn_jax.bench.records import Record, write_json
from fcn_jax.bench.schedule import measure_all


def run_bench(plan: Plan, out_dir: str | Path, argv: list[str] | None = None) -> list[Record]:
    """Measure every case, print the table and write it under ``out_dir``.

    Files: ``bench.json`` (a list of case records), ``bench.md`` (the table), ``run.json``
    (device, versions, threads, precision) and ``flops.md`` (per-layer FLOP breakdowns).

    Returns:
        The case records.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    env = prepare(plan)
    print(f"device: {env.device_kind} ({env.platform}); torch on {env.torch_device}", flush=True)
    records = measure_all(plan, env)
    table = format_table(records)
    write_json(out / "bench.json", records)
    (out / "bench.md").write_text(table + "\n")
    (out / "flops.md").write_text(flop_breakdowns(plan))
    write_json(out / "run.json", run_metadata(plan, env, argv))
    print("\n" + table)
    print(f"\nwrote bench.json, bench.md, run.json and flops.md to {out}")
    return records
