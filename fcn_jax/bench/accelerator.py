"""``bench.py --suite accelerator``: prove, then measure, fcn-jax on a GPU or TPU in bounded time.

One command for whoever gets an accelerator for ten minutes. In order:

1. The machine (:mod:`fcn_jax.bench.machine`): devices, memory, driver, versions, precision.
2. Parity on the device before any timing (:mod:`fcn_jax.bench.device_parity`): full-width
   FCN-8s and FCN-32s against torch on the same device and on the CPU, bfloat16 against float32,
   one train step against the CPU's. A failure makes the exit status 1; timing still runs.
3. Timing, JAX against PyTorch in the same process, interleaved (the cases of
   :mod:`fcn_jax.bench.harness`), at 500x500, most valuable first: FCN-8s at the throughput
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
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jax
import numpy as np

from fcn_jax.bench.device_parity import (
    BF16_TOLERANCE,
    PARITY_LEARNING_RATE,
    TRAIN_TOLERANCE,
    ParityCheck,
    format_checks,
    run_parity,
    verdict,
)
from fcn_jax.bench.env import BenchEnv, git_commit, prepare
from fcn_jax.bench.machine import describe_machine, machine_lines
from fcn_jax.bench.markdown import describe
from fcn_jax.bench.network import Network, build_network
from fcn_jax.bench.plan import Case, Plan
from fcn_jax.bench.records import error_text, write_json
from fcn_jax.bench.scaling import format_devices
from fcn_jax.bench.schedule import measure_case
from fcn_jax.bench.torch_side import free_device_memory
from fcn_jax.convert.check import PARITY_TOLERANCE

VARIANTS = ("fcn8s", "fcn32s")
SIZE = 500  # the paper's timing size (PASCAL images are at most 500x500)
THROUGHPUT_BATCH = 16
DEFAULT_BUDGET_S = 480.0
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


class BudgetExceeded(Exception):
    """Raised by the alarm at the budget's deadline."""


@dataclasses.dataclass(frozen=True)
class SuiteOptions:
    """What one run of the suite does.

    Attributes:
        out: output folder.
        budget_s: seconds for the whole run, compiles included.
        throughput_batch: the batch of the throughput cases (halved while it does not fit).
        dry_run: the CPU rehearsal (narrow network, small image, few cases).
        torch_compile: also time ``torch.compile`` where the budget allows.
        repeats: timed calls per framework and case.
        warmup: untimed calls after the first.
        seed: seed of the weights and inputs.
        n_class: classes (21: PASCAL VOC).
        command: the command line, for the report.
    """

    out: Path
    budget_s: float = DEFAULT_BUDGET_S
    throughput_batch: int = THROUGHPUT_BATCH
    dry_run: bool = False
    torch_compile: bool = True
    repeats: int = 10
    warmup: int = 2
    seed: int = 0
    n_class: int = 21
    command: str = ""

    @classmethod
    def create(cls, out: Path, dry_run: bool, **given: Any) -> SuiteOptions:
        """The options with the defaults of a real run or of a dry run for what is not given.

        A dry run times each case twice without warm-up and leaves ``torch.compile`` out
        (minutes of C++ compiles on a CPU) unless asked for.
        """
        if dry_run:
            given = {"repeats": 2, "warmup": 0, "torch_compile": False} | given
        return cls(out, dry_run=dry_run, **given)


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


