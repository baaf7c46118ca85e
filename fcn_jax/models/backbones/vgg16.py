"""The VGG16 backbones: the paper's, and ``vgg16_bn`` (BatchNorm after every 3x3 convolution).

The paper's is built as the Caffe release builds it (``voc-fcn*/net.py``); torchvision's
``vgg16_bn`` gets the same geometry.

Differences from ImageNet VGG16, all needed for dense prediction:

- conv1_1 pads by 100 pixels. fc6 is a 7x7 valid convolution on pool5 (stride 32), so without
  the pad an input under ~200 px would have no fc6 output at all; with it every input size from
  1x1 up produces a score map large enough to be cropped back to the input (FAQ of the release).
- Pooling rounds up (Caffe's ceil mode), see :func:`~fcn_jax.models.layers.max_pool_ceil`.
- fc6/fc7 are convolutions (7x7 and 1x1) holding the classifier's weights reshaped.

The geometry lives in :data:`VGG16_BLOCKS` and :data:`FC_LAYERS`; the module, the crop-offset
derivation (:meth:`VGG16.coord_maps`) and torchvision's layer names (:func:`torchvision_convs`)
all read it, so they cannot disagree.

With ``caffe_geometry=False`` the trunk is ImageNet VGG16's own convolutions: conv1_1 pads by 1,
pooling rounds down, no fc6/fc7 (SpeedPaper's FCN stands on that, see
:mod:`fcn_jax.models.speedpaper`).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import flax.linen as nn
import jax.numpy as jnp

from fcn_jax.models.conv import conv_for
from fcn_jax.models.layers import CoordMap, max_pool_ceil
from fcn_jax.models.norm import AxisName, BatchNorm
from fcn_jax.types import Array

FIRST_PAD = 100  # conv1_1 padding of the release (see the module docstring)


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    """One convolution of the trunk.

    Attributes:
        name: layer name, shared by Caffe, torchfcn and the Flax params.
        features: output channels at width 1.
        kernel: square kernel side.
        padding: symmetric zero padding.
    """

    name: str
    features: int
    kernel: int = 3
    padding: int = 1


# Five blocks, each followed by a 2x2/2 ceil-mode max pool named pool1 ... pool5.
VGG16_BLOCKS: tuple[tuple[ConvSpec, ...], ...] = (
    (ConvSpec("conv1_1", 64, padding=FIRST_PAD), ConvSpec("conv1_2", 64)),
    (ConvSpec("conv2_1", 128), ConvSpec("conv2_2", 128)),
    (ConvSpec("conv3_1", 256), ConvSpec("conv3_2", 256), ConvSpec("conv3_3", 256)),
    (ConvSpec("conv4_1", 512), ConvSpec("conv4_2", 512), ConvSpec("conv4_3", 512)),
    (ConvSpec("conv5_1", 512), ConvSpec("conv5_2", 512), ConvSpec("conv5_3", 512)),
)
# The classifier as convolutions: fc6 7x7 valid on pool5, fc7 1x1. Each: ReLU, dropout 0.5.
FC_LAYERS: tuple[ConvSpec, ...] = (
    ConvSpec("fc6", 4096, kernel=7, padding=0),
    ConvSpec("fc7", 4096, kernel=1, padding=0),
)
CONV_LAYERS: tuple[ConvSpec, ...] = (*(s for b in VGG16_BLOCKS for s in b), *FC_LAYERS)


def scaled(channels: int, width: float) -> int:
    """Channel count of a hidden layer at ``width`` times the paper's network (at least 1)."""
    return max(1, round(channels * width))


def bn_name(conv: str) -> str:
    """The BatchNorm layer after a convolution of ``vgg16_bn``: ``conv1_1`` -> ``bn1_1``."""
    return "bn" + conv.removeprefix("conv")


def torchvision_convs(batch_norm: bool = False) -> dict[str, str]:
    """The ``features.N`` module prefix of torchvision's vgg16 or vgg16_bn -> our layer name.

    In ``features`` each conv is followed by a ReLU (vgg16) or a BatchNorm and a ReLU
    (vgg16_bn), and each block by a MaxPool: vgg16's convs are 0, 2, 5, ...; vgg16_bn's are
    0, 3, 7, 10, 14, ... with their BatchNorms (``bn1_1``, ...) at 1, 4, 8, 11, 15, ...
    """
    table, index = {}, 0
    for block in VGG16_BLOCKS:
        for spec in block:
            table[f"features.{index}"] = spec.name
            if batch_norm:
                table[f"features.{index + 1}"] = bn_name(spec.name)
            index += 3 if batch_norm else 2
        index += 1
    return table


# torchvision's VGG16 module prefix -> our layer name: ``features.0`` is conv1_1, ...
TORCHVISION_CONVS: dict[str, str] = torchvision_convs()
TORCHVISION_FC = {"classifier.0": "fc6", "classifier.3": "fc7"}  # stored as Linear layers
TORCHVISION_UNUSED = ("classifier.6",)  # the 1000-way ImageNet layer (fc8)


