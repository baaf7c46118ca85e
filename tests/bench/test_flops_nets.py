"""fcn_jax.bench.flops_nets: the FCN-ResNets' and SpeedPaper's FLOP counts against torchvision's
model cards, PyTorch's own flop counter (layer by layer), the Flax models' shapes and XLA's
cost analysis."""

import jax
import jax.numpy as jnp
import pytest

from fcn_jax.bench.flops import forward_macs, gflop, layer_costs, train_macs
from fcn_jax.bench.flops_nets import (
    fcn_resnet_costs,
    imagenet_resnet_costs,
    out_side,
    speedpaper_costs,
    taps_read,
)
from fcn_jax.models import NetSpec, abstract_variables
from fcn_jax.preprocessing import TORCHVISION

NARROW = 0.0625
# torchvision 0.28's model cards, weights.meta["_ops"] ("GFLOPS"; multiply-accumulates):
# FCN_ResNet50_Weights / FCN_ResNet101_Weights.COCO_WITH_VOC_LABELS_V1, ResNet50_Weights /
# ResNet101_Weights.IMAGENET1K_V1.
TORCHVISION_OPS = {"fcn_resnet50": 152.717, "fcn_resnet101": 232.738}
TORCHVISION_IMAGENET_OPS = {"resnet50": 4.089, "resnet101": 7.801}


def resnet_spec(arch, width=NARROW, aux=True, n_class=21):
    backbone = {"fcn_resnet50": "resnet50", "fcn_resnet101": "resnet101"}[arch]
    return NetSpec.single(
        arch, n_class, backbone=backbone, aux=aux, width=width, preprocessing=(TORCHVISION,)
    )


def test_model_cards_are_macs_with_the_aux_head_at_520():
    """torchvision's figures are this count with aux_loss=True at 520x520, 21 classes, to the
    last digit they print; without the aux head (as bench.py runs them) 10 GMAC less."""
    exact = {"fcn_resnet50": 152_716_512_000, "fcn_resnet101": 232_737_606_400}
    for arch, card in TORCHVISION_OPS.items():
        with_aux = forward_macs(fcn_resnet_costs(arch, 520, 520, aux=True))
        without = forward_macs(fcn_resnet_costs(arch, 520, 520, aux=False))
        assert with_aux == exact[arch]
        assert round(with_aux / 1e9, 3) == card
        # The aux head: its 3x3 convolution (1024 -> 256 on layer3's 65x65) and 1x1 scores.
        assert with_aux - without == 65 * 65 * (9 * 1024 * 256 + 256 * 21)
        # bench.py's GFLOP: 2 per MAC, without aux.
        assert gflop(arch, 520, 520) == pytest.approx(2 * without / 1e9)
    for backbone, card in TORCHVISION_IMAGENET_OPS.items():
        assert round(forward_macs(imagenet_resnet_costs(backbone)) / 1e9, 3) == card
    assert forward_macs(imagenet_resnet_costs("resnet50")) == 4_089_184_256


@pytest.mark.torch
def test_model_cards_as_torchvision_stores_them():
    from fcn_jax.torch_reference import import_torchvision

    tv = import_torchvision()
    seg = tv.models.segmentation
    assert seg.FCN_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1.meta["_ops"] == 152.717
    assert seg.FCN_ResNet101_Weights.COCO_WITH_VOC_LABELS_V1.meta["_ops"] == 232.738
    assert tv.models.ResNet50_Weights.IMAGENET1K_V1.meta["_ops"] == 4.089


