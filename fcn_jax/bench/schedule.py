"""Measuring cases: both frameworks' runners of a case, interleaved, into a record.

For each case, after compilation, one first call and ``warmup`` more untimed calls of each
runner, the timed calls alternate between the frameworks (JAX, torch, torch.compile, JAX, ...),
so drift in the machine's load (other processes, clocks, caches) hits all of them alike.
Reported per image: the median, the quartiles and the extremes
(:func:`fcn_jax.bench.records.case_record`).

:func:`measure_all` builds each network once for its cases, and records a case that fails (out
of memory, a backend's error) as skipped with the error, then goes on.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator

import numpy as np

from fcn_jax.bench.env import BenchEnv
from fcn_jax.bench.jax_side import jax_forward, jax_peak_bytes, jax_train
from fcn_jax.bench.markdown import describe, summary_line
from fcn_jax.bench.network import Network, build_network, make_inputs
from fcn_jax.bench.plan import Case, Plan
from fcn_jax.bench.records import Record, case_record, error_text, skipped_record
from fcn_jax.bench.timing import Compiled, first_call, interleave, per_image_ms
from fcn_jax.bench.torch_side import (
    free_device_memory,
    torch_forward,
    torch_memory_format,
    torch_peak_bytes,
    torch_precision,
    torch_train,
    try_torch_compile,
)


def measure_case(
    case: Case, net: Network, plan: Plan, env: BenchEnv, compile_skip: str | None = None
) -> Record:
    """Run one case in both frameworks and return its JSON record (see the module docstring).

    Args:
        case: what to measure.
        net: its network in both frameworks.
        plan: the run's settings.
        env: from :func:`~fcn_jax.bench.env.prepare`.
        compile_skip: a reason not to time ``torch.compile`` in this case (a time budget,
            say), recorded as its status; None to follow ``plan.torch_compile``.
    """
    with torch_precision(case.dtype):
        return _measure_case(case, net, plan, env, compile_skip)


def _measure_case(
    case: Case, net: Network, plan: Plan, env: BenchEnv, compile_skip: str | None
) -> Record:
    images, labels = make_inputs(case, net.n_class, plan.seed)
    runners: dict[str, Compiled] = {}
    options = dict(plan.jax_compiler_options)
    if case.mode == "forward":
        runners["jax"] = jax_forward(net, case, images, options)
    else:
        runners["jax"] = jax_train(net, case, images, labels, plan.seed, options)
    compile_status, compile_first_s = "skipped: --notorch-compile", None
    memory_format = torch_memory_format(plan, case)
    if env.torch_device is None:
        compile_status = f"skipped: {env.torch_note}"
    else:
        dev = env.torch_device
        if case.mode == "forward":
            runners["torch"] = torch_forward(net, case, images, dev, False, memory_format)
        else:
            runners["torch"] = torch_train(net, case, images, labels, dev, False, memory_format)
        if plan.torch_compile and compile_skip is None:
            compile_status, compile_first_s, compiled = try_torch_compile(
                case, net, images, labels, dev, memory_format
            )
            if compiled is not None:
                runners["torch_compile"] = compiled
        elif compile_skip is not None:
            compile_status = f"skipped: {compile_skip}"
        elif plan.quick:
            compile_status = "skipped: --quick"
    # One untimed first call each (JAX's runs the freshly compiled executable; torch's builds
    # its kernels / cuDNN plans; torch.compile's happened while compiling).
    jax_first_s = first_call(runners["jax"].run)
    torch_first_s = first_call(runners["torch"].run) if "torch" in runners else None
    torch_bytes = (
        torch_peak_bytes(env.torch_device, runners["torch"].run) if "torch" in runners else None
    )
    times = interleave({k: r.run for k, r in runners.items()}, plan.warmup, plan.repeats)
    stats = {k: per_image_ms(v, case.batch) for k, v in times.items()}
    return case_record(
        case,
        plan,
        env,
        stats,
        jax_compile_s=runners["jax"].compile_s,
        jax_first_call_s=jax_first_s,
        torch_first_call_s=torch_first_s,
        jax_xla_bytes=runners["jax"].xla_bytes,
        jax_xla_flop=runners["jax"].xla_flop,
        jax_peak_bytes=jax_peak_bytes(),
        torch_bytes=torch_bytes,
        compile_status=compile_status,
        torch_compile_first_s=compile_first_s,
        rel_diff=_relative_difference(runners) if case.mode == "forward" else None,
        torch_memory_format=memory_format if "torch" in runners else None,
    )


def _relative_difference(runners: dict[str, Compiled]) -> float | None:
    """The last forward outputs' max |JAX - torch| / max |torch|: proof of the same weights."""
    if "torch" not in runners:
        return None
    ours = np.asarray(runners["jax"].last["out"], np.float32)
    theirs = runners["torch"].last["out"].float().cpu().numpy().transpose(0, 2, 3, 1)
    return float(np.abs(ours - theirs).max() / max(np.abs(theirs).max(), 1e-30))


def networks(plan: Plan) -> Iterator[tuple[tuple[str, float], list[Case]]]:
    """The plan's cases grouped by network (variant, width), in the plan's order."""
    groups: dict[tuple[str, float], list[Case]] = {}
    for case in plan.cases:
        groups.setdefault((case.variant, case.width_mult), []).append(case)
    yield from groups.items()


def measure_all(
    plan: Plan,
    env: BenchEnv,
    skip: Callable[[Case], str | None] | None = None,
    on_record: Callable[[list[Record]], None] | None = None,
) -> list[Record]:
    """Measure every case of ``plan``, building each network once; prints a line per case.

    A case that raises (out of memory, say) is recorded as skipped with the error and the run
    goes on.

    Args:
        plan: the cases and settings.
        env: from :func:`~fcn_jax.bench.env.prepare`.
        skip: returns a reason to skip a case (recorded as ``{**case, "skipped": reason}``).
        on_record: called with the records so far after each case (to save them as they come:
            a process the OS kills for memory keeps what it measured).
    """
    records = []
    for (variant, width_mult), cases in networks(plan):
        reasons = {c: skip(c) if skip else None for c in cases}
        net = None
        if not all(reasons.values()):  # some case of this network runs
            net = build_network(variant, width_mult, plan.n_class, plan.seed, env.torch_device)
        for case in cases:
            reason = reasons[case]
            if reason or net is None:
                records.append(skipped_record(case, reason))
                print(f"{describe(case)}: skipped ({reason})", flush=True)
                continue
            try:
                record = measure_case(case, net, plan, env)
            except Exception as e:  # out of memory, a backend's error: record it, go on
                reason = f"failed: {error_text(e)}"
                records.append(skipped_record(case, reason))
                print(f"{describe(case)}: {reason}", flush=True)
                free_device_memory()
                continue
            records.append(record)
            print(f"{describe(case)}: {summary_line(record)}", flush=True)
            if on_record is not None:
                on_record(records)
        del net
        gc.collect()
    return records
