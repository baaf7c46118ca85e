"""Building blocks against their definitions and against torch, with non-symmetric weights."""

from __future__ import annotations

from fractions import Fraction
from typing import TYPE_CHECKING

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fcn_jax.convert.layout import conv_to_flax, deconv_to_flax
from fcn_jax.models import crop_offsets
from fcn_jax.models.fcn import Upsample
from fcn_jax.models.layers import (
    CoordMap,
    bilinear_init,
    bilinear_kernel,
    crop_like,
    crop_offset,
    max_pool_ceil,
)

if TYPE_CHECKING:
    import torch

NHWC = ("NHWC", "HWIO", "NHWC")


def nchw(x: np.ndarray) -> torch.Tensor:
    import torch

    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def nhwc(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy().transpose(0, 2, 3, 1)


@pytest.mark.parametrize(
    ("variant", "expected"),
    [
        ("fcn32s", {"upscore": 19}),
        ("fcn16s", {"score_pool4": 5, "upscore16": 27}),
        ("fcn8s", {"score_pool4": 5, "score_pool3": 9, "upscore8": 31}),
        ("fcn8s-atonce", {"score_pool4": 5, "score_pool3": 9, "upscore8": 31}),
    ],
)
def test_derived_crop_offsets_equal_the_release(variant, expected):
    assert crop_offsets(variant) == expected


def test_coord_map_algebra():
    # conv 3x3 pad 1 keeps coordinates; pool 2x2/2 maps x -> x/2 - 1/4; their deconv inverse.
    assert CoordMap.conv(3, 1, 1) == CoordMap()
    assert CoordMap.conv(2, 2) == CoordMap(Fraction(1, 2), Fraction(-1, 4))
    up = CoordMap.deconv(4, 2)
    assert CoordMap.conv(2, 2).then(up) == CoordMap(1, Fraction(1))
    with pytest.raises(ValueError, match="scales"):
        crop_offset(CoordMap(2), CoordMap(1))
    with pytest.raises(ValueError, match="non-negative integer"):
        crop_offset(CoordMap(1, Fraction(1, 2)), CoordMap())


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 16, 32, 64])
def test_bilinear_kernel_matches_surgery_formula(size):
    f = (size + 1) // 2
    c = f - 1 if size % 2 == 1 else f - 0.5
    expected = np.array(
        [[(1 - abs(i - c) / f) * (1 - abs(j - c) / f) for j in range(size)] for i in range(size)]
    )
    np.testing.assert_allclose(bilinear_kernel(size), expected, rtol=1e-7)


def test_bilinear_kernel_known_values():
    np.testing.assert_allclose(bilinear_kernel(4)[0], [0.0625, 0.1875, 0.1875, 0.0625])
    ramp = np.array([0.25, 0.75, 0.75, 0.25])
    np.testing.assert_allclose(bilinear_kernel(4), np.outer(ramp, ramp))


def test_bilinear_init_is_diagonal():
    k = np.asarray(bilinear_init(None, (4, 4, 3, 3)))
    for i in range(3):
        for j in range(3):
            expected = bilinear_kernel(4) if i == j else np.zeros((4, 4))
            np.testing.assert_array_equal(k[:, :, i, j], expected)
    with pytest.raises(ValueError, match="square"):
        bilinear_init(None, (4, 4, 3, 2))


def test_bilinear_upsampling_interpolates():
    # A 2x bilinear transposed conv maps a linear ramp to a linear ramp (away from the border).
    x = jnp.arange(8.0).reshape(1, 8, 1, 1) * jnp.ones((1, 1, 8, 1))
    up = Upsample(1, 4, 2)
    y = up.apply(up.init(jax.random.key(0), x), x)[0, :, 4, 0]
    np.testing.assert_allclose(np.diff(np.asarray(y[3:-3])), 0.5, atol=1e-6)


