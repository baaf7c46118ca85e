"""CamVid on tiny trees in Kaggle's layout: class_dict.csv and colour-coded label PNGs."""

from __future__ import annotations

import re
from pathlib import Path

import ml_collections
import numpy as np
import pytest

from fcn_jax.data.base import IGNORE_LABEL
from fcn_jax.data.camvid import LAYOUT, CamVid, make
from fcn_jax.errors import FCNError
from tests.utils import (
    CAMVID11,
    CAMVID_CLASS_DICT,
    colourise,
    write_camvid_tree,
    write_class_dict,
    write_jpeg,
    write_png,
)

# Kaggle CamVid stems: <sequence>_<frame>
SPLITS = {
    "train": {"0001TP_006690": (20, 28), "0006R0_f00930": (17, 23), "Seq05VD_f00000": (24, 19)},
    "val": {"0016E5_07959": (15, 26), "0016E5_07961": (15, 26)},
    "test": {"0001TP_008550": (18, 22)},
}


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, dict]:
    return tmp_path, write_camvid_tree(tmp_path, SPLITS)


def config(root: Path | None, n_class: int | None = 31) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.data = ml_collections.ConfigDict({"name": "camvid", "root": root and str(root)})
    c.model = ml_collections.ConfigDict({"n_class": n_class})
    return c


def test_reads_every_split(tree) -> None:
    root, written = tree
    for split, sizes in SPLITS.items():
        ds = CamVid(root, split)
        assert ds.name == "camvid"
        assert ds.split == split
        assert ds.ids == sorted(sizes)
        assert len(ds) == len(sizes)
        for i, stem in enumerate(ds.ids):
            record = ds[i]
            image, label = written[stem]
            assert record["id"] == stem
            assert np.array_equal(record["image"], image)  # PNG: lossless
            assert record["label"].dtype == np.uint8
            assert np.array_equal(record["label"], label)
            assert (record["label"] == IGNORE_LABEL).any()


def test_classes_and_palette_from_csv(tree) -> None:
    root, _ = tree
    ds = CamVid(root, "train")
    assert ds.class_names == tuple(n for n, _ in CAMVID_CLASS_DICT if n != "Void")
    assert ds.n_class == 31
    assert ds.palette.shape == (256, 3)
    assert ds.palette[21].tolist() == [128, 128, 128]  # Sky
    assert ds.palette[30].tolist() == [64, 192, 0]  # Wall, after the skipped Void row
    assert ds.palette[IGNORE_LABEL].tolist() == [0, 0, 0]
    # The palette re-colours a label into the dataset's own label image.
    label = ds[0]["label"]
    assert np.array_equal(ds.palette[label], colourise(label))
    assert repr(ds) == "CamVid(split='train', 3 images, 31 classes)"


def test_files(tree) -> None:
    root, _ = tree
    ds = CamVid(root, "val")
    assert ds.files("0016E5_07959") == (
        root / "val" / "0016E5_07959.png",
        root / "val_labels" / "0016E5_07959_L.png",
    )


@pytest.mark.parametrize("suffix", ["_L", ""])
def test_both_label_namings(tmp_path: Path, suffix: str) -> None:
    written = write_camvid_tree(tmp_path, {"train": SPLITS["train"]}, label_suffix=suffix)
    ds = CamVid(tmp_path, "train")
    assert ds.files("0001TP_006690")[1].name == f"0001TP_006690{suffix}.png"
    for i, stem in enumerate(ds.ids):
        assert np.array_equal(ds[i]["label"], written[stem][1])


def test_mixed_label_namings_in_one_split(tree) -> None:
    root, written = tree
    labels = root / "train_labels"
    (labels / "0006R0_f00930_L.png").rename(labels / "0006R0_f00930.png")
    ds = CamVid(root, "train")
    assert [ds.files(s)[1].name for s in ds.ids] == [
        "0001TP_006690_L.png",
        "0006R0_f00930.png",
        "Seq05VD_f00000_L.png",
    ]
    assert np.array_equal(ds[1]["label"], written["0006R0_f00930"][1])


