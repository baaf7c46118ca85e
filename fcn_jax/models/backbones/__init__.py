"""Backbones: the feature extractors an FCN head taps, by name.

A backbone is a Flax module class with

- ``__call__(x [N, H, W, 3], *, train) -> {feature name: [N, h, w, C]}``;
- where the paper's head can stand on it (VGG16): ``TAPS``, output stride -> the feature a
  head reads there (the paper's head scores the stride-32 map and fuses skips from the
  stride-16 and stride-8 ones), and ``coord_maps() -> {feature name: CoordMap}``, each
  feature's input -> output coordinate map, from which the head derives its crop offsets
  (nothing is typed in). The ResNets have neither: their head is torchvision's ``FCNHead``
  (:mod:`fcn_jax.models.fcn_resnet`), and :class:`~fcn_jax.models.NetSpec` pairs each head
  with the backbones it stands on;
- the attributes ``width``, ``dtype``, ``dropout_rate``, ``suffix`` (appended to its layer
  names, for multi-stream nets) and ``conv_impl``;
- with BatchNorm: ``BATCH_NORM = True`` and the attributes ``freeze_bn`` and ``bn_axis_name``
  (:class:`~fcn_jax.models.norm.BatchNorm`), its statistics in the ``batch_stats`` collection.

Adding a backbone means one module here and one entry in :data:`BACKBONES` (and a converter for
its weights in :mod:`fcn_jax.convert`).
"""

from __future__ import annotations

from typing import Any

from fcn_jax.models.backbones.resnet import ResNet50, ResNet101
from fcn_jax.models.backbones.vgg16 import VGG16, VGG16BN

BACKBONES: dict[str, Any] = {
    "vgg16": VGG16,
    "vgg16_bn": VGG16BN,
    "resnet50": ResNet50,
    "resnet101": ResNet101,
}


def get_backbone(name: str) -> Any:
    """The backbone module class called ``name``; an unknown name lists the valid ones."""
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}") from None
