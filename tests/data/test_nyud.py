"""NYUDv2 on tiny trees written in the real on-disk formats (PNG images, .mat segmentation)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import ml_collections
import numpy as np
import pytest
import scipy.io
from PIL import Image

from fcn_jax.data import nyud
from fcn_jax.data.base import IGNORE_LABEL, SegmentationDataset, validate_record
from fcn_jax.data.nyud import NYUDv2
from fcn_jax.data.splits import read_split_file, shipped_split_dir
from fcn_jax.errors import FCNError
from tests.utils import write_list, write_mat, write_png

# id -> (height, width); sizes vary on purpose. 7x6 = 42 pixels hold every file value 0..40.
IDS = {"5001": (7, 6), "5002": (6, 8), "5003": (9, 5), "5004": (7, 7)}
SPLITS = {"train": ["5001", "5002"], "val": ["5003"], "test": ["5004"]}
SHIPPED = shipped_split_dir("nyud")


def file_values(height: int, width: int, shift: int) -> np.ndarray:
    """[H, W] uint8 file labels cycling through 0 (void) and 1..40, every value present."""
    return ((np.arange(height * width) + shift) % 41).reshape(height, width).astype(np.uint8)


def expected_label(values: np.ndarray) -> np.ndarray:
    """The reference layer's mapping, written value by value: 0 -> 255, v -> v - 1."""
    out = np.empty(values.shape, np.uint8)
    for index, v in np.ndenumerate(values):
        out[index] = IGNORE_LABEL if v == 0 else int(v) - 1
    return out


@dataclasses.dataclass
class Tree:
    root: Path
    images: dict[str, np.ndarray]
    hha: dict[str, np.ndarray]
    values: dict[str, np.ndarray]  # raw file values of the segmentation .mat

    def image_path(self, sample_id: str) -> Path:
        return self.root / "data" / "images" / f"img_{sample_id}.png"

    def hha_path(self, sample_id: str) -> Path:
        return self.root / "data" / "hha" / f"img_{sample_id}.png"

    def label_path(self, sample_id: str) -> Path:
        return self.root / "segmentation" / f"img_{sample_id}.mat"


def write_sample(root: Path, sample_id: str, height: int, width: int, seed: int) -> tuple:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    hha = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    values = file_values(height, width, seed)
    write_png(root / "data" / "images" / f"img_{sample_id}.png", image)
    write_png(root / "data" / "hha" / f"img_{sample_id}.png", hha)
    write_mat(root / "segmentation" / f"img_{sample_id}.mat", {"segmentation": values})
    return image, hha, values


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    """A root with four samples and its own train/val/test lists."""
    t = Tree(tmp_path, {}, {}, {})
    for seed, (sample_id, (h, w)) in enumerate(IDS.items()):
        t.images[sample_id], t.hha[sample_id], t.values[sample_id] = write_sample(
            tmp_path, sample_id, h, w, seed
        )
    for split, ids in SPLITS.items():
        write_list(tmp_path / f"{split}.txt", ids)
    return t


