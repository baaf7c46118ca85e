"""``bench.py --suite accelerator``: prove, then measure, fcn-jax on a GPU or TPU in bounded time.

One command for whoever gets an accelerator for ten minutes. In order:

1. The machine (:mod:`fcn_jax.bench.machine`): devices, memory, driver, versions, precision.
2. Parity on the device before any timing (:mod:`fcn_jax.bench.device_parity`): full-width
   FCN-8s and FCN-32s against torch on the same device and on the CPU, bfloat16 against float32,
   one train step against the CPU's. A failure makes the exit status 1; timing still runs.
3. Timing, JAX against PyTorch in the same process, interleaved (the cases of
   :mod:`fcn_jax.bench.schedule`), at 500x500, most valuable first: FCN-8s at the throughput
   batch (bfloat16 train, bfloat16 forward, float32, tf32), data-parallel scaling over the
   host's devices where there are several, FCN-8s at batch 1, then FCN-32s likewise.
   torch runs eager and ``torch.compile``d; its bfloat16 cases in channels-last layout.
4. The files, rewritten after every check and every case (each write replaces the file
   whole, so a run killed at any moment leaves complete files with everything measured so
   far): ``report.md`` (ratios and MFU first), ``bench.json`` (bench.py's record schema),
   ``parity.json``, ``dataparallel.json`` and ``run.json`` (the machine and settings).

The budget (``--budget-s``) covers the whole run, compiles included: a case whose estimated cost
(the measured cost of the most similar case so far) would overrun it is skipped and says so, and
``torch.compile`` (the slowest compile) is left out of a case when the budget cannot afford it.
At the deadline itself an alarm stops whatever runs and the files are finished.

On a CPU the same command is a dry run: a narrow network, a smaller image and a handful of cases
(one of each kind), so that every code path runs in under two minutes; its times mean nothing.
"""

from __future__ import annotations

import dataclasses
import gc
import time

import jax
import numpy as np

from fcn_jax.bench.budget import BudgetExceeded, deadline_alarm, estimate_s, is_out_of_memory
from fcn_jax.bench.device_parity import ParityCheck, run_parity, verdict
from fcn_jax.bench.env import prepare
from fcn_jax.bench.machine import describe_machine
from fcn_jax.bench.markdown import describe
from fcn_jax.bench.network import Network, build_network
from fcn_jax.bench.plan import Case, Plan
from fcn_jax.bench.records import error_text
from fcn_jax.bench.schedule import measure_case
from fcn_jax.bench.suite_report import format_report, summary
from fcn_jax.bench.suite_state import SuiteOptions, SuiteState
from fcn_jax.bench.torch_side import free_device_memory
from fcn_jax.convert.check import PARITY_TOLERANCE

VARIANTS = ("fcn8s", "fcn32s")
SIZE = 500  # the paper's timing size (PASCAL images are at most 500x500)
DEVICE_COUNTS = (1, 2, 4, 8)
# The order of value: bfloat16 is what accelerators are bought for, then full float32 (the
# parity precision), then TF32; training before inference.
DTYPE_ORDER = ("bfloat16", "float32", "tf32")
MODE_ORDER = ("train", "forward")

# The CPU dry run: a narrow network on a small image, one case of each kind.
DRY_RUN_WIDTH = 0.0625  # conv1_1 has 4 channels, fc6 256
DRY_RUN_SIZE = 192  # the smallest round size where fc6's 7x7 window fits (see plan.quick_cases)
DRY_RUN_BATCH = 2
DRY_RUN_KEEP = (
    # (variant, mode, dtype, batch is the throughput batch)
    ("fcn8s", "train", "bfloat16", True),
    ("fcn8s", "forward", "bfloat16", True),
    ("fcn8s", "forward", "float32", True),
    ("fcn8s", "forward", "tf32", False),
    ("fcn32s", "forward", "float32", False),
)

# A first guess for a torch.compile of a full-width FCN, seconds (replaced by the measured ones).
TORCH_COMPILE_GUESS_S = 60.0
RESERVE_S = 5.0  # kept at the end of the budget for writing the files


