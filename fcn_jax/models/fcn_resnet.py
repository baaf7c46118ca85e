"""torchvision's FCN-ResNet50 / FCN-ResNet101 (``torchvision/models/segmentation/fcn.py``).

Not the paper's head: torchvision's ``FCN`` is a ResNet trunk with the segmentation dilations
(:mod:`fcn_jax.models.backbones.resnet`: layer3 and layer4 at stride 8) and an ``FCNHead`` on
its last map:

- ``classifier`` on layer4 (2048 channels at width 1): a 3x3 convolution to a quarter of the
  channels (padding 1, no bias), BatchNorm, ReLU, Dropout(0.1), a 1x1 convolution (with bias)
  to the classes; named ``0``, ``1``, ``4`` as the ``Sequential``'s children that hold weights;
- ``aux_classifier`` (``aux=True``): the same head on layer3 (1024 channels), whose loss
  torchvision's recipe adds at weight 0.5 in training; evaluation and inference read ``out``;
- each head's scores resized to the input with bilinear interpolation, ``align_corners=False``
  (:func:`resize_bilinear`).

Names follow torchvision's modules (the trunk under the backbone's name instead of
``backbone``), so conversion is a name table (:mod:`fcn_jax.convert.torchvision_resnet`).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from fcn_jax.models.backbones import get_backbone
from fcn_jax.models.conv import conv_for, resolve_conv_impl
from fcn_jax.models.fcn import SINGLE_HEAD
from fcn_jax.models.norm import AxisName, BatchNorm
from fcn_jax.types import Array

AUX_HEAD = "aux"  # the auxiliary head's output key (torchvision's)
HEAD_DROPOUT = 0.1  # FCNHead's Dropout
# Output key -> (the head's param scope, the trunk feature it reads).
HEADS = {SINGLE_HEAD: ("classifier", "layer4"), AUX_HEAD: ("aux_classifier", "layer3")}
# torch's default Conv2d init (FCNHead keeps it): weight and bias U(+-1/sqrt(fan_in)).
TORCH_CONV_INIT = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


def resize_bilinear(x: Array, height: int, width: int) -> Array:
    """``F.interpolate(x, (height, width), mode="bilinear", align_corners=False)`` on NHWC.

    ``jax.image.resize``'s ``bilinear`` samples at half-pixel centres, clamping at the borders
    as torch does; without antialiasing (which only acts when shrinking, and which torch's
    ``antialias=False`` default does not do) it gives torch's values at any size ratio
    (tests/models/test_fcn_resnet.py compares them).
    """
    shape = (x.shape[0], height, width, x.shape[3])
    return jax.image.resize(x, shape, "bilinear", antialias=False)


def _torch_bias_init(fan_in: int) -> nn.initializers.Initializer:
    bound = 1 / fan_in**0.5
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(
        key, shape, dtype, -bound, bound
    )


class FCNHead(nn.Module):
    """torchvision's ``FCNHead(in_channels, n_class)``; its children 0, 1 and 4 hold weights.

    Attributes:
        n_class: output channels.
        dtype: computation dtype.
        dropout_rate: of its Dropout (torchvision's 0.1), training only.
        conv_impl: ``xla`` or ``gemm``.
        bn_axis_name: mapped axes BatchNorm averages its batch statistics over.
    """

    n_class: int
    dtype: jnp.dtype = jnp.float32
    dropout_rate: float = HEAD_DROPOUT
    conv_impl: str = "xla"
    bn_axis_name: AxisName = None

    @nn.compact
    def __call__(self, x: Array, *, train: bool, frozen_bn: bool) -> Array:
        """Scores [N, h, w, n_class] of a [N, h, w, C] feature map (C // 4 inner channels)."""
        inner = max(1, x.shape[-1] // 4)
        conv = conv_for(self.conv_impl)
        h = nn.Conv(
            inner,
            (3, 3),
            padding=1,
            use_bias=False,
            dtype=self.dtype,
            kernel_init=TORCH_CONV_INIT,
            conv_general_dilated=conv,
            name="0",
        )(x)
        h = BatchNorm(dtype=self.dtype, axis_name=self.bn_axis_name, name="1")(
            h, use_running_average=frozen_bn
        )
        h = nn.Dropout(self.dropout_rate, deterministic=not train)(nn.relu(h))
        return nn.Conv(
            self.n_class,
            (1, 1),
            dtype=self.dtype,
            kernel_init=TORCH_CONV_INIT,
            bias_init=_torch_bias_init(inner),
            conv_general_dilated=conv,
            name="4",
        )(h)


class FCNResNet(nn.Module):
    """torchvision's FCN on ResNet-50 or ResNet-101: ``FCNHead`` on layer4, resized to the input.

    Build it from a :class:`~fcn_jax.models.spec.NetSpec` (``arch="fcn_resnet50"``, ...).

    Attributes:
        n_class: classes of the output.
        backbone: ``resnet50`` or ``resnet101`` (its param scope too).
        aux: whether the auxiliary head on layer3 exists (output ``aux``).
        width: multiplier of every hidden channel count (1.0 is torchvision's network).
        dtype: computation dtype (params and BatchNorm statistics stay float32).
        dropout_rate: of the heads' Dropout (torchvision's 0.1), training only.
        conv_impl: ``auto``, ``xla`` or ``gemm`` (:func:`~fcn_jax.models.conv.resolve_conv_impl`).
        freeze_bn: BatchNorm uses its running statistics in training too.
        bn_axis_name: mapped axes BatchNorm averages its batch statistics over.
    """

    n_class: int = 21
    backbone: str = "resnet50"
    aux: bool = False
    width: float = 1.0
    dtype: jnp.dtype = jnp.float32
    dropout_rate: float = HEAD_DROPOUT
    conv_impl: str = "auto"
    freeze_bn: bool = False
    bn_axis_name: AxisName = None

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> dict[str, Array]:
        """Per-pixel class scores.

        Args:
            x: [N, H, W, 3] preprocessed images (torchvision's normalisation), any size.
            train: the heads' dropout (needs a ``dropout`` PRNG stream) and BatchNorm's batch
                statistics (``batch_stats`` mutable, unless ``freeze_bn``).

        Returns:
            ``{"out": [N, H, W, n_class] float32}``, plus ``"aux"`` (the layer3 head's) with
            ``aux``. ``stem``, ``layer1`` ... ``layer4``, ``classifier`` and
            ``aux_classifier`` (the heads' scores before the resize) are sown as
            ``intermediates/maps``.
        """
        height, width = x.shape[1:3]
        impl = resolve_conv_impl(self.conv_impl)
        trunk = get_backbone(self.backbone)(
            width=self.width,
            dtype=self.dtype,
            conv_impl=impl,
            freeze_bn=self.freeze_bn,
            bn_axis_name=self.bn_axis_name,
            name=self.backbone,
        )
        maps = dict(trunk(x, train=train))
        outputs = {}
        for key, (scope, feature) in HEADS.items():
            if key == AUX_HEAD and not self.aux:
                continue
            head = FCNHead(
                self.n_class, self.dtype, self.dropout_rate, impl, self.bn_axis_name, name=scope
            )
            scores = maps[scope] = head(
                maps[feature], train=train, frozen_bn=not train or self.freeze_bn
            )
            outputs[key] = resize_bilinear(scores.astype(jnp.float32), height, width)
        self.sow("intermediates", "maps", maps)
        return outputs
