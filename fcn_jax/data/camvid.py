"""CamVid (Brostow et al.) as Kaggle and the seed's PyTorch code lay it out: colour-coded labels.

One root holds a folder of images per split, a folder of colour label PNGs beside each, and the
``class_dict.csv`` that maps label colours to classes (:mod:`fcn_jax.data.colour_labels`)::

    <root>/
      class_dict.csv                name,r,g,b: one row per class, in class order
      train/<stem>.png              (or .jpg)
      train_labels/<stem>_L.png     (or <stem>.png): colours from class_dict.csv
      val/ val_labels/ test/ test_labels/

Images and labels are paired by file stem; Kaggle's ``_L`` suffix on label stems is optional.
Every image must have a label and every label an image, checked when the dataset is built.
Records are ``{"image": [H, W, 3] uint8 RGB, "label": [H, W] uint8, "id": stem}`` with the
csv's classes (void rows -> 255, or an ordinary class with ``void_as_class``, as SpeedPaper
trains it: ``config.data.void_as_class``); see :mod:`fcn_jax.data.base`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import ml_collections
import numpy as np

from fcn_jax.data.base import Record, SegmentationDataset, config_root, require_dir
from fcn_jax.data.colour_labels import ClassDict, read_class_dict
from fcn_jax.data.io import orient_label, read_image_oriented
from fcn_jax.errors import FCNError, format_list

LAYOUT = """\
<root>/
  class_dict.csv                name,r,g,b: one row per class, in class order
                                (rows named Void / unlabelled are void, label 255)
  train/<stem>.png              (or .jpg)
  train_labels/<stem>_L.png     (or <stem>.png): colour-coded, colours from class_dict.csv
  val/   val_labels/
  test/  test_labels/"""

CLASS_DICT = "class_dict.csv"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
LABEL_SUFFIX = "_L"  # Kaggle CamVid names the label of 0001TP_006690.png 0001TP_006690_L.png
SHOWN = 5  # files named in an error before "... and N more"


def _listing(paths: Sequence[Path]) -> str:
    """Paths one per line, the first :data:`SHOWN` of them and a count of the rest."""
    shown = "\n  ".join(map(str, paths[:SHOWN]))
    more = f"\n  ... and {len(paths) - SHOWN} more" if len(paths) > SHOWN else ""
    return f"  {shown}{more}"


def _files_by_stem(directory: Path, suffixes: Sequence[str], what: str) -> dict[str, Path]:
    """The files of ``directory`` with one of ``suffixes`` (any case), keyed by stem.

    Hidden files (``.DS_Store``...) are skipped; two files with one stem (``a.png``, ``a.jpg``)
    are an error, since either could be the one meant.
    """
    files: dict[str, Path] = {}
    for path in sorted(directory.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        if path.suffix.lower() not in suffixes:
            continue
        if path.stem in files:
            raise FCNError(
                f"{what} {files[path.stem]} and {path} have the same stem; keep one of them"
            )
        files[path.stem] = path
    return files


def pair_by_stem(
    image_dir: Path,
    label_dir: Path,
    label_suffixes: Sequence[str],
    label_stems: Callable[[str], Sequence[str]],
) -> dict[str, tuple[Path, Path]]:
    """Pair the images of ``image_dir`` with the labels of ``label_dir`` by file stem.

    Args:
        image_dir: folder of images (.png, .jpg, .jpeg).
        label_dir: folder of labels.
        label_suffixes: label file extensions, lower case (``(".png",)``).
        label_stems: the label stems an image stem may have, e.g. ``s -> [s + "_L", s]``.

    Returns:
        stem -> (image, label), sorted by stem.

    Raises:
        FCNError: no images; an image with no label or with two candidate labels; a label file
            no image claims (a stray, misnamed or non-PNG label). Messages name the files.
    """
    images = _files_by_stem(image_dir, IMAGE_SUFFIXES, "images")
    # Labels in any image format are listed, so that a JPEG label is reported rather than
    # silently ignored; only label_suffixes may be paired.
    labels = _files_by_stem(label_dir, IMAGE_SUFFIXES + tuple(label_suffixes), "labels")
    if not images:
        raise FCNError(f"no images in {image_dir} (looked for {', '.join(IMAGE_SUFFIXES)} files)")
    pairs: dict[str, tuple[Path, Path]] = {}
    unlabelled: list[Path] = []
    wrong_format: list[Path] = []  # e.g. a label saved as JPEG: lossy, so not a label
    for stem, image in images.items():
        candidates = [labels[s] for s in label_stems(stem) if s in labels]
        found = [p for p in candidates if p.suffix.lower() in label_suffixes]
        wrong_format += [p for p in candidates if p.suffix.lower() not in label_suffixes]
        if len(found) > 1:
            raise FCNError(
                f"image {image} has two labels, {found[0]} and {found[1]}; keep one of them"
            )
        if found:
            pairs[stem] = (image, found[0])
        else:
            unlabelled.append(image)
    if unlabelled:
        names = " or ".join(f"{s}{label_suffixes[0]}" for s in label_stems("<stem>"))
        note = (
            f"\nfound labels in another format, e.g. {wrong_format[0]}: labels must be "
            f"{'/'.join(label_suffixes)} (lossless)"
            if wrong_format
            else ""
        )
        raise FCNError(
            f"{len(unlabelled)} images have no label in {label_dir} (expected {names}):\n"
            f"{_listing(unlabelled)}{note}"
        )
    claimed: dict[Path, Path] = {}
    for image, label in pairs.values():
        # Possible only when one image's stem is another's plus "_L" (a.png, a_L.png).
        if label in claimed:
            raise FCNError(
                f"label {label} would pair with two images, {claimed[label]} and {image}; "
                "rename one of them"
            )
        claimed[label] = image
    strays = [p for p in labels.values() if p not in claimed]
    if strays:
        raise FCNError(
            f"{len(strays)} labels in {label_dir} have no image in {image_dir} (labels must be "
            f"{'/'.join(label_suffixes)} files named after their image):\n{_listing(strays)}"
        )
    return pairs


def camvid_label_stems(stem: str) -> list[str]:
    """Label stems of an image: Kaggle's ``<stem>_L`` or plain ``<stem>``."""
    return [f"{stem}{LABEL_SUFFIX}", stem]


