"""PASCAL VOC / SBD datasets on tiny trees written in the real on-disk formats."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.sparse
from PIL import Image

from fcn_jax.data.base import IGNORE_LABEL
from fcn_jax.data.io import read_mat_field
from fcn_jax.data.splits import shipped_split_dir
from fcn_jax.data.voc import SBDSegmentation, VOCSegmentation, pascal
from fcn_jax.errors import FCNError
from fcn_jax.resources import voc_class_names, voc_palette
from tests.utils import write_jpeg, write_list, write_palette_png, write_sbd_mat

# id -> (height, width, a class painted next to the 15 (person) block); sizes vary on purpose
VOC_IDS = {
    "2007_000032": (20, 30, 1),
    "2007_000039": (17, 23, 7),
    "2008_000123": (24, 19, 20),
    "2009_000456": (15, 28, 12),
}
VOC_SPLITS = {
    "train": ["2007_000032", "2007_000039"],
    "val": ["2008_000123", "2009_000456"],
    "trainval": list(VOC_IDS),
}
SBD_IDS = {
    "2008_000002": (18, 26, 3),
    "2008_000003": (21, 17, 9),
    "2008_000007": (16, 22, 20),
    "2008_000009": (23, 25, 5),
    "2008_000016": (19, 20, 11),
}
SBD_SPLITS = {
    "train": ["2008_000002", "2008_000003", "2008_000007"],
    "val": ["2008_000009", "2008_000016"],
}


@dataclasses.dataclass
class Tree:
    """A written dataset root and the arrays written into it."""

    root: Path
    images: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]

    @property
    def devkit(self) -> Path:
        return self.root / "VOCdevkit" / "VOC2012"

    @property
    def sbd(self) -> Path:
        return self.root / "benchmark_RELEASE" / "dataset"


def smooth_image(height: int, width: int, seed: int) -> np.ndarray:
    """[H, W, 3] uint8 gradients, different per channel: survives JPEG nearly unchanged."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    r = 40 + 150 * x / width
    g = 200 - 120 * y / height
    b = np.full_like(x, 30 + 20 * (seed % 8))
    return np.stack([r, g, b], -1).round().astype(np.uint8)


