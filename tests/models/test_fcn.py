"""The FCN module: parameter counts, names, shapes for every input size, init, freezing, dropout."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from fcn_jax.convert.layout import torchfcn_names
from fcn_jax.models import (
    VARIANTS,
    NetSpec,
    abstract_variables,
    get_variant,
    init_variables,
    initial_head_params,
    predict_fn,
    random_variables,
)
from fcn_jax.models.layers import bilinear_kernel
from tests.utils import NARROW


def spec(variant="fcn8s", n_class=21, **fields) -> NetSpec:
    return NetSpec.single(variant, n_class, **fields)


def abstract_params(s: NetSpec):
    return abstract_variables(s)["params"]


ALL = sorted(VARIANTS)


def count(params) -> int:
    return sum(math.prod(x.shape) for x in jax.tree.leaves(params))


@pytest.mark.parametrize(
    ("variant", "expected"),
    [
        ("fcn32s", 136_152_917),
        ("fcn16s", 134_815_994),
        ("fcn8s", 134_489_759),
        ("fcn8s-atonce", 134_489_759),
    ],
)
def test_parameter_counts_at_full_width(variant, expected):
    assert count(abstract_params(spec(variant, 21))) == expected


@pytest.mark.parametrize("variant", ALL)
def test_layer_names_are_caffes(variant):
    abstract = abstract_params(spec(variant, width=NARROW))
    layers = {path[-2] for path in traverse_util.flatten_dict(abstract)}
    trunk = {
        f"conv{b}_{i}"
        for b, n in zip(range(1, 6), (2, 2, 3, 3, 3), strict=True)
        for i in range(1, n + 1)
    }
    assert trunk | {"fc6", "fc7", "score_fr"} <= layers
    assert {n for n, _, _ in get_variant(variant).upsamplers()} <= layers


@pytest.mark.torch
@pytest.mark.parametrize("variant", ALL)
def test_param_names_match_torchfcn_layout(variant):
    from fcn_jax.torch_reference import TorchFCN

    # Same keys as our torch FCN (and therefore torchfcn's, see the parity module).
    abstract = abstract_params(spec(variant, width=NARROW))
    torch_keys = set(TorchFCN(variant, 21, NARROW).state_dict())
    assert set(torchfcn_names(abstract)) == torch_keys


def test_width_scales_every_hidden_layer():
    p = abstract_params(spec("fcn8s", 5, width=0.25))
    assert p["vgg16"]["conv1_1"]["kernel"].shape == (3, 3, 3, 16)
    assert p["vgg16"]["fc6"]["kernel"].shape == (7, 7, 128, 1024)
    assert p["vgg16"]["fc7"]["kernel"].shape == (1, 1, 1024, 1024)
    assert p["score_pool3"]["kernel"].shape == (1, 1, 64, 5)
    assert p["upscore8"]["kernel"].shape == (16, 16, 5, 5)


def _sizes():
    # Every size from 1 to 40 on one side, odd/non-square pairs and a few large ones.
    rng = np.random.default_rng(1)
    pairs = [(h, 1 + (7 * h) % 40) for h in range(1, 41)]
    pairs += [tuple(rng.integers(1, 300, 2)) for _ in range(10)]
    return [*pairs, (500, 375), (1, 1024), (1023, 3)]


@pytest.mark.parametrize("variant", ALL)
def test_output_size_equals_input_size_for_every_size(variant):
    # Shapes only: eval_shape traces without compiling or computing.
    model = spec(variant, 3, width=NARROW).module()
    params = abstract_params(spec(variant, 3, width=NARROW))
    for h, w in _sizes():
        x = jax.ShapeDtypeStruct((2, int(h), int(w), 3), jnp.float32)
        (out,) = jax.eval_shape(model.apply, {"params": params}, x).values()
        assert out.shape == (2, h, w, 3), (variant, h, w)
        assert out.dtype == jnp.float32


def test_sown_features_have_strides_8_16_32():
    model = spec(width=NARROW).module()
    params = abstract_params(spec(width=NARROW))
    h, w = 37, 50
    x = jax.ShapeDtypeStruct((1, h, w, 3), jnp.float32)
    _, state = jax.eval_shape(
        lambda p, x: model.apply({"params": p}, x, mutable=["intermediates"]), params, x
    )
    maps = state["intermediates"]["maps"][0]
    padded = (h + 198, w + 198)  # conv1_1 pads 100; each 3x3 conv keeps the size
    for pool, stride in (("pool3", 8), ("pool4", 16), ("pool5", 32)):
        assert maps[pool].shape[1:3] == tuple(-(-s // stride) for s in padded)
    assert maps["fc7"].shape[1:3] == tuple(-(-s // 32) - 6 for s in padded)  # fc6 is 7x7 valid


@pytest.fixture(scope="module")
def narrow_fcn8s():
    net = spec("fcn8s", 4, width=NARROW)
    return net, init_variables(net, jax.random.key(0))["params"]


def test_init_zero_scores_and_bilinear_upsampling(narrow_fcn8s):
    net, params = narrow_fcn8s
    for layer in ("score_fr", "score_pool4", "score_pool3"):
        assert not np.any(np.asarray(params[layer]["kernel"]))
        assert not np.any(np.asarray(params[layer]["bias"]))
    for name, k, _ in get_variant("fcn8s").upsamplers():
        kernel = np.asarray(params[name]["kernel"])
        np.testing.assert_array_equal(kernel[:, :, 1, 1], bilinear_kernel(k))
        assert kernel[:, :, 0, 1].sum() == 0
    # A fresh FCN predicts nothing: every logit 0 (the reason parity tests use random weights).
    (out,) = predict_fn(net)({"params": params}, {"image": jnp.ones((1, 8, 8, 3))}).values()
    assert not np.any(np.asarray(out))
    # The conversion path builds the same head without running init.
    head = initial_head_params(net, abstract_params(net))
    jax.tree.map(np.testing.assert_array_equal, head, {k: params[k] for k in head})
    # Timing's params: the init's shapes, the same head, a He-normal trunk (no init run).
    timed = random_variables(net, seed=1)
    assert set(timed) == {"params"}  # no BatchNorm: no other collection
    timed = timed["params"]
    assert jax.tree.structure(timed) == jax.tree.structure(params)
    jax.tree.map(assert_same_shape_dtype, timed, params)
    jax.tree.map(np.testing.assert_array_equal, head, {k: timed[k] for k in head})
    conv1 = np.asarray(timed["vgg16"]["conv1_1"]["kernel"])
    assert 0.5 < conv1.std() / np.sqrt(2 / 27) < 1.5 and not np.any(timed["vgg16"]["fc7"]["bias"])


def assert_same_shape_dtype(a, b):
    assert (a.shape, a.dtype) == (b.shape, b.dtype)


def _random_like(params, seed=0):
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(
        tree, [0.1 * jax.random.normal(k, x.shape) for k, x in zip(keys, leaves, strict=True)]
    )


@pytest.mark.parametrize("learn", [False, True])
def test_upsampling_frozen_unless_allowed(narrow_fcn8s, learn):
    net, params = narrow_fcn8s
    model = net.replace(learn_upsampling=learn).module()
    params = _random_like(params)
    x = jax.random.normal(jax.random.key(1), (1, 12, 10, 3))

    def loss(p):
        return jnp.sum(model.apply({"params": p}, x)["out"] ** 2)

    grads = jax.jit(jax.grad(loss))(params)
    for name, _, _ in get_variant("fcn8s").upsamplers():
        norm = float(jnp.abs(grads[name]["kernel"]).sum())
        assert (norm > 0) == learn, (name, norm)
    assert float(jnp.abs(grads["score_fr"]["kernel"]).sum()) > 0


def test_dropout_only_in_training(narrow_fcn8s):
    net, params = narrow_fcn8s
    model = net.module()
    params = _random_like(params)
    x = jax.random.normal(jax.random.key(2), (1, 16, 16, 3))
    a = model.apply({"params": params}, x)["out"]
    b = model.apply({"params": params}, x, train=False)["out"]
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    t1 = model.apply({"params": params}, x, train=True, rngs={"dropout": jax.random.key(3)})["out"]
    t2 = model.apply({"params": params}, x, train=True, rngs={"dropout": jax.random.key(4)})["out"]
    assert not np.allclose(np.asarray(t1), np.asarray(a))
    assert not np.allclose(np.asarray(t1), np.asarray(t2))


def test_atonce_scales_pool4_and_pool3(narrow_fcn8s):
    # fcn8s-atonce == fcn8s whose skip score kernels are scaled by 0.01 / 0.0001.
    net, params = narrow_fcn8s
    params = _random_like(params)
    model, atonce = net.module(), net.replace(arch="fcn8s-atonce").module()
    scaled = dict(params)
    for layer, s in (("score_pool4", 0.01), ("score_pool3", 0.0001)):
        scaled[layer] = {**params[layer], "kernel": params[layer]["kernel"] * s}
    x = jax.random.normal(jax.random.key(5), (1, 20, 14, 3))
    np.testing.assert_allclose(
        np.asarray(atonce.apply({"params": params}, x)["out"]),
        np.asarray(model.apply({"params": scaled}, x)["out"]),
        rtol=1e-4,
        atol=1e-5,
    )


def test_unknown_variant_lists_the_valid_ones():
    with pytest.raises(ValueError, match="fcn32s"):
        get_variant("fcn4s")


def test_bfloat16_computes_in_bf16_with_float32_params():
    net = spec("fcn32s", width=NARROW, dtype="bfloat16")
    params = abstract_params(net)
    assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
    (out,) = jax.eval_shape(
        net.module().apply, {"params": params}, jax.ShapeDtypeStruct((1, 9, 9, 3), jnp.float32)
    ).values()
    assert out.dtype == jnp.float32 and out.shape == (1, 9, 9, 21)
