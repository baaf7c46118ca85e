"""Two-stream (NYUDv2 RGB-HHA) and two-head (SIFT Flow) FCNs: names, conversion, parity."""

import jax
import numpy as np
import pytest
from flax import traverse_util

from fcn_jax.checkpoint import load_weights, save_weights
from fcn_jax.convert import convert_torch_file, export_torchfcn
from fcn_jax.convert.check import check_parity
from fcn_jax.models import NetSpec, abstract_variables
from fcn_jax.preprocessing import CAFFE_VOC, NYUD_HHA, NYUD_RGB, SIFTFLOW
from tests.utils import NARROW, random_image

STREAMS = ("color", "hha")
HEADS = (("sem", 33), ("geo", 3))


def two_streams(arch: str, n_class: int) -> NetSpec:
    return NetSpec.single(
        arch,
        n_class,
        width=NARROW,
        streams=STREAMS,
        inputs=("image", "hha"),
        preprocessing=(CAFFE_VOC, CAFFE_VOC),
    )


def abstract_params(spec: NetSpec):
    return abstract_variables(spec)["params"]


def layer_names(spec: NetSpec):
    return {path[-2] for path in traverse_util.flatten_dict(abstract_params(spec))}


def test_two_stream_names_follow_the_release():
    names = layer_names(two_streams("fcn16s", 40))
    for stream in STREAMS:
        assert {
            f"conv1_1{stream}",
            f"conv5_3{stream}",
            f"fc7{stream}",
            f"score_fr{stream}",
            f"score_pool4{stream}",
        } <= names
    assert {"upscore2", "upscore16"} <= names and "conv1_1" not in names


def test_two_head_names_follow_the_release():
    names = layer_names(NetSpec(arch="fcn16s", width=NARROW, heads=HEADS))
    for head in ("sem", "geo"):
        assert {
            f"score_fr{head}",
            f"upscore2{head}",
            f"score_pool4{head}",
            f"upscore16{head}",
        } <= names
    assert {"conv1_1", "fc7"} <= names


def test_late_fusion_averages_the_streams():
    # With identical streams the fused score equals each stream's: weights 0.5 / 0.5.
    spec = two_streams("fcn32s", 5)
    model = spec.module()
    leaves, tree = jax.tree.flatten(abstract_params(spec))
    rng = np.random.default_rng(0)
    params = jax.tree.unflatten(
        tree, [rng.standard_normal(x.shape).astype(np.float32) * 0.1 for x in leaves]
    )
    params["vgg16hha"] = {k.replace("color", "hha"): v for k, v in params["vgg16color"].items()}
    params["score_frhha"] = params["score_frcolor"]
    x = rng.standard_normal((1, 20, 24, 3)).astype(np.float32)
    _, state = model.apply({"params": params}, (x, x), mutable=["intermediates"])
    maps = state["intermediates"]["maps"][0]
    np.testing.assert_allclose(maps["score_fused"], maps["score_frcolor"], rtol=1e-6)
    x2 = rng.standard_normal((1, 20, 24, 3)).astype(np.float32)
    _, state = model.apply({"params": params}, (x, x2), mutable=["intermediates"])
    maps = state["intermediates"]["maps"][0]
    np.testing.assert_allclose(
        maps["score_fused"],
        0.5 * maps["score_frcolor"] + 0.5 * maps["score_frhha"],
        rtol=1e-5,
        atol=1e-6,
    )


@pytest.mark.torch
@pytest.mark.parametrize("variant", ["fcn32s", "fcn16s", "fcn8s"])
@pytest.mark.parametrize("kind", ["streams", "heads"])
def test_convert_check_and_round_trip(tmp_path, variant, kind, rng):
    import torch

    from fcn_jax.torch_reference import random_state_dict

    kw = {"streams": STREAMS} if kind == "streams" else {"heads": HEADS}
    n_class = 40 if kind == "streams" else 33
    state = random_state_dict(variant, n_class, NARROW, seed=1, **kw)
    torch.save(state, tmp_path / "src.pth")
    variables, meta, source = convert_torch_file(tmp_path / "src.pth", variant)
    assert meta.n_class == n_class
    if kind == "streams":
        assert meta.streams == STREAMS and meta.inputs == ("image", "hha")
        assert meta.spec.preprocessing == (NYUD_RGB, NYUD_HHA)
    else:
        assert meta.spec.head_names == ("sem", "geo") and meta.preprocessing == SIFTFLOW
        assert meta.head_class_names == (("sky", "horizontal", "vertical"),)
        assert meta.spec.heads == HEADS
    report = check_parity(source, variables, meta, random_image(rng, 37, 29))
    assert report.passed, report.format()
    assert report.confident_agreement == 100.0
    save_weights(tmp_path / "w", variables, meta)
    loaded, meta2 = load_weights(tmp_path / "w")
    assert meta2 == meta
    jax.tree.map(np.testing.assert_array_equal, loaded, variables)
    back = torch.load(export_torchfcn(tmp_path / "w", tmp_path / "back.pth"), weights_only=True)
    assert back["model_state_dict"].keys() == state.keys()
    assert all(torch.equal(back["model_state_dict"][k], v) for k, v in state.items())


@pytest.mark.torch
def test_torch_two_head_outputs_are_keyed():
    import torch

    from fcn_jax.torch_reference import TorchFCN

    net = TorchFCN("fcn32s", width=NARROW, heads=HEADS).eval()
    with torch.no_grad():
        out = net(torch.zeros(1, 3, 17, 23))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "sem": (1, 33, 17, 23),
        "geo": (1, 3, 17, 23),
    }
