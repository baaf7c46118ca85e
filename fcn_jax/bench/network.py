"""One benchmark network in both frameworks, its inputs and its training recipe.

Both frameworks get the network of one random torchfcn-layout state dict
(:func:`fcn_jax.torch_reference.random_state_dict`, converted to Flax by
:func:`fcn_jax.convert.torchfcn_to_variables`) and the same seeded NumPy inputs.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import numpy as np

from fcn_jax.bench.plan import Case
from fcn_jax.bench.timing import model_dtype
from fcn_jax.configs import base
from fcn_jax.types import PyTree

LEARNING_RATE = 1e-10  # the release's FCN-32s rate: the weights barely move between repeats
VOID_FRACTION = 0.05  # share of void (255) labels in the synthetic targets


@dataclasses.dataclass
class Network:
    """One network in both frameworks, same weights.

    Attributes:
        variant: FCN variant.
        width_mult: hidden channel multiplier.
        n_class: classes.
        variables: Flax variables (``{"params": ...}``) on JAX's device.
        torch_model: the :class:`~fcn_jax.torch_reference.TorchFCN` on torch's device (or None).
    """

    variant: str
    width_mult: float
    n_class: int
    variables: dict[str, PyTree]
    torch_model: Any


def build_network(
    variant: str, width_mult: float, n_class: int, seed: int, torch_device: str | None
) -> Network:
    """Random torchfcn weights in every layer, loaded by torch and converted to Flax."""
    from fcn_jax.convert import TorchWeights
    from fcn_jax.convert.torchfcn import torchfcn_to_variables
    from fcn_jax.torch_reference import TorchFCN, random_state_dict

    state = random_state_dict(variant, n_class, width_mult, seed)
    source = TorchWeights(
        Path(f"<random {variant} width {width_mult:g}>"),
        "torchfcn",
        {k: v.numpy() for k, v in state.items()},
    )
    variables = jax.device_put(torchfcn_to_variables(source, variant, n_class))
    model = None
    if torch_device is not None:
        model = TorchFCN(variant, n_class, width_mult)
        model.load_state_dict(state)
        model.to(torch_device)
    return Network(variant, width_mult, n_class, variables, model)


def make_inputs(case: Case, n_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded images [B, H, W, 3] uint8 RGB and labels [B, H, W] int32 (5% void, 255)."""
    rng = np.random.default_rng([seed, case.height, case.width, case.batch])
    shape = (case.batch, case.height, case.width)
    images = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    labels = rng.integers(0, n_class, shape, dtype=np.int32)
    labels[rng.random(shape) < VOID_FRACTION] = 255
    return images, labels


def train_config(case: Case, n_class: int) -> Any:
    """The release's recipe (SGD, momentum 0.99, weight decay 5e-4, biases 2x, summed loss)."""
    c = base()
    c.model.arch = case.variant
    c.model.n_class = n_class
    c.model.width = case.width_mult
    c.dtype = model_dtype(case.dtype)
    c.learning_rate = LEARNING_RATE
    return c
