"""Users' own folders: index masks (images/ + masks/) or CamVid-style colour labels, detected."""

from __future__ import annotations

import re
from pathlib import Path

import ml_collections
import numpy as np
import pytest
from PIL import Image

from fcn_jax.data.base import IGNORE_LABEL
from fcn_jax.data.folder import (
    COLOUR_LAYOUT,
    LAYOUT,
    MASK_LAYOUT,
    FolderDataset,
    detect_layout,
    make,
)
from fcn_jax.errors import FCNError
from fcn_jax.resources import voc_palette
from tests.utils import (
    colourise,
    write_camvid_tree,
    write_class_dict,
    write_jpeg,
    write_mask_tree,
    write_png,
)

SPLITS = {
    "train": {"IMG_0001": (20, 28), "IMG_0002": (17, 23), "photo 3": (24, 19)},
    "val": {"IMG_0100": (15, 26), "IMG_0101": (21, 16)},
}
N_CLASS = 4


@pytest.fixture
def masks(tmp_path: Path) -> tuple[Path, dict]:
    return tmp_path, write_mask_tree(tmp_path, SPLITS, N_CLASS)


def config(root: Path | None, n_class: int | None = N_CLASS) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.data = ml_collections.ConfigDict({"name": "folder", "root": root and str(root)})
    c.model = ml_collections.ConfigDict({"n_class": n_class})
    return c


def assert_image_close(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape
    assert actual.dtype == np.uint8
    # JPEG of noise is lossy but keeps the mean: the right file, decoded as RGB.
    assert np.abs(actual.astype(float).mean((0, 1)) - expected.mean((0, 1))).max() < 4


# --- index masks ------------------------------------------------------------------------------


def test_masks_with_n_class(masks) -> None:
    root, written = masks
    ds = FolderDataset(root, "train", n_class=N_CLASS)
    assert ds.name == "folder"
    assert ds.layout == MASK_LAYOUT
    assert ds.class_dict is None
    assert ds.class_names == ("class_0", "class_1", "class_2", "class_3")
    assert ds.ids == sorted(SPLITS["train"])
    assert np.array_equal(ds.palette, voc_palette())
    for i, stem in enumerate(ds.ids):
        record = ds[i]
        image, label = written[stem]
        assert record["id"] == stem
        assert_image_close(record["image"], image)
        assert record["label"].dtype == np.uint8
        assert np.array_equal(record["label"], label)
    assert ds.files("IMG_0002") == (
        root / "images" / "train" / "IMG_0002.jpg",
        root / "masks" / "train" / "IMG_0002.png",
    )


def test_classes_txt(tmp_path: Path) -> None:
    names = ["background", "cat", "dog", "bird"]
    write_mask_tree(tmp_path, SPLITS, N_CLASS, classes=names)
    (tmp_path / "classes.txt").write_text("\n".join(names) + "\n\n")  # trailing blank lines
    ds = FolderDataset(tmp_path, "val")
    assert ds.class_names == tuple(names)
    assert FolderDataset(tmp_path, "val", n_class=4).n_class == 4
    with pytest.raises(FCNError, match=r"classes\.txt names 4 classes .* but n_class is 5"):
        FolderDataset(tmp_path, "val", n_class=5)


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("\n \n", r"classes\.txt lists no class names"),
        ("a\nb\na\n", r"classes\.txt: class name 'a' appears twice \(classes 0, 2\)"),
    ],
)
def test_bad_classes_txt(masks, text: str, pattern: str) -> None:
    root, _ = masks
    (root / "classes.txt").write_text(text)
    with pytest.raises(FCNError, match=pattern):
        FolderDataset(root, "train")


def test_no_classes_txt_needs_n_class(masks) -> None:
    root, _ = masks
    with pytest.raises(FCNError, match=r"has no classes\.txt: .*--config\.model\.n_class=N"):
        FolderDataset(root, "train")


