"""The train state and the pure train step.

``train_step(state, batch) -> (state, metrics)`` is written once and jitted with the state
donated. Its loss is the gradient of the *summed* loss, normalised once per optimiser step
(:mod:`fcn_jax.train.losses`), so that accumulating micro-batches (``accum_steps``, Caffe's
``iter_size``) gives exactly the update of one k-times-larger batch.

Dropout keys: each example's key is ``fold_in(fold_in(rng, step), index)`` with ``index`` its
position in the global stream of examples (``(step * accum_steps + micro) * batch + i``), so a
result does not depend on how a step's examples are split into micro-batches or devices.

BatchNorm (a backbone with ``batch_stats``): the forward pass is mapped per example (for the
dropout keys), so BatchNorm averages its statistics over the mapped axis ``batch`` (and over
``pmap``'s device axis too): they are the micro-batch's, over every device, as torch's
SyncBatchNorm gives. Each micro-batch updates the running statistics once, in order, as each
forward pass does in torch. ``freeze_bn`` normalises with the running statistics instead and
keeps them.

An FCN-ResNet with its auxiliary head (``spec.aux``) adds that head's loss on the first head's
labels at ``aux_loss_weight`` (torchvision's ``out + 0.5 * aux``); its pixels are not counted
twice, so with the mean loss the total is the two heads' means, weighted, as torch's.

Data parallelism (``parallel``): the same per-batch gradient function is wrapped
either by ``jax.jit`` over a device mesh (``"sharding"``: the batch is sharded on the ``data``
axis, the state replicated, and XLA turns the sums over the batch into cross-device
reductions) or by ``jax.pmap`` over the named axis ``data`` (``"pmap"``: each device sees its
slice of the batch and the partial sums of gradient, loss and valid-pixel count are
``psum``-med explicitly). Either way the sums are normalised once, after the reduction, so the
update is the one the whole global batch gives one device, whatever the split of void or padded
pixels over devices. (Under ``pmap`` each device's gradient is its own slice's; a gradient
taken inside ``jax.shard_map`` of replicated params would come out summed over devices already,
and a psum on top of it would multiply it by the device count: the tests compare both wrappers
with one device.)
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax import lax

from fcn_jax.eval.heads import head_class_counts, head_targets
from fcn_jax.models import NetSpec, model_state
from fcn_jax.models.fcn_resnet import AUX_HEAD
from fcn_jax.train.losses import cross_entropy_sum, normalise
from fcn_jax.types import Array, PyTree

Metrics = dict[str, Array]
AXIS = "data"  # the data-parallel mesh / pmap axis
EXAMPLES = "batch"  # the per-example vmap axis of the forward pass (BatchNorm averages over it)
PARALLEL_MODES = ("sharding", "pmap")  # the wrappers of the step (config.parallel)


class TrainState(flax.struct.PyTreeNode):
    """Everything a step changes, as one pytree (orbax saves and restores exactly this).

    Attributes:
        step: optimiser steps taken, int32 scalar.
        params: the Flax params.
        opt_state: the optax state.
        rng: uint32[2] PRNG key the dropout keys derive from.
        model_state: the model's other collections (``{"batch_stats": ...}``; ``{}`` without
            BatchNorm).
    """

    step: Array
    params: PyTree
    opt_state: PyTree
    rng: Array
    model_state: PyTree = flax.struct.field(default_factory=dict)

    @property
    def variables(self) -> dict[str, PyTree]:
        """The model's variables, ``{"params": ..., **model_state}``: what the network takes."""
        return {"params": self.params, **self.model_state}


def create_train_state(
    variables: dict[str, PyTree], tx: optax.GradientTransformation, seed: int
) -> TrainState:
    """A fresh state at step 0 from the model's variables (``{"params": ..., ...}``)."""
    params = variables["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        rng=jax.random.PRNGKey(seed),
        model_state=model_state(variables),
    )


@flax.struct.dataclass
class Accumulator:
    """Sums over the micro-batches of one optimiser step.

    Attributes:
        grads: gradient of the summed loss, summed.
        loss: summed loss.
        count: valid pixels.
        model_state: the model state after the micro-batches so far (BatchNorm statistics).
    """

    grads: PyTree
    loss: Array
    count: Array
    model_state: PyTree


class TraceCounter:
    """How many times the gradient computation was traced: one per compilation.

    Incremented by the step's Python body, which runs at trace time only; a test (or the run's
    summary) reads :attr:`count` to see that steps on one shape compile once.
    """

    def __init__(self) -> None:
        self.count = 0

    def __repr__(self) -> str:
        return f"TraceCounter(count={self.count})"


