"""FCN models: the network description (NetSpec), backbones, the FCN head and their blocks."""

from fcn_jax.models.fcn import FCN, VARIANTS, VariantSpec, crop_offsets, get_variant
from fcn_jax.models.spec import (
    NetSpec,
    abstract_variables,
    init_variables,
    initial_head_params,
    model_state,
    predict_fn,
    random_variables,
)

__all__ = [
    "FCN",
    "VARIANTS",
    "NetSpec",
    "VariantSpec",
    "abstract_variables",
    "crop_offsets",
    "get_variant",
    "init_variables",
    "initial_head_params",
    "model_state",
    "predict_fn",
    "random_variables",
]
