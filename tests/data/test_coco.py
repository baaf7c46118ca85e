"""COCO 2017 as VOC's 21 classes, on a tiny tree in COCO's own formats (tests.utils).

The expected labels are drawn by hand from the tree's rectangles (tests.utils.write_coco_tree),
not with pycocotools, and follow torchvision's ``references/segmentation/coco_utils.py``: VOC
categories remapped by CAT_LIST, others dropped (background), instances' pixels covered twice
void, crowd RLEs kept, train2017 without images whose VOC areas sum to 1000 or less.
"""

from __future__ import annotations

import json
import re
import shutil
import sys

import ml_collections
import numpy as np
import pytest
from PIL import Image

from fcn_jax.data import make_dataset
from fcn_jax.data.coco import CAT_LIST, COCOVOC, VOC_CATEGORIES, Instance, voc_label
from fcn_jax.errors import FCNError
from fcn_jax.resources import voc_class_names
from tests.utils import COCO_SIZE, VOC_CAR, rect, write_coco_tree

IDS = ["000000000139", "000000037777", "000000397133"]  # COCO id order


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    return root, write_coco_tree(root, ("val2017", "train2017"))


def test_torchvision_category_list():
    # coco_utils.get_coco's CAT_LIST, typed in from torchvision's source.
    assert CAT_LIST == (0, 5, 2, 16, 9, 44, 6, 3, 17, 62, 21, 67, 18, 19, 4, 1, 64, 20, 63, 7, 72)
    # VOC's names in the same order (COCO's names differ for six of them).
    voc = voc_class_names()
    assert len(VOC_CATEGORIES) == 20 and voc[0] == "background"
    assert dict(zip(voc[1:], (name for _, name in VOC_CATEGORIES), strict=True))["sofa"] == "couch"


def test_val2017_labels_pixel_for_pixel(tree):
    root, expected = tree
    dataset = COCOVOC(root, "val2017")
    assert dataset.ids == IDS  # every image, in order of COCO id
    assert dataset.class_names == voc_class_names() and dataset.name == "coco_voc"
    for i, sample_id in enumerate(IDS):
        record = dataset[i]
        assert record["id"] == sample_id
        assert record["image"].shape == (*COCO_SIZE, 3) and record["image"].dtype == np.uint8
        np.testing.assert_array_equal(record["label"], expected[sample_id], err_msg=sample_id)
    assert not expected["000000000139"].any()  # no annotations: all background
    crowd = dataset[1]["label"]
    assert (crowd == 255).sum() == 25 and crowd[0, 0] == 0  # crowd x bus void; stop sign 0


def test_train2017_drops_images_without_enough_voc_area(tree):
    root, _ = tree
    # 139: no annotations; 37777: VOC areas 600 + 400 = 1000 (the non-VOC 5000 does not count).
    assert COCOVOC(root, "train2017").ids == ["000000397133"]


def test_make_dataset_from_config(tree):
    root, _ = tree
    c = ml_collections.ConfigDict({"data": {"name": "coco_voc", "root": str(root)}})
    dataset = make_dataset(c, "val2017")
    assert isinstance(dataset, COCOVOC) and len(dataset) == 3
    assert dataset.files(IDS[2]) == (
        root / "val2017" / f"{IDS[2]}.jpg",
        root / "annotations" / "instances_val2017.json",
    )
    c.data.root = None
    with pytest.raises(FCNError, match=r"config\.data\.root is not set.*train2017/, val2017/"):
        make_dataset(c, "val2017")


def test_images_are_read_as_stored_ignoring_exif(tree, tmp_path):
    # COCO's polygons are on the stored pixels, and torchvision reads them so: a JPEG with EXIF
    # orientation 6 (turn a quarter) keeps its stored 30x40 and the label is not turned.
    root, expected = tree
    copy = tmp_path / "coco"
    shutil.copytree(root, copy)
    path = copy / "val2017" / f"{IDS[2]}.jpg"
    with Image.open(path) as im:
        exif = im.getexif()
        exif[0x0112] = 6
        im.save(path, exif=exif, quality=95, subsampling=0)
    with Image.open(path) as im:
        assert im.getexif()[0x0112] == 6
        stored = np.asarray(im.convert("RGB"))
    record = COCOVOC(copy, "val2017")[2]
    np.testing.assert_array_equal(record["image"], stored)
    np.testing.assert_array_equal(record["label"], expected[IDS[2]])


