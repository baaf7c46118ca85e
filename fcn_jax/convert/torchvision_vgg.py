"""torchvision VGG16 state dict -> the FCN init of any variant.

The trunk is copied (fc6/fc7 reshaped from the classifier), score layers start at zero and the
upsampling kernels bilinear, as the release's ``surgery.transplant`` + ``interp`` produce.
"""

from __future__ import annotations

import numpy as np
from flax import traverse_util

from fcn_jax.convert.layout import conv_to_flax, conv_to_torch, linear_to_conv
from fcn_jax.convert.torch_files import TorchWeights
from fcn_jax.convert.torchfcn import infer_width
from fcn_jax.models import NetSpec, abstract_variables, initial_head_params
from fcn_jax.models.backbones.vgg16 import TORCHVISION_CONVS, TORCHVISION_FC, TORCHVISION_UNUSED
from fcn_jax.preprocessing import TORCHVISION
from fcn_jax.strict import check_keys_and_shapes
from fcn_jax.types import PyTree


def recognises(keys: set[str]) -> bool:
    """A torchvision VGG: ``features.N.*`` and ``classifier.N.*`` keys."""
    return any(k.startswith("features.") for k in keys) and any(
        k.startswith("classifier.") for k in keys
    )


def _expected_shapes(trunk: PyTree) -> dict[str, tuple[int, ...]]:
    """Torchvision key -> shape, for a Flax trunk (``params["vgg16"]``) of some width."""
    shapes = {}
    for prefix, layer in (TORCHVISION_CONVS | TORCHVISION_FC).items():
        kernel = trunk[layer]["kernel"].shape  # [k, k, I, O]
        weight = tuple(conv_to_torch(np.empty(kernel, np.float32)).shape)
        if prefix in TORCHVISION_FC:  # stored as Linear [O, I * k * k]
            weight = (weight[0], int(np.prod(weight[1:])))
        shapes[f"{prefix}.weight"] = weight
        shapes[f"{prefix}.bias"] = tuple(trunk[layer]["bias"].shape)
    return shapes


def vgg16_to_fcn(src: TorchWeights, variant: str, n_class: int = 21) -> tuple[PyTree, NetSpec]:
    """Build the initial params of an FCN from a torchvision VGG16.

    Args:
        src: the VGG16 weights, ``kind == "torchvision_vgg16"`` (any width).
        variant: the FCN variant to initialise.
        n_class: number of classes of the new score layers.

    Returns:
        Flax params (trunk from the VGG16; head as :func:`~fcn_jax.models.initial_head_params`)
        and the network they belong to (torchvision's RGB [0, 1] ImageNet input).
    """
    width = infer_width(src, "features.0.weight")
    spec = NetSpec.single(variant, n_class, width=width, preprocessing=(TORCHVISION,))
    abstract = abstract_variables(spec)["params"]
    check_keys_and_shapes(
        str(src.path),
        src.shapes(),
        _expected_shapes(abstract["vgg16"]),
        f"a VGG16 trunk of width {width:g}",
        ignore=TORCHVISION_UNUSED,
    )
    trunk = {}
    for prefix, layer in TORCHVISION_CONVS.items():
        trunk[layer] = {"kernel": conv_to_flax(src.state[f"{prefix}.weight"])}
    for prefix, layer in TORCHVISION_FC.items():
        kernel_shape = abstract["vgg16"][layer]["kernel"].shape
        trunk[layer] = {
            "kernel": linear_to_conv(
                src.state[f"{prefix}.weight"], kernel_shape[2], kernel_shape[0]
            )
        }
    for prefix, layer in (TORCHVISION_CONVS | TORCHVISION_FC).items():
        trunk[layer]["bias"] = src.state[f"{prefix}.bias"]
    head = {
        k: {n: np.asarray(v) for n, v in leaves.items()}
        for k, leaves in initial_head_params(spec, abstract).items()
    }
    params = {"vgg16": trunk, **head}
    # Same tree structure as the model's, checked once more for safety.
    assert set(traverse_util.flatten_dict(params)) == set(traverse_util.flatten_dict(abstract))
    return params, spec
