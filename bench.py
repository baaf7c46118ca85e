#!/usr/bin/env python
r"""Time the FCNs in JAX against the project's PyTorch FCN, same device, weights and inputs.

    python bench.py [--variants fcn32s,fcn16s,fcn8s] [--sizes 256,384,500,512] [--batch 1,8]
        [--dtype float32,bfloat16] [--mode forward,train] [--width 1.0] [--quick] [--out DIR]
    python bench.py --scaling [--sizes 128,256,384,512,768,1024] [--batch 1,4] [--devices 1,2,4]
    python bench.py --suite accelerator [--budget-s 480] [--throughput-batch 16] [--out DIR]
    python bench.py --onnx [--variants fcn8s] [--sizes 500] [--batch 1] [--width 1.0] [--out DIR]

Writes DIR/bench.json (a list, one record per case: ms per image of both frameworks and their
ratio jax_ms / torch_ms, compile times, GFLOP, TFLOP/s and fraction of peak, memory),
DIR/bench.md (the table) and DIR/run.json (device, versions, threads, precision settings).
--scaling writes DIR/scaling.json, DIR/scaling.md and DIR/scaling.png instead. --onnx exports
the network as an ONNX artifact and times ONNX Runtime beside the JAX and PyTorch forwards on the
CPU, all from uint8 images (one case, the first of each list given): DIR/onnx.json, DIR/onnx.md.
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
from fcn_jax.cli import Args, parse_flags, run
from fcn_jax.errors import FCNError

# (kind, name, default, help): one row a flag, in --help's order.
FLAG_TABLE = (
    ("list", "variants", None, "FCN variants (default fcn32s,fcn16s,fcn8s; --scaling: fcn8s)"),
    ("list", "sizes", None, "input sizes, S or HxW (default 256,384,500,512)"),
    ("list", "batch", None, "batch sizes (default 1; --scaling: 1,4)"),
    ("list", "dtype", None, "float32 and/or bfloat16 (default float32)"),
    ("list", "mode", None, "forward and/or train (default both)"),
    ("list", "width", None, "channel width multipliers, multiples of 1/64 (default 1.0)"),
    ("int", "repeats", None, "timed calls per framework and case (default 10)"),
    ("int", "warmup", None, "untimed calls after compiling (default 2)"),
    ("bool", "torch-compile", None, "also time torch.compile (default: on, off in --quick)"),
    ("bool", "quick", False, f"a small plan: {quick_summary()}"),
    ("bool", "scaling", False, "time and memory against size, batch and device count"),
    ("bool", "onnx", False, "the ONNX Runtime artifact beside JAX and torch (FCN-8s, 500, CPU)"),
    ("list", "devices", ["1", "2", "4"], "device counts of the --scaling data-parallel run"),
    ("float", "mem-cap-gib", None, "--scaling: skip cases estimated above this (GiB)"),
    ("bool", "single-thread", False, "CPU: one thread for each framework (shared machines)"),
    (
        "list",
        "jax-compiler-options",
        None,
        "name=value XLA options for every timed JAX executable (default: none)",
    ),
    ("int", "n-class", 21, "classes of the network"),
    ("int", "seed", 0, "seed of the weights and inputs"),
    ("float", "budget-s", None, "--suite: seconds for the whole run (default 480)"),
    (
        "int",
        "throughput-batch",
        None,
        "--suite: batch of the throughput cases (default 16; halved to fit)",
    ),
    ("bool", "dry-run", None, "--suite: the CPU rehearsal (default: on when JAX has no GPU/TPU)"),
    ("str", "out", None, "output directory (default outputs/bench, outputs/accelerator)"),
)


def define_flags(fv: flags.FlagValues) -> None:
    """bench.py's flags; a None default means "not given" (the plan or the suite decides)."""
    define = {
        "list": flags.DEFINE_list,
        "int": flags.DEFINE_integer,
        "float": flags.DEFINE_float,
        "bool": flags.DEFINE_bool,
        "str": flags.DEFINE_string,
    }
    for kind, name, default, text in FLAG_TABLE:
        define[kind](name, default, text, flag_values=fv)
    flags.DEFINE_enum(
        "suite", None, ["accelerator"], "a fixed suite; accelerator: see above", flag_values=fv
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags, then benchmark; returns the exit code."""
    args = parse_flags(define_flags, argv, __doc__)
    command = [sys.argv[0], *(sys.argv[1:] if argv is None else argv)]  # recorded in run.json
    from fcn_jax.bench.plan import CASE_FLAGS, check_suite_flags

    suite_flags = {k: args.if_given(k) for k in ("budget-s", "throughput-batch", "dry-run")}
    if args.suite:
        others = (*CASE_FLAGS, "devices", "mem-cap-gib", "n-class", "single-thread")
        others = (*others, "jax-compiler-options")
        case_flags = {k: args.if_given(k) for k in others}
        case_flags |= {"quick": args.quick or None, "scaling": args.scaling or None}
        options = check_suite_flags(args.suite, case_flags, suite_flags)
        options |= {
            "repeats": args.if_given("repeats"),
            "warmup": args.if_given("warmup"),
            "torch_compile": args.if_given("torch-compile"),
            "seed": args.seed,
        }
        return run_suite(options, args.out or "outputs/accelerator", command)
    unused = [f"--{k}" for k, v in suite_flags.items() if v is not None]
    if unused:
        verb = "applies" if len(unused) == 1 else "apply"
        raise FCNError(f"{', '.join(unused)} only {verb} to --suite accelerator")
    if args.onnx:
        return run_onnx(args)
    return run_cases(args, command)


def run_onnx(args: Args) -> int:
    """``--onnx``: one case, the first of each list given (FCN-8s, 500x500, batch 1, width 1)."""
    from fcn_jax.bench.onnx_side import markdown, run_onnx_bench
    from fcn_jax.bench.plan import parse_ints
    from fcn_jax.outputs import output_dir

    out = output_dir(args.out or "outputs/bench", "--out")
    first = lambda name, default: (args.if_given(name) or [default])[0]  # noqa: E731
    side = str(first("sizes", "500"))
    height, width = parse_ints("sizes", side.split("x") if "x" in side else [side, side])
    record = run_onnx_bench(
        out,
        arch=first("variants", "fcn8s"),
        size=(height, width),
        batch=parse_ints("batch", [first("batch", "1")])[0],
        width=float(first("width", "1.0")),
        repeats=args.repeats or 5,
        warmup=args.warmup if args.warmup is not None else 1,
        seed=args.seed,
    )
    print(markdown(record))
    return 0


def run_cases(args: Args, command: list[str]) -> int:
    """The plain benchmark or ``--scaling``: check --out, then time."""
    from fcn_jax.bench.plan import make_plan, parse_ints, single_thread_environment

    out = args.out or "outputs/bench"
    if args.single_thread:
        single_thread_environment()  # before JAX's backend and torch start

    plan = make_plan(
        variants=args.if_given("variants"),
        sizes=args.if_given("sizes"),
        batches=args.if_given("batch"),
        dtypes=args.if_given("dtype"),
        modes=args.if_given("mode"),
        widths=args.if_given("width"),
        repeats=args.if_given("repeats"),
        warmup=args.if_given("warmup"),
        torch_compile=args.if_given("torch-compile"),
        quick=args.quick,
        scaling=args.scaling,
        n_class=args.n_class,
        seed=args.seed,
        single_thread=args.single_thread,
        jax_compiler_options=args.if_given("jax-compiler-options"),
    )
    devices = parse_ints("devices", args.devices)
    cap = args.mem_cap_gib
    if cap is not None and cap <= 0:
        raise FCNError(f"--mem-cap-gib must be positive, got {cap}")
    from fcn_jax.outputs import output_dir

    output_dir(out, "--out")  # a folder that can be written, before any timing
    if args.scaling:
        from fcn_jax.bench.scaling import run_scaling

        run_scaling(plan, out, devices, cap, command)
    else:
        from fcn_jax.bench.harness import run_bench

        run_bench(plan, out, command)
    return 0


def run_suite(options: dict[str, object], out: str, argv: list[str]) -> int:
    """``--suite accelerator``: check --out, then run; 1 if the parity checks fail."""
    from fcn_jax.outputs import output_dir

    output_dir(out, "--out")
    from pathlib import Path

    import jax

    from fcn_jax.bench.accelerator import SuiteOptions
    from fcn_jax.bench.accelerator import run_suite as run_accelerator_suite

    if options["dry_run"] is None:  # a CPU cannot run the real suite: rehearse it
        options["dry_run"] = jax.default_backend() == "cpu"
    given = {k: v for k, v in options.items() if v is not None}
    return run_accelerator_suite(SuiteOptions.create(Path(out), command=" ".join(argv), **given))


if __name__ == "__main__":
    run(main)
