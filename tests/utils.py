"""Helpers shared by the test modules."""

from pathlib import Path

import numpy as np
import scipy.io
import scipy.sparse
from PIL import Image

from fcn_jax.data.base import IGNORE_LABEL
from fcn_jax.resources import voc_class_names, voc_palette

REPO = Path(__file__).resolve().parents[1]
NARROW = 0.125  # width of the cheap networks used everywhere but the full-width parity module


def random_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """[H, W, 3] uint8 RGB noise."""
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def write_jpeg(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, quality=95, subsampling=0)


def write_palette_png(path: Path, label: np.ndarray) -> None:
    """A VOC SegmentationClass PNG: mode 'P', values = indices, coloured by VOC's palette."""
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = label.shape
    im = Image.frombytes("P", (width, height), label.tobytes())
    im.putpalette(voc_palette().ravel().tolist())
    im.save(path)


def write_sbd_mat(path: Path, label: np.ndarray) -> None:
    """An SBD cls/<id>.mat: struct GTcls with Segmentation, Boundaries (cell), CategoriesPresent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    boundaries = np.empty((len(voc_class_names()) - 1, 1), dtype=object)
    for k in range(boundaries.shape[0]):
        boundaries[k, 0] = scipy.sparse.csc_matrix(label.shape, dtype=np.float64)
    present = np.unique(label[(label > 0) & (label != IGNORE_LABEL)]).astype(np.uint8)[:, None]
    scipy.io.savemat(
        path,
        {"GTcls": {"Segmentation": label, "Boundaries": boundaries, "CategoriesPresent": present}},
    )


def write_list(path: Path, ids: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{i}\n" for i in ids))


def write_voc_tree(
    root: Path, sizes: dict[str, tuple[int, int]], split: str = "seg11valid", seed: int = 0
) -> dict[str, np.ndarray]:
    """A VOC2012 devkit under ``root`` with noise images and random-blob labels for ``sizes``.

    Writes ``ImageSets/Segmentation/<split>.txt`` listing the ids; returns id -> label.
    """
    rng = np.random.default_rng(seed)
    devkit = root / "VOCdevkit" / "VOC2012"
    labels = {}
    for sample_id, (h, w) in sizes.items():
        write_jpeg(devkit / "JPEGImages" / f"{sample_id}.jpg", random_image(rng, h, w))
        label = rng.integers(0, 21, (h, w), dtype=np.uint8)
        label[rng.random((h, w)) < 0.1] = IGNORE_LABEL
        write_palette_png(devkit / "SegmentationClass" / f"{sample_id}.png", label)
        labels[sample_id] = label
    write_list(devkit / "ImageSets" / "Segmentation" / f"{split}.txt", list(sizes))
    return labels


def write_sbd_tree(
    root: Path, sizes: dict[str, tuple[int, int]], split: str = "val", seed: int = 0
) -> dict[str, np.ndarray]:
    """An SBD ``benchmark_RELEASE/dataset`` under ``root``: JPEGs, GTcls .mat labels, a list."""
    rng = np.random.default_rng(seed)
    dataset = root / "benchmark_RELEASE" / "dataset"
    labels = {}
    for sample_id, (h, w) in sizes.items():
        write_jpeg(dataset / "img" / f"{sample_id}.jpg", random_image(rng, h, w))
        labels[sample_id] = rng.integers(0, 21, (h, w), dtype=np.uint8)
        write_sbd_mat(dataset / "cls" / f"{sample_id}.mat", labels[sample_id])
    write_list(dataset / f"{split}.txt", list(sizes))
    return labels
