"""Pictures: coloured label maps, image | prediction overlays with a legend of classes present."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from fcn_jax.data.base import IGNORE_LABEL

SWATCH = 12  # legend colour square, px
ROW = 16  # legend row height, px


def colourise(labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """[H, W] class indices -> [H, W, 3] uint8 colours from a [256, 3] palette."""
    return palette[labels]


def overlay_picture(
    image: np.ndarray,
    labels: np.ndarray,
    palette: np.ndarray,
    class_names: Sequence[str],
) -> np.ndarray:
    """The image beside its coloured mask, with a legend of the classes present below.

    Args:
        image: [H, W, 3] uint8 RGB.
        labels: [H, W] class indices (255 = void, shown in the palette's colour, not listed).
        palette: [256, 3] uint8 colours.
        class_names: one name per class.

    Returns:
        [H + legend, 2W, 3] uint8 picture.
    """
    w = labels.shape[1]
    top = np.concatenate([image, colourise(labels, palette)], axis=1)
    present = [int(c) for c in np.unique(labels) if c != IGNORE_LABEL and c < len(class_names)]
    font = ImageFont.load_default()
    item_width = (
        SWATCH + 6 + max((int(font.getlength(class_names[c])) for c in present), default=0) + 12
    )
    per_row = max(1, (2 * w - 4) // max(item_width, 1))
    rows = -(-len(present) // per_row)
    legend = Image.new("RGB", (2 * w, 4 + rows * ROW), (255, 255, 255))
    draw = ImageDraw.Draw(legend)
    for i, c in enumerate(present):
        x, y = 4 + (i % per_row) * item_width, 2 + (i // per_row) * ROW
        draw.rectangle(
            (x, y, x + SWATCH, y + SWATCH),
            fill=tuple(int(v) for v in palette[c]),
            outline=(0, 0, 0),
        )
        draw.text((x + SWATCH + 4, y), class_names[c], fill=(0, 0, 0), font=font)
    return np.concatenate([top, np.asarray(legend)], axis=0)
