"""The training progress bar: steps, loss, learning rate and images per second.

The first step compiles (minutes at full size): the bar says ``compiling...`` until it has run,
then restarts its clock, so that rates and ETA count from the end of the first step.
"""

from __future__ import annotations

import time
from typing import Any

import jax
from tqdm import tqdm


class Progress:
    """A tqdm bar over the run's steps, and the run's clock.

    Args:
        step: the step the run starts at.
        total: the step it ends at.
        images_per_step: images of one optimiser step (all micro-batches, all devices).
        enabled: show the bar (the chief, when asked).
    """

    def __init__(self, step: int, total: int, images_per_step: int, enabled: bool) -> None:
        self.images_per_step = images_per_step
        self.compiling = step < total  # until the first step has run
        self.bar = tqdm(
            total=total,
            initial=step,
            unit="step",
            desc="train",
            postfix="compiling..." if self.compiling else None,
            disable=not enabled,
        )
        self.started = time.perf_counter()
        # Rates count from the end of the first step (step0 at t0): not the compilation.
        self.t0, self.step0 = self.started, step

    def stepped(self, step: int, metrics: Any) -> None:
        """Count a step taken; ``metrics`` (its output) is awaited after the first one only."""
        if not self.compiling:
            self.bar.update(1)
            return
        jax.block_until_ready(metrics)  # the step ran, not only compiled and dispatched
        self.compiling = False
        self.bar.reset()  # rates and ETA from here on
        self.bar.n = self.bar.initial = self.bar.last_print_n = step
        self.bar.set_postfix_str("")
        self.t0, self.step0 = time.perf_counter(), step

    def show(self, step: int, loss: float, lr: float) -> None:
        """The latest loss, learning rate and throughput, on the bar."""
        postfix = {"loss": f"{loss:.4g}", "lr": f"{lr:.3g}"}
        if step > self.step0:
            images = (step - self.step0) * self.images_per_step
            postfix["img_s"] = f"{images / (time.perf_counter() - self.t0):.1f}"
        self.bar.set_postfix(postfix)

    def seconds(self) -> float:
        """Seconds since the bar was made (compilation included)."""
        return time.perf_counter() - self.started

    def close(self) -> None:
        """Close the bar (before an error message, so that it starts a line of its own)."""
        self.bar.close()