def label_map(height: int, width: int, cls: int) -> np.ndarray:
    """[H, W] uint8: background, a ``cls`` block, a 15 (person) block, a 255 void border."""
    label = np.zeros((height, width), np.uint8)
    label[3:-3, 2 : width // 2] = cls
    label[3:-3, width // 2 : -2] = 15
    label[0, :] = label[-1, :] = label[:, 0] = label[:, -1] = IGNORE_LABEL
    return label


def write_voc(root: Path, year: int, images: dict, labels: dict) -> Path:
    devkit = root / "VOCdevkit" / f"VOC{year}"
    for seed, (sample_id, (h, w, cls)) in enumerate(VOC_IDS.items()):
        images[sample_id] = smooth_image(h, w, seed)
        labels[sample_id] = label_map(h, w, cls)
        write_jpeg(devkit / "JPEGImages" / f"{sample_id}.jpg", images[sample_id])
        write_palette_png(devkit / "SegmentationClass" / f"{sample_id}.png", labels[sample_id])
    for split, ids in VOC_SPLITS.items():
        write_list(devkit / "ImageSets" / "Segmentation" / f"{split}.txt", ids)
    return devkit


def write_sbd(root: Path, images: dict, labels: dict) -> None:
    dataset = root / "benchmark_RELEASE" / "dataset"
    for seed, (sample_id, (h, w, cls)) in enumerate(SBD_IDS.items()):
        label = label_map(h, w, cls)
        label[label == IGNORE_LABEL] = 0  # SBD has no void label
        images[sample_id], labels[sample_id] = smooth_image(h, w, seed + 3), label
        write_jpeg(dataset / "img" / f"{sample_id}.jpg", images[sample_id])
        write_sbd_mat(dataset / "cls" / f"{sample_id}.mat", label)
    for split, ids in SBD_SPLITS.items():
        write_list(dataset / f"{split}.txt", ids)


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    """A root with VOCdevkit/VOC2012 and benchmark_RELEASE/dataset."""
    images: dict[str, np.ndarray] = {}
    labels: dict[str, np.ndarray] = {}
    write_voc(tmp_path, 2012, images, labels)
    write_sbd(tmp_path, images, labels)
    return Tree(tmp_path, images, labels)


def assert_image_close(actual: np.ndarray, expected: np.ndarray) -> None:
    """JPEG is lossy: same shape and dtype, and values within a few levels per channel."""
    assert actual.shape == expected.shape
    assert actual.dtype == np.uint8
    diff = np.abs(actual.astype(int) - expected.astype(int))
    assert diff.mean(axis=(0, 1)).max() < 3, diff.mean(axis=(0, 1))


# --- the written files are what the real datasets hold ----------------------------------------


def test_fixture_writes_real_formats(tree: Tree) -> None:
    sample_id = "2007_000032"
    with Image.open(tree.devkit / "JPEGImages" / f"{sample_id}.jpg") as im:
        assert im.format == "JPEG"
    with Image.open(tree.devkit / "SegmentationClass" / f"{sample_id}.png") as im:
        assert (im.format, im.mode) == ("PNG", "P")
        assert np.array_equal(np.asarray(im.getpalette(), np.uint8), voc_palette().ravel())
    raw = scipy.io.loadmat(tree.sbd / "cls" / "2008_000002.mat")
    assert raw["GTcls"].dtype.names == ("Segmentation", "Boundaries", "CategoriesPresent")
    seg = read_mat_field(tree.sbd / "cls" / "2008_000002.mat", "GTcls", "Segmentation")
    assert seg.dtype == np.uint8
    assert np.array_equal(seg, tree.labels["2008_000002"])


# --- VOC ----------------------------------------------------------------------------------------


def test_voc_records_keys_dtypes_shapes(tree: Tree) -> None:
    ds = VOCSegmentation(tree.root, "trainval")
    assert len(ds) == len(VOC_IDS)
    assert ds.ids == VOC_SPLITS["trainval"]
    for i, (sample_id, (h, w, _)) in enumerate(VOC_IDS.items()):
        record = ds[i]
        assert set(record) == {"image", "label", "id"}
        assert record["id"] == sample_id
        assert (record["image"].shape, record["image"].dtype) == ((h, w, 3), np.uint8)
        assert (record["label"].shape, record["label"].dtype) == ((h, w), np.uint8)


def test_voc_labels_read_as_indices_not_colours(tree: Tree) -> None:
    ds = VOCSegmentation(tree.root, "trainval")
    for i, sample_id in enumerate(ds.ids):
        label = ds[i]["label"]
        assert np.array_equal(label, tree.labels[sample_id])
        assert set(np.unique(label).tolist()) == {0, VOC_IDS[sample_id][2], 15, IGNORE_LABEL}
    label = ds[0]["label"]
    assert label[5, -5] == 15  # person stays 15, not its colour (192, 128, 128)
    assert label[0, 0] == IGNORE_LABEL  # void stays 255, not its colour (224, 224, 192)


def test_voc_images_rgb(tree: Tree) -> None:
    ds = VOCSegmentation(tree.root, "trainval")
    for i, sample_id in enumerate(ds.ids):
        assert_image_close(ds[i]["image"], tree.images[sample_id])


def test_voc_image_channel_order_exact(tree: Tree, rng: np.random.Generator) -> None:
    # Lossless content behind the .jpg name (PIL reads by content) pins R, G, B exactly.
    sample_id = "2007_000039"
    h, w, _ = VOC_IDS[sample_id]
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(image).save(tree.devkit / "JPEGImages" / f"{sample_id}.jpg", format="PNG")
    record = VOCSegmentation(tree.root, "train")[1]
    assert record["id"] == sample_id
    assert np.array_equal(record["image"], image)


def test_voc_attributes(tree: Tree) -> None:
    ds = VOCSegmentation(tree.root, "val")
    assert ds.name == "voc"
    assert ds.split == "val"
    assert ds.devkit == tree.devkit
    assert ds.split_file == tree.devkit / "ImageSets" / "Segmentation" / "val.txt"
    assert ds.n_class == 21
    assert ds.class_names == voc_class_names()
    assert ds.class_names[0] == "background" and ds.class_names[15] == "person"
    assert np.array_equal(ds.palette, voc_palette())
    assert "2 images, 21 classes" in repr(ds)


def test_voc2011_fallback(tmp_path: Path) -> None:
    images: dict = {}
    devkit = write_voc(tmp_path, 2011, images, {})
    ds = VOCSegmentation(tmp_path, "train")
    assert ds.devkit == devkit
    assert ds.devkit.name == "VOC2011"
    assert_image_close(ds[0]["image"], images[ds.ids[0]])


def test_year_argument_picks_devkit(tree: Tree) -> None:
    devkit_2011 = write_voc(tree.root, 2011, {}, {})
    assert VOCSegmentation(tree.root, "train").devkit == tree.devkit  # 2012 first
    assert VOCSegmentation(tree.root, "train", year=2012).devkit == tree.devkit
    assert VOCSegmentation(tree.root, "train", year=2011).devkit == devkit_2011


def test_year_missing_devkit(tree: Tree) -> None:
    with pytest.raises(FCNError, match=r"PASCAL VOC 2011 not found: .*VOC2011.*Expected layout"):
        VOCSegmentation(tree.root, "train", year=2011)


def test_no_devkit_year(tmp_path: Path) -> None:
    (tmp_path / "VOCdevkit" / "VOC2007").mkdir(parents=True)
    with pytest.raises(FCNError, match=r"holds neither VOC2012 or VOC2011.*Expected layout"):
        VOCSegmentation(tmp_path)


def test_split_under_root_wins_over_shipped(tree: Tree) -> None:
    local = tree.devkit / "ImageSets" / "Segmentation" / "seg11valid.txt"
    write_list(local, ["2009_000456", "2007_000039"])
    ds = VOCSegmentation(tree.root)  # seg11valid is the default split
    assert ds.split_file == local
    assert ds.ids == ["2009_000456", "2007_000039"]
    assert ds[0]["id"] == "2009_000456"


def test_shipped_seg11valid_used_without_local_copy(tree: Tree) -> None:
    shipped = shipped_split_dir("voc") / "seg11valid.txt"
    shipped_ids = shipped.read_text().split()
    # The tiny tree holds one of the shipped list's 736 images (2008_000123) and lacks the rest:
    # the error counts and names only the missing ones, and names the list they came from.
    assert "2008_000123" in shipped_ids and "2007_000032" not in shipped_ids
    n_missing = len(shipped_ids) - 1
    with pytest.raises(FCNError) as info:
        VOCSegmentation(tree.root, "seg11valid")
    message = str(info.value)
    assert f"{n_missing} images listed in the split are missing" in message
    assert str(tree.devkit / "JPEGImages" / f"{shipped_ids[0]}.jpg") in message
    assert f"and {n_missing - 5} more" in message
    assert "2008_000123" not in message
    assert f"(ids from split list {shipped})" in message


def test_split_as_path(tree: Tree, tmp_path: Path) -> None:
    custom = tmp_path / "lists" / "mine.txt"
    custom.parent.mkdir()
    custom.write_text("# my own list\n2008_000123\n\n2007_000032\n")
    ds = VOCSegmentation(tree.root, str(custom))
    assert ds.split_file == custom
    assert ds.ids == ["2008_000123", "2007_000032"]
    assert np.array_equal(ds[1]["label"], tree.labels["2007_000032"])


def test_split_path_missing(tree: Tree, tmp_path: Path) -> None:
    with pytest.raises(FCNError, match=r"split file .*nope\.txt does not exist"):
        VOCSegmentation(tree.root, str(tmp_path / "nope.txt"))


def test_empty_split_list(tree: Tree) -> None:
    write_list(tree.devkit / "ImageSets" / "Segmentation" / "empty.txt", [])
    with pytest.raises(FCNError, match=r"empty\.txt lists no ids"):
        VOCSegmentation(tree.root, "empty")


# --- SBD ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("split", ["train", "val"])
def test_sbd_records(tree: Tree, split: str) -> None:
    ds = SBDSegmentation(tree.root, split)
    assert ds.name == "sbd"
    assert ds.ids == SBD_SPLITS[split]
    assert ds.split_file == tree.sbd / f"{split}.txt"
    assert ds.dataset_dir == tree.sbd
    assert ds.n_class == 21 and ds.class_names == voc_class_names()
    for i, sample_id in enumerate(ds.ids):
        record = ds[i]
        h, w, cls = SBD_IDS[sample_id]
        assert set(record) == {"image", "label", "id"}
        assert record["id"] == sample_id
        assert (record["label"].shape, record["label"].dtype) == ((h, w), np.uint8)
        assert np.array_equal(record["label"], tree.labels[sample_id])
        assert set(np.unique(record["label"]).tolist()) == {0, cls, 15}
        assert_image_close(record["image"], tree.images[sample_id])


def test_sbd_split_as_path(tree: Tree, tmp_path: Path) -> None:
    custom = tmp_path / "sbd_subset.txt"
    custom.write_text("2008_000016\n")
    ds = SBDSegmentation(tree.root, str(custom))
    assert ds.ids == ["2008_000016"]
    assert ds[0]["id"] == "2008_000016"


def test_sbd_double_label_is_cast(tree: Tree) -> None:
    # A .mat re-saved from MATLAB may hold doubles; whole numbers in range are fine.
    sample_id = "2008_000002"
    write_sbd_mat(tree.sbd / "cls" / f"{sample_id}.mat", tree.labels[sample_id].astype(np.float64))
    label = SBDSegmentation(tree.root, "train")[0]["label"]
    assert label.dtype == np.uint8
    assert np.array_equal(label, tree.labels[sample_id])


@pytest.mark.parametrize("bad", [300.0, 1.5, -1.0])
def test_sbd_label_not_castable(tree: Tree, bad: float) -> None:
    label = tree.labels["2008_000002"].astype(np.float64)
    label[4, 4] = bad
    write_sbd_mat(tree.sbd / "cls" / "2008_000002.mat", label)
    with pytest.raises(
        FCNError, match=r"2008_000002\.mat: GTcls\.Segmentation values .* not in 0\.\.255"
    ):
        SBDSegmentation(tree.root, "train")[0]


# --- pascal(): the combined "voc" dataset of configs ------------------------------------------


@pytest.mark.parametrize("split, sbd_split", [("sbd_train", "train"), ("sbd_val", "val")])
def test_pascal_sbd_splits(tree: Tree, split: str, sbd_split: str) -> None:
    ds = pascal(tree.root, split)
    assert isinstance(ds, SBDSegmentation)
    assert ds.ids == SBD_SPLITS[sbd_split]


def test_pascal_voc_splits(tree: Tree) -> None:
    write_list(tree.devkit / "ImageSets" / "Segmentation" / "seg11valid.txt", ["2008_000123"])
    ds = pascal(tree.root, "seg11valid")
    assert isinstance(ds, VOCSegmentation)
    assert ds.ids == ["2008_000123"]
    ds = pascal(tree.root, "train", year=2012)
    assert isinstance(ds, VOCSegmentation)
    assert ds.ids == VOC_SPLITS["train"]


def test_pascal_unknown_split_names_all(tree: Tree) -> None:
    with pytest.raises(FCNError) as info:
        pascal(tree.root, "tarin")
    message = str(info.value)
    assert "unknown split 'tarin'" in message
    assert "seg11valid, train, trainval, val" in message
    assert "sbd_train, sbd_val" in message


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make", [VOCSegmentation, SBDSegmentation, lambda r: pascal(r, "sbd_train")]
)
def test_missing_root_prints_layout(tmp_path: Path, make) -> None:
    with pytest.raises(FCNError, match=r"root not found: .*nowhere is not a directory") as info:
        make(tmp_path / "nowhere")
    message = str(info.value)
    for part in ("Expected layout", "VOCdevkit/VOC2012", "SegmentationClass", "benchmark_RELEASE"):
        assert part in message
    assert "cls/<id>.mat" in message


def test_root_without_devkit(tmp_path: Path) -> None:
    with pytest.raises(FCNError, match=r"VOCdevkit not found: .*VOCdevkit is not a directory"):
        VOCSegmentation(tmp_path)
    with pytest.raises(FCNError, match=r"benchmark_RELEASE/dataset not found.*benchmark_RELEASE"):
        SBDSegmentation(tmp_path)


def test_unknown_split_lists_known(tree: Tree) -> None:
    with pytest.raises(FCNError, match=r"unknown split 'tset'.*seg11valid, train, trainval, val"):
        VOCSegmentation(tree.root, "tset")
    with pytest.raises(FCNError, match=r"unknown split 'seg11valid'.*Known splits: train, val"):
        SBDSegmentation(tree.root, "seg11valid")


@pytest.mark.parametrize(
    "make, rel, what",
    [
        (VOCSegmentation, "VOCdevkit/VOC2012/JPEGImages/2007_000039.jpg", "images"),
        (VOCSegmentation, "VOCdevkit/VOC2012/SegmentationClass/2007_000039.png", "labels"),
        (SBDSegmentation, "benchmark_RELEASE/dataset/img/2008_000003.jpg", "images"),
        (SBDSegmentation, "benchmark_RELEASE/dataset/cls/2008_000003.mat", "labels"),
    ],
)
def test_missing_file_fails_at_construction(tree: Tree, make, rel: str, what: str) -> None:
    (tree.root / rel).unlink()
    pattern = rf"1 {what} listed in the split are missing:\n  {re.escape(str(tree.root / rel))}"
    with pytest.raises(FCNError, match=pattern):
        make(tree.root, "train")


@pytest.mark.parametrize(
    "make, rel",
    [
        (VOCSegmentation, "VOCdevkit/VOC2012/JPEGImages/2007_000039.jpg"),
        (SBDSegmentation, "benchmark_RELEASE/dataset/img/2008_000003.jpg"),
    ],
)
def test_corrupt_jpeg_fails_when_read(tree: Tree, make, rel: str) -> None:
    (tree.root / rel).write_bytes(b"\x00garbage, not a JPEG\xff" * 20)
    ds = make(tree.root, "train")  # only existence is checked up front
    ds[0]
    pattern = rf"{re.escape(str(tree.root / rel))} is not an image PIL can read"
    with pytest.raises(FCNError, match=pattern):
        ds[1]


def test_truncated_jpeg_fails_when_read(tree: Tree) -> None:
    path = tree.devkit / "JPEGImages" / "2007_000039.jpg"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(FCNError, match=rf"{re.escape(str(path))} is not an image"):
        VOCSegmentation(tree.root, "train")[1]


def test_corrupt_mat(tree: Tree) -> None:
    path = tree.sbd / "cls" / "2008_000003.mat"
    path.write_bytes(b"garbage bytes, no MATLAB header" * 10)
    with pytest.raises(FCNError, match=rf"{re.escape(str(path))} is not a MATLAB \.mat file"):
        SBDSegmentation(tree.root, "train")[1]


def test_mat_without_gtcls(tree: Tree) -> None:
    path = tree.sbd / "cls" / "2008_000003.mat"
    scipy.io.savemat(path, {"GTinst": {"Segmentation": tree.labels["2008_000003"]}})
    with pytest.raises(FCNError, match=r"2008_000003\.mat has no GTcls \(found \['GTinst'\]\)"):
        SBDSegmentation(tree.root, "train")[1]


def test_mat_gtcls_without_segmentation(tree: Tree) -> None:
    path = tree.sbd / "cls" / "2008_000003.mat"
    scipy.io.savemat(path, {"GTcls": {"Boundaries": np.zeros((2, 2))}})
    with pytest.raises(FCNError, match=r"has no GTcls\.Segmentation \(found \['Boundaries'\]\)"):
        SBDSegmentation(tree.root, "train")[1]


def test_voc_label_size_differs_from_image(tree: Tree) -> None:
    # 2007_000039's image is 17x23; give it 2007_000032's 20x30 label.
    write_palette_png(
        tree.devkit / "SegmentationClass" / "2007_000039.png", tree.labels["2007_000032"]
    )
    with pytest.raises(
        FCNError,
        match=r"voc 2007_000039 \(.*SegmentationClass/2007_000039\.png\): "
        r"label is 20x30 but its image is 17x23",
    ):
        VOCSegmentation(tree.root, "train")[1]


def test_sbd_label_size_differs_from_image(tree: Tree) -> None:
    write_sbd_mat(tree.sbd / "cls" / "2008_000002.mat", np.zeros((5, 6), np.uint8))
    with pytest.raises(
        FCNError,
        match=r"sbd 2008_000002 \(.*cls/2008_000002\.mat\): label is 5x6 but its image is 18x26",
    ):
        SBDSegmentation(tree.root, "train")[0]


def test_voc_label_value_out_of_range(tree: Tree) -> None:
    label = tree.labels["2007_000032"].copy()
    label[5, 5] = 40
    write_palette_png(tree.devkit / "SegmentationClass" / "2007_000032.png", label)
    with pytest.raises(
        FCNError,
        match=r"voc 2007_000032 \(.*2007_000032\.png\): label values \[40\] are outside \[0, 21\)",
    ):
        VOCSegmentation(tree.root, "train")[0]


def test_sbd_label_value_out_of_range(tree: Tree) -> None:
    label = tree.labels["2008_000007"].copy()
    label[2:4, 2:4] = 21
    write_sbd_mat(tree.sbd / "cls" / "2008_000007.mat", label)
    with pytest.raises(
        FCNError, match=r"sbd 2008_000007 \(.*2008_000007\.mat\): label values \[21\] are outside"
    ):
        SBDSegmentation(tree.root, "train")[2]


def test_colour_label_png(tree: Tree) -> None:
    # A label saved as colours (e.g. converted to RGB by an image editor) cannot be indices.
    path = tree.devkit / "SegmentationClass" / "2007_000032.png"
    Image.fromarray(voc_palette()[tree.labels["2007_000032"]]).save(path)
    with pytest.raises(FCNError, match=rf"label {re.escape(str(path))} is a RGB colour image"):
        VOCSegmentation(tree.root, "train")[0]
