"""The training workdir: what it may be, and what a run resumed in it may change.

A workdir is checked before any work (:func:`check_workdir`): a folder that can be written,
never the ``init.from_`` weights, the data root or a converted weights directory (orbax keeps
only the latest checkpoints of a directory it writes, and would delete their step). A run
resumed there is compared with the config its checkpoint saved (:func:`check_resumed_config`):
changes its params or optimiser state cannot take are refused naming each key, the others are
listed before training continues.
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fcn_jax.checkpoint import WeightsMetadata
from fcn_jax.errors import FCNError
from fcn_jax.models import NetSpec, abstract_variables
from fcn_jax.outputs import output_dir
from fcn_jax.train.optim import state_layout
from fcn_jax.train.snapshots import TrainCheckpoints, training_steps, weights_steps
from fcn_jax.types import PyTree

# init.from_ values meaning "from scratch": --config.init.from_=None arrives as the string "None"
# (ml_collections parses a str field's value as text), and an empty value is the other spelling.
NO_INIT = ("", "None")
# What a resumed run may not change: the checkpoint's params would not fit the model, or its
# optimiser state the optimiser. Other optimiser settings are checked by the state's layout
# (:func:`fcn_jax.train.optim.state_layout`), whatever key changes it.
FIXED_KEYS = (
    "model.arch",
    "model.n_class",
    "model.width",
    "model.streams",
    "model.heads",
    "optim.name",
)
# What train.py writes in a workdir besides the numbered checkpoint folders.
WORKDIR_FILES = ("metrics.jsonl", "tensorboard", "samples")


def init_source(config: Any) -> str | None:
    """``init.from_``, or None for a run from scratch (unset, empty, or the text ``None``)."""
    source = config.init.get("from_")
    return None if source is None or source in NO_INIT else source


def check_workdir(config: Any, workdir: str | Path) -> bool:
    """Check ``--workdir`` before any work; whether it holds a training run to resume.

    The workdir must be a folder that can be written, neither a plain weights directory nor
    the ``init.from_`` weights or the data root, nor a folder containing them: training writes
    checkpoints, logs and samples there, and orbax deletes all but the latest checkpoints, which
    could delete step 0 of a weights directory. A workdir being resumed does not read
    ``init.from_``, so it may name the workdir itself (e.g. a config whose ``init.from_`` is
    an earlier stage, rerun to resume).

    Returns:
        True if the workdir holds a training checkpoint (the run resumes).

    Raises:
        FCNError: the workdir is a file, cannot be written, or is (or contains) an input.
    """
    shown = Path(workdir)
    folder = shown.expanduser().absolute()
    resuming = bool(training_steps(folder))
    inputs = {"data root (config.data.root)": config.data.get("root")}
    if not resuming:
        inputs["init.from_ weights"] = init_source(config)
    output_dir(
        shown,
        "--workdir",
        inputs=inputs,
        files=WORKDIR_FILES,
        deletes="training writes checkpoints, logs and samples there, and orbax deletes all "
        "but the latest checkpoints",
    )
    if not resuming and weights_steps(folder):
        raise FCNError(
            f"--workdir {shown} is a weights directory (steps {weights_steps(folder)}), not a "
            "training workdir: training would add its checkpoints there and delete old steps. "
            f"Choose another --workdir (--config.init.from_={shown} starts from these weights)"
        )
    return resuming


def _flat(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model.arch": ..., ...}`` from a nested (JSON) config."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


_ABSENT = "(absent)"  # a key one of the two configs lacks (the schema changed between runs)


def config_changes(saved: Mapping[str, Any], config: Any) -> list[tuple[str, Any, Any]]:
    """``(key, saved value, value now)`` for every key of the two configs that differs.

    Args:
        saved: the config a run saved in its checkpoint (JSON, nested).
        config: the config of this run.

    Returns:
        The differences, sorted by key; values as JSON has them (tuples become lists).
    """
    old = _flat(saved)
    new = _flat(json.loads(config.to_json_best_effort()))
    for flat in (old, new):  # every spelling of "from scratch" is the same
        if flat.get("init.from_") in NO_INIT:
            flat["init.from_"] = None
    return [
        (key, old.get(key, _ABSENT), new.get(key, _ABSENT))
        for key in sorted(old.keys() | new.keys())
        if old.get(key, _ABSENT) != new.get(key, _ABSENT)
    ]


def _set_key(config: Any, key: str, value: Any) -> None:
    *path, last = key.split(".")
    node = config
    for part in path:
        node = node[part]
    node[last] = value


def refused_changes(
    changes: list[tuple[str, Any, Any]], config: Any, params: PyTree, steps_per_epoch: int
) -> list[str]:
    """The changed keys a resumed run cannot take: :data:`FIXED_KEYS` and optimiser layout.

    A key changes the optimiser state's layout if putting back its saved value alone gives
    another layout than the config's (e.g. a weight decay turned on).

    Args:
        changes: :func:`config_changes`'s output.
        config: the config of this run.
        params: its params or their shapes.
        steps_per_epoch: as for :func:`make_optimizer`.
    """
    refused = [key for key, _, _ in changes if key in FIXED_KEYS]
    layout = state_layout(config, params, steps_per_epoch)
    for key, old, _ in changes:
        if key in refused or old == _ABSENT:
            continue
        trial = copy.deepcopy(config)
        try:
            _set_key(trial, key, old)
            changed = state_layout(trial, params, steps_per_epoch) != layout
        except (AttributeError, KeyError, TypeError, ValueError, FCNError):
            # The saved value no longer fits the schema (a list where a tuple is now): a key
            # the optimiser does not read, whose change is reported all the same.
            continue
        if changed:
            refused.append(key)
    return refused


def _show(value: Any) -> str:
    """A config value as the user would type it back (JSON, but None for null)."""
    return "None" if value is None else value if value == _ABSENT else json.dumps(value)


def check_resumed_config(
    checkpoints: TrainCheckpoints,
    step: int,
    config: Any,
    spec: NetSpec,
    steps_per_epoch: int,
    chief: bool,
) -> None:
    """Refuse changes a resumed run cannot take; print the others (``key: old -> new``)."""
    saved = checkpoints.saved_config(step)
    if saved is None:  # a checkpoint without its config: the architecture check still runs
        return
    changes = config_changes(saved, config)
    if not changes:
        return
    abstract = abstract_variables(spec)["params"]
    refused = refused_changes(changes, config, abstract, steps_per_epoch)
    lines = {key: f"{key}: {_show(old)} -> {_show(new)}" for key, old, new in changes}
    if refused:
        raise FCNError(
            f"--workdir {checkpoints.directory} holds a run (step {step}) whose config differs "
            f"where a resumed run cannot change it: {'; '.join(lines[k] for k in refused)} (the "
            "checkpoint's params or optimiser state would not fit this config); use another "
            f"--workdir (--config.init.from_={checkpoints.directory} starts a new run from its "
            "weights), or keep the run's values"
        )
    if chief:
        note = {"init.from_": "  (not read: the run resumes from its checkpoint)"}
        print(
            f"config changes since the checkpoint of step {step} (resuming with them):\n"
            + "\n".join(f"  {lines[k]}{note.get(k, '')}" for k, _, _ in changes),
            file=sys.stderr,
        )


def check_resumed_architecture(checkpoints: TrainCheckpoints, spec: NetSpec) -> WeightsMetadata:
    """A workdir may only be resumed by the same architecture; its latest metadata.

    (The config comparison names the keys; this also covers checkpoints saved without one.)
    """
    from fcn_jax.checkpoint import load_metadata

    metadata = load_metadata(checkpoints.directory)
    fields = ("arch", "backbone", "heads", "width", "streams", "aux")
    theirs = {f: getattr(metadata.spec, f) for f in fields}
    ours = {f: getattr(spec, f) for f in fields}
    if theirs != ours:
        raise FCNError(
            f"workdir {checkpoints.directory} holds a checkpoint of {theirs}, but the config "
            f"describes {ours}: use another --workdir"
        )
    return metadata
