"""SpeedPaper's FCN (``hanknewbird/SpeedPaper``, ``Segmentation/FCN/tools/FCN.py``), in Flax.

The PyTorch FCN this project was first asked to carry into JAX. It is not one of the paper's
nets: it stands on torchvision's ``vgg16_bn`` features with their ImageNet geometry (pad 1,
plain 2x2/2 pooling, no fc6/fc7) and fuses *feature maps*, not class scores, NCHW in torch:

- ``s1`` ... ``s5``: the five stages of ``vgg16_bn().features`` (strides 2 ... 32);
- ``add1 = upsample_2x_1(s5) + s4``: a learnable 4x4/2 transposed convolution (512 -> 512,
  padding 1, no bias), bilinear on the channel diagonal at init;
- ``add2 = upsample_2x_2(conv_trans1(add1)) + s3``: a 1x1 convolution 512 -> 256, then the
  same 2x upsampling on 256 channels;
- ``out = upsample_8x(conv_trans2(add2))``: a 1x1 convolution 256 -> n_class, then a 16x16/8
  transposed convolution (padding 4) back to the input size.

A transposed convolution with padding p is the full (``VALID``) one cropped by p on each side,
which is how it is computed here (:class:`~fcn_jax.models.fcn.Upsample` and
:func:`~fcn_jax.models.layers.crop_like`). The input sides must be multiples of 32 (the skips
are added without crops); :meth:`~fcn_jax.models.NetSpec.logits` pads other sizes with the mean
pixel.

Its checkpoints also hold ``scores1`` / ``scores2`` / ``scores3`` 1x1 convolutions that
``forward`` never uses; this module has none (the converter drops them, and writes them back as
zeros on export).
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from fcn_jax.models.backbones.vgg16 import VGG16BN, scaled
from fcn_jax.models.conv import conv_for, resolve_conv_impl
from fcn_jax.models.fcn import SINGLE_HEAD, Upsample
from fcn_jax.models.layers import crop_like
from fcn_jax.models.norm import AxisName
from fcn_jax.types import Array

STRIDE = 32  # input sides must be multiples of the deepest stage's stride
BACKBONE = "vgg16_bn"  # its param scope (torchvision's vgg16_bn features)
# (name, kernel, stride, padding) of its transposed convolutions, in order of application.
UPSAMPLERS = (("upsample_2x_1", 4, 2, 1), ("upsample_2x_2", 4, 2, 1), ("upsample_8x", 16, 8, 4))
CONV_TRANS = ("conv_trans1", "conv_trans2")  # its 1x1 convolutions
UNUSED = ("scores1", "scores2", "scores3")  # in its state dicts, never called by forward
# torch's default Conv2d init, kaiming_uniform(a=sqrt(5)): U(+-1/sqrt(fan_in)), var 1/(3 fan_in).
TORCH_CONV_INIT = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


class SpeedPaperFCN(nn.Module):
    """SpeedPaper's FCN: VGG16-BN stages fused at strides 32 -> 16 -> 8, then 8x upsampling.

    Attributes:
        n_class: classes of the output.
        width: multiplier of every hidden channel count (1.0 is SpeedPaper's network).
        dtype: computation dtype (params and BatchNorm statistics stay float32).
        learn_upsampling: let the transposed convolutions learn (SpeedPaper's do).
        conv_impl: ``auto``, ``xla`` or ``gemm`` (:func:`~fcn_jax.models.conv.resolve_conv_impl`).
        freeze_bn: BatchNorm uses its running statistics in training too.
        bn_axis_name: mapped axes BatchNorm averages its batch statistics over.
    """

    n_class: int = 21
    width: float = 1.0
    dtype: jnp.dtype = jnp.float32
    learn_upsampling: bool = True
    conv_impl: str = "auto"
    freeze_bn: bool = False
    bn_axis_name: AxisName = None

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> dict[str, Array]:
        """Per-pixel class scores.

        Args:
            x: [N, H, W, 3] preprocessed images, H and W multiples of 32.
            train: BatchNorm's batch statistics (``batch_stats`` mutable, unless ``freeze_bn``).

        Returns:
            ``{"out": [N, H, W, n_class] float32}``. ``s1`` ... ``s5``, ``add1``, ``trans1``,
            ``add2``, ``trans2`` and ``upsample_8x`` are sown as ``intermediates/maps``.
        """
        height, width = x.shape[1:3]
        if height % STRIDE or width % STRIDE:
            raise ValueError(
                f"SpeedPaper's FCN needs input sides that are multiples of {STRIDE}, got "
                f"{height}x{width} (NetSpec.logits pads other sizes with the mean pixel)"
            )
        trunk = VGG16BN(
            width=self.width,
            dtype=self.dtype,
            conv_impl=resolve_conv_impl(self.conv_impl),
            freeze_bn=self.freeze_bn,
            bn_axis_name=self.bn_axis_name,
            caffe_geometry=False,
            name=BACKBONE,
        )
        pools = trunk(x, train=train)
        maps = {f"s{i}": pools[f"pool{i}"] for i in range(1, 6)}
        impl = resolve_conv_impl(self.conv_impl)
        h = maps["add1"] = self._up(0, maps["s5"], impl) + maps["s4"]
        h = maps["trans1"] = self._conv("conv_trans1", scaled(256, self.width), impl)(h)
        h = maps["add2"] = self._up(1, h, impl) + maps["s3"]
        h = maps["trans2"] = self._conv("conv_trans2", self.n_class, impl)(h)
        h = maps["upsample_8x"] = self._up(2, h, impl)
        self.sow("intermediates", "maps", maps)
        return {SINGLE_HEAD: h.astype(jnp.float32)}

    def _up(self, index: int, x: Array, impl: str) -> Array:
        """Transposed convolution ``UPSAMPLERS[index]`` on [N, h, w, C]: [N, s*h, s*w, C]."""
        name, kernel, stride, padding = UPSAMPLERS[index]
        up = Upsample(
            x.shape[-1], kernel, stride, self.learn_upsampling, self.dtype, impl, name=name
        )
        return crop_like(up(x), padding, stride * x.shape[1], stride * x.shape[2])

    def _conv(self, name: str, features: int, impl: str) -> nn.Conv:
        return nn.Conv(
            features,
            (1, 1),
            dtype=self.dtype,
            kernel_init=TORCH_CONV_INIT,  # torch's default, which SpeedPaper keeps
            conv_general_dilated=conv_for(impl),
            name=name,
        )
