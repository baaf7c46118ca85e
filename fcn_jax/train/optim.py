"""The paper's optimiser recipes in optax.

Caffe's solver (``voc-fcn*/solver.prototxt`` and the ``net.py`` param specs) as three groups:

- weights: SGD with momentum (Adam where a config asks), L2 weight decay;
- biases: twice the learning rate (``lr_mult: 2``) and no decay (``decay_mult: 0``);
- frozen: zero updates. The upsampling kernels stay bilinear unless a config lets them learn
  (``lr_mult: 0`` in the release), and ``optim.trainable`` can freeze everything but some layers
  (Table 2's FCN-32s-fixed trains only the score layer).

Other recipes need two more knobs: ``optim.lr_mults`` multiplies the rate of the layers a regex
names (torchvision's segmentation recipe trains the FCN-ResNets' auxiliary head at 10x), and
``optim.decay_biases`` decays biases (and BatchNorm's shifts) like weights, as torch's
``weight_decay`` does to every parameter.

optax's momentum SGD keeps ``v = g + m v`` and steps ``-lr v``; Caffe keeps ``v = m v + lr g``
and steps ``-v``: the same trajectory for a constant learning rate.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import jax
import optax
from flax import traverse_util

from fcn_jax.errors import FCNError
from fcn_jax.models.spec import is_upsampling
from fcn_jax.types import PyTree


def param_labels(
    params: PyTree,
    learn_upsampling: bool = False,
    trainable: str | None = None,
    lr_mults: Sequence[tuple[str, float]] = (),
) -> PyTree:
    """The group of every param (same tree structure): its kind and rate multiplier.

    A label is ``weight``, ``bias`` or ``frozen``, followed by ``@x<m>`` for a param whose
    rate is multiplied by ``m`` (``weight@x10``); :func:`parse_label` reads one back.

    Args:
        params: the params (or their shapes).
        learn_upsampling: let the transposed convolutions learn (``upscore*``; SpeedPaper's
            ``upsample_*``).
        trainable: a regex; layers whose name does not match it are frozen (None: all learn).
        lr_mults: ``(regex, multiplier)`` pairs; a param whose path (``aux_classifier/0/kernel``)
            the first matching regex matches from its start (``re.match``) learns at that
            multiple of the rate.
    """
    pattern = re.compile(trainable) if trainable else None
    mults = [(re.compile(regex), float(m)) for regex, m in lr_mults]

    def label(path: tuple[str, ...]) -> str:
        layer, leaf = path[-2], path[-1]
        # Frozen here too, not only by the model's stop_gradient: weight decay would move them.
        if is_upsampling(layer) and not learn_upsampling:
            return "frozen"
        if pattern is not None and not pattern.fullmatch(layer):
            return "frozen"
        kind = "bias" if leaf == "bias" else "weight"
        joined = "/".join(path)
        mult = next((m for regex, m in mults if regex.match(joined)), 1.0)
        return kind if mult == 1.0 else f"{kind}@x{mult:g}"

    flat = traverse_util.flatten_dict(params)
    return traverse_util.unflatten_dict({path: label(path) for path in flat})


def parse_label(label: str) -> tuple[str, float]:
    """``("weight", 10.0)`` from ``"weight@x10"``; ``("bias", 1.0)`` from ``"bias"``."""
    kind, _, mult = label.partition("@x")
    return kind, float(mult) if mult else 1.0


def learning_rate_schedule(config: Any, steps_per_epoch: int | None = None) -> optax.Schedule:
    """The learning rate of each optimiser step, from ``learning_rate`` and the ``optim`` keys.

    - neither key below set: constant ``config.learning_rate``;
    - ``optim.lr_halve_every_epochs = N``: halved at the start of every N-th epoch (SpeedPaper's
      first version: ``if epoch % 50 == 0 and epoch != 0: lr *= 0.5``);
    - ``optim.lr_milestone_epochs = (a, b, ...)``: multiplied by ``optim.lr_gamma`` at the
      start of epochs a, b, ... (torch's ``MultiStepLR`` stepped once per epoch; SpeedPaper's
      second version: milestones (50, 80), gamma 0.1);
    - ``optim.lr_poly_power = p``: ``learning_rate * (1 - step / num_steps) ** p`` at every
      step (torchvision's segmentation recipe: p = 0.9, its ``LambdaLR`` stepped per
      iteration), reaching 0 at ``num_steps``.

    Epochs become steps through ``steps_per_epoch``: epoch ``e`` starts at step
    ``e * steps_per_epoch`` (optax counts the first update as step 0), which is the first step
    at the new rate, as in torch, where the rate changes between two epochs.

    Args:
        config: the experiment config.
        steps_per_epoch: optimiser steps per pass over the training split (for epoch schedules).

    Raises:
        FCNError: an epoch schedule without ``steps_per_epoch``, two schedules at once,
            milestones that are not increasing positive whole epochs, a negative gamma, or a
            poly power that is not positive.
    """
    o = config.optim
    halve = o.get("lr_halve_every_epochs")
    milestones = o.get("lr_milestone_epochs")
    poly = o.get("lr_poly_power")
    given = {"lr_halve_every_epochs": halve, "lr_milestone_epochs": milestones}
    given["lr_poly_power"] = poly
    chosen = [f"optim.{key}" for key, value in given.items() if value]
    if len(chosen) > 1:
        raise FCNError(
            f"{' and '.join(chosen)} are set: choose one schedule (set the others to None)"
        )
    if poly is not None:
        if poly <= 0:
            raise FCNError(f"optim.lr_poly_power={poly:g} must be > 0 (torchvision's: 0.9)")
        # optax counts the first update as step 0, the rate torch's LambdaLR gives iteration 0.
        return optax.polynomial_schedule(config.learning_rate, 0.0, poly, config.num_steps)
    if not halve and not milestones:
        return optax.constant_schedule(config.learning_rate)
    key = "optim.lr_halve_every_epochs" if halve else "optim.lr_milestone_epochs"
    if not steps_per_epoch:
        raise FCNError(f"{key} needs the training split's size (steps per epoch)")
    if halve:
        return optax.exponential_decay(
            config.learning_rate, halve * steps_per_epoch, 0.5, staircase=True
        )
    epochs = list(milestones)
    if not all(isinstance(e, int) and e > 0 for e in epochs) or epochs != sorted(set(epochs)):
        raise FCNError(
            f"optim.lr_milestone_epochs={tuple(milestones)}: give increasing whole epochs > 0, "
            "e.g. (50, 80)"
        )
    gamma = float(o.get("lr_gamma", 0.1))
    if gamma < 0:
        raise FCNError(f"optim.lr_gamma={gamma:g} must be >= 0")
    # piecewise_constant_schedule scales by gamma from each boundary on (step >= boundary).
    return optax.piecewise_constant_schedule(
        config.learning_rate, {e * steps_per_epoch: gamma for e in epochs}
    )


def make_optimizer(
    config: Any, params: PyTree, steps_per_epoch: int | None = None
) -> optax.GradientTransformation:
    """The optimiser a config describes, with the bias / frozen groups of the release.

    Args:
        config: the experiment config (``learning_rate`` and the ``optim`` section).
        params: the params it will update (for their labels).
        steps_per_epoch: optimiser steps per pass over the training split (for epoch schedules).
    """
    o = config.optim
    lr = learning_rate_schedule(config, steps_per_epoch)
    bias_lr = lambda step: o.bias_lr_mult * lr(step)  # noqa: E731  # a schedule is a callable

    def base(rate: optax.Schedule) -> optax.GradientTransformation:
        if o.name == "sgd":
            return optax.sgd(rate, momentum=o.momentum or None)
        if o.name == "adam":
            return optax.adam(rate)
        raise FCNError(f"optim.name must be 'sgd' or 'adam', not {o.name!r}")

    def group(label: str) -> optax.GradientTransformation:
        kind, mult = parse_label(label)
        if kind == "frozen":
            return optax.set_to_zero()
        rate = lr if kind == "weight" else bias_lr
        tx = base(rate if mult == 1.0 else lambda step: mult * rate(step))
        # Caffe's decay_mult 0 for biases; torch's weight_decay decays every parameter.
        if o.weight_decay and (kind == "weight" or o.get("decay_biases", False)):
            tx = optax.chain(optax.add_decayed_weights(o.weight_decay), tx)
        return tx

    lr_mults = _lr_mults(o.get("lr_mults"))
    labels = param_labels(params, config.model.learn_upsampling, o.get("trainable"), lr_mults)
    used = set(jax.tree.leaves(labels))
    if o.get("trainable") and not any(parse_label(u)[0] == "weight" for u in used):
        raise FCNError(
            f"optim.trainable={o.trainable!r} matches no layer (it must match whole names, "
            "e.g. 'score_fr' or 'score_.*'): the whole network would be frozen"
        )
    for regex, _ in lr_mults:
        if not any(re.match(regex, "/".join(p)) for p in traverse_util.flatten_dict(params)):
            raise FCNError(
                f"optim.lr_mults: {regex!r} matches no parameter (it is matched against paths "
                "such as 'aux_classifier/0/kernel', from their start)"
            )
    # Every kind is a group even when unused, so that the state's layout depends on the config
    # (and the multipliers) only, as a resumed run checks.
    names = {"weight", "bias", "frozen"} | used
    return optax.multi_transform({name: group(name) for name in sorted(names)}, labels)


def _lr_mults(value: Any) -> tuple[tuple[str, float], ...]:
    """``optim.lr_mults`` as ``((regex, multiplier), ...)``, checked."""
    if not value:
        return ()
    try:
        pairs = tuple((str(regex), float(mult)) for regex, mult in value)
    except (TypeError, ValueError):
        raise FCNError(
            f"optim.lr_mults={value!r}: give (regex, multiplier) pairs, e.g. "
            "(('aux_classifier', 10.0),)"
        ) from None
    for regex, mult in pairs:
        if mult <= 0:
            raise FCNError(f"optim.lr_mults: multiplier {mult:g} of {regex!r} must be > 0")
        try:
            re.compile(regex)
        except re.error as e:
            raise FCNError(f"optim.lr_mults: {regex!r} is not a regex ({e})") from None
    return pairs


def state_layout(config: Any, params: PyTree, steps_per_epoch: int | None = None) -> Any:
    """The optimiser state's tree structure and leaf shapes, without computing anything.

    Two configs whose layouts differ cannot share a checkpoint's optimiser state (a resumed run
    would fail to restore it): e.g. another ``optim.name``, a weight decay turned on or off,
    another ``optim.trainable`` or a schedule instead of a constant rate.

    Args:
        config: the experiment config.
        params: the params or their shapes (``jax.ShapeDtypeStruct``s).
        steps_per_epoch: as for :func:`make_optimizer`.

    Returns:
        ``(treedef, ((shape, dtype), ...))``, comparable with ``==``.
    """
    tx = make_optimizer(config, params, steps_per_epoch or 1)
    state = jax.eval_shape(tx.init, params)
    leaves, treedef = jax.tree.flatten(state)
    return treedef, tuple((tuple(x.shape), str(x.dtype)) for x in leaves)


def divergence_warning(config: Any) -> str | None:
    """A warning for a summed loss meeting a learning rate that will diverge (NaN).

    The release sums the loss over ~10^5 pixels per image, so its rates are 1e-10 to 1e-14;
    a summed loss at a mean-loss rate such as 1e-4 blows up in a few steps.
    """
    if config.optim.loss == "sum" and config.optim.name == "sgd" and config.learning_rate > 1e-6:
        return (
            f"optim.loss='sum' with learning_rate={config.learning_rate:g}: the summed loss "
            "scales gradients by the pixel count (~1e5 per image) and this rate will likely "
            "diverge to NaN. The release uses 1e-10 (32s) to 1e-14 (8s) with a summed loss; "
            "use optim.loss='mean' for rates like 1e-4."
        )
    return None
