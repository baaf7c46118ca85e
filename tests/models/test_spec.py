"""NetSpec: one description of a network; the backbone seam; both convolution implementations."""

from pathlib import Path
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fcn_jax.checkpoint import load_weights
from fcn_jax.errors import FCNError
from fcn_jax.models import NetSpec, abstract_variables, crop_offsets, init_variables, predict_fn
from fcn_jax.models.backbones import BACKBONES, get_backbone
from fcn_jax.models.layers import CoordMap, max_pool_ceil
from fcn_jax.preprocessing import CAFFE_VOC, NYUD_HHA
from tests.utils import NARROW, random_weights

FIXTURES = Path(__file__).parents[1] / "fixtures"


def test_crop_offsets_are_derived_from_the_backbones_coordinate_maps():
    # torchfcn's typed-in numbers, now derived from VGG16's geometry through the seam.
    assert crop_offsets("fcn32s", "vgg16") == {"upscore": 19}
    assert crop_offsets("fcn16s", "vgg16") == {"score_pool4": 5, "upscore16": 27}
    assert crop_offsets("fcn8s", "vgg16") == {"score_pool4": 5, "score_pool3": 9, "upscore8": 31}
    vgg = get_backbone("vgg16")
    assert set(vgg.TAPS.values()) <= set(vgg.coord_maps())
    with pytest.raises(ValueError, match="vgg16"):
        get_backbone("resnet7")
    assert set(BACKBONES) == {"vgg16", "vgg16_bn", "resnet50", "resnet101"}


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"arch": "fcn4s"}, "arch"),
        ({"backbone": "alexnet"}, "backbone"),
        ({"dtype": "float16"}, "dtype"),
        ({"conv_impl": "cudnn"}, "conv_impl"),
        ({"heads": ()}, "heads"),
        ({"heads": (("a", 2), ("a", 3))}, "heads"),
        ({"streams": ("color", "hha")}, "inputs"),
        ({"streams": ("color", "hha"), "heads": (("a", 2), ("b", 3))}, "streams"),
    ],
)
def test_a_bad_spec_is_refused_naming_the_field(fields, match):
    with pytest.raises(FCNError, match=match):
        NetSpec(**fields)


def test_outputs_are_a_dict_of_heads_for_every_kind_of_network():
    x = {"image": np.zeros((1, 13, 17, 3), np.uint8), "hha": np.zeros((1, 13, 17, 3), np.uint8)}
    nets = [
        NetSpec.single("fcn32s", 3, width=NARROW),
        NetSpec(arch="fcn16s", heads=(("sem", 4), ("geo", 3)), width=NARROW),
        NetSpec.single(
            "fcn16s",
            5,
            width=NARROW,
            streams=("color", "hha"),
            inputs=("image", "hha"),
            preprocessing=(CAFFE_VOC, NYUD_HHA),
        ),
    ]
    for net, heads in zip(nets, [("out",), ("sem", "geo"), ("out",)], strict=True):
        variables = abstract_variables(net)
        out = jax.eval_shape(net.logits, variables, x)
        # Keys, not their order, identify heads: a jitted function's dict comes back sorted.
        assert sorted(out) == sorted(heads) == sorted(net.head_names)
        assert {h: o.shape for h, o in out.items()} == {h: (1, 13, 17, n) for h, n in net.heads}


def test_predict_fn_is_one_function_per_spec():
    net = NetSpec.single("fcn32s", 3, width=NARROW)
    assert predict_fn(net) is predict_fn(NetSpec.single("fcn32s", 3, width=NARROW))
    assert predict_fn(net) is not predict_fn(net.replace(dtype="bfloat16"))


