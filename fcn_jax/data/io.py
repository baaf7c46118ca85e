"""Reading the files datasets are made of: images, index-PNG labels, MATLAB .mat labels.

Images are read as a viewer shows them (:func:`read_image`): upright (the EXIF orientation
applied) and as 8-bit RGB, whatever the file's bit depth. Labels are class indices, read as
stored; :func:`orient_label` turns a label the way its image was turned, when it was drawn on the
stored pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from fcn_jax.errors import FCNError

# Modes that PIL's convert("RGB") turns into 8-bit RGB as a viewer shows them: 1-bit, 8-bit grey,
# palette, with alpha (dropped, not composited: a segmentation network sees the pixels' colours,
# whatever their transparency), CMYK, YCbCr. PIL already reads 16-bit RGB(A) and grey+alpha PNGs
# into the 8-bit modes, keeping each sample's high byte.
_EIGHT_BIT_MODES = frozenset(
    {"1", "L", "P", "LA", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "HSV"}
)
# Formats whose 32-bit "I" mode holds 16-bit samples (0..65535): PNG (older Pillows read 16-bit
# grey as "I") and PGM (Pillow scales any maxval above 255 to 0..65535).
_SIXTEEN_BIT_I_FORMATS = frozenset({"PNG", "PPM"})
# What PIL raises for a file it cannot decode (ValueError: a bad header field; the bomb error:
# a header claiming more pixels than PIL will allocate).
_READ_ERRORS = (
    UnidentifiedImageError,
    OSError,
    SyntaxError,
    ValueError,
    Image.DecompressionBombError,
)
_TURNS = (2, 3, 4, 5, 6, 7, 8)  # the EXIF orientations that turn or flip the stored pixels


@dataclass(frozen=True)
class Orientation:
    """How :func:`read_image_oriented` turned a file's stored pixels upright.

    Attributes:
        tag: the EXIF orientation applied, 2..8; 1 when the pixels were used as stored (no EXIF,
            orientation 1, or a value outside 1..8).
        stored_shape: (H, W) of the pixels as stored in the file.
        shape: (H, W) as displayed: the image returned. Orientations 5..8 (a quarter turn)
            swap H and W; 2..4 (flips, half turn) keep them.
    """

    tag: int
    stored_shape: tuple[int, int]
    shape: tuple[int, int]


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as a viewer shows it: [H, W, 3] uint8 RGB, upright.

    See :func:`read_image_oriented` for the rules (EXIF orientation, bit depths, alpha).

    Returns:
        [H, W, 3] uint8, H and W as displayed (after the EXIF orientation).
    """
    return read_image_oriented(path)[0]


def read_image_oriented(path: str | Path) -> tuple[np.ndarray, Orientation]:
    """Read an image as a viewer shows it, and how its stored pixels were turned to get there.

    - The EXIF orientation is applied (:func:`PIL.ImageOps.exif_transpose`): a phone photo
      stored 60 wide and 40 high with orientation 6 is returned 40 wide and 60 high, as shown.
    - 8-bit images of every usual mode (grey, 1-bit, palette, RGB, CMYK, YCbCr, HSV) become
      RGB; alpha is dropped, not composited (the colours under a transparent pixel are kept).
    - 16-bit greyscale (PIL modes ``I;16``, ``I;16B``, ``I;16L``, and ``I`` from a 16-bit PNG or
      PGM) keeps each value's high byte (``value >> 8``: 0..65535 -> 0..255), as PIL itself
      reads 16-bit RGB(A) PNGs. ``convert("RGB")`` would clip every value above 255 to white.
    - 32-bit integer (``I`` from TIFF and others) and float (``F``) images have no standard
      range to scale from (depth in mm, counts, 0..1 or HDR radiance), so they are refused with
      an :class:`~fcn_jax.errors.FCNError` rather than guessed at.
    - Other modes (LAB...) are refused too, naming the mode.

    Args:
        path: the image file.

    Returns:
        [H, W, 3] uint8 RGB, H and W as displayed, and the :class:`Orientation` applied.

    Raises:
        FCNError: the file is missing, not an image PIL can read, or of a mode with no 8-bit
            rendering (the message names the file, the mode and what to do).
    """
    path = Path(path)
    if not path.is_file():
        raise FCNError(f"image {path} does not exist")
    try:
        with Image.open(path) as im:
            stored_shape = (im.height, im.width)
            tag = im.getexif().get(ExifTags.Base.Orientation, 1)
            upright = ImageOps.exif_transpose(im)
            image = _to_rgb8(upright, im.format, path)
    except _READ_ERRORS as e:
        raise FCNError(
            f"{path} is not an image PIL can read (corrupt or truncated?): {e}"
        ) from None
    if tag not in _TURNS:
        tag = 1  # exif_transpose ignores values outside 2..8 (0, 9, junk), and so do labels
    return image, Orientation(int(tag), stored_shape, image.shape[:2])


def read_image_as_stored(path: str | Path) -> np.ndarray:
    """Read an image's pixels as the file stores them, any EXIF orientation ignored.

    For data whose labels were drawn on the stored pixels and whose reference loader reads them
    so: COCO's annotations, which torchvision's ``CocoDetection`` pairs with
    ``Image.open(path).convert("RGB")`` (no EXIF turn). Modes and bit depths follow
    :func:`read_image_oriented`'s rules.

    Returns:
        [H, W, 3] uint8 RGB, H and W as stored.

    Raises:
        FCNError: as :func:`read_image_oriented`.
    """
    path = Path(path)
    if not path.is_file():
        raise FCNError(f"image {path} does not exist")
    try:
        with Image.open(path) as im:
            return _to_rgb8(im, im.format, path)
    except _READ_ERRORS as e:
        raise FCNError(
            f"{path} is not an image PIL can read (corrupt or truncated?): {e}"
        ) from None


