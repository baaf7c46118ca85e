"""torchvision VGG16 / VGG16-BN state dict -> the FCN init of any variant.

The trunk is copied (fc6/fc7 reshaped from the classifier), score layers start at zero and the
upsampling kernels bilinear, as the release's ``surgery.transplant`` + ``interp`` produce.
torchvision's ``vgg16_bn`` (BatchNorm after every 3x3 convolution, at the next ``features``
index) becomes the ``vgg16_bn`` backbone: its BatchNorms' affine parameters go to ``params``,
their running statistics to ``batch_stats``; ``num_batches_tracked`` is torch's alone (ignored).
"""

from __future__ import annotations

import numpy as np
from flax import traverse_util

from fcn_jax.convert.layout import NUM_BATCHES_TRACKED, conv_to_flax, linear_to_conv, torch_shape
from fcn_jax.convert.torch_files import TORCHVISION_VGG16_BN, TorchWeights
from fcn_jax.convert.torchfcn import infer_width
from fcn_jax.errors import FCNError
from fcn_jax.models import NetSpec, abstract_variables, initial_head_params
from fcn_jax.models.backbones.vgg16 import (
    TORCHVISION_FC,
    TORCHVISION_UNUSED,
    torchvision_convs,
)
from fcn_jax.models.spec import SPEEDPAPER
from fcn_jax.preprocessing import TORCHVISION
from fcn_jax.strict import check_keys_and_shapes
from fcn_jax.types import PyTree

# BatchNorm2d's state dict entries -> (Flax collection, leaf).
BN_ENTRIES = {
    "weight": ("params", "scale"),
    "bias": ("params", "bias"),
    "running_mean": ("batch_stats", "mean"),
    "running_var": ("batch_stats", "var"),
}


def _is_vgg(keys: set[str]) -> bool:
    return any(k.startswith("features.") for k in keys) and any(
        k.startswith("classifier.") for k in keys
    )


def has_batch_norm(keys: set[str]) -> bool:
    """Whether a torchvision VGG's ``features`` hold BatchNorms (running statistics)."""
    return any(k.startswith("features.") and k.endswith(".running_mean") for k in keys)


def recognises(keys: set[str]) -> bool:
    """A torchvision VGG16: ``features.N.*`` and ``classifier.N.*`` keys, no BatchNorm."""
    return _is_vgg(keys) and not has_batch_norm(keys)


def recognises_bn(keys: set[str]) -> bool:
    """A torchvision VGG16-BN: as VGG16, plus BatchNorm running statistics in ``features``."""
    return _is_vgg(keys) and has_batch_norm(keys)


def _expected_shapes(trunk: PyTree, batch_norm: bool) -> dict[str, tuple[int, ...]]:
    """Torchvision key -> shape, for a Flax trunk (``params["vgg16"]``) of some width."""
    shapes = {}
    table = torchvision_convs(batch_norm)
    for prefix, layer in (table | TORCHVISION_FC).items():
        if layer not in trunk:  # fc6 / fc7 of a trunk without them (SpeedPaper's)
            continue
        if "kernel" not in trunk[layer]:  # a BatchNorm
            channels = tuple(trunk[layer]["scale"].shape)
            shapes |= {f"{prefix}.{entry}": channels for entry in BN_ENTRIES}
            continue
        weight = torch_shape(f"{layer}.weight", trunk[layer]["kernel"].shape)  # [O, I, k, k]
        if prefix in TORCHVISION_FC:  # stored as Linear [O, I * k * k]
            weight = (weight[0], int(np.prod(weight[1:])))
        shapes[f"{prefix}.weight"] = weight
        shapes[f"{prefix}.bias"] = tuple(trunk[layer]["bias"].shape)
    return shapes


