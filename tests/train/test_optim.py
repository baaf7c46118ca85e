"""fcn_jax.train.optim: param groups, the Caffe solver in optax, schedules, divergence warning."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from fcn_jax.configs import base
from fcn_jax.errors import FCNError
from fcn_jax.models import NetSpec, abstract_variables
from fcn_jax.train.optim import (
    divergence_warning,
    learning_rate_schedule,
    make_optimizer,
    param_labels,
)
from tests.utils import NARROW

UPSCORE_8S = {"upscore2", "upscore_pool4", "upscore8"}
SCORE_8S = {"score_fr", "score_pool4", "score_pool3"}


@pytest.fixture(scope="module")
def abstract8s():
    return abstract_variables(NetSpec.single("fcn8s", 5, width=NARROW))["params"]


def flat_labels(params, **kwargs) -> dict[tuple[str, ...], str]:
    return traverse_util.flatten_dict(param_labels(params, **kwargs))


# --- param_labels -------------------------------------------------------------------------------


def test_labels_default_freeze_every_upscore_kernel(abstract8s):
    labels = flat_labels(abstract8s)
    assert labels.keys() == traverse_util.flatten_dict(abstract8s).keys()  # same structure
    upscore = {p[-2] for p in labels if p[-2].startswith("upscore")}
    assert upscore == UPSCORE_8S
    for path, label in labels.items():
        layer, leaf = path[-2], path[-1]
        if layer.startswith("upscore"):
            assert leaf == "kernel" and label == "frozen", path
        elif leaf == "bias":
            assert label == "bias", path
        else:
            assert leaf == "kernel" and label == "weight", path
    trunk = {p[-2] for p in labels if p[0] == "vgg16"}
    assert {"conv1_1", "conv5_3", "fc6", "fc7"} <= trunk and len(trunk) == 15
    assert {p[-2] for p in labels} >= SCORE_8S


def test_labels_learn_upsampling_makes_upscore_weights(abstract8s):
    labels = flat_labels(abstract8s, learn_upsampling=True)
    for layer in UPSCORE_8S:
        assert labels[(layer, "kernel")] == "weight"
    assert "frozen" not in labels.values()


def test_labels_trainable_regex_freezes_all_but_score_fr(abstract8s):
    labels = flat_labels(abstract8s, trainable="score_fr")
    assert labels[("score_fr", "kernel")] == "weight"
    assert labels[("score_fr", "bias")] == "bias"
    others = {p: v for p, v in labels.items() if p[-2] != "score_fr"}
    assert others and set(others.values()) == {"frozen"}
    # the regex must match the whole layer name; a wider one lets every score layer learn
    wide = flat_labels(abstract8s, trainable="score_.*", learn_upsampling=True)
    learning = {p[-2] for p, v in wide.items() if v != "frozen"}
    assert learning == SCORE_8S


def test_labels_trainable_does_not_unfreeze_upsampling(abstract8s):
    labels = flat_labels(abstract8s, trainable="upscore.*|score_fr")
    assert {labels[(layer, "kernel")] for layer in UPSCORE_8S} == {"frozen"}


# --- make_optimizer ------------------------------------------------------------------------------


def small_config(name: str = "sgd", momentum: float = 0.0, lr: float = 0.1, wd: float = 5e-4):
    c = base()
    c.model.arch = "fcn8s"
    c.model.n_class = 5
    c.model.width = 0.0625
    c.optim.name = name
    c.optim.momentum = momentum
    c.optim.weight_decay = wd
    c.learning_rate = lr
    return c


@pytest.fixture(scope="module")
def params8s():
    """Random float32 values in the shapes of a narrow FCN-8s (no compilation)."""
    abstract = abstract_variables(NetSpec.single("fcn8s", 5, width=0.0625))["params"]
    rng = np.random.default_rng(0)
    return jax.tree.map(
        lambda a: jnp.asarray(rng.standard_normal(a.shape).astype(np.float32)), abstract
    )


def random_like(params, seed: int):
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda p: jnp.asarray(rng.standard_normal(p.shape).astype(np.float32)), params
    )


def groups(tree) -> dict[str, list[tuple[tuple[str, ...], np.ndarray]]]:
    """Leaves of a params-shaped tree split by their default label."""
    flat = traverse_util.flatten_dict(tree)
    out: dict[str, list] = {"weight": [], "bias": [], "frozen": []}
    for path, label in flat_labels(tree).items():
        out[label].append((path, np.asarray(flat[path], np.float64)))
    return out


def apply_steps(tx, params, grads_list):
    """Updates of each step and the final params (jitted update: one small compile)."""
    update = jax.jit(tx.update)
    state = tx.init(params)
    all_updates = []
    for g in grads_list:
        updates, state = update(g, state, params)
        params = jax.tree.map(jnp.add, params, updates)
        all_updates.append(updates)
    return all_updates, params


def test_sgd_without_momentum_one_step(params8s):
    c = small_config(momentum=0.0, lr=0.1, wd=5e-4)
    tx = make_optimizer(c, params8s)
    ones = jax.tree.map(jnp.ones_like, params8s)
    (updates,), _ = apply_steps(tx, params8s, [ones])
    u = groups(updates)
    w = {p: np.asarray(v, np.float64) for p, v in traverse_util.flatten_dict(params8s).items()}
    assert u["weight"] and u["bias"] and u["frozen"]
    for path, upd in u["weight"]:
        np.testing.assert_allclose(upd, -0.1 * (1.0 + 5e-4 * w[path]), rtol=1e-6, err_msg=path)
    for path, upd in u["bias"]:
        np.testing.assert_allclose(upd, -2 * 0.1 * 1.0, rtol=1e-6, err_msg=path)  # no decay
    for path, upd in u["frozen"]:
        assert np.all(upd == 0.0), path


def test_sgd_momentum_two_steps_follow_caffe(params8s):
    lr, m, wd = 0.01, 0.99, 5e-4
    c = small_config(momentum=m, lr=lr, wd=wd)
    tx = make_optimizer(c, params8s)
    g1, g2 = random_like(params8s, 1), random_like(params8s, 2)
    _, final = apply_steps(tx, params8s, [g1, g2])
    # Caffe: v = m v + lr_mult * lr * (g + decay_mult * wd * w); w -= v
    flat_w = traverse_util.flatten_dict(params8s)
    flat_g = [traverse_util.flatten_dict(g) for g in (g1, g2)]
    flat_final = traverse_util.flatten_dict(final)
    moved = 0
    for path, label in flat_labels(params8s).items():
        w = np.asarray(flat_w[path], np.float64)
        v = np.zeros_like(w)
        mult, decay = {"weight": (1.0, wd), "bias": (2.0, 0.0), "frozen": (0.0, 0.0)}[label]
        for g in flat_g:
            v = m * v + mult * lr * (np.asarray(g[path], np.float64) + decay * w)
            w = w - v
        got = np.asarray(flat_final[path])
        np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-6, err_msg=str(path))
        if label == "frozen":
            assert np.array_equal(got, np.asarray(flat_w[path])), path
        else:
            moved += 1
    assert moved > 0


def test_adam_first_step(params8s):
    lr, wd = 1e-3, 5e-4
    c = small_config(name="adam", lr=lr, wd=wd)
    tx = make_optimizer(c, params8s)
    grads = random_like(params8s, 3)
    (updates,), _ = apply_steps(tx, params8s, [grads])
    flat_u = traverse_util.flatten_dict(updates)
    flat_g = traverse_util.flatten_dict(grads)
    flat_w = traverse_util.flatten_dict(params8s)
    for path, label in flat_labels(params8s).items():
        g = np.asarray(flat_g[path], np.float64)
        u = np.asarray(flat_u[path])
        if label == "frozen":
            assert np.all(u == 0.0), path
            continue
        if label == "weight":
            g = g + wd * np.asarray(flat_w[path], np.float64)  # L2 decay before Adam
        rate = lr if label == "weight" else 2 * lr
        # Adam's first step: m_hat = g, v_hat = g^2: -rate * g / (|g| + eps)
        np.testing.assert_allclose(u, -rate * g / (np.abs(g) + 1e-8), rtol=1e-4, err_msg=path)


def test_unknown_optimizer_raises(params8s):
    c = small_config(name="rmsprop")
    with pytest.raises(FCNError, match="rmsprop"):
        make_optimizer(c, params8s)


def test_trainable_regex_zeroes_every_update_but_score_fr(params8s):
    c = small_config(momentum=0.0)
    c.optim.trainable = "score_fr"
    tx = make_optimizer(c, params8s)
    (updates,), _ = apply_steps(tx, params8s, [jax.tree.map(jnp.ones_like, params8s)])
    for path, u in traverse_util.flatten_dict(updates).items():
        if path[-2] == "score_fr":
            assert np.all(np.asarray(u) != 0.0), path
        else:
            assert np.all(np.asarray(u) == 0.0), path


def test_learn_upsampling_config_lets_upscore_update(params8s):
    c = small_config(momentum=0.0)
    c.model.learn_upsampling = True
    tx = make_optimizer(c, params8s)
    (updates,), _ = apply_steps(tx, params8s, [jax.tree.map(jnp.ones_like, params8s)])
    w = params8s["upscore8"]["kernel"]
    np.testing.assert_allclose(updates["upscore8"]["kernel"], -0.1 * (1 + 5e-4 * w), rtol=1e-6)


# --- learning-rate schedule ---------------------------------------------------------------------

TINY = {
    "vgg16": {"conv1_1": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones((2,))}},
    "upscore": {"kernel": jnp.ones((2, 2))},
}


def test_schedule_constant_without_halving():
    c = small_config(lr=0.3)
    schedule = learning_rate_schedule(c)
    assert [float(schedule(s)) for s in (0, 1, 10_000)] == pytest.approx([0.3] * 3)


def test_schedule_halves_every_n_epochs():
    c = small_config(lr=0.4)
    c.optim.lr_halve_every_epochs = 2
    schedule = learning_rate_schedule(c, steps_per_epoch=3)
    got = [float(schedule(s)) for s in range(14)]
    expected = [0.4 * 0.5 ** (s // 6) for s in range(14)]
    assert got == pytest.approx(expected, rel=1e-6)


def test_halving_needs_steps_per_epoch():
    c = small_config()
    c.optim.lr_halve_every_epochs = 2
    with pytest.raises(FCNError, match="lr_halve_every_epochs"):
        make_optimizer(c, TINY)


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_halving_shows_in_update_sizes(name):
    c = small_config(name=name, momentum=0.0, lr=0.4, wd=0.0)
    c.optim.lr_halve_every_epochs = 2
    tx = make_optimizer(c, TINY, steps_per_epoch=3)
    ones = jax.tree.map(jnp.ones_like, TINY)
    updates, _ = apply_steps(tx, TINY, [ones] * 14)
    tol = 1e-6 if name == "sgd" else 1e-4  # Adam's float32 bias corrections
    for step, u in enumerate(updates):
        rate = 0.4 * 0.5 ** (step // 6)
        # constant gradient 1: SGD steps -rate; Adam's m_hat = v_hat = 1 steps -rate / (1 + eps)
        np.testing.assert_allclose(u["vgg16"]["conv1_1"]["kernel"], -rate, rtol=tol)
        np.testing.assert_allclose(u["vgg16"]["conv1_1"]["bias"], -2 * rate, rtol=tol)
        assert np.all(np.asarray(u["upscore"]["kernel"]) == 0.0)


# --- SpeedPaper's schedules: halving every N epochs, MultiStepLR milestones ----------------------


def test_halving_every_50_epochs_at_the_epoch_starts():
    # SpeedPaper v1: `if epoch % 50 == 0 and epoch != 0: lr *= 0.5` before the epoch's steps.
    c = small_config(lr=1e-4)
    c.optim.lr_halve_every_epochs = 50
    schedule = learning_rate_schedule(c, steps_per_epoch=183)  # CamVid's 367 images, batch 2
    for epoch, rate in [(0, 1e-4), (49, 1e-4), (50, 5e-5), (99, 5e-5), (100, 2.5e-5)]:
        for step in (epoch * 183, epoch * 183 + 182):  # the epoch's first and last step
            assert float(schedule(step)) == pytest.approx(rate, rel=1e-6), (epoch, step)


def test_milestones_scale_at_the_epoch_starts():
    # SpeedPaper v2: MultiStepLR(milestones=[50, 80], gamma=0.1) stepped after every epoch, so
    # epochs 0-49 run at 0.01, 50-79 at 0.001, 80- at 0.0001.
    c = small_config(lr=0.01)
    c.optim.lr_milestone_epochs = (50, 80)
    c.optim.lr_gamma = 0.1
    schedule = learning_rate_schedule(c, steps_per_epoch=7)
    expected = {0: 0.01, 349: 0.01, 350: 1e-3, 559: 1e-3, 560: 1e-4, 699: 1e-4, 10**6: 1e-4}
    got = {step: float(schedule(step)) for step in expected}
    assert got == pytest.approx(expected, rel=1e-6)
    c.optim.lr_gamma = 0.5
    assert float(learning_rate_schedule(c, steps_per_epoch=1)(80)) == pytest.approx(0.0025)


@pytest.mark.parametrize(
    ("key", "value", "pattern"),
    [
        ("lr_milestone_epochs", (80, 50), "increasing whole epochs"),
        ("lr_milestone_epochs", (50, 50), "increasing whole epochs"),
        ("lr_milestone_epochs", (0, 5), "increasing whole epochs"),
        ("lr_milestone_epochs", (1.5,), "increasing whole epochs"),
        ("lr_gamma", -0.1, r"lr_gamma=-0.1 must be >= 0"),
    ],
)
def test_bad_milestones(key, value, pattern):
    c = small_config()
    c.optim.lr_milestone_epochs = (50, 80)
    c.optim[key] = value
    with pytest.raises(FCNError, match=pattern):
        learning_rate_schedule(c, steps_per_epoch=3)


def test_milestones_need_steps_per_epoch_and_exclude_halving():
    c = small_config()
    c.optim.lr_milestone_epochs = (2,)
    with pytest.raises(FCNError, match=r"optim\.lr_milestone_epochs needs the training split"):
        make_optimizer(c, TINY)
    c.optim.lr_halve_every_epochs = 2
    with pytest.raises(FCNError, match="lr_milestone_epochs are set: choose one"):
        learning_rate_schedule(c, steps_per_epoch=3)


def test_milestones_show_in_adam_update_sizes():
    # SpeedPaper's optimiser: Adam, one rate for weights and biases, no decay.
    c = small_config(name="adam", lr=0.01, wd=0.0)
    c.optim.bias_lr_mult = 1.0
    c.optim.lr_milestone_epochs = (2, 3)
    c.model.learn_upsampling = True
    tx = make_optimizer(c, TINY, steps_per_epoch=2)
    ones = jax.tree.map(jnp.ones_like, TINY)
    updates, _ = apply_steps(tx, TINY, [ones] * 8)
    for step, u in enumerate(updates):
        rate = 0.01 * 0.1 ** ((step >= 4) + (step >= 6))
        for leaf in jax.tree.leaves(u):  # constant gradient 1: Adam steps -rate / (1 + eps)
            np.testing.assert_allclose(leaf, -rate, rtol=1e-4)


def test_speedpaper_upsampling_frozen_unless_learned():
    spec = NetSpec.single("speedpaper", 5, backbone="vgg16_bn", width=NARROW)
    params = abstract_variables(spec)["params"]
    frozen = {p[0] for p, label in flat_labels(params).items() if label == "frozen"}
    assert frozen == {"upsample_2x_1", "upsample_2x_2", "upsample_8x"}
    learned = flat_labels(params, learn_upsampling=True)
    assert "frozen" not in set(learned.values())
    assert learned[("vgg16_bn", "bn1_1", "scale")] == "weight"
    assert learned[("vgg16_bn", "bn1_1", "bias")] == "bias"


# --- divergence warning -------------------------------------------------------------------------


def test_divergence_warning():
    c = small_config(lr=1e-4)
    c.optim.loss = "sum"
    message = divergence_warning(c)
    assert message is not None and "optim.loss='mean'" in message and "0.0001" in message
    c.learning_rate = 1e-10
    assert divergence_warning(c) is None
    c.learning_rate = 1e-4
    c.optim.loss = "mean"
    assert divergence_warning(c) is None


def test_base_config_is_the_release_solver():
    c = base()
    assert divergence_warning(c) is None  # sum loss at 1e-10
    assert (c.optim.name, c.optim.momentum, c.optim.weight_decay) == ("sgd", 0.99, 5e-4)
    assert c.optim.bias_lr_mult == 2.0 and c.model.learn_upsampling is False
