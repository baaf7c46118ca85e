"""The GEMM forms of fcn_jax.models.conv equal XLA's convolutions, values and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from fcn_jax.models.conv import NHWC, conv_general_dilated, upsample


def conv_xla(x, w, padding):
    return lax.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=NHWC)


@pytest.mark.parametrize(
    ("size", "k", "pad", "c_in", "c_out"),
    [
        (9, 3, 1, 4, 5),  # the trunk's 3x3 convolutions
        (5, 3, 100, 3, 4),  # conv1_1's pad 100
        (9, 7, 0, 3, 6),  # fc6, output (3x4) smaller than its kernel: input gradient by taps
        (6, 1, 0, 5, 3),  # score layers
        (6, 1, "SAME", 5, 3),  # score layers as flax pads them
    ],
)
def test_conv_values_and_both_gradients_equal_xla(size, k, pad, c_in, c_out, rng):
    x = jnp.asarray(rng.normal(size=(2, size, size + 1, c_in)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(k, k, c_in, c_out)), jnp.float32)
    padding = pad if isinstance(pad, str) else ((pad, pad), (pad, pad))

    def ours(x, w):
        return conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=NHWC)

    y = conv_xla(x, w, padding)
    dy = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
    np.testing.assert_allclose(ours(x, w), y, rtol=1e-5, atol=1e-4)
    with jax.default_matmul_precision("highest"):
        g_ours = jax.vjp(ours, x, w)[1](dy)
        g_xla = jax.vjp(lambda x, w: conv_xla(x, w, padding), x, w)[1](dy)
    for a, b in zip(g_ours, g_xla, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(jnp.abs(b).max()))


def test_other_convolutions_pass_through(rng):
    x = jnp.asarray(rng.normal(size=(1, 8, 8, 2)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, 2, 2)), jnp.float32)
    for kwargs in (
        {"window_strides": (2, 2), "padding": "SAME"},
        {"window_strides": (1, 1), "padding": "VALID"},
    ):
        ours = conv_general_dilated(x, w, dimension_numbers=NHWC, **kwargs)
        ref = lax.conv_general_dilated(x, w, dimension_numbers=NHWC, **kwargs)
        np.testing.assert_array_equal(ours, ref)


@pytest.mark.parametrize(("k", "s"), [(4, 2), (16, 8), (64, 32), (6, 2)])
def test_upsample_equals_conv_transpose_values_and_gradient(k, s, rng):
    x = jnp.asarray(rng.normal(size=(2, 3, 5, 4)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(k, k, 4, 3)), jnp.float32)

    def ref(x, w):
        return lax.conv_transpose(x, w, (s, s), "VALID", dimension_numbers=NHWC)

    y = ref(x, w)
    assert upsample(x, w, s).shape == y.shape == (2, 2 * s + k, 4 * s + k, 3)
    np.testing.assert_allclose(upsample(x, w, s), y, rtol=1e-5, atol=1e-4)
    dy = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
    with jax.default_matmul_precision("highest"):
        g_ours = jax.vjp(lambda x, w: upsample(x, w, s), x, w)[1](dy)
        g_ref = jax.vjp(ref, x, w)[1](dy)
    for a, b in zip(g_ours, g_ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(jnp.abs(b).max()))


@pytest.mark.torch
@pytest.mark.parametrize("shape", [(2, 6, 8, 3), (1, 7, 5, 2)])
def test_max_pool_gradient_goes_to_the_first_maximum_like_torch(shape, rng):
    import torch

    from fcn_jax.models.layers import max_pool_ceil

    # Rounded values: ties inside windows, where the first maximum (row-major) must win.
    x = np.round(rng.normal(size=shape), 0).astype(np.float32)
    dy = rng.normal(size=max_pool_ceil(jnp.asarray(x)).shape).astype(np.float32)
    y, vjp = jax.vjp(max_pool_ceil, jnp.asarray(x))
    (dx,) = vjp(jnp.asarray(dy))
    tx = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
    ty = torch.nn.functional.max_pool2d(tx, 2, 2, ceil_mode=True)
    ty.backward(torch.tensor(dy.transpose(0, 3, 1, 2)))
    np.testing.assert_array_equal(y, ty.detach().numpy().transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(dx, tx.grad.numpy().transpose(0, 2, 3, 1))


@pytest.mark.parametrize("products", ["im2col", "per tap"])
@pytest.mark.parametrize(
    ("band_pixels", "bands"),
    [(2 * 10 * 2, "4 bands of 2 rows and a tail of 1"), (2 * 10 * 9, "1 band")],
)
def test_weight_gradient_over_bands_of_rows_equals_xla(
    band_pixels, bands, products, rng, monkeypatch
):
    # The weight gradient loops over bands of rows (their size from the map's width and channels);
    # a short band forces the loop and a remainder band on a small map. Narrow layers take one
    # im2col product a band, wide ones (here: any) one product per tap.
    from fcn_jax.models import conv

    monkeypatch.setattr(conv, "_BAND_PIXELS", band_pixels)
    monkeypatch.setattr(conv, "_IM2COL_MAX_CHANNELS", 64 if products == "im2col" else 0)
    x = jnp.asarray(rng.normal(size=(2, 9, 10, 3)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, 3, 4)), jnp.float32)
    padding = ((1, 1), (1, 1))
    dy = jnp.asarray(rng.normal(size=(2, 9, 10, 4)), jnp.float32)
    assert conv._band_rows(dy, 3) == (2 if bands.startswith("4") else 9), bands
    with jax.default_matmul_precision("highest"):
        dw = jax.vjp(
            lambda w: conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=NHWC), w
        )[1](dy)[0]
        ref = jax.vjp(lambda w: conv_xla(x, w, padding), w)[1](dy)[0]
    np.testing.assert_allclose(dw, ref, rtol=1e-5, atol=1e-5 * float(jnp.abs(ref).max()))


@pytest.mark.parametrize(("dilation", "band_pixels"), [(2, 1400), (4, 2 * 13)])
def test_dilated_convolution_values_and_both_gradients_equal_xla(
    dilation, band_pixels, rng, monkeypatch
):
    # The FCN-ResNets' layer3 / layer4 3x3 convolutions: dilation d, padding d; one band, or a
    # loop of bands whose slices of x reach d * (k - 1) rows beyond their own.
    from fcn_jax.models import conv

    monkeypatch.setattr(conv, "_BAND_PIXELS", band_pixels)
    x = jnp.asarray(rng.normal(size=(1, 11, 13, 4)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, 4, 5)), jnp.float32)
    d = dilation
    padding = ((d, d), (d, d))

    def ours(x, w):
        return conv_general_dilated(
            x, w, (1, 1), padding, rhs_dilation=(d, d), dimension_numbers=NHWC
        )

    def ref(x, w):
        return lax.conv_general_dilated(
            x, w, (1, 1), padding, rhs_dilation=(d, d), dimension_numbers=NHWC
        )

    y = ref(x, w)
    dy = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
    np.testing.assert_allclose(ours(x, w), y, rtol=1e-5, atol=1e-4)
    with jax.default_matmul_precision("highest"):
        g_ours = jax.vjp(ours, x, w)[1](dy)
        g_ref = jax.vjp(ref, x, w)[1](dy)
    for a, b in zip(g_ours, g_ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(jnp.abs(b).max()))


@pytest.mark.parametrize("banded", [True, False])
def test_one_by_one_weight_gradient_by_bands_or_one_product(banded, rng, monkeypatch):
    # Small 1x1 layers (a ResNet's) loop over bands of rows; large ones (fc7: 4096 x 4096) take
    # one product. The threshold is set so that each path runs on small arrays.
    from fcn_jax.models import conv

    monkeypatch.setattr(conv, "_BAND_PIXELS", 2 * 10)
    monkeypatch.setattr(conv, "_BANDED_1X1_MAX", 10**9 if banded else 0)
    x = jnp.asarray(rng.normal(size=(1, 7, 10, 4)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(1, 1, 4, 5)), jnp.float32)
    dy = jnp.asarray(rng.normal(size=(1, 7, 10, 5)), jnp.float32)
    pad = ((0, 0), (0, 0))

    def grad(w):
        return jax.vjp(
            lambda w: conv_general_dilated(x, w, (1, 1), pad, dimension_numbers=NHWC), w
        )[1](dy)[0]

    jaxpr = str(jax.make_jaxpr(grad)(w))
    assert ("scan" in jaxpr or "while" in jaxpr) == banded  # fori_loop: a scan
    with jax.default_matmul_precision("highest"):
        ref = jax.vjp(lambda w: conv_xla(x, w, pad), w)[1](dy)[0]
        np.testing.assert_allclose(grad(w), ref, rtol=1e-5, atol=1e-5)
