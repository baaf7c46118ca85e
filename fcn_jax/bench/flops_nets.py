"""Analytic FLOP counts of torchvision's FCN-ResNets and SpeedPaper's FCN, layer by layer.

The conventions are :mod:`fcn_jax.bench.flops`'s (one MAC is 2 FLOPs). The counts are read
from the geometry the modules are built from (:func:`~fcn_jax.models.backbones.resnet.
stage_specs`, :data:`~fcn_jax.models.backbones.vgg16.VGG16_BLOCKS`, SpeedPaper's
``UPSAMPLERS``), so a change of geometry changes the count with it; tests check every map size
against ``jax.eval_shape`` of the modules and every layer's count against PyTorch's own
``torch.utils.flop_counter.FlopCounterMode`` on torchvision's models.

FCN-ResNets (:func:`fcn_resnet_costs`). Each convolution costs ``H_out * W_out * k * k * C_in *
C_out`` MACs: the stem's 7x7/2, every Bottleneck's three convolutions with the segmentation
geometry (layer3 and layer4 dilated, at stride 8: a dilated 3x3 costs what an undilated one
does), the shortcut projections, and ``FCNHead``'s 3x3 (to C/4 channels) and 1x1 (to the
classes); the ``aux_classifier`` head on layer3 where the network has it. Not counted, as
everywhere here: BatchNorm, ReLU, the max pool, the residual additions, dropout, and the
bilinear resize of the scores (4 multiply-adds per output value: 0.02 GMAC for 21 classes at
520x520, 0.01% of the network).

torchvision's model cards (``weights.meta["_ops"]``, "GFLOPS") count multiply-accumulates of
convolutions and matrix products (its ImageNet ResNet-50 is listed at 4.089, the well-known
4.1 GMAC at 224x224), for the model as its weights build it, *with* the auxiliary head
(``aux_loss=True``; its ``forward`` computes ``aux`` in evaluation too), at 520x520, 21
classes. This count gives 152.716512 GMAC for ``fcn_resnet50`` and 232.737606 for
``fcn_resnet101`` there, torchvision's 152.717 and 232.738 to their last digit (and 4.089 for
ImageNet's ResNet-50 at 224x224 with its ``fc``); without the aux head, as bench.py runs the
networks, 142.726 and 222.747 GMAC (the aux head is 9.991 GMAC: its 3x3 convolution, 1024 ->
256 channels on the 65x65 map of layer3).

SpeedPaper's FCN (:func:`speedpaper_costs`): the ImageNet VGG16-BN convolutions (pad 1, floor
pooling, no fc6/fc7), its two 1x1 convolutions, and its three transposed convolutions counted as
:mod:`fcn_jax.bench.flops` counts the paper's (every input pixel through the whole kernel,
channels dense), learnable as SpeedPaper trains them.
"""

from __future__ import annotations

import dataclasses

from fcn_jax.bench.flops import IMAGE_CHANNELS, LayerCost
from fcn_jax.models.backbones.resnet import (
    DEPTHS,
    EXPANSION,
    SEGMENTATION_DILATION,
    STAGE_PLANES,
    STEM_CHANNELS,
    stage_specs,
)
from fcn_jax.models.backbones.vgg16 import VGG16_BLOCKS, scaled
from fcn_jax.models.fcn_resnet import AUX_HEAD, HEADS
from fcn_jax.models.spec import RESNET_ARCHS
from fcn_jax.models.speedpaper import CONV_TRANS, UPSAMPLERS

IMAGENET_CLASSES = 1000  # the fc of torchvision's ImageNet ResNets
RESIZE_KIND = "resize"  # the bilinear resize of a head's scores (listed, not counted)