def test_stem_ending_in_L(tmp_path: Path, rng) -> None:
    # An image whose own stem ends in _L pairs with <stem>_L.png or <stem>.png, never a prefix.
    write_class_dict(tmp_path / "class_dict.csv")
    label = np.full((5, 6), 3, np.uint8)
    write_png(tmp_path / "train" / "a_L.png", rng.integers(0, 255, (5, 6, 3), dtype=np.uint8))
    write_png(tmp_path / "train_labels" / "a_L.png", colourise(label))
    ds = CamVid(tmp_path, "train")
    assert ds.ids == ["a_L"]
    assert np.array_equal(ds[0]["label"], label)


def test_jpg_images(tmp_path: Path) -> None:
    written = write_camvid_tree(tmp_path, {"val": SPLITS["val"]}, image_ext=".jpg")
    ds = CamVid(tmp_path, "val")
    assert ds.files(ds.ids[0])[0].suffix == ".jpg"
    record = ds[0]
    image, label = written[ds.ids[0]]
    assert record["image"].shape == image.shape
    assert np.array_equal(record["label"], label)


def test_hidden_and_other_files_ignored(tree) -> None:
    root, _ = tree
    (root / "train" / ".DS_Store").write_bytes(b"\0\0")
    (root / "train_labels" / "Thumbs.db").write_bytes(b"\0\0")
    (root / "train" / "notes.txt").write_text("hello")
    assert len(CamVid(root, "train")) == 3


# --- bad trees ------------------------------------------------------------------------------


def test_missing_root_prints_layout(tmp_path: Path) -> None:
    with pytest.raises(FCNError, match=r"CamVid root not found: .*nowhere is not a directory"):
        CamVid(tmp_path / "nowhere", "train")
    with pytest.raises(FCNError) as info:
        CamVid(tmp_path / "nowhere", "train")
    assert LAYOUT in str(info.value)
    for part in ("class_dict.csv", "train_labels/<stem>_L.png", "test_labels"):
        assert part in str(info.value)


def test_missing_class_dict(tree) -> None:
    root, _ = tree
    (root / "class_dict.csv").unlink()
    with pytest.raises(FCNError, match=r"class_dict\.csv not found\. Expected layout:\n<root>/"):
        CamVid(root, "train")


def test_bad_class_dict_named(tree) -> None:
    root, _ = tree
    (root / "class_dict.csv").write_text("name,r,g,b\nSky,300,0,0\n")
    with pytest.raises(FCNError, match=r"class_dict\.csv, line 2: colour value '300'"):
        CamVid(root, "train")


def test_unknown_split_lists_splits(tree) -> None:
    root, _ = tree
    with pytest.raises(
        FCNError,
        match=r"split 'tarin' not found: .*tarin is not a directory\. Splits in .*: "
        r"test, train, val",
    ):
        CamVid(root, "tarin")


def test_missing_labels_folder(tree) -> None:
    root, _ = tree
    (root / "val_labels").rename(root / "val_labels_old")
    with pytest.raises(FCNError, match=r"split 'val' not found: .*val_labels is not a directory"):
        CamVid(root, "val")


def test_image_without_label(tree) -> None:
    root, _ = tree
    (root / "train_labels" / "0006R0_f00930_L.png").unlink()
    with pytest.raises(FCNError) as info:
        CamVid(root, "train")
    message = str(info.value)
    assert f"1 images have no label in {root / 'train_labels'}" in message
    assert "expected <stem>_L.png or <stem>.png" in message
    assert str(root / "train" / "0006R0_f00930.png") in message