@dataclasses.dataclass(frozen=True)
class Steps:
    """The jitted steps of one training run (:func:`make_steps`).

    Attributes:
        train_step: ``(state, batch) -> (state, metrics)``, one micro-batch per step.
        accumulate: ``(acc, state, batch, micro) -> acc``, summing a micro-batch's gradient
            (``acc`` None for the first; ``micro`` its int32 index in the step).
        apply_accumulated: ``(state, acc) -> (state, metrics)``, the optimiser step.
        traces: compilations of the gradient computation so far.
    """

    train_step: Callable[[TrainState, dict], tuple[TrainState, Metrics]]
    accumulate: Callable[..., Accumulator]
    apply_accumulated: Callable[[TrainState, Accumulator], tuple[TrainState, Metrics]]
    traces: TraceCounter

    def run(self, state: TrainState, batches: Callable[[], dict], accum_steps: int) -> tuple:
        """One optimiser step over ``accum_steps`` micro-batches, each from ``batches()``.

        Returns:
            (the new state, the step's metrics).
        """
        if accum_steps == 1:
            return self.train_step(state, batches())
        acc = None
        for micro in range(accum_steps):
            acc = self.accumulate(acc, state, batches(), jnp.int32(micro))
        return self.apply_accumulated(state, acc)


def make_steps(
    spec: NetSpec,
    tx: optax.GradientTransformation,
    loss_mode: str,
    batch_size: int,
    accum_steps: int = 1,
    parallel: str = "sharding",
    freeze_bn: bool = False,
    dropout_rate: float | None = None,
    aux_loss_weight: float = 0.5,
) -> Steps:
    """Build the jitted steps of one training run.

    Args:
        spec: the network being trained: its inputs (record keys and preprocessing), heads
            (label keys, classes), compute dtype.
        tx: the optimiser.
        loss_mode: ``sum`` or ``mean`` (applied once per optimiser step).
        batch_size: examples per micro-batch (global: over all devices and hosts).
        accum_steps: micro-batches per optimiser step.
        parallel: ``"sharding"`` (``jax.jit``; pass batches sharded over a mesh, or not at all
            on one device) or ``"pmap"`` (``jax.pmap`` over axis ``data``; pass a replicated
            state and batches with a leading device axis, see :mod:`fcn_jax.train.parallel`).
        freeze_bn: BatchNorm normalises with its running statistics and keeps them
            (``model.freeze_bn``); otherwise with the micro-batch's, updating them.
        dropout_rate: the backbone's dropout in training; None for the network's own (the
            paper's 0.5). 0 makes a step deterministic (the torch equality tests).
        aux_loss_weight: weight of the auxiliary head's loss (``spec.aux``; torchvision's 0.5).

    Returns:
        The jitted :class:`Steps`. Under ``pmap`` the metrics carry a leading device axis
        (equal rows).
    """
    if parallel not in PARALLEL_MODES:
        raise ValueError(f"parallel must be one of {PARALLEL_MODES}, got {parallel!r}")
    s = _StepSetup(
        spec=spec,
        tx=tx,
        loss_mode=loss_mode,
        batch_size=batch_size,
        accum_steps=accum_steps,
        pmapped=parallel == "pmap",
        batch_stats=spec.batch_norm and not freeze_bn,
        dropout_rate=dropout_rate,
        aux_loss_weight=float(aux_loss_weight) if spec.aux else 0.0,
        targets=head_targets(spec),
        classes=head_class_counts(spec),
        traces=TraceCounter(),
    )
    bound = [functools.partial(f, s) for f in (_train_step, _accumulate, _apply_accumulated)]
    # The state (and the accumulator) is donated: updated in place, no second copy of params
    # and optimiser state on the device.
    if s.pmapped:
        pmap = functools.partial(jax.pmap, axis_name=AXIS, donate_argnums=0)
        train_step, accumulate, apply_accumulated = bound
        return Steps(
            pmap(train_step),
            pmap(accumulate, in_axes=(0, 0, 0, None)),
            pmap(apply_accumulated),
            s.traces,
        )
    return Steps(*(jax.jit(f, donate_argnums=0) for f in bound), s.traces)


@dataclasses.dataclass(frozen=True)
class _StepSetup:
    """What the step functions read besides their arguments (:func:`make_steps`'s)."""

    spec: NetSpec
    tx: optax.GradientTransformation
    loss_mode: str
    batch_size: int
    accum_steps: int
    pmapped: bool
    batch_stats: bool  # BatchNorm uses (and updates) the batch's statistics
    dropout_rate: float | None  # None: the network's own
    aux_loss_weight: float  # 0 without an auxiliary head
    targets: dict[str, tuple[str, int]]  # head -> (label key, classes): head_targets
    classes: dict[str, int]  # head -> classes
    traces: TraceCounter


