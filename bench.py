#!/usr/bin/env python
r"""Time the FCNs in JAX against the project's PyTorch FCN, same device, weights and inputs.

    python bench.py [--variants fcn32s,fcn16s,fcn8s] [--sizes 256,384,500,512] [--batch 1,8]
        [--dtype float32,bfloat16] [--mode forward,train] [--width 1.0] [--quick] [--out DIR]
    python bench.py --scaling [--sizes 128,256,384,512,768,1024] [--batch 1,4] [--devices 1,2,4]
    python bench.py --suite accelerator [--budget-s 480] [--throughput-batch 16] [--out DIR]

Writes DIR/bench.json (a list, one record per case: ms per image of both frameworks and their
ratio jax_ms / torch_ms, compile times, GFLOP, TFLOP/s and fraction of peak, memory),
DIR/bench.md (the table) and DIR/run.json (device, versions, threads, precision settings).
--scaling writes DIR/scaling.json, DIR/scaling.md and DIR/scaling.png instead.
--suite accelerator proves and measures fcn-jax on a GPU or TPU in --budget-s seconds: parity on
the device first (exit status 1 if it fails), then FCN-8s and FCN-32s at 500x500 in float32, tf32
and bfloat16, forward and train, batch 1 and the throughput batch, JAX against torch eager and
torch.compile, MFU, memory, data-parallel scaling; it writes DIR/report.md, DIR/bench.json,
DIR/parity.json as it goes (see docs/benchmarks.md). On a CPU it is a dry run (narrow network,
a few cases, under 2 minutes) that rehearses every step. --quick is a
small plan for a CPU (under 2 minutes on an idle 2-core machine, more under load; --help
lists its cases). Exit codes: 0 ok; 2 bad input.

Both frameworks compute float32 in full float32 (JAX: default_matmul_precision "highest";
torch: TF32 off); bfloat16 is float32 params with bfloat16 convolutions in both.

On an NVIDIA GPU (CUDA 12), JAX and torch share the GPU in one process (this script turns off
JAX's preallocation of 75% of the GPU's memory):

    python3 -m venv .venv-gpu && . .venv-gpu/bin/activate
    pip install torch                     # the Linux x86-64 wheel on PyPI is a CUDA build
    pip install -e '.[cuda12,bench]'
    python -c "import jax, torch; print(jax.devices(), torch.cuda.is_available())"
    python bench.py --sizes 256,384,500,512 --batch 1,8 --dtype float32,bfloat16 \
        --out outputs/bench_gpu
    python bench.py --scaling --dtype float32,bfloat16 --out outputs/scaling_gpu

With several GPUs, --scaling's data-parallel run uses 1, 2, 4 of them. On a TPU VM
(pip install -e '.[bench]' 'jax[tpu]') only JAX runs: torch has no TPU backend here, so the
torch columns and the ratio are null.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

# JAX would otherwise reserve 75% of a GPU's memory when it starts, leaving torch the rest.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

from absl import flags

from fcn_jax.bench.plan import quick_summary
from fcn_jax.cli import help_requested
from fcn_jax.errors import FCNError, run_cli

flags.DEFINE_list("variants", None, "FCN variants (default fcn32s,fcn16s,fcn8s; --scaling: fcn8s)")
flags.DEFINE_list("sizes", None, "input sizes, S or HxW (default 256,384,500,512)")
flags.DEFINE_list("batch", None, "batch sizes (default 1; --scaling: 1,4)")
flags.DEFINE_list("dtype", None, "float32 and/or bfloat16 (default float32)")
flags.DEFINE_list("mode", None, "forward and/or train (default both)")
flags.DEFINE_list("width", None, "channel width multipliers, multiples of 1/64 (default 1.0)")
flags.DEFINE_integer("repeats", None, "timed calls per framework and case (default 10)")
flags.DEFINE_integer("warmup", None, "untimed calls after compiling (default 2)")
flags.DEFINE_bool("torch-compile", None, "also time torch.compile (default: on, off in --quick)")
flags.DEFINE_bool("quick", False, f"a small plan: {quick_summary()}")
flags.DEFINE_bool("scaling", False, "time and memory against size, batch and device count")
flags.DEFINE_list("devices", ["1", "2", "4"], "device counts of the --scaling data-parallel run")
flags.DEFINE_float("mem-cap-gib", None, "--scaling: skip cases estimated above this (GiB)")
flags.DEFINE_bool("single-thread", False, "CPU: one thread for each framework (shared machines)")
flags.DEFINE_integer("n-class", 21, "classes of the network")
flags.DEFINE_integer("seed", 0, "seed of the weights and inputs")
flags.DEFINE_enum("suite", None, ["accelerator"], "a fixed suite; accelerator: see above")
flags.DEFINE_float("budget-s", None, "--suite: seconds for the whole run (default 480)")
flags.DEFINE_integer(
    "throughput-batch", None, "--suite: batch of the throughput cases (default 16; halved to fit)"
)
flags.DEFINE_bool(
    "dry-run", None, "--suite: the CPU rehearsal (default: on when JAX has no GPU/TPU)"
)
flags.DEFINE_string("out", None, "output directory (default outputs/bench, outputs/accelerator)")
FLAGS = flags.FLAGS


def given(name: str) -> object:
    """A flag's value if it was on the command line, else None."""
    return FLAGS[name].value if FLAGS[name].present else None


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags, then benchmark; returns the exit code."""
    argv = list(sys.argv if argv is None else argv)
    if help_requested(argv):
        return 0
    try:
        rest = FLAGS(argv)
    except flags.Error as e:
        raise FCNError(str(e)) from None
    if len(rest) > 1:
        raise FCNError(f"unexpected arguments {rest[1:]}")
    from fcn_jax.bench.plan import (
        CASE_FLAGS,
        check_suite_flags,
        make_plan,
        parse_ints,
        single_thread_environment,
    )

    suite_flags = {k: given(k) for k in ("budget-s", "throughput-batch", "dry-run")}
    if FLAGS.suite:
        others = (*CASE_FLAGS, "devices", "mem-cap-gib", "n-class", "single-thread")
        case_flags = {k: given(k) for k in others}
        case_flags |= {"quick": FLAGS.quick or None, "scaling": FLAGS.scaling or None}
        options = check_suite_flags(FLAGS.suite, case_flags, suite_flags)
        options |= {
            "repeats": given("repeats"),
            "warmup": given("warmup"),
            "torch_compile": given("torch-compile"),
            "seed": FLAGS.seed,
        }
        return run_suite(options, FLAGS.out or "outputs/accelerator", argv)
    unused = [f"--{k}" for k, v in suite_flags.items() if v is not None]
    if unused:
        verb = "applies" if len(unused) == 1 else "apply"
        raise FCNError(f"{', '.join(unused)} only {verb} to --suite accelerator")
    out = FLAGS.out or "outputs/bench"

    if FLAGS["single-thread"].value:
        single_thread_environment()  # before JAX's backend and torch start

    plan = make_plan(
        variants=given("variants"),
        sizes=given("sizes"),
        batches=given("batch"),
        dtypes=given("dtype"),
        modes=given("mode"),
        widths=given("width"),
        repeats=given("repeats"),
        warmup=given("warmup"),
        torch_compile=given("torch-compile"),
        quick=FLAGS.quick,
        scaling=FLAGS.scaling,
        n_class=FLAGS["n-class"].value,
        seed=FLAGS.seed,
        single_thread=FLAGS["single-thread"].value,
    )
    devices = parse_ints("devices", FLAGS.devices)
    cap = FLAGS["mem-cap-gib"].value
    if cap is not None and cap <= 0:
        raise FCNError(f"--mem-cap-gib must be positive, got {cap}")
    from fcn_jax.outputs import output_dir

    output_dir(out, "--out")  # a folder that can be written, before any timing
    if FLAGS.scaling:
        from fcn_jax.bench.scaling import run_scaling

        run_scaling(plan, out, devices, cap, argv)
    else:
        from fcn_jax.bench.harness import run_bench

        run_bench(plan, out, argv)
    return 0


def run_suite(options: dict[str, object], out: str, argv: list[str]) -> int:
    """``--suite accelerator``: check --out, then run; 1 if the parity checks fail."""
    from fcn_jax.outputs import output_dir

    output_dir(out, "--out")
    from pathlib import Path

    import jax

    from fcn_jax.bench.accelerator import SuiteOptions
    from fcn_jax.bench.accelerator import run_suite as run

    if options["dry_run"] is None:  # a CPU cannot run the real suite: rehearse it
        options["dry_run"] = jax.default_backend() == "cpu"
    given = {k: v for k, v in options.items() if v is not None}
    return run(SuiteOptions.create(Path(out), command=" ".join(argv), **given))


if __name__ == "__main__":
    run_cli(main)
