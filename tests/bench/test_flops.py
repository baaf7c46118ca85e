"""fcn_jax.bench.flops: the analytic FLOP model against a hand count, the model's own shapes,
its parameter counts and XLA's cost analysis."""

import jax
import jax.numpy as jnp
import pytest

from fcn_jax.bench.flops import (
    format_breakdown,
    forward_macs,
    gflop,
    layer_costs,
    param_count,
    taps_inside,
    train_macs,
)
from fcn_jax.models import FCN, VARIANTS
from tests.utils import NARROW


def abstract_params(model: FCN):
    """Param shapes of a Flax FCN module, without computing anything."""
    x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    inputs = (x,) * len(model.streams) if model.streams else x
    return jax.eval_shape(model.init, jax.random.key(0), inputs)["params"]


# FCN-8s at 500x500, typed from the paper's geometry, (H_out = W_out, k, C_in, C_out):
# conv1 sees 500 + 2 * 100 - 2 = 698; ceil-mode pools give 349, 175, 88, 44, 22; fc6 (7x7,
# valid) 16. Score layers run on the uncropped maps.
HAND_CONVS_8S_500 = [
    (698, 3, 3, 64), (698, 3, 64, 64),
    (349, 3, 64, 128), (349, 3, 128, 128),
    (175, 3, 128, 256), (175, 3, 256, 256), (175, 3, 256, 256),
    (88, 3, 256, 512), (88, 3, 512, 512), (88, 3, 512, 512),
    (44, 3, 512, 512), (44, 3, 512, 512), (44, 3, 512, 512),
    (16, 7, 512, 4096), (16, 1, 4096, 4096),
    (16, 1, 4096, 21),  # score_fr
    (44, 1, 512, 21),  # score_pool4
    (88, 1, 256, 21),  # score_pool3
]  # fmt: skip
# Transposed convolutions, (H_in, k): upscore2 on score_fr (16 -> 34), upscore_pool4 (34 -> 70),
# upscore8 (70 -> 568); each input pixel through the whole 21 x 21 kernel.
HAND_DECONVS_8S_500 = [(16, 4), (34, 4), (70, 16)]


def hand_count_8s_500() -> int:
    convs = sum(h * h * k * k * ci * co for h, k, ci, co in HAND_CONVS_8S_500)
    return convs + sum(h * h * k * k * 21 * 21 for h, k in HAND_DECONVS_8S_500)


def test_fcn8s_500_matches_the_hand_count():
    layers = layer_costs("fcn8s", 500, 500)
    assert forward_macs(layers) == hand_count_8s_500() == 181_529_034_048
    assert round(forward_macs(layers) / 1e9, 1) == 181.5  # GMAC, the figure
    assert gflop("fcn8s", 500, 500) == pytest.approx(363.06, abs=0.01)
    # Per layer too: the 7x7 fc6 is the largest single layer.
    by_name = {layer.name: layer for layer in layers}
    assert by_name["fc6"].macs == 16 * 16 * 49 * 512 * 4096
    assert by_name["upscore8"].out_hw == (568, 568)


def test_variants_differ_only_by_their_heads():
    costs = {v: layer_costs(v, 500, 500) for v in ("fcn32s", "fcn16s", "fcn8s")}
    trunk = {
        v: [x for x in c if x.name.startswith(("conv", "pool", "fc"))] for v, c in costs.items()
    }
    assert trunk["fcn32s"] == trunk["fcn16s"] == trunk["fcn8s"]
    head = {v: forward_macs(costs[v]) - forward_macs(trunk[v]) for v in costs}
    # 32s: score_fr + upscore (16 -> 544, k64); 16s adds score_pool4, upscore2, upscore16 (k32).
    assert head["fcn32s"] == 16 * 16 * 4096 * 21 + 16 * 16 * 64 * 64 * 21 * 21
    assert head["fcn16s"] == (
        16 * 16 * 4096 * 21 + 16 * 16 * 16 * 21 * 21 + 44 * 44 * 512 * 21 + 34 * 34 * 32**2 * 441
    )
    assert forward_macs(costs["fcn32s"]) < forward_macs(costs["fcn16s"])
    assert forward_macs(costs["fcn16s"]) < forward_macs(costs["fcn8s"])
    # The atonce net scales pool4 / pool3 elementwise: the same count as FCN-8s.
    assert forward_macs(layer_costs("fcn8s-atonce", 500, 500)) == forward_macs(costs["fcn8s"])


def test_cost_grows_with_the_square_of_the_width():
    full = layer_costs("fcn8s", 500, 500)
    for w in (0.5, 0.25):
        narrow = layer_costs("fcn8s", 500, 500, width_mult=w)
        # Layers with hidden channels on both sides scale exactly as w^2 ...
        for a, b in zip(full, narrow, strict=True):
            if a.kind == "conv" and a.c_in >= 64 and a.c_out >= 64:
                assert b.macs == a.macs * w * w
        # ... conv1_1 and the score layers as w, the upsampling not at all: the total is ~w^2.
        ratio = forward_macs(narrow) / forward_macs(full)
        assert w * w < ratio < 1.07 * w * w


