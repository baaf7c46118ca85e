"""``train_and_evaluate(config, workdir)``: the training loop behind train.py.

Everything that can be wrong with the inputs (config keys, splits, the workdir, ``init.from_``,
a config that changed since the run being resumed) is checked before any compute starts. Then:
restore the latest checkpoint of the workdir if there is one (params, optimiser state, step,
RNG and the data iterator's position: the run continues exactly; ``init.from_`` is not read),
else initialise (optionally copying layers from ``init.from_``); train with a progress bar,
validating and checkpointing periodically.

SIGINT (Ctrl-C) and SIGTERM stop training cleanly at the end of the current step
(:mod:`fcn_jax.train.interrupts`); the workdir's rules and what a resumed run may change are in
:mod:`fcn_jax.train.workdir`.

No host round-trip inside the loop except the periodic read of the step's metrics for the
progress bar and logs, which is also where a NaN/Inf loss stops training (checkpoints are
checked finite before they are written, so nothing after the last good step is saved).

Data parallel over every device of every host (:mod:`fcn_jax.train.parallel`). With several
hosts each reads its share of every global batch, all write the checkpoint together (orbax
coordinates them), each validates on its own devices (the same numbers everywhere), and only
process 0 prints, logs and draws.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from PIL import Image
from tqdm import tqdm

from fcn_jax.checkpoint import WeightsMetadata
from fcn_jax.configs import model_from_config, resolve_n_class
from fcn_jax.data import make_dataset
from fcn_jax.data.base import SegmentationDataset
from fcn_jax.data.pipeline import PipelineOptions, make_pipeline
from fcn_jax.data.transforms import default_buckets
from fcn_jax.errors import FCNError
from fcn_jax.eval.evaluate import COMPUTE_DTYPES, EvalOptions, evaluate, head_targets
from fcn_jax.models import FCN, init_params
from fcn_jax.preprocessing import PRESETS, Preprocessing, reconcile
from fcn_jax.train.interrupts import (
    Interrupted,
    Interrupts,
    RunProgress,
    close_after_error,
    stopped,
)
from fcn_jax.train.optim import (
    divergence_warning,
    learning_rate_schedule,
    make_optimizer,
    param_labels,
)
from fcn_jax.train.parallel import DataParallel, data_parallel
from fcn_jax.train.snapshots import TrainCheckpoints
from fcn_jax.train.step import create_train_state, make_steps
from fcn_jax.train.workdir import (
    check_resumed_architecture,
    check_resumed_config,
    check_workdir,
    init_source,
)
from fcn_jax.types import PyTree
from fcn_jax.visualize import colourise

KILL_HOOK = "FCN_JAX_KILL_AFTER_CHECKPOINT"  # tests: SIGKILL after this step's checkpoint


def _preprocessing(name: str) -> Preprocessing:
    if name not in PRESETS:
        raise FCNError(f"config.data.preprocessing {name!r} is not one of {sorted(PRESETS)}")
    return PRESETS[name]


def build_metadata(
    config: Any, dataset: SegmentationDataset, preprocessing: Preprocessing | None = None
) -> WeightsMetadata:
    """What the trained weights will say about themselves (classes, inputs, preprocessing)."""
    m, d = config.model, config.data
    modalities = tuple(d.modalities)
    streams = tuple(m.streams)
    presets = {"image": PRESETS.get(d.preprocessing), "hha": PRESETS["caffe-nyud-hha"]}
    first = preprocessing or _preprocessing(d.preprocessing)
    heads = tuple(h for h, _ in m.heads)
    head_names: tuple[tuple[str, ...], ...] = ()
    if heads:
        classes = dataset.label_classes
        extra = [k for k in classes if k != "label"]
        head_names = tuple(classes[k] for k in extra[: len(heads) - 1])
    palette = tuple(tuple(int(v) for v in c) for c in dataset.palette[: dataset.n_class])
    return WeightsMetadata(
        arch=m.arch,
        n_class=m.n_class,
        class_names=dataset.class_names,
        width=m.width,
        preprocessing=first if modalities[0] == "image" else presets.get(modalities[0], first),
        source="fcn-jax",
        palette=palette,
        inputs=modalities,
        input_preprocessing=tuple(presets[k] for k in modalities[1:]),
        streams=streams,
        heads=heads,
        head_class_names=head_names,
    )


def copy_layers(params: PyTree, source: PyTree, where: str) -> tuple[PyTree, list[str]]:
    """Copy every param of ``source`` whose path and shape match ``params`` (staged training).

    FCN-16s from FCN-32s, FCN-8s from FCN-16s: the trunk and ``score_fr`` carry over; new
    layers keep their initialisation (score layers zero, upsampling bilinear), so training
    starts exactly at the previous stage's predictions.

    Returns:
        (the new params, the layers left at their initialisation).

    Raises:
        FCNError: a layer present in both with different shapes (e.g. another class count), or
            no layer in common.
    """
    target = traverse_util.flatten_dict(params)
    src = traverse_util.flatten_dict(source)
    mismatched = [
        f"{'/'.join(p)}: {tuple(src[p].shape)} there, {tuple(v.shape)} here"
        for p, v in target.items()
        if p in src and tuple(src[p].shape) != tuple(v.shape)
    ]
    if mismatched:
        raise FCNError(f"init.from_ {where} does not fit this model: " + "; ".join(mismatched[:5]))
    copied = {p: jnp.asarray(src[p]) for p in target if p in src}
    if not copied:
        raise FCNError(f"init.from_ {where} shares no layer with this model")
    new_layers = sorted({"/".join(p[:-1]) for p in target if p not in src})
    return traverse_util.unflatten_dict({**target, **copied}), new_layers


def initial_params(config: Any, model: FCN) -> tuple[PyTree, WeightsMetadata | None, list[str]]:
    """Fresh params, with ``init.from_``'s layers copied in; its metadata if it has one."""
    params = init_params(model, jax.random.PRNGKey(config.seed))
    source = init_source(config)
    if source is None:
        return params, None, []
    from fcn_jax.convert import load_any_weights

    path = Path(source).expanduser()
    if not path.exists():
        raise FCNError(
            f"init.from_ {path} does not exist: give a weights directory, a training "
            "workdir or a .pth file"
        )
    src_params, src_meta = load_any_weights(path, config.model.arch, config.model.n_class)
    if model.streams and "vgg16" in src_params:
        # One trunk for every stream (the release initialises both from VGG16): vgg16/conv1_1
        # -> vgg16color/conv1_1color, vgg16hha/conv1_1hha.
        for s in model.streams:
            src_params[f"vgg16{s}"] = {f"{k}{s}": v for k, v in src_params["vgg16"].items()}
    params, new_layers = copy_layers(params, src_params, str(path))
    return params, src_meta, new_layers


