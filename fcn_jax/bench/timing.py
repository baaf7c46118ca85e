"""Timing and precision shared by the benchmark and the paper's Table 1: no torch, no harness.

- :func:`jax_precision` and :func:`model_dtype`: what a case's ``dtype`` (``float32``,
  ``tf32``, ``bfloat16``) means to JAX;
- :class:`Compiled`: a runner (one call that returns when the device is done) and what
  compiling it cost;
- :func:`interleave`, :func:`per_image_ms`, :func:`first_call`: the timer and its statistics.

Importing this module is cheap: jax is imported only when :func:`jax_precision` is entered.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

Runner = Callable[[], None]


@contextlib.contextmanager
def jax_precision(dtype: str) -> Iterator[None]:
    """Full float32 matmuls for float32 cases (XLA on GPU/TPU would otherwise use TF32/bf16).

    ``tf32`` and ``bfloat16`` cases compile at the default precision.
    """
    import jax  # here, not at the top: reading timing JSON needs no jax

    with jax.default_matmul_precision("highest" if dtype == "float32" else "default"):
        yield


def model_dtype(dtype: str) -> str:
    """The network's computation dtype for a case's ``dtype`` (``tf32`` stores float32)."""
    return "float32" if dtype == "tf32" else dtype


@dataclasses.dataclass
class Compiled:
    """A runner and what compiling it cost.

    Attributes:
        run: one call, returning when the device is done.
        compile_s: wall time of tracing, lowering and compiling (JAX), else None.
        xla_bytes: XLA's buffer plan for the executable: arguments + outputs + temporaries,
            minus what is aliased (donated), bytes; None where not reported.
        xla_flop: XLA's cost analysis of the executable, FLOPs per call; None where not
            reported. It counts only taps that fall inside the inputs (not on the padding) plus
            elementwise work (see :mod:`fcn_jax.bench.flops`), and a loop's body once: on
            XLA:CPU the train step's weight gradients, looped over bands of rows
            (:mod:`fcn_jax.models.conv`), are counted for one band each. ``gflop`` (the
            analytic model) is the figure the rates use.
        last: the last call's output (forward: logits, for the parity check; train: the
            state).
    """

    run: Runner
    compile_s: float | None = None
    xla_bytes: int | None = None
    xla_flop: float | None = None
    last: dict[str, Any] = dataclasses.field(default_factory=dict)


def interleave(runners: dict[str, Runner], warmup: int, repeats: int) -> dict[str, list[float]]:
    """``warmup`` untimed calls of each runner, then ``repeats`` timed rounds, A B A B ...

    Returns:
        runner name -> wall seconds of each timed call.
    """
    for _ in range(warmup):
        for run in runners.values():
            run()
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return times


def per_image_ms(seconds: list[float], batch: int) -> dict[str, float]:
    """Median, quartiles and extremes of per-call wall times, as ms per image."""
    ms = np.asarray(seconds) * 1e3 / batch
    q1, median, q3 = np.percentile(ms, [25, 50, 75])
    return {
        "ms": float(median),
        "q1": float(q1),
        "q3": float(q3),
        "min": float(ms.min()),
        "max": float(ms.max()),
    }


def first_call(run: Runner) -> float:
    """Wall seconds of one call of ``run`` (the untimed first call: compiles, plans, caches)."""
    start = time.perf_counter()
    run()
    return time.perf_counter() - start
