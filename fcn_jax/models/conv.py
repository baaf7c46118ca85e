"""Convolutions as sums of matrix products, where XLA:CPU's own kernels are slow.

XLA:CPU computes a convolution's weight gradient as a convolution of the input with the
output gradient as its (huge) kernel, a shape its convolution kernels are not built for:
measured on 2 cores, 3 to 30 times the forward's time (conv1_1 at a 256 px input: 742 ms
against 34 ms forward; conv3_1 177 ms against 25 ms), where PyTorch's takes about as long as
its forward. The same gradient is ``k*k`` matrix products, one per kernel tap:

    dW[i, j] = sum over n, h, w of x_pad[n, h + i, w + j, :]^T dy[n, h, w, :]

each a ``[C_in, N*H*W] @ [N*H*W, C_out]`` GEMM, computed band of rows by band of rows so that
each band is read from cache by all ``k*k`` taps (:func:`_weight_grad`).
:func:`conv_general_dilated` is a drop-in for ``lax.conv_general_dilated`` (flax ``nn.Conv``
takes it) with that backward; the forward and the input gradient stay XLA's. Stride-1, ungrouped
NHWC/HWIO convolutions (all of the FCN's; the FCN-ResNets' dilated ones too, whose taps are
``d`` apart) take the new path; any other call (the ResNets' strided convolutions) is passed
through. fc6 (7x7, 512 -> 4096 channels on a small map) goes through im2col
instead, forward and backward: one GEMM each way (XLA:CPU's convolution takes 650 ms at a 500 px
input against 226 ms, and its input gradient tens of seconds when fc6's output is smaller than
its kernel, inputs under ~190 px).

:func:`upsample` is the transposed convolution (Caffe's Deconvolution) as one GEMM and an
overlap-add: with ``kernel = m * stride`` every output pixel receives ``m*m`` input pixels, so
``x @ W`` gives each input pixel's ``k*k`` patch and ``m*m`` shifted adds place them (FCN-32s's
64/32 upsampling: 1.07 s in XLA:CPU's transposed convolution at 500 px, 78 ms in PyTorch).

Which implementation a model uses is its ``conv_impl`` (``auto``, ``xla`` or ``gemm``),
resolved once when the model is built (:func:`resolve_conv_impl`): ``auto`` takes these forms on
XLA:CPU and XLA's own convolutions on GPUs and TPUs. Either can be forced on any backend, so a
CPU test runs one network through both and compares them.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from fcn_jax.types import Array

NHWC = ("NHWC", "HWIO", "NHWC")
Padding = tuple[tuple[int, int], tuple[int, int]]


def _taps(
    xp: Array, kernel: tuple[int, int], out_hw: tuple[int, int], dilation: int = 1
) -> list[Array]:
    """The k_h * k_w shifted [N, H', W', C] windows of a padded input, tap-major (row by row).

    Tap (i, j) of a kernel dilated by ``d`` reads ``xp[h + i * d, w + j * d]``.
    """
    (kh, kw), (h, wd), d = kernel, out_hw, dilation
    return [xp[:, i * d : i * d + h, j * d : j * d + wd, :] for i in range(kh) for j in range(kw)]


def _patches(x: Array, kernel: tuple[int, int], padding: Padding) -> Array:
    """im2col: [N, H', W', k_h * k_w * C] (tap-major, channel-minor, as ``w.reshape``)."""
    xp = jnp.pad(x, ((0, 0), *padding, (0, 0)))
    out_hw = (xp.shape[1] - kernel[0] + 1, xp.shape[2] - kernel[1] + 1)
    return jnp.concatenate(_taps(xp, kernel, out_hw), axis=-1)


def _large(w: Array) -> bool:
    """fc6's 7x7: one im2col GEMM beats XLA:CPU's convolution (650 vs 226 ms at 500 px)."""
    return max(w.shape[:2]) > 3


def _conv(x: Array, w: Array, padding: Padding, precision: Any, dilation: int = 1) -> Array:
    if w.shape[:2] == (1, 1):  # fc7, score layers: a plain GEMM (fc7: 71 -> 45 ms at 500 px)
        x = jnp.pad(x, ((0, 0), *padding, (0, 0)))
        return jnp.einsum("nhwc,co->nhwo", x, w[0, 0], precision=precision)
    if _large(w) and dilation == 1:
        p = _patches(x, w.shape[:2], padding)
        return jnp.einsum("nhwk,ko->nhwo", p, w.reshape(-1, w.shape[-1]), precision=precision)
    return lax.conv_general_dilated(
        x,
        w,
        (1, 1),
        padding,
        rhs_dilation=(dilation, dilation),
        dimension_numbers=NHWC,
        precision=precision,
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def conv_gemm_grad(
    x: Array, w: Array, padding: Padding, precision: Any = None, dilation: int = 1
) -> Array:
    """``lax.conv_general_dilated`` (stride 1, NHWC/HWIO) with GEMM-based gradients.

    Args:
        x: [N, H, W, C_in] input.
        w: [k_h, k_w, C_in, C_out] kernel.
        padding: ((top, bottom), (left, right)) zero padding.
        precision: passed to every convolution and matrix product.
        dilation: of the kernel, both axes (the FCN-ResNets' layer3 and layer4: 2 and 4).

    Returns:
        [N, H + top + bottom - d * (k_h - 1), W + left + right - d * (k_w - 1), C_out].
    """
    return _conv(x, w, padding, precision, dilation)


def _forward(
    x: Array, w: Array, padding: Padding, precision: Any, dilation: int
) -> tuple[Array, tuple]:
    return _conv(x, w, padding, precision, dilation), (x, w)


def _backward(
    padding: Padding, precision: Any, dilation: int, residuals: tuple, dy: Array
) -> tuple:
    x, w = residuals
    # The input gradient is the transpose of the forward in x: XLA's own for 3x3 (as fast as its
    # forward, dilated too), one GEMM and the patches' col2im for the large (fc6) kernel.
    conv = lambda x_: _conv(x_, w, padding, precision, dilation)  # noqa: E731
    (dx,) = jax.linear_transpose(conv, x)(dy)
    if _large(w) and dilation == 1:  # one GEMM through the im2col patches
        p = _patches(x, w.shape[:2], padding)
        f32 = {"precision": precision, "preferred_element_type": jnp.float32}  # bf16: f32 sums
        dw = jnp.einsum("nhwk,nhwo->ko", p, dy, **f32).reshape(w.shape)
    else:  # matrix products over bands of rows
        xp = jnp.pad(x, ((0, 0), *padding, (0, 0)))
        dw = _weight_grad(xp, dy, w.shape[:2], precision, dilation)
    return dx, dw.astype(w.dtype)


# A band's rows of x and dy should stay in the 1-2 MiB per-core L2 cache while its k*k tap
# products read them, and a band's products should be short enough (in pixels) to be cheap.
# Measured on 2 cores (Zen 4), conv1_2 at a 500 px input (698 x 698 x 64 -> 64): one GEMM per tap
# over the whole map 1,200-1,470 ms, XLA's own 800 ms, bands of 2 rows 285 ms (forward: 121).
_BAND_BYTES = 2 << 20
_BAND_PIXELS = 1400
# Up to 64 input channels a band's taps go into one product as im2col patches (conv1_2 at 500 px:
# 205-216 ms against 278 tap by tap; a quarter-width conv1_2, 16 channels: 35 against 62); from
# 128 on, the nine products are as fast or faster (conv3_2: 141 tap by tap, 152 as patches).
_IM2COL_MAX_CHANNELS = 64
# 1x1 layers whose weight gradient (C_in x C_out) is at most this go by bands (see below).
_BANDED_1X1_MAX = 2048 * 2048


def _band_rows(dy: Array, c_in: int) -> int:
    """Rows per band: the band's x and dy rows within ``_BAND_BYTES``, ``_BAND_PIXELS`` long."""
    n, h, wd, c_out = dy.shape
    row_bytes = n * wd * (c_in + c_out) * dy.dtype.itemsize
    return max(1, min(h, _BAND_BYTES // row_bytes, _BAND_PIXELS // (n * wd)))


def _weight_grad(
    xp: Array, dy: Array, kernel: tuple[int, int], precision: Any, dilation: int = 1
) -> Array:
    """``dW[i, j] = sum over n, h, w of xp[n, h + i*d, w + j*d, :]^T dy[n, h, w, :]``, float32.

    One ``[C_in, P] @ [P, C_out]`` product per tap over all ``P = N*H*W`` pixels streams the
    whole map through memory ``k*k`` times at a few flops per byte (XLA:CPU's dot then runs at
    a tenth of its peak); a loop over bands of rows does the ``k*k`` products of each band while
    its rows are in cache (for narrow layers, one product of the band's im2col patches).

    Args:
        xp: [N, H + d * (k_h - 1), W + d * (k_w - 1), C_in] padded input.
        dy: [N, H, W, C_out] output gradient.
        kernel: (k_h, k_w).
        precision: passed to the products.
        dilation: ``d``, of the kernel.

    Returns:
        [k_h, k_w, C_in, C_out] float32.
    """
    kh, kw = kernel
    h, c_out = dy.shape[1], dy.shape[3]
    c_in = xp.shape[-1]
    halo = dilation * (kh - 1)  # rows of x a band reads beyond its own
    f32 = {"precision": precision, "preferred_element_type": jnp.float32}  # bf16: f32 sums

    def band(xb: Array, db: Array) -> Array:  # [N, rows + kh - 1, Wp, C_in], [N, rows, W, C_out]
        taps = _taps(xb, kernel, db.shape[1:3], dilation)
        if c_in <= _IM2COL_MAX_CHANNELS:  # one [k*k*C_in, P] @ [P, C_out] product (im2col)
            patches = jnp.concatenate(taps, axis=-1)
            return jnp.einsum("nhwk,nhwo->ko", patches, db, **f32).reshape(kh * kw, c_in, c_out)
        return jnp.stack([jnp.einsum("nhwc,nhwo->co", t, db, **f32) for t in taps])

    # A 1x1 kernel reads the map once in one product, and bands would only re-add a large
    # accumulator (fc7's is 4096 x 4096); but XLA:CPU transposes one operand of that product
    # into a copy, and fuses into the copy every elementwise producer it can reach: in a
    # ResNet, the BatchNorms and residual additions of up to five blocks back, recomputed with
    # strided reads (FCN-ResNet-50's train step at 520 px: about a quarter of its time). A loop
    # reads materialised operands, so the smaller 1x1 layers (all of the ResNets') go by bands.
    one_product = kh * kw == 1 and c_in * c_out > _BANDED_1X1_MAX
    rows = h if one_product else _band_rows(dy, c_in)
    n_bands, tail = divmod(h, rows)

    def body(b: Array, acc: Array) -> Array:
        xb = lax.dynamic_slice_in_dim(xp, b * rows, rows + halo, axis=1)
        return acc + band(xb, lax.dynamic_slice_in_dim(dy, b * rows, rows, axis=1))

    acc = jnp.zeros((kh * kw, c_in, c_out), jnp.float32)
    acc = body(0, acc) if n_bands == 1 else lax.fori_loop(0, n_bands, body, acc)
    if tail:
        acc = acc + band(xp[:, n_bands * rows :], dy[:, n_bands * rows :])
    return acc.reshape(kh, kw, c_in, c_out)


conv_gemm_grad.defvjp(_forward, _backward)


def conv_general_dilated(
    lhs: Array,
    rhs: Array,
    window_strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]],
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers: Any = None,
    feature_group_count: int = 1,
    precision: Any = None,
    **kwargs: Any,
) -> Array:
    """``lax.conv_general_dilated``, taking :func:`conv_gemm_grad` where it applies."""
    dilation = (1, 1) if rhs_dilation is None else tuple(rhs_dilation)
    simple = (
        tuple(window_strides) == (1, 1)
        and (lhs_dilation is None or tuple(lhs_dilation) == (1, 1))
        and dilation[0] == dilation[1]
        and feature_group_count == 1
        and not kwargs
        and _is_nhwc(dimension_numbers, lhs.ndim)
    )
    if not simple:
        return lax.conv_general_dilated(
            lhs,
            rhs,
            window_strides,
            padding,
            lhs_dilation,
            rhs_dilation,
            dimension_numbers,
            feature_group_count,
            precision=precision,
            **kwargs,
        )
    d = dilation[0]
    if isinstance(padding, str):  # "SAME" / "VALID" (flax's default for the 1x1 score layers)
        extent = tuple(d * (k - 1) + 1 for k in rhs.shape[:2])  # of the dilated kernel
        padding = lax.padtype_to_pads(lhs.shape[1:3], extent, (1, 1), padding)
    pads = tuple((int(a), int(b)) for a, b in padding)
    return conv_gemm_grad(lhs, rhs, pads, precision, d)


def _is_nhwc(dimension_numbers: Any, ndim: int) -> bool:
    if ndim != 4 or dimension_numbers is None:
        return False
    expected = lax.conv_dimension_numbers((1, 1, 1, 1), (1, 1, 1, 1), NHWC)
    return lax.conv_dimension_numbers((1, 1, 1, 1), (1, 1, 1, 1), dimension_numbers) == expected


CONV_IMPLS = ("auto", "xla", "gemm")


def on_cpu() -> bool:
    """Whether computations go to XLA:CPU (the default backend)."""
    return jax.default_backend() == "cpu"


def resolve_conv_impl(impl: str) -> str:
    """``xla`` or ``gemm`` for a model's ``conv_impl``; ``auto``: ``gemm`` on XLA:CPU only.

    Raises:
        ValueError: ``impl`` is not one of :data:`CONV_IMPLS`.
    """
    if impl not in CONV_IMPLS:
        raise ValueError(f"conv_impl {impl!r} is not one of {CONV_IMPLS}")
    if impl == "auto":
        return "gemm" if on_cpu() else "xla"
    return impl


def conv_for(impl: str) -> Any:
    """The convolution flax ``nn.Conv`` takes for a resolved ``impl`` (None: XLA's own)."""
    return conv_general_dilated if impl == "gemm" else None


def upsample(x: Array, w: Array, stride: int) -> Array:
    """``lax.conv_transpose(x, w, (s, s), "VALID", NHWC/HWIO)`` as a GEMM and an overlap-add.

    Args:
        x: [N, h, w, C_in].
        w: [k, k, C_in, C_out], applied as ``conv_transpose`` applies it (a correlation over the
            dilated input, so the scatter below uses it spatially flipped).
        stride: upsampling factor; ``k`` must be a multiple of it (FCN: k = 2 * stride).

    Returns:
        [N, (h - 1) * s + k, (w - 1) * s + k, C_out].
    """
    k, s = w.shape[0], stride
    m = k // s
    n, h, wd, _ = x.shape
    c_out = w.shape[-1]
    # Each input pixel's k x k output patch: out[p*s + t] += x[p] @ w[k-1-t].
    z = jnp.einsum("nhwc,ijco->nhwijo", x, w[::-1, ::-1])
    z = z.reshape(n, h, wd, m, s, m, s, c_out)
    out = None
    for a in range(m):  # block offset of the patch row: lands in output block p + a
        for b in range(m):
            part = jnp.pad(
                z[:, :, :, a, :, b, :, :],
                ((0, 0), (a, m - 1 - a), (b, m - 1 - b), (0, 0), (0, 0), (0, 0)),
            )
            out = part if out is None else out + part
    # [N, h+m-1, w+m-1, s, s, C] -> [N, (h+m-1)*s, (w+m-1)*s, C]
    out = out.transpose(0, 1, 3, 2, 4, 5)
    return out.reshape(n, (h + m - 1) * s, (wd + m - 1) * s, c_out)
