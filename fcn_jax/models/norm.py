"""Batch normalisation with ``torch.nn.BatchNorm2d``'s semantics, statistics in ``batch_stats``.

``flax.linen.BatchNorm`` updates its running variance with the *biased* batch variance; torch
updates ``running_var`` with the *unbiased* one (times n / (n - 1), n the values per channel)
while normalising with the biased one. Weights trained in either framework are only exchangeable,
and one training step only equal, if the update is torch's, so this module implements it, with
flax's variable names (``params/scale``, ``params/bias``, ``batch_stats/mean``,
``batch_stats/var``) and flax's momentum convention (the kept fraction: torch's momentum 0.1 is
0.9 here).

Statistics are always computed and kept in float32, whatever the compute dtype (bf16 sums over
a whole image's pixels would lose the mean). The variance is computed in two passes,
``mean((x - mean)^2)``, as torch does, not as ``E[x^2] - E[x]^2`` (which cancels
catastrophically on the large activations of a pad-100 VGG).

Statistics over the global batch (torch's SyncBatchNorm): ``axis_name`` names the mapped axes
the batch is split over (the train step's per-example ``vmap`` axis, and ``pmap``'s device axis
under ``parallel="pmap"``); the per-channel means are averaged over them with ``lax.pmean``.
Under ``jax.jit`` over a sharded batch the mean over the batch axis is global already.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax.numpy as jnp
from jax import lax

from fcn_jax.types import Array

AxisName = str | tuple[str, ...] | None

TORCH_EPS = 1e-5
TORCH_MOMENTUM = 0.9  # torch's default momentum=0.1, as the fraction of the running stat kept


class BatchNorm(nn.Module):
    """Per-channel batch normalisation of NHWC maps, as ``torch.nn.BatchNorm2d``.

    Attributes:
        momentum: fraction of the running statistics kept at each update (torch: 1 - momentum).
        epsilon: added to the variance.
        dtype: output dtype (statistics and the affine transform run in float32).
        axis_name: mapped axes the batch is split over, whose statistics are averaged.
    """

    momentum: float = TORCH_MOMENTUM
    epsilon: float = TORCH_EPS
    dtype: jnp.dtype = jnp.float32
    axis_name: AxisName = None

    @nn.compact
    def __call__(self, x: Array, *, use_running_average: bool) -> Array:
        """Normalise [..., C] over every axis but the last.

        Args:
            x: [N, H, W, C] (any leading axes).
            use_running_average: normalise with the running statistics (evaluation, or training
                with frozen BatchNorm) instead of the batch's, and leave them unchanged.

        Returns:
            [..., C] in ``dtype``. In training (``batch_stats`` mutable), the running mean and
            variance move towards the batch's (the variance's unbiased estimate).
        """
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
        running_mean = self.variable("batch_stats", "mean", jnp.zeros, (c,), jnp.float32)
        running_var = self.variable("batch_stats", "var", jnp.ones, (c,), jnp.float32)
        xf = x.astype(jnp.float32)
        if use_running_average:
            mean, var = running_mean.value, running_var.value
        else:
            axes = tuple(range(x.ndim - 1))
            n = math.prod(x.shape[:-1])
            mapped = self.axis_name is not None and not self.is_initializing()
            mean = xf.mean(axes)
            if mapped:
                mean = lax.pmean(mean, self.axis_name)
            var = jnp.square(xf - mean).mean(axes)
            if mapped:
                var = lax.pmean(var, self.axis_name)
                n = n * lax.psum(1, self.axis_name)
            if not self.is_initializing():
                m = self.momentum
                unbiased = var * (n / jnp.maximum(n - 1, 1))
                running_mean.value = m * running_mean.value + (1 - m) * lax.stop_gradient(mean)
                running_var.value = m * running_var.value + (1 - m) * lax.stop_gradient(unbiased)
        y = (xf - mean) * (scale * lax.rsqrt(var + self.epsilon)) + bias
        return y.astype(self.dtype)
