"""PASCAL VOC 2011/2012 segmentation and the Semantic Boundaries Dataset (SBD).

The paper's PASCAL protocol (Long, Shelhamer & Darrell, section 4.2) trains on SBD's ``train``
images (8498 of them, Hariharan et al.) and validates on ``seg11valid``: the 736 VOC 2011
segmentation ``val`` images that are not in SBD ``train``, so the two never overlap. torchfcn's
``SBDClassSeg`` and ``VOC2011ClassSeg`` do the same. Configs therefore name one dataset,
``voc``, and :func:`pascal` dispatches on the split:

- ``sbd_train`` / ``sbd_val``: :class:`SBDSegmentation` with split ``train`` / ``val``;
- anything else (``seg11valid``, ``train``, ``val``, ``trainval`` or a path to a list file):
  :class:`VOCSegmentation`.

Both read from one root (``config.data.root``), laid out as the datasets unpack::

    <root>/
      VOCdevkit/VOC2012/            (or VOC2011/)
        JPEGImages/<id>.jpg
        SegmentationClass/<id>.png  palette PNG, values = class indices, 255 = void
        ImageSets/Segmentation/{train,val,trainval}.txt
      benchmark_RELEASE/dataset/
        img/<id>.jpg
        cls/<id>.mat                struct GTcls, field Segmentation: uint8 class indices
        {train,val}.txt

Records are ``{"image": [H, W, 3] uint8 RGB, "label": [H, W] uint8, "id": str}`` over the 21
VOC classes (background first); see :mod:`fcn_jax.data.base`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fcn_jax.data.base import Record, SegmentationDataset, require_dir, require_files
from fcn_jax.data.io import (
    check_label_values,
    orient_label,
    read_image_oriented,
    read_index_png,
    read_mat_field,
)
from fcn_jax.data.splits import resolve_split, shipped_split_dir
from fcn_jax.errors import FCNError
from fcn_jax.resources import voc_class_names

# Both trees live under one root, so a missing-root error shows both: the user may have
# unpacked only one of them, or pointed at the wrong level (e.g. at VOCdevkit itself).
LAYOUT = """\
<root>/
  VOCdevkit/VOC2012/            (or VOC2011/)
    JPEGImages/<id>.jpg
    SegmentationClass/<id>.png
    ImageSets/Segmentation/{train,val,trainval}.txt
  benchmark_RELEASE/dataset/    (SBD, for the sbd_train / sbd_val splits)
    img/<id>.jpg
    cls/<id>.mat
    {train,val}.txt"""

VOC_YEARS = (2012, 2011)  # searched in this order when no year is given
SBD_SPLITS = {"sbd_train": "train", "sbd_val": "val"}  # pascal() split name -> SBD split


def _require_listed_files(
    ids: Sequence[str], dirs_exts: Sequence[tuple[Path, str, str]], split_file: Path
) -> None:
    """Fail at construction, naming the files, if any listed id lacks an image or label.

    Checking up front costs one ``stat`` per file (milliseconds for VOC) and turns a crash hours
    into training into an immediate error that names the split list that asked for the file.
    """
    for directory, ext, what in dirs_exts:
        try:
            require_files([directory / f"{i}{ext}" for i in ids], what)
        except FCNError as e:
            raise FCNError(f"{e}\n(ids from split list {split_file})") from None


def _find_devkit(root: Path, year: int | None) -> Path:
    """The ``VOCdevkit/VOC<year>`` directory: ``year``'s, else the newest present."""
    require_dir(root, "PASCAL VOC root", LAYOUT)
    devkits = require_dir(root / "VOCdevkit", "VOCdevkit", LAYOUT)
    if year is not None:
        return require_dir(devkits / f"VOC{year}", f"PASCAL VOC {year}", LAYOUT)
    for y in VOC_YEARS:
        if (devkits / f"VOC{y}").is_dir():
            return devkits / f"VOC{y}"
    names = " or ".join(f"VOC{y}" for y in VOC_YEARS)
    raise FCNError(f"{devkits} holds neither {names}. Expected layout:\n{LAYOUT}")


