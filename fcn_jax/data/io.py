"""Reading the files datasets are made of: images, index-PNG labels, MATLAB .mat labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image, UnidentifiedImageError

from fcn_jax.errors import FCNError


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as [H, W, 3] uint8 RGB (grey, palette and RGBA are converted)."""
    path = Path(path)
    if not path.is_file():
        raise FCNError(f"image {path} does not exist")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise FCNError(
            f"{path} is not an image PIL can read (corrupt or truncated?): {e}"
        ) from None


def read_index_png(path: str | Path) -> np.ndarray:
    """Read a label PNG as [H, W] uint8 class indices.

    VOC's ``SegmentationClass`` PNGs are palette ('P') images: the pixel values *are* the class
    indices and the palette only colours them, so they are read as indices, never converted to
    RGB. Greyscale ('L') index masks are read the same way; a colour PNG is an error.
    """
    path = Path(path)
    if not path.is_file():
        raise FCNError(f"label {path} does not exist")
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L", "I", "I;16"):
                raise FCNError(
                    f"label {path} is a {im.mode} colour image; expected a palette or greyscale "
                    "PNG whose values are class indices"
                )
            label = np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise FCNError(f"label {path} is not a PNG PIL can read (corrupt?): {e}") from None
    if label.max(initial=0) > 255 or label.min(initial=0) < 0:
        raise FCNError(
            f"label {path} has values outside 0..255 ({label.min()}..{label.max()}): "
            "expected class indices and 255 for void"
        )
    return label.astype(np.uint8)


def read_mat_field(path: str | Path, *fields: str) -> np.ndarray:
    """Read a nested field of a MATLAB .mat file, e.g. ``("GTcls", "Segmentation")``.

    Args:
        path: the .mat file (v5, as SBD, NYUDv2 and SIFT Flow ship them).
        fields: the variable, then struct fields inside it.

    Returns:
        The array found there.
    """
    path = Path(path)
    if not path.is_file():
        raise FCNError(f"label {path} does not exist")
    try:
        value = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)
    except Exception as e:  # scipy raises ValueError, TypeError, OSError... for bad files
        raise FCNError(f"{path} is not a MATLAB .mat file scipy can read (corrupt?): {e}") from None
    for i, field in enumerate(fields):
        try:
            value = value[field] if i == 0 else getattr(value, field)
        except (KeyError, AttributeError):
            have = (
                sorted(k for k in value if not k.startswith("__"))
                if i == 0
                else sorted(getattr(value, "_fieldnames", []))
            )
            raise FCNError(
                f"{path} has no {'.'.join(fields[: i + 1])} (found {have}); is it the right file?"
            ) from None
    return np.asarray(value)


def check_label_values(
    label: np.ndarray, path: str | Path, field: str, lowest: int, highest: int, meaning: str
) -> np.ndarray:
    """A .mat label array as int64 after checking it holds whole numbers in [lowest, highest].

    Label files hold uint8, uint16, signed integers or doubles; checking before any cast keeps
    300 from wrapping to 44, 1.5 from truncating to 1 and -1 from becoming 255 silently.

    Args:
        label: the array read from the file.
        path: the file (named in errors).
        field: the field it came from (``GTcls.Segmentation``, ``S``, ...).
        lowest: smallest valid value.
        highest: largest valid value.
        meaning: what the values mean, for the error (``0 = void, 1..40 = the classes``).

    Returns:
        [H, W] int64.
    """
    if label.ndim != 2 or not (
        np.issubdtype(label.dtype, np.integer) or np.issubdtype(label.dtype, np.floating)
    ):
        raise FCNError(
            f"label {path}: {field} must be an HxW array of class indices, got shape "
            f"{label.shape} dtype {label.dtype}"
        )
    values = np.unique(label)
    bad = values[(values < lowest) | (values > highest) | (values != np.round(values))]
    if bad.size:
        raise FCNError(
            f"label {path}: {field} values {bad.tolist()[:10]} are not in {lowest}..{highest} "
            f"({meaning}); is it the right file?"
        )
    return label.astype(np.int64)
