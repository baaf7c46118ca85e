"""read_image as viewers show images (bit depths, EXIF orientation); labels turned with them."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcn_jax.data.folder import FolderDataset
from fcn_jax.data.io import (
    Orientation,
    apply_orientation,
    orient_label,
    read_image,
    read_image_oriented,
    read_mat_field,
)
from fcn_jax.data.nyud import NYUDv2
from fcn_jax.data.voc import SBDSegmentation, VOCSegmentation
from fcn_jax.errors import FCNError
from tests.utils import (
    write_mask_tree,
    write_nyud_tree,
    write_palette_png,
    write_sbd_mat,
    write_sbd_tree,
    write_voc_tree,
)

ORIENTATION = 0x0112  # the EXIF tag


def exif(tag: int) -> Image.Exif:
    e = Image.Exif()
    e[ORIENTATION] = tag
    return e


def ramp16(h: int = 3, w: int = 5) -> np.ndarray:
    """[H, W] uint16 spanning 0..65535, with values whose low byte is not 0."""
    return np.linspace(0, 65535, h * w).astype(np.uint16).reshape(h, w)


def assert_grey(out: np.ndarray, expected: np.ndarray) -> None:
    assert out.dtype == np.uint8 and out.shape == (*expected.shape, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], expected)


# --- bit depths ---------------------------------------------------------------------------------


def test_16bit_png_uses_the_full_range(tmp_path: Path) -> None:
    grey = ramp16()
    Image.fromarray(grey).save(tmp_path / "g.png")  # mode I;16
    with Image.open(tmp_path / "g.png") as im:
        assert im.mode == "I;16"
    out = read_image(tmp_path / "g.png")
    assert_grey(out, (grey >> 8).astype(np.uint8))
    assert out.min() == 0 and out.max() == 255  # not saturated to white


def test_16bit_big_endian_tiff(tmp_path: Path) -> None:
    grey = ramp16(4, 3)
    im = Image.frombytes("I;16B", (3, 4), grey.astype(">u2").tobytes())
    im.save(tmp_path / "g.tif")
    with Image.open(tmp_path / "g.tif") as back:
        assert back.mode == "I;16B"
    assert_grey(read_image(tmp_path / "g.tif"), (grey >> 8).astype(np.uint8))


def test_16bit_pgm_read_as_mode_i(tmp_path: Path) -> None:
    grey = ramp16(2, 6)
    (tmp_path / "g.pgm").write_bytes(b"P5 6 2 65535\n" + grey.astype(">u2").tobytes())
    with Image.open(tmp_path / "g.pgm") as im:
        assert im.mode == "I"  # 32-bit mode, 16-bit values
    assert_grey(read_image(tmp_path / "g.pgm"), (grey >> 8).astype(np.uint8))


def write_png16_rgb(path: Path, rgb: np.ndarray) -> None:
    """A 16-bit-per-channel RGB PNG ([H, W, 3] uint16), which PIL cannot write."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in rgb)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def test_16bit_rgb_png(tmp_path: Path) -> None:
    rgb = np.stack([ramp16(), ramp16()[::-1], np.full((3, 5), 300, np.uint16)], axis=-1)
    write_png16_rgb(tmp_path / "c.png", rgb)
    out = read_image(tmp_path / "c.png")
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, (rgb >> 8).astype(np.uint8))


@pytest.mark.parametrize(
    ("mode", "array", "kind"),
    [
        ("I", np.array([[0, 70000], [5, 2**31 - 1]], np.int32), "32-bit integer"),
        ("F", np.array([[0.0, 0.5], [1.0, 2.5]], np.float32), "32-bit float"),
    ],
)
def test_32bit_images_are_refused(tmp_path: Path, mode: str, array: np.ndarray, kind: str) -> None:
    path = tmp_path / "x.tif"
    Image.fromarray(array).save(path)
    with Image.open(path) as im:
        assert im.mode == mode
    with pytest.raises(FCNError, match=rf"x\.tif is a {kind} image \(PIL mode {mode}\).*convert"):
        read_image(path)


def test_unconverted_mode_is_refused(tmp_path: Path) -> None:
    Image.new("LAB", (3, 2)).save(tmp_path / "lab.tif")
    with pytest.raises(FCNError, match=r"lab\.tif is a PIL mode LAB image.*convert it to an RGB"):
        read_image(tmp_path / "lab.tif")


