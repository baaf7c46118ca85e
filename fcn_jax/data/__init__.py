"""Datasets (records of image, label, id), split lists and the input pipeline.

``DATASETS`` maps the names configs use (``config.data.name``) to constructors
``(config, split) -> SegmentationDataset``.
"""

from __future__ import annotations

from collections.abc import Callable

import ml_collections

from fcn_jax.data import camvid, coco, context, folder, nyud, siftflow, tfds
from fcn_jax.data.base import IGNORE_LABEL, Record, SegmentationDataset, config_root
from fcn_jax.data.synthetic import SyntheticSegmentation
from fcn_jax.data.voc import SBDSegmentation, pascal
from fcn_jax.errors import FCNError


def _voc(config: ml_collections.ConfigDict, split: str) -> SegmentationDataset:
    return pascal(
        config_root(config, "VOCdevkit/ and benchmark_RELEASE/"), split, config.data.get("year")
    )


def _sbd(config: ml_collections.ConfigDict, split: str) -> SegmentationDataset:
    return SBDSegmentation(config_root(config, "VOCdevkit/ and benchmark_RELEASE/"), split)


def _synthetic(config: ml_collections.ConfigDict, split: str) -> SegmentationDataset:
    d = config.data
    if config.model.get("n_class") is None:  # generated data has the classes it is asked for
        raise FCNError(
            "synthetic data draws config.model.n_class classes, and this config leaves it unset "
            "(it takes the count from its own data): pass --config.model.n_class=N"
        )
    return SyntheticSegmentation(
        split=split,
        n_class=config.model.n_class,
        num_images=d.get("num_images") or 64,
        min_size=d.get("min_size") or 48,
        max_size=d.get("max_size") or 64,
        modalities=tuple(d.get("modalities") or ("image",)),
        geometric=len(config.model.get("heads") or ()) > 1,
    )


DATASETS: dict[str, Callable[[ml_collections.ConfigDict, str], SegmentationDataset]] = {
    "voc": _voc,  # VOC devkit splits (seg11valid, train, val...) and sbd_train / sbd_val
    "sbd": _sbd,
    "synthetic": _synthetic,
    "nyud": nyud.make,  # data.modalities: ("image",), ("hha",) or ("image", "hha")
    "siftflow": siftflow.make,  # label (33 semantic classes) and label_geo (3 geometric)
    "context": context.make,  # PASCAL-Context, 59 classes + background
    "coco_voc": coco.make,  # COCO 2017 as VOC's 21 classes (torchvision's FCN-ResNet data)
    "camvid": camvid.make,  # the seed's CamVid, classes from class_dict.csv
    "folder": folder.make,  # users' own images + colour labels or index masks
    "tfds": tfds.make,  # TensorFlow Datasets with masks (extra "tfds"), data.tfds_name
}


def make_dataset(config: ml_collections.ConfigDict, split: str) -> SegmentationDataset:
    """The dataset ``config.data.name`` for ``split`` (a split name or a list file)."""
    name = config.data.name
    if name not in DATASETS:
        raise FCNError(f"unknown dataset {name!r} (config.data.name); known: {sorted(DATASETS)}")
    return DATASETS[name](config, split)


__all__ = [
    "DATASETS",
    "IGNORE_LABEL",
    "Record",
    "SegmentationDataset",
    "SyntheticSegmentation",
    "make_dataset",
]
