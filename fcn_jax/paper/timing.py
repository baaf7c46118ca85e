"""Table 1's ``forward_ms`` column: the forward pass timed here, or read from bench.py's JSON.

Timing uses the benchmark's shared timer and precision (:mod:`fcn_jax.bench.timing`), and a
bench.py JSON is read by the benchmark's own reader (:mod:`fcn_jax.bench.records`): neither
torch nor the benchmark harness is imported.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
import numpy as np

from fcn_jax.bench.records import case_label, read_records
from fcn_jax.bench.timing import interleave, jax_precision
from fcn_jax.errors import FCNError
from fcn_jax.models import NetSpec, random_variables

TIMING_SIZE = 500  # the paper's Table 1 times a 500x500 input
TIMING_TRIALS = 20  # the paper averages 20 trials
FORWARD_MODE = "forward"  # bench.py's mode timing inference (its other, "train", is a step)


def device_description() -> str:
    """The device evaluation and timing run on (whole-image evaluation uses the first)."""
    device = jax.local_devices()[0]
    if device.platform == "cpu":  # the kind says only "cpu"; the core count is what matters
        kind = f"CPU ({os.cpu_count()} cores)"
    else:
        kind = f"{device.device_kind} ({device.platform})"
    return f"{kind}, jax {jax.__version__}"


def time_forward(spec: NetSpec, size: int = TIMING_SIZE, trials: int = TIMING_TRIALS) -> float:
    """Median forward time of ``spec``'s network on one ``size`` x ``size`` image, in ms.

    Jitted, compiled and warmed up first; each trial ends with ``block_until_ready`` (JAX
    dispatches asynchronously, so an unblocked timer would measure only the dispatch). The
    input is already on the device, as in the paper's Caffe timing of the net's forward pass.
    """
    if trials < 1:
        raise FCNError(f"timing needs at least one trial, got {trials}")
    # Time does not depend on the values; the network's init would cost more than the timing.
    variables = random_variables(spec)
    forward = jax.jit(spec.apply)  # the network on preprocessed inputs, as Caffe's timing
    image = jax.random.normal(jax.random.key(1), (1, size, size, 3), np.float32)
    inputs = (image,) * len(spec.inputs)

    def run() -> None:
        jax.block_until_ready(forward(variables, inputs))

    # Full float32 matmuls, as bench.py's float32 figures (a GPU would otherwise use TF32).
    # Two untimed calls: the compile, then one warm run (allocator, autotuning).
    with jax_precision("float32"):
        times = interleave({"forward": run}, warmup=2, repeats=trials)["forward"]
    return 1000.0 * float(np.median(times))


def forward_ms_from_bench(path: Path, variant: str, size: int = TIMING_SIZE) -> float:
    """The forward time bench.py recorded for ``variant`` at ``size`` x ``size``, batch 1.

    Args:
        path: bench.py's JSON (read by :func:`fcn_jax.bench.records.read_records`).
        variant: the FCN variant (``fcn32s``).
        size: the image side.

    Returns:
        ``jax_ms`` of the matching full-width float32 inference record.

    Raises:
        FCNError: the file is not bench.py's JSON, or holds no such record.
    """
    want = {"variant": variant, "mode": FORWARD_MODE, "height": size, "width": size, "batch": 1}
    want |= {"dtype": "float32", "width_mult": 1.0}
    records = read_records(path)
    matches = [
        r
        for r in records
        if all(r[k] == v for k, v in want.items()) and r.get("jax_ms") is not None
    ]
    if not matches:
        have = sorted({case_label(r) for r in records})
        raise FCNError(
            f"{path} has no full-width float32 {variant} forward timing at {size}x{size}, batch "
            f"1 (mode {FORWARD_MODE!r}); it has: {', '.join(have) or 'nothing'}"
        )
    return float(matches[0]["jax_ms"])