def test_8bit_modes_still_read(tmp_path: Path, rng: np.random.Generator) -> None:
    rgb = rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)
    grey = rgb[..., 0]
    cases = {
        "la.png": (Image.fromarray(np.stack([grey, grey], -1), "LA"), np.stack([grey] * 3, -1)),
        "bw.png": (Image.fromarray(grey > 127), np.stack([(grey > 127) * np.uint8(255)] * 3, -1)),
        "rgba.png": (Image.fromarray(np.dstack([rgb, np.zeros_like(grey)])), rgb),  # alpha dropped
        "cmyk.tif": (Image.fromarray(rgb).convert("CMYK"), rgb),
    }
    for name, (im, expected) in cases.items():
        im.save(tmp_path / name)
        np.testing.assert_array_equal(read_image(tmp_path / name), expected, err_msg=name)


# --- EXIF orientation ---------------------------------------------------------------------------


def test_exif_orientation_6_jpeg_read_upright(tmp_path: Path) -> None:
    stored = np.zeros((40, 60, 3), np.uint8)  # 60 wide, 40 high as stored
    stored[:, :30] = 255  # left half white
    Image.fromarray(stored).save(tmp_path / "p.jpg", exif=exif(6), quality=95)
    image, orientation = read_image_oriented(tmp_path / "p.jpg")
    assert image.shape == (60, 40, 3)  # as displayed: a quarter turn clockwise
    assert orientation == Orientation(6, (40, 60), (60, 40))
    # The stored left half is the displayed top half.
    assert image[:25].min() > 200 and image[35:].max() < 50
    assert read_image(tmp_path / "p.jpg").shape == (60, 40, 3)


@pytest.mark.parametrize("tag", range(1, 9))
def test_apply_orientation_turns_like_the_image(
    tmp_path: Path, rng: np.random.Generator, tag: int
) -> None:
    stored = rng.integers(0, 256, (4, 7, 3), dtype=np.uint8)
    Image.fromarray(stored).save(tmp_path / "x.png", exif=exif(tag))  # lossless
    image, orientation = read_image_oriented(tmp_path / "x.png")
    assert orientation.tag == tag
    expected = {
        1: stored,
        2: stored[:, ::-1],
        3: stored[::-1, ::-1],
        4: stored[::-1],
        5: stored.transpose(1, 0, 2),
        6: np.rot90(stored, -1),
        7: stored[::-1, ::-1].transpose(1, 0, 2),  # transverse: the anti-diagonal
        8: np.rot90(stored, 1),
    }[tag]
    np.testing.assert_array_equal(image, expected)
    # Any per-pixel map of the stored pixels (uint8 label, 3-channel HHA) turns the same way.
    np.testing.assert_array_equal(apply_orientation(stored[..., 1], orientation), image[..., 1])
    np.testing.assert_array_equal(apply_orientation(stored, orientation), image)


def test_invalid_orientation_is_ignored(tmp_path: Path, rng: np.random.Generator) -> None:
    stored = rng.integers(0, 256, (3, 5, 3), dtype=np.uint8)
    Image.fromarray(stored).save(tmp_path / "x.png", exif=exif(9))
    image, orientation = read_image_oriented(tmp_path / "x.png")
    np.testing.assert_array_equal(image, stored)
    assert orientation.tag == 1


def test_orient_label_rule() -> None:
    label = np.arange(6, dtype=np.uint8).reshape(2, 3)
    quarter = Orientation(6, stored_shape=(2, 3), shape=(3, 2))
    # Drawn on the stored pixels: turned like the image.
    np.testing.assert_array_equal(orient_label(label, quarter), np.rot90(label, -1))
    # Drawn on the upright picture: kept.
    np.testing.assert_array_equal(orient_label(label.T, quarter), label.T)
    # Any other size: kept, for validate_record to report.
    assert orient_label(label[:1], quarter).shape == (1, 3)
    # A half turn keeps the shape, so the label is taken as drawn on the upright picture.
    np.testing.assert_array_equal(orient_label(label, Orientation(3, (2, 3), (2, 3))), label)
    np.testing.assert_array_equal(orient_label(label, Orientation(1, (2, 3), (2, 3))), label)


# --- datasets: a label turns with its image, never differently ----------------------------------

STORED = (20, 28)  # (H, W) of the photo as stored; orientation 6 shows it 28 high, 20 wide


def photo_of(label: np.ndarray) -> np.ndarray:
    """An image whose pixels say their class: grey 30 + 60 * class (classes 0..3)."""
    return np.repeat((30 + 60 * label.astype(np.uint8))[..., None], 3, axis=-1)