def colour_split_pairs(
    root: Path, split: str, layout: str, what: str, void_as_class: bool = False
) -> tuple[ClassDict, dict[str, tuple[Path, Path]]]:
    """Read ``<root>/class_dict.csv`` and pair ``<root>/<split>/`` with ``<split>_labels/``.

    Args:
        root: the dataset root (see :data:`LAYOUT`).
        split: a split folder name (``train``, ``val``, ``test`` or any other present).
        layout: the layout printed in errors.
        what: the dataset's name in errors ("CamVid").
        void_as_class: the csv's void rows are classes (:func:`read_class_dict`).

    Returns:
        (class dict, stem -> (image, label)).
    """
    require_dir(root, f"{what} root", layout)
    class_dict = root / CLASS_DICT
    if not class_dict.is_file():
        raise FCNError(f"{class_dict} not found. Expected layout:\n{layout}")
    splits = sorted(
        p.name
        for p in root.iterdir()
        if p.is_dir() and (root / f"{p.name}_labels").is_dir() and not p.name.endswith("_labels")
    )
    image_dir, label_dir = root / split, root / f"{split}_labels"
    if not (image_dir.is_dir() and label_dir.is_dir()):
        missing = image_dir if not image_dir.is_dir() else label_dir
        raise FCNError(
            f"{what} split {split!r} not found: {missing} is not a directory. Splits in {root}: "
            f"{format_list(splits) or 'none'}. Expected layout:\n{layout}"
        )
    classes = read_class_dict(class_dict, void_as_class)
    return classes, pair_by_stem(image_dir, label_dir, (".png",), camvid_label_stems)


class CamVid(SegmentationDataset):
    """A CamVid split: images and colour-coded label PNGs mapped through ``class_dict.csv``.

    Attributes:
        root: the dataset root.
        class_dict: the parsed ``class_dict.csv`` (classes, colours, palette).
        void_as_class: whether the csv's void rows are classes (SpeedPaper) or 255.
    """

    name = "camvid"

    def __init__(self, root: str | Path, split: str = "train", void_as_class: bool = False) -> None:
        """Read ``class_dict.csv`` and pair the split's images and labels.

        Args:
            root: the folder holding ``class_dict.csv`` and the split folders (module docstring).
            split: ``train``, ``val`` or ``test`` (any ``<split>/`` with ``<split>_labels/``).
            void_as_class: train void as an ordinary class, at its csv row's index, as
                SpeedPaper does; by default void rows are the ignored label 255.

        Raises:
            FCNError: missing root, csv or split folders (with the expected layout), a bad csv,
                or images and labels that do not pair up (naming the files).
        """
        self.root = Path(root)
        self.void_as_class = void_as_class
        self.class_dict, self._pairs = colour_split_pairs(
            self.root, split, LAYOUT, "CamVid", void_as_class
        )
        super().__init__(split, list(self._pairs), self.class_dict.class_names)

    @property
    def palette(self) -> np.ndarray:
        """[256, 3] uint8: the csv's class colours (see :class:`ClassDict`)."""
        return self.class_dict.palette

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
        label = orient_label(self.class_dict.read_label(label_path), orientation)
        return {"image": image, "label": label, "id": sample_id}


def check_n_class(dataset: SegmentationDataset, config: ml_collections.ConfigDict) -> None:
    """Fail if ``config.model.n_class`` is set and differs from the dataset's class count.

    A model with fewer outputs than the data has classes would train on labels it cannot
    predict; with more, metrics would count classes no label holds.
    """
    n_class = config.get("model", {}).get("n_class")
    if n_class and n_class != dataset.n_class:
        raise FCNError(
            f"config.model.n_class is {n_class} but the {dataset.name} data has "
            f"{dataset.n_class} classes ({format_list(dataset.class_names, 8)}); pass "
            f"--config.model.n_class={dataset.n_class}"
        )


def make(config: ml_collections.ConfigDict, split: str) -> CamVid:
    """The ``camvid`` dataset of configs: :class:`CamVid` at ``config.data.root``.

    ``config.data.void_as_class`` (False if absent) makes the csv's void rows classes.

    Raises:
        FCNError: ``config.data.root`` unset, a dataset error, or ``config.model.n_class``
            different from the csv's class count.
    """
    dataset = CamVid(config_root(config), split, bool(config.data.get("void_as_class", False)))
    check_n_class(dataset, config)
    return dataset