def torch_conv_macs(model, x_shape) -> dict[str, int]:
    """PyTorch's own count (FlopCounterMode: 2 FLOPs per MAC) per module, on the meta device."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model = model.eval().to("meta")
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(x_shape, device="meta"))
    return {k: sum(v.values()) // 2 for k, v in counter.get_flop_counts().items()}


@pytest.mark.torch
@pytest.mark.parametrize(
    ("arch", "size"), [("fcn_resnet50", (45, 61)), ("fcn_resnet101", (33, 33))]
)
def test_every_layer_matches_pytorchs_flop_counter(arch, size):
    """Layer by layer (torchvision's module names), odd sizes, the aux head included."""
    from fcn_jax.torch_reference import torchvision_fcn_resnet

    ours = fcn_resnet_costs(arch, *size, NARROW, n_class=5, aux=True)
    theirs = torch_conv_macs(torchvision_fcn_resnet(arch, 5, True, NARROW), (1, 3, *size))
    convs = [layer for layer in ours if layer.kind == "conv"]
    for layer in convs:
        module = ("FCN." if "classifier" in layer.name else "FCN.backbone.") + layer.name
        assert theirs[module] == layer.macs, layer.name
    assert theirs["Global"] == forward_macs(ours)


@pytest.mark.torch
def test_speedpaper_matches_pytorchs_flop_counter():
    """Transposed convolutions: torch counts every input pixel through the kernel, as we do."""
    from fcn_jax.torch_reference import TorchSpeedPaperFCN

    theirs = torch_conv_macs(TorchSpeedPaperFCN(5, NARROW), (1, 3, 64, 96))
    ours = {layer.name: layer for layer in speedpaper_costs(64, 96, NARROW, 5)}
    assert theirs["Global"] == forward_macs(ours.values())
    for name in ("upsample_2x_1", "conv_trans1", "upsample_2x_2", "conv_trans2", "upsample_8x"):
        assert theirs[f"TorchSpeedPaperFCN.{name}"] == ours[name].macs, name


@pytest.mark.parametrize(("arch", "size"), [("fcn_resnet50", (37, 53)), ("fcn_resnet101", (1, 9))])
def test_resnet_geometry_matches_the_model(arch, size):
    """Every map the Flax model sows has the size and channels counted for it."""
    spec = resnet_spec(arch)
    x = jax.ShapeDtypeStruct((1, *size, 3), jnp.float32)
    _, state = jax.eval_shape(
        lambda v, x: spec.apply(v, (x,), mutable=["intermediates"]), abstract_variables(spec), x
    )
    maps = state["intermediates"]["maps"][0]
    layers = fcn_resnet_costs(arch, *size, NARROW, aux=True)
    by_name = {layer.name: layer for layer in layers}
    ends = {"stem": "maxpool", "classifier": "classifier.4", "aux_classifier": "aux_classifier.4"}
    last = {
        f"layer{i}": [x for x in layers if x.name.startswith(f"layer{i}.")][-1] for i in range(1, 5)
    }
    for key, shape in ((k, v.shape[1:]) for k, v in maps.items()):
        layer = by_name[ends[key]] if key in ends else last[key]  # a stage ends at a conv3
        assert shape == (*layer.out_hw, layer.c_out), key


def test_speedpaper_geometry_matches_the_model():
    spec = NetSpec.single("speedpaper", 5, backbone="vgg16_bn", width=NARROW, learn_upsampling=True)
    x = jax.ShapeDtypeStruct((1, 64, 96, 3), jnp.float32)
    _, state = jax.eval_shape(
        lambda v, x: spec.apply(v, (x,), mutable=["intermediates"]), abstract_variables(spec), x
    )
    maps = state["intermediates"]["maps"][0]
    layers = {layer.name: layer for layer in speedpaper_costs(64, 96, NARROW, 5)}
    sown = {f"s{i}": f"pool{i}" for i in range(1, 6)} | {
        "add1": "upsample_2x_1",
        "trans1": "conv_trans1",
        "add2": "upsample_2x_2",
        "trans2": "conv_trans2",
        "upsample_8x": "upsample_8x",
    }
    assert set(maps) == set(sown)
    for key, name in sown.items():
        assert maps[key].shape[1:] == (*layers[name].out_hw, layers[name].c_out), key


def test_xla_cost_analysis_agrees():
    """XLA's count of the Flax forward (XLA's own convolutions): 2 FLOPs per MAC whose tap reads
    the input, plus elementwise work (BatchNorm, ReLU, additions, the resize)."""
    spec = resnet_spec("fcn_resnet50", aux=False).replace(conv_impl="xla")
    x = jax.ShapeDtypeStruct((1, 48, 64, 3), jnp.float32)
    compiled = jax.jit(lambda v, x: spec.apply(v, (x,))).lower(abstract_variables(spec), x)
    cost = compiled.compile().cost_analysis()
    layers = layer_costs("fcn_resnet50", 48, 64, NARROW)
    valid = 2 * sum(layer.valid_macs for layer in layers)
    elements = sum(layer.out_elements for layer in layers)
    assert valid <= cost["flops"] <= valid + 16 * elements
    assert cost["flops"] == pytest.approx(2 * forward_macs(layers), rel=0.1)


def test_train_is_about_three_times_forward():
    for layers in (layer_costs("fcn_resnet101", 520, 520), speedpaper_costs(512, 512)):
        ratio = train_macs(layers) / forward_macs(layers)
        assert 2.99 < ratio < 3.0  # less the stem's input gradient
    stem = layer_costs("fcn_resnet50", 64, 64)[0]
    assert stem.name == "conv1" and stem.train_macs == 2 * stem.macs
    frozen = speedpaper_costs(64, 64, learn=False)[-1]
    assert frozen.name == "upsample_8x" and frozen.train_macs == 2 * frozen.macs


def test_dilation_costs_what_an_undilated_kernel_does():
    layers = {layer.name: layer for layer in fcn_resnet_costs("fcn_resnet50", 520, 520)}
    d1, d2, d4 = (layers[n] for n in ("layer3.0.conv2", "layer3.1.conv2", "layer4.1.conv2"))
    assert (d1.dilation, d2.dilation, d4.dilation) == (1, 2, 4)
    assert d1.out_hw == d2.out_hw == d4.out_hw == (65, 65)
    assert d1.macs == d2.macs == 65 * 65 * 9 * 256 * 256
    # More of a dilated kernel's taps land on the padding.
    assert d4.valid_macs < d2.valid_macs * 4 < d1.valid_macs * 4


def test_taps_read_and_output_sides():
    assert out_side(520, 7, 2, 3) == 260  # the stem
    assert out_side(260, 3, 2, 1) == 130  # its max pool
    assert out_side(65, 3, 1, 4, 4) == 65  # a dilated 3x3 keeps its size
    assert out_side(130, 1, 2) == 65  # a strided shortcut
    assert taps_read(5, 3, 1, 1) == 13  # 5 outputs x 3 taps, two on the padding
    assert taps_read(5, 3, 1, 2, 2) == 5 * 3 - 2 * 2  # dilated: two taps out at each border
    assert taps_read(4, 1, 2) == 2  # stride 2, 1x1: every other input
    assert taps_read(1, 3, 1, 4, 4) == 1  # one pixel: only the centre tap reads it


def test_bad_input():
    with pytest.raises(ValueError, match="positive"):
        fcn_resnet_costs("fcn_resnet50", 0, 10)
    with pytest.raises(ValueError, match="fcn_resnet34"):
        fcn_resnet_costs("fcn_resnet34", 10, 10)
    with pytest.raises(ValueError, match="one head"):
        layer_costs("fcn_resnet50", 10, 10, streams=("a", "b"))
