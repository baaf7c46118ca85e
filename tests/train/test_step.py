"""fcn_jax.train.step: accumulation, frozen upsampling, overfitting, determinism, compilations;
and fcn_jax.train.init.stage_params (staged initialisation).

Compilations dominate the cost, so the module compiles few steps: one Adam train step shared by
the overfitting, freezing, determinism and trace tests, and per loss normalisation one big-batch
step plus the accumulating steps. Params are drawn with NumPy in the model's shapes (``init``
would cost a compilation of its own), heads as ``FCN.init`` sets them plus small noise on the
score layers so that every layer receives a gradient.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from fcn_jax.configs import base, spec_from_config
from fcn_jax.data.synthetic import SyntheticSegmentation
from fcn_jax.data.transforms import collate
from fcn_jax.errors import FCNError
from fcn_jax.models import NetSpec, abstract_variables, initial_head_params
from fcn_jax.models.layers import bilinear_init, bilinear_kernel
from fcn_jax.preprocessing import CAFFE_VOC
from fcn_jax.train.init import stage_params
from fcn_jax.train.optim import make_optimizer
from fcn_jax.train.step import Accumulator, create_train_state, make_steps
from tests.utils import metadata_for

N_CLASS = 5
WIDTH = 0.0625
SIZE = 32
UPSCORE_8S = ("upscore2", "upscore_pool4", "upscore8")
SCORE_8S = ("score_fr", "score_pool4", "score_pool3")


def make_config(name: str = "sgd", lr: float = 1e-3, loss: str = "mean", learn_up: bool = False):
    c = base()
    c.model.arch = "fcn8s"
    c.model.n_class = N_CLASS
    c.model.width = WIDTH
    c.model.learn_upsampling = learn_up
    c.optim.name = name
    c.optim.loss = loss
    c.learning_rate = lr
    return c


def make_params(spec: NetSpec, seed: int, score_std: float = 0.0):
    """He-normal trunk, heads as ``FCN.init`` sets them (score zero, upsampling bilinear), plus
    ``score_std`` noise on the score layers."""
    rng = np.random.default_rng(seed)
    abstract = abstract_variables(spec)["params"]
    params = initial_head_params(spec, abstract)
    for name, layers in abstract.items():
        if name.startswith("vgg16"):
            params[name] = {}
            for layer, leaves in layers.items():
                k = leaves["kernel"].shape
                std = np.sqrt(2.0 / (k[0] * k[1] * k[2]))
                params[name][layer] = {
                    "kernel": rng.normal(0, std, k).astype(np.float32),
                    "bias": rng.normal(0, 0.01, leaves["bias"].shape).astype(np.float32),
                }
        elif not name.startswith("upscore") and score_std:
            params[name] = {
                leaf: rng.normal(0, score_std, v.shape).astype(np.float32)
                for leaf, v in layers.items()
            }
    return jax.tree.map(jnp.asarray, params)


def copy(params):
    """A fresh buffer for every leaf: the steps donate their state."""
    return jax.tree.map(jnp.copy, params)


def flat(tree) -> dict[tuple[str, ...], np.ndarray]:
    return {p: np.asarray(v) for p, v in traverse_util.flatten_dict(tree).items()}


@pytest.fixture(scope="module")
def data():
    ds = SyntheticSegmentation(n_class=N_CLASS, num_images=4, min_size=SIZE, max_size=SIZE)
    batch = collate([ds[i] for i in range(4)])
    metadata = metadata_for("fcn8s", N_CLASS, WIDTH, CAFFE_VOC, class_names=ds.class_names)
    return {k: batch[k] for k in ("image", "label")}, metadata


@pytest.fixture(scope="module")
def params0():
    return make_params(NetSpec.single("fcn8s", N_CLASS, width=WIDTH), 0, score_std=1e-3)


def valid_pixels(labels: np.ndarray) -> int:
    return int((labels < N_CLASS).sum())


# --- (a) accumulation == one big batch ----------------------------------------------------------


@pytest.fixture(scope="module")
def accumulation(data, params0):
    """``(loss, learn_upsampling) ->`` two optimiser steps of batch 4, done (i) as one batch of
    4 and (ii) as 4 micro-batches of 1 accumulated; memoised (each compiles its gradients)."""
    batch, metadata = data
    pixels = valid_pixels(batch["label"])

    @functools.cache
    def run(loss: str, learn_up: bool):
        lr = 2e-4 if loss == "mean" else 2e-4 / pixels  # the same step size either way
        c = make_config("sgd", lr, loss, learn_up)  # momentum 0.99, weight decay 5e-4
        spec = spec_from_config(c)
        assert spec.learn_upsampling == learn_up and spec.heads == metadata.spec.heads
        tx = make_optimizer(c, params0)
        big_step = make_steps(spec, tx, loss, batch_size=4).train_step
        steps = make_steps(spec, tx, loss, batch_size=1, accum_steps=4)
        accumulate, apply_accumulated = steps.accumulate, steps.apply_accumulated
        big = create_train_state({"params": copy(params0)}, tx, seed=7)
        small = create_train_state({"params": copy(params0)}, tx, seed=7)
        big_metrics, small_metrics = [], []
        for _ in range(2):
            big, m = big_step(big, batch)
            big_metrics.append(m)
            # The loop starts from None (mean); "sum" starts from a zero Accumulator, which
            # takes the same compiled path as every later micro-batch (one compile fewer).
            acc = None
            if loss == "sum":  # (a fresh one each step: accumulate donates it)
                acc = Accumulator(
                    jax.tree.map(jnp.zeros_like, params0), jnp.zeros(()), jnp.zeros(()), {}
                )
            for micro in range(4):
                one = {k: v[micro : micro + 1] for k, v in batch.items()}
                acc = accumulate(acc, small, one, jnp.int32(micro))
            small, m = apply_accumulated(small, acc)
            small_metrics.append(m)
        return big, small, big_metrics, small_metrics, lr

    return run


# One test per experiment, so that pytest-xdist never compiles an experiment on two workers: the
# summed loss runs with learn_upsampling, which this test checks too.
@pytest.mark.parametrize(
    ("loss", "learn_up"), [("mean", False), ("sum", True)], ids=["mean", "sum-learn_upsampling"]
)
def test_accumulating_micro_batches_equals_one_big_batch(
    accumulation, params0, data, loss, learn_up
):
    batch, _ = data
    counts = [valid_pixels(batch["label"][i]) for i in range(4)]
    assert len(set(counts)) > 1  # mean-of-means would differ from the mean over all pixels
    big, small, big_metrics, small_metrics, lr = accumulation(loss, learn_up)
    assert int(big.step) == int(small.step) == 2
    for mb, ms in zip(big_metrics, small_metrics, strict=True):
        assert float(mb["pixels"]) == float(ms["pixels"]) == sum(counts)
        np.testing.assert_allclose(float(ms["loss"]), float(mb["loss"]), rtol=1e-5)
        np.testing.assert_allclose(float(ms["grad_norm"]), float(mb["grad_norm"]), rtol=1e-4)
    p0, pb, ps = flat(params0), flat(big.params), flat(small.params)
    for path in p0:
        np.testing.assert_allclose(ps[path], pb[path], rtol=1e-5, atol=1e-6, err_msg=str(path))
        if path[-2].startswith("upscore") and not learn_up:
            assert np.array_equal(pb[path], p0[path]) and np.array_equal(ps[path], p0[path])
            continue
        # the updates themselves agree, not only the params they are small against
        delta_big, delta_small = pb[path] - p0[path], ps[path] - p0[path]
        scale = np.abs(delta_big).max()
        rounding = 1e-6 * np.abs(p0[path]).max()  # a few float32 ulps of the params
        assert scale > 10 * rounding, path  # moved enough for the comparison to mean something
        np.testing.assert_allclose(
            delta_small, delta_big, atol=1e-3 * scale + rounding, err_msg=str(path)
        )
    if learn_up:  # the upsampling kernels moved, by their gradient: far beyond weight decay
        for layer in UPSCORE_8S:
            w = p0[(layer, "kernel")]
            change = np.abs(ps[(layer, "kernel")] - w).max()
            assert change > 100 * 2 * lr * 5e-4 * np.abs(w).max(), layer


# --- (b)-(e) one shared Adam train step ---------------------------------------------------------


@pytest.fixture(scope="module")
def adam(data, params0):
    _, metadata = data
    c = make_config("adam", 1e-3, "mean")
    spec = spec_from_config(c)
    assert spec.heads == metadata.spec.heads
    tx = make_optimizer(c, params0)
    steps = make_steps(spec, tx, "mean", batch_size=2)
    train_step, traces = steps.train_step, steps.traces

    def run(seed: int, steps: int, batch: dict):
        state = create_train_state({"params": copy(params0)}, tx, seed)
        metrics = []
        for _ in range(steps):
            state, m = train_step(state, batch)
            metrics.append(m)
        return state, metrics

    return run, traces


def two(data) -> dict:
    batch, _ = data
    return {k: v[:2] for k, v in batch.items()}


def test_upsampling_frozen_by_default_while_trunk_and_scores_learn(adam, data, params0):
    run, _ = adam
    state, _ = run(0, 3, two(data))
    before, after = flat(params0), flat(state.params)
    for path in before:
        if path[-2].startswith("upscore"):
            assert np.array_equal(after[path], before[path]), path  # bitwise
            assert np.array_equal(after[path], bilinear_init(None, before[path].shape)), path
        elif path[-1] == "kernel":
            assert not np.array_equal(after[path], before[path]), path
    for layer in SCORE_8S:
        for leaf in ("kernel", "bias"):
            assert not np.array_equal(after[(layer, leaf)], before[(layer, leaf)]), layer


def test_adam_overfits_a_fixed_batch(adam, data):
    run, _ = adam
    batch = two(data)
    state, metrics = run(0, 20, batch)
    losses = [float(m["loss"]) for m in metrics]
    assert all(np.isfinite(losses))
    assert all(float(m["pixels"]) == valid_pixels(batch["label"]) for m in metrics)
    assert np.mean(losses[-3:]) < 0.7 * losses[0], losses
    assert int(state.step) == 20


def test_same_seed_same_params_other_seed_other_dropout(adam, data):
    run, _ = adam
    batch = two(data)
    a, _ = run(0, 3, batch)
    b, _ = run(0, 3, batch)
    c, _ = run(1, 3, batch)
    fa, fb, fc = flat(a.params), flat(b.params), flat(c.params)
    assert all(np.array_equal(fa[p], fb[p]) for p in fa)
    assert not all(np.array_equal(fa[p], fc[p]) for p in fa)
    # dropout only touches fc6/fc7 outputs, and every layer before them sees their gradients
    assert not np.array_equal(
        fa[("vgg16", "conv1_1", "kernel")], fc[("vgg16", "conv1_1", "kernel")]
    )


def test_repeated_steps_on_one_shape_compile_once(adam, data):
    run, traces = adam
    run(0, 4, two(data))
    run(3, 2, two(data))  # a fresh state (another seed) is the same pytree type
    assert traces.count == 1


# --- (f) stage_params: staged initialisation ----------------------------------------------------


def test_stage_params_32s_into_16s():
    src = make_params(NetSpec.single("fcn32s", N_CLASS, width=WIDTH), 1, score_std=0.1)
    target = make_params(NetSpec.single("fcn16s", N_CLASS, width=WIDTH), 2)
    new, new_layers = stage_params(src, target, "fcn32s.pth")
    assert new_layers == ["score_pool4", "upscore16", "upscore2"]
    fs, ft, fn = flat(src), flat(target), flat(new)
    assert fn.keys() == ft.keys()  # the 32s "upscore" is not carried over
    for path, value in fn.items():
        if path[0] == "vgg16" or path[0] == "score_fr":
            assert np.array_equal(value, fs[path]), path
        else:
            assert np.array_equal(value, ft[path]), path
    assert not np.array_equal(fn[("score_fr", "kernel")], ft[("score_fr", "kernel")])
    assert np.all(fn[("score_pool4", "kernel")] == 0) and np.all(fn[("score_pool4", "bias")] == 0)
    for layer, k in (("upscore2", 4), ("upscore16", 32)):
        kernel = fn[(layer, "kernel")]
        assert kernel.shape == (k, k, N_CLASS, N_CLASS)
        for c in range(N_CLASS):
            np.testing.assert_array_equal(kernel[:, :, c, c], bilinear_kernel(k))
        assert np.count_nonzero(kernel) == np.count_nonzero(bilinear_kernel(k)) * N_CLASS


def test_stage_params_shape_mismatch_names_the_layer():
    src = make_params(NetSpec.single("fcn32s", 21, width=WIDTH), 1)
    target = make_params(NetSpec.single("fcn16s", N_CLASS, width=WIDTH), 2)
    with pytest.raises(FCNError, match=r"weights\.pth.*score_fr/kernel"):
        stage_params(src, target, "weights.pth")


def test_stage_params_disjoint_trees_raise():
    target = make_params(NetSpec.single("fcn16s", N_CLASS, width=WIDTH), 2)
    with pytest.raises(FCNError, match="shares no layer"):
        stage_params({"other": {"kernel": np.zeros((3, 3))}}, target, "other.pth")


def test_stage_params_refuses_a_source_missing_a_layer_of_its_own_arch():
    # A 32s file without score_fr: before, score_fr silently kept its zero initialisation.
    arch = make_params(NetSpec.single("fcn32s", N_CLASS, width=WIDTH), 1)
    src = {k: v for k, v in arch.items() if k != "score_fr"}
    target = make_params(NetSpec.single("fcn16s", N_CLASS, width=WIDTH), 2)
    with pytest.raises(FCNError, match=r"2 missing params: score_fr/bias, score_fr/kernel"):
        stage_params(src, target, "fcn32s.pth", source=arch)