class VOCSegmentation(SegmentationDataset):
    """A PASCAL VOC 2011/2012 segmentation split, read from ``VOCdevkit/VOC20xx``.

    Labels are the palette PNGs of ``SegmentationClass``, read as indices (0..20, 255 void).

    Attributes:
        devkit: the ``VOCdevkit/VOC20xx`` directory read.
        split_file: the list file the ids came from.
    """

    name = "voc"

    def __init__(
        self, root: str | Path, split: str = "seg11valid", year: int | None = None
    ) -> None:
        """Find the devkit and split list and check every listed file exists.

        Args:
            root: the folder holding ``VOCdevkit/`` (see the module docstring).
            split: a split name or a path to a list file. Names are looked up in the devkit's
                ``ImageSets/Segmentation`` first, then in the lists shipped with the package
                (``seg11valid``), so a user's own copy of a list wins.
            year: 2011 or 2012 to read that devkit; ``None`` takes VOC2012 if present, else
                VOC2011.

        Raises:
            FCNError: missing root or devkit (with the expected layout), unknown split (with
                the known ones), or listed ids whose image or label is missing.
        """
        self.devkit = _find_devkit(Path(root), year)
        self.split_file, ids = resolve_split(
            split, [self.devkit / "ImageSets" / "Segmentation", shipped_split_dir("voc")]
        )
        _require_listed_files(
            ids,
            [
                (self.devkit / "JPEGImages", ".jpg", "images"),
                (self.devkit / "SegmentationClass", ".png", "labels"),
            ],
            self.split_file,
        )
        super().__init__(split, ids, voc_class_names())

    def files(self, sample_id: str) -> tuple[Path, Path]:
        """(image, label) paths of a sample."""
        return (
            self.devkit / "JPEGImages" / f"{sample_id}.jpg",
            self.devkit / "SegmentationClass" / f"{sample_id}.png",
        )

    def load(self, sample_id: str) -> Record:
        """Read one sample.

        Returns:
            ``image`` [H, W, 3] uint8 RGB, ``label`` [H, W] uint8 indices, ``id``.
        """
        image_path, label_path = self.files(sample_id)
        image, orientation = read_image_oriented(image_path)
        label = orient_label(read_index_png(label_path), orientation)
        return {"image": image, "label": label, "id": sample_id}


class SBDSegmentation(SegmentationDataset):
    """A split of the Semantic Boundaries Dataset (Hariharan et al.), ``benchmark_RELEASE``.

    Labels are ``GTcls.Segmentation`` of ``cls/<id>.mat``: uint8 class indices 0..20 (SBD has
    no void label; the VOC class indices are the same).

    Attributes:
        dataset_dir: the ``benchmark_RELEASE/dataset`` directory read.
        split_file: the list file the ids came from.
    """

    name = "sbd"

    def __init__(self, root: str | Path, split: str = "train") -> None:
        """Find the dataset and split list and check every listed file exists.

        Args:
            root: the folder holding ``benchmark_RELEASE/`` (see the module docstring).
            split: ``train``, ``val`` (lists in ``benchmark_RELEASE/dataset``) or a path to a
                list file.

        Raises:
            FCNError: missing root or dataset (with the expected layout), unknown split, or
                listed ids whose image or label is missing.
        """
        root = require_dir(Path(root), "SBD root", LAYOUT)
        self.dataset_dir = require_dir(
            root / "benchmark_RELEASE" / "dataset", "SBD benchmark_RELEASE/dataset", LAYOUT
        )
        self.split_file, ids = resolve_split(split, [self.dataset_dir])
        _require_listed_files(
            ids,
            [
                (self.dataset_dir / "img", ".jpg", "images"),
                (self.dataset_dir / "cls", ".mat", "labels"),
            ],
            self.split_file,
        )
        super().__init__(split, ids, voc_class_names())

    def files(self, sample_id: str) -> tuple[Path, Path]:
        """(image, label) paths of a sample."""
        return (
            self.dataset_dir / "img" / f"{sample_id}.jpg",
            self.dataset_dir / "cls" / f"{sample_id}.mat",
        )

    def load(self, sample_id: str) -> Record:
        """Read one sample.

        Returns:
            ``image`` [H, W, 3] uint8 RGB, ``label`` [H, W] uint8 indices, ``id``.
        """
        image_path, path = self.files(sample_id)
        image, orientation = read_image_oriented(image_path)
        label = check_label_values(
            read_mat_field(path, "GTcls", "Segmentation"),
            path,
            "GTcls.Segmentation",
            0,
            255,
            "class indices 0..20, 255 = void",
        ).astype(np.uint8)
        return {"image": image, "label": orient_label(label, orientation), "id": sample_id}


def pascal(root: str | Path, split: str, year: int | None = None) -> SegmentationDataset:
    """The ``voc`` dataset of configs: SBD for ``sbd_train`` / ``sbd_val``, VOC otherwise.

    Args:
        root: the folder holding ``VOCdevkit/`` and ``benchmark_RELEASE/``.
        split: ``sbd_train``, ``sbd_val``, a VOC split name (``seg11valid``, ``train``, ``val``,
            ``trainval``) or a path to a VOC list file.
        year: the VOC devkit year (ignored for SBD splits).

    Returns:
        An :class:`SBDSegmentation` or :class:`VOCSegmentation`.
    """
    if split in SBD_SPLITS:
        return SBDSegmentation(root, SBD_SPLITS[split])
    try:
        return VOCSegmentation(root, split, year)
    except FCNError as e:
        # resolve_split only knows the VOC lists; name the SBD splits too so the user sees
        # every split this dataset takes.
        if str(e).startswith("unknown split"):
            raise FCNError(f"{e}. The voc dataset also takes {', '.join(SBD_SPLITS)}") from None
        raise
