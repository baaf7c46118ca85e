"""Peak arithmetic throughput of the device, to turn achieved TFLOP/s into a fraction of peak.

A case's ``dtype`` names its arithmetic (see :mod:`fcn_jax.bench.plan`): ``float32`` (full
float32: TF32 off, JAX precision ``highest``), ``tf32`` (float32 storage at the backend's default
matmul precision: TF32 tensor cores on NVIDIA Ampere and later) and ``bfloat16`` (bf16 tensor
cores / MXUs with float32 accumulation).

Accelerators: the vendors' datasheet numbers, dense (no 2:4 sparsity; datasheets often print the
sparse figure, twice these). GPUs without TF32 units (V100, T4) compute ``tf32`` cases in plain
float32, so their float32 figure is used. TPUs publish no float32 figure (XLA emulates a float32
matmul with several bf16 passes), so theirs is None; their default precision is one bf16 pass,
so ``tf32`` takes the bf16 figure. Devices not in the table and CPUs: measured, the best matmul
either framework reaches on a large square matrix (:func:`measure_matmul_tflops`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import numpy as np

# (pattern on the lower-cased device kind, name, {dtype: dense TFLOP/s}), most specific first:
# "a100" must match before "a10", "h100 pcie" before "h100", "gh200" before "h200", "l40s"
# before "l4". A missing dtype falls back as the module docstring says.
KNOWN_PEAKS: tuple[tuple[str, str, dict[str, float | None]], ...] = (
    (r"b200", "B200", {"float32": 80.0, "tf32": 1100.0, "bfloat16": 2250.0}),
    (r"h100.*pcie", "H100 PCIe", {"float32": 51.2, "tf32": 378.0, "bfloat16": 756.0}),
    (r"h100.*nvl", "H100 NVL", {"float32": 60.0, "tf32": 417.5, "bfloat16": 835.0}),
    (r"gh200", "GH200", {"float32": 67.0, "tf32": 494.7, "bfloat16": 989.4}),
    (r"h100", "H100 SXM", {"float32": 67.0, "tf32": 494.7, "bfloat16": 989.4}),
    (r"h200", "H200", {"float32": 67.0, "tf32": 494.7, "bfloat16": 989.4}),
    (r"a100", "A100", {"float32": 19.5, "tf32": 156.0, "bfloat16": 312.0}),
    (r"v100", "V100 SXM2", {"float32": 15.7, "bfloat16": None}),  # no TF32 or bf16 units
    (r"\bt4\b", "T4", {"float32": 8.1, "bfloat16": None}),  # no TF32 or bf16 units
    (r"l40s", "L40S", {"float32": 91.6, "tf32": 183.0, "bfloat16": 362.1}),
    (r"\bl4\b", "L4", {"float32": 30.3, "tf32": 60.0, "bfloat16": 121.0}),
    (r"\ba10\b", "A10", {"float32": 31.2, "tf32": 62.5, "bfloat16": 125.0}),
    (r"rtx 4090", "RTX 4090", {"float32": 82.6, "tf32": 82.6, "bfloat16": 165.2}),
    (r"mi300x", "MI300X", {"float32": 163.4, "tf32": 653.7, "bfloat16": 1307.4}),
    (r"tpu v4", "TPU v4", {"float32": None, "bfloat16": 275.0}),
    (r"tpu v5 lite|tpu v5e", "TPU v5e", {"float32": None, "bfloat16": 197.0}),
    (r"tpu v5p|tpu v5$", "TPU v5p", {"float32": None, "bfloat16": 459.0}),
    (r"tpu v6", "TPU v6e", {"float32": None, "bfloat16": 918.0}),
)
PEAK_SOURCE = "vendor datasheet, dense (no sparsity)"


def known_peak(device_kind: str, dtype: str) -> tuple[str, float | None] | None:
    """(name, dense TFLOP/s) of a known accelerator, or None for an unknown device.

    The TFLOP/s is None where the device has no such units (V100 bf16, TPU float32).
    """
    kind = device_kind.lower()
    for pattern, name, peaks in KNOWN_PEAKS:
        if re.search(pattern, kind):
            if dtype in peaks:
                return name, peaks[dtype]
            if dtype == "tf32":  # no TF32 units: GPUs compute in float32, TPUs in one bf16 pass
                return name, peaks["bfloat16"] if name.startswith("TPU") else peaks["float32"]
            return name, None
    return None


def time_best(fn: Callable[[], object], repeats: int) -> float:
    """Shortest wall time of ``repeats`` calls of ``fn`` (after one untimed call), seconds."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def measure_matmul_tflops(
    dtype: str, n: int = 2048, repeats: int = 5, torch_device: str | None = "cpu"
) -> dict[str, float]:
    """Best matmul throughput of JAX (on its default device) and of PyTorch, TFLOP/s.

    An ``n x n`` by ``n x n`` product (``2 n^3`` FLOPs). On a CPU, n = 2048 (17 GFLOP) is
    large enough to reach the BLAS kernels' plateau on a few cores and takes under a second; an
    accelerator needs n = 8192 or more to be busy for longer than a kernel launch.

    Args:
        dtype: ``float32`` (precision highest, TF32 off), ``tf32`` (float32 at the default
            precision, TF32 on) or ``bfloat16``.
        n: the matrices' side.
        repeats: timed products per framework (the best counts).
        torch_device: where torch multiplies (``cpu``, ``cuda``), or None to leave torch out.

    Returns:
        ``{"jax": ..., "torch": ...}`` (torch only if it imports and a device is given).
    """
    import jax
    import jax.numpy as jnp

    storage = "float32" if dtype == "tf32" else dtype
    flop = 2.0 * n**3
    rng = np.random.default_rng(0)
    a_np = rng.standard_normal((n, n), np.float32)
    a = jnp.asarray(a_np, storage)
    with jax.default_matmul_precision("highest" if dtype == "float32" else "default"):
        matmul = jax.jit(lambda x: x @ x)
        compiled = matmul.lower(a).compile()
    out = {"jax": flop / time_best(lambda: compiled(a).block_until_ready(), repeats) / 1e12}
    if torch_device is None:
        return out
    try:
        import torch
    except ImportError:
        return out
    t = torch.from_numpy(a_np).to(device=torch_device, dtype=getattr(torch, storage))
    sync = torch.cuda.synchronize if torch_device == "cuda" else (lambda: None)
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = dtype == "tf32"
    try:
        with torch.inference_mode():
            out["torch"] = flop / time_best(lambda: (t @ t, sync()), repeats) / 1e12
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    return out
