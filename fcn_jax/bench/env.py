"""The environment of a benchmark run: devices, precision settings, peaks, versions, commit.

:func:`prepare` fixes both frameworks' precision settings and finds torch's device and the
device's peak TFLOP/s; :func:`run_metadata` describes the run for ``run.json``.

float32 means full float32 in both frameworks: JAX under ``jax.default_matmul_precision
("highest")``, torch with TF32 off. tf32 is float32 at each framework's default precision on the
device: TF32 tensor cores on NVIDIA Ampere and later (JAX's default; torch with ``allow_tf32``
on), plain float32 on a CPU.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from fcn_jax.bench.network import LEARNING_RATE
from fcn_jax.bench.peaks import PEAK_SOURCE, known_peak, measure_matmul_tflops
from fcn_jax.bench.plan import Plan


@dataclasses.dataclass
class BenchEnv:
    """The devices and settings shared by every case of a run.

    Attributes:
        platform: JAX's default backend (``cpu``, ``gpu``, ``tpu``).
        device_kind: JAX's name for its first device.
        torch_device: ``cpu`` or ``cuda`` (same device as JAX), or None where torch cannot
            run on JAX's device (TPU, or a CPU-only torch beside a GPU JAX).
        torch_note: why torch is missing, or "".
        peaks: dtype -> (peak TFLOP/s or None, where the number comes from).
    """

    platform: str
    device_kind: str
    torch_device: str | None
    torch_note: str = ""
    peaks: dict[str, tuple[float | None, str]] = dataclasses.field(default_factory=dict)


def prepare(plan: Plan) -> BenchEnv:
    """Fix both frameworks' precision settings, pick torch's device, find the device's peaks."""
    from fcn_jax.convert.torch_files import import_torch_float32

    # Full float32 in torch, as in JAX's "highest": TF32 would be ~8x faster on Ampere+ and
    # make the comparison unfair to JAX's float32.
    torch = import_torch_float32()

    if plan.single_thread:  # XLA's half is in the environment (plan.single_thread_environment)
        torch.set_num_threads(1)

    # XLA autotunes its convolution algorithms while compiling; cuDNN's benchmark mode does the
    # same on the first call of each shape (absorbed by the warm-up).
    torch.backends.cudnn.benchmark = True
    device = jax.devices()[0]
    backend = jax.default_backend()
    torch_device, note = "cpu", ""
    if backend == "gpu":
        torch_device = "cuda" if torch.cuda.is_available() else None
        note = "" if torch_device else "JAX runs on a GPU but this torch is a CPU build"
    elif backend != "cpu":
        torch_device, note = None, f"torch has no {backend} backend here"
    env = BenchEnv(backend, device.device_kind, torch_device, note)
    for dtype in sorted({c.dtype for c in plan.cases}):
        env.peaks[dtype] = device_peak(backend, device.device_kind, dtype, torch_device)
    return env


def device_peak(
    backend: str, device_kind: str, dtype: str, torch_device: str | None = "cpu"
) -> tuple[float | None, str]:
    """(peak TFLOP/s, source): a datasheet's for known accelerators, else measured.

    CPUs and accelerators missing from :data:`~fcn_jax.bench.peaks.KNOWN_PEAKS` get the best
    matmul either framework reaches on the device (2048^3 on a CPU, 8192^3 on an accelerator).
    """
    found = None if backend == "cpu" else known_peak(device_kind, dtype)
    if found is not None:
        name, tflops = found
        return tflops, f"{name}, {PEAK_SOURCE}"
    n = 2048 if backend == "cpu" else 8192
    measured = measure_matmul_tflops(dtype, n, torch_device=torch_device)
    best = max(measured.values())
    shown = ", ".join(f"{k} {v:.3f}" for k, v in measured.items())
    return best, f"measured: best {n}^3 {dtype} matmul ({shown} TFLOP/s)"


def run_metadata(plan: Plan, env: BenchEnv, argv: list[str] | None = None) -> dict[str, Any]:
    """Device, versions, threads and precision settings of a run (written to ``run.json``)."""
    import flax
    import torch

    devices = jax.devices()
    return {
        "command": " ".join(argv if argv is not None else sys.argv),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "git_commit": git_commit(),
        "platform": env.platform,
        "device_kind": env.device_kind,
        "device_count": len(devices),
        "torch_device": env.torch_device,
        "torch_note": env.torch_note,
        "versions": {
            "python": platform.python_version(),
            "jax": jax.__version__,
            "jaxlib": jax.lib.__version__ if hasattr(jax.lib, "__version__") else None,
            "flax": flax.__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
        },
        "threads": {
            "single_thread": plan.single_thread,
            "load_average_1_5_15_min": os.getloadavg(),
            "cpu_count": os.cpu_count(),
            "torch_num_threads": torch.get_num_threads(),
            # XLA:CPU's pool: one thread when started under one CPU (single_thread_environment),
            # otherwise one per CPU the process may use.
            "xla_cpu_pool_threads": 1 if plan.single_thread else len(_schedulable_cpus()),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
        },
        "jax_compiler_options": dict(plan.jax_compiler_options),
        "precision": {
            "jax_default_matmul_precision": "highest for float32 cases, default for bfloat16",
            "torch_allow_tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
            "torch_allow_tf32_cudnn": torch.backends.cudnn.allow_tf32,
            "torch_cudnn_benchmark": torch.backends.cudnn.benchmark,
            "bfloat16": "float32 params, bf16 compute (flax dtype / torch.autocast), f32 loss",
        },
        "peaks_tflops": {d: {"tflops": p, "source": s} for d, (p, s) in env.peaks.items()},
        "flop_convention": "2 FLOP per MAC, convolutions only; see fcn_jax/bench/flops.py",
        "memory": {
            "jax_xla_bytes": "XLA buffer plan of the executable: args + outputs + temps - aliased",
            "jax_peak_bytes": "device peak_bytes_in_use so far (process high-water mark; null "
            "where the backend keeps none, e.g. CPU)",
            "torch_peak_bytes": "torch.cuda.max_memory_allocated over one call (null on CPU)",
            "process_max_rss_bytes": _max_rss_bytes(),
        },
        "plan": {
            "repeats": plan.repeats,
            "warmup": plan.warmup,
            "torch_compile": plan.torch_compile,
            "n_class": plan.n_class,
            "seed": plan.seed,
            "quick": plan.quick,
            "learning_rate": LEARNING_RATE,
        },
    }


def _schedulable_cpus() -> set[int]:
    if hasattr(os, "sched_getaffinity"):
        return os.sched_getaffinity(0)
    return set(range(os.cpu_count() or 1))


def git_commit() -> str | None:
    """The checkout's HEAD commit, or None outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _max_rss_bytes() -> int:
    """This process's peak resident memory (both frameworks, all cases): Linux reports KiB."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)
