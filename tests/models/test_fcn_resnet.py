"""torchvision's FCN-ResNets in Flax: geometry, names, the spec's rules, training mode, resize.

Narrow widths only; the parity with torchvision's own model is tests/convert/test_fcn_resnet.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from fcn_jax.checkpoint import WeightsMetadata
from fcn_jax.errors import FCNError
from fcn_jax.models import NetSpec, abstract_variables, initial_head_params, random_variables
from fcn_jax.models.backbones import BACKBONES
from fcn_jax.models.backbones.resnet import DEPTHS, BlockSpec, stage_specs
from fcn_jax.models.fcn_resnet import resize_bilinear
from fcn_jax.preprocessing import TORCHVISION
from fcn_jax.resources import default_class_names
from tests.utils import NARROW

N_CLASS = 5


def resnet_spec(arch="fcn_resnet50", aux=True, width=NARROW, n_class=N_CLASS, **fields):
    backbone = {"fcn_resnet50": "resnet50", "fcn_resnet101": "resnet101"}[arch]
    return NetSpec.single(
        arch,
        n_class,
        backbone=backbone,
        aux=aux,
        width=width,
        preprocessing=(TORCHVISION,),
        **fields,
    )


@pytest.fixture(scope="module")
def narrow():
    spec = resnet_spec()
    return spec, random_variables(spec, seed=0)  # drawn in NumPy: no init to compile


# ---------------------------------------------------------------- geometry and names


def test_stage_geometry_is_torchvisions_make_layer():
    # replace_stride_with_dilation=[False, True, True]: layer3 / layer4 lose their stride, and
    # the first block of a dilated stage keeps the *previous* dilation.
    stages = stage_specs(DEPTHS["resnet50"])
    assert [len(s) for s in stages] == [3, 4, 6, 3]
    assert stages[0] == (BlockSpec(1, 1, True), BlockSpec(1, 1, False), BlockSpec(1, 1, False))
    assert stages[1][0] == BlockSpec(2, 1, True) and set(stages[1][1:]) == {BlockSpec(1, 1, False)}
    assert stages[2][0] == BlockSpec(1, 1, True) and set(stages[2][1:]) == {BlockSpec(1, 2, False)}
    assert stages[3][0] == BlockSpec(1, 2, True) and set(stages[3][1:]) == {BlockSpec(1, 4, False)}
    assert [len(s) for s in stage_specs(DEPTHS["resnet101"])] == [3, 4, 23, 3]
    plain = stage_specs(DEPTHS["resnet50"], (False, False, False))  # ImageNet's
    assert [s[0].stride for s in plain] == [1, 2, 2, 2]
    assert {b.dilation for s in plain for b in s} == {1}


def test_names_follow_torchvision(narrow):
    _, variables = narrow
    params = traverse_util.flatten_dict(variables["params"], sep=".")
    stats = traverse_util.flatten_dict(variables["batch_stats"], sep=".")
    for key in (
        "resnet50.conv1.kernel",
        "resnet50.bn1.scale",
        "resnet50.layer1.0.downsample.0.kernel",
        "resnet50.layer1.0.downsample.1.bias",
        "resnet50.layer3.5.conv3.kernel",
        "resnet50.layer4.2.bn3.scale",
        "classifier.0.kernel",
        "classifier.1.scale",
        "classifier.4.kernel",
        "classifier.4.bias",
        "aux_classifier.4.bias",
    ):
        assert key in params, key
    assert "resnet50.layer4.2.bn3.var" in stats and "aux_classifier.1.mean" in stats
    # No convolution has a bias but the classes' 1x1s; only the first block projects.
    biased = {k for k in params if k.endswith(".bias") and k.rsplit(".", 2)[-2] in ("4",)}
    conv_biases = [k for k in params if k.endswith(".bias") and "conv" in k]
    assert not conv_biases and biased == {"classifier.4.bias", "aux_classifier.4.bias"}
    assert not any("layer2.1.downsample" in k for k in params)
    assert params["resnet50.conv1.kernel"].shape == (7, 7, 3, 8)
    assert params["resnet50.layer4.0.conv3.kernel"].shape == (1, 1, 64, 256)  # 4x planes
    assert params["classifier.0.kernel"].shape == (3, 3, 256, 64)  # 2048 / 4 at width 1
    assert params["aux_classifier.0.kernel"].shape == (3, 3, 128, 32)  # 1024 / 4 at width 1
    assert params["classifier.4.kernel"].shape == (1, 1, 64, N_CLASS)


def test_full_width_shapes_are_torchvisions():
    params = traverse_util.flatten_dict(abstract_variables(resnet_spec(width=1.0))["params"])
    shape = lambda *path: params[path].shape  # noqa: E731
    assert shape("resnet50", "layer1", "0", "conv1", "kernel") == (1, 1, 64, 64)
    assert shape("resnet50", "layer3", "0", "downsample", "0", "kernel") == (1, 1, 512, 1024)
    assert shape("resnet50", "layer4", "2", "conv3", "kernel") == (1, 1, 512, 2048)
    assert shape("classifier", "0", "kernel") == (3, 3, 2048, 512)
    assert shape("aux_classifier", "0", "kernel") == (3, 3, 1024, 256)
    # torchvision's model cards: 35,322,218 (fcn_resnet50) and 54,314,346 (fcn_resnet101)
    # parameters, both with the auxiliary head and 21 classes.
    for arch, count in (("fcn_resnet50", 35_322_218), ("fcn_resnet101", 54_314_346)):
        tree = abstract_variables(resnet_spec(arch, width=1.0, n_class=21))["params"]
        assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree)) == count, arch


@pytest.mark.parametrize(("height", "width"), [(64, 64), (97, 131), (7, 5)])
def test_output_and_feature_sizes(narrow, height, width):
    spec, variables = narrow
    x = jax.ShapeDtypeStruct((2, height, width, 3), jnp.float32)
    out, state = jax.eval_shape(
        lambda v, x: spec.apply(v, (x,), mutable=["intermediates"]), variables, x
    )
    maps = state["intermediates"]["maps"][0]
    assert {k: v.shape for k, v in out.items()} == {
        "out": (2, height, width, N_CLASS),
        "aux": (2, height, width, N_CLASS),
    }
    up = lambda side, k: -(-side // k)  # noqa: E731  ceil
    assert maps["stem"].shape[1:3] == (up(height, 4), up(width, 4))
    for name in ("layer2", "layer3", "layer4", "classifier", "aux_classifier"):
        assert maps[name].shape[1:3] == (up(height, 8), up(width, 8)), name  # stride 8


def test_logits_returns_the_scored_heads_only(narrow):
    # Evaluation and inference read spec.head_names: the aux head is a training loss.
    spec, variables = narrow
    assert spec.head_names == ("out",)
    batch = {"image": np.zeros((1, 20, 28, 3), np.uint8)}
    out = jax.jit(spec.logits)(variables, batch)
    assert list(out) == ["out"] and out["out"].shape == (1, 20, 28, N_CLASS)


def test_without_aux_there_is_no_aux_head():
    spec = resnet_spec(aux=False)
    params = abstract_variables(spec)["params"]
    assert sorted(params) == ["classifier", "resnet50"]
    out = jax.eval_shape(
        lambda v: spec.apply(v, (jnp.zeros((1, 16, 16, 3)),)), {**abstract_variables(spec)}
    )
    assert list(out) == ["out"]


def test_resnet101_has_23_blocks_in_layer3():
    params = abstract_variables(resnet_spec("fcn_resnet101"))["params"]["resnet101"]
    assert sorted(map(int, params["layer3"])) == list(range(23))
    assert [len(params[f"layer{i}"]) for i in range(1, 5)] == [3, 4, 23, 3]


# ---------------------------------------------------------------- the spec's rules


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"arch": "fcn_resnet50", "backbone": "resnet101"}, "backbone resnet50, not resnet101"),
        ({"arch": "fcn_resnet101", "backbone": "vgg16"}, "backbone resnet101, not vgg16"),
        ({"arch": "fcn8s", "backbone": "resnet50"}, "goes with arch fcn_resnet50"),
        ({"arch": "fcn32s", "backbone": "resnet101"}, r"skip taps \(vgg16, vgg16_bn\)"),
        ({"arch": "fcn8s", "aux": True}, "only the FCN-ResNets"),
        ({"arch": "speedpaper", "backbone": "vgg16_bn", "aux": True}, "auxiliary head"),
        (
            {"arch": "fcn_resnet50", "backbone": "resnet50", "learn_upsampling": True},
            "no upsampling to learn",
        ),
        (
            {"arch": "fcn_resnet50", "backbone": "resnet50", "heads": (("a", 2), ("b", 3))},
            "one head",
        ),
    ],
)
def test_a_resnet_spec_that_cannot_work_is_refused(fields, match):
    with pytest.raises(FCNError, match=match):
        NetSpec(**fields)


def test_backbones_are_registered_with_batch_norm():
    assert BACKBONES["resnet50"].BATCH_NORM and BACKBONES["resnet101"].BATCH_NORM
    assert resnet_spec().batch_norm


@pytest.mark.parametrize("aux", [True, False])
def test_metadata_stores_aux_only_when_true(aux):
    spec = resnet_spec(aux=aux)
    metadata = WeightsMetadata(spec, default_class_names(N_CLASS))
    data = metadata.to_json()
    assert data.get("aux", False) is aux and ("aux" in data) is aux
    assert WeightsMetadata.from_json(data).spec == spec


# ---------------------------------------------------------------- training mode


def test_training_needs_dropout_keys_and_updates_statistics(narrow):
    spec, variables = narrow
    x = (jax.random.normal(jax.random.key(1), (2, 17, 23, 3)),)
    with pytest.raises(Exception, match="dropout"):
        spec.apply(variables, x, train=True, mutable=["batch_stats"])
    rngs = {"dropout": jax.random.key(2)}
    out, state = spec.apply(variables, x, train=True, rngs=rngs, mutable=["batch_stats"])
    assert set(out) == {"out", "aux"}
    before = variables["batch_stats"]
    moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), before, state["batch_stats"])
    assert all(jax.tree.leaves(moved))  # every BatchNorm, heads included, saw the batch
    # Dropout acts in training only: two keys, two results; evaluation is deterministic.
    other, _ = spec.apply(
        variables, x, train=True, rngs={"dropout": jax.random.key(3)}, mutable=["batch_stats"]
    )
    assert not np.allclose(out["out"], other["out"])
    frozen, kept = spec.apply(
        variables,
        x,
        overrides={"freeze_bn": True},
        train=True,
        rngs=rngs,
        mutable=["batch_stats"],
    )
    jax.tree.map(np.testing.assert_array_equal, kept["batch_stats"], before)
    zero_drop = spec.apply(
        variables,
        x,
        overrides={"freeze_bn": True, "dropout_rate": 0.0},
        train=True,
        rngs=rngs,
        mutable=["batch_stats"],
    )[0]
    evaluated = spec.apply(variables, x)
    np.testing.assert_allclose(zero_drop["out"], evaluated["out"], rtol=1e-5, atol=1e-5)
    assert frozen["out"].shape == evaluated["out"].shape


def test_gradients_reach_every_param(narrow):
    spec, variables = narrow
    spec = spec.replace(conv_impl="xla")  # the cheaper compile; the CPU GEMM path is tested apart
    x = (jax.random.normal(jax.random.key(1), (1, 24, 24, 3)),)

    def loss(params):
        out, _ = spec.apply(
            {**variables, "params": params},
            x,
            train=True,
            rngs={"dropout": jax.random.key(0)},
            mutable=["batch_stats"],
        )
        return jnp.sum(out["out"] ** 2) + 0.5 * jnp.sum(out["aux"] ** 2)

    grads = jax.jit(jax.grad(loss))(variables["params"])
    zero = [k for k, g in traverse_util.flatten_dict(grads, sep=".").items() if not jnp.any(g)]
    assert not zero, zero


# ---------------------------------------------------------------- initial values


def test_heads_start_as_torchvision_initialises_fcnhead():
    # torch's default: kaiming_uniform(a=sqrt(5)) weights and U(+-1/sqrt(fan_in)) biases,
    # BatchNorm scale 1 and shift 0.
    spec = resnet_spec(width=0.5)
    heads = initial_head_params(spec, abstract_variables(spec)["params"], seed=3)
    assert sorted(heads) == ["aux_classifier", "classifier"]
    for head in heads.values():
        assert sorted(head) == ["0", "1", "4"]
        np.testing.assert_array_equal(head["1"]["scale"], 1.0)
        np.testing.assert_array_equal(head["1"]["bias"], 0.0)
        for conv in ("0", "4"):
            kernel = np.asarray(head[conv]["kernel"])
            bound = 1 / np.sqrt(np.prod(kernel.shape[:-1]))
            assert np.abs(kernel).max() <= bound
            assert np.std(kernel) == pytest.approx(bound / np.sqrt(3), rel=0.1)
        assert "bias" not in head["0"]
        bias = np.asarray(head["4"]["bias"])
        assert np.abs(bias).max() <= 1 / np.sqrt(head["4"]["kernel"].shape[2]) and bias.any()
    again = initial_head_params(spec, abstract_variables(spec)["params"], seed=3)
    jax.tree.map(np.testing.assert_array_equal, heads, again)


# ---------------------------------------------------------------- the resize


@pytest.mark.torch
@pytest.mark.parametrize(
    ("small", "large"),
    [((8, 8), (64, 64)), ((13, 17), (97, 131)), ((5, 3), (7, 11)), ((1, 1), (4, 6)),
     ((13, 17), (13, 17)), ((20, 20), (13, 7))],
)  # fmt: skip
def test_resize_is_torchs_bilinear_without_align_corners(small, large):
    import torch
    import torch.nn.functional as F

    x = np.random.default_rng(0).standard_normal((2, *small, 3)).astype(np.float32)
    ref = F.interpolate(
        torch.from_numpy(x.transpose(0, 3, 1, 2)), size=large, mode="bilinear", align_corners=False
    )
    ours = np.asarray(resize_bilinear(jnp.asarray(x), *large))
    np.testing.assert_allclose(ours, ref.numpy().transpose(0, 2, 3, 1), rtol=0, atol=1e-5)
