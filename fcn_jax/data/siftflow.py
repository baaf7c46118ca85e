"""SIFT Flow (Liu et al.): 2,688 outdoor scenes, 256x256, with semantic and geometric labels.

The paper (section 4.3, Table 5) trains one network with two heads, 33 semantic classes and 3
geometric ones (sky, horizontal, vertical), on the 2,488 ``trainval`` images and tests on 200
``test`` images (the release's lists leave out ``highway_bost181`` and ``street_urb506``, which
have no annotations). The layout is the dataset's own, as the reference data layer
(``siftflow_layers.py`` of the Caffe release) reads it::

    <root>/
      Images/spatial_envelope_256x256_static_8outdoorcategories/<id>.jpg
      SemanticLabels/spatial_envelope_256x256_static_8outdoorcategories/<id>.mat
      GeoLabels/spatial_envelope_256x256_static_8outdoorcategories/<id>.mat
      {trainval,test}.txt            optional: ids (shipped copies are used if absent)

Both .mat files hold the label map in the variable ``S``: semantic 0 = unlabeled, 1..33 = the
classes; geometric -1 = unlabeled, 1..3 = the classes. As in the reference layer, geometric -1
becomes 0, then every map is shifted down by one so the classes start at 0 and unlabeled becomes
255 (void).

Records are ``image`` ([H, W, 3] uint8 RGB), ``label`` ([H, W] uint8 semantic, 0..32 and 255),
``label_geo`` ([H, W] uint8 geometric, 0..2 and 255) and ``id``.
"""

from __future__ import annotations

import functools
import re
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

SUBDIR = "spatial_envelope_256x256_static_8outdoorcategories"  # the one category folder

LAYOUT = f"""\
<root>/
  Images/{SUBDIR}/<id>.jpg
  SemanticLabels/{SUBDIR}/<id>.mat   (variable S: 0 = unlabeled, 1..33)
  GeoLabels/{SUBDIR}/<id>.mat        (variable S: -1 = unlabeled, 1..3)
  {{trainval,test}}.txt               (optional; the paper's lists ship with fcn_jax)"""

SPLITS = ("trainval", "test")
N_SEMANTIC = 33
N_GEOMETRIC = 3
GEOMETRIC_CLASSES = ("sky", "horizontal", "vertical")  # label_geo's classes, in label order
# The release's two-head net names its outputs ``sem`` and ``geo``: output suffix -> (label key
# of the records, name of its metric set). The evaluator scores each head against its key.
HEAD_LABELS = {"sem": ("label", "semantic"), "geo": ("label_geo", "geometric")}


@functools.cache
def class_names() -> dict[str, tuple[str, ...]]:
    """Class names per label key, in label order, from the shipped ``classes.txt``.

    That file (the Caffe release's) is prose with two numbered lists, ``01 awning`` ...
    ``33 window`` after a ``Semantic:`` line and ``01 sky`` ... ``03 vertical`` after a
    ``Geometric:`` line, so it is parsed here rather than read as one name per line.

    Returns:
        ``{"label": the 33 semantic names, "label_geo": ("sky", "horizontal", "vertical")}``.
    """
    path = shipped_split_dir("siftflow") / "classes.txt"
    lists: dict[str, list[str]] = {"label": [], "label_geo": []}
    section = None
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("Semantic"):
            section = "label"
        elif line.startswith("Geometric"):
            section = "label_geo"
        elif line.startswith("N.B."):
            section = None
        elif section and (match := re.fullmatch(r"(\d+)\s+(\S.*)", line)):
            lists[section].append(match.group(2))
    names = {key: tuple(v) for key, v in lists.items()}
    if len(names["label"]) != N_SEMANTIC or names["label_geo"] != GEOMETRIC_CLASSES:
        raise RuntimeError(f"{path} is damaged: parsed {names}")
    return names