def test_xla_and_gemm_convolutions_give_the_same_values_and_gradients():
    # The whole narrow FCN-8s through both implementations, on the CPU, where "auto" is gemm.
    xla = NetSpec.single("fcn8s", 4, width=NARROW, conv_impl="xla")
    gemm = xla.replace(conv_impl="gemm")
    params = jax.tree.map(jnp.asarray, random_weights(xla, seed=4)["params"])
    rng = np.random.default_rng(0)
    batch = {"image": rng.integers(0, 256, (2, 21, 27, 3), dtype=np.uint8)}
    labels = jnp.asarray(rng.integers(0, 4, (2, 21, 27)))

    def loss(net):
        def f(p):
            logits = net.logits({"params": p}, batch)["out"]
            picked = jnp.take_along_axis(jax.nn.log_softmax(logits), labels[..., None], -1)
            return -picked.sum(), logits

        return jax.jit(jax.value_and_grad(f, has_aux=True))

    (la, ya), ga = loss(xla)(params)
    (lb, yb), gb = loss(gemm)(params)
    scale = float(jnp.abs(ya).max())
    np.testing.assert_allclose(np.asarray(yb), np.asarray(ya), atol=1e-4 * scale, rtol=0)
    np.testing.assert_allclose(float(lb), float(la), rtol=1e-5)
    for path, a in jax.tree_util.tree_leaves_with_path(ga):
        b = gb
        for k in path:
            b = b[k.key]
        norm = float(jnp.abs(a).max())
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-4 * norm + 1e-12)


def test_a_weights_directory_written_before_netspec_loads_and_predicts_the_same():
    # Written by convert_torch_weights.py at c86a5c1 (fcn8s, 3 classes, width 1/32): no
    # ``backbone`` key in its metadata; its logits were recorded by that version.
    variables, meta = load_weights(FIXTURES / "weights_pre_netspec")
    assert meta.spec == NetSpec.single("fcn8s", 3, width=0.03125, preprocessing=(CAFFE_VOC,))
    assert meta.source == "torchfcn" and meta.class_names == ("class_0", "class_1", "class_2")
    recorded = np.load(FIXTURES / "weights_pre_netspec_logits.npz")
    logits = predict_fn(meta.spec)(variables, {"image": recorded["image"]})["out"]
    scale = np.abs(recorded["logits"]).max()
    np.testing.assert_allclose(np.asarray(logits), recorded["logits"], atol=1e-5 * scale, rtol=0)


class StubBackbone(nn.Module):
    """A toy backbone: a padded convolution, five ceil-mode pools and a 5x5 valid "fc".

    Like VGG16's fc6, the valid convolution on top shifts the stride-32 map so that the skips'
    crops are non-negative; the pad leaves every input size room for the crops.
    """

    TAPS: ClassVar[dict[int, str]] = {32: "fc", 16: "pool4", 8: "pool3"}
    PAD = 65  # with the 5x5 fc: the least pad whose crops fit every input size (VGG16: 100)
    width: float = 1.0
    dtype: jnp.dtype = jnp.float32
    dropout_rate: float = 0.0
    suffix: str = ""
    conv_impl: str = "xla"

    @staticmethod
    def coord_maps() -> dict[str, CoordMap]:
        maps, current = {}, CoordMap.conv(3, 1, StubBackbone.PAD)
        for i in range(1, 6):
            current = current.then(CoordMap.conv(2, 2))
            maps[f"pool{i}"] = current
        maps["fc"] = current.then(CoordMap.conv(5, 1, 0))
        return maps

    @nn.compact
    def __call__(self, x, *, train=False):
        x = nn.relu(nn.Conv(4, (3, 3), padding=self.PAD, name=f"conv{self.suffix}")(x))
        features = {}
        for i in range(1, 6):
            x = features[f"pool{i}"] = max_pool_ceil(x)
        features["fc"] = nn.relu(nn.Conv(8, (5, 5), padding=0, name=f"fc{self.suffix}")(x))
        return features


def test_a_backbone_is_one_module_and_one_dict_entry(monkeypatch):
    # The seam: register a module, name it in a spec; crops, params and outputs follow.
    monkeypatch.setitem(BACKBONES, "stub", StubBackbone)
    net = NetSpec.single("fcn8s", 3, backbone="stub")
    offsets = crop_offsets("fcn8s", "stub")
    assert set(offsets) == {"score_pool4", "score_pool3", "upscore8"}
    variables = init_variables(net, jax.random.key(0))
    assert {"stub", "score_fr", "score_pool4", "score_pool3", "upscore8"} <= set(
        variables["params"]
    )
    for h, w in ((1, 1), (23, 31), (64, 48)):
        image = np.zeros((1, h, w, 3), np.uint8)
        out = predict_fn(net)(variables, {"image": image})
        assert out["out"].shape == (1, h, w, 3)
