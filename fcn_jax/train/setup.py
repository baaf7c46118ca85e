"""Preparing a training run: everything :func:`fcn_jax.train.loop.train_and_evaluate` runs.

:func:`prepare_run` checks every input before any compute (config keys, splits, the workdir,
``init.from_``, a config that changed since the run being resumed), then builds the datasets,
the data-parallel layout, the model and the metadata its weights will carry, the params (from
scratch, merged from ``init.from_``, or restored from the workdir's latest snapshot with the
optimiser state, step, RNG and data position: the run continues exactly), the optimiser, the
jitted steps and the data iterator. The model and its metadata are made here and only here.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

from fcn_jax.checkpoint import WeightsMetadata
from fcn_jax.configs import resolve_n_class, resolve_num_steps, spec_from_config
from fcn_jax.data import make_dataset
from fcn_jax.data.base import SegmentationDataset
from fcn_jax.data.pipeline import PipelineOptions, make_pipeline
from fcn_jax.data.transforms import default_buckets
from fcn_jax.errors import FCNError
from fcn_jax.eval.evaluate import COMPUTE_DTYPES, EvalOptions, head_targets
from fcn_jax.models import NetSpec, abstract_variables, init_variables
from fcn_jax.preprocessing import Preprocessing, reconcile
from fcn_jax.train.init import stage_params, stream_trunks
from fcn_jax.train.interrupts import RunProgress
from fcn_jax.train.optim import divergence_warning, make_optimizer, param_labels
from fcn_jax.train.parallel import DataParallel, data_parallel
from fcn_jax.train.snapshots import TrainCheckpoints
from fcn_jax.train.step import Steps, TrainState, create_train_state, make_steps
from fcn_jax.train.workdir import (
    check_resumed_architecture,
    check_resumed_config,
    check_workdir,
    init_source,
)
from fcn_jax.types import PyTree


@dataclasses.dataclass(frozen=True)
class PreparedRun:
    """A training run ready to take its first step.

    Attributes:
        config: the config, ``model.n_class`` resolved from the data.
        workdir: the run's folder.
        chief: whether this process prints, logs and draws (process 0).
        train_ds: the training split.
        eval_ds: the validation split.
        dp: where the state and the batches live.
        metadata: what the trained weights say about themselves.
        start: the step of the snapshot resumed, or None for a new run.
        new_layers: layers ``init.from_`` did not have (left at their initialisation).
        steps_per_epoch: optimiser steps per pass over the training split.
        state: the train state, laid out on the devices.
        steps: the jitted steps.
        iterator: the training data (grain), positioned where the run resumes.
        snapshots: the workdir's snapshots.
        eval_options: how validation scores (as ``eval.py`` would).
        feed_keys: the record keys the step reads (inputs and labels).
    """

    config: Any
    workdir: Path
    chief: bool
    train_ds: SegmentationDataset
    eval_ds: SegmentationDataset
    dp: DataParallel
    metadata: WeightsMetadata
    start: int | None
    new_layers: list[str]
    steps_per_epoch: int
    state: TrainState
    steps: Steps
    iterator: Any
    snapshots: TrainCheckpoints
    eval_options: EvalOptions
    feed_keys: frozenset[str]

    def next_batch(self) -> dict:
        """This host's rows of the next global (micro-)batch, on the devices."""
        batch = next(self.iterator)
        return self.dp.put_batch({k: v for k, v in batch.items() if k in self.feed_keys})


def build_metadata(
    config: Any,
    dataset: SegmentationDataset,
    preprocessing: Preprocessing | None = None,
    eval_resize: int | None = None,
) -> WeightsMetadata:
    """What the trained weights will say about themselves: the network, classes, palette.

    Args:
        config: the experiment config (its ``model``, ``data``, ``eval`` and ``dtype``).
        dataset: the training split (class names and colours of each head).
        preprocessing: the first input's normalisation where the starting weights decide it.
        eval_resize: the starting weights' evaluation resize, used where ``eval.resize`` is
            None.
    """
    spec = spec_from_config(config, preprocessing)
    head_names: tuple[tuple[str, ...], ...] = ()
    if len(spec.heads) > 1:
        classes = dataset.label_classes
        extra = [k for k in classes if k != "label"]
        head_names = tuple(classes[k] for k in extra[: len(spec.heads) - 1])
    palette = tuple(tuple(int(v) for v in c) for c in dataset.palette[: dataset.n_class])
    resize = config.eval.get("resize") or eval_resize
    return WeightsMetadata(
        spec, dataset.class_names, head_names, "fcn-jax", palette=palette, eval_resize=resize
    )


