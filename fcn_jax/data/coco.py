"""COCO 2017 as PASCAL VOC's 21 classes: the data torchvision's FCN-ResNet weights come from.

torchvision's ``fcn_resnet50`` / ``fcn_resnet101`` weights (``COCO_WITH_VOC_LABELS_V1``) were
trained on COCO train2017 and scored on COCO val2017, both turned into VOC's 21 classes by its
``references/segmentation/coco_utils.py`` (``get_coco``). This loader applies the same rules:

1. Only instances of the 20 COCO categories that are VOC classes are kept
   (``FilterAndRemapCocoCategories`` with :data:`CAT_LIST`); their category becomes the VOC
   class index (airplane 5 -> aeroplane 1, ..., tv 72 -> tvmonitor 20). Every other category is
   dropped, so its pixels are background (0), a class that is trained and scored, not void.
2. Each kept instance is drawn at the image's size with pycocotools (``frPyObjects`` then
   ``decode``: polygons, and the uncompressed RLE of crowd regions, which are kept); a pixel
   covered by one instance takes its class, by none 0, and by two or more, of any classes,
   255, void (``ConvertCocoPolysToMask``: "discard overlapping instances").
3. Images are read as stored, EXIF orientation ignored: COCO's polygons are drawn on the stored
   pixels and torchvision's ``CocoDetection`` reads them with ``Image.open(...).convert("RGB")``.
4. ``train2017`` keeps only the images whose kept instances exist and cover an ``area`` (the
   annotation field) of more than 1000 pixels in total (``_coco_remove_images_without_annotations``
   applied to the training set); ``val2017`` keeps every image, 5,000, those without any VOC
   instance included (all background). Images are in order of their COCO id, as
   ``CocoDetection``'s.

The root is laid out as COCO ships::

    <root>/
      train2017/<file_name>.jpg           train2017.zip (for training)
      val2017/<file_name>.jpg             val2017.zip
      annotations/instances_train2017.json  annotations_trainval2017.zip
      annotations/instances_val2017.json

Records are ``{"image": [H, W, 3] uint8 RGB, "label": [H, W] uint8 (0..20, 255 void), "id":
str}`` with the file's stem (``000000397133``) as id. torchvision scores its weights after
resizing the shorter side to 520; that resize travels with the weights (their metadata's
``eval_resize``), not with this dataset. Drawing the masks needs ``pycocotools`` (the ``coco``
extra), imported when a split is opened.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

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
from fcn_jax.data.io import read_image_as_stored
from fcn_jax.errors import FCNError
from fcn_jax.resources import voc_class_names

LAYOUT = """\
<root>/
  train2017/<file_name>.jpg             (training only)
  val2017/<file_name>.jpg
  annotations/instances_train2017.json  (training only)
  annotations/instances_val2017.json
