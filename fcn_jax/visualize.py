"""Pictures: coloured label maps, and overlays of a prediction on its image with a legend.

An overlay is the image and its coloured class map, either side by side (``side``) or blended
into one picture (``blend``), above a legend of the classes present. Small images are enlarged
(nearest neighbour, by a whole factor, so every input pixel stays a sharp square) until the
short side is at least :data:`MIN_SIDE` pixels, and the legend is never narrower than its
widest entry, so even a 1x1 input gives a picture whose class names can be read.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from fcn_jax.data.base import IGNORE_LABEL
from fcn_jax.errors import FCNError

SWATCH = 12  # legend colour square, px
ROW = 16  # legend row height, px
MARGIN = 4  # legend border, px
GAP = 12  # between legend entries, px
MIN_SIDE = 256  # small images are enlarged until their short side has this many pixels...
MAX_SIDE = 4096  # ... unless that would make the long side longer than this
OVERLAYS = ("side", "blend")


def colourise(labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """[H, W] class indices -> [H, W, 3] uint8 colours from a [256, 3] palette."""
    return palette[labels]


def check_overlay(overlay: str, alpha: float) -> None:
    """Fail unless ``overlay`` is a known kind and ``alpha`` lies in [0, 1].

    Raises:
        FCNError: naming the bad value and the valid ones.
    """
    if overlay not in OVERLAYS:
        raise FCNError(f"overlay {overlay!r} is not one of {', '.join(OVERLAYS)}")
    if not 0.0 <= alpha <= 1.0:  # also refuses NaN
        raise FCNError(f"alpha {alpha} is not between 0 (image only) and 1 (mask only)")


def display_scale(height: int, width: int) -> int:
    """The whole factor an overlay enlarges an image of this size by (1 for usual photos).

    The smallest factor that brings the short side to :data:`MIN_SIDE` pixels, but no more than
    keeps the long side within :data:`MAX_SIDE` (a 1x1000 strip is enlarged 4 times, not 256).
    """
    want = -(-MIN_SIDE // max(1, min(height, width)))
    return max(1, min(want, MAX_SIDE // max(1, height, width)))


def blend(image: np.ndarray, colours: np.ndarray, alpha: float) -> np.ndarray:
    """``(1 - alpha) * image + alpha * colours``, rounded to uint8.

    Args:
        image: [H, W, 3] uint8.
        colours: [H, W, 3] uint8, e.g. :func:`colourise` of a class map.
        alpha: weight of ``colours``, 0..1.

    Returns:
        [H, W, 3] uint8.
    """
    mixed = (1.0 - alpha) * image.astype(np.float64) + alpha * colours.astype(np.float64)
    return np.rint(mixed).astype(np.uint8)


def _legend_entries(labels: np.ndarray, class_names: Sequence[str]) -> list[int]:
    """The classes present in ``labels`` that have a name (void excluded), ascending."""
    return [int(c) for c in np.unique(labels) if c != IGNORE_LABEL and c < len(class_names)]


def legend_picture(
    classes: Sequence[int],
    palette: np.ndarray,
    class_names: Sequence[str],
    width: int,
) -> np.ndarray:
    """A legend of ``classes`` (colour swatch and name each), laid out in rows.

    Args:
        classes: class indices to list, in order.
        palette: [256, 3] uint8 colours.
        class_names: one name per class.
        width: the picture's width; widened to the widest entry if narrower, so no name is cut.

    Returns:
        [rows * ROW + 2 * MARGIN, max(width, widest entry), 3] uint8, white background.
    """
    font = ImageFont.load_default()
    item_width = (
        SWATCH + 4 + max((int(np.ceil(font.getlength(class_names[c]))) for c in classes), default=0)
    )
    width = max(width, item_width + 2 * MARGIN)
    per_row = max(1, (width - 2 * MARGIN + GAP) // (item_width + GAP))
    rows = -(-len(classes) // per_row)
    legend = Image.new("RGB", (width, 2 * MARGIN + rows * ROW), (255, 255, 255))
    draw = ImageDraw.Draw(legend)
    for i, c in enumerate(classes):
        x = MARGIN + (i % per_row) * (item_width + GAP)
        y = MARGIN + (i // per_row) * ROW
        draw.rectangle(
            (x, y, x + SWATCH, y + SWATCH),
            fill=tuple(int(v) for v in palette[c]),
            outline=(0, 0, 0),
        )
        draw.text((x + SWATCH + 4, y), class_names[c], fill=(0, 0, 0), font=font)
    return np.asarray(legend)


def overlay_picture(
    image: np.ndarray,
    labels: np.ndarray,
    palette: np.ndarray,
    class_names: Sequence[str],
    overlay: str = "side",
    alpha: float = 0.5,
) -> np.ndarray:
    """A prediction drawn with its image, and a legend of the classes present below.

    Both are first enlarged by :func:`display_scale` (nearest neighbour: each pixel becomes a
    k x k square; k = 1 for images whose short side has 256 pixels or more).

    Args:
        image: [H, W, 3] uint8 RGB.
        labels: [H, W] class indices (255 = void: drawn in the palette's colour, not listed).
        palette: [256, 3] uint8 colours.
        class_names: one name per class.
        overlay: ``side``: the image beside its coloured mask; ``blend``: the coloured mask
            over the image, ``(1 - alpha) * image + alpha * colour`` per pixel.
        alpha: the mask's weight in ``blend``, 0..1 (unused by ``side``).

    Returns:
        [k*H + legend, max(n*k*W, legend width), 3] uint8 picture, n = 2 for ``side`` and 1 for
        ``blend``; where the legend is wider, the picture above it is padded with white on the
        right.

    Raises:
        FCNError: unknown ``overlay`` or ``alpha`` outside [0, 1].
    """
    check_overlay(overlay, alpha)
    colours = colourise(labels, palette)
    if overlay == "side":
        top = np.concatenate([image, colours], axis=1)
    else:
        top = blend(image, colours, alpha)
    k = display_scale(*labels.shape)
    top = np.repeat(np.repeat(top, k, axis=0), k, axis=1)
    legend = legend_picture(
        _legend_entries(labels, class_names), palette, class_names, top.shape[1]
    )
    if legend.shape[1] > top.shape[1]:
        pad = np.full((top.shape[0], legend.shape[1] - top.shape[1], 3), 255, np.uint8)
        top = np.concatenate([top, pad], axis=1)
    return np.concatenate([top, legend], axis=0)