def test_png_images_and_palette_masks(tmp_path: Path, rng) -> None:
    # Index masks saved as palette ('P') PNGs, as VOC does: values are the indices.
    written = write_mask_tree(tmp_path, {"train": SPLITS["train"]}, N_CLASS, image_ext=".png")
    for stem, (_, label) in written.items():
        im = Image.frombytes("P", label.shape[::-1], label.tobytes())
        im.putpalette(voc_palette().ravel().tolist())
        im.save(tmp_path / "masks" / "train" / f"{stem}.png")
    ds = FolderDataset(tmp_path, "train", n_class=N_CLASS)
    for i, stem in enumerate(ds.ids):
        assert np.array_equal(ds[i]["image"], written[stem][0])  # PNG: exact
        assert np.array_equal(ds[i]["label"], written[stem][1])


def test_mask_values_out_of_range(masks) -> None:
    root, written = masks
    label = written["IMG_0001"][1].copy()
    label[5, 6] = 7
    write_png(root / "masks" / "train" / "IMG_0001.png", label)
    ds = FolderDataset(root, "train", n_class=N_CLASS)
    with pytest.raises(
        FCNError,
        match=r"folder IMG_0001 \(.*IMG_0001\.jpg, .*masks/train/IMG_0001\.png\): label values "
        r"\[7\] are outside \[0, 4\) and 255",
    ):
        ds[0]


def test_mask_size_differs_from_image(masks) -> None:
    root, _ = masks
    write_png(root / "masks" / "val" / "IMG_0101.png", np.zeros((15, 26), np.uint8))
    with pytest.raises(FCNError, match=r"IMG_0101\.png\): label is 15x26 but its image is 21x16"):
        FolderDataset(root, "val", n_class=N_CLASS)[1]


def test_corrupt_mask_and_image(masks) -> None:
    root, _ = masks
    mask = root / "masks" / "val" / "IMG_0100.png"
    mask.write_bytes(b"\x89PNG garbage" * 8)
    ds = FolderDataset(root, "val", n_class=N_CLASS)
    with pytest.raises(FCNError, match=rf"label {re.escape(str(mask))} is not a PNG PIL can read"):
        ds[0]
    image = root / "images" / "val" / "IMG_0101.jpg"
    image.write_bytes(image.read_bytes()[:100])
    with pytest.raises(FCNError, match=rf"{re.escape(str(image))} is not an image"):
        ds[1]


def test_colour_mask_without_class_dict(masks) -> None:
    root, written = masks
    path = root / "masks" / "train" / "IMG_0001.png"
    write_png(path, colourise(written["IMG_0001"][1]))
    with pytest.raises(
        FCNError, match=rf"{re.escape(str(path))} is a RGB colour image.*need a class_dict\.csv"
    ):
        FolderDataset(root, "train", n_class=N_CLASS)[0]


def test_colour_masks_with_class_dict(tmp_path: Path) -> None:
    rows = (("background", (0, 0, 0)), ("Void", (255, 255, 255)), ("leaf", (0, 200, 0)))
    written = write_mask_tree(tmp_path, {"train": {"a": (8, 9), "b": (10, 7)}}, 2)
    for stem, (_, label) in written.items():
        write_png(tmp_path / "masks" / "train" / f"{stem}.png", colourise(label, rows))
    write_class_dict(tmp_path / "class_dict.csv", rows)
    ds = FolderDataset(tmp_path, "train", n_class=2)
    assert ds.layout == MASK_LAYOUT
    assert ds.class_names == ("background", "leaf")
    assert ds.palette[1].tolist() == [0, 200, 0]
    assert ds.palette[IGNORE_LABEL].tolist() == [255, 255, 255]
    assert np.array_equal(ds[0]["label"], written["a"][1])
    (tmp_path / "classes.txt").write_text("background\nleaf\n")
    with pytest.raises(FCNError, match=r"both classes\.txt .* and class_dict\.csv"):
        FolderDataset(tmp_path, "train")


