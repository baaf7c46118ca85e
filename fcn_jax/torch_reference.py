"""fcn-jax's own PyTorch FCN, the reference that Flax parity is measured against.

Written from the paper's facts, not from torchfcn: NCHW, torchfcn's attribute names (so its
checkpoints load strictly), the same :class:`~fcn_jax.models.fcn.VariantSpec` and derived crop
offsets as the Flax model, any ``width``. The test suite checks it against torchfcn's own model
classes, so Flax parity against it is parity against the community's code.

The FCN-ResNets' reference is torchvision's own model code, not a copy:
:func:`import_torchvision` imports torchvision where its compiled operators cannot load (see
there), and :func:`torchvision_fcn_resnet` builds ``fcn_resnet50`` / ``fcn_resnet101`` (at
narrow widths from torchvision's own classes, only the channel counts scaled).

Imported lazily by the converters and tests: torch is an optional dependency
(``pip install 'fcn-jax[torch]'``).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fcn_jax.models.backbones.resnet import (
    DEPTHS,
    EXPANSION,
    SEGMENTATION_DILATION,
    STAGE_PLANES,
    STEM_CHANNELS,
)
from fcn_jax.models.backbones.vgg16 import (
    CONV_LAYERS,
    FC_LAYERS,
    VGG16_BLOCKS,
    bn_name,
    scaled,
    torchvision_convs,
)
from fcn_jax.models.fcn import crop_offsets, get_variant
from fcn_jax.models.fcn_resnet import AUX_HEAD, HEADS
from fcn_jax.models.layers import bilinear_kernel
from fcn_jax.models.spec import RESNET_ARCHS, SPEEDPAPER, NetSpec


def pool_channels(width: float) -> dict[str, int]:
    """Channels of pool1 ... pool5 at ``width``."""
    return {f"pool{i}": scaled(b[-1].features, width) for i, b in enumerate(VGG16_BLOCKS, 1)}


class TorchFCN(nn.Module):
    """FCN-32s/16s/8s/8s-atonce in PyTorch, NCHW, torchfcn's parameter names.

    Mirrors :class:`fcn_jax.models.FCN`, two-stream and two-head variants included (layer
    names suffixed by stream or head, as in the Caffe release's NYUDv2 and SIFT Flow nets).

    Args:
        variant: ``fcn32s``, ``fcn16s``, ``fcn8s`` or ``fcn8s-atonce``.
        n_class: number of classes (ignored with ``heads``).
        width: hidden channel multiplier (1.0 is the paper's network).
        streams: stream suffixes (``("color", "hha")``), one VGG16 trunk each, late fusion.
        heads: ``(suffix, n_class)`` per output (``(("sem", 33), ("geo", 3))``).
        batch_norm: a ``BatchNorm2d`` after every 3x3 convolution, as torchvision's
            ``vgg16_bn`` (``bn1_1`` ... ``bn5_3``, stream-suffixed; the convolutions keep their
            biases): the FCN on the ``vgg16_bn`` backbone.
    """

    def __init__(
        self,
        variant: str = "fcn8s",
        n_class: int = 21,
        width: float = 1.0,
        streams: tuple[str, ...] = (),
        heads: tuple[tuple[str, int], ...] = (),
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        self.batch_norm = batch_norm
        self.spec = get_variant(variant)
        self.skips, self.upsamplers = self.spec.skip_names(), self.spec.upsamplers()
        self.offsets = crop_offsets(variant)
        self.streams, self.heads = tuple(streams), tuple(heads)
        for suffix in self.streams or ("",):
            in_ch = 3
            for s in CONV_LAYERS:
                out_ch = scaled(s.features, width)
                conv = nn.Conv2d(in_ch, out_ch, s.kernel, padding=s.padding)
                setattr(self, f"{s.name}{suffix}", conv)
                if batch_norm and s not in FC_LAYERS:
                    setattr(self, f"{bn_name(s.name)}{suffix}", nn.BatchNorm2d(out_ch))
                in_ch = out_ch
        channels = {**pool_channels(width), "fc7": in_ch}
        for head, classes in self.heads or (("", n_class),):
            for suffix in self.streams or (head,):
                setattr(self, f"score_fr{suffix}", nn.Conv2d(channels["fc7"], classes, 1))
                for pool in self.skips:
                    conv = nn.Conv2d(channels[pool], classes, 1)
                    setattr(self, f"score_{pool}{suffix}", conv)
            for name, kernel, stride in self.upsamplers:
                up = nn.ConvTranspose2d(classes, classes, kernel, stride=stride, bias=False)
                setattr(self, f"{name}{head}", up)
        # Element-wise like Caffe's Dropout layer (torchfcn uses Dropout2d); off in eval().
        self.dropout = nn.Dropout(0.5)

    @classmethod
    def from_spec(cls, spec: NetSpec) -> TorchFCN:
        """The reference of a (VGG16 or VGG16-BN) :class:`~fcn_jax.models.NetSpec`'s network."""
        if spec.backbone not in ("vgg16", "vgg16_bn"):
            raise ValueError(
                f"TorchFCN mirrors the VGG16 and VGG16-BN FCNs, not a {spec.backbone} backbone"
            )
        heads = spec.heads if len(spec.heads) > 1 else ()
        return cls(
            spec.arch, spec.n_class, spec.width, spec.streams, heads, batch_norm=spec.batch_norm
        )

    def forward(
        self,
        x: torch.Tensor | tuple[torch.Tensor, ...],
        intermediates: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor | dict[str, torch.Tensor]:
        """Logits [N, n_class, H, W] for images [N, 3, H, W] (a tuple of them with streams).

        Returns a dict suffix -> logits with ``heads``. Fills ``intermediates`` if given, with
        the names the Flax model sows.
        """
        inter = {} if intermediates is None else intermediates
        inputs = tuple(x) if self.streams else (x,)
        features = [
            self._trunk(xi, suffix, inter)
            for suffix, xi in zip(self.streams or ("",), inputs, strict=True)
        ]
        size = inputs[0].shape[2:]
        outputs = {
            head: self._head(features, head, size, inter) for head, _ in self.heads or (("", 0),)
        }
        return outputs if self.heads else outputs[""]

    def _trunk(self, h: torch.Tensor, suffix: str, inter: dict) -> dict[str, torch.Tensor]:
        out = {}
        for i, block in enumerate(VGG16_BLOCKS, start=1):
            for s in block:
                h = getattr(self, f"{s.name}{suffix}")(h)
                if self.batch_norm:
                    h = getattr(self, f"{bn_name(s.name)}{suffix}")(h)
                h = F.relu(h)
            h = F.max_pool2d(h, 2, 2, ceil_mode=True)
            out[f"pool{i}"] = h
        for s in FC_LAYERS:
            h = self.dropout(F.relu(getattr(self, f"{s.name}{suffix}")(h)))
            out[s.name] = h
        inter.update({f"{k}{suffix}": v for k, v in out.items()})
        return out

    def _fused(self, layer: str, inputs: list, head: str, inter: dict) -> torch.Tensor:
        suffixes = self.streams or (head,)
        scores = [getattr(self, f"{layer}{s}")(x) for s, x in zip(suffixes, inputs, strict=True)]
        inter.update({f"{layer}{s}": v for s, v in zip(suffixes, scores, strict=True)})
        if len(scores) == 1:
            return scores[0]
        fused = sum(scores[1:], scores[0]) / len(scores)
        inter["score_fused" if layer == "score_fr" else f"{layer}_fused"] = fused
        return fused

    def _head(self, features: list, head: str, size: tuple, inter: dict) -> torch.Tensor:
        score = self._fused("score_fr", [f["fc7"] for f in features], head, inter)
        *skip_ups, (final, _, _) = self.upsamplers
        for (up, _, _), pool, scale in zip(
            skip_ups, self.skips, self.spec.skip_scales, strict=True
        ):
            score = inter[f"{up}{head}"] = getattr(self, f"{up}{head}")(score)
            pooled = [f[pool] * scale if scale != 1.0 else f[pool] for f in features]
            skip = self._fused(f"score_{pool}", pooled, head, inter)
            o = self.offsets[f"score_{pool}"]
            score = score + skip[:, :, o : o + score.shape[2], o : o + score.shape[3]]
            inter[f"fuse_{pool}{head}"] = score
        score = inter[f"{final}{head}"] = getattr(self, f"{final}{head}")(score)
        o = self.offsets[final]
        return score[:, :, o : o + size[0], o : o + size[1]]


def random_state_dict(
    variant: str,
    n_class: int = 21,
    width: float = 1.0,
    seed: int = 0,
    streams: tuple[str, ...] = (),
    heads: tuple[tuple[str, int], ...] = (),
    batch_norm: bool = False,
) -> dict[str, torch.Tensor]:
    """A torchfcn-layout state dict with random weights in *every* layer.

    Score layers and upsampling kernels are random too (non-symmetric), unlike a fresh FCN whose
    zero score layers make every logit equal and would prove nothing about conversion. He-scaled
    so activations keep their magnitude through the 15+ layers. With ``batch_norm``
    (:class:`TorchFCN`'s option), every BatchNorm has random affine parameters and running
    statistics (:func:`random_batch_norm`), not the defaults that make it the identity in eval.
    """
    model = TorchFCN(variant, n_class, width, streams, heads, batch_norm=batch_norm)
    gen = torch.Generator().manual_seed(seed)
    state = {}
    norms = {name for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    for key, value in model.state_dict().items():
        layer, leaf = key.rsplit(".", 1)
        if layer in norms:
            if leaf == "weight":  # the first of the layer's keys: draw them all
                state |= {
                    f"{layer}.{k}": v for k, v in random_batch_norm(value.shape[0], gen).items()
                }
            continue
        if key.endswith(".bias"):
            state[key] = (torch.rand(value.shape, generator=gen) - 0.5) * 0.2
            continue
        if isinstance(getattr(model, key.split(".")[0]), nn.ConvTranspose2d):
            c_in, _, k, _ = value.shape
            stride = getattr(model, key.split(".")[0]).stride[0]
            fan_in = c_in * (k / stride) ** 2  # taps that reach one output pixel
        else:
            fan_in = value[0].numel()
        state[key] = torch.randn(value.shape, generator=gen) * np.sqrt(2.0 / fan_in)
    return state


def random_batch_norm(channels: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """A ``BatchNorm2d``'s state dict entries (unprefixed), random but sane.

    Scale in [0.5, 1.5], shift in [-0.2, 0.2], running mean ~ N(0, 0.5^2) and running variance
    log-uniform in [e^-1, e^1]: far enough from the defaults (0 and 1) that eval-mode
    normalisation shows every term, close enough that 13 of them in a row keep the activations'
    magnitude. ``num_batches_tracked`` is 0, as conversion writes it (it is torch-only state).
    """
    return {
        "weight": torch.rand(channels, generator=gen) + 0.5,
        "bias": (torch.rand(channels, generator=gen) - 0.5) * 0.4,
        "running_mean": torch.randn(channels, generator=gen) * 0.5,
        "running_var": torch.exp(torch.rand(channels, generator=gen) * 2 - 1),
        "num_batches_tracked": torch.tensor(0, dtype=torch.long),
    }


def random_vgg16_state_dict(
    width: float = 1.0, seed: int = 0, batch_norm: bool = False
) -> dict[str, torch.Tensor]:
    """A torchvision-layout VGG16 state dict (``features.N``, ``classifier.N``), He-random.

    Narrow widths keep the layout with fewer channels (classifier.0 takes 512w * 7 * 7 inputs).
    With ``batch_norm``, torchvision's ``vgg16_bn`` layout: each conv's BatchNorm at the next
    ``features`` index, with random statistics (:func:`random_batch_norm`).
    """
    gen = torch.Generator().manual_seed(seed)
    state = {}
    in_ch = 3
    table = torchvision_convs(batch_norm)
    convs = {name: prefix for prefix, name in table.items()}
    for s in CONV_LAYERS:
        out_ch = scaled(s.features, width)
        if s.name in convs:
            shape = (out_ch, in_ch, s.kernel, s.kernel)
        else:  # fc6 / fc7 as Linear layers
            shape = (out_ch, in_ch * s.kernel * s.kernel)
        key = convs.get(s.name) or {"fc6": "classifier.0", "fc7": "classifier.3"}[s.name]
        fan_in = int(np.prod(shape[1:]))
        state[f"{key}.weight"] = torch.randn(shape, generator=gen) * np.sqrt(2.0 / fan_in)
        state[f"{key}.bias"] = (torch.rand(out_ch, generator=gen) - 0.5) * 0.2
        if batch_norm and s.name in convs:
            bn = convs[bn_name(s.name)]
            state |= {f"{bn}.{k}": v for k, v in random_batch_norm(out_ch, gen).items()}
        in_ch = out_ch
    state["classifier.6.weight"] = torch.randn((1000, in_ch), generator=gen) * np.sqrt(1.0 / in_ch)
    state["classifier.6.bias"] = torch.zeros(1000)
    return state


def vgg16_fc7(
    state: Mapping[str, torch.Tensor], x: torch.Tensor, batch_norm: bool | None = None
) -> dict[str, torch.Tensor]:
    """The FCN trunk computed straight from a torchvision VGG16 (or VGG16-BN) state dict.

    The classifier runs as convolutions (classifier.0 viewed as a 7x7 conv, classifier.3 as 1x1),
    with the FCN's pad 100 on the first conv and ceil-mode pooling: the computation the converted
    Flax trunk must reproduce. Independent of the converter's name table and reshapes.

    Args:
        state: torchvision ``vgg16`` or ``vgg16_bn`` state dict.
        x: [N, 3, H, W] preprocessed images.
        batch_norm: whether it is ``vgg16_bn``'s (a BatchNorm at each conv's index + 1, run in
            eval mode); by default, whether ``features.1`` holds a running mean.

    Returns:
        ``pool1`` ... ``pool5``, ``fc6``, ``fc7`` activations (eval mode: no dropout).
    """
    if batch_norm is None:
        batch_norm = "features.1.running_mean" in state
    out = {}
    h = x
    index = 0
    for i, block in enumerate(VGG16_BLOCKS, start=1):
        for s in block:
            key = f"features.{index}"
            h = F.conv2d(h, state[f"{key}.weight"], state[f"{key}.bias"], padding=s.padding)
            if batch_norm:
                bn = f"features.{index + 1}"
                h = F.batch_norm(
                    h,
                    state[f"{bn}.running_mean"],
                    state[f"{bn}.running_var"],
                    state[f"{bn}.weight"],
                    state[f"{bn}.bias"],
                    training=False,
                    eps=1e-5,
                )
            h = F.relu(h)
            index += 3 if batch_norm else 2  # conv, (batch norm,) relu
        h = F.max_pool2d(h, 2, 2, ceil_mode=True)
        out[f"pool{i}"] = h
        index += 1  # pool
    for s, key in zip(FC_LAYERS, ("classifier.0", "classifier.3"), strict=True):
        w = state[f"{key}.weight"]
        w = w.view(w.shape[0], h.shape[1], s.kernel, s.kernel)
        h = F.relu(F.conv2d(h, w, state[f"{key}.bias"]))
        out[s.name] = h
    return out


# ---------------------------------------------------------------- SpeedPaper's FCN


def vgg16_bn_features(width: float = 1.0) -> nn.Sequential:
    """A vgg16_bn ``features`` as torchvision's (any ``width``): conv, BatchNorm, ReLU; pools.

    Built here (torchvision is not a dependency), indices as torchvision's: convs at 0, 3, 7,
    10, ..., each BatchNorm right after its conv, a MaxPool ending each block (6, 13, 23, 33, 43).
    """
    layers: list[nn.Module] = []
    in_ch = 3
    for block in VGG16_BLOCKS:
        for s in block:
            out_ch = scaled(s.features, width)
            layers += [nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.BatchNorm2d(out_ch), nn.ReLU()]
            in_ch = out_ch
        layers.append(nn.MaxPool2d(2, 2))
    return nn.Sequential(*layers)


# Slices of ``vgg16_bn().features`` that SpeedPaper's stage1 ... stage5 are. Slicing an
# nn.Sequential keeps the children's original names, so its state dicts say ``stage2.7.weight``
# (not ``stage2.0.weight``) for conv2_1: the keys carry the torchvision index.
SPEEDPAPER_STAGES = ((0, 7), (7, 14), (14, 24), (24, 34), (34, 44))


def bilinear_transposed(channels: int, kernel: int) -> torch.Tensor:
    """A ConvTranspose2d weight [C, C, k, k]: bilinear from channel i to channel i, zero else."""
    weight = np.zeros((channels, channels, kernel, kernel), np.float32)
    weight[np.arange(channels), np.arange(channels)] = bilinear_kernel(kernel)
    return torch.from_numpy(weight)


class TorchSpeedPaperFCN(nn.Module):
    """SpeedPaper's FCN (``Segmentation/FCN/tools/FCN.py``) in PyTorch, NCHW, its names.

    Written from the description in issue 15, to mirror :class:`fcn_jax.models.speedpaper.
    SpeedPaperFCN`: ``stage1`` ... ``stage5`` slice a vgg16_bn ``features``; the stride-32
    features are upsampled 2x (learnable transposed conv, bilinear at init) and added to
    stage4's, reduced to 256 channels by ``conv_trans1``, upsampled 2x and added to stage3's,
    scored by ``conv_trans2`` and upsampled 8x. Attributes are declared in SpeedPaper's order,
    so ``state_dict()`` lists its keys in the order its checkpoints do; ``scores1`` ...
    ``scores3`` exist (its checkpoints hold them) but ``forward`` never calls them.

    Args:
        n_class: classes of the output.
        width: hidden channel multiplier (1.0 is SpeedPaper's network).
    """

    def __init__(self, n_class: int = 21, width: float = 1.0) -> None:
        super().__init__()
        features = vgg16_bn_features(width)
        for i, (start, stop) in enumerate(SPEEDPAPER_STAGES, start=1):
            setattr(self, f"stage{i}", features[start:stop])
        c128, c256, c512 = (scaled(c, width) for c in (128, 256, 512))
        self.scores1 = nn.Conv2d(c512, n_class, 1)
        self.scores2 = nn.Conv2d(c512, n_class, 1)
        self.scores3 = nn.Conv2d(c128, n_class, 1)
        self.conv_trans1 = nn.Conv2d(c512, c256, 1)
        self.conv_trans2 = nn.Conv2d(c256, n_class, 1)
        self.upsample_8x = nn.ConvTranspose2d(n_class, n_class, 16, 8, 4, bias=False)
        self.upsample_2x_1 = nn.ConvTranspose2d(c512, c512, 4, 2, 1, bias=False)
        self.upsample_2x_2 = nn.ConvTranspose2d(c256, c256, 4, 2, 1, bias=False)
        with torch.no_grad():
            for up in (self.upsample_8x, self.upsample_2x_1, self.upsample_2x_2):
                up.weight.copy_(bilinear_transposed(up.in_channels, up.kernel_size[0]))

    @classmethod
    def from_spec(cls, spec: NetSpec) -> TorchSpeedPaperFCN:
        """The reference of a ``speedpaper`` :class:`~fcn_jax.models.NetSpec`."""
        if spec.arch != SPEEDPAPER:
            raise ValueError(f"TorchSpeedPaperFCN is arch {SPEEDPAPER!r}, not {spec.arch!r}")
        return cls(spec.n_class, spec.width)

    def forward(
        self, x: torch.Tensor, intermediates: dict[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Logits [N, n_class, H, W] for images [N, 3, H, W], H and W multiples of 32.

        Fills ``intermediates`` if given, with the names the Flax model sows (``s1`` ... ``s5``,
        ``add1``, ``trans1``, ``add2``, ``trans2``, ``upsample_8x``).
        """
        inter = {} if intermediates is None else intermediates
        h = x
        for i in range(1, 6):
            h = inter[f"s{i}"] = getattr(self, f"stage{i}")(h)
        h = inter["add1"] = self.upsample_2x_1(inter["s5"]) + inter["s4"]
        h = inter["trans1"] = self.conv_trans1(h)
        h = inter["add2"] = self.upsample_2x_2(h) + inter["s3"]
        h = inter["trans2"] = self.conv_trans2(h)
        h = inter["upsample_8x"] = self.upsample_8x(h)
        return h


def random_speedpaper_state_dict(
    n_class: int = 21, width: float = 1.0, seed: int = 0
) -> dict[str, torch.Tensor]:
    """A SpeedPaper-layout state dict with random values in *every* tensor.

    Convolutions and transposed convolutions He-random (the upsampling kernels neither bilinear
    nor symmetric, so a missing flip shows), biases small; BatchNorm's affine random around
    (1, 0) and its running statistics far from the defaults (means around 0 with std 0.3,
    variances in [0.5, 2]), so that evaluation-mode normalisation is tested, not skipped;
    ``num_batches_tracked`` a random count; ``scores1`` ... ``scores3`` random too.
    """
    return random_module_state(TorchSpeedPaperFCN(n_class, width), seed)


def random_module_state(model: nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random values for *every* tensor of ``model``'s state dict, its keys and shapes.

    Convolution, transposed convolution and linear weights He-random (fan-in; a transposed
    convolution's counts the taps that reach one output pixel), biases small, BatchNorm as
    :func:`_random_batch_norm` (affine around (1, 0), statistics far from (0, 1)).
    """
    gen = torch.Generator().manual_seed(seed)
    modules = dict(model.named_modules())
    state = {}
    for key, value in model.state_dict().items():
        module = modules[key.rsplit(".", 1)[0]]
        leaf = key.rsplit(".", 1)[1]
        shape = value.shape
        if isinstance(module, nn.BatchNorm2d):
            state[key] = _random_batch_norm(leaf, shape, gen)
        elif leaf == "bias":
            state[key] = (torch.rand(shape, generator=gen) - 0.5) * 0.2
        else:
            if isinstance(module, nn.ConvTranspose2d):
                fan_in = shape[0] * (shape[2] / module.stride[0]) ** 2  # taps per output pixel
            else:
                fan_in = value[0].numel()
            state[key] = torch.randn(shape, generator=gen) * np.sqrt(2.0 / fan_in)
    return state


def _random_batch_norm(leaf: str, shape: torch.Size, gen: torch.Generator) -> torch.Tensor:
    """One random BatchNorm2d tensor: affine around (1, 0), statistics far from (0, 1)."""
    if leaf == "weight":
        return 0.5 + torch.rand(shape, generator=gen)
    if leaf == "bias":
        return (torch.rand(shape, generator=gen) - 0.5) * 0.2
    if leaf == "running_mean":
        return torch.randn(shape, generator=gen) * 0.3
    if leaf == "running_var":
        return 0.5 + 1.5 * torch.rand(shape, generator=gen)
    return torch.randint(1, 10_000, (), generator=gen)  # num_batches_tracked


# ---------------------------------------------------------------- torchvision's FCN-ResNets


def import_torchvision() -> types.ModuleType:
    """Import torchvision, also where its compiled operators cannot be loaded.

    torchvision's model classes are plain Python, but its package ``__init__`` imports
    ``torchvision._meta_registrations``, which registers "meta" kernels for its C++ detection
    operators (``nms``, ``roi_align``, ...) and raises where those operators were never
    loaded: torchvision 0.28.0 beside the CPU build of torch 2.13.0 ("operator torchvision::nms
    does not exist"), whose ``_C`` library does not load (torchvision's own ``extension``
    module tolerates that; only this registration module does not). Where the library does not
    load, an empty module stands in for ``torchvision._meta_registrations`` (there is nothing
    to register those kernels on) and the package imports as usual; where it loads, nothing
    is changed. Segmentation and classification models use none of these operators.

    Raises:
        ImportError: torchvision is not installed (saying how to install it).
    """
    imported = sys.modules.get("torchvision")
    if imported is not None and hasattr(imported, "models"):
        return imported
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "torchvision is needed for the FCN-ResNet references: beside torch==2.13.0, "
            "pip install --no-deps torchvision==0.28.0"
        )
    if not _torchvision_ops_load(Path(next(iter(spec.submodule_search_locations)))):
        name = "torchvision._meta_registrations"
        stand_in = types.ModuleType(name, "(empty: torchvision's C++ operators did not load)")
        sys.modules.setdefault(name, stand_in)
    import torchvision

    return torchvision


def _torchvision_ops_load(package: Path) -> bool:
    """Whether torchvision's ``_C`` operator library loads (as its ``extension`` module tries)."""
    finder = importlib.machinery.FileFinder(
        str(package),
        (importlib.machinery.ExtensionFileLoader, importlib.machinery.EXTENSION_SUFFIXES),
    )
    found = finder.find_spec("_C")
    if found is None or found.origin is None:
        return False
    try:
        torch.ops.load_library(found.origin)
    except (ImportError, OSError):
        return False
    return True


def _narrow_resnet(backbone: str, width: float, dilation: tuple[bool, bool, bool]) -> nn.Module:
    """The ``ResNet`` of torchvision with every hidden channel count scaled by ``width``.

    ``ResNet.__init__`` types in the stem's 64 channels and the stages' planes; this sets the
    same attributes with those numbers scaled (as :func:`~fcn_jax.models.backbones.vgg16.
    scaled`) and builds the stages with torchvision's own ``_make_layer`` (strides, the
    dilations, the shortcut projections) and ``Bottleneck``; ``forward`` is torchvision's.
    """
    from torchvision.models.resnet import Bottleneck, ResNet

    net = ResNet.__new__(ResNet)
    nn.Module.__init__(net)
    net._norm_layer = nn.BatchNorm2d
    net.inplanes = scaled(STEM_CHANNELS, width)
    net.dilation = 1
    net.groups = 1
    net.base_width = 64
    net.conv1 = nn.Conv2d(3, net.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
    net.bn1 = nn.BatchNorm2d(net.inplanes)
    net.relu = nn.ReLU(inplace=True)
    net.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
    for i, (planes, blocks) in enumerate(zip(STAGE_PLANES, DEPTHS[backbone], strict=True)):
        options = {} if i == 0 else {"stride": 2, "dilate": dilation[i - 1]}
        layer = net._make_layer(Bottleneck, scaled(planes, width), blocks, **options)
        setattr(net, f"layer{i + 1}", layer)
    net.avgpool = nn.AdaptiveAvgPool2d((1, 1))
    net.fc = nn.Linear(scaled(STAGE_PLANES[-1], width) * EXPANSION, 1000)
    return net


def torchvision_resnet(
    backbone: str = "resnet50",
    width: float = 1.0,
    dilation: tuple[bool, bool, bool] = SEGMENTATION_DILATION,
) -> nn.Module:
    """The ImageNet ``resnet50`` / ``resnet101`` of torchvision (random init), any ``width``.

    Full width: ``torchvision.models.resnet50(weights=None, replace_stride_with_dilation=...)``
    itself; narrower: the same classes with scaled channel counts (:func:`_narrow_resnet`).
    The dilations default to the segmentation backbone's (the ImageNet checkpoints load into
    either: dilation has no weights).
    """
    tv = import_torchvision()
    if width == 1.0:
        build = getattr(tv.models, backbone)
        return build(weights=None, replace_stride_with_dilation=list(dilation))
    return _narrow_resnet(backbone, width, dilation)


def torchvision_fcn_resnet(
    arch: str = "fcn_resnet50",
    n_class: int = 21,
    aux: bool = False,
    width: float = 1.0,
    assemble: bool = False,
) -> nn.Module:
    """The ``fcn_resnet50`` / ``fcn_resnet101`` of torchvision (random init), any ``width``.

    Full width: ``torchvision.models.segmentation.fcn_resnet50(weights=None,
    weights_backbone=None, num_classes=n_class, aux_loss=aux)`` itself. Narrower (or with
    ``assemble``, to test the assembly against the builder): what its ``_fcn_resnet`` builds,
    from torchvision's own ``IntermediateLayerGetter``, ``FCNHead`` and ``FCN`` on
    :func:`torchvision_resnet`, the heads' input channels scaled.
    """
    tv = import_torchvision()
    from torchvision.models._utils import IntermediateLayerGetter
    from torchvision.models.segmentation.fcn import FCN, FCNHead

    if width == 1.0 and not assemble:
        build = getattr(tv.models.segmentation, arch)
        return build(weights=None, weights_backbone=None, num_classes=n_class, aux_loss=aux)
    resnet = torchvision_resnet(RESNET_ARCHS[arch], width)
    return_layers = {HEADS["out"][1]: "out"} | ({HEADS[AUX_HEAD][1]: AUX_HEAD} if aux else {})
    channels = {f"layer{i}": scaled(p, width) * EXPANSION for i, p in enumerate(STAGE_PLANES, 1)}
    return FCN(
        IntermediateLayerGetter(resnet, return_layers=return_layers),
        FCNHead(channels["layer4"], n_class),
        FCNHead(channels["layer3"], n_class) if aux else None,
    )


def torchvision_maps(net: nn.Module, x: torch.Tensor) -> tuple[Any, dict[str, torch.Tensor]]:
    """Run a torchvision FCN-ResNet or ResNet trunk on ``x``, keeping its intermediate maps.

    Forward hooks record what the Flax model sows: ``stem`` (after the max pool),
    ``layer1`` ... ``layer4`` and, for an FCN, ``classifier`` / ``aux_classifier`` (scores
    before the resize). A bare ResNet runs up to layer4 (its ``avgpool`` and ``fc`` are not
    part of a segmentation backbone).

    Returns:
        (the FCN's output dict, or layer4 for a ResNet; the maps, NCHW).
    """
    maps: dict[str, torch.Tensor] = {}
    trunk = getattr(net, "backbone", net)
    watched = {
        "stem": trunk.maxpool,
        **{f"layer{i}": getattr(trunk, f"layer{i}") for i in range(1, 5)},
    }
    for scope, _ in HEADS.values():
        if getattr(net, scope, None) is not None:
            watched[scope] = getattr(net, scope)
    hooks = [
        module.register_forward_hook(lambda _m, _i, out, name=name: maps.__setitem__(name, out))
        for name, module in watched.items()
    ]
    try:
        if trunk is net:  # a classification ResNet: its trunk only
            h = net.maxpool(net.relu(net.bn1(net.conv1(x))))
            for i in range(1, 5):
                h = getattr(net, f"layer{i}")(h)
            return h, maps
        return net(x), maps
    finally:
        for hook in hooks:
            hook.remove()


def random_fcn_resnet_state_dict(
    arch: str = "fcn_resnet50",
    n_class: int = 21,
    aux: bool = False,
    width: float = 1.0,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """A torchvision FCN-ResNet state dict, random in every tensor (:func:`random_module_state`).

    The residual branches' last BatchNorms scaled down (:func:`_tame_residuals`).
    """
    return _tame_residuals(
        random_module_state(torchvision_fcn_resnet(arch, n_class, aux, width), seed)
    )


def random_resnet_state_dict(
    backbone: str = "resnet50", width: float = 1.0, seed: int = 0
) -> dict[str, torch.Tensor]:
    """A torchvision ImageNet ResNet state dict (``fc`` included), random in every tensor.

    The residual branches' last BatchNorms scaled down (:func:`_tame_residuals`).
    """
    return _tame_residuals(random_module_state(torchvision_resnet(backbone, width), seed))


def _tame_residuals(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each Bottleneck's ``bn3`` scale and shift divided by 4, as trained ResNets' are small.

    With :func:`_random_batch_norm`'s scales around 1 every residual branch adds as much as its
    input holds, and ResNet-101's 23 blocks in layer3 take the activations to ~1e6; a quarter
    keeps them within ~1e3 while every branch still adds a visible part.
    """
    for key in state:
        if ".bn3." in key and key.endswith((".weight", ".bias")):
            state[key] = state[key] / 4
    return state


def torch_model(spec: NetSpec) -> nn.Module:
    """The PyTorch reference of any :class:`~fcn_jax.models.NetSpec` (eval mode is the caller's).

    ``speedpaper``: :class:`TorchSpeedPaperFCN`; ``fcn_resnet50`` / ``fcn_resnet101``:
    torchvision's own model (:func:`torchvision_fcn_resnet`); the paper's variants:
    :class:`TorchFCN`.
    """
    if spec.arch in RESNET_ARCHS:
        return torchvision_fcn_resnet(spec.arch, spec.n_class, spec.aux, spec.width)
    if spec.arch == SPEEDPAPER:
        return TorchSpeedPaperFCN.from_spec(spec)
    return TorchFCN.from_spec(spec)


def main(argv: list[str] | None = None) -> None:
    """``python -m fcn_jax.torch_reference --out F.pth``: write a random torchfcn checkpoint."""
    import argparse

    p = argparse.ArgumentParser(description="Write a torchfcn-layout checkpoint, random weights.")
    p.add_argument("--out", required=True)
    p.add_argument("--arch", default="fcn8s")
    p.add_argument("--n-class", type=int, default=21)
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    state = random_state_dict(args.arch, args.n_class, args.width, args.seed)
    torch.save({"model_state_dict": state, "arch": get_variant(args.arch).torch_name}, args.out)
    print(f"wrote random {args.arch} (width {args.width:g}, {args.n_class} classes) to {args.out}")


if __name__ == "__main__":
    main()