def test_train_is_about_three_times_forward():
    for variant in ("fcn32s", "fcn8s"):
        layers = layer_costs(variant, 500, 500)
        ratio = train_macs(layers) / forward_macs(layers)
        # 3x, less conv1_1's input gradient and the frozen upsampling's weight gradients.
        assert 2.98 < ratio < 3.0
        assert gflop(variant, 500, 500, "train") == pytest.approx(2 * train_macs(layers) / 1e9)
    first = layer_costs("fcn8s", 64, 64)[0]
    assert first.name == "conv1_1" and first.train_macs == 2 * first.macs
    learned = layer_costs("fcn8s", 64, 64, learn_upsampling=True)[-1]
    assert learned.name == "upscore8" and learned.train_macs == 3 * learned.macs
    with pytest.raises(ValueError, match="mode"):
        gflop("fcn8s", 64, 64, "inference")


@pytest.mark.parametrize(
    ("variant", "size", "extra"),
    [
        ("fcn32s", (37, 53), {}),
        ("fcn16s", (1, 1), {}),
        ("fcn8s", (64, 97), {}),
        ("fcn8s-atonce", (33, 33), {}),
        ("fcn16s", (40, 40), {"streams": ("color", "hha")}),
        ("fcn16s", (40, 40), {"heads": (("sem", 33), ("geo", 3))}),
    ],
)
def test_geometry_matches_the_model(variant, size, extra):
    """Every map the model sows has the size and channels the FLOP model computes for it."""
    model = FCN(variant=variant, width=NARROW, **extra)
    x = jax.ShapeDtypeStruct((1, *size, 3), jnp.float32)
    inputs = (x, x) if "streams" in extra else x
    _, state = jax.eval_shape(
        lambda p, i: model.apply({"params": p}, i, mutable=["intermediates"]),
        abstract_params(model),
        inputs,
    )
    maps = state["intermediates"]["maps"][0]
    layers = {
        layer.name: layer for layer in layer_costs(variant, *size, width_mult=NARROW, **extra)
    }
    # Every sown map but the fusions (elementwise: no layer of their own) is a layer of ours.
    computed = {k for k in maps if not (k.startswith("fuse_") or k.endswith("fused"))}
    assert computed <= set(layers)
    for name in computed:
        assert maps[name].shape[1:] == (*layers[name].out_hw, layers[name].c_out), name


@pytest.mark.parametrize(
    ("variant", "expected"),
    [("fcn32s", 136_152_917), ("fcn16s", 134_815_994), ("fcn8s", 134_489_759)],
)
def test_param_count_matches_the_model(variant, expected):
    assert param_count(layer_costs(variant, 64, 64)) == expected
    narrow = abstract_params(FCN(variant=variant, width=NARROW))
    assert param_count(layer_costs(variant, 64, 64, NARROW)) == sum(
        x.size for x in jax.tree.leaves(narrow)
    )


def test_taps_inside():
    # 3 taps, pad 1, 5 inputs: 5 outputs x 3 taps, less the two that read the padding.
    assert taps_inside(5, 3, 1) == 13
    # conv1_1 of a 1-pixel input: 199 outputs, but each tap reads the pixel once.
    assert taps_inside(1, 3, 100) == 3
    assert taps_inside(7, 7, 0) == 7  # one output, all 7 taps inside


def test_xla_cost_analysis_agrees():
    """XLA counts 2 FLOPs per MAC whose tap reads the input, plus elementwise work (bias, ReLU,
    pooling, additions: a few FLOPs per output element). The training step's count is checked
    on the benchmark's own record in test_bench."""
    model = FCN(variant="fcn8s", width=NARROW)
    x = jax.ShapeDtypeStruct((1, 32, 40, 3), jnp.float32)
    forward = jax.jit(lambda p, x: model.apply({"params": p}, x))
    compiled = forward.lower(abstract_params(model), x).compile()
    cost = compiled.cost_analysis()
    assert isinstance(cost, dict)  # jax 0.10: one dict (older releases: a list of them)
    layers = layer_costs("fcn8s", 32, 40, NARROW)
    valid = 2 * sum(layer.valid_macs for layer in layers)
    elements = sum(layer.out_elements for layer in layers)
    assert valid <= cost["flops"] <= valid + 3 * elements
    # Our count (the padding's taps included) is within a few % at this tiny, padding-heavy size.
    assert cost["flops"] == pytest.approx(2 * forward_macs(layers), rel=0.07)


def test_breakdown_lists_every_layer():
    layers = layer_costs("fcn16s", 128, 128)
    text = format_breakdown(layers)
    for layer in layers:
        assert layer.name in text
    assert f"{forward_macs(layers) / 1e9:.3f}" in text.splitlines()[-1]


def test_every_variant_and_bad_sizes():
    for variant in VARIANTS:
        assert forward_macs(layer_costs(variant, 1, 1)) > 0
    with pytest.raises(ValueError, match="positive"):
        layer_costs("fcn8s", 0, 10)
    with pytest.raises(ValueError, match="fcn99s"):
        layer_costs("fcn99s", 10, 10)
