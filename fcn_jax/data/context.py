"""PASCAL-Context (Mottaghi et al., CVPR 2014): whole-scene labels for PASCAL VOC 2010.

The paper (section 4.3, Table 6) uses the 59 most frequent classes plus background. The
release labels every pixel with one of 459 classes (the "400+" labels of ``labels.txt``);
the 59-class task maps them *by name* to the 59 classes of ``59_labels.txt``, class i of the 59
(0-based) -> label i + 1, and every other pixel -> 0, ``background``: a real class that is
trained and scored, not void. The reference data layer (``pascalcontext_layers.py`` of the
Caffe release) compares names with spaces removed and renames three of the 59 to their names in
the full list (diningtable -> table, bedcloth -> bedclothes, clothes -> cloth); so does this
loader. The root holds the VOC 2010 devkit and the Context release side by side::

    <root>/
      VOCdevkit/VOC2010/
        JPEGImages/<id>.jpg
        ImageSets/Main/{train,val}.txt
      trainval/<id>.mat     variable LabelMap: uint16 indices into labels.txt (1-based)
      labels.txt            "<index>: <name>", the 459 classes (shipped copy used if absent)
      59_labels.txt         "<index>: <name>", the 59 classes (shipped copy used if absent)

Records are ``{"image": [H, W, 3] uint8 RGB, "label": [H, W] uint8 (0..59), "id": str}``; the
task has no void label, so 255 never occurs.
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
    require_files,
)
from fcn_jax.data.io import check_label_values, orient_label, read_image_oriented, read_mat_field
from fcn_jax.data.splits import resolve_split, shipped_split_dir
from fcn_jax.errors import FCNError

LAYOUT = """\
<root>/
  VOCdevkit/VOC2010/
    JPEGImages/<id>.jpg
    ImageSets/Main/{train,val}.txt
  trainval/<id>.mat       (PASCAL-Context release: variable LabelMap)
  labels.txt              (optional: the 459 class names; a copy ships with fcn_jax)
  59_labels.txt           (optional: the 59 classes of the task; a copy ships with fcn_jax)"""

SPLITS = ("train", "val")
BACKGROUND = "background"
SHIPPED_LABELS = shipped_split_dir("context") / "classes-400.txt"  # the release's labels.txt
SHIPPED_LABELS_59 = shipped_split_dir("context") / "classes-59.txt"  # background + the 59
# The 59-class list spells three classes differently from labels.txt (names without spaces);
# the reference layer maps them to the full list's names, and so must we or they stay 0.
TASK_TO_FULL_NAME = {"diningtable": "table", "bedcloth": "bedclothes", "clothes": "cloth"}


def read_indexed_names(path: Path, require_index: bool = True) -> list[tuple[int | None, str]]:
    """(index, name) pairs of a class list with lines ``<index>: <name>`` (``1: accordion``).

    Args:
        path: the list (``labels.txt``, ``59_labels.txt`` or the shipped copies).
        require_index: refuse lines without ``<index>:``; otherwise such a line is a bare name
            and its index is ``None``.

    Returns:
        The entries in file order; blank lines are skipped.
    """
    entries: list[tuple[int | None, str]] = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        head, sep, name = line.partition(":")
        if not sep and not require_index:
            entries.append((None, line))
            continue
        try:
            index = int(head)
        except ValueError:
            index = None
        if not sep or index is None or not name.strip():
            raise FCNError(f"{path} line {number}: expected '<index>: <name>', got {line!r}")
        entries.append((index, name.strip()))
    if not entries:
        raise FCNError(f"{path} lists no classes")
    return entries


def _key(name: str) -> str:
    """A name as the reference layer compares them: spaces removed."""
    return name.replace(" ", "")


def build_lookup(labels_file: Path, labels_59_file: Path) -> tuple[np.ndarray, tuple[str, ...]]:
    """The table from ``LabelMap`` values to task labels, and the task's class names.

    Args:
        labels_file: the full list, ``<index>: <name>`` with the indices ``LabelMap`` holds.
        labels_59_file: the task's classes in label order (``<index>: <name>`` or bare names);
            a ``background`` entry (the shipped copy starts with ``0: background``) is skipped,
            since background is label 0 by construction.

    Returns:
        (lookup, names): ``lookup`` is a uint8 array indexed by ``LabelMap`` value (0 up to the
        largest index of ``labels_file``) giving 1 + the class's position among the task's
        classes, or 0 for every class not in the task; ``names`` is ``("background", ...)``.
    """
    full: dict[str, int] = {}  # name without spaces -> LabelMap value
    seen: set[int] = set()
    for index, name in read_indexed_names(labels_file):
        if index is None or index < 1 or index in seen:
            raise FCNError(f"{labels_file}: index {index} of {name!r} is not 1-based and unique")
        seen.add(index)
        full.setdefault(_key(name), index)  # first wins, as the reference's list.index does
    task = [
        name
        for _, name in read_indexed_names(labels_59_file, require_index=False)
        if name != BACKGROUND
    ]
    if len(task) >= IGNORE_LABEL:
        raise FCNError(f"{labels_59_file} lists {len(task)} classes; uint8 labels hold 254")
    lookup = np.zeros(max(full.values()) + 1, np.uint8)
    for position, name in enumerate(task):
        key = TASK_TO_FULL_NAME.get(_key(name), _key(name))
        if key not in full:
            raise FCNError(
                f"class {name!r} of {labels_59_file} is not in {labels_file} (names are "
                "compared without spaces); are these the PASCAL-Context release's lists?"
            )
        if lookup[full[key]]:
            raise FCNError(f"class {name!r} is listed twice in {labels_59_file}")
        lookup[full[key]] = position + 1
    return lookup, (BACKGROUND, *task)


class PascalContext(SegmentationDataset):
    """A split of PASCAL-Context's 59-class task (+ background), see the module docstring.

    Attributes:
        root: the dataset root.
        devkit: the ``VOCdevkit/VOC2010`` directory.
        split_file: the list file the ids came from.
        labels_file: the 459-class list the ``LabelMap`` indices refer to.
        labels_59_file: the list of the task's classes.
        lookup: [max index + 1] uint8, ``LabelMap`` value -> label (built once, applied with
            fancy indexing).
    """

    name = "context"

    def __init__(self, root: str | Path, split: str = "val") -> None:
        """Find the devkit, split list and class lists, build the lookup, check the files.

        Args:
            root: the folder holding ``VOCdevkit/`` and the release's ``trainval/`` (see the
                module docstring).
            split: ``train``, ``val`` (VOC 2010's ``ImageSets/Main`` lists) or a path to a list
                file; a ``<root>/<split>.txt`` wins over the devkit's.

        Raises:
            FCNError: missing root, devkit or ``trainval/`` (with the expected layout), unknown
                split, malformed class lists, or listed ids whose image or label is missing.
        """
        self.root = require_dir(Path(root), "PASCAL-Context root", LAYOUT)
        self.devkit = require_dir(self.root / "VOCdevkit" / "VOC2010", "VOCdevkit/VOC2010", LAYOUT)
        require_dir(self.root / "trainval", "PASCAL-Context trainval/ (the .mat labels)", LAYOUT)
        self.split_file, ids = self._resolve_split(split)
        self.labels_file = _local_or_shipped(self.root / "labels.txt", SHIPPED_LABELS)
        self.labels_59_file = _local_or_shipped(self.root / "59_labels.txt", SHIPPED_LABELS_59)
        self.lookup, names = build_lookup(self.labels_file, self.labels_59_file)
        for position, what in enumerate(("images", "labels")):
            try:
                require_files([self.files(i)[position] for i in ids], what)
            except FCNError as e:
                raise FCNError(f"{e}\n(ids from split list {self.split_file})") from None
        super().__init__(split, ids, names)

    def _resolve_split(self, split: str) -> tuple[Path, list[str]]:
        main = self.devkit / "ImageSets" / "Main"
        # The root also holds the class lists and Main holds ~60 per-class lists
        # (aeroplane_train.txt, ...): neither is a split, so they are neither taken as one nor
        # offered in the error.
        if split in ("labels", "59_labels"):
            raise FCNError(f"{split}.txt is a class list, not a split; use train or val")
        try:
            return resolve_split(split, [self.root, main])
        except FCNError as e:
            if not str(e).startswith("unknown split"):
                raise
            raise FCNError(
                f"unknown split {split!r}: no {split}.txt in {self.root} or {main}. Known "
                f"splits: {', '.join(SPLITS)}; or give a path to a list file"
            ) from None

    def files(self, sample_id: str) -> tuple[Path, Path]:
        """(image, label) paths of a sample."""
        return (
            self.devkit / "JPEGImages" / f"{sample_id}.jpg",
            self.root / "trainval" / f"{sample_id}.mat",
        )

    def load(self, sample_id: str) -> Record:
        """Read one sample.

        Returns:
            ``image`` [H, W, 3] uint8 RGB, ``label`` [H, W] uint8 (0 = background, 1..59),
            ``id``.
        """
        image_path, path = self.files(sample_id)
        image, orientation = read_image_oriented(image_path)
        label = self._task_label(read_mat_field(path, "LabelMap"), path)
        return {"image": image, "label": orient_label(label, orientation), "id": sample_id}

    def _task_label(self, label_map: np.ndarray, path: Path) -> np.ndarray:
        """Map a ``LabelMap`` (indices into :attr:`labels_file`) to task labels."""
        top = len(self.lookup) - 1
        meaning = f"indices into {self.labels_file}: the matching PASCAL-Context release?"
        label_map = check_label_values(label_map, path, "LabelMap", 0, top, meaning)
        return self.lookup[label_map.astype(np.intp)]


def _local_or_shipped(local: Path, shipped: Path) -> Path:
    """The dataset's own copy of a class list if present, else the package's."""
    return local if local.is_file() else shipped


def make(config: ml_collections.ConfigDict, split: str) -> SegmentationDataset:
    """The ``context`` dataset of configs, read from ``config.data.root``.

    Args:
        config: a config whose ``data.root`` holds ``VOCdevkit/VOC2010`` and ``trainval/``.
        split: ``train``, ``val`` or a path to a list file.

    Returns:
        The :class:`PascalContext` split.
    """
    root = config_root(config, "VOCdevkit/VOC2010 and PASCAL-Context's trainval/")
    return PascalContext(root, split)