from https://cocodataset.org/#download: train2017.zip, val2017.zip and
annotations_trainval2017.zip, unpacked into <root>"""

# The 20 VOC classes in VOC's order as COCO's (category id, name). COCO names six of them
# differently (aeroplane/airplane, diningtable/dining table, motorbike/motorcycle,
# pottedplant/potted plant, sofa/couch, tvmonitor/tv); the names are checked against the
# annotation file so that another category table cannot be remapped silently.
VOC_CATEGORIES = (
    (5, "airplane"),
    (2, "bicycle"),
    (16, "bird"),
    (9, "boat"),
    (44, "bottle"),
    (6, "bus"),
    (3, "car"),
    (17, "cat"),
    (62, "chair"),
    (21, "cow"),
    (67, "dining table"),
    (18, "dog"),
    (19, "horse"),
    (4, "motorcycle"),
    (1, "person"),
    (64, "potted plant"),
    (20, "sheep"),
    (63, "couch"),
    (7, "train"),
    (72, "tv"),
)
# torchvision's CAT_LIST: COCO category id at each VOC index. Index 0 is background, and its id
# 0 is no COCO category, so no instance maps to it (one would count towards overlaps, as there).
CAT_LIST = (0, *(cat_id for cat_id, _ in VOC_CATEGORIES))
VOC_INDEX = {cat_id: index for index, cat_id in enumerate(CAT_LIST)}
# Splits, and whether images without (enough) VOC instances are dropped: torchvision drops
# them from its training set only.
SPLITS = {"train2017": True, "val2017": False}
MIN_AREA = 1000  # a training image's VOC instances must cover more than this (COCO's "area")


class Instance(NamedTuple):
    """One kept COCO annotation.

    Attributes:
        voc_class: the VOC class index (1..20).
        segmentation: the annotation's ``segmentation``: polygons ``[[x0, y0, x1, y1, ...],
            ...]`` or an RLE ``{"size": [h, w], "counts": ...}``.
        ann_id: the annotation's id (named in errors).
        area: the annotation's ``area`` field (pixels).
    """

    voc_class: int
    segmentation: Any
    ann_id: Any
    area: float


class ImageEntry(NamedTuple):
    """One image of the split: its file and its kept instances."""

    coco_id: int
    file_name: str
    height: int
    width: int
    instances: tuple[Instance, ...]


def mask_api() -> ModuleType:
    """``pycocotools.mask``, or an error saying how to install it."""
    try:
        from pycocotools import mask
    except ImportError:
        raise FCNError(
            "the coco_voc dataset draws COCO's polygons and RLEs with pycocotools, which is not "
            "installed: pip install pycocotools (or the extra: pip install 'fcn-jax[coco]')"
        ) from None
    return mask


def instance_mask(
    segmentation: Any, height: int, width: int, api: ModuleType, where: str
) -> np.ndarray:
    """[H, W] bool: the pixels of one annotation, drawn as torchvision draws them.

    ``frPyObjects(segmentation, height, width)`` then ``decode``, and the union of an
    annotation's parts (``convert_coco_poly_to_mask``). A compressed RLE (``counts`` a string,
    which COCO's instance files do not hold but other COCO-format files may) is decoded as it is:
    ``frPyObjects`` cannot read it.

    Args:
        segmentation: the annotation's ``segmentation``.
        height: image height.
        width: image width.
        api: ``pycocotools.mask``.
        where: the annotation, for errors.
    """
    try:
        if isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), str | bytes):
            counts = segmentation["counts"]
            rles = {"size": list(segmentation["size"]), "counts": counts}
            if isinstance(counts, str):
                rles["counts"] = counts.encode("ascii")
        else:
            rles = api.frPyObjects(segmentation, height, width)
        mask = api.decode(rles)
    except Exception as e:  # pycocotools raises bare Exception, TypeError, IndexError...
        raise FCNError(
            f"{where}: pycocotools cannot read its segmentation ({type(e).__name__}: {e}); "
            "expected polygons [[x0, y0, x1, y1, ...], ...] or an RLE {size, counts}"
        ) from None
    if mask.ndim < 3:  # one RLE decodes to [H, W], a list of polygons to [H, W, parts]
        mask = mask[..., None]
    if mask.shape[:2] != (height, width):
        raise FCNError(
            f"{where}: its RLE is {mask.shape[0]}x{mask.shape[1]} but the image is "
            f"{height}x{width}; does the annotation file belong to these images?"
        )
    return mask.any(axis=2)


def voc_label(
    instances: Sequence[Instance], height: int, width: int, where: str = "image"
) -> np.ndarray:
    """[H, W] uint8 VOC label of an image from its kept instances (torchvision's rules).

    A pixel covered by exactly one instance takes its class, by none 0 (background), by two or
    more 255 (void), whatever their classes: torchvision's ``(masks * cats).max(0)`` with
    ``target[masks.sum(0) > 1] = 255``, accumulated one instance at a time.
    """
    label = np.zeros((height, width), np.uint8)
    if not instances:
        return label
    api = mask_api()
    covered = np.zeros((height, width), np.int32)  # instances covering each pixel
    for inst in instances:
        mask = instance_mask(
            inst.segmentation, height, width, api, f"{where}, annotation id {inst.ann_id}"
        )
        np.maximum(label, np.where(mask, np.uint8(inst.voc_class), np.uint8(0)), out=label)
        covered += mask
    label[covered > 1] = IGNORE_LABEL
    return label


def _missing_annotations(path: Path) -> FCNError:
    return FCNError(
        f"COCO annotations {path} not found: download annotations_trainval2017.zip from "
        f"https://cocodataset.org/#download and unpack it into {path.parent.parent} (it holds "
        f"annotations/instances_train2017.json and instances_val2017.json). Expected "
        f"layout:\n{LAYOUT}"
    )


def read_instances(path: Path, drop_unannotated: bool) -> list[ImageEntry]:
    """The split's images with their VOC instances, from a COCO ``instances_*.json``.

    Args:
        path: the annotation file.
        drop_unannotated: drop the images whose VOC instances are absent or cover an ``area``
            of :data:`MIN_AREA` pixels or less (torchvision's rule for its training set).

    Returns:
        The images in order of their COCO id.

    Raises:
        FCNError: the file is missing or not COCO's instances JSON, or names one of the VOC
            category ids differently from COCO.
    """
    if not path.is_file():
        raise _missing_annotations(path)
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        raise FCNError(f"{path} is not a JSON file Python can read (truncated?): {e}") from None
    if not isinstance(data, dict) or not all(
        isinstance(data.get(k), list) for k in ("images", "annotations")
    ):
        raise FCNError(
            f"{path} is not a COCO instances file: it needs lists 'images' and 'annotations'"
        )
    _check_categories(data.get("categories") or [], path)
    instances: dict[Any, list[Instance]] = {}
    try:
        for ann in data["annotations"]:
            voc_class = VOC_INDEX.get(ann["category_id"])
            if voc_class is not None:
                instances.setdefault(ann["image_id"], []).append(
                    Instance(voc_class, ann["segmentation"], ann.get("id"), float(ann["area"]))
                )
        images = sorted(data["images"], key=lambda im: im["id"])
        entries = [
            ImageEntry(
                im["id"],
                str(im["file_name"]),
                int(im["height"]),
                int(im["width"]),
                tuple(instances.get(im["id"], ())),
            )
            for im in images
        ]
    except (KeyError, TypeError, ValueError) as e:
        raise FCNError(
            f"{path}: an image or annotation lacks a field COCO's have or holds a bad value "
            f"({type(e).__name__}: {e}); images need id, file_name, height, width and "
            "annotations image_id, category_id, segmentation, area"
        ) from None
    if drop_unannotated:
        entries = [
            e for e in entries if e.instances and sum(i.area for i in e.instances) > MIN_AREA
        ]
    return entries


def _check_categories(categories: list, path: Path) -> None:
    names = {}
    for cat in categories:
        if isinstance(cat, dict) and "id" in cat:
            names[cat["id"]] = cat.get("name")
    wrong = [
        f"{cat_id} is {names[cat_id]!r}, not {name!r}"
        for cat_id, name in VOC_CATEGORIES
        if cat_id in names and names[cat_id] != name
    ]
    if wrong:
        raise FCNError(
            f"{path} does not use COCO's category ids (category {'; '.join(wrong)}): the "
            "coco_voc dataset maps COCO's ids to VOC's classes"
        )


class COCOVOC(SegmentationDataset):
    """A COCO 2017 split as VOC's 21 classes, torchvision's ``get_coco`` (module docstring).

    Attributes:
        root: the COCO folder.
        image_dir: ``<root>/<split>``.
        annotation_file: ``<root>/annotations/instances_<split>.json``.
        entries: sample id -> its :class:`ImageEntry`.
    """

    name = "coco_voc"

    def __init__(self, root: str | Path, split: str = "val2017") -> None:
        """Parse the split's annotation file once and check every image file exists.

        Args:
            root: the folder holding ``<split>/`` and ``annotations/``.
            split: ``train2017`` (images without VOC instances dropped, as torchvision's
                training set) or ``val2017`` (every image).

        Raises:
            FCNError: pycocotools missing, an unknown split, a missing root, image folder or
                annotation file (with the layout and where to download it), a malformed
                annotation file, or images it lists that are missing.
        """
        mask_api()  # now, not at the first record, hours into a run
        if split not in SPLITS:
            raise FCNError(
                f"unknown split {split!r} of the coco_voc dataset; known: {', '.join(SPLITS)}"
            )
        self.root = require_dir(Path(root), "COCO root", LAYOUT)
        self.annotation_file = self.root / "annotations" / f"instances_{split}.json"
        if not self.annotation_file.is_file():
            raise _missing_annotations(self.annotation_file)
        self.image_dir = require_dir(self.root / split, f"COCO {split} images", LAYOUT)
        entries = read_instances(self.annotation_file, drop_unannotated=SPLITS[split])
        self.entries = {Path(e.file_name).stem: e for e in entries}
        if len(self.entries) != len(entries):
            raise FCNError(f"{self.annotation_file} lists two images with the same file name")
        try:
            require_files([self.image_dir / e.file_name for e in entries], "images")
        except FCNError as e:
            raise FCNError(
                f"{e}\n(images listed in {self.annotation_file}; unpack {split}.zip into "
                f"{self.root})"
            ) from None
        super().__init__(split, list(self.entries), voc_class_names())

    def files(self, sample_id: str) -> tuple[Path, Path]:
        """(image, annotation file) of a sample."""
        return self.image_dir / self.entries[sample_id].file_name, self.annotation_file

    def load(self, sample_id: str) -> Record:
        """Read one sample and draw its label.

        Returns:
            ``image`` [H, W, 3] uint8 RGB as stored, ``label`` [H, W] uint8 (0..20, 255), ``id``.
        """
        entry = self.entries[sample_id]
        path = self.image_dir / entry.file_name
        image = read_image_as_stored(path)
        height, width = image.shape[:2]
        if (height, width) != (entry.height, entry.width):
            raise FCNError(
                f"{path} is {height}x{width} but {self.annotation_file} says "
                f"{entry.height}x{entry.width} (image id {entry.coco_id}); the annotations are "
                "drawn at the image's size: are these the images of this annotation file?"
            )
        where = f"{self.annotation_file}, image {entry.file_name}"
        label = voc_label(entry.instances, height, width, where)
        return {"image": image, "label": label, "id": sample_id}


def make(config: ml_collections.ConfigDict, split: str) -> SegmentationDataset:
    """The ``coco_voc`` dataset of configs, read from ``config.data.root``.

    Args:
        config: a config whose ``data.root`` holds COCO 2017 (see the module docstring).
        split: ``train2017`` or ``val2017``.
    """
    root = config_root(config, "COCO 2017's train2017/, val2017/ and annotations/")
    return COCOVOC(root, split)
