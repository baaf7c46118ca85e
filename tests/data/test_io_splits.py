"""fcn_jax.data.io (images, index PNGs, .mat fields) and fcn_jax.data.splits (split lists)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from fcn_jax.data.io import read_image, read_index_png, read_mat_field
from fcn_jax.data.splits import read_split_file, resolve_split, shipped_split_dir
from fcn_jax.data.voc import SBDSegmentation
from fcn_jax.errors import FCNError
from fcn_jax.resources import voc_palette
from tests.utils import write_sbd_mat, write_sbd_tree

# --- read_image ---------------------------------------------------------------------------------


def test_read_image_rgb_exact(tmp_path: Path, rng: np.random.Generator) -> None:
    image = rng.integers(0, 256, (9, 13, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    assert out.dtype == np.uint8
    assert np.array_equal(out, image)


def test_read_image_grey_to_rgb(tmp_path: Path, rng: np.random.Generator) -> None:
    grey = rng.integers(0, 256, (7, 11), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "g.png")
    out = read_image(str(tmp_path / "g.png"))
    assert (out.shape, out.dtype) == ((7, 11, 3), np.uint8)
    for c in range(3):
        assert np.array_equal(out[..., c], grey)


def test_read_image_rgba_drops_alpha(tmp_path: Path, rng: np.random.Generator) -> None:
    rgba = rng.integers(0, 256, (6, 5, 4), dtype=np.uint8)
    rgba[..., 3] = 255  # opaque: RGBA -> RGB keeps the colours as they are
    Image.fromarray(rgba).save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    assert out.shape == (6, 5, 3)
    assert np.array_equal(out, rgba[..., :3])


def test_read_image_palette_to_colours(tmp_path: Path) -> None:
    label = np.array([[0, 1], [15, 255]], np.uint8)
    im = Image.frombytes("P", (2, 2), label.tobytes())
    im.putpalette(voc_palette().ravel().tolist())
    im.save(tmp_path / "p.png")
    assert np.array_equal(read_image(tmp_path / "p.png"), voc_palette()[label])


def test_read_image_missing(tmp_path: Path) -> None:
    with pytest.raises(FCNError, match=r"image .*none\.jpg does not exist"):
        read_image(tmp_path / "none.jpg")


def test_read_image_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "bad.jpg"
    path.write_bytes(b"not an image at all" * 5)
    with pytest.raises(FCNError, match=rf"{re.escape(str(path))} is not an image PIL can read"):
        read_image(path)


# --- read_index_png -----------------------------------------------------------------------------


def test_read_index_png_palette_values_are_indices(tmp_path: Path) -> None:
    label = np.array([[0, 15, 255], [20, 7, 1]], np.uint8)
    im = Image.frombytes("P", (3, 2), label.tobytes())
    im.putpalette(voc_palette().ravel().tolist())
    im.save(tmp_path / "p.png")
    out = read_index_png(tmp_path / "p.png")
    assert out.dtype == np.uint8
    assert np.array_equal(out, label)


def test_read_index_png_grey(tmp_path: Path) -> None:
    label = np.array([[0, 3, 255], [40, 7, 1]], np.uint8)
    Image.fromarray(label).save(tmp_path / "l.png")  # mode 'L'
    assert np.array_equal(read_index_png(tmp_path / "l.png"), label)


def test_read_index_png_16bit_in_range(tmp_path: Path) -> None:
    label = np.array([[0, 3], [255, 7]], np.uint16)
    Image.fromarray(label).save(tmp_path / "i16.png")
    out = read_index_png(tmp_path / "i16.png")
    assert out.dtype == np.uint8
    assert np.array_equal(out, label)


def test_read_index_png_16bit_above_255(tmp_path: Path) -> None:
    Image.fromarray(np.array([[0, 300]], np.uint16)).save(tmp_path / "i16.png")
    with pytest.raises(FCNError, match=r"has values outside 0..255 \(0..300\)"):
        read_index_png(tmp_path / "i16.png")


def test_read_index_png_rejects_rgb(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(FCNError, match=r"rgb\.png is a RGB colour image; expected a palette"):
        read_index_png(tmp_path / "rgb.png")


def test_read_index_png_missing_and_corrupt(tmp_path: Path) -> None:
    with pytest.raises(FCNError, match=r"label .*none\.png does not exist"):
        read_index_png(tmp_path / "none.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(FCNError, match=r"bad\.png is not a PNG PIL can read"):
        read_index_png(tmp_path / "bad.png")


# --- read_mat_field -----------------------------------------------------------------------------


def test_read_mat_field_nested(tmp_path: Path) -> None:
    seg = np.arange(12, dtype=np.uint8).reshape(3, 4)
    path = tmp_path / "x.mat"
    scipy.io.savemat(path, {"GTcls": {"Segmentation": seg, "Inner": {"Deep": np.eye(2)}}})
    out = read_mat_field(path, "GTcls", "Segmentation")
    assert out.dtype == np.uint8
    assert np.array_equal(out, seg)
    assert np.array_equal(read_mat_field(path, "GTcls", "Inner", "Deep"), np.eye(2))


def test_read_mat_field_top_level_variable(tmp_path: Path) -> None:
    scipy.io.savemat(tmp_path / "x.mat", {"S": np.ones((2, 3), np.uint16)})
    assert np.array_equal(read_mat_field(tmp_path / "x.mat", "S"), np.ones((2, 3)))


def test_read_mat_field_missing_lists_found(tmp_path: Path) -> None:
    path = tmp_path / "x.mat"
    scipy.io.savemat(path, {"GTcls": {"Segmentation": np.zeros((2, 2)), "Boundaries": 1}})
    with pytest.raises(
        FCNError, match=r"has no GTcls\.Seg \(found \['Boundaries', 'Segmentation'\]\)"
    ):
        read_mat_field(path, "GTcls", "Seg")
    with pytest.raises(FCNError, match=r"has no GTinst \(found \['GTcls'\]\)"):
        read_mat_field(path, "GTinst", "Segmentation")


def test_read_mat_field_missing_and_corrupt(tmp_path: Path) -> None:
    with pytest.raises(FCNError, match=r"label .*none\.mat does not exist"):
        read_mat_field(tmp_path / "none.mat", "GTcls")
    (tmp_path / "bad.mat").write_bytes(b"garbage" * 40)
    with pytest.raises(FCNError, match=r"bad\.mat is not a MATLAB \.mat file scipy can read"):
        read_mat_field(tmp_path / "bad.mat", "GTcls")


# --- split lists --------------------------------------------------------------------------------


def test_read_split_file_comments_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "s.txt"
    path.write_text("# header\n\n2007_000033\n  2007_000042  \n2007_000061 1  # extra column\n\n")
    assert read_split_file(path) == ["2007_000033", "2007_000042", "2007_000061"]


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n  # and another\n"])
def test_read_split_file_empty(tmp_path: Path, text: str) -> None:
    path = tmp_path / "s.txt"
    path.write_text(text)
    with pytest.raises(FCNError, match=r"s\.txt lists no ids"):
        read_split_file(path)


def test_shipped_seg11valid() -> None:
    ids = read_split_file(shipped_split_dir("voc") / "seg11valid.txt")
    assert len(ids) == 736
    assert len(set(ids)) == 736


def test_resolve_split_path(tmp_path: Path) -> None:
    path = tmp_path / "mine.txt"
    path.write_text("a\nb\n")
    assert resolve_split(str(path), []) == (path, ["a", "b"])
    # a path without .txt also counts as a path when it has a directory part
    other = tmp_path / "sub" / "list"
    other.parent.mkdir()
    other.write_text("c\n")
    assert resolve_split(str(other), []) == (other, ["c"])
    with pytest.raises(FCNError, match=r"split file .*gone\.txt does not exist"):
        resolve_split(str(tmp_path / "gone.txt"), [])


def test_resolve_split_search_order(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    (second / "val.txt").write_text("from_second\n")
    (second / "seg11valid.txt").write_text("shipped\n")
    (first / "seg11valid.txt").write_text("local\n")
    assert resolve_split("seg11valid", [first, second]) == (first / "seg11valid.txt", ["local"])
    assert resolve_split("val", [first, second]) == (second / "val.txt", ["from_second"])
    # a search dir that does not exist is skipped
    assert resolve_split("val", [tmp_path / "missing", second])[1] == ["from_second"]


def test_resolve_split_unknown_lists_names(tmp_path: Path) -> None:
    (tmp_path / "train.txt").write_text("a\n")
    (tmp_path / "val.txt").write_text("b\n")
    (tmp_path / "classes.txt").write_text("background\n")
    with pytest.raises(FCNError) as info:
        resolve_split("tset", [tmp_path, tmp_path / "missing"], names=["sbd_train"])
    message = str(info.value)
    assert message.startswith("unknown split 'tset': no tset.txt in")
    assert "Known splits: sbd_train, train, val;" in message
    assert "classes" not in message.split("Known splits:")[1]
    with pytest.raises(FCNError, match=r"Known splits: none"):
        resolve_split("tset", [tmp_path / "missing"])


@pytest.mark.parametrize("shape", [(1, 5), (5, 1), (1, 1)])
def test_read_mat_field_keeps_a_thin_segmentation_2d(tmp_path: Path, shape: tuple) -> None:
    # squeeze_me used to turn a 1xN or Nx1 map into a 1-D array that SBD then refused.
    seg = np.arange(1, np.prod(shape) + 1, dtype=np.uint8).reshape(shape)
    path = tmp_path / "cls" / "2008_000002.mat"
    write_sbd_mat(path, seg)
    out = read_mat_field(path, "GTcls", "Segmentation")
    assert out.shape == shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out, seg)
    scipy.io.savemat(tmp_path / "s.mat", {"S": seg.astype(np.float64)})
    assert read_mat_field(tmp_path / "s.mat", "S").shape == shape  # a top-level variable too


@pytest.mark.parametrize("size", [(1, 6), (6, 1)])
def test_sbd_reads_a_one_pixel_thin_image(tmp_path: Path, size: tuple[int, int]) -> None:
    labels = write_sbd_tree(tmp_path, {"2008_000002": size}, split="train")
    record = SBDSegmentation(tmp_path, "train")[0]
    assert record["image"].shape == (*size, 3)
    np.testing.assert_array_equal(record["label"], labels["2008_000002"])
