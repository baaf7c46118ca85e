"""torchvision's ResNet-50 and ResNet-101 (``torchvision/models/resnet.py``) as FCN backbones.

The form is torchvision's, exactly:

- the stem: a 7x7/2 convolution (padding 3, no bias), BatchNorm, ReLU, a 3x3/2 max pool
  (padding 1, so that an odd side rounds up as torch's floor mode over the padded map does);
- four stages (``layer1`` ... ``layer4``) of Bottleneck blocks, 3-4-6-3 (ResNet-50) or
  3-4-23-3 (ResNet-101): 1x1 convolution, BatchNorm, ReLU, 3x3 convolution (the stride is
  here, torchvision's "v1.5"), BatchNorm, ReLU, 1x1 convolution to 4x the channels, BatchNorm,
  the shortcut added, ReLU; the first block of each stage projects its shortcut with a 1x1
  convolution and a BatchNorm (``downsample``); no convolution has a bias;
- ``replace_stride_with_dilation`` (``(False, True, True)`` for segmentation: layer3 and
  layer4 keep stride 8): a dilated stage's stride becomes 1 and the dilation grows by that
  stride, and *the first block of a dilated stage keeps the previous dilation* (torchvision's
  ``_make_layer`` passes ``previous_dilation`` to it): in layer3 the first block's 3x3 has
  dilation 1 and the others 2; in layer4 the first has 2 and the others 4. Padding equals the
  dilation, so every 3x3 keeps its input size (or halves it, rounding up, with stride 2).

Names follow torchvision's modules, so a state-dict key is its Flax path with the dots as
nesting: ``layer3.0.downsample.1.running_var`` is ``batch_stats/<scope>/layer3/0/downsample/1/
var`` (:mod:`fcn_jax.convert.torchvision_resnet` holds the table, leaf renames and layouts).

``width`` scales every hidden channel count (the stem's 64 and each stage's planes, at least 1;
the Bottleneck's expansion 4 is kept): width 1 is torchvision's network, narrow ones are for
tests and demos.

The paper's FCN head (``TAPS``, ``coord_maps``) does not stand on these: with the dilations
every stage after layer2 is at stride 8, and there is no stride-32 map to score and fuse
skips into. Their head is :class:`~fcn_jax.models.fcn_resnet.FCNResNet`'s ``FCNHead``.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import flax.linen as nn
import jax.numpy as jnp

from fcn_jax.models.backbones.vgg16 import scaled
from fcn_jax.models.conv import conv_for
from fcn_jax.models.norm import AxisName, BatchNorm
from fcn_jax.types import Array

STEM_CHANNELS = 64
STAGE_PLANES = (64, 128, 256, 512)  # each stage's Bottleneck planes (outputs: 4x)
EXPANSION = 4  # torchvision's Bottleneck.expansion
# torchvision's fcn_resnet50 / fcn_resnet101 build their backbone with this.
SEGMENTATION_DILATION = (False, True, True)
# Blocks per stage of each depth.
DEPTHS: dict[str, tuple[int, int, int, int]] = {
    "resnet50": (3, 4, 6, 3),
    "resnet101": (3, 4, 23, 3),
}


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """One Bottleneck block's geometry, as torchvision's ``_make_layer`` builds it.

    Attributes:
        stride: of its 3x3 convolution (and of the shortcut's projection).
        dilation: of its 3x3 convolution (its padding too).
        downsample: whether the shortcut is projected (1x1 convolution + BatchNorm).
    """

    stride: int
    dilation: int
    downsample: bool


def stage_specs(
    blocks: tuple[int, ...],
    replace_stride_with_dilation: tuple[bool, bool, bool] = SEGMENTATION_DILATION,
    width: float = 1.0,
) -> tuple[tuple[BlockSpec, ...], ...]:
    """Every block's geometry, stage by stage: torchvision's ``ResNet._make_layer``, replayed.

    Args:
        blocks: blocks per stage (``DEPTHS["resnet50"]``).
        replace_stride_with_dilation: for layer2, layer3, layer4 (torchvision's argument).
        width: channel multiplier (decides whether layer1's shortcut needs a projection, as
            torchvision's ``inplanes != planes * expansion`` does; it always does).

    Returns:
        One tuple of :class:`BlockSpec` per stage.
    """
    dilation = 1
    inplanes = scaled(STEM_CHANNELS, width)
    stages = []
    strides_dilate = ((1, False), *zip((2, 2, 2), replace_stride_with_dilation, strict=True))
    for n, planes, (stride, dilate) in zip(blocks, STAGE_PLANES, strides_dilate, strict=True):
        previous = dilation
        if dilate:
            dilation *= stride
            stride = 1
        out = scaled(planes, width) * EXPANSION
        first = BlockSpec(stride, previous, stride != 1 or inplanes != out)
        stages.append((first, *(BlockSpec(1, dilation, False) for _ in range(1, n))))
        inplanes = out
    return tuple(stages)


class Downsample(nn.Module):
    """The shortcut's projection: torchvision's ``Sequential(conv1x1, BatchNorm2d)`` (0, 1)."""

    features: int
    stride: int
    dtype: jnp.dtype = jnp.float32
    conv_impl: str = "xla"
    bn_axis_name: AxisName = None

    @nn.compact
    def __call__(self, x: Array, *, use_running_average: bool) -> Array:
        """[N, H, W, C] -> [N, ceil(H / stride), ceil(W / stride), features]."""
        x = _conv(self.features, 1, self.stride, 1, self.dtype, self.conv_impl, "0")(x)
        bn = BatchNorm(dtype=self.dtype, axis_name=self.bn_axis_name, name="1")
        return bn(x, use_running_average=use_running_average)


class Bottleneck(nn.Module):
    """torchvision's ``Bottleneck`` (v1.5: the stride on the 3x3), its names.

    Attributes:
        planes: inner channels (outputs: ``4 * planes``).
        spec: stride, dilation and whether the shortcut is projected.
        dtype: computation dtype.
        conv_impl: ``xla`` or ``gemm``.
        bn_axis_name: mapped axes BatchNorm averages its batch statistics over.
    """

    planes: int
    spec: BlockSpec
    dtype: jnp.dtype = jnp.float32
    conv_impl: str = "xla"
    bn_axis_name: AxisName = None

    @nn.compact
    def __call__(self, x: Array, *, use_running_average: bool) -> Array:
        """One residual block on [N, H, W, C]."""
        s = self.spec
        layers = (  # (name, features, kernel, stride, dilation)
            ("1", self.planes, 1, 1, 1),
            ("2", self.planes, 3, s.stride, s.dilation),
            ("3", self.planes * EXPANSION, 1, 1, 1),
        )
        h = x
        for name, features, kernel, stride, dilation in layers:
            h = _conv(
                features, kernel, stride, dilation, self.dtype, self.conv_impl, f"conv{name}"
            )(h)
            bn = BatchNorm(dtype=self.dtype, axis_name=self.bn_axis_name, name=f"bn{name}")
            h = bn(h, use_running_average=use_running_average)
            if name != "3":
                h = nn.relu(h)
        shortcut = x
        if s.downsample:
            shortcut = Downsample(
                self.planes * EXPANSION,
                s.stride,
                self.dtype,
                self.conv_impl,
                self.bn_axis_name,
                name="downsample",
            )(x, use_running_average=use_running_average)
        return nn.relu(h + shortcut)


class Stage(nn.Module):
    """One ``layerN``: its blocks, named ``0``, ``1``, ... as in torchvision's ``Sequential``."""

    planes: int
    blocks: tuple[BlockSpec, ...]
    dtype: jnp.dtype = jnp.float32
    conv_impl: str = "xla"
    bn_axis_name: AxisName = None

    @nn.compact
    def __call__(self, x: Array, *, use_running_average: bool) -> Array:
        """The stage's blocks in order."""
        for i, spec in enumerate(self.blocks):
            block = Bottleneck(
                self.planes, spec, self.dtype, self.conv_impl, self.bn_axis_name, name=str(i)
            )
            x = block(x, use_running_average=use_running_average)
        return x


def _conv(
    features: int,
    kernel: int,
    stride: int,
    dilation: int,
    dtype: jnp.dtype,
    conv_impl: str,
    name: str,
) -> nn.Conv:
    """A bias-free convolution with torch's symmetric padding (``dilation * (kernel // 2)``)."""
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=stride,
        padding=dilation * (kernel // 2),
        kernel_dilation=dilation,
        use_bias=False,
        dtype=dtype,
        # torchvision's ResNet init: kaiming_normal_(mode="fan_out", nonlinearity="relu").
        kernel_init=nn.initializers.variance_scaling(2.0, "fan_out", "normal"),
        conv_general_dilated=conv_for(conv_impl),
        name=name,
    )


class ResNet(nn.Module):
    """torchvision's ResNet trunk (no ``avgpool``/``fc``), NHWC, as an FCN backbone.

    Attributes:
        width: multiplier of every hidden channel count (1.0 is torchvision's network).
        dtype: computation dtype; parameters and BatchNorm statistics stay float32.
        dropout_rate: unused (the trunk has no dropout; part of the backbone protocol).
        suffix: must be empty (no multi-stream ResNet networks).
        conv_impl: ``xla`` or ``gemm`` (:func:`~fcn_jax.models.conv.resolve_conv_impl`).
        freeze_bn: BatchNorm normalises with its running statistics in training too.
        bn_axis_name: mapped axes whose batch statistics BatchNorm averages.
        replace_stride_with_dilation: torchvision's argument, for layer2 ... layer4
            (segmentation's by default).
    """

    BLOCKS: ClassVar[tuple[int, ...]] = DEPTHS["resnet50"]
    BATCH_NORM: ClassVar[bool] = True

    width: float = 1.0
    dtype: jnp.dtype = jnp.float32
    dropout_rate: float = 0.0
    suffix: str = ""
    conv_impl: str = "xla"
    freeze_bn: bool = False
    bn_axis_name: AxisName = None
    replace_stride_with_dilation: tuple[bool, bool, bool] = SEGMENTATION_DILATION

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> dict[str, Array]:
        """Run the trunk.

        Args:
            x: [N, H, W, 3] preprocessed images.
            train: BatchNorm's batch statistics (``batch_stats`` mutable), unless ``freeze_bn``.

        Returns:
            ``stem`` (after the max pool, stride 4) and ``layer1`` ... ``layer4``: with the
            segmentation dilations layer1 is at stride 4 and layer2 ... layer4 at stride 8
            (sides ``ceil(H / 8)``), with ``256, 512, 1024, 2048`` channels at width 1.
        """
        if self.suffix:
            raise ValueError("a ResNet backbone has no streams (suffix must be empty)")
        frozen = not train or self.freeze_bn
        conv1 = _conv(
            scaled(STEM_CHANNELS, self.width), 7, 2, 1, self.dtype, self.conv_impl, "conv1"
        )
        bn1 = BatchNorm(dtype=self.dtype, axis_name=self.bn_axis_name, name="bn1")
        x = nn.relu(bn1(conv1(x), use_running_average=frozen))
        x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
        features = {"stem": x}
        stages = stage_specs(self.BLOCKS, self.replace_stride_with_dilation, self.width)
        for i, (planes, blocks) in enumerate(zip(STAGE_PLANES, stages, strict=True), start=1):
            stage = Stage(
                scaled(planes, self.width),
                blocks,
                self.dtype,
                self.conv_impl,
                self.bn_axis_name,
                name=f"layer{i}",
            )
            x = features[f"layer{i}"] = stage(x, use_running_average=frozen)
        return features


class ResNet50(ResNet):
    """torchvision's ``resnet50`` trunk: 3-4-6-3 Bottleneck blocks."""

    BLOCKS: ClassVar[tuple[int, ...]] = DEPTHS["resnet50"]


class ResNet101(ResNet):
    """torchvision's ``resnet101`` trunk: 3-4-23-3 Bottleneck blocks."""

    BLOCKS: ClassVar[tuple[int, ...]] = DEPTHS["resnet101"]