def suite_cases(throughput_batch: int, dry_run: bool) -> tuple[Case, ...]:
    """The timing cases, most valuable first (see the module docstring)."""
    width, size = (DRY_RUN_WIDTH, DRY_RUN_SIZE) if dry_run else (1.0, SIZE)
    big = DRY_RUN_BATCH if dry_run else throughput_batch
    cases = []
    for variant in VARIANTS:
        for batch in dict.fromkeys((big, 1)):  # the throughput batch first; once if it is 1
            for dtype in DTYPE_ORDER:
                for mode in MODE_ORDER:
                    case = Case(variant, mode, size, size, batch, dtype, width)
                    keep = (variant, mode, dtype, batch == big)
                    if not dry_run or keep in DRY_RUN_KEEP:
                        cases.append(case)
    return tuple(cases)


def run_suite(options: SuiteOptions) -> int:
    """Run the whole suite (module docstring); returns the exit status (1: a parity failure)."""
    options.out.mkdir(parents=True, exist_ok=True)
    plan = Plan(
        suite_cases(options.throughput_batch, options.dry_run),
        repeats=options.repeats,
        warmup=options.warmup,
        torch_compile=options.torch_compile,
        n_class=options.n_class,
        seed=options.seed,
        channels_last=True,
    )
    started = time.time()
    env = prepare(plan)
    state = SuiteState(options, started, describe_machine(env.torch_device), env, plan)
    print(
        f"accelerator suite{' (dry run)' if options.dry_run else ''}: "
        f"{env.device_kind} ({env.platform}) x {jax.device_count()}; torch on "
        f"{env.torch_device}; budget {options.budget_s:.0f} s; writing {options.out}",
        flush=True,
    )
    state.write()
    try:
        with deadline_alarm(state.left() - RESERVE_S):
            _parity(state)
            _timing(state)
    except BudgetExceeded:
        state.notes.append(
            f"the budget ({options.budget_s:.0f} s) ran out at {state.elapsed:.0f} s: the "
            "work in flight was stopped and everything after it is listed as skipped"
        )
        done = {Case.from_record(r) for r in state.records}
        state.records += [
            {**c.key(), "skipped": "budget: run out"} for c in plan.cases if c not in done
        ]
    state.write()
    print(f"\n{format_report(state)}", flush=True)
    result = verdict(state.checks)
    print(f"parity: {result}; wrote {options.out}/report.md, bench.json, parity.json", flush=True)
    return 1 if result == "fail" else 0


def _parity(state: SuiteState) -> None:
    from fcn_jax.bench.torch_side import torch_precision
    from fcn_jax.data.io import read_image, read_index_png
    from fcn_jax.resources import VOC_SAMPLE_IMAGE, VOC_SAMPLE_LABEL

    o = state.options
    image, label = read_image(VOC_SAMPLE_IMAGE), read_index_png(VOC_SAMPLE_LABEL)
    width = DRY_RUN_WIDTH if o.dry_run else 1.0
    if o.dry_run:  # a 192 px crop with people and background in it
        crop = np.s_[100 : 100 + DRY_RUN_SIZE, 50 : 50 + DRY_RUN_SIZE]
        image, label = image[crop], label[crop]

    def on_check(check: ParityCheck) -> None:
        state.checks.append(check)
        state.write()

    try:
        with torch_precision("float32"):
            run_parity(
                VARIANTS,
                width,
                state.env.torch_device,
                image,
                label,
                o.n_class,
                o.seed,
                on_check=on_check,
                train_variants=VARIANTS[:1] if o.dry_run else None,
            )
    except BudgetExceeded:
        raise
    except Exception as e:  # a crash is a failed check, not a lost run: timing still runs
        state.checks.append(
            ParityCheck(
                "all",
                width,
                "crashed",
                f"jax {state.env.platform}",
                "torch",
                "logits",
                None,
                None,
                None,
                PARITY_TOLERANCE,
                note=error_text(e),
            )
        )
        print(f"parity crashed: {error_text(e)}", flush=True)
        free_device_memory()
    state.write()