def trunk_coord_maps() -> dict[str, CoordMap]:
    """Input -> output coordinate map of every named trunk output (convs, pools, fc6, fc7)."""
    maps: dict[str, CoordMap] = {}
    current = CoordMap()
    for i, block in enumerate(VGG16_BLOCKS, start=1):
        for spec in block:
            current = current.then(CoordMap.conv(spec.kernel, 1, spec.padding))
            maps[spec.name] = current
        current = current.then(CoordMap.conv(2, 2))
        maps[f"pool{i}"] = current
    for spec in FC_LAYERS:
        current = current.then(CoordMap.conv(spec.kernel, 1, spec.padding))
        maps[spec.name] = current
    return maps


class VGG16(nn.Module):
    """VGG16 convolutions plus fc6/fc7 as convolutions, NHWC: the paper's backbone.

    Attributes:
        width: multiplier of every hidden channel count (1.0 is the paper's network).
        dtype: computation dtype; parameters stay float32.
        dropout_rate: dropout after fc6 and fc7 in training (Caffe drops single elements).
        suffix: appended to every layer name, as the release's two-stream nets name them
            (``conv1_1color``, ...).
        conv_impl: ``xla`` or ``gemm`` (:func:`~fcn_jax.models.conv.resolve_conv_impl`).
        freeze_bn: BatchNorm (vgg16_bn) normalises with its running statistics in training too,
            and keeps them.
        bn_axis_name: mapped axes whose batch statistics BatchNorm averages
            (:class:`~fcn_jax.models.norm.BatchNorm`).
        caffe_geometry: the release's pad 100, ceil-mode pools and fc6/fc7; False for
            ImageNet VGG16's (pad 1, floor pools, ``pool1`` ... ``pool5`` only).
    """

    # Output stride -> the feature map a head taps there (score_fr on fc7, skips on pools).
    TAPS: ClassVar[dict[int, str]] = {32: "fc7", 16: "pool4", 8: "pool3"}
    BATCH_NORM: ClassVar[bool] = False  # a BatchNorm after every 3x3 convolution (vgg16_bn)

    width: float = 1.0
    dtype: jnp.dtype = jnp.float32
    dropout_rate: float = 0.5
    suffix: str = ""
    conv_impl: str = "xla"
    freeze_bn: bool = False
    bn_axis_name: AxisName = None
    caffe_geometry: bool = True

    @staticmethod
    def coord_maps() -> dict[str, CoordMap]:
        """Input -> output coordinate map of every feature map :meth:`__call__` returns."""
        return trunk_coord_maps()

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> dict[str, Array]:
        """Run the trunk.

        Args:
            x: [N, H, W, 3] preprocessed images.
            train: enables dropout (needs a ``dropout`` PRNG stream) and BatchNorm's batch
                statistics (unless ``freeze_bn``; needs ``batch_stats`` mutable).

        Returns:
            ``pool1 ... pool5`` ([N, ceil(H'/2^i), ..., C_i], H' = H + 198) and ``fc6``, ``fc7``
            ([N, h, w, 4096 * width]) feature maps; without ``caffe_geometry`` the pools only
            ([N, floor(H/2^i), ...]).
        """
        features: dict[str, Array] = {}
        for i, block in enumerate(VGG16_BLOCKS, start=1):
            for spec in block:
                x = self._conv(spec)(x)
                if self.BATCH_NORM:
                    x = self._batch_norm(spec)(x, use_running_average=not train or self.freeze_bn)
                x = nn.relu(x)
            x = max_pool_ceil(x) if self.caffe_geometry else nn.max_pool(x, (2, 2), (2, 2))
            features[f"pool{i}"] = x
        if not self.caffe_geometry:
            return features
        for spec in FC_LAYERS:
            x = nn.relu(self._conv(spec)(x))
            x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
            features[spec.name] = x
        return features

    def _batch_norm(self, spec: ConvSpec) -> BatchNorm:
        name = f"{bn_name(spec.name)}{self.suffix}"
        return BatchNorm(dtype=self.dtype, axis_name=self.bn_axis_name, name=name)

    def _conv(self, spec: ConvSpec) -> nn.Conv:
        pad = spec.padding if self.caffe_geometry or spec.padding != FIRST_PAD else 1
        return nn.Conv(
            scaled(spec.features, self.width),
            (spec.kernel, spec.kernel),
            padding=pad,
            dtype=self.dtype,
            # He init for ReLU nets; only used when not starting from converted weights.
            kernel_init=nn.initializers.he_normal(),
            conv_general_dilated=conv_for(self.conv_impl),
            name=f"{spec.name}{self.suffix}",
        )


class VGG16BN(VGG16):
    """torchvision's ``vgg16_bn`` as an FCN backbone: BatchNorm after every 3x3 convolution.

    :class:`VGG16` plus ``bn1_1`` ... ``bn5_3``; the convolutions keep their biases, as
    torchvision's do. fc6/fc7 have none, as in torchvision's classifier.
    """

    BATCH_NORM: ClassVar[bool] = True
