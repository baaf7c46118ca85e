"""Per-channel mean and std of a dataset's images: the numbers input normalisation subtracts.

    python -m fcn_jax.data.stats --config configs/X.py [--config.data.root=DIR] \
        [--split NAME] [--max-images N]

Reads the split (``config.data.split`` unless ``--split``) through the config's dataset and
prints the mean and std over all pixels in the three conventions a preprocessing may want:
RGB in 0-255, BGR in 0-255 (Caffe-style VGG input) and RGB in [0, 1] (torchvision-style).
Only the images are used, so no class count is needed (a ``folder`` dataset's is not checked).
Exit codes: 0 ok; 2 bad input (flags, config keys, dataset files).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import ml_collections
import numpy as np

from fcn_jax.data.base import SegmentationDataset
from fcn_jax.errors import FCNError


def _subset(n: int, max_images: int | None) -> list[int]:
    """Indices of at most ``max_images`` of ``n`` images, evenly spread over the split.

    Evenly spread rather than the first ones: datasets are often sorted by sequence or source
    (CamVid's stems are its video sequences), and a prefix would describe one of them only.
    """
    if max_images is None or max_images >= n:
        return list(range(n))
    if max_images < 1:
        raise FCNError(f"max_images must be at least 1, got {max_images}")
    return sorted({round(i * (n - 1) / max(max_images - 1, 1)) for i in range(max_images)})


def channel_stats(
    dataset: SegmentationDataset | Sequence,
    max_images: int | None = None,
    progress: bool = False,
    key: str = "image",
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of each RGB channel over every pixel of every image (not per-image means).

    Streams: one image in memory at a time. Sums of values and of squares are kept as Python
    integers, which are exact for any number of uint8 pixels, so the result is the exact
    population mean/std rounded once to float64 (float sums of squares would lose digits to
    cancellation on large datasets).

    Args:
        dataset: records with ``key`` [H, W, 3] uint8 (any sequence of records).
        max_images: use at most this many images, evenly spaced over the dataset; None: all.
        progress: show a tqdm progress bar (on stderr).
        key: the record key of the images.

    Returns:
        (mean, std): [3] float64 each, RGB order, in the 0-255 range; std is the population
        standard deviation (``np.std``'s default, ddof=0).

    Raises:
        FCNError: an empty dataset, ``max_images`` < 1, or an image that is not [H, W, 3] uint8.
    """
    if len(dataset) == 0:
        raise FCNError(f"{dataset!r} has no images to compute statistics over")
    indices = _subset(len(dataset), max_images)
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc="channel stats", unit="image")
    count = 0
    sums = [0, 0, 0]
    squares = [0, 0, 0]
    for i in indices:
        image = np.asarray(dataset[i][key])
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise FCNError(f"image {i} of {dataset!r}: expected HxWx3 uint8, got {image.shape}")
        pixels = image.reshape(-1, 3).astype(np.int64)
        # int64 per image cannot overflow: 255**2 * 2**40 pixels < 2**63.
        count += pixels.shape[0]
        for c, (s, q) in enumerate(zip(pixels.sum(0), (pixels * pixels).sum(0), strict=True)):
            sums[c] += int(s)
            squares[c] += int(q)
    if count == 0:
        raise FCNError(f"{dataset!r}: the images hold no pixels")
    mean = np.array([s / count for s in sums], np.float64)
    # var = (n * sum(x^2) - sum(x)^2) / n^2, the numerator exact in integers.
    std = np.array(
        [
            math.sqrt((count * q - s * s) / (count * count))
            for s, q in zip(sums, squares, strict=True)
        ],
        np.float64,
    )
    return mean, std


def format_stats(mean: np.ndarray, std: np.ndarray) -> str:
    """The mean and std in RGB 0-255, BGR 0-255 and RGB [0, 1], ready to paste into a config."""

    def triple(values: np.ndarray, digits: int) -> str:
        return "(" + ", ".join(f"{v:.{digits}f}" for v in values) + ")"

    return "\n".join(
        [
            f"RGB 0-255:   mean={triple(mean, 3)}  std={triple(std, 3)}",
            f"BGR 0-255:   mean={triple(mean[::-1], 3)}  std={triple(std[::-1], 3)}"
            "  (Caffe-style: channel_order=BGR, scale=255)",
            f"RGB [0, 1]:  mean={triple(mean / 255, 4)}  std={triple(std / 255, 4)}"
            "  (torchvision-style: channel_order=RGB, scale=1)",
        ]
    )


def define_flags(fv: Any) -> None:
    """The CLI's own flags (``--config`` comes with :func:`fcn_jax.cli.parse_flags`)."""
    from absl import flags

    flags.DEFINE_string("split", None, "split to read (default: config.data.split)", flag_values=fv)
    flags.DEFINE_integer(
        "max-images", None, "use at most N images, evenly spaced", lower_bound=1, flag_values=fv
    )


def images_dataset(config: ml_collections.ConfigDict, split: str) -> SegmentationDataset:
    """The config's dataset for ``split``, as far as its images go.

    A ``folder`` dataset is opened images-only: index masks without ``classes.txt`` need a
    class count for training, not for statistics. The others are made as for training (CamVid
    counts its classes in class_dict.csv; synthetic data draws ``model.n_class`` of them).
    """
    from fcn_jax.data import make_dataset
    from fcn_jax.data.base import config_root
    from fcn_jax.data.folder import FolderDataset

    if config.data.name == "folder":
        return FolderDataset(config_root(config), split, images_only=True)
    return make_dataset(config, split)


def main(argv: Sequence[str] | None = None) -> int:
    """Compute and print the statistics of the configured split; returns the exit code."""
    from fcn_jax.cli import parse_flags

    args = parse_flags(define_flags, argv, __doc__, config=True)
    split = args.split or args.config.data.split
    dataset = images_dataset(args.config, split)
    n_used = len(_subset(len(dataset), args.max_images))
    print(f"channel statistics of {dataset!r}: {n_used} of {len(dataset)} images")
    mean, std = channel_stats(dataset, args.max_images, progress=True)
    print(format_stats(mean, std))
    return 0


if __name__ == "__main__":
    from fcn_jax.cli import run

    run(main)