@pytest.fixture(scope="module")
def shipped_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root holding 2x3 samples for every id of the shipped train and val lists, no lists."""
    root = tmp_path_factory.mktemp("nyud_shipped")
    image = np.zeros((2, 3, 3), np.uint8)
    for split in ("train", "val"):
        for sample_id in read_split_file(SHIPPED / f"{split}.txt"):
            write_png(root / "data" / "images" / f"img_{sample_id}.png", image)
            write_mat(
                root / "segmentation" / f"img_{sample_id}.mat", {"segmentation": image[..., 0]}
            )
    return root


# --- formats, records, label mapping --------------------------------------------------------


def test_fixture_writes_real_formats(tree: Tree) -> None:
    with Image.open(tree.image_path("5001")) as im:
        assert (im.format, im.mode) == ("PNG", "RGB")
    with Image.open(tree.hha_path("5001")) as im:
        assert (im.format, im.mode) == ("PNG", "RGB")
    raw = scipy.io.loadmat(tree.label_path("5001"))
    assert raw["segmentation"].dtype == np.uint8
    assert raw["segmentation"].shape == IDS["5001"]


def test_records_rgb(tree: Tree) -> None:
    ds = NYUDv2(tree.root, "test")
    assert ds.ids == ["5004"] and len(ds) == 1
    record = ds[0]
    assert set(record) == {"image", "label", "id"}
    assert record["id"] == "5004"
    assert np.array_equal(record["image"], tree.images["5004"])  # PNG: exact, RGB order
    assert (record["label"].shape, record["label"].dtype) == (IDS["5004"], np.uint8)


def test_label_mapping_value_by_value(tree: Tree) -> None:
    ds = NYUDv2(tree.root, "train")
    for i, sample_id in enumerate(ds.ids):
        values, label = tree.values[sample_id], ds[i]["label"]
        assert set(values.ravel().tolist()) == set(range(41))
        assert np.array_equal(label, expected_label(values))
        assert set(label.ravel().tolist()) == {*range(40), IGNORE_LABEL}
    label, values = ds[0]["label"], tree.values["5001"]
    assert label[values == 0].tolist() == [IGNORE_LABEL] * int((values == 0).sum())
    assert label[values == 1][0] == 0 and label[values == 40][0] == 39


@pytest.mark.parametrize("dtype", [np.uint16, np.float64, np.int32])
def test_other_label_dtypes(tree: Tree, dtype) -> None:
    values = tree.values["5004"]
    write_mat(tree.label_path("5004"), {"segmentation": values.astype(dtype)})
    label = NYUDv2(tree.root, "test")[0]["label"]
    assert label.dtype == np.uint8
    assert np.array_equal(label, expected_label(values))


@pytest.mark.parametrize(
    "modalities, keys",
    [
        (("image",), ("image",)),
        (("hha",), ("hha",)),
        (("image", "hha"), ("image", "hha")),
        (("hha", "image"), ("image", "hha")),
        ("image,hha", ("image", "hha")),
        (["hha"], ("hha",)),
    ],
)
def test_modalities(tree: Tree, modalities, keys: tuple[str, ...]) -> None:
    ds = NYUDv2(tree.root, "val", modalities=modalities)
    assert ds.modalities == keys
    record = ds[0]
    assert set(record) == {*keys, "label", "id"}
    if "image" in keys:
        assert np.array_equal(record["image"], tree.images["5003"])
    if "hha" in keys:
        assert (record["hha"].shape, record["hha"].dtype) == ((*IDS["5003"], 3), np.uint8)
        assert np.array_equal(record["hha"], tree.hha["5003"])
    paths = {"image": tree.image_path("5003"), "hha": tree.hha_path("5003")}
    assert ds.files("5003") == (*(paths[k] for k in keys), tree.label_path("5003"))


@pytest.mark.parametrize("modalities", [(), ("depth",), ("image", "rgb"), ""])
def test_bad_modalities(tree: Tree, modalities) -> None:
    with pytest.raises(FCNError, match=r"modalities must be a non-empty subset of \('image', "):
        NYUDv2(tree.root, "val", modalities=modalities)


def test_attributes(tree: Tree) -> None:
    ds = NYUDv2(tree.root, "train")
    assert ds.name == "nyud"
    assert ds.split == "train"
    assert ds.root == tree.root
    assert ds.n_class == 40
    assert ds.class_names == nyud.class_names()
    assert ds.class_names[:3] == ("wall", "floor", "cabinet")
    assert ds.class_names[-3:] == ("otherstructure", "otherfurniture", "otherprop")
    assert "void" not in " ".join(ds.class_names)  # the note after the list is not a class
    assert ds.label_classes == {"label": ds.class_names}
    assert "2 images, 40 classes" in repr(ds)


# --- splits --------------------------------------------------------------------------------


def test_root_split_files_win(tree: Tree) -> None:
    for split, ids in SPLITS.items():
        ds = NYUDv2(tree.root, split)
        assert ds.ids == ids
        assert ds.split_files == (tree.root / f"{split}.txt",)


def test_trainval_joins_train_and_val(tree: Tree) -> None:
    ds = NYUDv2(tree.root, "trainval")
    assert ds.ids == SPLITS["train"] + SPLITS["val"]
    assert ds.split_files == (tree.root / "train.txt", tree.root / "val.txt")
    assert [ds[i]["id"] for i in range(len(ds))] == ["5001", "5002", "5003"]


def test_root_trainval_file_wins(tree: Tree) -> None:
    write_list(tree.root / "trainval.txt", ["5004", "5001"])
    ds = NYUDv2(tree.root, "trainval")
    assert ds.ids == ["5004", "5001"]
    assert ds.split_files == (tree.root / "trainval.txt",)


def test_split_as_path(tree: Tree, tmp_path: Path) -> None:
    custom = tmp_path / "lists" / "mine.txt"
    write_list(custom, ["5002", "5004"])
    ds = NYUDv2(tree.root, str(custom))
    assert ds.ids == ["5002", "5004"]
    assert ds.split_files == (custom,)


def test_shipped_lists_sizes() -> None:
    # The paper: 795 training images (train + val), 654 test images.
    train, val, test = (read_split_file(SHIPPED / f"{s}.txt") for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (381, 414, 654)
    assert len(set(train) | set(val)) == 795
    assert not (set(train) | set(val)) & set(test)
    assert all(i.isdigit() for i in train + val + test)


def test_shipped_trainval_is_train_plus_val(shipped_tree: Path) -> None:
    train = read_split_file(SHIPPED / "train.txt")
    val = read_split_file(SHIPPED / "val.txt")
    ds = NYUDv2(shipped_tree, "trainval")
    assert len(ds) == 795
    assert ds.ids == train + val
    assert ds.split_files == (SHIPPED / "train.txt", SHIPPED / "val.txt")
    assert NYUDv2(shipped_tree, "val").ids == val
    record = ds[0]
    assert record["id"] == train[0]
    assert (record["label"] == IGNORE_LABEL).all()  # all-zero file = all void


def test_shipped_test_list_used_without_local_copy(shipped_tree: Path) -> None:
    first = read_split_file(SHIPPED / "test.txt")[0]
    with pytest.raises(FCNError) as info:
        NYUDv2(shipped_tree, "test")
    message = str(info.value)
    assert "654 images listed in the split are missing" in message
    assert str(shipped_tree / "data" / "images" / f"img_{first}.png") in message
    assert f"(ids from split list {SHIPPED / 'test.txt'})" in message


def test_unknown_split(tree: Tree) -> None:
    with pytest.raises(FCNError, match=r"unknown split 'tset'.*test, train, trainval, val"):
        NYUDv2(tree.root, "tset")


# --- bad input ----------------------------------------------------------------------------------


def test_missing_root_prints_layout(tmp_path: Path) -> None:
    with pytest.raises(FCNError, match=r"NYUDv2 root not found: .*nowhere is not a directory"):
        NYUDv2(tmp_path / "nowhere")
    with pytest.raises(FCNError) as info:
        NYUDv2(tmp_path / "nowhere")
    for part in ("Expected layout", "data/images/img_<id>.png", "segmentation/img_<id>.mat"):
        assert part in str(info.value)


@pytest.mark.parametrize(
    "rel, what, modalities",
    [
        ("data/images/img_5002.png", "images", ("image",)),
        ("data/hha/img_5002.png", "HHA images", ("image", "hha")),
        ("segmentation/img_5002.mat", "labels", ("hha",)),
    ],
)
def test_missing_file_fails_at_construction(
    tree: Tree, rel: str, what: str, modalities: tuple[str, ...]
) -> None:
    (tree.root / rel).unlink()
    pattern = rf"1 {what} listed in the split are missing:\n  {re.escape(str(tree.root / rel))}"
    with pytest.raises(FCNError, match=pattern) as info:
        NYUDv2(tree.root, "train", modalities)
    assert f"(ids from split list {tree.root / 'train.txt'})" in str(info.value)


def test_missing_hha_is_fine_for_rgb(tree: Tree) -> None:
    tree.hha_path("5002").unlink()
    assert NYUDv2(tree.root, "train")[1]["id"] == "5002"


@pytest.mark.parametrize("modality", ["image", "hha"])
def test_corrupt_image_fails_when_read(tree: Tree, modality: str) -> None:
    path = tree.image_path("5002") if modality == "image" else tree.hha_path("5002")
    path.write_bytes(b"\x89PNG but not really" * 10)
    ds = NYUDv2(tree.root, "train", (modality,))
    ds[0]
    with pytest.raises(FCNError, match=rf"{re.escape(str(path))} is not an image PIL can read"):
        ds[1]


def test_greyscale_hha_refused(tree: Tree) -> None:
    write_png(tree.hha_path("5004"), tree.hha["5004"][..., 0])
    with pytest.raises(FCNError, match=r"HHA image .*img_5004\.png is a L image; expected 3"):
        NYUDv2(tree.root, "test", ("hha",))[0]


def test_corrupt_mat(tree: Tree) -> None:
    path = tree.label_path("5004")
    path.write_bytes(b"garbage bytes, no MATLAB header" * 10)
    with pytest.raises(FCNError, match=rf"{re.escape(str(path))} is not a MATLAB \.mat file"):
        NYUDv2(tree.root, "test")[0]


def test_mat_without_segmentation(tree: Tree) -> None:
    write_mat(tree.label_path("5004"), {"labels": tree.values["5004"], "depth": np.zeros(3)})
    with pytest.raises(
        FCNError, match=r"img_5004\.mat has no segmentation \(found \['depth', 'labels'\]\)"
    ):
        NYUDv2(tree.root, "test")[0]


def test_label_size_differs_from_image(tree: Tree) -> None:
    write_mat(tree.label_path("5004"), {"segmentation": np.ones((5, 6), np.uint8)})
    with pytest.raises(
        FCNError,
        match=r"nyud 5004 \(.*img_5004\.png, .*img_5004\.mat\): label is 5x6 but its image is 7x7",
    ):
        NYUDv2(tree.root, "test")[0]


def test_hha_size_differs_from_image(tree: Tree) -> None:
    write_png(tree.hha_path("5004"), np.zeros((7, 6, 3), np.uint8))
    with pytest.raises(FCNError, match=r"nyud 5004 .*hha is \(7, 6\) but the other input is"):
        NYUDv2(tree.root, "test", ("image", "hha"))[0]


@pytest.mark.parametrize(
    "value, dtype, shown",
    [(41, np.uint8, "41"), (300, np.uint16, "300"), (-1, np.int16, "-1"), (1.5, np.float64, "1.5")],
)
def test_label_value_out_of_range(tree: Tree, value, dtype, shown: str) -> None:
    values = tree.values["5004"].astype(dtype)
    values[2, 3] = value
    write_mat(tree.label_path("5004"), {"segmentation": values})
    with pytest.raises(
        FCNError,
        match=rf"label .*img_5004\.mat: segmentation values \[{re.escape(shown)}\] are not in "
        r"0\.\.40 \(0 = void",
    ):
        NYUDv2(tree.root, "test")[0]


def test_label_not_2d(tree: Tree) -> None:
    write_mat(tree.label_path("5004"), {"segmentation": np.zeros((7, 7, 2), np.uint8)})
    with pytest.raises(FCNError, match=r"segmentation must be an HxW array.*\(7, 7, 2\)"):
        NYUDv2(tree.root, "test")[0]


# --- make(config, split) ---------------------------------------------------------------------


def test_make_reads_root_and_modalities(tree: Tree) -> None:
    config = ml_collections.ConfigDict(
        {"data": {"name": "nyud", "root": str(tree.root), "modalities": ("image", "hha")}}
    )
    ds = nyud.make(config, "val")
    assert isinstance(ds, NYUDv2)
    assert ds.modalities == ("image", "hha")
    assert set(ds[0]) == {"image", "hha", "label", "id"}
    del config.data.modalities
    assert nyud.make(config, "val").modalities == ("image",)


def test_make_without_root() -> None:
    config = ml_collections.ConfigDict({"data": {"name": "nyud", "root": ""}})
    with pytest.raises(FCNError, match=r"config\.data\.root is not set"):
        nyud.make(config, "test")


def test_nyud_declares_its_image_keys(tree: Tree) -> None:
    # HHA is NYUDv2's knowledge: other datasets' records hold RGB ``image`` only.
    assert NYUDv2.image_keys == nyud.MODALITIES == ("image", "hha")
    assert SegmentationDataset.image_keys == ("image",)
    record = NYUDv2(tree.root, "val", modalities=("hha",))[0]
    assert "image" not in record and record["hha"].shape[2] == 3
    classes = {"label": nyud.N_CLASS}
    validate_record(record, classes, "nyud", image_keys=nyud.MODALITIES)
    with pytest.raises(FCNError, match=r"nyud: record has none of the image keys \('image',\)"):
        validate_record(record, classes, "nyud")
