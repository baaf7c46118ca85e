"""PASCAL-Context on tiny trees written in the real on-disk formats.

VOC 2010 JPEGs and ``ImageSets/Main`` lists, the release's ``trainval/<id>.mat`` (``LabelMap``,
uint16 indices into ``labels.txt``), and ``labels.txt`` / ``59_labels.txt`` as ``<index>: <name>``
lines.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import ml_collections
import numpy as np
import pytest
import scipy.io
from PIL import Image

from fcn_jax.data import context
from fcn_jax.data.context import (
    SHIPPED_LABELS,
    SHIPPED_LABELS_59,
    PascalContext,
    build_lookup,
    read_indexed_names,
)
from fcn_jax.errors import FCNError
from tests.utils import write_jpeg, write_list, write_mat

# id -> (height, width); 20x23 = 460 pixels hold every LabelMap value 0..459 once.
IDS = {"2008_000002": (20, 23), "2008_000003": (17, 21), "2010_000050": (19, 18)}
SPLITS = {"train": ["2008_000002", "2008_000003"], "val": ["2010_000050"]}
FULL = [line.split(": ", 1)[1] for line in SHIPPED_LABELS.read_text().splitlines()]  # 459
TASK = [line.split(": ", 1)[1] for line in SHIPPED_LABELS_59.read_text().splitlines()][1:]  # 59
# The three 59-class names spelled differently in labels.txt (the reference layer's renames)
RENAMED = {"diningtable": "table", "bedcloth": "bedclothes", "clothes": "cloth"}


def label_map(height: int, width: int, shift: int) -> np.ndarray:
    """uint16 LabelMap, as the release stores it, cycling through 0..459."""
    return ((np.arange(height * width) + shift) % 460).reshape(height, width).astype(np.uint16)


def write_labels_txt(path: Path, names: list[str], first: int = 1) -> None:
    """A class list in the release's format: ``<index>: <name>`` lines."""
    path.write_text("".join(f"{i}: {name}\n" for i, name in enumerate(names, start=first)))


@dataclasses.dataclass
class Tree:
    root: Path
    images: dict[str, np.ndarray]
    label_maps: dict[str, np.ndarray]

    @property
    def devkit(self) -> Path:
        return self.root / "VOCdevkit" / "VOC2010"

    def image_path(self, sample_id: str) -> Path:
        return self.devkit / "JPEGImages" / f"{sample_id}.jpg"

    def mat_path(self, sample_id: str) -> Path:
        return self.root / "trainval" / f"{sample_id}.mat"


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    """VOC2010 devkit + the release's trainval/, labels.txt and 59_labels.txt."""
    t = Tree(tmp_path, {}, {})
    for seed, (sample_id, (h, w)) in enumerate(IDS.items()):
        t.images[sample_id] = np.full((h, w, 3), (40 * seed, 120, 200), np.uint8)
        t.label_maps[sample_id] = label_map(h, w, 37 * seed)
        write_jpeg(t.image_path(sample_id), t.images[sample_id])
        write_mat(t.mat_path(sample_id), {"LabelMap": t.label_maps[sample_id]})
    main = t.devkit / "ImageSets" / "Main"
    for split, ids in SPLITS.items():
        write_list(main / f"{split}.txt", ids)
    # Main also holds per-class lists ("<id> <+1|-1>"): not splits of this dataset
    (main / "aeroplane_train.txt").write_text("2008_000002 -1\n2008_000003  1\n")
    write_labels_txt(tmp_path / "labels.txt", FULL)
    write_labels_txt(tmp_path / "59_labels.txt", TASK)
    return t


def expected_label(value: int) -> int:
    """The task label of a LabelMap value, by name, independently of the loader."""
    if value == 0:
        return 0
    name = FULL[value - 1].replace(" ", "")
    for position, task_name in enumerate(TASK):
        if RENAMED.get(task_name, task_name) == name:
            return position + 1
    return 0


# --- formats, records, label mapping --------------------------------------------------------


def test_fixture_writes_real_formats(tree: Tree) -> None:
    with Image.open(tree.image_path("2008_000002")) as im:
        assert im.format == "JPEG"
    raw = scipy.io.loadmat(tree.mat_path("2008_000002"))
    assert raw["LabelMap"].dtype == np.uint16
    assert (tree.root / "labels.txt").read_text().splitlines()[:2] == [
        "1: accordion",
        "2: aeroplane",
    ]
    assert len(FULL) == 459 and len(TASK) == 59 and TASK[0] == "aeroplane"