def test_voc_label_rules_directly():
    h, w = 8, 10
    from pycocotools import mask as coco_mask

    block = np.zeros((h, w), np.uint8, order="F")
    block[1:4, 6:9] = 1
    compressed = coco_mask.encode(np.asfortranarray(block))
    # A compressed RLE (counts a string): not in COCO's instance files, read all the same.
    api_rle = {"size": compressed["size"], "counts": compressed["counts"].decode()}
    label = voc_label(
        [
            Instance(VOC_CAR, [rect(0, 0, 3, 3)], 1, 9.0),
            Instance(VOC_CAR, [rect(2, 2, 5, 5)], 2, 9.0),  # same class overlapping: void too
            Instance(3, api_rle, 3, 9.0),
        ],
        h,
        w,
    )
    want = np.zeros((h, w), np.uint8)
    want[0:3, 0:3] = VOC_CAR
    want[2:5, 2:5] = VOC_CAR
    want[2, 2] = 255
    want[1:4, 6:9] = 3
    np.testing.assert_array_equal(label, want)
    assert voc_label([], h, w).shape == (h, w)


def write_json(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda root: (root / "annotations/instances_val2017.json").unlink(),
         r"COCO annotations .*instances_val2017\.json not found: download "
         r"annotations_trainval2017\.zip"),
        (lambda root: (root / f"val2017/{IDS[1]}.jpg").unlink(),
         rf"1 images listed in the split are missing:\n  .*{IDS[1]}\.jpg\n\(images listed in "
         r".*instances_val2017\.json; unpack val2017\.zip"),
        (lambda root: (root / "annotations/instances_val2017.json").write_text("{"),
         r"instances_val2017\.json is not a JSON file"),
        (lambda root: write_json(
            root / "annotations/instances_val2017.json",
            lambda d: d["categories"].append({"id": 5, "name": "kite"})),
         r"does not use COCO's category ids \(category 5 is 'kite', not 'airplane'\)"),
        (lambda root: write_json(
            root / "annotations/instances_val2017.json", lambda d: d["images"][0].pop("width")),
         r"an image or annotation lacks a field .*KeyError: 'width'"),
        (lambda root: write_json(root / "annotations/instances_val2017.json", lambda d: d.pop("images")),  # noqa: E501
         r"is not a COCO instances file"),
    ],
)  # fmt: skip
def test_bad_trees_name_the_file(tree, tmp_path, change, message):
    root = tmp_path / "coco"
    shutil.copytree(tree[0], root)
    change(root)
    with pytest.raises(FCNError, match=message):
        COCOVOC(root, "val2017")


def test_bad_records_name_the_file_and_annotation(tree, tmp_path):
    root = tmp_path / "coco"
    shutil.copytree(tree[0], root)
    path = root / "annotations/instances_val2017.json"
    write_json(path, lambda d: d["annotations"][1].update(segmentation=[]))  # 37777's bus
    with pytest.raises(FCNError, match=rf"image {IDS[1]}\.jpg, annotation id 2: pycocotools"):
        COCOVOC(root, "val2017")[1]
    # The image on disk is not the size the annotation file says.
    write_json(path, lambda d: d["images"][0].update(height=31))  # 397133
    Image.new("RGB", (40, 30)).save(root / "val2017" / f"{IDS[2]}.jpg")
    with pytest.raises(FCNError, match=r"is 30x40 but .*instances_val2017\.json says 31x40"):
        COCOVOC(root, "val2017")[2]


def test_unknown_split_missing_root_and_pycocotools(tree, tmp_path, monkeypatch):
    root, _ = tree
    with pytest.raises(FCNError, match="unknown split 'val' of the coco_voc dataset; known: "):
        COCOVOC(root, "val")
    with pytest.raises(FCNError, match=re.escape("COCO root not found") + r"(.|\n)*val2017/"):
        COCOVOC(tmp_path / "nowhere", "val2017")
    monkeypatch.setitem(sys.modules, "pycocotools", None)  # as if not installed
    with pytest.raises(FCNError, match=r"pip install pycocotools .*fcn-jax\[coco\]"):
        COCOVOC(root, "val2017")
