"""Analytic FLOP counts of the FCNs, layer by layer, from the geometry table that builds them.

The walk below reads :data:`~fcn_jax.models.backbones.vgg16.VGG16_BLOCKS`, ``FC_LAYERS``
and each variant's :attr:`~fcn_jax.models.fcn.VariantSpec.upsamplers`, exactly as the modules do,
so a change of geometry changes the count with it; a test checks every computed map size against
``jax.eval_shape`` of :class:`~fcn_jax.models.FCN`.

Conventions (one multiply-accumulate, MAC, is 2 FLOPs):

- A convolution costs ``H_out * W_out * k * k * C_in * C_out`` MACs, with ``H_out`` after the
  pad of 100 of conv1_1 and Caffe's ceil-mode pooling: the GEMM of an im2col convolution
  (Caffe's, torch's), taps on the zero padding included. Score layers run on the whole pool map,
  before their crop, as the model computes them. XLA's cost analysis leaves out the taps on the
  padding (:attr:`LayerCost.valid_macs`): 179.54 instead of 181.53 GMAC for FCN-8s at 500x500,
  most of the gap being conv1_1, whose 698x698 output mostly sees the pad of 100.
- A transposed convolution (the ``upscore*`` layers) costs ``H_in * W_in * k * k * C_in * C_out``:
  every input pixel scattered through the whole kernel, which is what Caffe's Deconvolution
  computes and what XLA's cost analysis counts for ``lax.conv_transpose`` (a convolution over
  the stride-dilated input, whose zero taps it leaves out; checked in the tests). Counted over
  the zero holes (``H_out * W_out * k * k * C_in * C_out``), FCN-8s's ``upscore8`` alone would be
  36 GMAC at 500x500 instead of 0.55. The channels are counted dense (21 x 21) although the
  bilinear kernel is diagonal: the convolution does the full channel mixing.
- ReLU, pooling, the skip additions, dropout, the crops and the loss are not counted: all
  elementwise, under 0.1% of the total.
- Training: each layer's forward, plus the gradient with respect to its input (same MACs as
  the forward; not for conv1_1, whose input is the data), plus the gradient with respect to its
  weights (same MACs; not for frozen upsampling kernels). This is what the train step computes;
  it comes to about 3x the forward (the usual "train = 3 x forward" convention, which it
  refines by under 1%). The optimiser's elementwise update is not counted.

FCN-8s at 500x500, full width, 21 classes: 181.53 GMAC = 363.1 GFLOP forward, of which the
trunk (conv1_1 ... fc7) is 180.88 GMAC.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from fcn_jax.models.backbones.vgg16 import FC_LAYERS, VGG16_BLOCKS, scaled
from fcn_jax.models.fcn import get_variant
from fcn_jax.models.spec import RESNET_ARCHS, SPEEDPAPER

# Every pool of the trunk is 2x2 with stride 2, ceil mode (fcn_jax.models.layers.max_pool_ceil).
POOL_KERNEL = POOL_STRIDE = 2
IMAGE_CHANNELS = 3
OTHER_ARCHS = (SPEEDPAPER, *RESNET_ARCHS)  # counted by fcn_jax.bench.flops_nets


@dataclasses.dataclass(frozen=True)
class LayerCost:
    """One layer of the network, its geometry and its cost for one image.

    Attributes:
        name: the layer's name in the model (``conv1_1``, ``pool3``, ``score_pool4``,
            ``upscore8``; suffixed by stream or head as the model names them).
        kind: ``conv``, ``pool``, ``deconv`` (transposed convolution) or ``resize`` (an
            FCN-ResNet's bilinear resize, not counted).
        in_hw: (H, W) of the input map.
        out_hw: (H, W) of the output map (before any crop).
        c_in: input channels.
        c_out: output channels.
        kernel: square kernel side.
        stride: stride (upsampling factor for ``deconv``).
        macs: forward multiply-accumulates (0 for pools); see the module's conventions.
        valid_macs: those whose input tap lies inside the input rather than on its zero padding
            (equal to ``macs`` for unpadded layers and transposed convolutions): what XLA's
            cost analysis counts.
        weight_grad: the layer's weights get a gradient in training.
        input_grad: the gradient flows through to the layer's input in training.
        dilation: of the kernel (the FCN-ResNets' layer3 and layer4; 1 elsewhere).
    """

    name: str
    kind: str
    in_hw: tuple[int, int]
    out_hw: tuple[int, int]
    c_in: int
    c_out: int
    kernel: int
    stride: int
    macs: int
    valid_macs: int
    weight_grad: bool = True
    input_grad: bool = True
    dilation: int = 1

    @property
    def train_macs(self) -> int:
        """Forward, input-gradient and weight-gradient MACs of one training step."""
        return self.macs * (1 + int(self.input_grad) + int(self.weight_grad))

    @property
    def out_elements(self) -> int:
        """Elements of the output map, one image."""
        return self.out_hw[0] * self.out_hw[1] * self.c_out


def conv_out(size: int, kernel: int, padding: int) -> int:
    """Output side of a stride-1 convolution: ``size + 2 * padding - kernel + 1``."""
    return size + 2 * padding - kernel + 1


def pool_out(size: int) -> int:
    """Output side of a 2x2/2 ceil-mode pool: Caffe's ``ceil((size - 2) / 2) + 1``."""
    return -(-size // POOL_STRIDE)


def deconv_out(size: int, kernel: int, stride: int) -> int:
    """Output side of a 'VALID' transposed convolution (Caffe's Deconvolution): ``(n-1)*s + k``."""
    return (size - 1) * stride + kernel


def taps_inside(size: int, kernel: int, padding: int) -> int:
    """Taps of a stride-1 convolution, along one axis, that read the input, not the padding.

    Returns:
        The number of (output position, kernel tap) pairs whose input position is inside
        ``[0, size)``.
    """
    out = conv_out(size, kernel, padding)
    # Tap t of output o reads input o + t - padding.
    return sum(
        max(0, min(out - 1, size - 1 + padding - t) - max(0, padding - t) + 1)
        for t in range(kernel)
    )


def _conv(
    name: str, hw: tuple[int, int], c_in: int, c_out: int, kernel: int, padding: int, **kw: bool
) -> LayerCost:
    out = (conv_out(hw[0], kernel, padding), conv_out(hw[1], kernel, padding))
    macs = out[0] * out[1] * kernel * kernel * c_in * c_out
    valid = taps_inside(hw[0], kernel, padding) * taps_inside(hw[1], kernel, padding)
    return LayerCost(
        name, "conv", hw, out, c_in, c_out, kernel, 1, macs, valid * c_in * c_out, **kw
    )


def _pool(name: str, hw: tuple[int, int], channels: int) -> LayerCost:
    out = (pool_out(hw[0]), pool_out(hw[1]))
    return LayerCost(
        name, "pool", hw, out, channels, channels, POOL_KERNEL, POOL_STRIDE, 0, 0, weight_grad=False
    )


def _deconv(
    name: str, hw: tuple[int, int], channels: int, kernel: int, stride: int, learnable: bool
) -> LayerCost:
    out = (deconv_out(hw[0], kernel, stride), deconv_out(hw[1], kernel, stride))
    macs = hw[0] * hw[1] * kernel * kernel * channels * channels  # scatter count, see above
    return LayerCost(
        name,
        "deconv",
        hw,
        out,
        channels,
        channels,
        kernel,
        stride,
        macs,
        macs,
        weight_grad=learnable,
    )


def trunk_costs(
    height: int, width: int, width_mult: float = 1.0, suffix: str = ""
) -> tuple[list[LayerCost], dict[str, LayerCost]]:
    """Layers of one VGG16 trunk (conv1_1 ... pool5, fc6, fc7) for a ``height x width`` input.

    Args:
        height: input height.
        width: input width.
        width_mult: channel multiplier of the hidden layers (the model's ``width``).
        suffix: stream suffix appended to every name (two-stream nets).

    Returns:
        (the layers in order, ``{pool1 ... pool5, fc7}`` -> its layer, unsuffixed keys).
    """
    layers: list[LayerCost] = []
    outputs: dict[str, LayerCost] = {}
    hw, channels = (height, width), IMAGE_CHANNELS
    first = True
    for i, block in enumerate(VGG16_BLOCKS, start=1):
        for spec in block:
            c_out = scaled(spec.features, width_mult)
            layer = _conv(
                f"{spec.name}{suffix}",
                hw,
                channels,
                c_out,
                spec.kernel,
                spec.padding,
                input_grad=not first,  # conv1_1's input is the data: no gradient
            )
            layers.append(layer)
            hw, channels, first = layer.out_hw, c_out, False
        layers.append(_pool(f"pool{i}{suffix}", hw, channels))
        outputs[f"pool{i}"] = layers[-1]
        hw = layers[-1].out_hw
    for spec in FC_LAYERS:
        c_out = scaled(spec.features, width_mult)
        layers.append(_conv(f"{spec.name}{suffix}", hw, channels, c_out, spec.kernel, spec.padding))
        hw, channels = layers[-1].out_hw, c_out
    outputs["fc7"] = layers[-1]
    return layers, outputs


def layer_costs(
    variant: str,
    height: int,
    width: int,
    width_mult: float = 1.0,
    n_class: int = 21,
    streams: Sequence[str] = (),
    heads: Sequence[tuple[str, int]] = (),
    learn_upsampling: bool = False,
) -> tuple[LayerCost, ...]:
    """Every layer of an FCN, in order of computation, for one ``height x width`` image.

    Mirrors :class:`fcn_jax.models.FCN` (same arguments, same layer names): one trunk per stream,
    per head a score layer per stream on fc7 and on each skip's pool, and the head's upsamplers.
    The other architectures are counted by :mod:`fcn_jax.bench.flops_nets` (one input, one
    head; an FCN-ResNet without its auxiliary head, SpeedPaper's FCN with learned upsampling).

    Args:
        variant: ``fcn32s``, ``fcn16s``, ``fcn8s`` or ``fcn8s-atonce``; ``speedpaper``,
            ``fcn_resnet50`` or ``fcn_resnet101``.
        height: input height (any size from 1 up).
        width: input width.
        width_mult: the model's ``width`` (hidden channel multiplier).
        n_class: classes of the single output (ignored with ``heads``).
        streams: stream suffixes (``("color", "hha")``), or () for one input.
        heads: ``(suffix, n_class)`` per output, or () for one output.
        learn_upsampling: the upsampling kernels get gradients (frozen by default).

    Returns:
        The layers, pools included (0 MACs, listed for their geometry).
    """
    if variant in OTHER_ARCHS:
        if streams or heads or learn_upsampling:
            raise ValueError(f"{variant} has one input, one head and no options here")
        from fcn_jax.bench.flops_nets import other_costs  # it builds on this module

        return other_costs(variant, height, width, width_mult, n_class)
    spec = get_variant(variant)
    if streams and heads:
        raise ValueError("an FCN has either several streams or several heads, not both")
    if height < 1 or width < 1:
        raise ValueError(f"input size must be positive, got {height}x{width}")
    layers: list[LayerCost] = []
    trunks = []
    for suffix in streams or ("",):
        trunk, outputs = trunk_costs(height, width, width_mult, suffix)
        layers += trunk
        trunks.append(outputs)
    *skip_ups, (final, f_kernel, f_stride) = spec.upsamplers()
    for head, classes in heads or (("", n_class),):
        suffixes = streams or (head,)
        for suffix, outputs in zip(suffixes, trunks, strict=True):
            fc7 = outputs["fc7"]
            layers.append(_conv(f"score_fr{suffix}", fc7.out_hw, fc7.c_out, classes, 1, 0))
        hw = trunks[0]["fc7"].out_hw
        for (up, kernel, stride), pool in zip(skip_ups, spec.skip_names(), strict=True):
            layers.append(_deconv(f"{up}{head}", hw, classes, kernel, stride, learn_upsampling))
            hw = layers[-1].out_hw
            for suffix, outputs in zip(suffixes, trunks, strict=True):
                src = outputs[pool]
                layers.append(_conv(f"score_{pool}{suffix}", src.out_hw, src.c_out, classes, 1, 0))
        layers.append(_deconv(f"{final}{head}", hw, classes, f_kernel, f_stride, learn_upsampling))
    return tuple(layers)


def forward_macs(layers: Sequence[LayerCost]) -> int:
    """Forward MACs of one image."""
    return sum(layer.macs for layer in layers)


def train_macs(layers: Sequence[LayerCost]) -> int:
    """MACs of one image's training step (forward and backward)."""
    return sum(layer.train_macs for layer in layers)


def gflop(
    variant: str,
    height: int,
    width: int,
    mode: str = "forward",
    width_mult: float = 1.0,
    n_class: int = 21,
) -> float:
    """GFLOP (2 per MAC) of one image, ``mode`` ``forward`` or ``train``."""
    layers = layer_costs(variant, height, width, width_mult, n_class)
    if mode == "forward":
        return 2 * forward_macs(layers) / 1e9
    if mode == "train":
        return 2 * train_macs(layers) / 1e9
    raise ValueError(f"mode must be 'forward' or 'train', not {mode!r}")


def param_count(layers: Sequence[LayerCost]) -> int:
    """Parameters of the layers: conv kernels and biases, bias-free transposed convolutions.

    For the BatchNorm networks an estimate (the ResNets' convolutions have no bias, and their
    BatchNorms' parameters are not listed): within 0.2% of their count.
    """
    total = 0
    for layer in layers:
        if layer.kind in ("pool", "resize"):
            continue
        total += layer.kernel**2 * layer.c_in * layer.c_out
        total += layer.c_out if layer.kind == "conv" else 0
    return total


def format_breakdown(layers: Sequence[LayerCost]) -> str:
    """A text table: each layer's output size, channels, forward GMAC and share of the total."""
    total = forward_macs(layers) or 1
    n = max(14, *(len(layer.name) for layer in layers))
    head = f"{'kind':<6} {'output':>11} {'C_in':>5} {'C_out':>5} {'GMAC':>9}  share"
    rows = [f"{'layer':<{n}} {head}"]
    for layer in layers:
        size = f"{layer.out_hw[0]}x{layer.out_hw[1]}"
        rows.append(
            f"{layer.name:<{n}} {layer.kind:<6} {size:>11} {layer.c_in:>5} {layer.c_out:>5} "
            f"{layer.macs / 1e9:>9.3f} {100 * layer.macs / total:>5.1f}%"
        )
    rows.append(
        f"{'total':<{n}} {'':<6} {'':>11} {'':>5} {'':>5} {forward_macs(layers) / 1e9:>9.3f}"
    )
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m fcn_jax.bench.flops fcn8s 500 500 [--width 1.0]``: print the breakdown."""
    import argparse

    p = argparse.ArgumentParser(description="Per-layer forward MACs of an FCN.")
    p.add_argument("variant")
    p.add_argument("height", type=int)
    p.add_argument("width", type=int)
    p.add_argument("--width-mult", type=float, default=1.0)
    p.add_argument("--n-class", type=int, default=21)
    args = p.parse_args(argv)
    layers = layer_costs(args.variant, args.height, args.width, args.width_mult, args.n_class)
    print(format_breakdown(layers))
    print(
        f"forward {2 * forward_macs(layers) / 1e9:.2f} GFLOP, "
        f"train step {2 * train_macs(layers) / 1e9:.2f} GFLOP per image"
    )


if __name__ == "__main__":
    main()