@functools.cache
def _predict_fn(metadata: WeightsMetadata) -> Any:
    """Jitted ``(params, inputs) -> class map`` of the first head (compiled once per run)."""
    model = metadata.model()

    @jax.jit
    def predict(params: PyTree, inputs: dict) -> jax.Array:
        logits = model.apply({"params": params}, metadata.preprocess(inputs))
        logits = logits[metadata.heads[0]] if metadata.heads else logits
        return jnp.argmax(logits, -1).astype(jnp.uint8)

    return predict


def _sample_picture(
    params: PyTree, metadata: WeightsMetadata, record: dict, palette: np.ndarray
) -> np.ndarray:
    """Image | label | prediction for one validation record."""
    inputs = {k: record[k][None] for k in metadata.inputs}
    pred = np.asarray(_predict_fn(metadata)(params, inputs)[0])
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


def train_and_evaluate(
    config: Any,
    workdir: str | Path,
    progress: bool = True,
    *,
    config_file: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Train (or resume) as ``config`` says, in ``workdir``.

    Args:
        config: the experiment config.
        workdir: the run's folder (checked first, by :func:`check_workdir`).
        progress: show a progress bar.
        config_file: where the config came from, for the start-of-run summary.
        overrides: the ``--config.key=value`` overrides given, for the summary.

    Returns:
        A summary: final step, last validation metrics, compilations, seconds per step.

    Raises:
        FCNError: bad input (the message says what and how to fix it), or a non-finite loss.
        TrainingInterrupted: SIGINT or SIGTERM arrived (handled when called from the main
            thread), once any checkpoint being written was finished.
    """
    workdir = Path(workdir)
    interrupts = Interrupts()
    run = RunProgress()
    with interrupts.installed():
        try:
            return _train(config, workdir, progress, interrupts, run, config_file, overrides)
        except Interrupted as e:
            raise stopped(e.signum, run, workdir) from None
        except Exception:
            close_after_error(run)
            raise


def _start_summary(
    config: Any,
    config_file: str | None,
    overrides: Mapping[str, Any] | None,
    workdir: Path,
    start: int | None,
    new_layers: list[str],
    dp: DataParallel,
    datasets: tuple[SegmentationDataset, SegmentationDataset],
    params: PyTree,
) -> str:
    """What this run is about to do, in a few lines (printed before the first compilation)."""
    labels = param_labels(params, config.model.learn_upsampling, config.optim.get("trainable"))
    sizes = [int(np.prod(x.shape)) for x in jax.tree.leaves(params)]
    total = sum(sizes)
    learn = sum(
        n for n, label in zip(sizes, jax.tree.leaves(labels), strict=True) if label != "frozen"
    )
    if start is not None:
        init = f"the checkpoint of step {start} (resuming; init.from_ is not read)"
    elif init_source(config) is None:
        init = "scratch (random initialisation)"
    else:
        init = f"{init_source(config)} (new layers: {', '.join(new_layers) or 'none'})"
    platforms = ", ".join(sorted({d.platform for d in dp.devices}))
    n, hosts = len(dp.devices), jax.process_count()
    train_ds, eval_ds = datasets
    given = " ".join(f"--config.{k}={v}" for k, v in (overrides or {}).items())
    lines = {
        "config": config_file or "(given in code)",
        "overrides": given or "none",
        "workdir": f"{workdir} ({'new run' if start is None else f'resuming at step {start}'})",
        "init": f"from {init}",
        "devices": f"{n} {platforms} device{'s' * (n > 1)} in {hosts} process"
        f"{'es' * (hosts > 1)}, parallel={dp.mode}",
        "data": f"{train_ds.name}: {len(train_ds)} train images ({train_ds.split}), "
        f"{len(eval_ds)} val images ({eval_ds.split}); batch {config.batch_size} x "
        f"{config.optim.accum_steps} micro-batch(es)",
        "model": f"{config.model.arch}, {config.model.n_class} classes, width "
        f"{config.model.width:g}: {total:,} parameters ({learn:,} learn)",
        "steps": f"{start or 0} -> {config.num_steps}: log every {config.log_every}, "
        f"validate every {config.eval_every}, checkpoint every {config.checkpoint_every}",
    }
    return "train.py\n" + "\n".join(f"  {k + ':':<10} {v}" for k, v in lines.items())


def _restart_clock(bar: tqdm, n: int) -> None:
    """Rates and ETA from here on: the first step's compilation would skew them for minutes."""
    bar.reset()
    bar.n = bar.initial = bar.last_print_n = n
    bar.set_postfix_str("")


def _train(
    config: Any,
    workdir: Path,
    progress: bool,
    interrupts: Interrupts,
    run: RunProgress,
    config_file: str | None,
    overrides: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """:func:`train_and_evaluate`'s body; ``run`` tells the caller how far it got."""
    # ---- everything checked before any compute
    check_workdir(config, workdir)
    train_ds = make_dataset(config, config.data.split)
    config = resolve_n_class(config, train_ds)  # model.n_class None: the data's
    eval_ds = make_dataset(config, config.data.eval_split)
    for name, ds in (("data.split", train_ds), ("data.eval_split", eval_ds)):
        if len(ds) == 0:
            raise FCNError(f"{name} {ds.split!r} of {ds.name} holds no images")
    if config.batch_size < 1 or config.optim.accum_steps < 1:
        raise FCNError("batch_size and optim.accum_steps must be >= 1")
    for key in ("log_every", "eval_every", "checkpoint_every"):
        if config[key] < 1:
            raise FCNError(f"config.{key}={config[key]}: it counts steps and must be >= 1")
    dp = data_parallel(config.parallel, config.get("num_devices"))
    host_batch = dp.check_batch(config.batch_size)
    if config.dtype not in COMPUTE_DTYPES:
        raise FCNError(f"config.dtype {config.dtype!r} is not one of {COMPUTE_DTYPES}")
    chief = jax.process_index() == 0  # prints, logs and draws
    model = model_from_config(config)
    warning = divergence_warning(config)
    if warning and chief:
        print(f"WARNING: {warning}", file=sys.stderr)
    checkpoints = TrainCheckpoints(workdir, config.get("keep_checkpoints", 2))
    run.checkpoints = checkpoints
    start = checkpoints.latest_step()
    steps_per_epoch = max(1, len(train_ds) // (config.batch_size * config.optim.accum_steps))

    if start is not None:
        check_resumed_config(checkpoints, start, config, model, steps_per_epoch, chief)
        # The checkpoint's params replace these: init.from_ is not read (it may even be the
        # workdir itself), and the preprocessing is the one the run was trained with.
        params, new_layers = init_params(model, jax.random.PRNGKey(config.seed)), []
        preprocessing = check_resumed_architecture(checkpoints, model).preprocessing
    else:
        params, source_meta, new_layers = initial_params(config, model)
        preprocessing = None
        if source_meta is not None:
            preprocessing = reconcile(config.data.preprocessing, source_meta.preprocessing)
    metadata = build_metadata(config, train_ds, preprocessing)
    if len(metadata.head_classes[metadata.heads[0] if metadata.heads else ""]) != train_ds.n_class:
        raise FCNError(
            f"model.n_class={config.model.n_class} but {train_ds!r} has {train_ds.n_class} classes"
        )
    tx = make_optimizer(config, params, steps_per_epoch)
    # The state as one host holds it; dp.put_state replicates it over the devices.
    host_state = create_train_state(params, tx, config.seed)

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
        crop_size=config.data.crop_size,
        flip=config.data.flip,
        worker_count=config.data.worker_count,
        fill=metadata.mean_pixels(),
        shard_index=jax.process_index(),
        shard_count=jax.process_count(),
    )
    iterator = iter(make_pipeline(train_ds, options))
    interrupts.check()  # the setup can take a while (init.from_, a full-size init)
    if chief:
        summary = _start_summary(
            config,
            config_file,
            overrides,
            workdir,
            start,
            new_layers,
            dp,
            (train_ds, eval_ds),
            params,
        )
        print(summary, file=sys.stderr, flush=True)
    if start is not None:
        # Restored as one host's arrays, then laid out for this run's devices: a run saved on
        # any number of devices resumes on any other.
        host_state, data_state = checkpoints.restore(host_state)
        iterator.set_state(data_state)
    state = dp.put_state(host_state)
    interrupts.check()

    train_step, accumulate, apply_accumulated, traces = make_steps(
        model,
        metadata,
        tx,
        config.optim.loss,
        config.batch_size,
        config.optim.accum_steps,
        parallel=dp.mode,
    )
    # Validation as eval.py would score this config (eval.*, dtype, num_devices, buckets,
    # workers), checked here, before the first step rather than at the first validation.
    eval_options = EvalOptions.from_config(config)
    keys = set(metadata.inputs) | {k for k, _ in head_targets(metadata).values()}
    palette = metadata.palette_array()
    sample = eval_ds[0]
    log_path = workdir / "metrics.jsonl"
    from tensorboardX import SummaryWriter

    writer = SummaryWriter(str(workdir / "tensorboard")) if chief else None
    run.writer = writer
    config_json = json.loads(config.to_json_best_effort())
    kill_at = int(os.environ.get(KILL_HOOK, "-1"))
    step = int(dp.local(state.step))
    run.step = step
    last_saved = start
    last_eval: dict[str, Any] = {}
    eval_compilations = 0
    compiling = step < config.num_steps  # until the first step has run
    bar = tqdm(
        total=config.num_steps,
        initial=step,
        unit="step",
        desc="train",
        postfix="compiling..." if compiling else None,
        disable=not (progress and chief),
    )
    run.bar = bar
    t_start = time.perf_counter()
    # Rates count from the end of the first step (step0 at t0): not the compilation.
    t0, step0 = t_start, step
    metrics = None

    def save(mean_iou: float | None = None) -> None:
        nonlocal last_saved
        if not _all_finite(dp.local(state.params)):
            raise FCNError(
                f"params are not finite at step {step}; the last good checkpoint "
                f"is step {last_saved}"
            )
        checkpoints.save(dp.saveable(state), metadata, iterator.get_state(), config_json, mean_iou)
        last_saved = step
        if step == kill_at:
            checkpoints.wait()
            os.kill(os.getpid(), signal.SIGKILL)

    while step < config.num_steps:
        interrupts.check()  # between steps: nothing half done (a save is awaited when stopping)
        if config.optim.accum_steps == 1:
            state, metrics = train_step(state, _feed(dp, next(iterator), keys))
        else:
            acc = None
            for micro in range(config.optim.accum_steps):
                acc = accumulate(acc, state, _feed(dp, next(iterator), keys), jnp.int32(micro))
            state, metrics = apply_accumulated(state, acc)
        step += 1
        run.step = step
        if compiling:
            jax.block_until_ready(metrics)  # the step ran, not only compiled and dispatched
            compiling = False
            _restart_clock(bar, step)
            t0, step0 = time.perf_counter(), step
        else:
            bar.update(1)
        if step % config.log_every == 0 or step == config.num_steps:
            host = dp.metrics(metrics)
            if not np.isfinite(host["loss"]):
                raise FCNError(
                    f"the loss became {host['loss']} at step {step}: stopping. The last good "
                    f"checkpoint is step {last_saved} in {workdir}; lower the learning rate or "
                    "check optim.loss (a summed loss needs rates ~1e-10)"
                )
            lr = float(learning_rate_schedule(config, steps_per_epoch)(step))
            postfix = {"loss": f"{host['loss']:.4g}", "lr": f"{lr:.3g}"}
            if step > step0:
                images = (step - step0) * config.batch_size * config.optim.accum_steps
                postfix["img_s"] = f"{images / (time.perf_counter() - t0):.1f}"
            bar.set_postfix(postfix)
            if chief:
                _log(log_path, writer, step, {f"train/{k}": v for k, v in host.items()})
        if step % config.eval_every == 0 or step == config.num_steps:
            local_params = dp.local(state.params)
            result = evaluate(
                local_params,
                metadata,
                eval_ds,
                **dataclasses.asdict(eval_options),
                progress=False,
            )
            eval_compilations += result.compilations
            first = next(iter(result.metrics.values()))
            last_eval = {
                "pixel_acc": first.pixel_acc,
                "mean_acc": first.mean_acc,
                "mean_iou": first.mean_iou,
                "fw_iou": first.fw_iou,
            }
            if chief:
                _log(log_path, writer, step, {f"eval/{k}": v for k, v in last_eval.items()})
                picture = _sample_picture(local_params, metadata, sample, palette)
                samples = workdir / "samples"
                samples.mkdir(exist_ok=True)
                Image.fromarray(picture).save(samples / f"step_{step:07d}.png")
                writer.add_image("eval/sample", picture, step, dataformats="HWC")
                tqdm.write(
                    f"step {step}: pixel acc {100 * first.pixel_acc:.2f}  mean acc "
                    f"{100 * first.mean_acc:.2f}  mean IU {100 * first.mean_iou:.2f}  f.w. IU "
                    f"{100 * first.fw_iou:.2f}"
                )
            if step % config.checkpoint_every == 0 or step == config.num_steps:
                save(first.mean_iou)
                continue
        if step % config.checkpoint_every == 0 or step == config.num_steps:
            save()
    bar.close()
    checkpoints.wait()
    checkpoints.close()
    if writer is not None:
        writer.close()
    seconds = time.perf_counter() - t_start
    return {
        "step": step,
        "eval": last_eval,
        "compilations": traces[0],
        "eval_compilations": eval_compilations,
        "seconds_per_step": seconds / max(step - (start or 0), 1),
        "workdir": str(workdir),
        "devices": len(dp.devices),
        "processes": jax.process_count(),
        "parallel": dp.mode,
    }


def _feed(dp: DataParallel, batch: dict, keys: set[str]) -> dict:
    """The arrays the step reads, on the devices (this host's rows of the global batch)."""
    return dp.put_batch({k: v for k, v in batch.items() if k in keys})


def _log(path: Path, writer: Any, step: int, values: dict[str, float]) -> None:
    with path.open("a") as f:
        f.write(json.dumps({"step": step, **values}) + "\n")
    for key, value in values.items():
        writer.add_scalar(key, value, step)
