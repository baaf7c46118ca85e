"""A built-in synthetic segmentation dataset: coloured shapes on textured backgrounds.

Needs no download, so the demo and the tests run anywhere. Each sample is a pure function of
(seed, split, index): random access, identical across processes and runs. Classes are told
apart by colour (one hue per class, jittered) and the backgrounds carry stripes and noise, so a
narrow FCN learns it in minutes on a CPU but not in one step. As in VOC, a one-pixel void (255)
border separates each shape from what surrounds it.
"""

from __future__ import annotations

import colorsys
import zlib

import numpy as np

from fcn_jax.data.base import IGNORE_LABEL, Record, SegmentationDataset
from fcn_jax.data.nyud import MODALITIES
from fcn_jax.data.siftflow import GEOMETRIC_CLASSES


def class_colours(n_class: int) -> np.ndarray:
    """[n_class, 3] float base colours: grey background, then evenly spaced saturated hues."""
    colours = [(0.45, 0.45, 0.45)]
    for c in range(1, n_class):
        colours.append(colorsys.hsv_to_rgb((c - 1) / max(n_class - 1, 1), 0.85, 0.9))
    return np.asarray(colours) * 255


class SyntheticSegmentation(SegmentationDataset):
    """Procedural shapes (ellipses, rectangles, triangles) of ``n_class - 1`` colours.

    Args:
        split: any name; different names give disjoint streams of images.
        n_class: classes including background (class 0).
        num_images: images in the split.
        min_size: smallest image side.
        max_size: largest image side (sides are drawn independently: most images are not square).
        seed: the dataset's seed.
        max_shapes: at most this many shapes per image (at least one).
        modalities: image keys of the records: ``image`` and/or ``hha`` (a second, colour-
            inverted view of the same scene, standing in for NYUDv2's depth encoding).
        geometric: also give ``label_geo``, SIFT Flow-like geometric classes (sky above the
            horizon, horizontal below it, vertical for the shapes).
    """

    name = "synthetic"
    image_keys = MODALITIES  # it stands in for NYUDv2's RGB and HHA streams too

    def __init__(
        self,
        split: str = "train",
        n_class: int = 5,
        num_images: int = 64,
        min_size: int = 48,
        max_size: int = 64,
        seed: int = 0,
        max_shapes: int = 4,
        modalities: tuple[str, ...] = ("image",),
        geometric: bool = False,
    ) -> None:
        if n_class < 2:
            raise ValueError(f"synthetic data needs n_class >= 2, got {n_class}")
        if not 1 <= min_size <= max_size:
            raise ValueError(f"need 1 <= min_size <= max_size, got {min_size}, {max_size}")
        names = ["background", *(f"shape_{c}" for c in range(1, n_class))]
        super().__init__(split, [f"{split}_{i:05d}" for i in range(num_images)], names)
        self.min_size, self.max_size = min_size, max_size
        self.seed, self.max_shapes = seed, max_shapes
        self.modalities, self.geometric = tuple(modalities), geometric
        self._colours = class_colours(n_class)
        self._split_code = zlib.crc32(split.encode())  # stable across processes, unlike hash()

    def load(self, sample_id: str) -> Record:
        """Generate the sample ``<split>_<index>``."""
        index = int(sample_id.rsplit("_", 1)[1])
        rng = np.random.default_rng([self.seed, self._split_code, index])
        h, w = rng.integers(self.min_size, self.max_size + 1, size=2)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        image = self._background(rng, yy, xx)
        label = np.zeros((h, w), np.uint8)
        for _ in range(rng.integers(1, self.max_shapes + 1)):
            c = int(rng.integers(1, self.n_class))
            mask = self._shape(rng, yy, xx, h, w)
            colour = self._colours[c] + rng.normal(0, 12, 3)
            image[mask] = colour + rng.normal(0, 8, (int(mask.sum()), 3))
            label[mask] = c
        # Void border, one pixel wide, where a pixel's right or lower neighbour differs.
        edge = np.zeros_like(label, bool)
        edge[:, :-1] |= label[:, :-1] != label[:, 1:]
        edge[:-1, :] |= label[:-1, :] != label[1:, :]
        label[edge] = IGNORE_LABEL
        image = np.clip(image, 0, 255).astype(np.uint8)
        record = {"label": label, "id": sample_id}
        if "image" in self.modalities:
            record["image"] = image
        if "hha" in self.modalities:
            record["hha"] = 255 - image
        if self.geometric:
            geo = np.where(yy < h / 2, 0, 1).astype(np.uint8)  # sky above, ground below
            geo[label > 0] = 2  # the shapes stand up: vertical
            geo[label == IGNORE_LABEL] = IGNORE_LABEL
            record["label_geo"] = geo
        return record

    @property
    def label_classes(self) -> dict[str, tuple[str, ...]]:
        """``label`` classes, plus the geometric ones when asked for."""
        classes = {"label": self.class_names}
        if self.geometric:
            classes["label_geo"] = GEOMETRIC_CLASSES
        return classes

    def _background(self, rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        # Grey with random stripes and noise: texture the network must learn to ignore.
        angle, freq = rng.uniform(0, np.pi), rng.uniform(0.1, 0.5)
        stripes = 25 * np.sin(freq * (np.cos(angle) * xx + np.sin(angle) * yy))
        base = self._colours[0] + rng.normal(0, 15, 3)
        return base + stripes[..., None] + rng.normal(0, 10, (*yy.shape, 3))

    def _shape(
        self, rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, h: int, w: int
    ) -> np.ndarray:
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(0.1, 0.35) * h, rng.uniform(0.1, 0.35) * w
        kind = rng.integers(3)
        if kind == 0:  # ellipse
            return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        if kind == 1:  # axis-aligned rectangle
            return (np.abs(yy - cy) <= ry) & (np.abs(xx - cx) <= rx)
        # triangle: apex up, inside the box; half-planes of its two slanted sides and base
        top, bottom = cy - ry, cy + ry
        t = np.clip((yy - top) / (bottom - top), 0, None)
        return (yy >= top) & (yy <= bottom) & (np.abs(xx - cx) <= t * rx)