class SIFTFlow(SegmentationDataset):
    """A split of SIFT Flow with semantic (``label``) and geometric (``label_geo``) labels.

    Attributes:
        root: the dataset root.
        split_file: the list file the ids came from.
        score_present_classes_only: the paper scores SIFT Flow over the classes present in the
            test set (cow, desert and moon never occur there), so the evaluator leaves out
            classes absent from the ground truth.
    """

    name = "siftflow"
    score_present_classes_only = True

    def __init__(self, root: str | Path, split: str = "test") -> None:
        """Find the split list and check every listed file exists.

        Args:
            root: the dataset root (see the module docstring).
            split: ``trainval``, ``test`` or a path to a list file; ``<root>/<split>.txt`` wins
                over the list shipped with the package.

        Raises:
            FCNError: missing root (with the expected layout), unknown split, or listed ids
                whose image or label files are missing.
        """
        self.root = require_dir(Path(root), "SIFT Flow root", LAYOUT)
        self.split_file, ids = resolve_split(
            split, [self.root, shipped_split_dir("siftflow")], names=SPLITS
        )
        for position, what in enumerate(("images", "semantic labels", "geometric labels")):
            try:
                require_files([self.files(i)[position] for i in ids], what)
            except FCNError as e:
                raise FCNError(f"{e}\n(ids from split list {self.split_file})") from None
        super().__init__(split, ids, class_names()["label"])

    @property
    def label_classes(self) -> dict[str, tuple[str, ...]]:
        """Semantic (``label``, 33) and geometric (``label_geo``, 3) class names."""
        return dict(class_names())  # a copy: the cached dict must not be changed by callers

    def files(self, sample_id: str) -> tuple[Path, Path, Path]:
        """(image, semantic label, geometric label) paths of a sample."""
        return (
            self.root / "Images" / SUBDIR / f"{sample_id}.jpg",
            self.root / "SemanticLabels" / SUBDIR / f"{sample_id}.mat",
            self.root / "GeoLabels" / SUBDIR / f"{sample_id}.mat",
        )

    def load(self, sample_id: str) -> Record:
        """Read one sample.

        Returns:
            ``image`` [H, W, 3] uint8 RGB, ``label`` [H, W] uint8 (0..32, 255 = void),
            ``label_geo`` [H, W] uint8 (0..2, 255 = void) and ``id``.
        """
        image_path, semantic, geometric = self.files(sample_id)
        image, orientation = read_image_oriented(image_path)
        label = _shift_label(read_mat_field(semantic, "S"), semantic, 0, N_SEMANTIC)
        label_geo = _shift_label(read_mat_field(geometric, "S"), geometric, -1, N_GEOMETRIC)
        return {
            "image": image,
            "label": orient_label(label, orientation),
            "label_geo": orient_label(label_geo, orientation),
            "id": sample_id,
        }


def _shift_label(label: np.ndarray, path: Path, lowest: int, n_class: int) -> np.ndarray:
    """[H, W] uint8 classes 0..n-1 and 255 (void) from the file's 1..n and void values.

    ``lowest`` is the smallest value the file may hold: 0 for semantic maps, -1 for geometric
    ones, whose -1 and 0 both mean unlabeled (the reference layer turns -1 into 0, then
    subtracts 1 in uint8 so 0 wraps to 255). Values are checked before any cast, since the
    files hold doubles or signed integers and a cast would wrap or truncate them silently.
    """
    void = " and ".join(str(v) for v in range(lowest, 1))
    meaning = f"{void} = unlabeled, 1..{n_class} = the classes"
    label = check_label_values(label, path, "S", lowest, n_class, meaning)
    return np.where(label <= 0, IGNORE_LABEL, label - 1).astype(np.uint8)


def make(config: ml_collections.ConfigDict, split: str) -> SegmentationDataset:
    """The ``siftflow`` dataset of configs, read from ``config.data.root``.

    Args:
        config: a config whose ``data.root`` is the dataset root.
        split: a split name or a path to a list file.

    Returns:
        The :class:`SIFTFlow` split.
    """
    root = config_root(config, "the SIFT Flow dataset (Images, SemanticLabels, GeoLabels)")
    return SIFTFlow(root, split)
