"""Per-record augmentation and batch assembly (padding to shape buckets with the void label).

The paper trains and evaluates on whole images one at a time (batch 1, no augmentation): that
is the default. Batching images of different sizes needs padding; padding each batch to one of a
few fixed *bucket* sizes keeps the number of XLA compilations bounded (one per bucket pair
instead of one per image size). Padded pixels carry label 255, so losses and metrics skip them.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence

import numpy as np

from fcn_jax.data.base import IGNORE_LABEL, Record
from fcn_jax.data.resize import resize_shorter
from fcn_jax.errors import FCNError


def default_buckets(max_size: int, step: int = 32) -> tuple[int, ...]:
    """Multiples of ``step`` up to the first one >= ``max_size``: (32, 64, ..., 512) for 500."""
    return tuple(range(step, -(-max_size // step) * step + 1, step))


def bucket_for(size: int, buckets: Sequence[int], what: str) -> int:
    """The smallest bucket >= ``size``; an error naming ``what`` if none is large enough."""
    i = bisect.bisect_left(buckets, size)
    if i == len(buckets):
        raise FCNError(
            f"{what} is {size} px, larger than the largest bucket {buckets[-1]}: add a larger "
            "bucket (data.buckets / data.max_size in the config)"
        )
    return buckets[i]


def random_resize(record: Record, rng: np.random.Generator, low: int, high: int) -> Record:
    """Resize to a random shorter side in ``[low, high]`` pixels, as torchvision's recipe does.

    torchvision's segmentation reference (``RandomResize(0.5 * 520, 2.0 * 520)``) draws the
    side with ``random.randint(low, high)`` (both ends included) and resizes the PIL image
    bilinearly and the target with nearest neighbour: :func:`~fcn_jax.data.resize.resize_shorter`.

    Args:
        record: ``label`` [H, W] and images [H, W, C] uint8; keys starting with ``label`` are
            labels, every other array of the label's (H, W) an image.
        rng: the record's generator.
        low: smallest shorter side.
        high: largest shorter side.
    """
    shape = record["label"].shape
    arrays = [k for k, v in record.items() if isinstance(v, np.ndarray) and v.shape[:2] == shape]
    labels = tuple(k for k in arrays if k.startswith("label"))
    images = tuple(k for k in arrays if not k.startswith("label"))
    return resize_shorter(record, int(rng.integers(low, high + 1)), images, labels)


def augment(
    record: Record,
    rng: np.random.Generator,
    resize_range: tuple[int, int] | None,
    crop_size: int | None,
    flip: bool,
) -> Record:
    """The random training transforms in torchvision's order: resize, then crop and flip."""
    if resize_range is not None:
        record = random_resize(record, rng, *resize_range)
    return random_crop_flip(record, rng, crop_size, flip)


def random_crop_flip(
    record: Record, rng: np.random.Generator, crop_size: int | None, flip: bool
) -> Record:
    """Random ``crop_size`` square crop (void-padded if smaller) and horizontal flip.

    Not in the paper's recipe (it found mirroring and jitter gave nothing); for other recipes.
    """
    image, label = record["image"], record["label"]
    if crop_size is not None:
        h, w = label.shape
        ph, pw = max(crop_size - h, 0), max(crop_size - w, 0)
        if ph or pw:
            image = np.pad(image, ((0, ph), (0, pw), (0, 0)))
            label = np.pad(label, ((0, ph), (0, pw)), constant_values=IGNORE_LABEL)
        top = rng.integers(0, image.shape[0] - crop_size + 1)
        left = rng.integers(0, image.shape[1] - crop_size + 1)
        image = image[top : top + crop_size, left : left + crop_size]
        label = label[top : top + crop_size, left : left + crop_size]
    if flip and rng.random() < 0.5:
        image, label = image[:, ::-1], label[:, ::-1]
    return {**record, "image": np.ascontiguousarray(image), "label": np.ascontiguousarray(label)}