def test_records(tree: Tree) -> None:
    ds = PascalContext(tree.root, "train")
    assert ds.ids == SPLITS["train"]
    for i, sample_id in enumerate(ds.ids):
        record = ds[i]
        assert set(record) == {"image", "label", "id"}
        assert record["id"] == sample_id
        image = record["image"]
        assert (image.shape, image.dtype) == (tree.images[sample_id].shape, np.uint8)
        assert np.abs(image.astype(int) - tree.images[sample_id]).max() <= 3  # JPEG, flat colour
        assert (record["label"].shape, record["label"].dtype) == (IDS[sample_id], np.uint8)


def test_label_mapping_every_index(tree: Tree) -> None:
    ds = PascalContext(tree.root, "train")
    label_map_, label = tree.label_maps["2008_000002"], ds[0]["label"]
    assert sorted(label_map_.ravel().tolist()) == list(range(460))  # every value once
    for value, mapped in zip(label_map_.ravel(), label.ravel(), strict=True):
        assert mapped == expected_label(int(value)), (value, FULL[value - 1])
    assert sorted(set(label.ravel().tolist())) == list(range(60))  # no 255: no void
    assert (label_map_[label == 0] != 0).sum() == 459 - 59  # unmapped classes -> background


@pytest.mark.parametrize(
    "value, name, label",
    [
        (0, None, 0),  # no class in the file: background
        (1, "accordion", 0),  # not among the 59: background, not void
        (3, "air conditioner", 0),
        (459, "wool", 0),
        (2, "aeroplane", 1),
        (427, "tvmonitor", 20),
        (397, "table", 11),  # 59's "diningtable"
        (19, "bedclothes", 52),  # 59's "bedcloth"
        (80, "cloth", 28),  # 59's "clothes"
        (458, "wood", 59),
    ],
)
def test_label_mapping_by_name(tree: Tree, value: int, name: str | None, label: int) -> None:
    ds = PascalContext(tree.root, "train")
    if name is not None:
        assert FULL[value - 1] == name
    label_map_ = tree.label_maps["2008_000002"]
    assert (ds[0]["label"][label_map_ == value] == label).all()
    assert ds.lookup[value] == label
    if label:
        assert ds.class_names[label] == TASK[label - 1]


def test_lookup_table(tree: Tree) -> None:
    ds = PascalContext(tree.root, "val")
    assert (ds.lookup.dtype, ds.lookup.shape) == (np.uint8, (460,))
    assert sorted(ds.lookup[ds.lookup > 0].tolist()) == list(range(1, 60))  # one index each


def test_attributes_and_classes(tree: Tree) -> None:
    ds = PascalContext(tree.root, "val")
    assert ds.name == "context"
    assert ds.split == "val"
    assert (ds.root, ds.devkit) == (tree.root, tree.devkit)
    assert ds.split_file == tree.devkit / "ImageSets" / "Main" / "val.txt"
    assert ds.labels_file == tree.root / "labels.txt"
    assert ds.labels_59_file == tree.root / "59_labels.txt"
    assert ds.n_class == 60
    assert ds.class_names == ("background", *TASK)
    assert ds.class_names[11] == "diningtable" and ds.class_names[59] == "wood"
    assert ds.label_classes == {"label": ds.class_names}
    assert "1 images, 60 classes" in repr(ds)
    assert ds.files("2010_000050") == (tree.image_path("2010_000050"), tree.mat_path("2010_000050"))


def test_shipped_class_lists_used_if_absent(tree: Tree) -> None:
    with_release_lists = PascalContext(tree.root, "train")
    (tree.root / "labels.txt").unlink()
    (tree.root / "59_labels.txt").unlink()
    ds = PascalContext(tree.root, "train")
    assert (ds.labels_file, ds.labels_59_file) == (SHIPPED_LABELS, SHIPPED_LABELS_59)
    assert ds.class_names == ("background", *TASK)  # the shipped "0: background" is not doubled
    assert np.array_equal(ds.lookup, with_release_lists.lookup)
    assert np.array_equal(ds[0]["label"], with_release_lists[0]["label"])