@pytest.mark.parametrize("side", ["image", "mask"])
def test_unpaired_file(masks, side: str) -> None:
    root, _ = masks
    if side == "image":
        extra = root / "images" / "train" / "IMG_0009.jpg"
        write_jpeg(extra, np.zeros((4, 4, 3), np.uint8))
        pattern = r"1 images have no label in .*masks/train \(expected <stem>\.png\):\n  "
    else:
        extra = root / "masks" / "train" / "IMG_0009.png"
        write_png(extra, np.zeros((4, 4), np.uint8))
        pattern = r"1 labels in .*masks/train have no image in .*images/train .*:\n  "
    with pytest.raises(FCNError, match=pattern + re.escape(str(extra))):
        FolderDataset(root, "train", n_class=N_CLASS)


def test_jpeg_mask_is_refused(masks) -> None:
    root, written = masks
    (root / "masks" / "val" / "IMG_0100.png").unlink()
    write_jpeg(root / "masks" / "val" / "IMG_0100.jpg", written["IMG_0100"][0])
    with pytest.raises(FCNError, match=r"IMG_0100\.jpg: labels must be \.png"):
        FolderDataset(root, "val", n_class=N_CLASS)


def test_unknown_split_lists_splits(masks) -> None:
    root, _ = masks
    with pytest.raises(
        FCNError,
        match=r"split 'test' not found: .*images/test is not a directory\. Splits in .*: "
        r"train, val\. Expected layout",
    ):
        FolderDataset(root, "test", n_class=N_CLASS)


def test_masks_folder_missing(masks) -> None:
    root, _ = masks
    (root / "masks").rename(root / "labels")
    with pytest.raises(FCNError, match=r"masks folder not found: .*masks is not a directory"):
        FolderDataset(root, "train", n_class=N_CLASS)


# --- CamVid-style colour labels ------------------------------------------------------------------


def test_colour_layout_detected(tmp_path: Path) -> None:
    written = write_camvid_tree(tmp_path, {"train": SPLITS["train"]}, label_suffix="")
    ds = FolderDataset(tmp_path, "train", n_class=31)
    assert ds.layout == COLOUR_LAYOUT
    assert ds.class_dict is not None
    assert ds.n_class == 31
    assert ds.class_names[-1] == "Wall"
    assert ds.palette[30].tolist() == [64, 192, 0]
    for i, stem in enumerate(ds.ids):
        assert np.array_equal(ds[i]["image"], written[stem][0])
        assert np.array_equal(ds[i]["label"], written[stem][1])
    with pytest.raises(FCNError, match=r"class_dict\.csv names 31 classes .* but n_class is 4"):
        FolderDataset(tmp_path, "train", n_class=4)


def test_colour_layout_without_class_dict(tmp_path: Path) -> None:
    write_camvid_tree(tmp_path, {"train": SPLITS["train"]})
    (tmp_path / "class_dict.csv").unlink()
    with pytest.raises(FCNError, match=r"class_dict\.csv not found\. Expected layout:\neither"):
        FolderDataset(tmp_path, "train")


def test_colour_layout_unpaired(tmp_path: Path) -> None:
    write_camvid_tree(tmp_path, {"train": SPLITS["train"]})
    (tmp_path / "train" / "IMG_0002.png").unlink()
    with pytest.raises(FCNError, match=r"1 labels in .*train_labels have no image"):
        FolderDataset(tmp_path, "train")


# --- detection and the root ----------------------------------------------------------------------


def test_detect_layout(tmp_path: Path, masks) -> None:
    root, _ = masks
    assert detect_layout(root) == MASK_LAYOUT
    other = tmp_path / "camvid"
    write_camvid_tree(other, {"val": SPLITS["val"]})
    assert detect_layout(other) == COLOUR_LAYOUT


