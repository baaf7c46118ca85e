"""The BatchNorm networks (vgg16_bn FCNs, SpeedPaper's FCN) as modules: their variables, the
train-mode statistics, frozen BatchNorm, SpeedPaper's geometry and its padding to a multiple of
32; and their variables through a weights directory.

Narrow widths throughout: torch parity lives in tests/convert and tests/models/test_norm.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from fcn_jax.checkpoint import WeightsMetadata, load_weights, save_weights
from fcn_jax.errors import FCNError
from fcn_jax.models import NetSpec, abstract_variables, init_variables, random_variables
from fcn_jax.models.backbones.vgg16 import torchvision_convs
from fcn_jax.models.layers import bilinear_kernel
from fcn_jax.preprocessing import TORCHVISION
from fcn_jax.resources import default_class_names
from tests.utils import NARROW

N_CLASS = 5
BN_FCN = NetSpec.single("fcn8s", N_CLASS, backbone="vgg16_bn", width=NARROW)
SPEEDPAPER = NetSpec.single(
    "speedpaper",
    N_CLASS,
    backbone="vgg16_bn",
    width=NARROW,
    learn_upsampling=True,
    preprocessing=(TORCHVISION,),
)


def images(n, h, w, seed=0):
    return {"image": np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), np.uint8)}


def perturbed(spec, seed=0):
    """Random variables with non-trivial BatchNorm statistics and affine parameters."""
    rng = np.random.default_rng(seed)
    v = jax.tree.map(np.asarray, random_variables(spec, seed))
    flat = traverse_util.flatten_dict(v)
    for path, leaf in flat.items():
        if path[-1] in ("mean", "bias"):
            flat[path] = rng.normal(0, 0.1, leaf.shape).astype(np.float32)
        elif path[-1] in ("var", "scale"):
            flat[path] = rng.uniform(0.5, 2.0, leaf.shape).astype(np.float32)
        elif path[0] == "params" and path[1].startswith(("score", "conv_trans")):
            flat[path] = rng.normal(0, 0.05, leaf.shape).astype(np.float32)
    return traverse_util.unflatten_dict(flat)


def test_vgg16_bn_has_a_batch_norm_after_every_3x3_conv_in_torchvision_order():
    v = abstract_variables(BN_FCN)
    trunk, stats = v["params"]["vgg16_bn"], v["batch_stats"]["vgg16_bn"]
    convs = [k for k in trunk if k.startswith("conv")]
    assert len(convs) == 13 and set(stats) == {"bn" + c.removeprefix("conv") for c in convs}
    assert {"fc6", "fc7"} <= set(trunk) and "fc6" not in stats
    for bn, leaves in stats.items():
        channels = trunk["conv" + bn.removeprefix("bn")]["kernel"].shape[-1]
        assert {k: x.shape for k, x in leaves.items()} == {"mean": (channels,), "var": (channels,)}
        assert {k: x.shape for k, x in trunk[bn].items()} == {
            "scale": (channels,),
            "bias": (channels,),
        }
    table = torchvision_convs(batch_norm=True)
    conv_index = [int(k.split(".")[1]) for k, v in table.items() if v.startswith("conv")]
    assert conv_index == [0, 3, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37, 40]
    assert all(table[f"features.{i + 1}"] == "bn" + table[f"features.{i}"][4:] for i in conv_index)


def test_vgg16_bn_fcn_keeps_the_paper_geometry():
    # pad 100 and ceil pooling: any size in, the input size out, crops as for VGG16.
    v = perturbed(BN_FCN)
    for h, w in ((1, 1), (23, 31)):
        out = BN_FCN.logits(v, images(1, h, w))
        assert out["out"].shape == (1, h, w, N_CLASS)


def test_train_mode_statistics_are_the_batchs_and_frozen_bn_keeps_the_running_ones():
    v = perturbed(BN_FCN)
    x = BN_FCN.preprocess(images(2, 40, 40))
    kw = {"train": True, "rngs": {"dropout": jax.random.key(0)}}
    _, updated = BN_FCN.apply(v, x, mutable=["batch_stats"], **kw)
    # conv1_1's output statistics, computed here: the running mean moved 10% of the way.
    conv = v["params"]["vgg16_bn"]["conv1_1"]
    y = (
        jax.lax.conv_general_dilated(
            x[0],
            conv["kernel"],
            (1, 1),
            [(100, 100)] * 2,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        + conv["bias"]
    )
    n = y.shape[0] * y.shape[1] * y.shape[2]
    old = v["batch_stats"]["vgg16_bn"]["bn1_1"]
    new = updated["batch_stats"]["vgg16_bn"]["bn1_1"]
    np.testing.assert_allclose(new["mean"], 0.9 * old["mean"] + 0.1 * y.mean((0, 1, 2)), rtol=1e-4)
    unbiased = y.var((0, 1, 2)) * n / (n - 1)
    np.testing.assert_allclose(new["var"], 0.9 * old["var"] + 0.1 * unbiased, rtol=1e-4)
    # Frozen: train-mode outputs equal eval-mode ones (dropout off), nothing to update.
    frozen = BN_FCN.apply(
        v, x, overrides={"freeze_bn": True, "dropout_rate": 0.0}, train=True, rngs=kw["rngs"]
    )
    np.testing.assert_allclose(frozen["out"], BN_FCN.apply(v, x)["out"], rtol=1e-5, atol=1e-5)


def test_bf16_keeps_statistics_in_float32():
    spec = BN_FCN.replace(dtype="bfloat16")
    v = perturbed(spec)
    _, updated = spec.apply(
        v,
        spec.preprocess(images(1, 24, 24)),
        train=True,
        mutable=["batch_stats"],
        rngs={"dropout": jax.random.key(0)},
    )
    assert {x.dtype for x in jax.tree.leaves(updated)} == {jnp.dtype(jnp.float32)}


def test_speedpaper_output_and_intermediates_at_its_strides():
    v = perturbed(SPEEDPAPER)
    x = SPEEDPAPER.preprocess(images(2, 64, 96))
    out, state = SPEEDPAPER.apply(v, x, mutable=["intermediates"])
    maps = state["intermediates"]["maps"][0]
    assert out["out"].shape == (2, 64, 96, N_CLASS)
    for i in range(1, 6):
        assert maps[f"s{i}"].shape[1:3] == (64 // 2**i, 96 // 2**i)
    assert maps["add1"].shape == maps["s4"].shape and maps["add2"].shape == maps["s3"].shape
    assert maps["trans2"].shape == (2, 8, 12, N_CLASS)
    with pytest.raises(ValueError, match="multiples of 32"):
        SPEEDPAPER.apply(v, SPEEDPAPER.preprocess(images(1, 48, 64)))


def test_speedpaper_pads_other_sizes_with_the_mean_pixel_and_crops_back():
    v = perturbed(SPEEDPAPER)
    x = images(1, 50, 70)
    out = SPEEDPAPER.logits(v, x)["out"]
    assert out.shape == (1, 50, 70, N_CLASS)
    canvas = np.broadcast_to(np.asarray(TORCHVISION.mean_pixel(), np.uint8), (1, 64, 96, 3)).copy()
    canvas[:, :50, :70] = x["image"]
    manual = SPEEDPAPER.logits(v, {"image": canvas})["out"][:, :50, :70]
    np.testing.assert_array_equal(out, manual)


def test_transposed_convs_start_bilinear_and_learn():
    v = init_variables(SPEEDPAPER, jax.random.key(0))
    k = np.asarray(v["params"]["upsample_8x"]["kernel"])
    assert k.shape == (16, 16, N_CLASS, N_CLASS)
    expected = np.zeros_like(k)
    expected[:, :, np.arange(N_CLASS), np.arange(N_CLASS)] = bilinear_kernel(16)[:, :, None]
    np.testing.assert_array_equal(k, expected)

    def loss(params):
        out = SPEEDPAPER.apply({**v, "params": params}, (jnp.ones((1, 32, 32, 3)),))
        return out["out"].sum()

    grads = jax.grad(loss)(v["params"])
    assert float(jnp.abs(grads["upsample_8x"]["kernel"]).max()) > 0


def metadata(spec):
    return WeightsMetadata(spec=spec, class_names=default_class_names(spec.n_class))


@pytest.mark.parametrize("spec", [BN_FCN, SPEEDPAPER], ids=["vgg16_bn-fcn8s", "speedpaper"])
def test_weights_directory_keeps_batch_stats(spec, tmp_path):
    v = perturbed(spec, seed=3)
    save_weights(tmp_path / "w", v, metadata(spec))
    assert (tmp_path / "w" / "0" / "model_state").is_dir()
    loaded, meta = load_weights(tmp_path / "w", as_numpy=True)
    assert meta.spec == spec and sorted(loaded) == ["batch_stats", "params"]
    jax.tree.map(np.testing.assert_array_equal, loaded, v)


def test_weights_without_their_statistics_are_refused(tmp_path):
    v = perturbed(BN_FCN)
    save_weights(tmp_path / "w", {"params": v["params"]}, metadata(BN_FCN))
    with pytest.raises(FCNError, match=r"no model_state item.*BatchNorm statistics"):
        load_weights(tmp_path / "w")


def test_a_vgg16_directory_has_no_model_state(tmp_path):
    spec = NetSpec.single("fcn32s", N_CLASS, width=NARROW)
    save_weights(tmp_path / "w", random_variables(spec), metadata(spec))
    assert not (tmp_path / "w" / "0" / "model_state").exists()
    assert list(load_weights(tmp_path / "w")[0]) == ["params"]