def test_root_class_lists_define_mapping(tree: Tree) -> None:
    # A labels.txt in another order and a 3-class task: labels follow the files, by name.
    write_labels_txt(tree.root / "labels.txt", FULL[::-1])
    (tree.root / "59_labels.txt").write_text("1: sky\n2: person\n3: diningtable\n")
    ds = PascalContext(tree.root, "train")
    assert ds.class_names == ("background", "sky", "person", "diningtable")
    assert ds.n_class == 4
    expected = np.zeros(460, np.uint8)
    for label, name in enumerate(["sky", "person", "table"], start=1):
        expected[459 - FULL.index(name)] = label  # index of name in the reversed list
    assert np.array_equal(ds.lookup, expected)
    label_map_ = tree.label_maps["2008_000002"]
    assert np.array_equal(ds[0]["label"], expected[label_map_])


def test_59_list_of_bare_names(tree: Tree) -> None:
    (tree.root / "59_labels.txt").write_text("background\nbed clothes\ncat\n")
    ds = PascalContext(tree.root, "val")
    assert ds.class_names == ("background", "bed clothes", "cat")
    assert ds.lookup[FULL.index("bedclothes") + 1] == 1  # compared without spaces
    assert ds.lookup[FULL.index("cat") + 1] == 2


def test_read_indexed_names_and_build_lookup() -> None:
    entries = read_indexed_names(SHIPPED_LABELS_59)
    assert entries[0] == (0, "background") and entries[-1] == (59, "wood")
    lookup, names = build_lookup(SHIPPED_LABELS, SHIPPED_LABELS_59)
    assert names == ("background", *TASK)
    assert lookup[FULL.index("sky") + 1] == names.index("sky")


# --- splits --------------------------------------------------------------------------------


def test_root_list_wins_over_devkit(tree: Tree) -> None:
    write_list(tree.root / "val.txt", ["2008_000003", "2010_000050"])
    ds = PascalContext(tree.root, "val")
    assert ds.split_file == tree.root / "val.txt"
    assert ds.ids == ["2008_000003", "2010_000050"]


def test_split_as_path(tree: Tree, tmp_path: Path) -> None:
    custom = tmp_path / "lists" / "mine.txt"
    write_list(custom, ["2010_000050"])
    ds = PascalContext(tree.root, str(custom))
    assert (ds.split_file, ds.ids) == (custom, ["2010_000050"])


def test_unknown_split(tree: Tree) -> None:
    with pytest.raises(FCNError, match=r"unknown split 'test'.*Known splits: train, val;") as info:
        PascalContext(tree.root, "test")
    assert "aeroplane_train" not in str(info.value)


@pytest.mark.parametrize("split", ["labels", "59_labels"])
def test_class_list_is_not_a_split(tree: Tree, split: str) -> None:
    with pytest.raises(FCNError, match=rf"{split}\.txt is a class list, not a split"):
        PascalContext(tree.root, split)


# --- bad input ----------------------------------------------------------------------------------


def test_missing_root_prints_layout(tmp_path: Path) -> None:
    with pytest.raises(FCNError, match=r"PASCAL-Context root not found: .*nowhere") as info:
        PascalContext(tmp_path / "nowhere")
    message = str(info.value)
    for part in ("Expected layout", "VOCdevkit/VOC2010/", "trainval/<id>.mat", "59_labels.txt"):
        assert part in message


def test_missing_devkit_or_trainval(tree: Tree, tmp_path: Path) -> None:
    with pytest.raises(FCNError, match=r"VOCdevkit/VOC2010 not found: .*Expected layout"):
        PascalContext(tmp_path / "trainval")  # pointed one level too deep
    for path in tree.root.joinpath("trainval").iterdir():
        path.unlink()
    tree.root.joinpath("trainval").rmdir()
    with pytest.raises(FCNError, match=r"PASCAL-Context trainval/ \(the \.mat labels\) not found"):
        PascalContext(tree.root)


@pytest.mark.parametrize("what", ["images", "labels"])
def test_missing_file_fails_at_construction(tree: Tree, what: str) -> None:
    path = tree.image_path("2008_000003") if what == "images" else tree.mat_path("2008_000003")
    path.unlink()
    with pytest.raises(
        FCNError, match=rf"1 {what} listed in the split are missing:\n  {re.escape(str(path))}"
    ) as info:
        PascalContext(tree.root, "train")
    assert "ImageSets/Main/train.txt" in str(info.value)


def test_corrupt_jpeg_fails_when_read(tree: Tree) -> None:
    path = tree.image_path("2008_000003")
    path.write_bytes(b"\x00garbage, not a JPEG\xff" * 20)
    ds = PascalContext(tree.root, "train")
    ds[0]
    with pytest.raises(FCNError, match=rf"{re.escape(str(path))} is not an image PIL can read"):
        ds[1]