def vgg16_to_fcn(
    src: TorchWeights, variant: str, n_class: int = 21
) -> tuple[dict[str, PyTree], NetSpec]:
    """Build the initial variables of an FCN from a torchvision VGG16 or VGG16-BN.

    Args:
        src: the VGG weights, ``kind`` ``torchvision_vgg16`` or ``torchvision_vgg16_bn`` (any
            width).
        variant: the FCN variant to initialise, or ``speedpaper`` (SpeedPaper's FCN, from a
            VGG16-BN only: its ``features``; the classifier is not used).
        n_class: number of classes of the new score layers.

    Returns:
        Flax variables (``{"params": ...}``, plus ``"batch_stats"`` for VGG16-BN; trunk from the
        VGG; head as :func:`~fcn_jax.models.initial_head_params`) and the network they belong
        to (backbone ``vgg16`` or ``vgg16_bn``; torchvision's RGB [0, 1] ImageNet input).

    Raises:
        FCNError: a key missing or unexpected, or a shape that does not fit (``features.N``
            names each).
    """
    batch_norm = src.kind == TORCHVISION_VGG16_BN
    backbone = "vgg16_bn" if batch_norm else "vgg16"
    width = infer_width(src, "features.0.weight")
    speedpaper = variant == SPEEDPAPER
    if speedpaper and not batch_norm:
        raise FCNError(
            f"{src.path} is a VGG16 without BatchNorm; SpeedPaper's FCN stands on a VGG16-BN "
            "(torchvision's vgg16_bn weights)"
        )
    spec = NetSpec.single(
        variant,
        n_class,
        width=width,
        backbone=backbone,
        preprocessing=(TORCHVISION,),
        learn_upsampling=speedpaper,  # SpeedPaper's transposed convolutions learn
    )
    abstract = abstract_variables(spec)
    params_abstract = abstract["params"]
    found = {k: s for k, s in src.shapes().items() if not k.endswith(f".{NUM_BATCHES_TRACKED}")}
    check_keys_and_shapes(
        str(src.path),
        found,
        _expected_shapes(params_abstract[backbone], batch_norm),
        f"a {'VGG16-BN' if batch_norm else 'VGG16'} trunk of width {width:g}",
        # SpeedPaper's FCN has no fc6 / fc7: the whole classifier goes unused.
        ignore=(*TORCHVISION_UNUSED, *(TORCHVISION_FC if speedpaper else ())),
    )
    trunk: dict[str, dict[str, np.ndarray]] = {}
    stats: dict[str, dict[str, np.ndarray]] = {}
    convs = torchvision_convs(batch_norm)
    for prefix, layer in convs.items():
        if layer.startswith("conv"):
            trunk[layer] = {
                "kernel": conv_to_flax(src.state[f"{prefix}.weight"]),
                "bias": src.state[f"{prefix}.bias"],
            }
            continue
        # A BatchNorm (bn1_1 ...): affine parameters and running statistics.
        for entry, (collection, leaf) in BN_ENTRIES.items():
            target = trunk if collection == "params" else stats
            target.setdefault(layer, {})[leaf] = src.state[f"{prefix}.{entry}"]
    for prefix, layer in () if speedpaper else TORCHVISION_FC.items():
        kernel_shape = params_abstract[backbone][layer]["kernel"].shape
        trunk[layer] = {
            "kernel": linear_to_conv(
                src.state[f"{prefix}.weight"], kernel_shape[2], kernel_shape[0]
            ),
            "bias": src.state[f"{prefix}.bias"],
        }
    head = {
        k: {n: np.asarray(v) for n, v in leaves.items()}
        for k, leaves in initial_head_params(spec, params_abstract).items()
    }
    variables: dict[str, PyTree] = {"params": {backbone: trunk, **head}}
    if batch_norm:
        variables["batch_stats"] = {backbone: stats}
    # Same tree structure as the model's, checked once more for safety.
    assert set(traverse_util.flatten_dict(variables)) == set(traverse_util.flatten_dict(abstract))
    return variables, spec
