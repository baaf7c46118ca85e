"""Users' own data in a folder, in either of the two layouts the seed's PyTorch code read.

The layout is detected from what the root holds:

1. **Colour labels, as CamVid** (:mod:`fcn_jax.data.camvid`): ``<split>/`` images,
   ``<split>_labels/`` colour-coded PNGs, ``class_dict.csv`` naming the colours.
2. **Index masks**: ``images/<split>/*.jpg|png`` with ``masks/<split>/<stem>.png`` whose pixel
   values are the class indices (255 = void), as palette or greyscale PNGs. Class names come
   from ``classes.txt`` at the root (one per line, class 0 first) if present, else are
   ``class_<i>`` for the ``n_class`` the caller gives (``config.model.n_class``). If the root
   holds a ``class_dict.csv`` instead, the masks are read as colour-coded labels through it.

Images and labels pair by file stem; an unpaired file on either side is an error that names it.
With ``void_as_class`` (``config.data.void_as_class``) a ``class_dict.csv``'s void rows are
ordinary classes, as SpeedPaper trains CamVid; index masks keep 255 as void either way.
Single-channel (greyscale) images are read as three equal channels
(:func:`~fcn_jax.data.io.read_image`).
Records are ``{"image": [H, W, 3] uint8 RGB, "label": [H, W] uint8, "id": stem}``.
"""

from __future__ import annotations

from pathlib import Path

import ml_collections
import numpy as np

from fcn_jax.data.base import (
    IGNORE_LABEL,
    Record,
    SegmentationDataset,
    config_root,
    require_dir,
)
from fcn_jax.data.camvid import (
    CLASS_DICT,
    colour_split_pairs,
    pair_by_stem,
)
from fcn_jax.data.colour_labels import ClassDict, read_class_dict
from fcn_jax.data.io import orient_label, read_image_oriented, read_index_png
from fcn_jax.errors import FCNError, format_list

LAYOUT = """\
either colour-coded labels, as CamVid:
  <root>/
    class_dict.csv            name,r,g,b: one row per class, in class order (Void rows = 255)
    train/<stem>.jpg|png
    train_labels/<stem>.png   (or <stem>_L.png): colours from class_dict.csv
    val/  val_labels/ ...
or index masks:
  <root>/
    classes.txt               optional: class names, one per line, class 0 first
    images/train/<stem>.jpg|png
    masks/train/<stem>.png    values = class indices, 255 = void (palette or greyscale PNG)
    images/val/  masks/val/ ..."""

CLASSES_TXT = "classes.txt"
COLOUR_LAYOUT = "colour"  # <split>/ + <split>_labels/ + class_dict.csv
MASK_LAYOUT = "masks"  # images/<split>/ + masks/<split>/


def detect_layout(root: Path) -> str:
    """:data:`COLOUR_LAYOUT` or :data:`MASK_LAYOUT`, from the folders ``root`` holds.

    Raises:
        FCNError: ``root`` is not a directory, holds both layouts, or neither (printing both).
    """
    require_dir(root, "dataset folder root", LAYOUT)
    masks = (root / "images").is_dir() or (root / "masks").is_dir()
    colour = [p.name for p in root.iterdir() if p.is_dir() and p.name.endswith("_labels")]
    if masks and colour:
        raise FCNError(
            f"{root} holds both layouts (images/ or masks/, and {', '.join(sorted(colour))}); "
            f"keep one. Expected:\n{LAYOUT}"
        )
    if masks:
        return MASK_LAYOUT
    if colour:
        return COLOUR_LAYOUT
    raise FCNError(
        f"{root} holds neither images/ and masks/ nor <split>/ and <split>_labels/ folders. "
        f"Expected:\n{LAYOUT}"
    )


def read_classes_txt(path: Path) -> tuple[str, ...]:
    """Class names from ``classes.txt``: one per non-blank line, class 0 first.

    Raises:
        FCNError: naming the file: not text, no names, a repeated name, over 255 names.
    """
    try:
        names = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
    except UnicodeDecodeError:
        raise FCNError(f"{path} is not a text file of class names, one per line") from None
    names = [n for n in names if n]
    if not names:
        raise FCNError(f"{path} lists no class names (expected one per line, class 0 first)")
    for i, name in enumerate(names):
        if name in names[:i]:
            raise FCNError(
                f"{path}: class name {name!r} appears twice (classes {names.index(name)}, {i})"
            )
    if len(names) > IGNORE_LABEL:
        raise FCNError(
            f"{path} lists {len(names)} classes; at most {IGNORE_LABEL} fit uint8 labels"
        )
    return tuple(names)


def _check_n_class(names: tuple[str, ...], n_class: int | None, source: Path) -> None:
    """Fail if the caller's class count disagrees with the names the data came with."""
    if n_class is not None and n_class != len(names):
        raise FCNError(
            f"{source} names {len(names)} classes ({format_list(names, 8)}) but n_class is "
            f"{n_class} (config.model.n_class); make them agree"
        )