def initial_variables(
    config: Any, spec: NetSpec
) -> tuple[PyTree, WeightsMetadata | None, list[str]]:
    """Fresh variables, merged with ``init.from_``'s if the config names a source.

    New layers are those the source's architecture lacks (:func:`stage_params`), in each
    collection (params, BatchNorm statistics); a two-stream net gets a single-trunk source's
    trunk in every stream.

    Args:
        config: the experiment config (``seed``, ``init.from_``, ``model``).
        spec: the network being trained.

    Returns:
        (``{"params": ..., ...}``, the source's metadata or None, the layers (of params) left
        at their initialisation).

    Raises:
        FCNError: the source does not exist, or does not fit (:func:`merge_params`).
    """
    variables = init_variables(spec, jax.random.PRNGKey(config.seed))
    source = init_source(config)
    if source is None:
        return variables, None, []
    from fcn_jax.convert import load_any_weights

    path = Path(source).expanduser()
    if not path.exists():
        raise FCNError(
            f"init.from_ {path} does not exist: give a weights directory, a training "
            "workdir or a .pth file"
        )
    src_vars, src_meta = load_any_weights(path, config.model.arch, config.model.n_class)

    def trunks(tree: PyTree) -> PyTree:
        return stream_trunks(tree, spec.streams, spec.backbone)

    src_arch = abstract_variables(src_meta.spec)
    merged, new = {}, {}
    for collection, init in variables.items():
        where = f"init.from_ {path}" + ("" if collection == "params" else f" ({collection})")
        loaded = trunks(src_vars.get(collection, {}))
        shapes = trunks(src_arch.get(collection, {}))
        merged[collection], new[collection] = stage_params(loaded, init, where, shapes)
    return merged, src_meta, new["params"]


def check_settings(config: Any, splits: Mapping[str, SegmentationDataset]) -> None:
    """The config's own numbers, before anything is built.

    Args:
        config: the experiment config.
        splits: config key (``data.split``, ``data.eval_split``) -> its dataset.

    Raises:
        FCNError: an empty split, a batch or period below 1, an unknown dtype.
    """
    for key, ds in splits.items():
        if len(ds) == 0:
            raise FCNError(f"{key} {ds.split!r} of {ds.name} holds no images")
    if config.batch_size < 1 or config.optim.accum_steps < 1:
        raise FCNError("batch_size and optim.accum_steps must be >= 1")
    for key in ("log_every", "eval_every", "checkpoint_every"):
        if config[key] < 1:
            raise FCNError(f"config.{key}={config[key]}: it counts steps and must be >= 1")
    if config.dtype not in COMPUTE_DTYPES:
        raise FCNError(f"config.dtype {config.dtype!r} is not one of {COMPUTE_DTYPES}")


def _pipeline(config: Any, dataset: SegmentationDataset, host_batch: int, fill: Any) -> Any:
    """The training data: shuffled, bucketed or cropped, endless, this host's share."""
    buckets = None
    if config.data.buckets or config.batch_size > 1:
        buckets = tuple(
            config.data.buckets or default_buckets(config.data.max_size, config.data.bucket_step)
        )
    options = PipelineOptions(
        batch_size=host_batch,
        shuffle=True,
        seed=config.seed,
        num_epochs=None,
        buckets=buckets,
        centre_crop=config.data.get("centre_crop"),
        resize_range=config.data.get("resize_range"),
        crop_size=config.data.crop_size,
        flip=config.data.flip,
        worker_count=config.data.worker_count,
        fill=fill,
        shard_index=jax.process_index(),
        shard_count=jax.process_count(),
    )
    return iter(make_pipeline(dataset, options))


def _first_variables(
    config: Any,
    spec: NetSpec,
    dataset: SegmentationDataset,
    snapshots: TrainCheckpoints,
    start: int | None,
) -> tuple[PyTree, WeightsMetadata, list[str]]:
    """The variables a run starts from, its metadata, and the layers ``init.from_`` lacked.

    A resumed run's variables are fresh ones the snapshot's replace (``init.from_`` is not read:
    it may even be the workdir itself), with the preprocessing the run was trained with.

    Raises:
        FCNError: the snapshot is of another architecture, ``init.from_`` does not fit, or the
            model's class count is not the data's.
    """
    if start is not None:
        variables, new_layers = init_variables(spec, jax.random.PRNGKey(config.seed)), []
        resumed = check_resumed_architecture(snapshots, spec)
        preprocessing, eval_resize = resumed.preprocessing, resumed.eval_resize
    else:
        variables, source_meta, new_layers = initial_variables(config, spec)
        preprocessing = eval_resize = None
        if source_meta is not None:
            preprocessing = reconcile(config.data.preprocessing, source_meta.preprocessing)
            eval_resize = source_meta.eval_resize
    metadata = build_metadata(config, dataset, preprocessing, eval_resize)
    if metadata.n_class != dataset.n_class:
        raise FCNError(
            f"model.n_class={config.model.n_class} but {dataset!r} has {dataset.n_class} classes"
        )
    return variables, metadata, new_layers