def centre_crop(record: Record, height: int, width: int) -> Record:
    """Crop the centre ``height`` x ``width`` of every per-pixel array, as torchvision does.

    SpeedPaper's first version centre-crops CamVid's 360x480 images and labels to 352x480
    (``torchvision.transforms.functional.center_crop``), sides that are multiples of 32. The
    offsets are torchvision's: ``round((H - height) / 2)`` rows from the top (Python's
    ``round``, which rounds halves to even) and likewise for columns. A side shorter than the
    crop is first padded to it on both sides (the smaller half before), as torchvision does,
    with zeros in images and the void label 255 in labels (torchvision pads a colour label with
    black, which would be a class in CamVid's csv: ignoring the padding is the honest reading).

    Args:
        record: ``image`` [H, W, 3] uint8, ``label`` [H, W] and any other array of the label's
            (H, W) (another modality, another head's labels: keys starting with ``label`` are
            labels).
        height: crop height.
        width: crop width.

    Returns:
        The record with every [H, W, ...] array cropped (or padded) to [height, width, ...].
    """
    if height < 1 or width < 1:
        raise FCNError(f"centre crop size must be positive, got {height}x{width}")
    h, w = record["label"].shape[:2]
    pad_h, pad_w = max(height - h, 0), max(width - w, 0)
    padding = ((pad_h // 2, (pad_h + 1) // 2), (pad_w // 2, (pad_w + 1) // 2))
    # Offsets in the padded array; round() of a half is even, as torchvision's Python round.
    top = round((h + pad_h - height) / 2.0)
    left = round((w + pad_w - width) / 2.0)
    out = dict(record)
    for key, value in record.items():
        if not (isinstance(value, np.ndarray) and value.shape[:2] == (h, w)):
            continue
        if pad_h or pad_w:
            pad = padding + ((0, 0),) * (value.ndim - 2)
            fill = IGNORE_LABEL if key.startswith("label") else 0
            value = np.pad(value, pad, constant_values=fill)
        out[key] = np.ascontiguousarray(value[top : top + height, left : left + width])
    return out


def pad_record(
    record: Record, height: int, width: int, fill: Mapping[str, Sequence[int]] | None = None
) -> Record:
    """Pad images and labels (void) at the bottom/right to ``height`` x ``width``.

    Args:
        record: the record.
        height: padded height.
        width: padded width.
        fill: per image key, the RGB value to pad with (0 by default). The mean pixel makes the
            padding the network's zero after normalisation, like conv1_1's own 100-px pad, so
            a padded image is scored almost as if it stood alone.

    Returns:
        The padded record; any other [H, W, ...] array is padded like the images.
    """
    fill = fill or {}
    out = dict(record)
    h, w = record["label"].shape
    for key, value in record.items():
        if isinstance(value, np.ndarray) and value.shape[:2] == (h, w):
            pad = ((0, height - h), (0, width - w)) + ((0, 0),) * (value.ndim - 2)
            if key.startswith("label"):
                out[key] = np.pad(value, pad, constant_values=IGNORE_LABEL)
            elif key in fill:
                padded = np.empty((height, width, *value.shape[2:]), value.dtype)
                padded[...] = np.asarray(fill[key], value.dtype)
                padded[:h, :w] = value
                out[key] = padded
            else:
                out[key] = np.pad(value, pad)
    return out


def void_like(record: Record) -> Record:
    """A padding example: the record's shape, zero image, all-void label, ``valid`` False."""
    out = {k: np.zeros_like(v) if isinstance(v, np.ndarray) else v for k, v in record.items()}
    for key in out:
        if key.startswith("label"):
            out[key] = np.full_like(record[key], IGNORE_LABEL)
    out["id"] = ""
    return out


def collate(
    records: Sequence[Record],
    buckets: Sequence[int] | None = None,
    batch_size: int | None = None,
    fill: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, np.ndarray]:
    """Stack records into a batch.

    Args:
        records: the batch's records.
        buckets: sorted bucket sizes; each batch is padded to the smallest bucket that holds its
            largest height, and likewise for width. Without buckets all records must have the
            same size (whole-image batch 1 always does).
        batch_size: pad the batch with void examples to this many (the last, partial batch of an
            evaluation spread over devices, so that every real pixel counts exactly once).
        fill: per image key, the RGB value bucket padding uses (see :func:`pad_record`).

    Returns:
        ``image`` [B, H, W, 3] uint8, ``label`` [B, H, W] uint8, any further per-pixel keys,
        ``id`` [B] str, ``height`` / ``width`` [B] int32 (each example's true size) and ``valid``
        [B] bool (False for padding examples).
    """
    sizes = [r["label"].shape for r in records]
    if buckets:
        target = (
            bucket_for(max(s[0] for s in sizes), buckets, "a batch's largest height"),
            bucket_for(max(s[1] for s in sizes), buckets, "a batch's largest width"),
        )
        records = [pad_record(r, *target, fill) for r in records]
    elif len(set(sizes)) > 1:
        raise FCNError(
            f"images of different sizes {sorted(set(sizes))} in one batch: use batch_size 1 "
            "(the paper's whole-image mode) or shape buckets (data.buckets)"
        )
    n_real = len(records)
    if batch_size is not None and n_real < batch_size:
        records = [*records, *[void_like(records[0])] * (batch_size - n_real)]
    batch = {
        key: np.stack([r[key] for r in records])
        for key, value in records[0].items()
        if isinstance(value, np.ndarray)
    }
    batch["id"] = np.array([r["id"] for r in records])
    batch["height"] = np.array([s[0] for s in sizes] + [0] * (len(records) - n_real), np.int32)
    batch["width"] = np.array([s[1] for s in sizes] + [0] * (len(records) - n_real), np.int32)
    batch["valid"] = np.arange(len(records)) < n_real
    return batch