def test_label_without_image(tree) -> None:
    root, _ = tree
    (root / "test" / "0001TP_008550.png").rename(root / "test" / "0001TP_008551.png")
    with pytest.raises(FCNError, match="images have no label"):
        CamVid(root, "test")
    (root / "test" / "0001TP_008551.png").unlink()
    write_png(root / "test" / "x.png", np.zeros((4, 4, 3), np.uint8))
    write_png(root / "test_labels" / "x_L.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(FCNError) as info:
        CamVid(root, "test")
    assert f"1 labels in {root / 'test_labels'} have no image in {root / 'test'}" in str(info.value)
    assert str(root / "test_labels" / "0001TP_008550_L.png") in str(info.value)


def test_many_unpaired_are_counted(tree) -> None:
    root, _ = tree
    for i in range(7):
        write_png(root / "val_labels" / f"stray_{i}_L.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(FCNError, match=r"(?s)7 labels in .* have no image.*\n  \.\.\. and 2 more"):
        CamVid(root, "val")


def test_two_labels_for_one_image(tree) -> None:
    root, _ = tree
    labels = root / "train_labels"
    (labels / "0001TP_006690.png").write_bytes((labels / "0001TP_006690_L.png").read_bytes())
    with pytest.raises(FCNError, match=r"0001TP_006690\.png has two labels, .*_L\.png and .*"):
        CamVid(root, "train")


def test_two_images_with_one_stem(tree) -> None:
    root, written = tree
    write_jpeg(root / "train" / "0001TP_006690.jpg", written["0001TP_006690"][0])
    with pytest.raises(
        FCNError, match=r"images .*0001TP_006690\.jpg and .*0001TP_006690\.png have the same stem"
    ):
        CamVid(root, "train")


def test_jpeg_label_is_named(tree) -> None:
    root, written = tree
    labels = root / "train_labels"
    (labels / "0001TP_006690_L.png").unlink()
    write_jpeg(labels / "0001TP_006690_L.jpg", colourise(written["0001TP_006690"][1]))
    with pytest.raises(FCNError) as info:
        CamVid(root, "train")
    assert "found labels in another format, e.g. " in str(info.value)
    assert "0001TP_006690_L.jpg: labels must be .png" in str(info.value)


def test_empty_split(tree) -> None:
    root, _ = tree
    (root / "empty").mkdir()
    (root / "empty_labels").mkdir()
    with pytest.raises(FCNError, match=r"no images in .*empty \(looked for \.png, \.jpg, \.jpeg"):
        CamVid(root, "empty")


def test_corrupt_image_and_label(tree) -> None:
    root, _ = tree
    image = root / "train" / "0006R0_f00930.png"
    image.write_bytes(b"not a png at all" * 10)
    ds = CamVid(root, "train")  # files are only checked to exist up front
    ds[0]
    with pytest.raises(FCNError, match=rf"{re.escape(str(image))} is not an image PIL can read"):
        ds[1]
    label = root / "train_labels" / "Seq05VD_f00000_L.png"
    label.write_bytes(label.read_bytes()[:60])  # truncated
    with pytest.raises(FCNError, match=rf"{re.escape(str(label))} is not an image"):
        ds[2]


def test_label_size_differs_from_image(tree) -> None:
    root, written = tree
    # 0006R0_f00930 is 17x23; give it a 20x28 label.
    write_png(root / "train_labels" / "0006R0_f00930_L.png", colourise(written["0001TP_006690"][1]))
    with pytest.raises(
        FCNError,
        match=r"camvid 0006R0_f00930 \(.*0006R0_f00930_L\.png\): label is 20x28 but its image "
        r"is 17x23",
    ):
        CamVid(root, "train")[1]


def test_unknown_colour_in_label(tree) -> None:
    root, written = tree
    rgb = colourise(written["0016E5_07961"][1])
    rgb[3, 4] = (1, 2, 3)
    path = root / "val_labels" / "0016E5_07961_L.png"
    write_png(path, rgb)
    ds = CamVid(root, "val")
    with pytest.raises(FCNError) as info:
        ds[1]
    message = str(info.value)
    assert f"label {path}: colour (1, 2, 3) at pixel (row 3, col 4)" in message
    assert str(root / "class_dict.csv") in message


# --- make(config, split) ------------------------------------------------------------------------


def test_make(tree) -> None:
    root, _ = tree
    ds = make(config(root), "val")
    assert isinstance(ds, CamVid)
    assert ds.ids == sorted(SPLITS["val"])


def test_make_without_root() -> None:
    with pytest.raises(FCNError, match=r"config\.data\.root is not set: pass --config\.data\.root"):
        make(config(None), "train")


def test_make_checks_n_class(tree) -> None:
    root, _ = tree
    with pytest.raises(
        FCNError,
        match=r"config\.model\.n_class is 32 but the camvid data has 31 classes .*"
        r"--config\.model\.n_class=31",
    ):
        make(config(root, n_class=32), "train")


def test_small_class_dict(tmp_path: Path) -> None:
    rows = (("Sky", (128, 128, 128)), ("unlabelled", (0, 0, 0)), ("Road", (128, 64, 128)))
    written = write_camvid_tree(tmp_path, {"train": {"a": (9, 10)}}, rows=rows)
    ds = make(config(tmp_path, n_class=2), "train")
    assert ds.class_names == ("Sky", "Road")
    assert np.array_equal(ds[0]["label"], written["a"][1])
    assert set(np.unique(ds[0]["label"]).tolist()) <= {0, 1, IGNORE_LABEL}


def test_label_claimed_by_two_images(tmp_path: Path) -> None:
    # Images a.png and a_L.png with the single label a_L.png: both would read it.
    write_class_dict(tmp_path / "class_dict.csv")
    for stem in ("a", "a_L"):
        write_png(tmp_path / "train" / f"{stem}.png", np.zeros((4, 5, 3), np.uint8))
    write_png(tmp_path / "train_labels" / "a_L.png", colourise(np.zeros((4, 5), np.uint8)))
    with pytest.raises(FCNError, match=r"label .*a_L\.png would pair with two images"):
        CamVid(tmp_path, "train")


# --- void as an ordinary class (SpeedPaper's CamVid) ------------------------------------------


def test_void_as_class_is_class_n_when_last(tmp_path: Path) -> None:
    splits = {"train": {"a": (13, 17), "b": (9, 22)}}
    written = write_camvid_tree(tmp_path, splits, CAMVID11)
    c = config(tmp_path, n_class=None)
    c.data.void_as_class = True
    ds = make(c, "train")
    assert ds.n_class == 12 and ds.class_names[11] == "Void" and ds.void_as_class
    for i, stem in enumerate(ds.ids):
        label = written[stem][1]  # 255 where the PNG holds the void colour
        assert (label == IGNORE_LABEL).any()
        assert np.array_equal(ds[i]["label"], np.where(label == IGNORE_LABEL, 11, label))
    assert ds.palette[11].tolist() == [0, 0, 0]
    # A config without the key (every config before it existed) keeps void as 255.
    plain = make(config(tmp_path, n_class=11), "train")
    assert plain.n_class == 11 and not plain.void_as_class
    assert np.array_equal(plain[0]["label"], written["a"][1])
    c.model.n_class = 11
    with pytest.raises(FCNError, match=r"n_class is 11 but the camvid data has 12 classes"):
        make(c, "train")


def test_void_as_class_keeps_the_csv_row_order(tree) -> None:
    # Kaggle's csv: Void is row 30 of 0..31, so it is class 30 and Wall class 31, as
    # SpeedPaper's LabelProcessor (which numbers every row) reads it.
    root, written = tree
    ds = CamVid(root, "val", void_as_class=True)
    assert ds.n_class == 32 and ds.class_names[30:] == ("Void", "Wall")
    for i, stem in enumerate(ds.ids):
        label = written[stem][1].astype(np.int64)
        expected = np.where(label == IGNORE_LABEL, 30, np.where(label >= 30, label + 1, label))
        assert np.array_equal(ds[i]["label"], expected)
