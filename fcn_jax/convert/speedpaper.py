"""SpeedPaper's FCN state dicts <-> Flax variables of ``arch="speedpaper"``, every tensor copied.

SpeedPaper (``hanknewbird/SpeedPaper``, ``Segmentation/FCN``) saves its FCN two ways: a bare
``state_dict`` as ``<epoch>.pth`` (first version) and ``{"CustomNet": state_dict}`` as
``<tag>_<epoch>e_<miou>.pkl`` (second); :func:`~fcn_jax.convert.torch_files.read_torch_weights`
unwraps both. The keys are those of its module:

- ``stage1`` ... ``stage5`` slice torchvision's ``vgg16_bn().features``; slicing an
  ``nn.Sequential`` keeps the children's names, so each key carries the torchvision index:
  ``stage1.0.weight`` (conv1_1), ``stage1.1.running_mean`` (its BatchNorm), ...,
  ``stage2.7.weight`` (conv2_1), ..., ``stage5.40.weight`` (conv5_3);
- ``upsample_2x_1``, ``upsample_2x_2``, ``upsample_8x``: ``ConvTranspose2d`` weights
  [in, out, k, k] (:func:`~fcn_jax.convert.layout.deconv_to_flax`);
- ``conv_trans1``, ``conv_trans2``: 1x1 convolutions;
- ``scores1`` ... ``scores3``: 1x1 convolutions its ``forward`` never calls. Accepted, named in
  a warning and dropped; written back as zeros by :func:`flax_to_speedpaper` so that torch's
  strict loading still works.

BatchNorm: ``weight`` -> ``params/scale``, ``bias`` -> ``params/bias``, ``running_mean`` ->
``batch_stats/mean``, ``running_var`` -> ``batch_stats/var``; ``num_batches_tracked`` (torch's
count of training batches, which no computation reads) is ignored on import and written as 0.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from flax import traverse_util

from fcn_jax.convert.layout import conv_to_flax, conv_to_torch, deconv_to_flax, deconv_to_torch
from fcn_jax.convert.torch_files import TorchWeights
from fcn_jax.convert.torchfcn import FLAG_OPTIONS, infer_width
from fcn_jax.errors import FCNError, format_list, warn
from fcn_jax.models import NetSpec, abstract_variables
from fcn_jax.models.backbones.vgg16 import torchvision_convs
from fcn_jax.models.spec import SPEEDPAPER
from fcn_jax.models.speedpaper import BACKBONE, CONV_TRANS, UNUSED, UPSAMPLERS
from fcn_jax.preprocessing import TORCHVISION, Preprocessing
from fcn_jax.strict import check_keys_and_shapes
from fcn_jax.types import PyTree

# Where SpeedPaper's stages slice ``vgg16_bn().features``: [:7], [7:14], [14:24], [24:34], [34:].
STAGE_STARTS = (0, 7, 14, 24, 34)
NUM_BATCHES_TRACKED = "num_batches_tracked"
FIRST_CONV = "stage1.0.weight"  # gives the width (64 output channels at width 1)
SCORE = "conv_trans2.weight"  # gives the class count
# torch leaf -> (Flax collection, leaf) of a BatchNorm.
BN_LEAVES = {
    "weight": ("params", "scale"),
    "bias": ("params", "bias"),
    "running_mean": ("batch_stats", "mean"),
    "running_var": ("batch_stats", "var"),
}


def stage_of(index: int) -> int:
    """The SpeedPaper stage (1 ... 5) holding ``vgg16_bn().features[index]``."""
    return sum(index >= start for start in STAGE_STARTS)


def recognises(keys: set[str]) -> bool:
    """SpeedPaper's FCN: ``stage1.*`` keys and its head (``conv_trans*``, ``upsample_*``)."""
    return any(k.startswith("stage1.") for k in keys) and any(
        k.startswith(("conv_trans", "upsample_2x_", "upsample_8x")) for k in keys
    )


def key_table() -> dict[str, tuple[str, tuple[str, ...], str]]:
    """SpeedPaper state-dict key -> (Flax collection, path in it, layout), for every tensor used.

    Layouts: ``conv`` (:func:`conv_to_flax`), ``deconv`` (:func:`deconv_to_flax`), ``copy``.
    ``num_batches_tracked`` and the unused ``scores*`` layers are not in the table.
    """
    table = {}
    for prefix, layer in torchvision_convs(batch_norm=True).items():
        index = int(prefix.removeprefix("features."))
        key = f"stage{stage_of(index)}.{index}"
        if layer.startswith("bn"):
            for leaf, (collection, flax_leaf) in BN_LEAVES.items():
                table[f"{key}.{leaf}"] = (collection, (BACKBONE, layer, flax_leaf), "copy")
        else:
            table[f"{key}.weight"] = ("params", (BACKBONE, layer, "kernel"), "conv")
            table[f"{key}.bias"] = ("params", (BACKBONE, layer, "bias"), "copy")
    for name in CONV_TRANS:
        table[f"{name}.weight"] = ("params", (name, "kernel"), "conv")
        table[f"{name}.bias"] = ("params", (name, "bias"), "copy")
    for name, *_ in UPSAMPLERS:
        table[f"{name}.weight"] = ("params", (name, "kernel"), "deconv")
    return table


_TO_FLAX = {"conv": conv_to_flax, "deconv": deconv_to_flax, "copy": np.asarray}
_TO_TORCH = {"conv": conv_to_torch, "deconv": deconv_to_torch, "copy": np.ascontiguousarray}


