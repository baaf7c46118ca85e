"""The fully convolutional network of Long, Shelhamer & Darrell: FCN-32s, 16s, 8s and 8s-atonce.

One module, :class:`FCN`; the variant is data (:class:`VariantSpec`): which pools feed skip
connections, at what fixed scale, and hence which upsampling layers exist. Layer names follow
the Caffe release and torchfcn (``score_fr``, ``upscore2``, ``score_pool4``, ``upscore_pool4``,
``score_pool3``, ``upscore8``, ...), so weight conversion is a name table.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from fcn_jax.models.backbones import get_backbone
from fcn_jax.models.conv import conv_for, resolve_conv_impl, upsample
from fcn_jax.models.layers import CoordMap, bilinear_init, crop_like, crop_offset
from fcn_jax.models.norm import AxisName
from fcn_jax.types import Array

SKIP_UPSAMPLE = (4, 2)  # kernel, stride of every 2x upsampling between skips (upscore2, ...)
SINGLE_HEAD = "out"  # output key of a one-head network (torchvision's name for it)


@dataclasses.dataclass(frozen=True)
class VariantSpec:
    """What distinguishes the FCN variants.

    Attributes:
        name: ``fcn32s``, ``fcn16s``, ``fcn8s`` or ``fcn8s-atonce``.
        skips: output strides of the backbone features fused into the score map, coarse to
            fine (the backbone's ``TAPS`` name them: pool4 and pool3 for VGG16).
        skip_scales: fixed factor applied to each skip's feature before its score layer. The
            atonce net scales pool4 by 0.01 and pool3 by 1e-4 (constant ``Scale`` layers with
            lr 0 in the release) so that all streams can be trained in one stage.
        torch_name: torchfcn's class name, stored as ``arch`` in its checkpoints.
    """

    name: str
    skips: tuple[int, ...]
    skip_scales: tuple[float, ...]
    torch_name: str

    @property
    def output_stride(self) -> int:
        """Stride of the last score map before the final upsampling: 32, 16 or 8."""
        return 32 // 2 ** len(self.skips)

    def skip_names(self, backbone: str = "vgg16") -> tuple[str, ...]:
        """The backbone features the skips read (``("pool4", "pool3")`` for FCN-8s on VGG16)."""
        taps = get_backbone(backbone).TAPS
        return tuple(taps[stride] for stride in self.skips)

    def upsamplers(self, backbone: str = "vgg16") -> tuple[tuple[str, int, int], ...]:
        """(name, kernel, stride) of each transposed convolution, in order of application.

        A 2x layer precedes every skip (``upscore2``, then ``upscore_pool4`` on the pool4 fusion);
        the last one upsamples by the output stride with kernel twice the stride (``upscore``
        for FCN-32s, ``upscore16`` / ``upscore8`` otherwise).
        """
        skips = self.skip_names(backbone)
        names = ["upscore2", *(f"upscore_{feature}" for feature in skips[:-1])]
        layers = [(name, *SKIP_UPSAMPLE) for name in names[: len(skips)]]
        stride = self.output_stride
        final = "upscore" if not skips else f"upscore{stride}"
        return (*layers, (final, 2 * stride, stride))


VARIANTS: dict[str, VariantSpec] = {
    "fcn32s": VariantSpec("fcn32s", (), (), "FCN32s"),
    "fcn16s": VariantSpec("fcn16s", (16,), (1.0,), "FCN16s"),
    "fcn8s": VariantSpec("fcn8s", (16, 8), (1.0, 1.0), "FCN8s"),
    "fcn8s-atonce": VariantSpec("fcn8s-atonce", (16, 8), (0.01, 0.0001), "FCN8sAtOnce"),
}


def get_variant(name: str) -> VariantSpec:
    """Look up a variant by name; an unknown name raises an error listing the valid ones."""
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(
            f"unknown FCN variant {name!r}; choose one of {sorted(VARIANTS)}"
        ) from None


@functools.cache
def crop_offsets(variant: str, backbone: str = "vgg16") -> dict[str, int]:
    """Crop offsets of a variant on a backbone, derived from the layer geometry.

    Returns:
        ``{"score_<feature>": offset}`` for each skip (cropped to the upsampled score map it is
        added to) and ``{<final upsampler>: offset}`` for the crop back to the input. On VGG16:
        FCN-32s: upscore 19; FCN-16s: score_pool4 5, upscore16 27; FCN-8s: score_pool4 5,
        score_pool3 9, upscore8 31.
    """
    spec = get_variant(variant)
    net = get_backbone(backbone)
    maps = net.coord_maps()
    score = maps[net.TAPS[32]]  # score_fr and score_<feature> are 1x1 convolutions: same map
    offsets: dict[str, int] = {}
    *skip_ups, (final, kernel, stride) = spec.upsamplers(backbone)
    for (_, k, s), feature in zip(skip_ups, spec.skip_names(backbone), strict=True):
        score = score.then(CoordMap.deconv(k, s))
        offsets[f"score_{feature}"] = crop_offset(maps[feature], score)
    offsets[final] = crop_offset(score.then(CoordMap.deconv(kernel, stride)), CoordMap())
    return offsets


class Upsample(nn.Module):
    """Transposed convolution without bias, 'VALID' like Caffe's Deconvolution.

    Output size is ``(n - 1) * stride + kernel``. The kernel is stored [k, k, C_in, C_out] and
    applied as a correlation over the dilated input: a torch ``ConvTranspose2d`` weight
    [C_in, C_out, k, k] maps to it spatially flipped (see :mod:`fcn_jax.convert.layout`).

    Attributes:
        features: output channels (= input channels, n_class).
        kernel: square kernel side.
        stride: upsampling factor.
        learnable: if False (the release's choice) the kernel stays the bilinear filter: its
            gradient is stopped here, so no loss can move it.
        dtype: computation dtype.
        conv_impl: ``gemm`` (one matrix product and an overlap-add, for XLA:CPU) or ``xla``.
    """

    features: int
    kernel: int
    stride: int
    learnable: bool = False
    dtype: jnp.dtype = jnp.float32
    conv_impl: str = "xla"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """Upsample [N, h, w, C] to [N, (h - 1) * s + k, (w - 1) * s + k, C]."""
        c_in = x.shape[-1]
        w = self.param("kernel", bilinear_init, (self.kernel, self.kernel, c_in, self.features))
        if not self.learnable:
            w = jax.lax.stop_gradient(w)
        x, w = nn.dtypes.promote_dtype(x, w, dtype=self.dtype)
        if self.conv_impl == "gemm" and self.kernel % self.stride == 0:
            return upsample(x, w, self.stride)  # XLA:CPU's transposed convolution is slow
        return jax.lax.conv_transpose(
            x,
            w,
            strides=(self.stride, self.stride),
            padding="VALID",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )


class FCN(nn.Module):
    """Fully convolutional network: a backbone and the paper's score / skip / upsampling head.

    The paper's single network by default; two options cover its other experiments:

    - ``streams`` (NYUDv2 RGB-HHA, "late fusion"): one backbone per input, layers suffixed by
      the stream (``conv1_1color``, ``conv1_1hha``, ...), each with its own score layers
      (``score_frcolor``, ``score_frhha``, and per-stream skip scores) whose outputs are averaged
      with fixed weights (0.5 / 0.5 for two streams: ``score_fused``) before the shared
      upsampling. Skip scores are fused the same way (our reading of the release's nets).
    - several ``heads`` (SIFT Flow): one backbone, several sets of score and upsampling layers
      suffixed by the head (``score_frsem``, ``upscore2sem``, ... and ``score_frgeo``, ...),
      each predicting its own classes. A one-head network's layers carry no suffix.

    Build it from a :class:`~fcn_jax.models.spec.NetSpec` (``spec.module()``) rather than by hand.

    Attributes:
        variant: ``fcn32s``, ``fcn16s``, ``fcn8s`` or ``fcn8s-atonce``.
        n_class: classes of a one-head network (21 for PASCAL VOC, background included):
            shorthand for ``heads=(("out", n_class),)``; ignored when ``heads`` is given.
        width: multiplier of every hidden channel count, fc6/fc7 included; 1.0 is the paper's
            network, smaller values give cheap networks for tests and demos.
        dtype: computation dtype (parameters are always float32).
        learn_upsampling: let the transposed convolutions learn (frozen bilinear by default).
        dropout_rate: dropout in the backbone, training only.
        streams: stream suffixes, e.g. ``("color", "hha")``; empty for one input.
        heads: ``(name, n_class)`` per output, e.g. ``(("sem", 33), ("geo", 3))``.
        backbone: a key of :data:`~fcn_jax.models.backbones.BACKBONES`.
        conv_impl: ``auto``, ``xla`` or ``gemm`` (:func:`~fcn_jax.models.conv.resolve_conv_impl`).
        freeze_bn: the backbone's BatchNorm uses its running statistics in training too.
        bn_axis_name: mapped axes BatchNorm averages its batch statistics over (the train step's).
    """

    variant: str = "fcn8s"
    n_class: int = 21
    width: float = 1.0
    dtype: jnp.dtype = jnp.float32
    learn_upsampling: bool = False
    dropout_rate: float = 0.5
    streams: tuple[str, ...] = ()
    heads: tuple[tuple[str, int], ...] = ()
    backbone: str = "vgg16"
    conv_impl: str = "auto"
    freeze_bn: bool = False
    bn_axis_name: AxisName = None

    @property
    def head_table(self) -> tuple[tuple[str, int], ...]:
        """``(name, n_class)`` of every output (``(("out", n_class),)`` for one head)."""
        return self.heads or ((SINGLE_HEAD, self.n_class),)

    @property
    def backbone_scopes(self) -> tuple[str, ...]:
        """Top-level param names of the backbone(s): ``vgg16``, or one per stream."""
        return tuple(f"{self.backbone}{s}" for s in self.streams or ("",))

    @nn.compact
    def __call__(self, images: Array | Sequence[Array], *, train: bool = False) -> dict[str, Array]:
        """Per-pixel class scores of every head.

        Args:
            images: [N, H, W, 3] float, preprocessed as the weights' metadata says; with
                ``streams``, a sequence of such arrays in stream order.
            train: enables dropout (needs a ``dropout`` PRNG stream) and, for a backbone with
                BatchNorm, its batch statistics (``batch_stats`` mutable, unless ``freeze_bn``).

        Returns:
            ``{head: [N, H, W, n_class] float32 logits}`` (key ``out`` for one head). A dict of
            the intermediate maps (``pool1`` ... ``fc7``, ``score_fr``, each upsampled and fused
            score; suffixed per stream / head) is sown as ``intermediates/maps``
            (``apply(..., mutable=["intermediates"])`` returns it).
        """
        if self.streams and len(self.head_table) > 1:
            raise ValueError("an FCN has either several streams or several heads, not both")
        inputs = tuple(images) if self.streams else (images,)
        if len(inputs) != max(len(self.streams), 1):
            raise ValueError(f"{len(inputs)} inputs for streams {self.streams}")
        impl = resolve_conv_impl(self.conv_impl)
        net = get_backbone(self.backbone)
        height, width = inputs[0].shape[1:3]
        maps: dict[str, Array] = {}  # every intermediate map, sown at the end for parity checks
        features = []
        # A backbone with BatchNorm takes its training options; one without need not know them.
        batch_norm = (
            {"freeze_bn": self.freeze_bn, "bn_axis_name": self.bn_axis_name}
            if getattr(net, "BATCH_NORM", False)
            else {}
        )
        for suffix, scope, x in zip(
            self.streams or ("",), self.backbone_scopes, inputs, strict=True
        ):
            trunk = net(
                width=self.width,
                dtype=self.dtype,
                dropout_rate=self.dropout_rate,
                suffix=suffix,
                conv_impl=impl,
                name=scope,
                **batch_norm,
            )
            features.append(trunk(x, train=train))
            maps |= {f"{k}{suffix}": v for k, v in features[-1].items()}
        several = len(self.head_table) > 1
        outputs = {
            head: self._head(features, head if several else "", n_class, height, width, maps, impl)
            for head, n_class in self.head_table
        }
        self.sow("intermediates", "maps", maps)
        return outputs

    def _head(
        self,
        features: list[dict[str, Array]],
        suffix: str,
        n_class: int,
        height: int,
        width: int,
        maps: dict[str, Array],
        impl: str,
    ) -> Array:
        """Score layers, skips and upsampling of one output; [N, height, width, n_class]."""
        spec = get_variant(self.variant)
        offsets = crop_offsets(self.variant, self.backbone)
        top = get_backbone(self.backbone).TAPS[32]
        score = self._fused_score(
            "score_fr", [f[top] for f in features], suffix, n_class, maps, impl
        )
        *skip_ups, final = spec.upsamplers(self.backbone)
        for (up, k, s), feature, scale in zip(
            skip_ups, spec.skip_names(self.backbone), spec.skip_scales, strict=True
        ):
            score = maps[f"{up}{suffix}"] = self._upsample(f"{up}{suffix}", k, s, n_class, impl)(
                score
            )
            taps = [f[feature] if scale == 1.0 else f[feature] * scale for f in features]
            skip = self._fused_score(f"score_{feature}", taps, suffix, n_class, maps, impl)
            skip = crop_like(skip, offsets[f"score_{feature}"], score.shape[1], score.shape[2])
            score = maps[f"fuse_{feature}{suffix}"] = score + skip
        name, k, s = final
        upsample_final = self._upsample(f"{name}{suffix}", k, s, n_class, impl)
        score = maps[f"{name}{suffix}"] = upsample_final(score)
        return crop_like(score, offsets[name], height, width).astype(jnp.float32)

    def _fused_score(
        self,
        layer: str,
        inputs: list[Array],
        suffix: str,
        n_class: int,
        maps: dict[str, Array],
        impl: str,
    ) -> Array:
        """A score layer per stream, averaged with fixed equal weights (late fusion)."""
        suffixes = self.streams or (suffix,)
        scores = [
            self._score(f"{layer}{s}", n_class, impl)(x)
            for s, x in zip(suffixes, inputs, strict=True)
        ]
        for s, score in zip(suffixes, scores, strict=True):
            maps[f"{layer}{s}"] = score
        if len(scores) == 1:
            return scores[0]
        fused = sum(scores[1:], scores[0]) / len(scores)
        maps[f"{layer}_fused" if layer != "score_fr" else "score_fused"] = fused
        return fused

    def _score(self, name: str, n_class: int, impl: str) -> nn.Conv:
        # Zero init, as the release: a new score layer starts by predicting nothing, so staged
        # training (32s -> 16s -> 8s) begins exactly at the previous stage's output.
        return nn.Conv(
            n_class,
            (1, 1),
            dtype=self.dtype,
            kernel_init=nn.initializers.zeros,
            conv_general_dilated=conv_for(impl),
            name=name,
        )

    def _upsample(self, name: str, kernel: int, stride: int, n_class: int, impl: str) -> Upsample:
        return Upsample(n_class, kernel, stride, self.learn_upsampling, self.dtype, impl, name=name)
