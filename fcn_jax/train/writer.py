"""What a training run writes for people: metrics.jsonl, TensorBoard, sample pictures, lines.

One :class:`Writer` per run. Only the chief process (process 0) writes; on the others every
method does nothing, so the loop calls them unconditionally.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm


class Writer:
    """The run's logs in ``workdir``: ``metrics.jsonl``, ``tensorboard/``, ``samples/*.png``.

    Args:
        workdir: the run's folder.
        enabled: whether this process writes (the chief); False makes every method a no-op.
    """

    def __init__(self, workdir: Path, enabled: bool) -> None:
        self.workdir = Path(workdir)
        self.enabled = enabled
        self._tensorboard: Any = None
        if enabled:
            from tensorboardX import SummaryWriter

            self._tensorboard = SummaryWriter(str(self.workdir / "tensorboard"))

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """One ``{"step": step, **values}`` line of metrics.jsonl, and the TensorBoard scalars."""
        if not self.enabled:
            return
        with (self.workdir / "metrics.jsonl").open("a") as f:
            f.write(json.dumps({"step": step, **values}) + "\n")
        for key, value in values.items():
            self._tensorboard.add_scalar(key, value, step)

    def sample(self, step: int, picture: np.ndarray) -> None:
        """A validation picture ([H, W, 3] uint8): ``samples/step_0000042.png`` and TensorBoard."""
        if not self.enabled:
            return
        samples = self.workdir / "samples"
        samples.mkdir(exist_ok=True)
        Image.fromarray(picture).save(samples / f"step_{step:07d}.png")
        self._tensorboard.add_image("eval/sample", picture, step, dataformats="HWC")

    def print(self, line: str) -> None:
        """A line for the user, above the progress bar."""
        if self.enabled:
            tqdm.write(line)

    def close(self) -> None:
        """Flush and close TensorBoard's files.

        Called by the run, not left to tensorboardX's ``atexit`` hook (see
        :func:`fcn_jax.train.interrupts.close_after_error`).
        """
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None
