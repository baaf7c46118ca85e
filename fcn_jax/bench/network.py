"""One benchmark network in both frameworks, its inputs and its training recipe.

Both frameworks get the network of one random PyTorch state dict, converted to Flax by the
converter of its source, and the same seeded NumPy inputs:

- the paper's variants: a torchfcn-layout state dict
  (:func:`fcn_jax.torch_reference.random_state_dict`) in :class:`~fcn_jax.torch_reference.
  TorchFCN`, converted by :func:`fcn_jax.convert.torchfcn_to_variables`;
- ``fcn_resnet50`` / ``fcn_resnet101``: torchvision's own model (without the auxiliary head,
  as inference runs it), random in every tensor, BatchNorm statistics included
  (:func:`~fcn_jax.torch_reference.random_fcn_resnet_state_dict`);
- ``speedpaper``: :class:`~fcn_jax.torch_reference.TorchSpeedPaperFCN`, likewise
  (:func:`~fcn_jax.torch_reference.random_speedpaper_state_dict`).

The networks other than the paper's take torchvision's preprocessing, as their weights do.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import numpy as np

from fcn_jax.bench.plan import Case
from fcn_jax.bench.timing import model_dtype
from fcn_jax.configs import base, spec_from_config
from fcn_jax.models import VARIANTS, NetSpec
from fcn_jax.models.spec import RESNET_ARCHS, SPEEDPAPER
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

    @property
    def spec(self) -> NetSpec:
        """The network's :class:`~fcn_jax.models.NetSpec` (float32; a case sets its dtype)."""
        return bench_spec(self.variant, self.width_mult, self.n_class)


def bench_spec(variant: str, width_mult: float, n_class: int, dtype: str = "float32") -> NetSpec:
    """The spec bench.py runs for a variant: :func:`train_config`'s network."""
    case = Case(variant, "forward", 1, 1, 1, dtype, width_mult)
    return spec_from_config(train_config(case, n_class))


def build_network(
    variant: str, width_mult: float, n_class: int, seed: int, torch_device: str | None
) -> Network:
    """Random weights in every layer, loaded by torch and converted to Flax (module docstring)."""
    from fcn_jax.convert import TorchWeights
    from fcn_jax.convert.sources import SOURCES, detect_kind
    from fcn_jax.convert.torchfcn import FLAG_OPTIONS
    from fcn_jax.torch_reference import (
        TorchFCN,
        random_fcn_resnet_state_dict,
        random_speedpaper_state_dict,
        random_state_dict,
        torch_model,
    )

    spec = bench_spec(variant, width_mult, n_class)
    if variant in VARIANTS:
        state = random_state_dict(variant, n_class, width_mult, seed)
    elif variant in RESNET_ARCHS:
        state = random_fcn_resnet_state_dict(variant, n_class, spec.aux, width_mult, seed)
    else:
        state = random_speedpaper_state_dict(n_class, width_mult, seed)
    path = Path(f"<random {variant} width {width_mult:g}>")
    numpy_state = {k: v.numpy() for k, v in state.items()}
    source = TorchWeights(path, detect_kind(path, set(numpy_state)), numpy_state)
    converted = SOURCES[source.kind].convert(source, variant, n_class, FLAG_OPTIONS)
    if converted.spec.replace(preprocessing=spec.preprocessing) != spec:
        raise AssertionError(f"bench's network {spec} is not the converted {converted.spec}")
    variables = jax.device_put(converted.variables)
    model = None
    if torch_device is not None:
        model = TorchFCN(variant, n_class, width_mult) if variant in VARIANTS else torch_model(spec)
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
    """The release's recipe (SGD, momentum 0.99, weight decay 5e-4, biases 2x, summed loss).

    The same recipe for every network, the FCN-ResNets and SpeedPaper's FCN included (on
    their own backbone, with torchvision's preprocessing; SpeedPaper's upsampling learns), so
    that a ratio measures the frameworks, not two recipes.
    """
    c = base()
    c.model.arch = case.variant
    if case.variant in RESNET_ARCHS or case.variant == SPEEDPAPER:
        c.model.backbone = RESNET_ARCHS.get(case.variant, "vgg16_bn")
        c.data.preprocessing = "torchvision"
        c.model.learn_upsampling = case.variant == SPEEDPAPER
    c.model.n_class = n_class
    c.model.width = case.width_mult
    c.dtype = model_dtype(case.dtype)
    c.learning_rate = LEARNING_RATE
    return c
