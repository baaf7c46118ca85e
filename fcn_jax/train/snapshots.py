"""Training snapshots: the weights-directory format plus what exact resumption needs.

(Not :mod:`fcn_jax.checkpoint`, which reads and writes weights directories: a snapshot is a
weights directory's step plus the training state.)

A training workdir is an orbax ``CheckpointManager`` directory whose steps hold

- ``params``, ``model_state`` (BatchNorm statistics, if the model has any) and ``metadata``:
  exactly a weights directory's items, so ``eval.py`` and ``predict.py`` take a workdir as
  ``--weights``;
- ``train``: the optimiser state, the step and the PRNG key;
- ``data``: the grain iterator's state (JSON), so a resumed run sees the images an
  uninterrupted one would have;
- ``config``: the run's config (JSON): a resumed run compares its own with it.

Saves are asynchronous and atomic (orbax writes a temporary directory and renames it), so a
crash mid-write leaves the previous checkpoint usable. The latest ``keep`` checkpoints and the
``keep_best`` best by validation mean IU are kept (orbax preservation policies). Restores
always pass a target (``jax.eval_shape`` of a fresh state), so optax's state comes back as its
own types.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

from fcn_jax.checkpoint import WeightsMetadata, weights_args
from fcn_jax.train.step import TrainState

ITEMS = ("params", "model_state", "metadata", "train", "data", "config")
# orbax warns at every save without metrics when a best_fn is set, i.e. at every checkpoint
# between two validations. Passing empty metrics instead would rank unvalidated checkpoints
# among the "best" (and break eval.py --best), so this one message is dropped, nothing else.
_NO_METRICS_WARNING = "Requested `tracked_metric`; did not provide metrics."


class _DropNoMetricsWarning(logging.Filter):
    """Drops orbax's warning that a checkpoint was saved without validation metrics."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != _NO_METRICS_WARNING


_NO_METRICS_FILTER = _DropNoMetricsWarning()


def training_steps(directory: str | Path) -> list[int]:
    """The complete steps of ``directory`` that hold a training state (the ``train`` item).

    A plain weights directory (``convert_torch_weights.py``'s output, or eval-only weights)
    has steps without it. Read from the file system: no orbax manager is created (it would
    create the folder). orbax writes each step under a temporary name and renames it when
    complete, so a step folder named by its number is a finished checkpoint.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(
        int(p.name) for p in directory.iterdir() if p.name.isdigit() and (p / "train").is_dir()
    )


def weights_steps(directory: str | Path) -> list[int]:
    """The complete steps of ``directory`` that hold params (weights or training checkpoints)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(
        int(p.name) for p in directory.iterdir() if p.name.isdigit() and (p / "params").is_dir()
    )


class TrainCheckpoints:
    """The checkpoints of one training workdir.

    Args:
        workdir: the run's directory (created if missing).
        keep: latest checkpoints to keep.
        keep_best: best checkpoints (validation mean IU) to keep besides.
    """

    def __init__(self, workdir: str | Path, keep: int = 2, keep_best: int = 1) -> None:
        self.directory = Path(workdir).absolute()
        logger = logging.getLogger("absl")  # orbax logs through absl's logger
        if _NO_METRICS_FILTER not in logger.filters:
            logger.addFilter(_NO_METRICS_FILTER)
        policy = pp.AnyPreservationPolicy(
            [
                pp.LatestN(n=keep),
                pp.BestN(
                    get_metric_fn=_mean_iou,
                    n=keep_best,
                    keep_checkpoints_without_metrics=False,
                ),
            ]
        )
        self.manager = ocp.CheckpointManager(
            self.directory,
            item_names=ITEMS,
            # best_fn makes orbax store each step's metrics, so "best" survives restarts.
            options=ocp.CheckpointManagerOptions(
                preservation_policy=policy, best_fn=_mean_iou, best_mode="max", create=True
            ),
        )

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or None."""
        return self.manager.latest_step()

    def save(
        self,
        state: TrainState,
        metadata: WeightsMetadata,
        data_state: dict[str, Any],
        config: dict[str, Any],
        mean_iou: float | None = None,
    ) -> int:
        """Save asynchronously at ``state.step``; returns the step."""
        step = int(state.step)
        self.manager.save(
            step,
            args=ocp.args.Composite(
                **weights_args(state.variables, metadata),
                train=ocp.args.StandardSave(
                    {"step": state.step, "opt_state": state.opt_state, "rng": state.rng}
                ),
                data=ocp.args.JsonSave(data_state),
                config=ocp.args.JsonSave(config),
            ),
            metrics=None if mean_iou is None else {"mean_iou": float(mean_iou)},
        )
        return step

    def saved_config(self, step: int | None = None) -> dict[str, Any] | None:
        """The config (JSON) the run saved at ``step`` (latest by default); None if absent."""
        step = self.latest_step() if step is None else step
        if step is None or not (self.directory / str(step) / "config").is_dir():
            return None
        restored = self.manager.restore(
            step, args=ocp.args.Composite(config=ocp.args.JsonRestore())
        )
        return dict(restored.config)

    def restore(self, target: TrainState, step: int | None = None) -> tuple[TrainState, dict]:
        """The state and iterator state of ``step`` (latest by default), shaped like ``target``.

        Args:
            target: a state with the right structure (arrays or ``ShapeDtypeStruct``s).
            step: which step.
        """
        step = self.latest_step() if step is None else step
        abstract = jax.tree.map(_abstract, target)
        items = {
            "params": ocp.args.StandardRestore(abstract.params),
            "train": ocp.args.StandardRestore(
                {"step": abstract.step, "opt_state": abstract.opt_state, "rng": abstract.rng}
            ),
            "data": ocp.args.JsonRestore(),
        }
        if abstract.model_state:
            items["model_state"] = ocp.args.StandardRestore(abstract.model_state)
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        train = restored.train
        state = TrainState(
            step=train["step"],
            params=restored.params,
            opt_state=train["opt_state"],
            rng=train["rng"],
            model_state=restored.model_state if abstract.model_state else {},
        )
        return state, restored.data

    def wait(self) -> None:
        """Block until pending saves are on disk."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        """Finish pending saves and release the manager."""
        self.manager.close()


def _mean_iou(metrics: dict[str, float]) -> float:
    return metrics["mean_iou"]


def _abstract(x: Any) -> Any:
    sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)
