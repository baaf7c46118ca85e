"""SIFT Flow on tiny trees written in the real on-disk formats (JPEG images, .mat label maps)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import ml_collections
import numpy as np
import pytest
import scipy.io
from PIL import Image

from fcn_jax.data import siftflow
from fcn_jax.data.base import IGNORE_LABEL
from fcn_jax.data.siftflow import SUBDIR, SIFTFlow
from fcn_jax.data.splits import read_split_file, shipped_split_dir
from fcn_jax.errors import FCNError
from tests.utils import SIFTFLOW_SEMANTIC, write_jpeg, write_list, write_mat

# id -> (height, width); 6x6 = 36 pixels hold every semantic file value 0..33.
IDS = {"coast_arnat59": (6, 6), "forest_for121": (7, 6), "street_par151": (6, 8)}
SPLITS = {"trainval": ["coast_arnat59", "forest_for121"], "test": ["street_par151"]}
SHIPPED = shipped_split_dir("siftflow")
SEMANTIC_NAMES = SIFTFLOW_SEMANTIC


def smooth_image(height: int, width: int, seed: int) -> np.ndarray:
    """[H, W, 3] uint8 gradients: survive JPEG nearly unchanged."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    r, g = 40 + 150 * x / width, 200 - 120 * y / height
    b = np.full_like(x, 30 + 20 * seed)
    return np.stack([r, g, b], -1).round().astype(np.uint8)


def semantic_values(height: int, width: int, shift: int) -> np.ndarray:
    """File values as the release stores them (double): 0 (unlabeled) and 1..33, all present."""
    return ((np.arange(height * width) + shift) % 34).reshape(height, width).astype(np.float64)


def geometric_values(height: int, width: int, shift: int) -> np.ndarray:
    """File values (double): -1 (unlabeled), 0 and 1..3, all present."""
    return ((np.arange(height * width) + shift) % 5 - 1).reshape(height, width).astype(np.float64)


def expected(values: np.ndarray) -> np.ndarray:
    """The reference layer's mapping, value by value: -1 -> 0, then uint8(v) - 1 (0 -> 255)."""
    out = np.empty(values.shape, np.uint8)
    for index, v in np.ndenumerate(values):
        v = 0 if v == -1 else int(v)
        out[index] = IGNORE_LABEL if v == 0 else v - 1
    return out


def write_semantic(path: Path, values: np.ndarray) -> None:
    names = np.array(SEMANTIC_NAMES, dtype=object)  # a 1x33 cell, as in the release
    write_mat(path, {"S": values, "names": names})


def write_geometric(path: Path, values: np.ndarray) -> None:
    write_mat(path, {"S": values, "names": np.array(["sky", "horizontal", "vertical"], object)})


@dataclasses.dataclass
class Tree:
    root: Path
    images: dict[str, np.ndarray]
    semantic: dict[str, np.ndarray]
    geometric: dict[str, np.ndarray]

    def path(self, kind: str, sample_id: str) -> Path:
        ext = ".jpg" if kind == "Images" else ".mat"
        return self.root / kind / SUBDIR / f"{sample_id}{ext}"


def write_sample(root: Path, sample_id: str, height: int, width: int, seed: int) -> tuple:
    image = smooth_image(height, width, seed)
    semantic, geometric = (
        semantic_values(height, width, seed),
        geometric_values(height, width, seed),
    )
    write_jpeg(root / "Images" / SUBDIR / f"{sample_id}.jpg", image)
    write_semantic(root / "SemanticLabels" / SUBDIR / f"{sample_id}.mat", semantic)
    write_geometric(root / "GeoLabels" / SUBDIR / f"{sample_id}.mat", geometric)
    return image, semantic, geometric


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    t = Tree(tmp_path, {}, {}, {})
    for seed, (sample_id, (h, w)) in enumerate(IDS.items()):
        t.images[sample_id], t.semantic[sample_id], t.geometric[sample_id] = write_sample(
            tmp_path, sample_id, h, w, seed
        )
    for split, ids in SPLITS.items():
        write_list(tmp_path / f"{split}.txt", ids)
    return t


