"""Overlays: legible for tiny inputs, side by side or blended, legend never cut."""

import numpy as np
import pytest
from PIL import ImageFont

from fcn_jax.errors import FCNError
from fcn_jax.resources import voc_palette
from fcn_jax.visualize import (
    MARGIN,
    MIN_SIDE,
    SWATCH,
    blend,
    display_scale,
    legend_picture,
    overlay_picture,
)

NAMES = ["background", "cat", "a-very-distinctive-name", "potted plant"]


def ink(picture: np.ndarray) -> int:
    """Dark pixels (text, swatch outlines)."""
    return int((picture.max(axis=-1) < 128).sum())


def test_display_scale() -> None:
    assert display_scale(1, 1) == MIN_SIDE
    assert display_scale(7, 3) == -(-MIN_SIDE // 3)  # 86: the short side reaches 256
    assert display_scale(375, 500) == 1  # usual photos as they are
    assert display_scale(255, 4000) == 1  # never past 4096 on the long side
    assert display_scale(1, 1000) == 4


@pytest.mark.parametrize(
    ("shape", "classes"),
    [((1, 1), [2]), ((7, 3), [0, 1, 2, 3])],
)
@pytest.mark.parametrize("overlay", ["side", "blend"])
def test_tiny_inputs_give_a_legible_picture(shape, classes, overlay, rng) -> None:
    h, w = shape
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    labels = np.resize(np.array(classes, np.uint8), h * w).reshape(h, w)
    picture = overlay_picture(image, labels, voc_palette(), NAMES, overlay=overlay)
    k = display_scale(h, w)
    assert min(k * h, k * w) >= MIN_SIDE
    panels = 2 if overlay == "side" else 1
    # Each input pixel is a k x k square of the first panel (the image, or its blend).
    first = picture[: k * h, : k * w]
    expected = image if overlay == "side" else blend(image, voc_palette()[labels], 0.5)
    np.testing.assert_array_equal(first, np.repeat(np.repeat(expected, k, 0), k, 1))
    if overlay == "side":
        mask = picture[: k * h, k * w : 2 * k * w]
        np.testing.assert_array_equal(mask[::k, ::k], voc_palette()[labels])
    legend = picture[k * h :]
    # Wide enough for every entry: swatch, gap and the whole rendered name, within margins.
    font = ImageFont.load_default()
    widest = max(font.getlength(NAMES[c]) for c in classes)
    assert legend.shape[1] >= SWATCH + 4 + widest + 2 * MARGIN
    assert picture.shape[1] >= panels * k * w
    # No name cut: the legend holds as much ink as the same entries drawn with room to spare,
    # and nothing touches its right edge.
    roomy = legend_picture(sorted(set(classes)), voc_palette(), NAMES, width=4000)
    assert ink(legend) == ink(roomy) > 0
    assert (legend[:, -MARGIN:] == 255).all()


def test_blend_is_the_weighted_mean(rng) -> None:
    image = rng.integers(0, 256, (300, 260, 3), dtype=np.uint8)  # no enlarging (k = 1)
    labels = rng.integers(0, 4, (300, 260), dtype=np.uint8)
    labels[0, 0] = 255  # void blends with the palette's void colour too
    palette = voc_palette()
    for a in (0.0, 0.3, 0.5, 1.0):
        picture = overlay_picture(image, labels, palette, NAMES, overlay="blend", alpha=a)
        assert picture.shape[1] == 260  # one panel
        top = picture[:300].astype(float)
        expected = (1 - a) * image + a * palette[labels].astype(float)
        assert np.abs(top - expected).max() <= 0.5  # rounded, never truncated
    np.testing.assert_array_equal(
        overlay_picture(image, labels, palette, NAMES, "blend", 0.0)[:300], image
    )
    np.testing.assert_array_equal(
        overlay_picture(image, labels, palette, NAMES, "blend", 1.0)[:300], palette[labels]
    )


def test_side_by_side_of_a_usual_image_is_unscaled(rng) -> None:
    image = rng.integers(0, 256, (260, 300, 3), dtype=np.uint8)
    labels = rng.integers(0, 4, (260, 300), dtype=np.uint8)
    picture = overlay_picture(image, labels, voc_palette(), NAMES)
    assert picture.shape[1] == 600
    np.testing.assert_array_equal(picture[:260, :300], image)
    np.testing.assert_array_equal(picture[:260, 300:], voc_palette()[labels])


@pytest.mark.parametrize(
    ("overlay", "alpha", "message"),
    [("mix", 0.5, "overlay 'mix' is not one of side, blend"),
     ("blend", 1.5, "alpha 1.5 is not between 0"),
     ("blend", float("nan"), "alpha nan is not between 0")],
)  # fmt: skip
def test_bad_overlay_settings(overlay, alpha, message) -> None:
    with pytest.raises(FCNError, match=message):
        overlay_picture(
            np.zeros((2, 2, 3), np.uint8), np.zeros((2, 2), np.uint8), voc_palette(), NAMES,
            overlay, alpha,
        )  # fmt: skip