def spec_for(n_class: int, width: float, preprocessing: Preprocessing = TORCHVISION) -> NetSpec:
    """The network a SpeedPaper checkpoint converts into (learnable upsampling, as it trains)."""
    return NetSpec.single(
        SPEEDPAPER,
        n_class,
        backbone="vgg16_bn",
        width=width,
        learn_upsampling=True,
        preprocessing=(preprocessing,),
    )


def _require(src: TorchWeights, key: str, what: str) -> np.ndarray:
    if key not in src.state:
        raise FCNError(
            f"{src.path} looks like a SpeedPaper FCN state dict but lacks {key} ({what}); "
            f"its keys: {format_list(sorted(src.state))}"
        )
    return src.state[key]


def read_n_class(src: TorchWeights) -> int:
    """Classes of a SpeedPaper checkpoint: the output channels of ``conv_trans2``."""
    return int(_require(src, SCORE, "the 1x1 convolution that scores the classes").shape[0])


def _expected_shapes(spec: NetSpec) -> dict[str, tuple[int, ...]]:
    """SpeedPaper key -> the torch shape the Flax variables of ``spec`` need."""
    abstract = traverse_util.flatten_dict(abstract_variables(spec))
    return {
        key: tuple(_TO_TORCH[layout](np.empty(abstract[(collection, *path)].shape)).shape)
        for key, (collection, path, layout) in key_table().items()
    }


def speedpaper_to_flax(
    src: TorchWeights,
    arch: str = SPEEDPAPER,
    n_class: int | None = None,
    options: Mapping[str, str] = FLAG_OPTIONS,
) -> tuple[dict[str, PyTree], NetSpec]:
    """Convert a SpeedPaper FCN state dict into Flax variables.

    Args:
        src: the state dict (``kind == "speedpaper"``), of any width.
        arch: must be ``speedpaper`` (the caller's ``--arch``, checked here).
        n_class: expected class count, or None; must agree with ``conv_trans2``'s.
        options: how the user sets ``arch`` and ``n_class``, named in errors.

    Returns:
        (``{"params": ..., "batch_stats": ...}`` as numpy arrays, the network with torchvision's
        preprocessing, SpeedPaper's first version's).

    Raises:
        FCNError: another arch asked for, a class count that disagrees, a missing key (every
            BatchNorm key is required) or a shape that does not fit.
    """
    if arch != SPEEDPAPER:
        raise FCNError(
            f"{src.path} is a SpeedPaper FCN state dict (stage1.*, conv_trans*, upsample_*): "
            f"it converts to {options['arch']} {SPEEDPAPER} only, not {arch}"
        )
    checkpoint_classes = read_n_class(src)
    if n_class is not None and n_class != checkpoint_classes:
        shape = tuple(src.state[SCORE].shape)
        raise FCNError(
            f"{src.path} has {checkpoint_classes} classes ({SCORE} is {shape}) but "
            f"{options['n_class']} is {n_class}: use weights with {n_class} classes, or set "
            f"{options['n_class']} to {checkpoint_classes}"
        )
    _require(src, FIRST_CONV, "conv1_1, which gives the width")
    width = infer_width(src, FIRST_CONV)
    spec = spec_for(checkpoint_classes, width)
    found = {k: v for k, v in src.shapes().items() if not k.endswith(f".{NUM_BATCHES_TRACKED}")}
    ignore = tuple(f"{name}." for name in UNUSED)
    check_keys_and_shapes(
        str(src.path),
        found,
        _expected_shapes(spec),
        f"SpeedPaper's FCN (width {width:g}, {checkpoint_classes} classes)",
        ignore=ignore,
    )
    unused = sorted({k.split(".")[0] for k in found if k.startswith(ignore)})
    if unused:
        warn(
            f"{src.path}: {', '.join(unused)} (1x1 convolutions SpeedPaper's forward never "
            "calls) are unused: dropped"
        )
    flat = {
        (collection, *path): _TO_FLAX[layout](src.state[key])
        for key, (collection, path, layout) in key_table().items()
    }
    return traverse_util.unflatten_dict(flat), spec


def flax_to_speedpaper(variables: Mapping[str, PyTree]) -> dict[str, np.ndarray]:
    """Flax variables of a ``speedpaper`` network -> SpeedPaper's state dict (numpy).

    Loads with ``strict=True`` into SpeedPaper's module (and
    :class:`~fcn_jax.torch_reference.TorchSpeedPaperFCN`): ``scores1`` ... ``scores3`` are
    written as zeros and every ``num_batches_tracked`` as int64 0. Keys in SpeedPaper's order.
    """
    flat = traverse_util.flatten_dict(dict(variables))
    converted = {
        key: _TO_TORCH[layout](np.asarray(flat[(collection, *path)]))
        for key, (collection, path, layout) in key_table().items()
    }
    trunk = {k: v for k, v in converted.items() if k.startswith("stage")}
    state: dict[str, np.ndarray] = {}
    for key, value in trunk.items():
        state[key] = value
        if key.endswith(".running_var"):
            state[key.replace("running_var", NUM_BATCHES_TRACKED)] = np.zeros((), np.int64)
    n_class = converted[SCORE].shape[0]
    c512 = converted["conv_trans1.weight"].shape[1]  # stage 4/5 channels
    c128 = trunk["stage2.10.weight"].shape[0]  # conv2_2's output channels
    for name, channels in zip(UNUSED, (c512, c512, c128), strict=True):
        state[f"{name}.weight"] = np.zeros((n_class, channels, 1, 1), np.float32)
        state[f"{name}.bias"] = np.zeros((n_class,), np.float32)
    order = (*(f"{c}." for c in CONV_TRANS), "upsample_8x.", "upsample_2x_1.", "upsample_2x_2.")
    for prefix in order:  # SpeedPaper's __init__ order
        state |= {k: v for k, v in converted.items() if k.startswith(prefix)}
    return state