@dataclasses.dataclass
class SuiteState:
    """Everything measured so far; :meth:`write` turns it into the files.

    Attributes:
        options: the run's options.
        started: ``time.time()`` at the start.
        machine: :func:`~fcn_jax.bench.machine.describe_machine`'s description.
        env: the benchmark environment (devices, peaks).
        plan: the timing plan (cases in order).
        checks: parity checks done.
        records: one bench.json record per case done (or skipped).
        scaling: data-parallel records.
        scaling_note: why there is no scaling run, if there is none.
        durations: wall seconds each measured case took, compiles included.
        compile_s: torch.compile's measured compile seconds, per mode.
        notes: things the reader should know (a smaller batch, the alarm).
        commit: the checkout's git commit, read once (the files are rewritten after every case).
    """

    options: SuiteOptions
    started: float
    machine: dict[str, Any]
    env: BenchEnv
    plan: Plan
    checks: list[ParityCheck] = dataclasses.field(default_factory=list)
    records: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    scaling: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    scaling_note: str = ""
    durations: dict[Case, float] = dataclasses.field(default_factory=dict)
    compile_s: dict[str, float] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)
    commit: str | None = dataclasses.field(default_factory=git_commit)

    @property
    def elapsed(self) -> float:
        """Seconds since the start."""
        return time.time() - self.started

    def left(self) -> float:
        """Seconds of the budget left (negative once over)."""
        return self.options.budget_s - self.elapsed

    def write(self) -> None:
        """Rewrite every file from what is known now (each replaced whole, never half-written)."""
        out = self.options.out
        _atomic_json(out / "bench.json", self.records)
        _atomic_json(out / "parity.json", self.parity_json())
        _atomic_json(out / "dataparallel.json", self.scaling)
        _atomic_json(out / "run.json", self.run_json())
        _atomic_text(out / "report.md", format_report(self))

    def parity_json(self) -> dict[str, Any]:
        """``parity.json``: the verdict, the tolerances and every check."""
        return {
            "verdict": verdict(self.checks),
            "tolerances": {
                "float32_rel": PARITY_TOLERANCE,
                "bfloat16_rel": BF16_TOLERANCE,
                "train_step_rel_to_update": TRAIN_TOLERANCE,
            },
            "train_step_learning_rate": PARITY_LEARNING_RATE,
            "dry_run": self.options.dry_run,
            "checks": [dataclasses.asdict(c) for c in self.checks],
        }

    def run_json(self) -> dict[str, Any]:
        """``run.json``: the machine, the settings and the run's progress."""
        o = self.options
        return {
            "suite": "accelerator",
            "command": o.command,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.started)),
            "git_commit": self.commit,
            "dry_run": o.dry_run,
            "budget_s": o.budget_s,
            "elapsed_s": self.elapsed,
            # As bench.py's run.json has them (reproduce.py --timing-json names the device).
            "platform": self.env.platform,
            "device_kind": self.env.device_kind,
            "device_count": jax.device_count(),
            "machine": self.machine,
            "torch_device": self.env.torch_device,
            "torch_note": self.env.torch_note,
            "precision": PRECISION_SETTINGS,
            "peaks_tflops": {d: {"tflops": p, "source": s} for d, (p, s) in self.env.peaks.items()},
            "plan": {
                "cases": [c.key() for c in self.plan.cases],
                "repeats": self.plan.repeats,
                "warmup": self.plan.warmup,
                "torch_compile": self.plan.torch_compile,
                "throughput_batch": o.throughput_batch,
                "seed": o.seed,
                "n_class": o.n_class,
            },
            "notes": self.notes,
        }


PRECISION_SETTINGS = {
    "float32": "JAX default_matmul_precision 'highest'; torch allow_tf32 off (matmul and cuDNN)",
    "tf32": "JAX default precision (TF32 on NVIDIA Ampere+, one bf16 pass on TPU); torch "
    "allow_tf32 on (matmul and cuDNN)",
    "bfloat16": "float32 params, bfloat16 compute (Flax dtype; torch.autocast, channels_last), "
    "float32 loss",
}


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _atomic_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write_json(tmp, data)
    os.replace(tmp, path)


@contextmanager
def deadline_alarm(seconds: float) -> Iterator[None]:
    """Raise :class:`BudgetExceeded` in the main thread ``seconds`` from now (Unix only).

    Python runs the handler between bytecodes: a compile or kernel in flight finishes first.
    """
    if not hasattr(signal, "SIGALRM") or seconds <= 0:
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise BudgetExceeded

    previous = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def estimate_s(case: Case, durations: dict[Case, float]) -> float:
    """Expected cost of a case: the measured cost of the most similar one done so far.

    Most similar: same variant, mode and batch, else same mode and batch, else same mode (the
    dominant costs are the compile, set by the mode, and the timed calls, set by the batch);
    0 when nothing comparable has run.
    """
    keys = (
        lambda c: (c.variant, c.mode, c.batch),
        lambda c: (c.mode, c.batch),
        lambda c: c.mode,
    )
    for key in keys:
        similar = [s for c, s in durations.items() if key(c) == key(case)]
        if similar:
            return max(similar)
    return 0.0


def is_out_of_memory(e: BaseException) -> bool:
    """An allocation failure of either framework (XLA's RESOURCE_EXHAUSTED, torch's OOM)."""
    text = f"{type(e).__name__} {e}".lower()
    return "resource_exhausted" in text or "out of memory" in text or "outofmemory" in text


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
    print(f"{describe(run)}: {_summary(record)} ({seconds:.0f} s)", flush=True)


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
            record = measure(n, case, net.params, o.n_class, 1, min(o.repeats, 5), o.seed)
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


def _summary(r: dict[str, Any]) -> str:
    parts = [f"JAX {r['jax_ms']:.2f} ms/img"]
    if r["torch_ms"] is not None:
        parts.append(f"torch {r['torch_ms']:.2f} ms/img (JAX/torch {r['ratio']:.2f})")
    if r["torch_compile_ms"] is not None:
        parts.append(
            f"torch.compile {r['torch_compile_ms']:.2f} (JAX/compiled {r['ratio_compiled']:.2f})"
        )
    return ", ".join(parts)


# --- the report ------------------------------------------------------------------------------


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
