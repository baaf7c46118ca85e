"""The train step of a BatchNorm network: statistics over the whole micro-batch despite the
per-example forward, one running update per micro-batch, and frozen BatchNorm.

Device counts (pmap, sharding, one device) are compared in tests/train/test_parallel.py; torch
equality of a step in tests/convert.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fcn_jax.models import NetSpec, init_variables
from fcn_jax.train.step import create_train_state, make_steps
from tests.utils import NARROW

N_CLASS = 4
SPEC = NetSpec.single("fcn32s", N_CLASS, backbone="vgg16_bn", width=NARROW)
TX = optax.sgd(1e-3)


@pytest.fixture(scope="module")
def variables():
    return jax.tree.map(np.asarray, init_variables(SPEC, jax.random.key(0)))


def batch(n, seed=0, size=24):
    rng = np.random.default_rng(seed)
    return {
        "image": rng.integers(0, 256, (n, size, size, 3), np.uint8),
        "label": rng.integers(0, N_CLASS, (n, size, size), np.uint8),
    }


def state_of(variables):
    return create_train_state(jax.tree.map(jnp.array, variables), TX, seed=0)


def whole_batch_update(variables, b):
    """The running statistics after one train-mode forward of the whole batch at once."""
    _, updated = SPEC.logits(
        variables, b, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(0)}
    )
    return updated


def test_statistics_are_the_micro_batchs_not_each_examples(variables):
    b = batch(3)
    state, _ = make_steps(SPEC, TX, "mean", 3).train_step(state_of(variables), b)
    expected = whole_batch_update(variables, b)
    jax.tree.map(
        lambda a, e: np.testing.assert_allclose(a, e, rtol=2e-5, atol=1e-6),
        state.model_state,
        expected,
    )
    before = variables["batch_stats"]["vgg16_bn"]["bn3_1"]["mean"]
    assert not np.allclose(state.model_state["batch_stats"]["vgg16_bn"]["bn3_1"]["mean"], before)


def test_each_micro_batch_updates_the_statistics_once_in_order(variables):
    b = [batch(1, seed=s) for s in (1, 2)]
    steps = make_steps(SPEC, TX, "mean", 1, accum_steps=2)
    feed = iter(b)
    state, _ = steps.run(state_of(variables), lambda: next(feed), 2)
    expected = whole_batch_update(variables, b[0])
    expected = whole_batch_update({**variables, **expected}, b[1])
    jax.tree.map(
        lambda a, e: np.testing.assert_allclose(a, e, rtol=2e-5, atol=1e-6),
        state.model_state,
        expected,
    )


def test_frozen_batch_norm_keeps_the_running_statistics(variables):
    steps = make_steps(SPEC, TX, "mean", 2, freeze_bn=True)
    state = state_of(variables)
    for seed in range(2):
        state, metrics = steps.train_step(state, batch(2, seed))
    jax.tree.map(
        np.testing.assert_array_equal, state.model_state, {"batch_stats": variables["batch_stats"]}
    )
    assert float(metrics["grad_norm"]) > 0
    moved = state.params["vgg16_bn"]["bn1_1"]["scale"]
    assert not np.array_equal(moved, variables["params"]["vgg16_bn"]["bn1_1"]["scale"])
