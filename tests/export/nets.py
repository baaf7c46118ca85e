"""The networks the export tests run: every arch, a two-stream and a two-head net, narrow."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

from fcn_jax.checkpoint import WeightsMetadata, save_weights
from fcn_jax.models import NetSpec, random_variables
from fcn_jax.preprocessing import (
    CAFFE_VOC,
    NYUD_HHA,
    NYUD_RGB,
    SIFTFLOW,
    SPEEDPAPER_GREY,
    TORCHVISION,
)
from fcn_jax.resources import default_class_names

NARROW = 0.0625


def _names(n: int, prefix: str) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}" for i in range(n))


# name -> (NetSpec fields, WeightsMetadata fields besides spec and class names)
CASES = {
    "fcn32s": ({"arch": "fcn32s"}, {}),
    "fcn16s": ({"arch": "fcn16s"}, {}),
    "fcn8s": ({"arch": "fcn8s"}, {}),
    "fcn8s-atonce": ({"arch": "fcn8s-atonce"}, {}),
    # SpeedPaper's grey preprocessing: luma and padding to multiples of 32 in the graph.
    "speedpaper": (
        {"arch": "speedpaper", "backbone": "vgg16_bn", "preprocessing": (SPEEDPAPER_GREY,)},
        {"palette": tuple((i, 2 * i, 255 - i) for i in range(21))},
    ),
    "fcn_resnet50": (
        {"arch": "fcn_resnet50", "backbone": "resnet50", "preprocessing": (TORCHVISION,)},
        {"eval_resize": 48},
    ),
    "fcn_resnet101": (
        {"arch": "fcn_resnet101", "backbone": "resnet101", "preprocessing": (TORCHVISION,)},
        {"eval_resize": 48},
    ),
    # NYUDv2 RGB-HHA late fusion: two inputs, one head of 40 classes.
    "nyud_rgbhha": (
        {
            "arch": "fcn32s",
            "heads": (("out", 40),),
            "streams": ("color", "hha"),
            "inputs": ("image", "hha"),
            "preprocessing": (NYUD_RGB, NYUD_HHA),
        },
        {},
    ),
    # SIFT Flow: one input, two heads (33 semantic, 3 geometric classes).
    "siftflow": (
        {"arch": "fcn16s", "heads": (("sem", 33), ("geo", 3)), "preprocessing": (SIFTFLOW,)},
        {"head_class_names": (_names(3, "geo"),)},
    ),
}


def case_metadata(name: str, width: float = NARROW) -> WeightsMetadata:
    """The metadata of case ``name`` (default class names)."""
    fields, extra = CASES[name]
    fields = {"heads": (("out", 21),), "preprocessing": (CAFFE_VOC,), **fields}
    spec = NetSpec(width=width, **fields)
    names = default_class_names(spec.n_class) if spec.n_class == 21 else _names(spec.n_class, "c")
    return WeightsMetadata(spec, names, **extra)


def lively_variables(spec: NetSpec, seed: int = 0) -> dict:
    """:func:`random_variables` with every zero-initialised layer random and BatchNorm's running
    statistics away from (0, 1), so that no part of the graph is a no-op."""
    rng = np.random.default_rng(seed)
    variables = random_variables(spec, seed)

    def perturb(path, leaf):
        leaf = np.asarray(leaf)
        name = jax.tree_util.keystr(path)
        if "mean" in name:
            return rng.normal(0, 0.3, leaf.shape).astype(np.float32)
        if "var" in name:
            return rng.uniform(0.5, 2, leaf.shape).astype(np.float32)
        if not leaf.any():  # score layers, biases
            std = 0.1 if leaf.ndim == 1 else np.sqrt(2 / np.prod(leaf.shape[:-1]))
            return rng.normal(0, std, leaf.shape).astype(np.float32)
        return leaf

    return jax.tree_util.tree_map_with_path(perturb, variables)


def save_case(directory: Path, name: str, width: float = NARROW) -> tuple[Path, dict]:
    """A weights directory of case ``name`` with :func:`lively_variables`; and the variables."""
    metadata = case_metadata(name, width)
    variables = lively_variables(metadata.spec)
    save_weights(directory, variables, metadata)
    return directory, variables
