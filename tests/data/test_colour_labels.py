"""class_dict.csv parsing and colour-label encoding, on files in Kaggle CamVid's formats."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcn_jax.data.base import IGNORE_LABEL
from fcn_jax.data.colour_labels import ClassDict, pack_rgb, read_class_dict, unpack_rgb
from fcn_jax.errors import FCNError
from fcn_jax.resources import voc_palette
from tests.utils import (
    CAMVID_CLASS_DICT,
    class_rows_colours,
    colourise,
    random_label,
    write_class_dict,
    write_jpeg,
    write_png,
)

SMALL = (("Sky", (128, 128, 128)), ("Road", (128, 64, 128)), ("Car", (64, 0, 128)))


@pytest.fixture
def camvid_csv(tmp_path: Path) -> ClassDict:
    write_class_dict(tmp_path / "class_dict.csv")
    return read_class_dict(tmp_path / "class_dict.csv")


def test_kaggle_class_dict(camvid_csv: ClassDict, tmp_path: Path) -> None:
    cd = camvid_csv
    assert cd.path == tmp_path / "class_dict.csv"
    # csv order, Void (second to last) left out: Wall moves up to class 30.
    expected = [n for n, _ in CAMVID_CLASS_DICT if n != "Void"]
    assert list(cd.class_names) == expected
    assert cd.n_class == 31
    assert cd.class_names[0] == "Animal"
    assert cd.class_names[30] == "Wall"
    assert cd.colours.dtype == np.uint8
    assert cd.colours.shape == (31, 3)
    assert cd.colours[30].tolist() == [64, 192, 0]
    assert cd.void_colours.tolist() == [[0, 0, 0]]


def test_palette(camvid_csv: ClassDict) -> None:
    palette = camvid_csv.palette
    assert palette.shape == (256, 3)
    assert palette.dtype == np.uint8
    assert np.array_equal(palette[:31], camvid_csv.colours)
    assert palette[IGNORE_LABEL].tolist() == [0, 0, 0]  # the void row's colour
    assert np.array_equal(palette[31:255], voc_palette()[31:255])


def test_palette_without_void_row_keeps_voc_void(tmp_path: Path) -> None:
    write_class_dict(tmp_path / "c.csv", SMALL)
    cd = read_class_dict(tmp_path / "c.csv")
    assert cd.void_colours.shape == (0, 3)
    assert np.array_equal(cd.palette[3:], voc_palette()[3:])
    assert cd.palette[:3].tolist() == [[128, 128, 128], [128, 64, 128], [64, 0, 128]]


def test_encode_every_colour_value_by_value(camvid_csv: ClassDict) -> None:
    # One pixel per csv row, in csv order: each class colour -> its index, Void -> 255.
    rgb = np.array([[c for _, c in CAMVID_CLASS_DICT]], np.uint8)
    label = camvid_csv.encode(rgb, "x.png")
    assert label.dtype == np.uint8
    assert label.shape == (1, 32)
    expected = [*range(30), IGNORE_LABEL, 30]
    for (name, colour), got, want in zip(CAMVID_CLASS_DICT, label[0], expected, strict=True):
        assert got == want, (name, colour)


def test_encode_round_trip(camvid_csv: ClassDict, rng: np.random.Generator) -> None:
    label = random_label(rng, 37, 53, 31)
    assert np.array_equal(camvid_csv.encode(colourise(label), "x.png"), label)


@pytest.mark.parametrize("void", ["Void", "void", "VOID", "Unlabelled", "unlabeled", "UNLABELED"])
def test_void_names_any_case(tmp_path: Path, void: str) -> None:
    rows = (SMALL[0], (void, (1, 2, 3)), *SMALL[1:])
    write_class_dict(tmp_path / "c.csv", rows)
    cd = read_class_dict(tmp_path / "c.csv")
    assert cd.class_names == ("Sky", "Road", "Car")
    assert cd.void_colours.tolist() == [[1, 2, 3]]
    rgb = np.array([[[1, 2, 3], [64, 0, 128], [128, 128, 128]]], np.uint8)
    assert cd.encode(rgb, "x").tolist() == [[255, 2, 0]]


def test_several_void_rows(tmp_path: Path) -> None:
    rows = (("Void", (0, 0, 0)), *SMALL, ("unlabelled", (255, 255, 255)))
    write_class_dict(tmp_path / "c.csv", rows)
    cd = read_class_dict(tmp_path / "c.csv")
    assert cd.class_names == ("Sky", "Road", "Car")
    rgb = np.array([[[255, 255, 255], [0, 0, 0], [128, 64, 128]]], np.uint8)
    assert cd.encode(rgb, "x").tolist() == [[255, 255, 1]]
    assert cd.palette[255].tolist() == [0, 0, 0]  # the first void row


def test_header_case_spaces_bom_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_bytes("\ufeffName, R ,G,B\r\nSky, 128, 128, 128\r\n\r\nRoad,128,64,128\r\n".encode())
    cd = read_class_dict(path)
    assert cd.class_names == ("Sky", "Road")
    assert cd.colours.tolist() == [[128, 128, 128], [128, 64, 128]]


def test_unknown_colour_names_file_colour_pixel(camvid_csv: ClassDict) -> None:
    label = np.zeros((6, 7), np.uint8)
    rgb = colourise(label)
    rgb[4, 5] = (10, 20, 30)
    rgb[5, 6] = (10, 20, 30)
    with pytest.raises(FCNError) as info:
        camvid_csv.encode(rgb, Path("/data/train_labels/a_L.png"))
    message = str(info.value)
    assert "label /data/train_labels/a_L.png" in message
    assert "colour (10, 20, 30) at pixel (row 4, col 5)" in message
    assert str(camvid_csv.path) in message


def test_unknown_colours_counted_and_grey_hint(camvid_csv: ClassDict) -> None:
    rgb = colourise(np.zeros((3, 3), np.uint8))
    rgb[0, 1] = (7, 7, 7)
    rgb[2, 2] = (9, 1, 1)
    with pytest.raises(FCNError, match=r"colour \(7, 7, 7\) at pixel \(row 0, col 1\)") as info:
        camvid_csv.encode(rgb, "m.png")
    assert "and 1 other unknown colours" in str(info.value)
    assert "index mask" in str(info.value)


@pytest.mark.parametrize(
    "rgb", [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 3))]
)
def test_encode_rejects_non_rgb(camvid_csv: ClassDict, rgb: np.ndarray) -> None:
    with pytest.raises(FCNError, match=r"label m\.png: a colour label must be HxWx3 uint8"):
        camvid_csv.encode(rgb, "m.png")


def test_read_label_rgb_png(camvid_csv: ClassDict, tmp_path: Path, rng) -> None:
    label = random_label(rng, 20, 30, 31)
    write_png(tmp_path / "a_L.png", colourise(label))
    with Image.open(tmp_path / "a_L.png") as im:
        assert im.mode == "RGB"
    assert np.array_equal(camvid_csv.read_label(tmp_path / "a_L.png"), label)


def test_read_label_palette_png(camvid_csv: ClassDict, tmp_path: Path, rng) -> None:
    # Some tools save colour labels as palette PNGs: the colours, not the indices, count.
    label = random_label(rng, 20, 30, 31)
    im = Image.fromarray(colourise(label)).quantize(colors=32, method=Image.Quantize.MAXCOVERAGE)
    im.save(tmp_path / "p.png")
    with Image.open(tmp_path / "p.png") as check:
        assert check.mode == "P"
    assert np.array_equal(camvid_csv.read_label(tmp_path / "p.png"), label)


def test_read_label_jpeg_colours_are_unknown(camvid_csv: ClassDict, tmp_path: Path, rng) -> None:
    label = random_label(rng, 24, 24, 31)
    write_jpeg(tmp_path / "a_L.jpg", colourise(label))
    with pytest.raises(FCNError, match=r"a_L\.jpg: colour \(\d+, \d+, \d+\) at pixel .*no JPEG"):
        camvid_csv.read_label(tmp_path / "a_L.jpg")


def test_read_label_corrupt_png(camvid_csv: ClassDict, tmp_path: Path) -> None:
    path = tmp_path / "bad_L.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n but then garbage" * 4)
    with pytest.raises(FCNError, match=rf"{re.escape(str(path))} is not an image PIL can read"):
        camvid_csv.read_label(path)


def test_pack_unpack() -> None:
    colours = np.array([[0, 0, 0], [255, 255, 255], [1, 2, 3], [255, 0, 7]], np.uint8)
    keys = pack_rgb(colours)
    assert keys.dtype == np.int32
    assert [unpack_rgb(k) for k in keys] == [tuple(c) for c in colours.tolist()]
    assert keys[1] == 2**24 - 1


# --- bad csv files: each error names the file ---------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FCNError, match=r"class dict .*nope\.csv does not exist"):
        read_class_dict(tmp_path / "nope.csv")


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("", r"is empty"),
        ("\n\n", r"is empty"),
        ("name,red,green,blue\nSky,1,2,3\n", r"header is 'name,red,green,blue', expected"),
        ("Sky,128,128,128\nRoad,128,64,128\n", r"header is 'Sky,128,128,128'"),
        ("name,r,g,b\nSky,256,0,0\n", r"line 2: colour value '256' is not an integer in 0\.\.255"),
        ("name,r,g,b\nSky,0,-1,0\n", r"line 2: colour value '-1' is not an integer"),
        ("name,r,g,b\nSky,0,0,1.5\n", r"line 2: colour value '1\.5' is not an integer"),
        ("name,r,g,b\nSky,0,x,0\n", r"line 2: colour value 'x' is not an integer"),
        ("name,r,g,b\nSky,0,,0\n", r"line 2: colour value '' is not an integer"),
        ("name,r,g,b\nSky,0,0\n", r"line 2: expected 4 fields name,r,g,b, got 3"),
        ("name,r,g,b\nSky,0,0,0,0\n", r"line 2: expected 4 fields"),
        ("name,r,g,b\n,1,2,3\n", r"line 2: empty class name"),
        (
            "name,r,g,b\nSky,1,2,3\nRoad,4,5,6\nSky,7,8,9\n",
            r"line 4: class name 'Sky' repeats line 2",
        ),
        (
            "name,r,g,b\nSky,1,2,3\nRoad,1,2,3\n",
            r"line 3: colour \(1, 2, 3\) of 'Road' is also the colour of 'Sky' \(line 2\)",
        ),
        ("name,r,g,b\nVoid,0,0,0\nSky,0,0,0\n", r"line 3: colour \(0, 0, 0\) of 'Sky'"),
        ("name,r,g,b\n", r"lists no classes"),
        ("name,r,g,b\nVoid,0,0,0\nunlabelled,1,1,1\n", r"lists no classes"),
    ],
)
def test_bad_csv(tmp_path: Path, text: str, pattern: str) -> None:
    path = tmp_path / "class_dict.csv"
    path.write_text(text)
    with pytest.raises(FCNError, match=pattern) as info:
        read_class_dict(path)
    assert str(path) in str(info.value)


def test_not_text(tmp_path: Path) -> None:
    path = tmp_path / "class_dict.csv"
    path.write_bytes(b"\xff\xfe\x00\x81binary")
    with pytest.raises(FCNError, match=rf"{re.escape(str(path))} is not a readable csv"):
        read_class_dict(path)


def test_too_many_classes(tmp_path: Path) -> None:
    rows = [(f"c{i}", (i // 256, i % 256, 0)) for i in range(256)]
    write_class_dict(tmp_path / "c.csv", rows)
    with pytest.raises(FCNError, match=r"c\.csv lists 256 classes; at most 255"):
        read_class_dict(tmp_path / "c.csv")
    write_class_dict(tmp_path / "c.csv", rows[:255])
    cd = read_class_dict(tmp_path / "c.csv")
    rgb = np.array([[c for _, c in rows[:255]]], np.uint8)
    assert cd.encode(rgb, "x").tolist() == [list(range(255))]


def test_helpers_agree_with_reader(camvid_csv: ClassDict) -> None:
    classes, voids = class_rows_colours()
    assert np.array_equal(classes, camvid_csv.colours)
    assert np.array_equal(voids, camvid_csv.void_colours)


def test_void_as_class_numbers_every_row(tmp_path: Path) -> None:
    rows = (("Sky", (1, 2, 3)), ("void", (0, 0, 0)), ("Road", (4, 5, 6)), ("unlabelled", (9, 9, 9)))
    write_class_dict(tmp_path / "c.csv", rows)
    default = read_class_dict(tmp_path / "c.csv")
    assert default.class_names == ("Sky", "Road") and len(default.void_colours) == 2
    cd = read_class_dict(tmp_path / "c.csv", void_as_class=True)
    assert cd.class_names == ("Sky", "void", "Road", "unlabelled")
    assert cd.void_colours.shape == (0, 3)
    rgb = np.array([[[1, 2, 3], [0, 0, 0], [4, 5, 6], [9, 9, 9]]], np.uint8)
    assert cd.encode(rgb, "x.png").tolist() == [[0, 1, 2, 3]]
    assert default.encode(rgb, "x.png").tolist() == [[0, 255, 1, 255]]
    assert cd.palette[:4].tolist() == [list(c) for _, c in rows]
