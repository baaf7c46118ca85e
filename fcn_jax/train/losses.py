"""Per-pixel softmax cross-entropy over valid pixels, returned as (sum, count).

The release sums the loss over pixels (Caffe's ``SoftmaxWithLoss`` with ``normalize: false``),
which is why its learning rates are 1e-10 to 1e-14; the CVPR recipe averages. Returning the sum
and the number of valid pixels lets the step apply the config's normalisation once, after
summing both over micro-batches and devices (:mod:`fcn_jax.train.step`): a step then means the
same thing however its images are split.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fcn_jax.errors import FCNError
from fcn_jax.types import Array

NORMALISATIONS = ("sum", "mean")


def cross_entropy_sum(logits: Array, labels: Array, n_class: int) -> tuple[Array, Array]:
    """Summed cross-entropy over pixels whose label is a class (255 and >= n_class ignored).

    Args:
        logits: [N, H, W, n_class] float.
        labels: [N, H, W] integer labels.
        n_class: number of classes.

    Returns:
        (sum of -log p(label) over valid pixels, number of valid pixels), float32 scalars.
    """
    labels = labels.astype(jnp.int32)
    valid = (labels >= 0) & (labels < n_class)
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(logp, jnp.where(valid, labels, 0)[..., None], axis=-1)[..., 0]
    return jnp.sum(jnp.where(valid, nll, 0.0)), jnp.sum(valid).astype(jnp.float32)


def normalise(loss_sum: Array, count: Array, mode: str) -> Array:
    """Apply the config's normalisation: ``sum`` as is, ``mean`` per valid pixel."""
    if mode == "sum":
        return loss_sum
    if mode == "mean":
        return loss_sum / jnp.maximum(count, 1.0)
    raise FCNError(f"optim.loss must be one of {NORMALISATIONS}, not {mode!r}")
