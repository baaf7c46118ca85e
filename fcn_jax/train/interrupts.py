"""Stopping training on SIGINT (Ctrl-C) or SIGTERM without losing more than the current step.

The handlers only record the signal; the loop checks between steps, where nothing is half
done, finishes any checkpoint being written and reports the step a rerun resumes from
(:class:`TrainingInterrupted`, exit code 130 / 143). A second signal exits at once: orbax renames
a checkpoint into place only once it is complete, so the last complete one stays usable.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fcn_jax.train.snapshots import TrainCheckpoints


class TrainingInterrupted(Exception):
    """Training stopped by SIGINT or SIGTERM, once any checkpoint being written was finished.

    Attributes:
        signum: the signal.
        exit_code: ``128 + signum`` as a shell reports a signal (130 SIGINT, 143 SIGTERM).
        resume_step: the step a rerun resumes from (the last complete checkpoint), or None.
    """

    def __init__(self, signum: int, message: str, resume_step: int | None) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum
        self.resume_step = resume_step


class Interrupted(Exception):
    """Raised by :meth:`Interrupts.check` once a signal arrived."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class Interrupts:
    """SIGINT / SIGTERM handlers that make training stop at the next safe point.

    The handler only records the signal: an exception raised from it could land anywhere (in
    JAX's tracing, in orbax's save, in a library's ``except``) and leave that half done; the
    loop calls :meth:`check` between steps, where nothing is in progress.
    """

    def __init__(self) -> None:
        self.signum: int | None = None

    def _handle(self, signum: int, frame: Any) -> None:
        del frame
        name = signal.Signals(signum).name
        # os.write: a print could re-enter the progress bar's buffered write on stderr.
        if self.signum is not None:
            # A second signal: the user wants out now. orbax renames a checkpoint into place
            # only once complete, so the last complete one stays usable.
            os.write(2, f"\n{name} again: exiting now\n".encode())
            os._exit(128 + signum)
        self.signum = signum
        os.write(
            2,
            f"\n{name}: stopping after the current step (a validation or checkpoint write in "
            f"progress finishes first); another {name} exits at once\n".encode(),
        )

    def check(self) -> None:
        """Raise :class:`Interrupted` if a signal arrived."""
        if self.signum is not None:
            raise Interrupted(self.signum)

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Handle SIGINT and SIGTERM inside the block (from the main thread only)."""
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                # An ignored signal stays ignored (a shell's background job, a launcher's
                # choice): this handler would otherwise make it stop training.
                if signal.getsignal(signum) is not signal.SIG_IGN:
                    previous[signum] = signal.signal(signum, self._handle)
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, signal.SIG_DFL if handler is None else handler)


@dataclasses.dataclass
class RunProgress:
    """What an interrupted run finishes and reports, filled in as the run sets up."""

    step: int | None = None
    checkpoints: TrainCheckpoints | None = None
    bar: Any = None
    writer: Any = None


def close_after_error(run: RunProgress) -> None:
    """Close what a run opened when an error stops it (a NaN loss, a bad record).

    Now, not at interpreter exit: tensorboardX's writer closes itself then from an ``atexit``
    hook that starts a thread, which Python 3.12 refuses (a traceback after the error message).
    The bar first, so that the error starts a line of its own; a checkpoint being written is
    finished, as when stopped by a signal.
    """
    if run.bar is not None:
        run.bar.close()
    if run.writer is not None:
        run.writer.close()
    if run.checkpoints is not None:
        run.checkpoints.wait()
        run.checkpoints.close()


def stopped(signum: int, run: RunProgress, workdir: Path) -> TrainingInterrupted:
    """Finish the checkpoint being written; say which step a rerun resumes from."""
    if run.bar is not None:
        run.bar.close()
    saved = None
    if run.checkpoints is not None:
        run.checkpoints.wait()  # a write in progress completes: never half a checkpoint
        saved = run.checkpoints.latest_step()
        run.checkpoints.close()
    if run.writer is not None:
        run.writer.close()
    at = "before training started" if run.step is None else f"at step {run.step}"
    if saved is None:
        then = "no checkpoint was saved yet; a rerun of the same command starts from step 0"
    else:
        lost = 0 if run.step is None else run.step - saved
        then = (
            f"a rerun of the same command resumes from step {saved}, the last checkpoint in "
            f"{workdir}" + (f" ({lost} later steps are redone)" if lost > 0 else "")
        )
    return TrainingInterrupted(
        signum, f"interrupted by {signal.Signals(signum).name} {at}: {then}", saved
    )