def _to_rgb8(im: Image.Image, file_format: str | None, path: Path) -> np.ndarray:
    """[H, W, 3] uint8 RGB from an opened image of any mode, or an error naming the mode.

    Args:
        im: the (upright) image.
        file_format: the format PIL read it as (``PNG``, ``TIFF``...): it tells what an ``I``
            image's values range over.
        path: the file, for messages.
    """
    mode = im.mode
    if mode in _EIGHT_BIT_MODES:
        return np.asarray(im.convert("RGB"))
    if mode.startswith("I;16") or (mode == "I" and file_format in _SIXTEEN_BIT_I_FORMATS):
        grey = np.asarray(im)
        if grey.size and (grey.min() < 0 or grey.max() > 65535):
            raise FCNError(
                f"{path} is a 16-bit image (PIL mode {mode}) with values outside 0..65535 "
                f"({grey.min()}..{grey.max()}): convert it to an 8-bit PNG or JPEG"
            )
        # The high byte: 0..65535 onto 0..255, as PIL reads 16-bit RGB PNGs.
        eight = (grey.astype(np.uint32) >> 8).astype(np.uint8)
        return np.repeat(eight[..., None], 3, axis=-1)
    if mode in ("I", "F"):
        kind = "32-bit integer" if mode == "I" else "32-bit float"
        raise FCNError(
            f"{path} is a {kind} image (PIL mode {mode}), which has no standard 8-bit rendering "
            "(what range would be black and white?): convert it to an 8-bit or 16-bit PNG or a "
            "JPEG, scaling its values as suits the data"
        )
    raise FCNError(
        f"{path} is a PIL mode {mode} image, which is not read as colours: convert it to an RGB "
        "PNG or JPEG"
    )


def orient_label(label: np.ndarray, orientation: Orientation) -> np.ndarray:
    """A per-pixel map of an image (label, HHA...) turned the way the image was read.

    Label files carry no EXIF orientation of their own (PNGs are read as stored, .mat files
    have none), while :func:`read_image_oriented` turns the image upright. The rule:

    - the image was not turned (``orientation.tag == 1``): the label is returned as it is;
    - the label has the image's displayed (H, W): it was drawn on the upright picture (as
      annotation tools that honour EXIF show it) and is returned as it is. This is also the
      reading of a label whose image is flipped or turned half way (orientations 2..4) or is
      square: its shape cannot tell, and the displayed picture is what the annotator saw;
    - the label has the image's stored (H, W), not the displayed one: it was drawn on the
      stored pixels (by a tool that ignored EXIF) and is turned exactly like the image;
    - any other shape is returned as it is, for :func:`~fcn_jax.data.base.validate_record` to
      report the size mismatch with both files named.

    A label is thus turned exactly as its image was, or not at all.

    Args:
        label: [H, W] or [H, W, C] array (any dtype PIL holds: uint8, uint16, int32, float32).
        orientation: what reading the image did.

    Returns:
        The label, [H, W(, C)] as displayed where it was turned.
    """
    if orientation.tag == 1 or label.shape[:2] == orientation.shape:
        return label
    if label.shape[:2] != orientation.stored_shape:
        return label
    return apply_orientation(label, orientation)


def apply_orientation(array: np.ndarray, orientation: Orientation) -> np.ndarray:
    """Turn stored pixels upright, as :func:`read_image_oriented` turned its image's.

    Unconditional; :func:`orient_label` decides whether a label needs it.

    Args:
        array: [H, W] or [H, W, C] with the image's stored (H, W), of a dtype PIL holds (uint8,
            uint16, int32, float32).
        orientation: what reading the image did.

    Returns:
        [H', W'(, C)]: (H, W) swapped for orientations 5..8.
    """
    if orientation.tag == 1:
        return array
    # PIL's own table of the eight orientations, not a copy of it: the array is given the
    # image's EXIF tag and turned by the same exif_transpose.
    im = Image.fromarray(array)
    im.getexif()[ExifTags.Base.Orientation] = orientation.tag
    return np.asarray(ImageOps.exif_transpose(im)).astype(array.dtype, copy=False)


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
        The array found there, with MATLAB's shape: a label map stays [H, W] even when H or W
        is 1 (``squeeze_me`` would make a 1xN map 1-D, which the datasets then refuse).
    """
    path = Path(path)
    if not path.is_file():
        raise FCNError(f"label {path} does not exist")
    try:
        value = scipy.io.loadmat(path, squeeze_me=False, struct_as_record=False)
    except Exception as e:  # scipy raises ValueError, TypeError, OSError... for bad files
        raise FCNError(f"{path} is not a MATLAB .mat file scipy can read (corrupt?): {e}") from None
    for i, field in enumerate(fields):
        if i > 0:
            value = _one_struct(value)
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


def _one_struct(value: object) -> object:
    """The struct inside a 1x1 struct array (unsqueezed loadmat wraps every struct in one)."""
    if isinstance(value, np.ndarray) and value.dtype == object and value.size == 1:
        return value.item()
    return value


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
