"""The input pipeline on grain: deterministic by seed, worker processes, prefetch, resumable.

``make_pipeline`` turns a dataset (a random-access source of records) into an iterable of
batches (see :func:`~fcn_jax.data.transforms.collate`). Order and augmentation depend only on
the seed, so the iterator's state (``iterator.get_state()``, a small dict) saved with a
checkpoint and restored with ``set_state`` replays exactly the batches an uninterrupted run
would have seen, with or without worker processes.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from collections.abc import Sequence

import grain
import numpy as np
from absl import flags

from fcn_jax.data.base import SegmentationDataset
from fcn_jax.data.transforms import augment, centre_crop, collate
from fcn_jax.errors import FCNError


@dataclasses.dataclass(frozen=True)
class PipelineOptions:
    """How to read a dataset.

    Attributes:
        batch_size: examples per batch (per host). 1 with no buckets is the paper's mode.
        shuffle: reshuffle every epoch (training); evaluation reads in split order.
        seed: seed of shuffling and augmentation.
        num_epochs: passes over the data; None repeats forever (training by steps).
        buckets: sorted bucket sizes to pad batches to; None for whole images.
        pad_last_batch: pad a final partial batch with void examples to ``batch_size``.
        centre_crop: ``(height, width)`` cropped from every image's centre before any random
            crop (SpeedPaper's 352x480 on CamVid); None for whole images.
        resize_range: ``(min, max)``: each image's shorter side resized to a random side in
            that range before the crop (torchvision's recipe: (260, 1040)); None: no resize.
        crop_size: random square crop (non-paper recipes); None for whole images.
        flip: random horizontal flip (non-paper recipes).
        worker_count: worker processes decoding records (0: in the main process).
        prefetch: batches each worker keeps ready.
        shard_index: this host's shard (multi-host: jax.process_index()).
        shard_count: number of shards (jax.process_count()). Hosts read interleaved batches
            of one stream: with ``batch_size`` per host, host ``h`` gets batches ``h, h + n,
            ...``, so that together they read the global batches one host would have read,
            in the same order and with the same augmentation. Buckets then pad to the largest
            bucket: a host sees only its own images, and every host must give the devices
            arrays of one shape.
        fill: ``(image key, RGB)`` pairs: the pixel bucket padding uses (0 if not given); the
            weights' mean pixel makes the padding zero after normalisation.
    """

    batch_size: int = 1
    shuffle: bool = False
    seed: int = 0
    num_epochs: int | None = 1
    buckets: tuple[int, ...] | None = None
    pad_last_batch: bool = False
    centre_crop: tuple[int, int] | None = None
    resize_range: tuple[int, int] | None = None
    crop_size: int | None = None
    flip: bool = False
    worker_count: int = 0
    prefetch: int = 2
    shard_index: int = 0
    shard_count: int = 1
    fill: tuple[tuple[str, tuple[int, int, int]], ...] = ()


def make_pipeline(dataset: SegmentationDataset, options: PipelineOptions) -> grain.IterDataset:
    """Build the grain pipeline of batches.

    Args:
        dataset: any :class:`SegmentationDataset`.
        options: batching, shuffling, augmentation and worker settings.

    Returns:
        An iterable of batch dicts; ``iter()`` gives a checkpointable iterator.
    """
    if options.batch_size < 1:
        raise FCNError(f"batch_size must be >= 1, got {options.batch_size}")
    if len(dataset) == 0:
        raise FCNError(f"{dataset!r} has no images")
    buckets = tuple(sorted(options.buckets)) if options.buckets else None
    if not 0 <= options.shard_index < options.shard_count:
        raise FCNError(f"shard_index {options.shard_index} not in [0, {options.shard_count})")
    if options.shard_count > 1 and buckets:
        buckets = buckets[-1:]
    ds = grain.MapDataset.source(dataset)
    if options.shuffle:
        ds = ds.shuffle(seed=options.seed)
    if options.num_epochs != 1:
        ds = ds.repeat(options.num_epochs)
    if options.centre_crop is not None:
        if len(options.centre_crop) != 2:
            raise FCNError(f"centre_crop must be (height, width), got {options.centre_crop}")
        height, width = (int(v) for v in options.centre_crop)
        ds = ds.map(functools.partial(centre_crop, height=height, width=width))
    resize_range = options.resize_range
    if resize_range is not None:
        low, high = (int(v) for v in resize_range) if len(resize_range) == 2 else (0, -1)
        if not 1 <= low <= high:
            raise FCNError(
                f"data.resize_range={tuple(resize_range)}: give (min, max) shorter sides in "
                "pixels, 1 <= min <= max, e.g. (260, 1040)"
            )
        resize_range = (low, high)
    if resize_range is not None or options.crop_size is not None or options.flip:
        transforms = functools.partial(
            augment, resize_range=resize_range, crop_size=options.crop_size, flip=options.flip
        )
        ds = ds.random_map(transforms, seed=options.seed)
    batch_fn = functools.partial(
        collate,
        buckets=buckets,
        batch_size=options.batch_size if options.pad_last_batch else None,
        fill=dict(options.fill),
    )
    # An endless stream has no last batch to keep; dropping it also keeps grain's length of a
    # repeated dataset (sys.maxsize) from overflowing when ceil-divided by batch 1.
    ds = ds.batch(options.batch_size, drop_remainder=options.num_epochs is None, batch_fn=batch_fn)
    if options.shard_count > 1:
        ds = ds.slice(slice(options.shard_index, None, options.shard_count))
    # Threads read ahead inside each process; worker processes decode in parallel.
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=options.prefetch))
    if options.worker_count > 0:
        _prepare_worker_processes()
        it = it.mp_prefetch(
            grain.MultiprocessingOptions(
                num_workers=options.worker_count, per_worker_buffer_size=options.prefetch
            )
        )
        # Workers hand arrays over in shared memory, freed when the last reference dies; a copy
        # frees each block at once instead of whenever (or, at exit, after) the batch is dropped.
        it = it.map(_to_plain_arrays)
    return it


# CPython's resource tracker (which passes our -W options on to its process) reports shared
# memory that a worker created and the consumer unlinked as "leaked" at exit (bpo-38119); grain
# frees every block (/dev/shm stays bounded), so it is noise.
QUIET_RESOURCE_TRACKER = "ignore::UserWarning:multiprocessing.resource_tracker"


def _prepare_worker_processes() -> None:
    """Make the process-wide settings grain's worker processes need.

    Called by the first pipeline that has workers, never at import: importing this module
    must leave the process as it was. Marks absl's flags parsed (grain's workers read them;
    outside an absl app nobody parsed them) and adds :data:`QUIET_RESOURCE_TRACKER` to
    ``sys.warnoptions``.
    """
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
    if QUIET_RESOURCE_TRACKER not in sys.warnoptions:
        sys.warnoptions.append(QUIET_RESOURCE_TRACKER)


def _to_plain_arrays(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: np.array(v) for k, v in batch.items()}


def num_batches(n_examples: int, batch_size: int) -> int:
    """Batches in one pass over ``n_examples`` (the last may be partial)."""
    return -(-n_examples // batch_size)


def iterate_ids(batches: Sequence[dict]) -> list[str]:
    """The ids of the real (non-padding) examples of a sequence of batches, in order."""
    return [str(i) for b in batches for i, v in zip(b["id"], b["valid"], strict=True) if v]