def test_missing_root_prints_both_layouts(tmp_path: Path) -> None:
    with pytest.raises(FCNError, match=r"dataset folder root not found: .*nowhere is not a dir"):
        FolderDataset(tmp_path / "nowhere", "train")
    with pytest.raises(FCNError) as info:
        FolderDataset(tmp_path / "nowhere", "train")
    message = str(info.value)
    assert LAYOUT in message
    for part in ("class_dict.csv", "train_labels/", "images/train/", "masks/train/", "classes.txt"):
        assert part in message


def test_neither_layout(tmp_path: Path) -> None:
    (tmp_path / "pictures").mkdir()
    with pytest.raises(
        FCNError, match=r"holds neither images/ and masks/ nor .* Expected:\neither colour"
    ):
        FolderDataset(tmp_path, "train", n_class=2)


def test_both_layouts(masks) -> None:
    root, _ = masks
    (root / "train_labels").mkdir()
    with pytest.raises(FCNError, match=r"holds both layouts \(images/ or masks/, and train_labels"):
        FolderDataset(root, "train", n_class=N_CLASS)


# --- make(config, split) ------------------------------------------------------------------------


def test_make(masks) -> None:
    root, _ = masks
    ds = make(config(root), "val")
    assert isinstance(ds, FolderDataset)
    assert ds.class_names == ("class_0", "class_1", "class_2", "class_3")
    assert len(ds) == 2


def test_make_without_root() -> None:
    with pytest.raises(FCNError, match=r"config\.data\.root is not set"):
        make(config(None), "train")


# --- SpeedPaper's data: void as a class, grey images --------------------------------------------


def test_colour_layout_void_as_class(tmp_path: Path) -> None:
    rows = (("road", (128, 64, 128)), ("Void", (0, 0, 0)), ("sky", (128, 128, 128)))
    written = write_camvid_tree(tmp_path, {"train": {"a": (8, 9)}}, rows=rows)
    c = config(tmp_path, n_class=3)
    c.data.void_as_class = True
    ds = make(c, "train")
    assert ds.layout == COLOUR_LAYOUT and ds.class_names == ("road", "Void", "sky")
    label = written["a"][1].astype(np.int64)  # 0 road, 1 sky, 255 void
    expected = np.where(label == IGNORE_LABEL, 1, np.where(label == 1, 2, label))
    assert np.array_equal(ds[0]["label"], expected)
    # Index masks keep 255 as void: the option concerns colour labels only.
    masks = tmp_path / "m"
    written = write_mask_tree(masks, {"train": {"a": (8, 9)}}, 3)
    c = config(masks, n_class=3)
    c.data.void_as_class = True
    assert np.array_equal(make(c, "train")[0]["label"], written["a"][1])


@pytest.mark.parametrize("mode", ["L", "LA", "jpeg"])
def test_grey_images_are_read_as_three_equal_channels(tmp_path: Path, mode: str) -> None:
    # SpeedPaper's second version reads grey images with convert("RGB"): each level thrice.
    written = write_mask_tree(tmp_path, {"train": {"a": (12, 10)}}, 5, image_ext=".png")
    grey = np.random.default_rng(1).integers(0, 256, (12, 10), dtype=np.uint8)
    path = tmp_path / "images" / "train" / "a.png"
    if mode == "jpeg":
        path.unlink()
        path = path.with_suffix(".jpg")
        Image.fromarray(grey, "L").save(path, quality=95)
        with Image.open(path) as im:
            assert im.mode == "L"
            grey = np.asarray(im)
    elif mode == "LA":
        alpha = np.full_like(grey, 7)
        Image.fromarray(np.stack([grey, alpha], -1), "LA").save(path)
    else:
        Image.fromarray(grey, "L").save(path)
    record = FolderDataset(tmp_path, "train", n_class=5)[0]
    assert record["image"].shape == (12, 10, 3) and record["image"].dtype == np.uint8
    assert np.array_equal(record["image"], np.repeat(grey[..., None], 3, -1))
    assert np.array_equal(record["label"], written["a"][1])
