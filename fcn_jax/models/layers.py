"""Building blocks of the FCN: layer geometry, crop offsets, ceil-mode pooling, bilinear kernels.

The Caffe release aligns every skip connection and the final output with a ``Crop`` layer whose
offsets Caffe derives from the layer geometry (``caffe/python/caffe/coord_map.py``). torchfcn
types the resulting numbers in (19, 27, 5, 31, 9); here they are derived from the same table of
layer geometries that builds the network, so changing a layer changes its offsets with it.

A *coordinate map* ``y = scale * x + shift`` takes a pixel coordinate of a layer's input to the
corresponding coordinate of its output (the centre of the receptive field, in the Caffe sense):

- convolution / pooling with kernel k, stride s, padding p: ``y = (x + p - (k - 1) / 2) / s``;
- transposed convolution with kernel k, stride s, padding p: ``y = s * x + (k - 1) / 2 - p``.

Two feature maps that are both images of the input under maps with the same scale differ by a
constant shift; that difference is the crop offset that aligns them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np

from fcn_jax.models.conv import on_cpu
from fcn_jax.types import Array


@dataclasses.dataclass(frozen=True)
class CoordMap:
    """Affine map ``y = scale * x + shift`` between pixel coordinates of two feature maps.

    Exact rationals, so offsets such as 19 come out as integers rather than 18.999999.
    """

    scale: Fraction = Fraction(1)
    shift: Fraction = Fraction(0)

    def then(self, other: CoordMap) -> CoordMap:
        """The map that applies ``self`` first, then ``other``."""
        return CoordMap(self.scale * other.scale, other.scale * self.shift + other.shift)

    @staticmethod
    def conv(kernel: int, stride: int = 1, padding: int = 0) -> CoordMap:
        """Map of a convolution or pooling layer (input -> output coordinates)."""
        s = Fraction(stride)
        return CoordMap(1 / s, (padding - Fraction(kernel - 1, 2)) / s)

    @staticmethod
    def deconv(kernel: int, stride: int, padding: int = 0) -> CoordMap:
        """Map of a transposed convolution (input -> output coordinates)."""
        return CoordMap(Fraction(stride), Fraction(kernel - 1, 2) - padding)


def crop_offset(cropped: CoordMap, reference: CoordMap) -> int:
    """Offset at which to crop ``cropped`` so that it lines up with ``reference``.

    Both maps must start from the same ancestor (the network input) and end at the same scale.

    Args:
        cropped: input -> coordinates of the larger map that gets cropped.
        reference: input -> coordinates of the map it must align with.

    Returns:
        The non-negative integer offset ``o`` such that ``cropped[o + i]`` corresponds to
        ``reference[i]``.
    """
    if cropped.scale != reference.scale:
        raise ValueError(f"cannot align maps of scales {cropped.scale} and {reference.scale}")
    offset = cropped.shift - reference.shift
    if offset.denominator != 1 or offset < 0:
        raise ValueError(f"crop offset {offset} is not a non-negative integer")
    return int(offset)


def bilinear_kernel(size: int) -> np.ndarray:
    """The 2-D bilinear interpolation filter of ``surgery.upsample_filt`` in the Caffe release.

    Args:
        size: kernel side k (``2 * factor`` for a ``factor``-times upsampling).

    Returns:
        [k, k] float32 filter ``(1 - |i - c| / f) * (1 - |j - c| / f)`` with ``f = (k + 1) // 2``
        and centre ``c = f - 1`` for odd k, ``f - 0.5`` for even k.
    """
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    ramp = 1 - np.abs(np.arange(size) - center) / factor
    return np.outer(ramp, ramp).astype(np.float32)


def bilinear_init(
    key: jax.Array | None, shape: Sequence[int], dtype: jnp.dtype = jnp.float32
) -> Array:
    """Initialiser for a [k, k, C, C] transposed-conv kernel: bilinear on the channel diagonal.

    Class c is upsampled from class c only, as in the release (the filter is symmetric, so the
    kernel flip that separates convolution from correlation does not matter here).
    """
    del key  # deterministic: the filter has no randomness
    kh, kw, c_in, c_out = shape
    if kh != kw or c_in != c_out:
        raise ValueError(f"bilinear init needs a square kernel and C_in == C_out, got {shape}")
    kernel = np.zeros(shape, np.float32)
    kernel[:, :, np.arange(c_in), np.arange(c_out)] = bilinear_kernel(kh)[:, :, None]
    return jnp.asarray(kernel, dtype)


def _windows(x: Array) -> Array:
    """[N, H, W, C] -> [N, ceil(H/2), ceil(W/2), C, 4]: each 2x2 window, row-major, -inf padded."""
    n, h, w, c = x.shape
    x = jnp.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), constant_values=-jnp.inf)
    x = x.reshape(n, (h + 1) // 2, 2, (w + 1) // 2, 2, c)
    return x.transpose(0, 1, 3, 5, 2, 4).reshape(n, (h + 1) // 2, (w + 1) // 2, c, 4)


@jax.custom_vjp
def max_pool_ceil(x: Array) -> Array:
    """2x2 stride-2 max pooling with Caffe's ceil rounding.

    Caffe computes pooled sizes as ``ceil((n - 2) / 2) + 1 = ceil(n / 2)``: an odd-sized map
    keeps its last row/column in a window of its own. Padding the bottom/right by one with -inf
    gives exactly that: ``floor((n + 1 - 2) / 2) + 1 = ceil(n / 2)`` windows, and for an even
    ``n`` no window reaches the pad. The pad is always one, not ``n % 2``, so that under
    symbolic shapes (:mod:`fcn_jax.export`) each pooled side is a plain floor division that
    jax's shape algebra compares quickly; nested ``mod`` terms made FCN-32s's crop check run
    for minutes. Floor-mode pooling would drop the odd row and break the derived crop offsets.

    The gradient goes to the first maximum of each window in row-major order, as Caffe's (and
    PyTorch's) stored argmax sends it; written as masks, it is one fused elementwise pass
    instead of XLA's select-and-scatter (340 ms on pool1 of a 500 px image on 2 CPU cores,
    against 156 ms for the masks).

    Args:
        x: [N, H, W, C].

    Returns:
        [N, ceil(H / 2), ceil(W / 2), C].
    """
    pads = ((0, 0), (0, 1), (0, 1), (0, 0))
    if x.dtype != jnp.bfloat16 or not on_cpu():
        return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), pads)
    # XLA:CPU in jaxlib 0.12 fuses a bf16 reduce-window with the convolutions that feed it or
    # read it (one YNNPACK fusion) and computes garbage: NaNs and wrong maxima, changing from run
    # to run (a jitted bf16 FCN-8s predicted one class everywhere; float32 is unaffected, and so
    # was jaxlib 0.10). The barriers keep the pool's input and output arrays of their own.
    barrier = jax.lax.optimization_barrier
    return barrier(
        jax.lax.reduce_window(barrier(x), -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), pads)
    )


def _pool_forward(x: Array) -> tuple[Array, Array]:
    y = max_pool_ceil(x)
    return y, (x, y)


def _pool_backward(residuals: tuple[Array, Array], dy: Array) -> tuple[Array]:
    x, y = residuals
    n, h, w, c = x.shape
    hit = _windows(x) == y[..., None]
    # First maximum only: a later tie is not taken once an earlier position was.
    first = hit & (jnp.cumsum(hit, axis=-1) == 1)
    dx = jnp.where(first, dy[..., None], jnp.zeros((), dy.dtype))
    hh, ww = (h + 1) // 2, (w + 1) // 2
    dx = dx.reshape(n, hh, ww, c, 2, 2).transpose(0, 1, 4, 2, 5, 3)
    return (dx.reshape(n, 2 * hh, 2 * ww, c)[:, :h, :w, :],)


max_pool_ceil.defvjp(_pool_forward, _pool_backward)


def crop_like(x: Array, offset: int, height: int, width: int) -> Array:
    """Caffe ``Crop`` on the spatial axes: ``x[:, offset:offset + height, offset:offset + width]``.

    Args:
        x: [N, H, W, C] with ``H >= offset + height`` and ``W >= offset + width``.
        offset: the derived crop offset (same on both axes).
        height: output height.
        width: output width.

    Returns:
        [N, height, width, C].
    """
    if x.shape[1] < offset + height or x.shape[2] < offset + width:
        raise ValueError(
            f"cannot crop {x.shape[1]}x{x.shape[2]} at offset {offset} to {height}x{width}"
        )
    return x[:, offset : offset + height, offset : offset + width, :]
