"""torchfcn FCN checkpoints <-> Flax FCN params, every tensor copied (upsampling kernels too)."""

from __future__ import annotations

import numpy as np
from flax import traverse_util

from fcn_jax.convert.layout import to_flax, to_torch, torch_key
from fcn_jax.convert.torch_files import TorchWeights
from fcn_jax.errors import FCNError
from fcn_jax.models import FCN, VARIANTS, abstract_params
from fcn_jax.strict import check_keys_and_shapes
from fcn_jax.types import PyTree

# torchfcn class names (its checkpoints' ``arch``) and our own names -> variant.
ARCH_ALIASES = {spec.torch_name.lower(): name for name, spec in VARIANTS.items()} | {
    name: name for name in VARIANTS
}


def variant_from_arch_entry(arch: str) -> str | None:
    """The variant a checkpoint's ``arch`` entry names, or None if unknown."""
    return ARCH_ALIASES.get(arch.lower())


def guess_variant(keys: set[str]) -> str:
    """The variant family a set of torchfcn keys looks like (for error messages)."""
    if "upscore8.weight" in keys:
        return "fcn8s or fcn8s-atonce"
    if "upscore16.weight" in keys:
        return "fcn16s"
    if "upscore.weight" in keys:
        return "fcn32s"
    return "no FCN variant"


def infer_width(src: TorchWeights, key: str, base: int = 64) -> float:
    """Width multiplier from the output channels of the first conv (64 at width 1)."""
    return src.state[key].shape[0] / base


def torchfcn_to_flax(src: TorchWeights, variant: str, n_class: int | None = None) -> PyTree:
    """Convert a torchfcn checkpoint into Flax params of ``variant``.

    Args:
        src: the checkpoint, ``kind == "torchfcn"``.
        variant: the FCN variant (fcn8s and fcn8s-atonce share keys, so this decides).
        n_class: expected class count; must agree with the checkpoint's score_fr if given.

    Returns:
        The Flax params (numpy arrays), every layer copied from the checkpoint.

    Raises:
        FCNError: arch entry, class count, keys or shapes disagree with ``variant``.
    """
    if src.arch is not None:
        named = variant_from_arch_entry(src.arch)
        if named is not None and named != variant:
            raise FCNError(
                f"{src.path} says arch={src.arch!r} ({named}) but --arch is {variant}: "
                f"pass --arch {named}"
            )
    found_classes = src.state["score_fr.weight"].shape[0]
    if n_class is not None and n_class != found_classes:
        raise FCNError(
            f"{src.path} has {found_classes} classes (score_fr.weight is "
            f"{tuple(src.state['score_fr.weight'].shape)}) but --n-class is {n_class}"
        )
    width = infer_width(src, "conv1_1.weight")
    model = FCN(variant=variant, n_class=found_classes, width=width)
    expected = {
        torch_key(path): _torch_shape(torch_key(path), leaf.shape)
        for path, leaf in traverse_util.flatten_dict(abstract_params(model)).items()
    }
    what = f"an {variant} (width {width:g}, {found_classes} classes)"
    found = set(src.state)
    if set(expected) != found:
        what += f"; its keys look like {guess_variant(found)}"
    check_keys_and_shapes(str(src.path), src.shapes(), expected, what)
    flat = {
        path: to_flax(torch_key(path), src.state[torch_key(path)])
        for path in traverse_util.flatten_dict(abstract_params(model))
    }
    return traverse_util.unflatten_dict(flat)


def flax_to_torchfcn(params: PyTree) -> dict[str, np.ndarray]:
    """Flax FCN params -> torchfcn state dict (numpy), loadable strictly by torchfcn's classes."""
    return {
        torch_key(path): to_torch(torch_key(path), np.asarray(leaf))
        for path, leaf in traverse_util.flatten_dict(params).items()
    }


def _torch_shape(key: str, flax_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Shape the torch tensor of ``key`` must have for a Flax param of ``flax_shape``."""
    return tuple(to_torch(key, np.empty(flax_shape, np.float32)).shape)
