"""Files shipped inside the package: the VOC sample image, split lists, class names, palettes."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

ASSETS = Path(__file__).parent / "assets"
VOC_SAMPLE_IMAGE = ASSETS / "voc_sample.jpg"
VOC_SAMPLE_LABEL = ASSETS / "voc_sample_label.png"
SPLITS = ASSETS / "splits"  # SPLITS/<dataset>/<split>.txt and classes.txt


def read_class_names(path: Path) -> tuple[str, ...]:
    """Class names, one per line, up to the first blank line (notes may follow it)."""
    names = []
    for line in path.read_text().splitlines():
        if not line.strip():
            break
        names.append(line.strip())
    return tuple(names)


@functools.cache
def voc_class_names() -> tuple[str, ...]:
    """The 21 PASCAL VOC classes, background first."""
    return read_class_names(SPLITS / "voc" / "classes.txt")


def default_class_names(n_class: int) -> tuple[str, ...]:
    """VOC names for 21 classes, ``class_<i>`` otherwise."""
    if n_class == len(voc_class_names()):
        return voc_class_names()
    return tuple(f"class_{i}" for i in range(n_class))


@functools.cache
def voc_palette() -> np.ndarray:
    """The PASCAL VOC colour map (``VOCdevkit`` ``labelcolormap``): [256, 3] uint8.

    Colour of index i spreads the bits of i over the high bits of R, G and B; 255 (void) comes
    out light yellow-white as in the dataset's own PNGs.
    """
    palette = np.zeros((256, 3), np.uint8)
    for i in range(256):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette[i] = (r, g, b)
    return palette
