"""FCN models: the VGG16 trunk, the FCN head and the building blocks they share."""

from fcn_jax.models.fcn import (
    FCN,
    MODELS,
    VARIANTS,
    VariantSpec,
    abstract_params,
    crop_offsets,
    get_variant,
    init_params,
    initial_head_params,
    make_forward,
    random_params,
)

__all__ = [
    "FCN",
    "MODELS",
    "VARIANTS",
    "VariantSpec",
    "abstract_params",
    "crop_offsets",
    "get_variant",
    "init_params",
    "initial_head_params",
    "make_forward",
    "random_params",
]
