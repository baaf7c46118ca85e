"""Data-parallel scaling of the library's train step over 1, 2, 4, ... devices.

Run as its own process (``python -m fcn_jax.bench.dataparallel``, started by
:func:`fcn_jax.bench.scaling.device_scaling`): on a CPU the devices are XLA's fake host devices,
``XLA_FLAGS=--xla_force_host_platform_device_count=N``, which XLA reads once, when jax starts,
so the parent sets it in this process's environment. On a machine with several GPUs or TPU
cores the flag changes nothing and the real devices are used.

Each device count gets the training loop's layout over the first ``n`` devices
(:func:`fcn_jax.train.parallel.data_parallel`: a mesh with one axis ``data``, the train state
replicated, the batch split along it), ``per_device_batch`` images per device (weak scaling),
and the jitted train step of :func:`fcn_jax.train.step.make_steps` compiled for those
shardings. The fake CPU devices share the host's cores, so there their images/s shows that the
mechanics work, not a speed-up.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax

from fcn_jax.bench.jax_side import compile_train, make_jax_train_step
from fcn_jax.bench.network import make_inputs, train_config
from fcn_jax.bench.plan import Case
from fcn_jax.bench.timing import interleave, per_image_ms
from fcn_jax.configs import spec_from_config
from fcn_jax.models import random_variables
from fcn_jax.train.parallel import data_parallel
from fcn_jax.types import PyTree


def measure(
    n: int,
    case: Case,
    variables: PyTree,
    n_class: int,
    warmup: int,
    repeats: int,
    seed: int,
) -> dict[str, Any]:
    """Time the sharded train step on the first ``n`` devices (``case.batch`` per device)."""
    record: dict[str, Any] = {"devices": n, "per_device_batch": case.batch}
    if n > jax.device_count():
        record["skipped"] = f"only {jax.device_count()} devices"
        return record
    dp = data_parallel("sharding", n)  # the training loop's layout over the first n devices
    global_case = dataclasses.replace(case, mode="train", batch=case.batch * n)
    train_step, state = make_jax_train_step(variables, global_case, n_class, seed)
    images, labels = make_inputs(global_case, n_class, seed)
    batch = dp.put_batch({"image": images, "label": labels})
    compiled = compile_train(train_step, dp.put_state(state), batch, case.dtype)
    times = interleave({"jax": compiled.run}, warmup, repeats)["jax"]
    step = per_image_ms(times, 1)  # per call: one optimiser step over the global batch
    record |= {
        "global_batch": global_case.batch,
        "step_ms": step["ms"],
        "step_ms_q1": step["q1"],
        "step_ms_q3": step["q3"],
        "images_per_s": global_case.batch * 1e3 / step["ms"],
        "compile_s": compiled.compile_s,
        "batch_sharding": str(batch["image"].sharding.spec),
        # Where the step's outputs live: proof that the run spanned n devices.
        "devices_used": len(
            compiled.last["state"].params["score_fr"]["kernel"].sharding.device_set
        ),
    }
    return record


def main(argv: Sequence[str] | None = None) -> None:
    """Measure each device count; write the records as a JSON list to ``--out``."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--case", required=True, help="JSON of a Case (batch: per device)")
    p.add_argument("--devices", required=True, help="comma list of device counts")
    p.add_argument("--n-class", type=int, default=21)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, type=Path)
    args = p.parse_args(argv)
    case = Case(**json.loads(args.case))
    counts = [int(n) for n in args.devices.split(",")]
    spec = spec_from_config(train_config(case, args.n_class))
    variables = random_variables(spec, args.seed)  # the same for every device count
    records = [
        measure(n, case, variables, args.n_class, args.warmup, args.repeats, args.seed)
        for n in counts
    ]
    device = jax.devices()[0]
    for r in records:
        r["platform"], r["device_kind"] = device.platform, device.device_kind
    args.out.write_text(json.dumps(records, indent=2) + "\n")


if __name__ == "__main__":
    main()