def assert_label_matches_image(record: dict) -> None:
    """Each pixel's label is the class its (JPEG) image pixel shows."""
    image, label = record["image"], record["label"]
    assert label.shape == image.shape[:2]
    seen = np.rint((image[..., 0].astype(float) - 30) / 60)
    np.testing.assert_array_equal(seen, label)


def blocks(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """[H, W] uint8 classes 0..3 in 4x4 blocks (so JPEG keeps each block's grey)."""
    coarse = rng.integers(0, 4, (h // 4 + 1, w // 4 + 1), dtype=np.uint8)
    return np.repeat(np.repeat(coarse, 4, 0), 4, 1)[:h, :w].copy()


@pytest.mark.parametrize("label_drawn_on", ["stored", "displayed"])
def test_folder_dataset_turns_label_with_image(
    tmp_path: Path, rng: np.random.Generator, label_drawn_on: str
) -> None:
    write_mask_tree(tmp_path, {"train": {"upright": (12, 16)}}, n_class=4)
    stored_label = blocks(rng, *STORED)
    Image.fromarray(photo_of(stored_label)).save(
        tmp_path / "images" / "train" / "phone.jpg", exif=exif(6), quality=95, subsampling=0
    )
    label = stored_label if label_drawn_on == "stored" else np.rot90(stored_label, -1)
    Image.fromarray(np.ascontiguousarray(label)).save(tmp_path / "masks" / "train" / "phone.png")
    ds = FolderDataset(tmp_path, "train", n_class=4)
    record = ds[ds.ids.index("phone")]
    assert record["image"].shape == (28, 20, 3)  # as displayed
    assert_label_matches_image(record)
    assert ds[ds.ids.index("upright")]["label"].shape == (12, 16)  # no EXIF: as stored


def test_voc_and_sbd_turn_labels_with_images(tmp_path: Path, rng: np.random.Generator) -> None:
    """VOC (palette PNG labels) and SBD (.mat labels) drawn on the stored pixels."""
    write_voc_tree(tmp_path, {"2007_000001": STORED}, split="train")
    write_sbd_tree(tmp_path, {"2008_000002": STORED}, split="train")
    stored_label = blocks(rng, *STORED)
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    sbd = tmp_path / "benchmark_RELEASE" / "dataset"
    write_palette_png(voc / "SegmentationClass" / "2007_000001.png", stored_label)
    write_sbd_mat(sbd / "cls" / "2008_000002.mat", stored_label)
    for jpeg in (voc / "JPEGImages" / "2007_000001.jpg", sbd / "img" / "2008_000002.jpg"):
        Image.fromarray(photo_of(stored_label)).save(jpeg, exif=exif(8), quality=95, subsampling=0)
    for ds in (VOCSegmentation(tmp_path, "train"), SBDSegmentation(tmp_path, "train")):
        record = ds[0]
        assert record["image"].shape == (28, 20, 3)  # orientation 8: a quarter turn left
        np.testing.assert_array_equal(record["label"], np.rot90(stored_label, 1))
        assert_label_matches_image(record)


@pytest.mark.parametrize("modalities", [("image", "hha"), ("hha",)])
def test_nyud_turns_hha_and_label_with_the_image(
    tmp_path: Path, rng: np.random.Generator, modalities: tuple[str, ...]
) -> None:
    write_nyud_tree(tmp_path, {"test": {"0001": STORED}})
    image = rng.integers(0, 256, (*STORED, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "data" / "images" / "img_0001.png", exif=exif(6))
    with Image.open(tmp_path / "data" / "hha" / "img_0001.png") as im:
        hha = np.asarray(im)
    values = read_mat_field(tmp_path / "segmentation" / "img_0001.mat", "segmentation")
    record = NYUDv2(tmp_path, "test", modalities=modalities)[0]
    if "image" in modalities:
        np.testing.assert_array_equal(record["image"], np.rot90(image, -1))
        turn = 1  # HHA and label were drawn on the stored pixels: turned like the image
    else:
        turn = 0  # no RGB image read, nothing to turn them like
    np.testing.assert_array_equal(record["hha"], np.rot90(hha, -turn))
    expected = np.where(values == 0, 255, values.astype(np.int64) - 1).astype(np.uint8)
    np.testing.assert_array_equal(record["label"], np.rot90(expected, -turn))
