"""TensorFlow Datasets with segmentation masks, read as fcn-jax records (optional extra ``tfds``).

Users with internet get a real dataset without a manual download: ``config.data.name = "tfds"``,
``config.data.tfds_name = "oxford_iiit_pet"``, ``config.data.root`` the TFDS data directory
(None: TFDS's default). Records are read through ``tfds.data_source`` (random access over
ArrayRecord files, which grain reads directly); TFDS prepares the dataset in that format on
first use.

Each dataset's mask convention lives in :data:`PRESETS`: which feature holds the mask and how
its values map to class indices (255 = void). A dataset without a preset works too when its
masks already hold class indices: give ``data.tfds_mask_key`` and ``model.n_class``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from fcn_jax.data.base import IGNORE_LABEL, Record, SegmentationDataset
from fcn_jax.errors import FCNError


@dataclasses.dataclass(frozen=True)
class Preset:
    """How one TFDS dataset stores its segmentation.

    Attributes:
        mask_key: the feature holding the [H, W, 1] mask.
        class_names: the classes, in index order.
        mapping: mask value -> class index or 255 (void); values not listed are void.
            None: mask values are class indices already.
        image_key: the feature holding the RGB image.
    """

    mask_key: str
    class_names: tuple[str, ...]
    mapping: dict[int, int] | None = None
    image_key: str = "image"

    def lookup(self) -> np.ndarray | None:
        """[256] uint8 table applying :attr:`mapping` (None when the values are indices)."""
        if self.mapping is None:
            return None
        table = np.full(256, IGNORE_LABEL, np.uint8)
        for value, index in self.mapping.items():
            table[value] = index
        return table


CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)  # fmt: skip
# Cityscapes label ids of the 19 evaluated classes, in train-id order; every other id is void.
CITYSCAPES_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)

PRESETS: dict[str, Preset] = {
    # Trimaps: 1 pet, 2 background, 3 border (ambiguous: void, as the dataset's authors score).
    "oxford_iiit_pet": Preset("segmentation_mask", ("background", "pet"), {1: 1, 2: 0, 3: 255}),
    "cityscapes": Preset(
        "segmentation_label",
        CITYSCAPES_CLASSES,
        {label_id: i for i, label_id in enumerate(CITYSCAPES_IDS)},
        image_key="image_left",
    ),
}


def import_tfds() -> Any:
    """Import tensorflow_datasets, or say how to install it."""
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise FCNError(
            "TFDS datasets need tensorflow-datasets: pip install 'fcn-jax[tfds]'"
        ) from None
    return tfds


class TFDSSegmentation(SegmentationDataset):
    """A split of a TFDS dataset with segmentation masks.

    Args:
        tfds_name: the TFDS name, e.g. ``oxford_iiit_pet``.
        split: a TFDS split (``train``, ``test``, ``train[:90%]``, ...).
        data_dir: TFDS data directory (None: TFDS's default).
        mask_key: the mask feature of a dataset without a preset.
        n_class: class count of a dataset without a preset (masks hold indices).
    """

    name = "tfds"

    def __init__(
        self,
        tfds_name: str,
        split: str,
        data_dir: str | None = None,
        mask_key: str | None = None,
        n_class: int | None = None,
    ) -> None:
        tfds = import_tfds()
        if tfds_name in PRESETS:
            self.preset = PRESETS[tfds_name]
        elif mask_key and n_class:
            self.preset = Preset(mask_key, tuple(f"class_{i}" for i in range(n_class)))
        else:
            raise FCNError(
                f"no preset for TFDS dataset {tfds_name!r} (presets: {sorted(PRESETS)}): give "
                "config.data.tfds_mask_key and model.n_class for masks that hold class indices"
            )
        try:
            self.source = tfds.data_source(
                tfds_name,
                split=split,
                data_dir=data_dir,
                builder_kwargs={"file_format": "array_record"},
            )
        except Exception as e:  # TFDS raises many types: unknown name, split, download failure
            raise FCNError(f"TFDS could not open {tfds_name!r} split {split!r}: {e}") from None
        self.tfds_name = tfds_name
        self._lookup = self.preset.lookup()
        super().__init__(split, [str(i) for i in range(len(self.source))], self.preset.class_names)

    def load(self, sample_id: str) -> Record:
        """Read example ``sample_id`` (its index in the split) and map its mask to classes."""
        example = self.source[int(sample_id)]
        for key in (self.preset.image_key, self.preset.mask_key):
            if key not in example:
                raise FCNError(
                    f"{self.tfds_name} example {sample_id} has no feature {key!r} "
                    f"(features: {sorted(example)})"
                )
        image = np.asarray(example[self.preset.image_key], np.uint8)
        mask = np.asarray(example[self.preset.mask_key])
        if mask.ndim == 3 and mask.shape[2] == 1:
            mask = mask[..., 0]
        if mask.ndim != 2 or mask.min(initial=0) < 0 or mask.max(initial=0) > 255:
            raise FCNError(
                f"{self.tfds_name} example {sample_id}: mask {self.preset.mask_key!r} must be "
                f"HxW(x1) values 0..255, got {mask.shape} {mask.dtype}"
            )
        mask = mask.astype(np.uint8)
        label = mask if self._lookup is None else self._lookup[mask]
        name = example.get("file_name")
        sample = name.decode() if isinstance(name, bytes) else (name or sample_id)
        return {"image": image, "label": label, "id": str(sample)}


def make(config: Any, split: str) -> SegmentationDataset:
    """``DATASETS["tfds"]``: ``data.tfds_name``, ``data.root`` as the TFDS data directory."""
    d = config.data
    name = d.get("tfds_name")
    if not name:
        raise FCNError(
            "config.data.tfds_name is not set: e.g. --config.data.tfds_name=oxford_iiit_pet"
        )
    return TFDSSegmentation(
        name, split, d.get("root"), d.get("tfds_mask_key"), config.model.get("n_class")
    )
