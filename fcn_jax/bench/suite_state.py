"""The accelerator suite's options, its state so far, and the files written from it.

Every file is rewritten whole after every check and every case (written beside, then renamed):
a run killed at any moment leaves complete files with everything measured so far.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import jax

from fcn_jax.bench.device_parity import (
    BF16_TOLERANCE,
    PARITY_LEARNING_RATE,
    TRAIN_TOLERANCE,
    ParityCheck,
    verdict,
)
from fcn_jax.bench.env import BenchEnv, git_commit
from fcn_jax.bench.plan import Case, Plan
from fcn_jax.bench.records import write_json
from fcn_jax.bench.suite_report import PRECISION_SETTINGS, format_report
from fcn_jax.convert.check import PARITY_TOLERANCE

THROUGHPUT_BATCH = 16
DEFAULT_BUDGET_S = 480.0


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


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _atomic_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write_json(tmp, data)
    os.replace(tmp, path)
