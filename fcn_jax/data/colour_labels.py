"""Colour-coded label images read through a ``class_dict.csv`` (CamVid's convention).

CamVid as Kaggle and the seed's PyTorch code ship it stores labels as RGB PNGs, one colour per
class, and names the colours in ``class_dict.csv``::

    name,r,g,b
    Animal,64,128,64
    Archway,192,0,128
    ...
    Void,0,0,0

Row order is class order: the first non-void row is class 0. Rows named ``void``,
``unlabelled`` or ``unlabeled`` (any case) are not classes: their colours become the void label
255. :func:`read_class_dict` parses the file once; :meth:`ClassDict.encode` turns an
[H, W, 3] colour label into [H, W] class indices.

With ``void_as_class`` every row is a class, void rows included, each at its row's index:
SpeedPaper's CamVid code trains void as an ordinary class (its ``LabelProcessor`` numbers every
csv row), and a model trained so predicts void at that index. A csv whose void row comes last
(11 CamVid classes, then void) thus gets void as class 11 of 12; Kaggle's 32-row csv, whose
``Void`` is row 30 of 0..31, keeps it there.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
from pathlib import Path

import numpy as np

from fcn_jax.data.base import IGNORE_LABEL
from fcn_jax.data.io import read_image
from fcn_jax.errors import FCNError
from fcn_jax.resources import voc_palette

VOID_NAMES = frozenset({"void", "unlabelled", "unlabeled"})  # compared lower-cased
HEADER = ("name", "r", "g", "b")
MAX_CLASSES = IGNORE_LABEL  # indices 0..254; 255 is void


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """One int32 key per colour, ``r << 16 | g << 8 | b``.

    Args:
        rgb: [..., 3] integer colours in 0..255.

    Returns:
        [...] int32 keys; equal colours give equal keys, and key order is (r, g, b) order.
    """
    rgb = np.asarray(rgb, np.int32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def unpack_rgb(key: int) -> tuple[int, int, int]:
    """The (r, g, b) colour of a :func:`pack_rgb` key."""
    key = int(key)
    return (key >> 16) & 255, (key >> 8) & 255, key & 255


@dataclasses.dataclass(eq=False)
class ClassDict:
    """A parsed ``class_dict.csv``: the classes, their colours and the void colours.

    Attributes:
        path: the csv file (named in errors).
        class_names: class names in csv order, void rows left out; index i is class i.
        colours: [n_class, 3] uint8 colour of each class.
        void_colours: [n_void, 3] uint8 colours that mean void (255); may be empty.
        palette: [256, 3] uint8 colours of label indices: class colours at their indices, the
            first void colour at 255 (so a rendered label looks like the dataset's own PNGs),
            VOC's colour map elsewhere.
    """

    path: Path
    class_names: tuple[str, ...]
    colours: np.ndarray
    void_colours: np.ndarray
    palette: np.ndarray

    @property
    def n_class(self) -> int:
        """Number of classes (void rows excluded)."""
        return len(self.class_names)

    @functools.cached_property
    def _table(self) -> tuple[np.ndarray, np.ndarray]:
        """(sorted packed colours, the label index of each), for ``np.searchsorted``."""
        keys = np.concatenate([pack_rgb(self.colours), pack_rgb(self.void_colours)])
        values = np.concatenate(
            [
                np.arange(self.n_class, dtype=np.uint8),
                np.full(len(self.void_colours), IGNORE_LABEL, np.uint8),
            ]
        )
        order = np.argsort(keys)
        return keys[order], values[order]

    def encode(self, rgb: np.ndarray, path: str | Path) -> np.ndarray:
        """Map a colour-coded label to class indices.

        Args:
            rgb: [H, W, 3] uint8 colour label.
            path: the file it was read from (named in errors).

        Returns:
            [H, W] uint8 class indices, 255 where the colour is a void colour.

        Raises:
            FCNError: ``rgb`` is not [H, W, 3] uint8, or holds a colour the csv does not list
                (the message names the file, the colour and a pixel where it occurs).
        """
        rgb = np.asarray(rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise FCNError(
                f"label {path}: a colour label must be HxWx3 uint8, got {rgb.shape} {rgb.dtype}"
            )
        keys, values = self._table
        packed = pack_rgb(rgb)
        # O(H*W*log(n_colours)) with no per-pixel Python: each pixel's colour is looked up
        # among the few csv colours; a pixel whose nearest table entry differs is unknown.
        index = np.searchsorted(keys, packed).clip(max=len(keys) - 1)
        known = keys[index] == packed
        if not known.all():
            raise self._unknown_colour(packed, known, path)
        return values[index]

    def read_label(self, path: str | Path) -> np.ndarray:
        """Read a colour-coded label file as [H, W] uint8 class indices (255 = void)."""
        return self.encode(read_image(path), path)

    def _unknown_colour(self, packed: np.ndarray, known: np.ndarray, path: str | Path) -> FCNError:
        """The error for pixels whose colour is not in the csv: one colour, one pixel."""
        row, col = np.unravel_index(int(np.argmin(known)), known.shape)
        r, g, b = unpack_rgb(packed[row, col])
        n_unknown = len(np.unique(packed[~known]))
        others = f" (and {n_unknown - 1} other unknown colours)" if n_unknown > 1 else ""
        # The usual causes: a label saved as JPEG (compression invents colours), resized with
        # interpolation, a greyscale index mask, or the csv of another dataset.
        hint = (
            "; this grey looks like an index mask, not a colour-coded label" if r == g == b else ""
        )
        return FCNError(
            f"label {path}: colour ({r}, {g}, {b}) at pixel (row {row}, col {col}) is not in "
            f"{self.path}{others}{hint}. Colour labels must be lossless PNGs using exactly the "
            f"csv's colours (no JPEG, no interpolated resizing)"
        )


def read_class_dict(path: str | Path, void_as_class: bool = False) -> ClassDict:
    """Parse a ``class_dict.csv`` (header ``name,r,g,b``, one row per class, in class order).

    Args:
        path: the csv file.
        void_as_class: every row is a class, void/unlabelled rows too, at their row index
            (SpeedPaper's reading); otherwise those rows are void (255) and the others are
            numbered in order.

    Returns:
        The :class:`ClassDict`; rows named void/unlabelled (any case) become void colours
        unless ``void_as_class``.

    Raises:
        FCNError: naming the file (and line): missing or unreadable file, a header other than
            ``name,r,g,b``, a row without 4 fields, colour values that are not integers in
            0..255, an empty name, duplicate names or colours, no class rows, or more than 255
            classes.
    """
    path = Path(path)
    if not path.is_file():
        raise FCNError(f"class dict {path} does not exist (expected a csv with header name,r,g,b)")
    try:
        # utf-8-sig: spreadsheet programs often save a byte-order mark before the header.
        with path.open(newline="", encoding="utf-8-sig") as f:
            rows = [
                (n, row) for n, row in enumerate(csv.reader(f), 1) if any(c.strip() for c in row)
            ]
    except (UnicodeDecodeError, csv.Error) as e:
        raise FCNError(f"class dict {path} is not a readable csv text file: {e}") from None
    if not rows:
        raise FCNError(
            f"class dict {path} is empty; expected a header name,r,g,b and one row per class"
        )
    header = tuple(c.strip().lower() for c in rows[0][1])
    if header != HEADER:
        raise FCNError(
            f"class dict {path}: header is {','.join(rows[0][1])!r}, expected 'name,r,g,b'"
        )
    names: list[str] = []
    colours: list[tuple[int, int, int]] = []
    void_colours: list[tuple[int, int, int]] = []
    seen_names: dict[str, int] = {}
    seen_colours: dict[tuple[int, int, int], tuple[str, int]] = {}
    for line, row in rows[1:]:
        where = f"class dict {path}, line {line}"
        if len(row) != 4:
            raise FCNError(f"{where}: expected 4 fields name,r,g,b, got {len(row)}: {row}")
        name = row[0].strip()
        if not name:
            raise FCNError(f"{where}: empty class name")
        colour = tuple(_channel(v, where) for v in row[1:])
        if name in seen_names:
            raise FCNError(f"{where}: class name {name!r} repeats line {seen_names[name]}")
        if colour in seen_colours:
            other, other_line = seen_colours[colour]
            raise FCNError(
                f"{where}: colour {colour} of {name!r} is also the colour of {other!r} "
                f"(line {other_line}); each colour must mean one class"
            )
        seen_names[name] = line
        seen_colours[colour] = (name, line)
        if name.lower() in VOID_NAMES and not void_as_class:
            void_colours.append(colour)
        else:
            names.append(name)
            colours.append(colour)
    if not names:
        raise FCNError(f"class dict {path} lists no classes (only a header or void rows)")
    if len(names) > MAX_CLASSES:
        raise FCNError(
            f"class dict {path} lists {len(names)} classes; at most {MAX_CLASSES} fit uint8 "
            f"labels with {IGNORE_LABEL} for void"
        )
    colour_array = np.asarray(colours, np.uint8).reshape(-1, 3)
    void_array = np.asarray(void_colours, np.uint8).reshape(-1, 3)
    palette = voc_palette().copy()
    palette[: len(names)] = colour_array
    if len(void_array):
        palette[IGNORE_LABEL] = void_array[0]
    return ClassDict(path, tuple(names), colour_array, void_array, palette)


def _channel(value: str, where: str) -> int:
    """One of r, g, b as an int in 0..255."""
    try:
        number = int(value.strip())
    except ValueError:
        number = -1
    if not 0 <= number <= 255:
        raise FCNError(f"{where}: colour value {value.strip()!r} is not an integer in 0..255")
    return number
