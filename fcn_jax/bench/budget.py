"""The accelerator suite's time budget: its alarm, its estimates, and failures that are not fatal.

The budget covers the whole run, compiles included: a case whose estimated cost
(:func:`estimate_s`) would overrun it is skipped, and at the deadline an alarm
(:func:`deadline_alarm`) stops whatever runs so that the files can be finished.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fcn_jax.bench.plan import Case


class BudgetExceeded(Exception):
    """Raised by the alarm at the budget's deadline."""


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
