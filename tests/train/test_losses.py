"""fcn_jax.train.losses: summed cross-entropy over valid pixels, and its normalisation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fcn_jax.errors import FCNError
from fcn_jax.train.losses import cross_entropy_sum, normalise

N_CLASS = 4


def reference(logits: np.ndarray, labels: np.ndarray, n_class: int) -> tuple[float, int]:
    """NumPy float64: sum of -log softmax(logits)[label] over pixels with 0 <= label < n_class."""
    z = logits.astype(np.float64)
    z = z - z.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    labels = labels.astype(np.int64)
    valid = (labels >= 0) & (labels < n_class)
    total = 0.0
    for idx in zip(*np.nonzero(valid), strict=True):
        total -= logp[(*idx, labels[idx])]
    return total, int(valid.sum())


def reference_grad(logits: np.ndarray, labels: np.ndarray, n_class: int) -> np.ndarray:
    """d(sum)/d(logits): softmax - one_hot(label) on valid pixels, 0 on ignored ones."""
    z = logits.astype(np.float64)
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    labels = labels.astype(np.int64)
    valid = (labels >= 0) & (labels < n_class)
    onehot = np.eye(n_class)[np.where(valid, labels, 0)]
    return np.where(valid[..., None], p - onehot, 0.0)


def _case(rng: np.random.Generator, scale: float = 3.0, dtype=np.uint8):
    logits = (scale * rng.standard_normal((2, 5, 7, N_CLASS))).astype(np.float32)
    # classes, void (255) and out-of-range values (>= n_class) mixed in
    choices = [0, 1, 2, 3, 255, N_CLASS, 9] + ([-1] if dtype == np.int32 else [])
    labels = rng.choice(np.array(choices), size=(2, 5, 7)).astype(dtype)
    return logits, labels


@pytest.mark.parametrize("dtype", [np.uint8, np.int32])
def test_sum_and_count_match_numpy(rng, dtype):
    logits, labels = _case(rng, dtype=dtype)
    expected, count = reference(logits, labels, N_CLASS)
    assert 0 < count < labels.size  # the case holds both valid and ignored pixels
    s, c = cross_entropy_sum(jnp.asarray(logits), jnp.asarray(labels), N_CLASS)
    assert s.dtype == jnp.float32 and c.dtype == jnp.float32 and s.shape == c.shape == ()
    np.testing.assert_allclose(float(s), expected, rtol=1e-5)
    assert float(c) == count


def test_ignored_pixels_do_not_contribute_whatever_their_logits(rng):
    logits, labels = _case(rng)
    s, c = cross_entropy_sum(logits, labels, N_CLASS)
    ignored = ~(labels < N_CLASS)
    changed = np.where(ignored[..., None], rng.standard_normal(logits.shape) * 100, logits)
    s2, c2 = cross_entropy_sum(changed.astype(np.float32), labels, N_CLASS)
    assert float(s2) == pytest.approx(float(s), rel=1e-6)
    assert float(c2) == float(c)


def test_large_logits_stay_finite_and_exact(rng):
    logits, labels = _case(rng, scale=1000.0)
    expected, count = reference(logits, labels, N_CLASS)
    s, c = cross_entropy_sum(logits, labels, N_CLASS)
    assert np.isfinite(float(s))
    np.testing.assert_allclose(float(s), expected, rtol=1e-5)
    assert float(c) == count


def test_bfloat16_logits_give_float32_sums(rng):
    logits, labels = _case(rng)
    low = jnp.asarray(logits, jnp.bfloat16)
    s, c = cross_entropy_sum(low, labels, N_CLASS)
    expected, count = reference(np.asarray(low.astype(jnp.float32)), labels, N_CLASS)
    assert s.dtype == jnp.float32
    np.testing.assert_allclose(float(s), expected, rtol=1e-5)
    assert float(c) == count


def test_gradient_is_softmax_minus_one_hot_on_valid_pixels_only(rng):
    logits, labels = _case(rng)
    grad = jax.grad(lambda z: cross_entropy_sum(z, labels, N_CLASS)[0])(jnp.asarray(logits))
    np.testing.assert_allclose(
        np.asarray(grad), reference_grad(logits, labels, N_CLASS), rtol=1e-5, atol=1e-6
    )
    assert np.all(np.asarray(grad)[labels >= N_CLASS] == 0)


def test_jit_matches_eager(rng):
    logits, labels = _case(rng)
    eager = cross_entropy_sum(logits, labels, N_CLASS)
    jitted = jax.jit(cross_entropy_sum, static_argnums=2)(logits, labels, N_CLASS)
    np.testing.assert_allclose(float(jitted[0]), float(eager[0]), rtol=1e-6)
    assert float(jitted[1]) == float(eager[1])


def test_all_void_gives_zero_sum_zero_count_and_zero_mean(rng):
    logits = (3 * rng.standard_normal((1, 4, 6, N_CLASS))).astype(np.float32)
    labels = np.full((1, 4, 6), 255, np.uint8)
    labels[0, 0, :2] = N_CLASS  # out-of-range values are void too
    s, c = cross_entropy_sum(logits, labels, N_CLASS)
    assert float(s) == 0.0 and float(c) == 0.0
    mean = normalise(s, c, "mean")
    assert np.isfinite(float(mean)) and float(mean) == 0.0
    assert float(normalise(s, c, "sum")) == 0.0
    grad = jax.grad(lambda z: normalise(*cross_entropy_sum(z, labels, N_CLASS), "mean"))(logits)
    assert np.all(np.asarray(grad) == 0.0)


def test_normalise_sum_and_mean(rng):
    logits, labels = _case(rng)
    s, c = cross_entropy_sum(logits, labels, N_CLASS)
    assert float(normalise(s, c, "sum")) == float(s)
    expected, count = reference(logits, labels, N_CLASS)
    np.testing.assert_allclose(float(normalise(s, c, "mean")), expected / count, rtol=1e-5)
    # explicit values: mean divides by the count of valid pixels
    assert float(normalise(jnp.float32(12.0), jnp.float32(4.0), "mean")) == 3.0
    assert float(normalise(jnp.float32(12.0), jnp.float32(4.0), "sum")) == 12.0


@pytest.mark.parametrize("mode", ["avg", "Mean", ""])
def test_unknown_normalisation_raises(mode):
    with pytest.raises(FCNError, match=r"optim\.loss"):
        normalise(jnp.float32(1.0), jnp.float32(1.0), mode)