def prepare_run(config: Any, workdir: Path, run: RunProgress | None = None) -> PreparedRun:
    """Check, build and restore everything a run needs (see the module docstring).

    Args:
        config: the experiment config.
        workdir: the run's folder.
        run: told the snapshots as soon as they are open (closed by the caller on an error).

    Raises:
        FCNError: bad input; the message says what and how to fix it.
    """
    check_workdir(config, workdir)
    train_ds = make_dataset(config, config.data.split)
    config = resolve_n_class(config, train_ds)  # model.n_class None: the data's
    eval_ds = make_dataset(config, config.data.eval_split)
    check_settings(config, {"data.split": train_ds, "data.eval_split": eval_ds})
    dp = data_parallel(config.parallel, config.get("num_devices"))
    host_batch = dp.check_batch(config.batch_size)
    # Validation as eval.py would score this config (eval.*, dtype, num_devices, buckets,
    # workers), checked here, before the first step rather than at the first validation.
    eval_options = EvalOptions.from_config(config)
    chief = jax.process_index() == 0
    spec = spec_from_config(config)
    warning = divergence_warning(config)
    if warning and chief:
        print(f"WARNING: {warning}", file=sys.stderr)
    snapshots = TrainCheckpoints(workdir, config.get("keep_checkpoints", 2))
    if run is not None:
        run.checkpoints = snapshots
    start = snapshots.latest_step()
    steps_per_epoch = max(1, len(train_ds) // (config.batch_size * config.optim.accum_steps))
    config = resolve_num_steps(config, steps_per_epoch)  # num_epochs set: num_steps from it

    if start is not None:
        check_resumed_config(snapshots, start, config, spec, steps_per_epoch, chief)
    variables, metadata, new_layers = _first_variables(config, spec, train_ds, snapshots, start)
    tx = make_optimizer(config, variables["params"], steps_per_epoch)
    # The state as one host holds it; dp.put_state replicates it over the devices.
    host_state = create_train_state(variables, tx, config.seed)
    iterator = _pipeline(config, train_ds, host_batch, metadata.spec.mean_pixels())
    if start is not None:
        # Restored as one host's arrays, then laid out for this run's devices: a run saved on
        # any number of devices resumes on any other.
        host_state, data_state = snapshots.restore(host_state)
        iterator.set_state(data_state)
    steps = make_steps(
        metadata.spec,
        tx,
        config.optim.loss,
        config.batch_size,
        config.optim.accum_steps,
        parallel=dp.mode,
        freeze_bn=config.model.get("freeze_bn", False),
        aux_loss_weight=config.optim.get("aux_loss_weight", 0.5),
    )
    keys = set(metadata.inputs) | {k for k, _ in head_targets(metadata.spec).values()}
    return PreparedRun(
        config=config,
        workdir=workdir,
        chief=chief,
        train_ds=train_ds,
        eval_ds=eval_ds,
        dp=dp,
        metadata=metadata,
        start=start,
        new_layers=new_layers,
        steps_per_epoch=steps_per_epoch,
        state=dp.put_state(host_state),
        steps=steps,
        iterator=iterator,
        snapshots=snapshots,
        eval_options=eval_options,
        feed_keys=frozenset(keys),
    )


def start_summary(
    p: PreparedRun, config_file: str | None, overrides: Mapping[str, Any] | None
) -> str:
    """What the prepared run is about to do, in a few lines (printed before compiling).

    Args:
        p: the prepared run.
        config_file: where the config came from.
        overrides: the ``--config.key=value`` overrides given.
    """
    config, start = p.config, p.start
    params = p.dp.local(p.state.params)
    labels = param_labels(params, config.model.learn_upsampling, config.optim.get("trainable"))
    sizes = [int(np.prod(x.shape)) for x in jax.tree.leaves(params)]
    learn = sum(
        n for n, label in zip(sizes, jax.tree.leaves(labels), strict=True) if label != "frozen"
    )
    if start is not None:
        init = f"the checkpoint of step {start} (resuming; init.from_ is not read)"
    elif init_source(config) is None:
        init = "scratch (random initialisation)"
    else:
        init = f"{init_source(config)} (new layers: {', '.join(p.new_layers) or 'none'})"
    platforms = ", ".join(sorted({d.platform for d in p.dp.devices}))
    n, hosts = len(p.dp.devices), jax.process_count()
    given = " ".join(f"--config.{k}={v}" for k, v in (overrides or {}).items())
    lines = {
        "config": config_file or "(given in code)",
        "overrides": given or "none",
        "workdir": f"{p.workdir} ({'new run' if start is None else f'resuming at step {start}'})",
        "init": f"from {init}",
        "devices": f"{n} {platforms} device{'s' * (n > 1)} in {hosts} process"
        f"{'es' * (hosts > 1)}, parallel={p.dp.mode}",
        "data": f"{p.train_ds.name}: {len(p.train_ds)} train images ({p.train_ds.split}), "
        f"{len(p.eval_ds)} val images ({p.eval_ds.split}); batch {config.batch_size} x "
        f"{config.optim.accum_steps} micro-batch(es)",
        "model": f"{config.model.arch}, {config.model.n_class} classes, width "
        f"{config.model.width:g}: {sum(sizes):,} parameters ({learn:,} learn)",
        "steps": f"{start or 0} -> {config.num_steps}: log every {config.log_every}, "
        f"validate every {config.eval_every}, checkpoint every {config.checkpoint_every}",
    }
    return "train.py\n" + "\n".join(f"  {k + ':':<10} {v}" for k, v in lines.items())