@pytest.mark.torch
@pytest.mark.parametrize(
    ("kernel", "stride", "c_in", "c_out", "size"),
    [(4, 2, 3, 3, (5, 7)), (16, 8, 2, 2, (3, 2)), (64, 32, 2, 2, (1, 2)), (3, 2, 3, 3, (4, 4))],
)
def test_upsample_matches_torch_conv_transpose(kernel, stride, c_in, c_out, size, rng):
    import torch
    import torch.nn.functional as F

    w = rng.standard_normal((c_in, c_out, kernel, kernel)).astype(np.float32)  # not symmetric
    x = rng.standard_normal((2, *size, c_in)).astype(np.float32)
    expected = nhwc(F.conv_transpose2d(nchw(x), torch.from_numpy(w), stride=stride))
    up = Upsample(c_out, kernel, stride)
    ours = up.apply({"params": {"kernel": jnp.asarray(deconv_to_flax(w))}}, jnp.asarray(x))
    assert ours.shape == (
        2,
        (size[0] - 1) * stride + kernel,
        (size[1] - 1) * stride + kernel,
        c_out,
    )
    np.testing.assert_allclose(np.asarray(ours), expected, rtol=1e-5, atol=1e-5)
    # Without the flip the result differs: the test would catch a missing flip.
    unflipped = up.apply(
        {"params": {"kernel": jnp.asarray(w.transpose(2, 3, 0, 1))}}, jnp.asarray(x)
    )
    assert not np.allclose(np.asarray(unflipped), expected, atol=1e-3)


@pytest.mark.torch
def test_conv_layout_matches_torch(rng):
    import torch
    import torch.nn.functional as F

    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    x = rng.standard_normal((1, 9, 7, 3)).astype(np.float32)
    expected = nhwc(F.conv2d(nchw(x), torch.from_numpy(w), torch.from_numpy(b), padding=1))
    conv = nn.Conv(5, (3, 3), padding=1)
    ours = conv.apply({"params": {"kernel": conv_to_flax(w), "bias": b}}, x)
    np.testing.assert_allclose(np.asarray(ours), expected, rtol=1e-5, atol=1e-5)


def test_bf16_pooling_between_convolutions_under_jit(rng):
    # XLA:CPU in jaxlib 0.12 fused a bf16 pool with the convolutions before and after it into
    # garbage (NaNs, wrong maxima); max_pool_ceil keeps it apart. Eager runs op by op.
    def conv(x, w, b):
        y = jax.lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=NHWC)
        return nn.relu(y + b)

    layers = [
        (
            jnp.asarray(rng.standard_normal((3, 3, c, 32)) * np.sqrt(2 / (9 * c)), jnp.bfloat16),
            jnp.asarray(rng.uniform(-0.1, 0.1, 32), jnp.bfloat16),
        )
        for c in (16, 32, 32, 32)
    ]

    def trunk(x):
        for layer in layers[:3]:
            x = conv(x, *layer)
        return conv(max_pool_ceil(x), *layers[3])

    x = jnp.asarray(np.abs(rng.standard_normal((1, 62, 66, 16))) * 100, jnp.bfloat16)
    eager, jitted = (np.asarray(f(x), np.float32) for f in (trunk, jax.jit(trunk)))
    assert np.isfinite(jitted).all()
    # Fused or not, the products may round differently in bf16: well within 2% of the scale.
    np.testing.assert_allclose(jitted, eager, rtol=0, atol=2e-2 * np.abs(eager).max())


@pytest.mark.torch
@pytest.mark.parametrize("size", [(1, 1), (2, 2), (3, 3), (4, 7), (9, 6), (17, 32), (33, 35)])
def test_ceil_mode_pooling_matches_torch(size, rng):
    import torch.nn.functional as F

    # All-negative inputs: zero padding instead of -inf would show up as zeros.
    x = -np.abs(rng.standard_normal((2, *size, 3))).astype(np.float32) - 1
    expected = nhwc(F.max_pool2d(nchw(x), 2, 2, ceil_mode=True))
    ours = np.asarray(max_pool_ceil(jnp.asarray(x)))
    assert ours.shape == (2, -(-size[0] // 2), -(-size[1] // 2), 3)
    np.testing.assert_array_equal(ours, expected)


def test_crop_like():
    x = jnp.arange(2 * 10 * 12 * 1).reshape(2, 10, 12, 1)
    np.testing.assert_array_equal(crop_like(x, 3, 4, 5), x[:, 3:7, 3:8])
    with pytest.raises(ValueError, match="cannot crop"):
        crop_like(x, 3, 8, 5)