def out_side(size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """Output side of a convolution or pool (torch's floor mode)."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def taps_read(size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """(output position, tap) pairs along one axis whose input lies inside ``[0, size)``.

    Tap ``t`` of output ``o`` reads input ``o * stride + t * dilation - padding``.
    """
    out = out_side(size, kernel, stride, padding, dilation)
    total = 0
    for t in range(kernel):
        shift = t * dilation - padding
        first = max(0, -(shift // stride))  # smallest o with o * stride + shift >= 0
        last = min(out - 1, (size - 1 - shift) // stride)
        total += max(0, last - first + 1)
    return total


def conv_cost(
    name: str,
    hw: tuple[int, int],
    c_in: int,
    c_out: int,
    kernel: int,
    stride: int = 1,
    padding: int = 0,
    dilation: int = 1,
    input_grad: bool = True,
) -> LayerCost:
    """One convolution's geometry and MACs (every tap, padding included; ``valid_macs`` not)."""
    geometry = (kernel, stride, padding, dilation)
    out = (out_side(hw[0], *geometry), out_side(hw[1], *geometry))
    valid = taps_read(hw[0], *geometry) * taps_read(hw[1], *geometry) * c_in * c_out
    macs = out[0] * out[1] * kernel * kernel * c_in * c_out
    return LayerCost(
        name, "conv", hw, out, c_in, c_out, kernel, stride, macs, valid, True, input_grad, dilation
    )


def _no_macs(name: str, kind: str, hw: tuple, out: tuple, channels: int, kernel: int, stride: int):
    return LayerCost(name, kind, hw, out, channels, channels, kernel, stride, 0, 0, False)


def resnet_trunk_costs(
    backbone: str,
    height: int,
    width: int,
    width_mult: float = 1.0,
    dilation: tuple[bool, bool, bool] = SEGMENTATION_DILATION,
) -> tuple[list[LayerCost], dict[str, LayerCost]]:
    """Layers of torchvision's ResNet trunk (``conv1`` ... ``layer4``), torchvision's names.

    Args:
        backbone: ``resnet50`` or ``resnet101``.
        height: input height.
        width: input width.
        width_mult: the model's ``width``.
        dilation: ``replace_stride_with_dilation`` (segmentation's by default; ImageNet's is
            ``(False, False, False)``).

    Returns:
        (the layers in order, ``{"stem", "layer1" ... "layer4"}`` -> the layer that ends it).
    """
    stem = scaled(STEM_CHANNELS, width_mult)
    conv1 = conv_cost("conv1", (height, width), IMAGE_CHANNELS, stem, 7, 2, 3, input_grad=False)
    hw = conv1.out_hw
    pooled = (out_side(hw[0], 3, 2, 1), out_side(hw[1], 3, 2, 1))
    layers = [conv1, _no_macs("maxpool", "pool", hw, pooled, stem, 3, 2)]
    ends = {"stem": layers[-1]}
    hw, channels = pooled, stem
    stages = stage_specs(DEPTHS[backbone], dilation, width_mult)
    for i, (planes, blocks) in enumerate(zip(STAGE_PLANES, stages, strict=True), start=1):
        inner = scaled(planes, width_mult)
        for j, block in enumerate(blocks):
            prefix = f"layer{i}.{j}"
            a = conv_cost(f"{prefix}.conv1", hw, channels, inner, 1)
            b = conv_cost(
                f"{prefix}.conv2", hw, inner, inner, 3, block.stride, block.dilation, block.dilation
            )
            c = conv_cost(f"{prefix}.conv3", b.out_hw, inner, inner * EXPANSION, 1)
            layers += [a, b, c]
            if block.downsample:
                down = conv_cost(
                    f"{prefix}.downsample.0", hw, channels, inner * EXPANSION, 1, block.stride
                )
                layers.append(down)
            hw, channels = c.out_hw, c.c_out
            ends[f"layer{i}"] = c  # the block's output: conv3's map (plus the shortcut)
    return layers, ends


def fcn_resnet_costs(
    arch: str,
    height: int,
    width: int,
    width_mult: float = 1.0,
    n_class: int = 21,
    aux: bool = False,
) -> tuple[LayerCost, ...]:
    """Every layer of torchvision's ``fcn_resnet50`` / ``fcn_resnet101`` for one image.

    Mirrors :class:`fcn_jax.models.fcn_resnet.FCNResNet`: the trunk, ``classifier`` (``0``: 3x3
    to a quarter of the channels, ``4``: 1x1 to the classes) on layer4, ``aux_classifier`` on
    layer3 with ``aux``, each head's scores resized to the input (listed, 0 MACs).

    Args:
        arch: ``fcn_resnet50`` or ``fcn_resnet101``.
        height: input height (any size from 1 up).
        width: input width.
        width_mult: the model's ``width``.
        n_class: classes.
        aux: count the auxiliary head (torchvision's model cards do).
    """
    if arch not in RESNET_ARCHS:
        raise ValueError(f"unknown FCN-ResNet {arch!r}; choose one of {sorted(RESNET_ARCHS)}")
    if height < 1 or width < 1:
        raise ValueError(f"input size must be positive, got {height}x{width}")
    layers, ends = resnet_trunk_costs(RESNET_ARCHS[arch], height, width, width_mult)
    for key, (scope, feature) in HEADS.items():
        if key == AUX_HEAD and not aux:
            continue
        src = ends[feature]
        inner = max(1, src.c_out // 4)  # FCNHead's in_channels // 4
        first = conv_cost(f"{scope}.0", src.out_hw, src.c_out, inner, 3, 1, 1)
        score = conv_cost(f"{scope}.4", first.out_hw, inner, n_class, 1)
        resize = _no_macs(
            f"{scope}.resize", RESIZE_KIND, score.out_hw, (height, width), n_class, 1, 1
        )
        layers += [first, score, resize]
    return tuple(layers)


def imagenet_resnet_costs(
    backbone: str, height: int = 224, width: int = 224
) -> tuple[LayerCost, ...]:
    """The ImageNet ResNet of torchvision (no dilation, global pooling, ``fc`` to 1000 classes).

    For the reconciliation with torchvision's model cards (ResNet-50: 4.089 GMAC at 224x224).
    """
    layers, ends = resnet_trunk_costs(backbone, height, width, 1.0, (False, False, False))
    c = ends["layer4"].c_out
    fc = LayerCost("fc", "conv", (1, 1), (1, 1), c, IMAGENET_CLASSES, 1, 1, *(c * 1000,) * 2)
    return (*layers, fc)


def speedpaper_costs(
    height: int, width: int, width_mult: float = 1.0, n_class: int = 21, learn: bool = True
) -> tuple[LayerCost, ...]:
    """Every layer of SpeedPaper's FCN (:class:`fcn_jax.models.speedpaper.SpeedPaperFCN`).

    Args:
        height: input height (the model needs multiples of 32; any size is counted).
        width: input width.
        width_mult: the model's ``width``.
        n_class: classes.
        learn: the transposed convolutions learn (SpeedPaper's do: their weight gradients count).
    """
    if height < 1 or width < 1:
        raise ValueError(f"input size must be positive, got {height}x{width}")
    layers: list[LayerCost] = []
    pools: dict[int, LayerCost] = {}
    hw, channels = (height, width), IMAGE_CHANNELS
    for i, block in enumerate(VGG16_BLOCKS, start=1):
        for spec in block:  # ImageNet geometry: every 3x3 pads by 1
            layer = conv_cost(
                spec.name, hw, channels, scaled(spec.features, width_mult), 3, 1, 1,
                input_grad=bool(layers),  # conv1_1's input is the data
            )  # fmt: skip
            layers.append(layer)
            hw, channels = layer.out_hw, layer.c_out
        out = (hw[0] // 2, hw[1] // 2)
        pools[i] = _no_macs(f"pool{i}", "pool", hw, out, channels, 2, 2)
        layers.append(pools[i])
        hw = out
    # Each upsampling, then the 1x1 convolution after it (none after the last), in order.
    after = ((CONV_TRANS[0], scaled(256, width_mult)), (CONV_TRANS[1], n_class), None)
    for (name, kernel, stride, padding), conv in zip(UPSAMPLERS, after, strict=True):
        # The full transposed convolution cropped by ``padding`` on each side: stride x the input.
        out = tuple((n - 1) * stride + kernel - 2 * padding for n in hw)
        macs = hw[0] * hw[1] * kernel * kernel * channels * channels
        deconv = LayerCost(name, "deconv", hw, out, channels, channels, kernel, stride, macs, macs)
        layers.append(dataclasses.replace(deconv, weight_grad=learn))
        hw = out
        if conv is not None:
            layers.append(conv_cost(conv[0], hw, channels, conv[1], 1))
            channels = conv[1]
    return tuple(layers)


def other_costs(
    variant: str, height: int, width: int, width_mult: float, n_class: int, aux: bool = False
) -> tuple[LayerCost, ...]:
    """:func:`fcn_resnet_costs` or :func:`speedpaper_costs` by ``variant`` (an arch name)."""
    if variant in RESNET_ARCHS:
        return fcn_resnet_costs(variant, height, width, width_mult, n_class, aux)
    return speedpaper_costs(height, width, width_mult, n_class)
