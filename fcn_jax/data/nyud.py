"""NYU Depth v2 (NYUDv2) semantic segmentation, the 40-class task of Gupta et al. (ECCV 2014).

The paper (section 4.3, Table 4) trains on the 795 ``train`` + ``val`` images and tests on the
654 ``test`` images, with RGB, HHA (Gupta et al.'s depth encoding: horizontal disparity, height
above ground, angle with gravity) or both as two streams. The reference data layer
(``nyud_layers.py`` of the Caffe release) reads the layout below and shifts the labels so the
classes are 0..39 and void (0 in the files) becomes 255; this loader does the same::

    <root>/
      data/images/img_<id>.png       RGB
      data/hha/img_<id>.png          HHA, 3 channels uint8 (for modality "hha")
      segmentation/img_<id>.mat      variable "segmentation": 0 = void, 1..40 = the classes
      {train,val,test}.txt           optional: ids such as 5001 (shipped copies are used if absent)

Records hold the requested modalities (``image`` and/or ``hha``, each [H, W, 3] uint8),
``label`` ([H, W] uint8, 0..39 and 255 = void) and ``id`` (the id as listed, e.g. ``5001``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import ml_collections
import numpy as np
from PIL import Image, UnidentifiedImageError

from fcn_jax.data.base import (
    IGNORE_LABEL,
    Record,
    SegmentationDataset,
    config_root,
    require_dir,
    require_files,
)
from fcn_jax.data.io import (
    Orientation,
    check_label_values,
    orient_label,
    read_image_oriented,
    read_mat_field,
)
from fcn_jax.data.splits import resolve_split, shipped_split_dir
from fcn_jax.errors import FCNError
from fcn_jax.preprocessing import NYUD_HHA
from fcn_jax.resources import read_class_names

LAYOUT = """\
<root>/
  data/images/img_<id>.png
  data/hha/img_<id>.png          (for the hha modality)
  segmentation/img_<id>.mat      (variable "segmentation", 0 = void, 1..40 = classes)
  {train,val,test}.txt           (optional; the paper's lists ship with fcn_jax)"""

SPLITS = ("train", "val", "test", "trainval")
TRAINVAL_PARTS = ("train", "val")  # the paper's 795 training images are both lists together
N_CLASS = 40
MODALITIES = ("image", "hha")  # RGB and Gupta et al.'s HHA depth encoding, in stream order
# The normalisation of the inputs other than ``image`` (whose is config.data.preprocessing):
# the release's HHA mean.
MODALITY_PREPROCESSING = {"hha": NYUD_HHA}


def class_names() -> tuple[str, ...]:
    """The 40 NYUDv2 classes (Gupta et al.), in label order: wall, floor, ... otherprop."""
    return read_class_names(shipped_split_dir("nyud") / "classes.txt")


def _modalities(modalities: str | Sequence[str]) -> tuple[str, ...]:
    """Check and order the requested inputs; ``"image,hha"`` (a flag value) is accepted too."""
    if isinstance(modalities, str):
        modalities = [m.strip() for m in modalities.split(",") if m.strip()]
    unknown = [m for m in modalities if m not in MODALITIES]
    if unknown or not modalities:
        raise FCNError(
            f"NYUDv2 modalities must be a non-empty subset of {MODALITIES} (image = RGB, hha = "
            f"the depth encoding), got {tuple(modalities)}"
        )
    return tuple(k for k in MODALITIES if k in modalities)


class NYUDv2(SegmentationDataset):
    """A split of NYUDv2's 40-class segmentation, read from the layout of the module docstring.

    Attributes:
        root: the dataset root.
        modalities: the image keys records carry, a subset of ``("image", "hha")``.
        split_files: the list file(s) the ids came from (``train.txt`` and ``val.txt`` for a
            ``trainval`` split made of both).
    """

    name = "nyud"
    image_keys = MODALITIES

    def __init__(
        self,
        root: str | Path,
        split: str = "test",
        modalities: str | Sequence[str] = ("image",),
    ) -> None:
        """Find the split list(s) and check every listed file exists.

        Args:
            root: the dataset root (see the module docstring).
            split: ``train``, ``val``, ``test``, ``trainval`` (``train`` + ``val``, the paper's
                795 training images) or a path to a list file. ``<root>/<split>.txt`` wins over
                the list shipped with the package; ``trainval`` without a ``trainval.txt``
                joins the ``train`` and ``val`` lists, each found that way.
            modalities: the inputs to read: ``("image",)`` (RGB), ``("hha",)`` or both.

        Raises:
            FCNError: missing root (with the expected layout), bad modalities, unknown split,
                or listed ids whose image, HHA or label file is missing.
        """
        self.root = require_dir(Path(root), "NYUDv2 root", LAYOUT)
        self.modalities = _modalities(modalities)
        search = [self.root, shipped_split_dir("nyud")]
        if split == "trainval" and not (self.root / "trainval.txt").is_file():
            parts = [resolve_split(part, search) for part in TRAINVAL_PARTS]
            self.split_files = tuple(path for path, _ in parts)
            ids = [i for _, part_ids in parts for i in part_ids]
        else:
            split_file, ids = resolve_split(split, search, names=SPLITS)
            self.split_files = (split_file,)
        what_files = {"image": "images", "hha": "HHA images"}
        for position, what in enumerate((*(what_files[m] for m in self.modalities), "labels")):
            try:
                require_files([self.files(i)[position] for i in ids], what)
            except FCNError as e:
                lists = ", ".join(map(str, self.split_files))
                raise FCNError(f"{e}\n(ids from split list {lists})") from None
        super().__init__(split, ids, class_names())

    def files(self, sample_id: str) -> tuple[Path, ...]:
        """Paths of a sample: one per modality (in :attr:`modalities` order), then the label."""
        stem = f"img_{sample_id}"
        dirs = {"image": self.root / "data" / "images", "hha": self.root / "data" / "hha"}
        inputs = tuple(dirs[m] / f"{stem}.png" for m in self.modalities)
        return (*inputs, self.root / "segmentation" / f"{stem}.mat")

    def load(self, sample_id: str) -> Record:
        """Read one sample.

        Returns:
            one [H, W, 3] uint8 array per modality (``image`` RGB, ``hha``), ``label`` [H, W]
            uint8 (0..39, 255 = void) and ``id``.
        """
        *inputs, label_path = self.files(sample_id)
        paths = dict(zip(self.modalities, inputs, strict=True))
        record: Record = {}
        # The RGB image is read first: its EXIF orientation, if any, turns the HHA and the label
        # (which carry none) the same way (see orient_label).
        orientation = None
        if "image" in paths:
            record["image"], orientation = read_image_oriented(paths["image"])
        if "hha" in paths:
            record["hha"] = _oriented(_read_hha(paths["hha"]), orientation)
        label = _nyud_label(read_mat_field(label_path, "segmentation"), label_path)
        record["label"] = _oriented(label, orientation)
        record["id"] = sample_id
        return record


def _oriented(array: np.ndarray, orientation: Orientation | None) -> np.ndarray:
    """``array`` turned like the RGB image (:func:`orient_label`); as is without one."""
    return array if orientation is None else orient_label(array, orientation)


def _read_hha(path: Path) -> np.ndarray:
    """[H, W, 3] uint8 HHA; anything but a 3-channel image is refused, not converted.

    ``read_image`` would turn a greyscale PNG (e.g. a depth map put in the wrong folder) into
    three equal channels and the network would silently train on it.
    """
    try:
        with Image.open(path) as im:
            if im.mode != "RGB":
                raise FCNError(
                    f"HHA image {path} is a {im.mode} image; expected 3 channels (HHA: "
                    "horizontal disparity, height, angle), 8 bits each"
                )
            return np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise FCNError(
            f"{path} is not an image PIL can read (corrupt or truncated?): {e}"
        ) from None


def _nyud_label(segmentation: np.ndarray, path: Path) -> np.ndarray:
    """[H, W] uint8 labels 0..39 and 255 (void) from the file's 0 (void) and 1..40.

    Values are checked before any cast: 41 would become class 40, which does not exist, and a
    value past 255 would wrap to a plausible class.
    """
    segmentation = check_label_values(
        segmentation, path, "segmentation", 0, N_CLASS, f"0 = void, 1..{N_CLASS} = the classes"
    )
    # The file's classes are 1-based with 0 as void; the reference layer subtracts 1 in uint8
    # so void wraps to 255. Written out here instead of relying on the wrap-around.
    return np.where(segmentation == 0, IGNORE_LABEL, segmentation - 1).astype(np.uint8)


def make(config: ml_collections.ConfigDict, split: str) -> SegmentationDataset:
    """The ``nyud`` dataset of configs: ``config.data.root`` and ``config.data.modalities``.

    Args:
        config: a config whose ``data.root`` is the dataset root and whose optional
            ``data.modalities`` (default ``("image",)``) names the inputs.
        split: a split name or a path to a list file.

    Returns:
        The :class:`NYUDv2` split.
    """
    root = config_root(config, "the NYUDv2 dataset (data/images, data/hha, segmentation)")
    modalities = config.data.get("modalities")
    if modalities is None:  # unset (or a None placeholder): RGB, the paper's main setting
        modalities = ("image",)
    return NYUDv2(root, split, modalities)
