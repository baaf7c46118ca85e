"""Training checkpoints: the weights-directory format plus what exact resumption needs.

A training workdir is an orbax ``CheckpointManager`` directory whose steps hold

- ``params`` and ``metadata``: exactly a weights directory's items, so ``eval.py`` and
  ``predict.py`` take a workdir as ``--weights``;
- ``train``: the optimiser state, the step and the PRNG key;
- ``data``: the grain iterator's state (JSON), so a resumed run sees the images an
  uninterrupted one would have;
- ``config``: the run's config (JSON), for the record.

Saves are asynchronous and atomic (orbax writes a temporary directory and renames it), so a
crash mid-write leaves the previous checkpoint usable. The latest ``keep`` checkpoints and the
``keep_best`` best by validation mean IU are kept (orbax preservation policies). Restores
always pass a target (``jax.eval_shape`` of a fresh state), so optax's state comes back as its
own types.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

from fcn_jax.checkpoint import WeightsMetadata
from fcn_jax.train.step import TrainState

ITEMS = ("params", "metadata", "train", "data", "config")


class TrainCheckpoints:
    """The checkpoints of one training workdir.

    Args:
        workdir: the run's directory (created if missing).
        keep: latest checkpoints to keep.
        keep_best: best checkpoints (validation mean IU) to keep besides.
    """

    def __init__(self, workdir: str | Path, keep: int = 2, keep_best: int = 1) -> None:
        self.directory = Path(workdir).absolute()
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
                params=ocp.args.StandardSave(state.params),
                metadata=ocp.args.JsonSave(metadata.to_json()),
                train=ocp.args.StandardSave(
                    {"step": state.step, "opt_state": state.opt_state, "rng": state.rng}
                ),
                data=ocp.args.JsonSave(data_state),
                config=ocp.args.JsonSave(config),
            ),
            metrics=None if mean_iou is None else {"mean_iou": float(mean_iou)},
        )
        return step

    def restore(self, target: TrainState, step: int | None = None) -> tuple[TrainState, dict]:
        """The state and iterator state of ``step`` (latest by default), shaped like ``target``.

        Args:
            target: a state with the right structure (arrays or ``ShapeDtypeStruct``s).
            step: which step.
        """
        step = self.latest_step() if step is None else step
        abstract = jax.tree.map(_abstract, target)
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
                params=ocp.args.StandardRestore(abstract.params),
                train=ocp.args.StandardRestore(
                    {"step": abstract.step, "opt_state": abstract.opt_state, "rng": abstract.rng}
                ),
                data=ocp.args.JsonRestore(),
            ),
        )
        train = restored.train
        state = TrainState(
            step=train["step"],
            params=restored.params,
            opt_state=train["opt_state"],
            rng=train["rng"],
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