@pytest.fixture(scope="module")
def shipped_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny samples for every id of the shipped test list (and none of trainval), no lists."""
    root = tmp_path_factory.mktemp("siftflow_shipped")
    for seed, sample_id in enumerate(read_split_file(SHIPPED / "test.txt")):
        write_sample(root, sample_id, 2, 3, seed % 4)
    return root


def assert_image_close(actual: np.ndarray, image: np.ndarray) -> None:
    assert (actual.shape, actual.dtype) == (image.shape, np.uint8)
    assert np.abs(actual.astype(int) - image.astype(int)).mean(axis=(0, 1)).max() < 3


# --- formats, records, label mapping --------------------------------------------------------


def test_fixture_writes_real_formats(tree: Tree) -> None:
    with Image.open(tree.path("Images", "coast_arnat59")) as im:
        assert im.format == "JPEG"
    sem = scipy.io.loadmat(tree.path("SemanticLabels", "coast_arnat59"))
    geo = scipy.io.loadmat(tree.path("GeoLabels", "coast_arnat59"))
    assert sem["S"].dtype == geo["S"].dtype == np.float64
    assert sem["names"].size == 33 and geo["names"].size == 3
    assert geo["S"].min() == -1


def test_records(tree: Tree) -> None:
    ds = SIFTFlow(tree.root, "trainval")
    assert ds.ids == SPLITS["trainval"] and len(ds) == 2
    for i, sample_id in enumerate(ds.ids):
        record = ds[i]
        assert set(record) == {"image", "label", "label_geo", "id"}
        assert record["id"] == sample_id
        assert_image_close(record["image"], tree.images[sample_id])
        for key in ("label", "label_geo"):
            assert (record[key].shape, record[key].dtype) == (IDS[sample_id], np.uint8)


def test_semantic_mapping_value_by_value(tree: Tree) -> None:
    ds = SIFTFlow(tree.root, "trainval")
    for i, sample_id in enumerate(ds.ids):
        values, label = tree.semantic[sample_id], ds[i]["label"]
        assert set(values.ravel().tolist()) == set(range(34))
        assert np.array_equal(label, expected(values))
        assert set(label.ravel().tolist()) == {*range(33), IGNORE_LABEL}
        assert (label[values == 0] == IGNORE_LABEL).all()
        assert (label[values == 1] == 0).all() and (label[values == 33] == 32).all()


def test_geometric_mapping_value_by_value(tree: Tree) -> None:
    ds = SIFTFlow(tree.root, "trainval")
    for i, sample_id in enumerate(ds.ids):
        values, label = tree.geometric[sample_id], ds[i]["label_geo"]
        assert set(values.ravel().tolist()) == {-1, 0, 1, 2, 3}
        assert np.array_equal(label, expected(values))
        assert (label[values == -1] == IGNORE_LABEL).all()
        assert (label[values == 0] == IGNORE_LABEL).all()
        for v in (1, 2, 3):
            assert (label[values == v] == v - 1).all()


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.uint8])
def test_integer_label_files(tree: Tree, dtype) -> None:
    sample_id = "street_par151"
    semantic = tree.semantic[sample_id].astype(dtype)
    write_semantic(tree.path("SemanticLabels", sample_id), semantic)
    if np.issubdtype(dtype, np.signedinteger):
        write_geometric(tree.path("GeoLabels", sample_id), tree.geometric[sample_id].astype(dtype))
    record = SIFTFlow(tree.root, "test")[0]
    assert np.array_equal(record["label"], expected(semantic))
    assert np.array_equal(record["label_geo"], expected(tree.geometric[sample_id]))


def test_attributes_and_classes(tree: Tree) -> None:
    ds = SIFTFlow(tree.root, "test")
    assert ds.name == "siftflow"
    assert ds.root == tree.root
    assert ds.split_file == tree.root / "test.txt"
    assert ds.n_class == 33
    assert ds.class_names == tuple(SEMANTIC_NAMES)
    assert ds.label_classes == {
        "label": tuple(SEMANTIC_NAMES),
        "label_geo": ("sky", "horizontal", "vertical"),
    }
    ds.label_classes["label"] = ()  # a copy: the dataset's classes are unchanged
    assert ds.label_classes["label"] == tuple(SEMANTIC_NAMES)
    assert SIFTFlow.score_present_classes_only is True
    assert ds.score_present_classes_only is True
    assert "1 images, 33 classes" in repr(ds)


def test_files(tree: Tree) -> None:
    ds = SIFTFlow(tree.root, "test")
    assert ds.files("street_par151") == tuple(
        tree.path(kind, "street_par151") for kind in ("Images", "SemanticLabels", "GeoLabels")
    )


# --- splits --------------------------------------------------------------------------------


def test_root_split_files_win(tree: Tree) -> None:
    for split, ids in SPLITS.items():
        ds = SIFTFlow(tree.root, split)
        assert ds.ids == ids
        assert ds.split_file == tree.root / f"{split}.txt"


def test_split_as_path(tree: Tree, tmp_path: Path) -> None:
    custom = tmp_path / "lists" / "mine.txt"
    write_list(custom, ["street_par151", "coast_arnat59"])
    ds = SIFTFlow(tree.root, str(custom))
    assert ds.ids == ["street_par151", "coast_arnat59"]
    assert ds.split_file == custom


def test_shipped_lists() -> None:
    trainval = read_split_file(SHIPPED / "trainval.txt")
    test = read_split_file(SHIPPED / "test.txt")
    assert (len(trainval), len(test)) == (2486, 200)
    assert not set(trainval) & set(test)
    # classes.txt: these two have no annotations, so the release's lists leave them out
    assert {"highway_bost181", "street_urb506"}.isdisjoint(trainval + test)


def test_shipped_test_list_used_without_local_copy(shipped_tree: Path) -> None:
    ds = SIFTFlow(shipped_tree, "test")
    assert ds.split_file == SHIPPED / "test.txt"
    assert ds.ids == read_split_file(SHIPPED / "test.txt")
    record = ds[0]
    assert record["id"] == ds.ids[0]
    assert record["label"].shape == record["label_geo"].shape == (2, 3)


def test_shipped_trainval_list_used_without_local_copy(shipped_tree: Path) -> None:
    first = read_split_file(SHIPPED / "trainval.txt")[0]
    with pytest.raises(FCNError) as info:
        SIFTFlow(shipped_tree, "trainval")
    message = str(info.value)
    assert "2486 images listed in the split are missing" in message
    assert str(shipped_tree / "Images" / SUBDIR / f"{first}.jpg") in message
    assert f"(ids from split list {SHIPPED / 'trainval.txt'})" in message


def test_unknown_split(tree: Tree) -> None:
    with pytest.raises(FCNError, match=r"unknown split 'train'.*Known splits: test, trainval"):
        SIFTFlow(tree.root, "train")


# --- bad input ----------------------------------------------------------------------------------


def test_missing_root_prints_layout(tmp_path: Path) -> None:
    with pytest.raises(FCNError, match=r"SIFT Flow root not found: .*nowhere is not a dir") as info:
        SIFTFlow(tmp_path / "nowhere")
    message = str(info.value)
    assert "Expected layout" in message
    for kind in ("Images", "SemanticLabels", "GeoLabels"):
        assert f"{kind}/{SUBDIR}/<id>" in message


@pytest.mark.parametrize(
    "kind, what",
    [
        ("Images", "images"),
        ("SemanticLabels", "semantic labels"),
        ("GeoLabels", "geometric labels"),
    ],
)
def test_missing_file_fails_at_construction(tree: Tree, kind: str, what: str) -> None:
    path = tree.path(kind, "forest_for121")
    path.unlink()
    with pytest.raises(
        FCNError, match=rf"1 {what} listed in the split are missing:\n  {re.escape(str(path))}"
    ) as info:
        SIFTFlow(tree.root, "trainval")
    assert f"(ids from split list {tree.root / 'trainval.txt'})" in str(info.value)


def test_corrupt_jpeg_fails_when_read(tree: Tree) -> None:
    path = tree.path("Images", "forest_for121")
    path.write_bytes(b"\x00garbage, not a JPEG\xff" * 20)
    ds = SIFTFlow(tree.root, "trainval")
    ds[0]
    with pytest.raises(FCNError, match=rf"{re.escape(str(path))} is not an image PIL can read"):
        ds[1]


@pytest.mark.parametrize("kind", ["SemanticLabels", "GeoLabels"])
def test_corrupt_mat(tree: Tree, kind: str) -> None:
    path = tree.path(kind, "street_par151")
    path.write_bytes(b"garbage bytes, no MATLAB header" * 10)
    with pytest.raises(FCNError, match=rf"{re.escape(str(path))} is not a MATLAB \.mat file"):
        SIFTFlow(tree.root, "test")[0]


@pytest.mark.parametrize("kind", ["SemanticLabels", "GeoLabels"])
def test_mat_without_s(tree: Tree, kind: str) -> None:
    path = tree.path(kind, "street_par151")
    write_mat(path, {"seg": np.zeros((6, 8)), "names": np.array(["sky"], object)})
    with pytest.raises(FCNError, match=r"street_par151\.mat has no S \(found \['names', 'seg'\]\)"):
        SIFTFlow(tree.root, "test")[0]


@pytest.mark.parametrize("kind, key", [("SemanticLabels", "label"), ("GeoLabels", "label_geo")])
def test_label_size_differs_from_image(tree: Tree, kind: str, key: str) -> None:
    write_mat(tree.path(kind, "street_par151"), {"S": np.ones((5, 4))})
    with pytest.raises(
        FCNError,
        match=rf"siftflow street_par151 \(.*street_par151\.jpg, .*SemanticLabels.*\.mat, "
        rf".*GeoLabels.*\.mat\): {key} is 5x4 but its image is 6x8",
    ):
        SIFTFlow(tree.root, "test")[0]


@pytest.mark.parametrize(
    "kind, value, shown, expected_range",
    [
        ("SemanticLabels", 40, "40.0", r"0\.\.33 \(0 = unlabeled"),
        ("SemanticLabels", 34, "34.0", r"0\.\.33"),
        ("SemanticLabels", -1, "-1.0", r"0\.\.33"),
        ("SemanticLabels", 2.5, "2.5", r"0\.\.33"),
        ("SemanticLabels", 256, "256.0", r"0\.\.33"),  # would wrap to 0 in a uint8 cast
        ("GeoLabels", 4, "4.0", r"-1\.\.3 \(-1 and 0 = unlabeled"),
        ("GeoLabels", -2, "-2.0", r"-1\.\.3"),
    ],
)
def test_label_value_out_of_range(
    tree: Tree, kind: str, value: float, shown: str, expected_range: str
) -> None:
    sample_id = "street_par151"
    values = (tree.semantic if kind == "SemanticLabels" else tree.geometric)[sample_id].copy()
    values[3, 4] = value
    write_mat(tree.path(kind, sample_id), {"S": values})
    with pytest.raises(
        FCNError,
        match=rf"label .*{kind}.*street_par151\.mat: S values \[{re.escape(shown)}\] are not in "
        + expected_range,
    ):
        SIFTFlow(tree.root, "test")[0]


# --- make(config, split) ---------------------------------------------------------------------


def test_make(tree: Tree) -> None:
    config = ml_collections.ConfigDict({"data": {"name": "siftflow", "root": str(tree.root)}})
    ds = siftflow.make(config, "test")
    assert isinstance(ds, SIFTFlow) and ds.ids == SPLITS["test"]
    config.data.root = None
    with pytest.raises(FCNError, match=r"config\.data\.root is not set"):
        siftflow.make(config, "test")


def test_siftflow_names_its_heads_and_geometric_classes(tree: Tree) -> None:
    # What the evaluator and the converter know of SIFT Flow comes from here.
    ds = SIFTFlow(tree.root, "test")
    assert ds.label_classes["label_geo"] == siftflow.GEOMETRIC_CLASSES
    assert siftflow.HEAD_LABELS == {
        "sem": ("label", "semantic"),
        "geo": ("label_geo", "geometric"),
    }
    assert {key for key, _ in siftflow.HEAD_LABELS.values()} == set(ds.label_classes)