def _summed_loss(
    s: _StepSetup, params: PyTree, state: PyTree, batch: dict, rng: Array, first: Array
) -> tuple:
    """(summed loss, (valid pixels, new model state)) of a micro-batch starting at ``first``."""
    inputs = s.spec.preprocess(batch)
    n = batch[s.spec.inputs[0]].shape[0]
    if s.pmapped:  # this device's slice starts at its index times the per-device batch
        first = first + lax.axis_index(AXIS) * n
    keys = jax.vmap(lambda i: jax.random.fold_in(rng, first + i))(jnp.arange(n))
    variables = {"params": params, **state}
    mutable = ["batch_stats"] if s.batch_stats else False
    overrides: dict[str, Any] = {"freeze_bn": not s.batch_stats}
    if s.dropout_rate is not None:
        overrides["dropout_rate"] = s.dropout_rate
    if s.batch_stats:  # statistics over the examples (vmap) of every device (pmap)
        overrides["bn_axis_name"] = (AXIS, EXAMPLES) if s.pmapped else EXAMPLES

    def one(x: Any, key: Array) -> Any:  # each example with its own dropout key
        x1 = jax.tree.map(lambda a: a[None], x)
        out = s.spec.apply(
            variables, x1, overrides=overrides, train=True, rngs={"dropout": key}, mutable=mutable
        )
        out, updated = out if mutable else (out, state)
        return jax.tree.map(lambda a: a[0], out), updated

    # The updated statistics are the same for every example (averaged over the axis).
    logits, new_state = jax.vmap(one, axis_name=EXAMPLES, out_axes=(0, None))(inputs, keys)
    loss, count = jnp.zeros(()), jnp.zeros(())
    for head, (key, _) in s.targets.items():
        part, c = cross_entropy_sum(logits[head], batch[key], s.classes[head])
        loss, count = loss + part, count + c
    if s.aux_loss_weight:  # the first head's labels; its pixels are counted once, above
        main, (key, _) = next(iter(s.targets.items()))
        part, _ = cross_entropy_sum(logits[AUX_HEAD], batch[key], s.classes[main])
        loss = loss + s.aux_loss_weight * part
    return loss, (count, new_state)


def _grads_of_sum(s: _StepSetup, state: TrainState, model: PyTree, batch: dict, first: Array):
    """(gradient of the summed loss, summed loss, valid pixels, new model state).

    The sums are this device's partial sums; ``model`` is the model state the micro-batch
    starts from.
    """
    s.traces.count += 1  # at trace time only: one per compilation
    rng = jax.random.fold_in(state.rng, state.step)
    loss_fn = functools.partial(_summed_loss, s)
    (loss, (count, model)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, model, batch, rng, first
    )
    return grads, loss, count, model


def _reduce(s: _StepSetup, grads: PyTree, loss: Array, count: Array) -> tuple:
    """Sum the per-device partial sums (pmap); under jit the sums are global already."""
    return lax.psum((grads, loss, count), AXIS) if s.pmapped else (grads, loss, count)


def _apply(
    s: _StepSetup, state: TrainState, grads: PyTree, loss: Array, count: Array, model: PyTree
) -> tuple[TrainState, Metrics]:
    """Normalise the summed gradient once and take the optimiser step."""
    scale = 1.0 / jnp.maximum(count, 1.0) if s.loss_mode == "mean" else 1.0
    grads = jax.tree.map(lambda g: g * scale, grads)
    updates, opt_state = s.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {
        "loss": normalise(loss, count, s.loss_mode),
        "pixels": count,
        "grad_norm": optax.tree.norm(grads),
    }
    new = state.replace(step=state.step + 1, params=params, opt_state=opt_state, model_state=model)
    return new, metrics


def _train_step(s: _StepSetup, state: TrainState, batch: dict) -> tuple[TrainState, Metrics]:
    first = state.step * s.accum_steps * s.batch_size
    grads, loss, count, model = _grads_of_sum(s, state, state.model_state, batch, first)
    return _apply(s, state, *_reduce(s, grads, loss, count), model)


def _accumulate(
    s: _StepSetup, acc: Accumulator | None, state: TrainState, batch: dict, micro: Array
) -> Accumulator:
    # Per-device partial sums under pmap: reduced once, in _apply_accumulated.
    first = (state.step * s.accum_steps + micro) * s.batch_size
    model = state.model_state if acc is None else acc.model_state
    grads, loss, count, model = _grads_of_sum(s, state, model, batch, first)
    if acc is None:
        return Accumulator(grads, loss, count, model)
    grads = jax.tree.map(jnp.add, acc.grads, grads)
    return Accumulator(grads, acc.loss + loss, acc.count + count, model)


def _apply_accumulated(
    s: _StepSetup, state: TrainState, acc: Accumulator
) -> tuple[TrainState, Metrics]:
    return _apply(s, state, *_reduce(s, acc.grads, acc.loss, acc.count), acc.model_state)
