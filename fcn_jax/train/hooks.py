"""What the training loop does every so many steps: log, validate (and draw), save.

Each periodic action is a callable ``hook(step, ...)`` the loop calls when :func:`every` says
so. The loop itself only takes steps; these read the state back from the devices (the one
host round-trip of a step that logs, validates or saves).
"""

from __future__ import annotations

import dataclasses
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fcn_jax.checkpoint import WeightsMetadata
from fcn_jax.data.base import SegmentationDataset
from fcn_jax.errors import FCNError
from fcn_jax.eval.evaluate import EvalOptions, evaluate
from fcn_jax.models import predict_fn
from fcn_jax.train.parallel import DataParallel
from fcn_jax.train.progress import Progress
from fcn_jax.train.snapshots import TrainCheckpoints
from fcn_jax.train.step import TrainState
from fcn_jax.train.writer import Writer
from fcn_jax.types import PyTree
from fcn_jax.visualize import colourise

KILL_HOOK = "FCN_JAX_KILL_AFTER_CHECKPOINT"  # tests: SIGKILL after this step's checkpoint


def every(n: int, last: int) -> Callable[[int], bool]:
    """``due(step)``: true every ``n`` steps and at the ``last`` step."""
    return lambda step: step % n == 0 or step == last


@dataclasses.dataclass
class Saver:
    """Writes a snapshot of the run, if its params are finite.

    Attributes:
        snapshots: the workdir's snapshots.
        metadata: the weights' metadata (a snapshot is a weights directory too).
        iterator: the training data, whose position is saved.
        config: the run's config as JSON.
        dp: where the state lives.
        last_saved: the step of the latest snapshot (the last good one after a NaN).
        kill_at: tests: SIGKILL this process once the snapshot of this step is on disk.
    """

    snapshots: TrainCheckpoints
    metadata: WeightsMetadata
    iterator: Any
    config: dict[str, Any]
    dp: DataParallel
    last_saved: int | None
    kill_at: int = dataclasses.field(default_factory=lambda: int(os.environ.get(KILL_HOOK, "-1")))

    def __call__(self, step: int, state: TrainState, mean_iou: float | None = None) -> None:
        """Save ``state`` (written asynchronously); ``mean_iou`` ranks the best snapshots.

        Raises:
            FCNError: the params are not finite (nothing is written).
        """
        if not _all_finite(self.dp.local(state.params)):
            raise FCNError(
                f"params are not finite at step {step}; the last good checkpoint "
                f"is step {self.last_saved}"
            )
        self.snapshots.save(
            self.dp.saveable(state), self.metadata, self.iterator.get_state(), self.config, mean_iou
        )
        self.last_saved = step
        if step == self.kill_at:
            self.snapshots.wait()
            os.kill(os.getpid(), signal.SIGKILL)


@dataclasses.dataclass
class TrainLog:
    """Reads a step's metrics back: stops on a non-finite loss, else shows and logs them.

    Attributes:
        dp: where the metrics live.
        schedule: the learning rate by step.
        progress: the bar.
        writer: the logs.
        saver: for the last good snapshot, named when the loss is not finite.
        workdir: the run's folder, named likewise.
    """

    dp: DataParallel
    schedule: optax.Schedule
    progress: Progress
    writer: Writer
    saver: Saver
    workdir: Path

    def __call__(self, step: int, metrics: dict[str, jax.Array]) -> None:
        """Log ``metrics`` of ``step``.

        Raises:
            FCNError: the loss is NaN or infinite.
        """
        host = self.dp.metrics(metrics)
        if not np.isfinite(host["loss"]):
            raise FCNError(
                f"the loss became {host['loss']} at step {step}: stopping. The last good "
                f"checkpoint is step {self.saver.last_saved} in {self.workdir}; lower the "
                "learning rate or check optim.loss (a summed loss needs rates ~1e-10)"
            )
        self.progress.show(step, host["loss"], float(self.schedule(step)))
        self.writer.scalars(step, {f"train/{k}": v for k, v in host.items()})


@dataclasses.dataclass
class Validation:
    """Scores the params on the validation split as ``eval.py`` would; draws one sample.

    Attributes:
        metadata: the weights' metadata.
        dataset: the validation split.
        options: how to score.
        writer: the logs.
        sample: the record drawn (image | label | prediction) at every validation.
        compilations: evaluation compilations so far.
        last: the latest scores of the first head.
    """

    metadata: WeightsMetadata
    dataset: SegmentationDataset
    options: EvalOptions
    writer: Writer
    sample: dict[str, np.ndarray]
    compilations: int = 0
    last: dict[str, float] = dataclasses.field(default_factory=dict)

    def __call__(self, step: int, variables: PyTree) -> float:
        """Validate single-device ``variables`` at ``step``; returns the first head's mean IU."""
        result = evaluate(
            variables,
            self.metadata,
            self.dataset,
            **dataclasses.asdict(self.options),
            progress=False,
        )
        self.compilations += result.compilations
        first = next(iter(result.metrics.values()))
        self.last = {
            "pixel_acc": first.pixel_acc,
            "mean_acc": first.mean_acc,
            "mean_iou": first.mean_iou,
            "fw_iou": first.fw_iou,
        }
        self.writer.scalars(step, {f"eval/{k}": v for k, v in self.last.items()})
        if self.writer.enabled:  # a forward pass: only where it is written
            self.writer.sample(step, sample_picture(variables, self.metadata, self.sample))
        self.writer.print(
            f"step {step}: pixel acc {100 * first.pixel_acc:.2f}  mean acc "
            f"{100 * first.mean_acc:.2f}  mean IU {100 * first.mean_iou:.2f}  f.w. IU "
            f"{100 * first.fw_iou:.2f}"
        )
        return first.mean_iou


def sample_picture(variables: PyTree, metadata: WeightsMetadata, record: dict) -> np.ndarray:
    """Image | label | prediction for one validation record, [H, 3W, 3] uint8 (enlarged)."""
    palette = metadata.palette_array()
    spec = metadata.spec
    inputs = {k: record[k][None] for k in spec.inputs}
    logits = predict_fn(spec)(variables, inputs)[spec.head_names[0]]
    pred = np.asarray(jnp.argmax(logits[0], -1).astype(jnp.uint8))
    image = record[metadata.inputs[0]]
    picture = np.concatenate(
        [image, colourise(record["label"], palette), colourise(pred, palette)], axis=1
    )
    zoom = max(1, 128 // picture.shape[0])  # small images: enlarge so they can be seen
    return picture.repeat(zoom, axis=0).repeat(zoom, axis=1)


def _all_finite(tree: PyTree) -> bool:
    return bool(
        jax.jit(
            lambda t: jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(t)]))
        )(tree)
    )