def _timing(state: SuiteState) -> None:
    o, plan, env = state.options, state.plan, state.env
    fitted: dict[tuple[str, str, str], int] = {}  # the largest batch that fitted, per kind
    nets: dict[str, Network] = {}
    big = plan.cases[0].batch
    scaling_pending = True
    for case in plan.cases:
        # Data-parallel scaling right after FCN-8s's throughput cases.
        if scaling_pending and (case.variant, case.batch) != (VARIANTS[0], big):
            _scaling(state, nets.get(VARIANTS[0]))
            scaling_pending = False
        if case.variant not in nets:
            nets.clear()  # one full-width network on the device at a time
            gc.collect()
            nets[case.variant] = build_network(
                case.variant, case.width_mult, o.n_class, o.seed, env.torch_device
            )
        _measure(state, case, nets[case.variant], fitted)
        state.write()
    if scaling_pending:
        _scaling(state, nets.get(VARIANTS[0]))


def _measure(
    state: SuiteState, case: Case, net: Network, fitted: dict[tuple[str, str, str], int]
) -> None:
    """Measure one case (smaller batches while it does not fit); append its record."""
    kind = (case.variant, case.mode, case.dtype)
    run = case
    if case.batch > 1 and kind in fitted and fitted[kind] < case.batch:
        run = dataclasses.replace(case, batch=fitted[kind])
    while True:
        need = estimate_s(run, state.durations)
        if need > state.left() - RESERVE_S:
            state.records.append(
                {
                    **case.key(),
                    "skipped": f"budget: ~{need:.0f} s needed, {state.left():.0f} s left",
                }
            )
            print(f"{describe(case)}: skipped (budget)", flush=True)
            return
        compile_skip = None
        compile_need = state.compile_s.get(case.mode, TORCH_COMPILE_GUESS_S)
        if need + compile_need > state.left() - RESERVE_S:
            compile_skip = f"budget: ~{compile_need:.0f} s for torch.compile not left"
        start = time.perf_counter()
        try:
            record = measure_case(run, net, state.plan, state.env, compile_skip)
        except BudgetExceeded:
            raise
        except Exception as e:
            free_device_memory()
            if is_out_of_memory(e) and run.batch > 1:
                fitted[kind] = run.batch // 2
                state.notes.append(
                    f"{describe(run)} did not fit: retried at batch {run.batch // 2}"
                )
                run = dataclasses.replace(run, batch=run.batch // 2)
                continue
            state.records.append({**case.key(), "skipped": f"failed: {error_text(e)}"})
            print(f"{describe(case)}: failed: {error_text(e)}", flush=True)
            return
        seconds = time.perf_counter() - start
        break
    state.durations[run] = seconds
    if record.get("torch_compile_s") is not None:
        state.compile_s[case.mode] = record["torch_compile_s"]
    record["batch_requested"] = case.batch
    record["case_s"] = seconds
    state.records.append(record)
    free_device_memory()
    print(f"{describe(run)}: {summary(record)} ({seconds:.0f} s)", flush=True)


def _scaling(state: SuiteState, net: Network | None) -> None:
    """The library's data-parallel train step over 1, 2, 4, 8 of the host's devices."""
    count = jax.device_count()
    if count < 2:
        state.scaling_note = f"one device ({state.env.device_kind}): no data-parallel run"
        return
    if net is None:
        state.scaling_note = "no network was built"
        return
    from fcn_jax.bench.dataparallel import measure

    o = state.options
    per_device = DRY_RUN_BATCH if o.dry_run else max(o.throughput_batch // 2, 1)
    size = DRY_RUN_SIZE if o.dry_run else SIZE
    case = Case(net.variant, "train", size, size, per_device, "bfloat16", net.width_mult)
    for n in (n for n in DEVICE_COUNTS if n <= count):
        need = estimate_s(case, state.durations)
        if need > state.left() - RESERVE_S:
            state.scaling.append({"devices": n, "skipped": f"budget: ~{need:.0f} s needed"})
            continue
        try:
            record = measure(n, case, net.variables, o.n_class, 1, min(o.repeats, 5), o.seed)
        except BudgetExceeded:
            raise
        except Exception as e:
            record = {"devices": n, "skipped": f"failed: {error_text(e)}"}
        base = next(
            (r for r in state.scaling if r.get("devices") == 1 and "images_per_s" in r), None
        )
        if base and "images_per_s" in record:
            record["efficiency"] = record["images_per_s"] / (n * base["images_per_s"])
        state.scaling.append(record)
        free_device_memory()
        state.write()
        print(f"data-parallel {n} devices: {record}", flush=True)
