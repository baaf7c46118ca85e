"""BatchNorm against ``torch.nn.BatchNorm2d``: values, gradients and running statistics.

Non-trivial inputs (channel means far from 0, scales far from 1), affine parameters and running
statistics, so that every term of the computation shows. float32 on both sides.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fcn_jax.models.norm import TORCH_EPS, TORCH_MOMENTUM, BatchNorm

if TYPE_CHECKING:
    import torch

SHAPE = (4, 5, 6, 8)  # N, H, W, C: 120 values per channel
RTOL, ATOL = 1e-5, 1e-5


def nchw(x: np.ndarray) -> torch.Tensor:
    import torch

    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def nhwc(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy().transpose(0, 2, 3, 1)


def inputs(rng: np.random.Generator, shape=SHAPE) -> np.ndarray:
    """[N, H, W, C] float32 with per-channel means in [-3, 3] and scales in [0.5, 4]."""
    c = shape[-1]
    mean = rng.uniform(-3, 3, c)
    scale = rng.uniform(0.5, 4, c)
    return (rng.standard_normal(shape) * scale + mean).astype(np.float32)


def variables(rng: np.random.Generator, c: int) -> dict:
    """Random affine parameters and running statistics (variance positive)."""
    return {
        "params": {
            "scale": rng.uniform(0.5, 2, c).astype(np.float32),
            "bias": rng.uniform(-1, 1, c).astype(np.float32),
        },
        "batch_stats": {
            "mean": rng.uniform(-2, 2, c).astype(np.float32),
            "var": rng.uniform(0.5, 5, c).astype(np.float32),
        },
    }


def torch_bn(v: dict) -> torch.nn.BatchNorm2d:
    """``torch.nn.BatchNorm2d`` (default momentum and eps) holding ``v``."""
    import torch

    c = v["params"]["scale"].shape[0]
    bn = torch.nn.BatchNorm2d(c)
    with torch.no_grad():
        bn.weight.copy_(torch.from_numpy(v["params"]["scale"]))
        bn.bias.copy_(torch.from_numpy(v["params"]["bias"]))
        bn.running_mean.copy_(torch.from_numpy(v["batch_stats"]["mean"]))
        bn.running_var.copy_(torch.from_numpy(v["batch_stats"]["var"]))
    return bn


def flax_grads(v: dict, x: np.ndarray, cot: np.ndarray, train: bool):
    """(y, new batch_stats, dL/dx, dL/dscale, dL/dbias) for L = sum(y * cot)."""
    bn = BatchNorm()

    def loss(params, x):
        y, state = bn.apply(
            {"params": params, "batch_stats": v["batch_stats"]},
            x,
            use_running_average=not train,
            mutable=["batch_stats"],
        )
        return jnp.sum(y * cot), (y, state["batch_stats"])

    (_, (y, stats)), (gp, gx) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
        v["params"], x
    )
    return y, stats, gx, gp["scale"], gp["bias"]


def torch_grads(bn: torch.nn.BatchNorm2d, x: np.ndarray, cot: np.ndarray):
    """(y, dL/dx, dL/dweight, dL/dbias) of ``bn`` in its current mode, NHWC."""
    xt = nchw(x).requires_grad_(True)
    y = bn(xt)
    (y * nchw(cot)).sum().backward()
    return nhwc(y), nhwc(xt.grad), bn.weight.grad.numpy(), bn.bias.grad.numpy()


def close(a, b, rtol=RTOL, atol=ATOL) -> None:
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


@pytest.mark.torch
def test_torch_conventions():
    import torch

    bn = torch.nn.BatchNorm2d(3)
    assert bn.eps == TORCH_EPS
    assert bn.momentum == pytest.approx(1 - TORCH_MOMENTUM)


@pytest.mark.torch
def test_train_mode_matches_torch(rng):
    v = variables(rng, SHAPE[-1])
    x, cot = inputs(rng), rng.standard_normal(SHAPE).astype(np.float32)
    bn = torch_bn(v).train()
    y_t, gx_t, gs_t, gb_t = torch_grads(bn, x, cot)
    y, stats, gx, gs, gb = flax_grads(v, x, cot, train=True)
    close(y, y_t)
    close(gx, gx_t)
    close(gs, gs_t, atol=1e-4)  # sums over 120 values of size ~1
    close(gb, gb_t, atol=1e-4)
    close(stats["mean"], bn.running_mean.numpy())
    close(stats["var"], bn.running_var.numpy())


@pytest.mark.torch
def test_running_stats_follow_torch_over_updates(rng):
    """Three updates; the running variance moves towards the *unbiased* batch variance."""
    import torch

    v = variables(rng, SHAPE[-1])
    bn_t = torch_bn(v).train()
    bn = BatchNorm()
    stats = v["batch_stats"]
    for step in range(3):
        x = inputs(rng)
        with torch.no_grad():
            bn_t(nchw(x))
        _, state = bn.apply(
            {"params": v["params"], "batch_stats": stats},
            x,
            use_running_average=False,
            mutable=["batch_stats"],
        )
        stats = state["batch_stats"]
        assert stats["mean"].dtype == stats["var"].dtype == jnp.float32
        close(stats["mean"], bn_t.running_mean.numpy())
        close(stats["var"], bn_t.running_var.numpy())
        if step == 0:  # spelled out once: m * old + (1 - m) * var * n / (n - 1)
            n = x.size // x.shape[-1]
            unbiased = x.reshape(-1, x.shape[-1]).var(0, ddof=1)
            expected = 0.9 * v["batch_stats"]["var"] + 0.1 * unbiased
            close(stats["var"], expected, rtol=1e-5)
            biased = expected - 0.1 * unbiased / n  # the biased update differs visibly
            assert np.abs(np.asarray(stats["var"]) - biased).max() > 1e-3
    assert int(bn_t.num_batches_tracked) == 3


@pytest.mark.torch
def test_eval_mode_matches_torch(rng):
    v = variables(rng, SHAPE[-1])
    x, cot = inputs(rng), rng.standard_normal(SHAPE).astype(np.float32)
    bn = torch_bn(v).eval()
    y_t, gx_t, gs_t, gb_t = torch_grads(bn, x, cot)
    y, stats, gx, gs, gb = flax_grads(v, x, cot, train=False)
    close(y, y_t)
    close(gx, gx_t)
    close(gs, gs_t, atol=1e-4)
    close(gb, gb_t, atol=1e-4)
    # Eval mode leaves the running statistics exactly as they were.
    np.testing.assert_array_equal(stats["mean"], v["batch_stats"]["mean"])
    np.testing.assert_array_equal(stats["var"], v["batch_stats"]["var"])


@pytest.mark.parametrize("train", [False, True])
def test_bf16_compute_keeps_float32_statistics(rng, train):
    v = variables(rng, SHAPE[-1])
    x = inputs(rng)
    outs = {}
    for dtype in (jnp.float32, jnp.bfloat16):
        y, state = BatchNorm(dtype=dtype).apply(
            v, jnp.asarray(x, dtype), use_running_average=not train, mutable=["batch_stats"]
        )
        assert y.dtype == dtype
        for leaf in jax.tree.leaves(state["batch_stats"]):
            assert leaf.dtype == jnp.float32
        outs[dtype] = (np.asarray(y, np.float32), state["batch_stats"])
    y32, stats32 = outs[jnp.float32]
    y16, stats16 = outs[jnp.bfloat16]
    scale = np.abs(y32).max()
    # bf16 keeps 8 bits of mantissa: the input's rounding (~0.4%) and the output's.
    assert np.abs(y16 - y32).max() <= 2e-2 * scale
    if train:  # statistics of the bf16-rounded input, computed in float32
        close(stats16["mean"], stats32["mean"], rtol=1e-2, atol=1e-2)
        close(stats16["var"], stats32["var"], rtol=1e-2)
        x16 = np.asarray(jnp.asarray(x, jnp.bfloat16), np.float32).reshape(-1, SHAPE[-1])
        expected = 0.9 * v["batch_stats"]["mean"] + 0.1 * x16.mean(0)
        close(stats16["mean"], expected, rtol=1e-5, atol=1e-6)


def test_axis_name_gives_whole_batch_statistics(rng):
    """Per-example calls under ``vmap(axis_name=...)`` see the whole batch's statistics."""
    v = variables(rng, SHAPE[-1])
    x = inputs(rng)
    cot = rng.standard_normal(SHAPE).astype(np.float32)

    def whole_loss(params, xs):
        y, state = BatchNorm().apply(
            {"params": params, "batch_stats": v["batch_stats"]},
            xs,
            use_running_average=False,
            mutable=["batch_stats"],
        )
        return jnp.sum(y * cot), (y, state)

    (_, (y_whole, state_whole)), g_whole = jax.value_and_grad(whole_loss, has_aux=True)(
        v["params"], x
    )

    mapped_bn = BatchNorm(axis_name="b")

    def one(xi, ci):
        def loss(params):
            y, state = mapped_bn.apply(
                {"params": params, "batch_stats": v["batch_stats"]},
                xi[None],
                use_running_average=False,
                mutable=["batch_stats"],
            )
            return jnp.sum(y * ci[None]), (y[0], state)

        (_, aux), g = jax.value_and_grad(loss, has_aux=True)(v["params"])
        return aux, g

    (y_mapped, state_mapped), g_mapped = jax.vmap(one, axis_name="b")(x, cot)
    close(y_mapped, y_whole)
    for name in ("mean", "var"):
        stacked = np.asarray(state_mapped["batch_stats"][name])
        assert stacked.shape == (SHAPE[0], SHAPE[-1])
        for row in stacked:  # every example holds the same, global, statistics
            close(row, state_whole["batch_stats"][name])
    # Summed over the examples, the per-example parameter gradients are the batch's.
    for name in ("scale", "bias"):
        close(np.asarray(g_mapped[name]).sum(0), g_whole[name], atol=1e-4)
