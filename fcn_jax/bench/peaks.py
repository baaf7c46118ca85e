"""Peak arithmetic throughput of the device, to turn achieved TFLOP/s into a fraction of peak.

Accelerators: the vendors' datasheet numbers, dense (no 2:4 sparsity), float32 on the CUDA
cores (TF32 is off in these benchmarks) and bfloat16 on the tensor cores / MXUs with float32
accumulation. TPUs publish no float32 figure (XLA emulates float32 matmuls with several bf16
passes), so theirs is None. CPUs: measured, the best float32 / bfloat16 matmul either framework
reaches on a large square matrix (:func:`measure_matmul_tflops`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import numpy as np

# (pattern on the lower-cased device kind, name, {dtype: dense TFLOP/s}), most specific first:
# "a100" must match before "a10", "h100 pcie" before "h100", "l40s" before "l4".
KNOWN_PEAKS: tuple[tuple[str, str, dict[str, float | None]], ...] = (
    (r"h100.*pcie", "H100 PCIe", {"float32": 51.2, "bfloat16": 756.0}),
    (r"h100.*nvl", "H100 NVL", {"float32": 60.0, "bfloat16": 835.0}),
    (r"h100", "H100 SXM", {"float32": 67.0, "bfloat16": 989.4}),
    (r"h200", "H200", {"float32": 67.0, "bfloat16": 989.4}),
    (r"a100", "A100", {"float32": 19.5, "bfloat16": 312.0}),
    (r"v100", "V100 SXM2", {"float32": 15.7, "bfloat16": None}),  # no bf16 units
    (r"\bt4\b", "T4", {"float32": 8.1, "bfloat16": None}),  # no bf16 units
    (r"l40s", "L40S", {"float32": 91.6, "bfloat16": 362.1}),
    (r"\bl4\b", "L4", {"float32": 30.3, "bfloat16": 121.0}),
    (r"\ba10\b", "A10", {"float32": 31.2, "bfloat16": 125.0}),
    (r"rtx 4090", "RTX 4090", {"float32": 82.6, "bfloat16": 165.2}),  # fp32 accumulate
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
            return name, peaks.get(dtype)
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


def measure_matmul_tflops(dtype: str, n: int = 2048, repeats: int = 5) -> dict[str, float]:
    """Best matmul throughput of JAX and of PyTorch on this CPU, TFLOP/s.

    An ``n x n`` by ``n x n`` product (``2 n^3`` FLOPs; 17 GFLOP at n = 2048, large enough to
    reach the BLAS kernels' plateau on a few cores, small enough to take under a second).

    Returns:
        ``{"jax": ..., "torch": ...}`` (torch only if it imports).
    """
    import jax
    import jax.numpy as jnp

    flop = 2.0 * n**3
    rng = np.random.default_rng(0)
    a_np = rng.standard_normal((n, n), np.float32)
    a = jnp.asarray(a_np, dtype)
    with jax.default_matmul_precision("highest"):
        matmul = jax.jit(lambda x: x @ x)
        compiled = matmul.lower(a).compile()
    out = {"jax": flop / time_best(lambda: compiled(a).block_until_ready(), repeats) / 1e12}
    try:
        import torch
    except ImportError:
        return out
    t = torch.from_numpy(a_np).to(getattr(torch, dtype))
    with torch.inference_mode():
        out["torch"] = flop / time_best(lambda: t @ t, repeats) / 1e12
    return out