class FolderDataset(SegmentationDataset):
    """A split of the user's own data in either layout (see the module docstring).

    Attributes:
        root: the dataset root.
        layout: :data:`COLOUR_LAYOUT` or :data:`MASK_LAYOUT`, as detected.
        class_dict: the parsed ``class_dict.csv`` when labels are colour-coded, else ``None``.
        images_only: the caller reads only the images, so no class count is needed.
    """

    name = "folder"

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        n_class: int | None = None,
        images_only: bool = False,
        void_as_class: bool = False,
    ) -> None:
        """Detect the layout, find the classes and pair the split's images and labels.

        Args:
            root: the dataset folder.
            split: a split folder name (``train``, ``val``...).
            n_class: number of classes; required for index masks without ``classes.txt`` (names
                become ``class_<i>``), otherwise checked against the names found.
            images_only: the caller reads only the images (``python -m fcn_jax.data.stats``):
                ``n_class`` is ignored, index masks need no class names, and labels are not
                checked against a class count.
            void_as_class: a ``class_dict.csv``'s void rows are classes at their row index
                (:func:`~fcn_jax.data.colour_labels.read_class_dict`).

        Raises:
            FCNError: missing root (printing both layouts), an undetectable or ambiguous layout,
                a missing split, bad class files, disagreeing class counts, or unpaired images
                and labels (naming the files).
        """
        self.root = Path(root)
        self.layout = detect_layout(self.root)
        self.class_dict: ClassDict | None = None
        self.images_only = images_only
        self.void_as_class = void_as_class
        if images_only:
            n_class = None  # nothing to check it against: no label is used
        if self.layout == COLOUR_LAYOUT:
            self.class_dict, self._pairs = colour_split_pairs(
                self.root, split, LAYOUT, "dataset folder", void_as_class
            )
            names = self.class_dict.class_names
            _check_n_class(names, n_class, self.class_dict.path)
        else:
            names = self._mask_classes(n_class)
            self._pairs = self._mask_pairs(split)
        super().__init__(split, list(self._pairs), names)

    def _mask_classes(self, n_class: int | None) -> tuple[str, ...]:
        """Class names of the mask layout: classes.txt, class_dict.csv or ``class_<i>``."""
        txt, csv = self.root / CLASSES_TXT, self.root / CLASS_DICT
        if txt.is_file() and csv.is_file():
            raise FCNError(
                f"{self.root} holds both {CLASSES_TXT} (index masks) and {CLASS_DICT} (colour "
                "masks); keep the one that describes masks/"
            )
        if csv.is_file():
            self.class_dict = read_class_dict(csv, self.void_as_class)
            names = self.class_dict.class_names
            _check_n_class(names, n_class, csv)
            return names
        if txt.is_file():
            names = read_classes_txt(txt)
            _check_n_class(names, n_class, txt)
            return names
        if n_class is None and self.images_only:
            return ()
        if n_class is None:
            raise FCNError(
                f"{self.root} has no {CLASSES_TXT}: list the class names there, one per line, "
                "or give the class count (--config.model.n_class=N)"
            )
        if not 1 <= n_class <= IGNORE_LABEL:
            raise FCNError(f"n_class must be in 1..{IGNORE_LABEL}, got {n_class}")
        return tuple(f"class_{i}" for i in range(n_class))

    def _mask_pairs(self, split: str) -> dict[str, tuple[Path, Path]]:
        """Pairs of ``images/<split>/`` and ``masks/<split>/``: stem -> (image, mask)."""
        images = require_dir(self.root / "images", "images folder", LAYOUT)
        masks = require_dir(self.root / "masks", "masks folder", LAYOUT)
        image_dir, mask_dir = images / split, masks / split
        if not (image_dir.is_dir() and mask_dir.is_dir()):
            splits = sorted(p.name for p in images.iterdir() if (masks / p.name).is_dir())
            missing = image_dir if not image_dir.is_dir() else mask_dir
            raise FCNError(
                f"split {split!r} not found: {missing} is not a directory. Splits in "
                f"{self.root}: {format_list(splits) or 'none'}. Expected layout:\n{LAYOUT}"
            )
        return pair_by_stem(image_dir, mask_dir, (".png",), lambda stem: [stem])

    @property
    def label_classes(self) -> dict[str, tuple[str, ...]]:
        """Class names per label key; none when :attr:`images_only` (labels go unchecked)."""
        return {} if self.images_only else super().label_classes

    @property
    def palette(self) -> np.ndarray:
        """[256, 3] uint8: ``class_dict.csv``'s colours if there is one, else VOC's."""
        return super().palette if self.class_dict is None else self.class_dict.palette

    def files(self, sample_id: str) -> tuple[Path, Path]:
        """(image, label) paths of a sample."""
        return self._pairs[sample_id]

    def load(self, sample_id: str) -> Record:
        """Read one sample.

        Returns:
            ``image`` [H, W, 3] uint8 RGB, ``label`` [H, W] uint8 indices, ``id``.
        """
        image_path, label_path = self.files(sample_id)
        image, orientation = read_image_oriented(image_path)
        label = orient_label(self._read_label(label_path), orientation)
        return {"image": image, "label": label, "id": sample_id}

    def _read_label(self, path: Path) -> np.ndarray:
        """[H, W] uint8 indices from a colour label (class_dict.csv) or an index mask."""
        if self.class_dict is not None:
            return self.class_dict.read_label(path)
        try:
            return read_index_png(path)
        except FCNError as e:
            if "colour image" not in str(e):
                raise
            raise FCNError(
                f"{e}. Colour-coded masks need a {CLASS_DICT} (name,r,g,b) at {self.root}"
            ) from None


def make(config: ml_collections.ConfigDict, split: str) -> FolderDataset:
    """The ``folder`` dataset of configs: :class:`FolderDataset` at ``config.data.root``.

    ``config.model.n_class`` names the classes of index masks without ``classes.txt`` and is
    checked against the class files otherwise; ``config.data.void_as_class`` (False if absent)
    makes a ``class_dict.csv``'s void rows classes.
    """
    return FolderDataset(
        config_root(config),
        split,
        n_class=config.model.get("n_class"),
        void_as_class=bool(config.data.get("void_as_class", False)),
    )