def test_corrupt_mat(tree: Tree) -> None:
    path = tree.mat_path("2010_000050")
    path.write_bytes(b"garbage bytes, no MATLAB header" * 10)
    with pytest.raises(FCNError, match=rf"{re.escape(str(path))} is not a MATLAB \.mat file"):
        PascalContext(tree.root, "val")[0]


def test_mat_without_labelmap(tree: Tree) -> None:
    write_mat(tree.mat_path("2010_000050"), {"labelmap": tree.label_maps["2010_000050"]})
    with pytest.raises(
        FCNError, match=r"2010_000050\.mat has no LabelMap \(found \['labelmap'\]\)"
    ):
        PascalContext(tree.root, "val")[0]


def test_label_size_differs_from_image(tree: Tree) -> None:
    write_mat(tree.mat_path("2010_000050"), {"LabelMap": np.ones((5, 6), np.uint16)})
    with pytest.raises(
        FCNError,
        match=r"context 2010_000050 \(.*2010_000050\.jpg, .*trainval/2010_000050\.mat\): "
        r"label is 5x6 but its image is 19x18",
    ):
        PascalContext(tree.root, "val")[0]


@pytest.mark.parametrize(
    "value, dtype, shown", [(460, np.uint16, "460"), (2.5, np.float64, "2.5"), (-1, np.int32, "-1")]
)
def test_labelmap_value_out_of_range(tree: Tree, value, dtype, shown: str) -> None:
    label_map_ = tree.label_maps["2010_000050"].astype(dtype)
    label_map_[4, 4] = value
    write_mat(tree.mat_path("2010_000050"), {"LabelMap": label_map_})
    with pytest.raises(
        FCNError,
        match=rf"label .*2010_000050\.mat: LabelMap values \[{re.escape(shown)}\] are not in "
        r"0\.\.459 \(indices into .*labels\.txt",
    ):
        PascalContext(tree.root, "val")[0]


def test_labelmap_double_is_read(tree: Tree) -> None:
    label_map_ = tree.label_maps["2010_000050"]
    reference = PascalContext(tree.root, "val")[0]["label"]
    write_mat(tree.mat_path("2010_000050"), {"LabelMap": label_map_.astype(np.float64)})
    assert np.array_equal(PascalContext(tree.root, "val")[0]["label"], reference)


def test_malformed_labels_txt(tree: Tree) -> None:
    (tree.root / "labels.txt").write_text("1: accordion\naeroplane\n3: air conditioner\n")
    with pytest.raises(
        FCNError, match=r"labels\.txt line 2: expected '<index>: <name>', got 'aeroplane'"
    ):
        PascalContext(tree.root, "val")


def test_duplicate_index_in_labels_txt(tree: Tree) -> None:
    (tree.root / "labels.txt").write_text("1: accordion\n1: aeroplane\n")
    with pytest.raises(FCNError, match=r"index 1 of 'aeroplane' is not 1-based and unique"):
        PascalContext(tree.root, "val")


def test_task_class_missing_from_labels_txt(tree: Tree) -> None:
    (tree.root / "59_labels.txt").write_text("1: aeroplane\n2: unicorn\n")
    with pytest.raises(
        FCNError, match=r"class 'unicorn' of .*59_labels\.txt is not in .*labels\.txt"
    ):
        PascalContext(tree.root, "val")


def test_task_class_listed_twice(tree: Tree) -> None:
    (tree.root / "59_labels.txt").write_text("1: sky\n2: sky\n")
    with pytest.raises(FCNError, match=r"class 'sky' is listed twice"):
        PascalContext(tree.root, "val")


def test_empty_class_list(tree: Tree) -> None:
    (tree.root / "59_labels.txt").write_text("\n")
    with pytest.raises(FCNError, match=r"59_labels\.txt lists no classes"):
        PascalContext(tree.root, "val")


# --- make(config, split) ---------------------------------------------------------------------


def test_make(tree: Tree) -> None:
    config = ml_collections.ConfigDict({"data": {"name": "context", "root": str(tree.root)}})
    ds = context.make(config, "val")
    assert isinstance(ds, PascalContext) and ds.ids == SPLITS["val"]
    with pytest.raises(FCNError, match=r"config\.data\.root is not set"):
        context.make(ml_collections.ConfigDict({"data": {"name": "context"}}), "val")
