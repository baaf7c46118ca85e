"""What every dataset is: a random-access source of records, checked as they are read.

A *record* is a dict with

- one or more *image keys* (:attr:`SegmentationDataset.image_keys`): ``image`` ([H, W, 3] uint8
  RGB) and whatever other image-like inputs a dataset declares (NYUDv2's ``hha`` depth
  encoding), each [H, W, 3] uint8;
- ``label`` ([H, W] uint8 class indices, :data:`IGNORE_LABEL` (255) = void) and possibly more
  *label keys* (``label_geo``, SIFT Flow's geometric classes), each with its own class count;
- ``id``: the sample's id in its split (the file stem), used to name outputs.

Datasets implement ``__len__`` and ``__getitem__``, so grain reads them directly as a
``RandomAccessDataSource``.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fcn_jax.errors import FCNError
from fcn_jax.resources import voc_palette

IGNORE_LABEL = 255
DEFAULT_IMAGE_KEYS = ("image",)  # the per-pixel inputs of a record unless its dataset declares more
Record = dict[str, Any]


class SegmentationDataset(abc.ABC):
    """A split of a segmentation dataset.

    Subclasses set :attr:`ids` and :attr:`class_names` and implement :meth:`load`.

    Attributes:
        name: dataset name (the key of ``DATASETS``).
        image_keys: the record keys that may hold [H, W, 3] uint8 network inputs (streams); a
            record needs at least one. RGB ``image`` unless a dataset declares others.
        split: split name or list file it was built from.
        ids: sample ids, in split order.
        class_names: one name per class index.
    """

    name: str = "dataset"
    image_keys: tuple[str, ...] = DEFAULT_IMAGE_KEYS

    def __init__(self, split: str, ids: Sequence[str], class_names: Sequence[str]) -> None:
        self.split = split
        self.ids = list(ids)
        self.class_names = tuple(class_names)

    @property
    def n_class(self) -> int:
        """Number of classes (void excluded)."""
        return len(self.class_names)

    @property
    def label_classes(self) -> dict[str, tuple[str, ...]]:
        """Class names of every label key (``label`` -> :attr:`class_names` unless overridden)."""
        return {"label": self.class_names}

    @property
    def palette(self) -> np.ndarray:
        """[256, 3] uint8 colours for label maps (VOC's colour map unless a dataset has its own)."""
        return voc_palette()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> Record:
        sample_id = self.ids[index]
        record = self.load(sample_id)
        files = ", ".join(map(str, self.files(sample_id)))
        where = f"{self.name} {sample_id}" + (f" ({files})" if files else "")
        classes = {k: len(v) for k, v in self.label_classes.items()}
        validate_record(record, classes, where=where, image_keys=self.image_keys)
        return record

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(split={self.split!r}, {len(self)} images, "
            f"{self.n_class} classes)"
        )

    def files(self, sample_id: str) -> tuple[Path, ...]:
        """The files a sample is read from (named in errors); none for generated data."""
        del sample_id
        return ()

    @abc.abstractmethod
    def load(self, sample_id: str) -> Record:
        """Read one record (unchecked; ``__getitem__`` checks it)."""


def validate_record(
    record: Record,
    n_classes: int | dict[str, int],
    where: str,
    image_keys: Sequence[str] = DEFAULT_IMAGE_KEYS,
) -> None:
    """Check a record's images and labels; errors name ``where`` (the sample and its files).

    Args:
        record: the record.
        n_classes: class count of ``label``, or of each label key.
        where: description of the sample for error messages.
        image_keys: the keys that may hold images (its dataset's
            :attr:`SegmentationDataset.image_keys`).

    Raises:
        FCNError: no image key, an image not [H, W, 3] uint8, a label not [H, W] uint8 of the
            images' size, or label values outside [0, n) and 255.
    """
    if isinstance(n_classes, int):
        n_classes = {"label": n_classes}
    images = {k: record[k] for k in image_keys if k in record}
    if not images:
        raise FCNError(f"{where}: record has none of the image keys {tuple(image_keys)}")
    size = None
    for key, image in images.items():
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise FCNError(f"{where}: {key} must be HxWx3 uint8, got {image.shape} {image.dtype}")
        if size is not None and image.shape[:2] != size:
            raise FCNError(f"{where}: {key} is {image.shape[:2]} but the other input is {size}")
        size = image.shape[:2]
    for key, n_class in n_classes.items():
        label = record[key]
        if label.ndim != 2 or label.dtype != np.uint8:
            raise FCNError(f"{where}: {key} must be HxW uint8, got {label.shape} {label.dtype}")
        if label.shape != size:
            raise FCNError(
                f"{where}: {key} is {label.shape[0]}x{label.shape[1]} but its image is "
                f"{size[0]}x{size[1]}; label and image must have the same size"
            )
        values = np.unique(label)
        bad = values[(values >= n_class) & (values != IGNORE_LABEL)]
        if bad.size:
            raise FCNError(
                f"{where}: {key} values {bad.tolist()[:10]} are outside [0, {n_class}) and "
                f"{IGNORE_LABEL} (void); is this the right dataset, class count or label file?"
            )


def require_dir(path: Path, what: str, layout: str) -> Path:
    """``path`` if it is a directory, else an error that prints the expected layout."""
    if not path.is_dir():
        raise FCNError(f"{what} not found: {path} is not a directory. Expected layout:\n{layout}")
    return path


def require_files(paths: Sequence[Path], what: str, limit: int = 5) -> None:
    """Fail if any of ``paths`` is missing, naming the first few."""
    missing = [p for p in paths if not p.is_file()]
    if missing:
        shown = "\n  ".join(map(str, missing[:limit]))
        more = f"\n  ... and {len(missing) - limit} more" if len(missing) > limit else ""
        raise FCNError(f"{len(missing)} {what} listed in the split are missing:\n  {shown}{more}")


def config_root(config: Any, holds: str = "") -> Path:
    """``config.data.root``, expanded; unset, an error saying how to set it.

    Args:
        config: the experiment config.
        holds: what the folder should hold, for the message (default: the dataset's name).
    """
    root = config.data.get("root")
    if not root:
        raise FCNError(
            "config.data.root is not set: pass --config.data.root=DIR, the folder holding "
            + (holds or f"the {config.data.name} dataset as downloaded")
        )
    return Path(root).expanduser()
