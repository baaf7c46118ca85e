"""fcn_jax.data.transforms (buckets, padding, crop/flip, collate) and fcn_jax.data.pipeline."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import subprocess
import sys
from collections.abc import Iterator

import numpy as np
import pytest

from fcn_jax.data.base import IGNORE_LABEL
from fcn_jax.data.pipeline import PipelineOptions, iterate_ids, make_pipeline, num_batches
from fcn_jax.data.synthetic import SyntheticSegmentation
from fcn_jax.data.transforms import (
    bucket_for,
    centre_crop,
    collate,
    default_buckets,
    pad_record,
    random_crop_flip,
    void_like,
)
from fcn_jax.errors import FCNError
from tests.utils import REPO


def _record(rng: np.random.Generator, h: int, w: int, sample_id: str = "x") -> dict:
    return {
        "image": rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
        "label": rng.integers(0, 21, (h, w), dtype=np.uint8),
        "id": sample_id,
    }


def _coded_record(h: int, w: int) -> dict:
    """A record whose image encodes each pixel's position (row+1, col+1) and label.

    Channel 0 = label, channel 1 = row + 1, channel 2 = col + 1 (0 only in padding).
    """
    rng = np.random.default_rng(h * 1000 + w)
    label = rng.integers(0, 21, (h, w), dtype=np.uint8)
    label[rng.random((h, w)) < 0.1] = IGNORE_LABEL
    rows, cols = np.mgrid[0:h, 0:w]
    image = np.stack([label, rows + 1, cols + 1], axis=-1).astype(np.uint8)
    return {"image": image, "label": label, "id": "coded"}


def _check_window(out: dict, original: dict) -> bool:
    """Every output pixel is a padding pixel or an original pixel with its own label.

    Returns whether the window is mirrored.
    """
    image, label = out["image"], out["label"]
    real = image[..., 1] > 0
    # padding: zero image, void label
    assert np.all(image[~real] == 0)
    assert np.all(label[~real] == IGNORE_LABEL)
    rows = image[..., 1].astype(int) - 1
    cols = image[..., 2].astype(int) - 1
    # image and label moved together: the label at each pixel is that of the source pixel
    assert np.array_equal(label[real], original["label"][rows[real], cols[real]])
    assert np.array_equal(image[real], original["image"][rows[real], cols[real]])
    # a contiguous window: rows step by +1 down, columns by +1 (or -1 if mirrored) across
    assert np.all(np.diff(rows, axis=0)[real[1:] & real[:-1]] == 1)
    step = np.diff(cols, axis=1)[real[:, 1:] & real[:, :-1]]
    assert step.size == 0 or (np.all(step == step[0]) and abs(step[0]) == 1)
    return bool(step.size and step[0] == -1)


def _batches(options: PipelineOptions, ds, n: int | None = None) -> list[dict]:
    it = iter(make_pipeline(ds, options))
    try:
        return list(it if n is None else itertools.islice(it, n))
    finally:
        it.close()


def _assert_batches_equal(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for key in x:
            assert np.array_equal(x[key], y[key]), key


# --- default_buckets / bucket_for ---------------------------------------------------------------


def test_default_buckets() -> None:
    assert default_buckets(500) == tuple(range(32, 513, 32))
    assert default_buckets(500)[0] == 32 and default_buckets(500)[-1] == 512
    assert default_buckets(64) == (32, 64)
    assert default_buckets(65) == (32, 64, 96)
    assert default_buckets(1) == (32,)
    assert default_buckets(100, step=50) == (50, 100)


def test_bucket_for_smallest_at_least_size() -> None:
    buckets = (32, 64, 96)
    assert bucket_for(1, buckets, "h") == 32
    assert bucket_for(32, buckets, "h") == 32
    assert bucket_for(33, buckets, "h") == 64
    assert bucket_for(64, buckets, "h") == 64
    assert bucket_for(96, buckets, "h") == 96


def test_bucket_for_too_large_raises() -> None:
    with pytest.raises(FCNError, match=r"my height is 97 px.*96"):
        bucket_for(97, (32, 64, 96), "my height")


# --- collate ------------------------------------------------------------------------------------


def test_collate_same_size_without_buckets(rng: np.random.Generator) -> None:
    records = [_record(rng, 5, 7, f"r{i}") for i in range(3)]
    batch = collate(records)
    assert batch["image"].shape == (3, 5, 7, 3) and batch["image"].dtype == np.uint8
    assert batch["label"].shape == (3, 5, 7) and batch["label"].dtype == np.uint8
    for i, r in enumerate(records):
        assert np.array_equal(batch["image"][i], r["image"])
        assert np.array_equal(batch["label"][i], r["label"])
    assert batch["id"].tolist() == ["r0", "r1", "r2"]
    assert batch["height"].tolist() == [5] * 3 and batch["width"].tolist() == [7] * 3
    assert batch["valid"].tolist() == [True] * 3


def test_collate_different_sizes_without_buckets_raises(rng: np.random.Generator) -> None:
    with pytest.raises(FCNError, match="bucket"):
        collate([_record(rng, 5, 7), _record(rng, 6, 7)])


def test_collate_with_buckets_pads_height_and_width_independently(
    rng: np.random.Generator,
) -> None:
    records = [_record(rng, 10, 40, "a"), _record(rng, 20, 5, "b")]
    batch = collate(records, buckets=(16, 32, 48, 64))
    # max height 20 -> 32, max width 40 -> 48
    assert batch["image"].shape == (2, 32, 48, 3)
    assert batch["label"].shape == (2, 32, 48)
    for i, r in enumerate(records):
        h, w = r["label"].shape
        assert np.array_equal(batch["image"][i, :h, :w], r["image"])
        assert np.array_equal(batch["label"][i, :h, :w], r["label"])
        assert np.all(batch["image"][i, h:] == 0) and np.all(batch["image"][i, :, w:] == 0)
        assert np.all(batch["label"][i, h:] == IGNORE_LABEL)
        assert np.all(batch["label"][i, :, w:] == IGNORE_LABEL)
    assert batch["height"].tolist() == [10, 20] and batch["height"].dtype == np.int32
    assert batch["width"].tolist() == [40, 5] and batch["width"].dtype == np.int32
    assert batch["id"].tolist() == ["a", "b"]
    assert batch["valid"].tolist() == [True, True]
    # the originals are untouched
    assert records[0]["image"].shape == (10, 40, 3)


def test_collate_bucket_too_small_raises(rng: np.random.Generator) -> None:
    with pytest.raises(FCNError, match="largest width is 40 px"):
        collate([_record(rng, 10, 40)], buckets=(16, 32))


def test_collate_pads_to_batch_size_with_void_examples(rng: np.random.Generator) -> None:
    records = [_record(rng, 10, 12, "a"), _record(rng, 9, 20, "b")]
    batch = collate(records, buckets=(16, 32), batch_size=4)
    assert batch["image"].shape == (4, 16, 32, 3)
    assert batch["valid"].tolist() == [True, True, False, False]
    assert batch["id"].tolist() == ["a", "b", "", ""]
    assert batch["height"].tolist() == [10, 9, 0, 0]
    assert batch["width"].tolist() == [12, 20, 0, 0]
    assert np.all(batch["image"][2:] == 0)
    assert np.all(batch["label"][2:] == IGNORE_LABEL)
    assert np.array_equal(batch["label"][1, :9, :20], records[1]["label"])
    # a full batch gains nothing
    full = collate(records, buckets=(16, 32), batch_size=2)
    assert full["valid"].tolist() == [True, True] and full["image"].shape[0] == 2


def test_pad_record_extra_keys_and_void_like(rng: np.random.Generator) -> None:
    record = _record(rng, 3, 4, "a")
    record["label_aux"] = rng.integers(0, 5, (3, 4), dtype=np.uint8)
    record["depth"] = rng.random((3, 4)).astype(np.float32)
    record["meta"] = np.zeros(7)  # not per-pixel: left alone
    out = pad_record(record, 5, 6)
    assert out["label_aux"].shape == (5, 6) and np.all(out["label_aux"][3:] == IGNORE_LABEL)
    assert out["depth"].shape == (5, 6) and np.all(out["depth"][:, 4:] == 0)
    assert np.array_equal(out["depth"][:3, :4], record["depth"])
    assert out["meta"].shape == (7,)
    void = void_like(out)
    assert void["id"] == ""
    assert np.all(void["label"] == IGNORE_LABEL) and np.all(void["label_aux"] == IGNORE_LABEL)
    assert np.all(void["image"] == 0) and void["image"].shape == (5, 6, 3)


# --- random_crop_flip ---------------------------------------------------------------------------


def test_crop_smaller_than_image() -> None:
    record = _coded_record(30, 40)
    corners = set()
    for seed in range(20):
        out = random_crop_flip(record, np.random.default_rng(seed), crop_size=16, flip=False)
        assert out["image"].shape == (16, 16, 3) and out["label"].shape == (16, 16)
        assert out["image"].flags.c_contiguous and out["label"].flags.c_contiguous
        assert out["id"] == "coded"
        assert np.all(out["image"][..., 1] > 0)  # no padding needed
        assert not _check_window(out, record)
        corners.add((int(out["image"][0, 0, 1]), int(out["image"][0, 0, 2])))
    # the window position is random in both directions
    assert len({r for r, _ in corners}) > 3 and len({c for _, c in corners}) > 3


def test_crop_larger_than_image_pads_with_void() -> None:
    record = _coded_record(10, 6)
    out = random_crop_flip(record, np.random.default_rng(0), crop_size=12, flip=False)
    assert out["image"].shape == (12, 12, 3)
    assert np.array_equal(out["image"][:10, :6], record["image"])
    assert np.array_equal(out["label"][:10, :6], record["label"])
    assert np.all(out["label"][10:] == IGNORE_LABEL) and np.all(out["label"][:, 6:] == IGNORE_LABEL)
    assert np.all(out["image"][10:] == 0) and np.all(out["image"][:, 6:] == 0)


def test_crop_larger_in_one_dimension_only() -> None:
    record = _coded_record(30, 8)
    for seed in range(5):
        out = random_crop_flip(record, np.random.default_rng(seed), crop_size=12, flip=True)
        assert out["label"].shape == (12, 12)
        _check_window(out, record)
        real = out["image"][..., 1] > 0
        assert real.sum() == 12 * 8  # all 8 columns of 12 rows, the rest void


def test_flip_mirrors_image_and_label_together() -> None:
    record = _coded_record(9, 14)
    flipped = 0
    for seed in range(20):
        out = random_crop_flip(record, np.random.default_rng(seed), crop_size=None, flip=True)
        mirrored = _check_window(out, record)
        if mirrored:
            assert np.array_equal(out["image"], record["image"][:, ::-1])
            assert np.array_equal(out["label"], record["label"][:, ::-1])
            assert out["image"].flags.c_contiguous and out["label"].flags.c_contiguous
        else:
            assert np.array_equal(out["image"], record["image"])
            assert np.array_equal(out["label"], record["label"])
        flipped += mirrored
    assert 3 <= flipped <= 17  # about half the time
    # flip=False never mirrors
    for seed in range(10):
        out = random_crop_flip(record, np.random.default_rng(seed), crop_size=8, flip=False)
        assert not _check_window(out, record)


def test_crop_flip_with_both_keeps_alignment() -> None:
    record = _coded_record(20, 25)
    seen = set()
    for seed in range(20):
        out = random_crop_flip(record, np.random.default_rng(seed), crop_size=10, flip=True)
        seen.add(_check_window(out, record))
    assert seen == {True, False}


def test_crop_flip_deterministic_for_seed() -> None:
    record = _coded_record(20, 25)
    outs = [
        random_crop_flip(record, np.random.default_rng(seed), crop_size=10, flip=True)
        for seed in (7, 7, 8)
    ]
    assert np.array_equal(outs[0]["image"], outs[1]["image"])
    assert np.array_equal(outs[0]["label"], outs[1]["label"])
    others = [
        random_crop_flip(record, np.random.default_rng(seed), crop_size=10, flip=True)["image"]
        for seed in range(8, 14)
    ]
    assert any(not np.array_equal(outs[0]["image"], o) for o in others)


# --- centre_crop (SpeedPaper's 352x480 on CamVid) ------------------------------------------------


def torchvision_offset(size: int, crop: int) -> int:
    """torchvision's center_crop offset, written out: int(round((size - crop) / 2.0))."""
    return round((size - crop) / 2.0)


def test_centre_crop_camvid_352x480() -> None:
    record = _coded_record(36, 48)  # CamVid's 360x480 at a tenth: 4 rows cut, 2 on each side
    record["label_geo"] = record["label"] + 1
    record["hha"] = record["image"][..., ::-1].copy()
    out = centre_crop(record, 32, 48)
    for key in ("image", "label", "label_geo", "hha"):
        assert np.array_equal(out[key], record[key][2:34]), key
        assert out[key].flags.c_contiguous
    assert out["id"] == "coded"
    full = {"image": np.zeros((360, 480, 3), np.uint8), "label": np.zeros((360, 480), np.uint8)}
    full["label"][4, 0] = full["label"][355, 479] = 7  # the first and last rows kept
    cut = centre_crop(full, 352, 480)["label"]
    assert cut.shape == (352, 480) and cut[0, 0] == cut[351, 479] == 7


@pytest.mark.parametrize(("size", "crop"), [(37, 32), (39, 32), (41, 32), (32, 32), (33, 30)])
def test_centre_crop_offsets_round_halves_to_even_as_torchvision(size: int, crop: int) -> None:
    # (37 - 32) / 2 = 2.5 -> 2, (39 - 32) / 2 = 3.5 -> 4: Python's round, as torchvision's.
    record = _coded_record(size, size + 3)
    out = centre_crop(record, crop, crop)
    top, left = torchvision_offset(size, crop), torchvision_offset(size + 3, crop)
    assert {(37, 32): 2, (39, 32): 4, (41, 32): 4, (32, 32): 0, (33, 30): 2}[(size, crop)] == top
    assert np.array_equal(out["image"], record["image"][top : top + crop, left : left + crop])
    assert np.array_equal(out["label"], record["label"][top : top + crop, left : left + crop])


def test_centre_crop_smaller_side_is_padded_on_both_sides() -> None:
    # torchvision pads (crop - size) // 2 before and the rest after, then crops at offset 0.
    record = _coded_record(5, 20)
    out = centre_crop(record, 8, 10)  # height padded 1 above, 2 below; width cropped at 5
    assert out["image"].shape == (8, 10, 3) and out["label"].shape == (8, 10)
    assert np.array_equal(out["image"][1:6], record["image"][:, 5:15])
    assert np.array_equal(out["label"][1:6], record["label"][:, 5:15])
    for rows in (slice(0, 1), slice(6, 8)):
        assert np.all(out["image"][rows] == 0) and np.all(out["label"][rows] == IGNORE_LABEL)
    with pytest.raises(FCNError, match="must be positive"):
        centre_crop(record, 0, 4)


def test_pipeline_centre_crops_before_batching() -> None:
    ds = _data(4, min_size=34, max_size=40)
    options = PipelineOptions(batch_size=2, centre_crop=(32, 24))
    batches = _batches(options, ds)  # different sizes stack: every crop is 32x24
    assert [b["image"].shape for b in batches] == [(2, 32, 24, 3)] * 2
    for i, record in enumerate(ds[j] for j in range(4)):
        expected = centre_crop(record, 32, 24)
        assert np.array_equal(batches[i // 2]["image"][i % 2], expected["image"])
        assert np.array_equal(batches[i // 2]["label"][i % 2], expected["label"])
    with pytest.raises(FCNError, match=r"centre_crop must be \(height, width\)"):
        make_pipeline(ds, PipelineOptions(centre_crop=(32,)))


# --- pipeline -----------------------------------------------------------------------------------


def _data(num_images: int = 6, min_size: int = 8, max_size: int = 24, split: str = "train"):
    return SyntheticSegmentation(
        split=split, n_class=5, num_images=num_images, min_size=min_size, max_size=max_size
    )


def test_whole_image_mode_reads_each_image_once_in_order() -> None:
    ds = _data(6)
    batches = _batches(PipelineOptions(), ds)
    assert len(batches) == 6
    for i, batch in enumerate(batches):
        record = ds[i]
        h, w = record["label"].shape
        assert batch["image"].shape == (1, h, w, 3) and batch["image"].dtype == np.uint8
        assert batch["label"].shape == (1, h, w) and batch["label"].dtype == np.uint8
        assert np.array_equal(batch["image"][0], record["image"])
        assert np.array_equal(batch["label"][0], record["label"])
        assert batch["id"].tolist() == [ds.ids[i]]
        assert batch["height"].tolist() == [h] and batch["width"].tolist() == [w]
        assert batch["valid"].tolist() == [True]
    # the images do differ in size: whole-image mode really is variable-shaped
    assert len({b["image"].shape for b in batches}) > 1
    assert iterate_ids(batches) == ds.ids
    assert num_batches(6, 1) == 6 and num_batches(7, 3) == 3


def test_shuffle_is_seeded_and_covers_each_epoch() -> None:
    ds = _data(8)

    def order(seed: int, epochs: int = 1) -> list[str]:
        options = PipelineOptions(shuffle=True, seed=seed, num_epochs=epochs)
        return iterate_ids(_batches(options, ds))

    first = order(1)
    assert sorted(first) == ds.ids
    assert first != ds.ids
    assert order(1) == first
    assert order(2) != first and sorted(order(2)) == ds.ids
    two = order(1, epochs=2)
    assert len(two) == 16
    assert two[:8] == first
    assert sorted(two[8:]) == ds.ids
    assert two[8:] != two[:8]  # reshuffled every epoch


def test_num_epochs_limits_batches() -> None:
    ds = _data(5)
    assert iterate_ids(_batches(PipelineOptions(num_epochs=3), ds)) == ds.ids * 3


@pytest.mark.parametrize(
    ("batch_size", "buckets"),
    [(1, None), (2, (16, 32))],
    ids=["whole_image", "bucketed"],
)
def test_num_epochs_none_repeats_forever(batch_size: int, buckets: tuple | None) -> None:
    ds = _data(5)
    options = PipelineOptions(
        batch_size=batch_size, buckets=buckets, shuffle=True, seed=3, num_epochs=None
    )
    batches = _batches(options, ds, n=20 // batch_size)
    assert len(batches) == 20 // batch_size  # more than the 5 images
    ids = iterate_ids(batches)
    assert len(ids) == 20
    epochs = [ids[i : i + 5] for i in range(0, 20, 5)]
    for epoch in epochs:
        assert sorted(epoch) == ds.ids
    assert len({tuple(e) for e in epochs}) > 1


def test_buckets_bound_batch_shapes() -> None:
    ds = _data(24, min_size=8, max_size=40)
    buckets = (16, 32, 48)
    batches = _batches(PipelineOptions(batch_size=3, buckets=buckets, shuffle=True, seed=0), ds)
    shapes = set()
    for batch in batches:
        _, bh, bw, _ = batch["image"].shape
        shapes.add((bh, bw))
        assert batch["label"].shape[1:] == (bh, bw)
        assert bh == bucket_for(int(batch["height"].max()), buckets, "h")
        assert bw == bucket_for(int(batch["width"].max()), buckets, "w")
        for i in range(batch["image"].shape[0]):
            h, w = int(batch["height"][i]), int(batch["width"][i])
            record = ds[ds.ids.index(str(batch["id"][i]))]
            assert np.array_equal(batch["image"][i, :h, :w], record["image"])
            assert np.array_equal(batch["label"][i, :h, :w], record["label"])
            assert np.all(batch["label"][i, h:] == IGNORE_LABEL)
            assert np.all(batch["label"][i, :, w:] == IGNORE_LABEL)
    assert len(shapes) <= len(buckets) ** 2
    assert all(h in buckets and w in buckets for h, w in shapes)
    assert len(shapes) > 1
    assert sorted(iterate_ids(batches)) == ds.ids
    # distinct raw image sizes far outnumber the bucket shapes
    assert len({ds[i]["label"].shape for i in range(len(ds))}) > len(shapes)


def test_pad_last_batch_fills_every_batch() -> None:
    ds = _data(7)
    options = PipelineOptions(batch_size=3, buckets=(16, 32), pad_last_batch=True)
    batches = _batches(options, ds)
    assert len(batches) == num_batches(7, 3) == 3
    for batch in batches:
        assert batch["image"].shape[0] == 3 and batch["label"].shape[0] == 3
        assert batch["id"].shape == (3,) and batch["valid"].shape == (3,)
    assert [b["valid"].tolist() for b in batches][-1] == [True, False, False]
    assert iterate_ids(batches) == ds.ids
    assert np.all(batches[-1]["label"][1:] == IGNORE_LABEL)
    assert batches[-1]["id"].tolist()[1:] == ["", ""]
    # without padding the last batch is partial
    unpadded = _batches(PipelineOptions(batch_size=3, buckets=(16, 32)), ds)
    assert [b["image"].shape[0] for b in unpadded] == [3, 3, 1]


def test_batches_without_buckets_on_variable_sizes_raise() -> None:
    ds = _data(6)
    assert len({ds[i]["label"].shape for i in range(6)}) == 6
    with pytest.raises(FCNError, match="bucket"):
        _batches(PipelineOptions(batch_size=2), ds)


def test_bad_options_raise() -> None:
    with pytest.raises(FCNError, match="batch_size"):
        make_pipeline(_data(2), PipelineOptions(batch_size=0))
    with pytest.raises(FCNError, match="no images"):
        make_pipeline(_data(0), PipelineOptions())


@pytest.mark.parametrize("shuffle", [False, True])
def test_shards_are_disjoint_and_cover(shuffle: bool) -> None:
    ds = _data(9)
    shards = [
        iterate_ids(
            _batches(PipelineOptions(shuffle=shuffle, seed=4, shard_index=i, shard_count=2), ds)
        )
        for i in range(2)
    ]
    assert set(shards[0]).isdisjoint(shards[1])
    assert sorted(shards[0] + shards[1]) == ds.ids
    assert len(shards[0]) == 5 and len(shards[1]) == 4
    if not shuffle:
        assert shards[0] == ds.ids[0::2] and shards[1] == ds.ids[1::2]


def _training_options(**overrides) -> PipelineOptions:
    options = dict(
        batch_size=2,
        buckets=(16, 32),
        shuffle=True,
        seed=11,
        num_epochs=None,
        crop_size=12,
        flip=True,
    )
    return PipelineOptions(**{**options, **overrides})


def _take(it: Iterator[dict], n: int) -> list[dict]:
    return [next(it) for _ in range(n)]


def test_augmentation_is_seeded_and_varies_by_epoch() -> None:
    ds = _data(4, min_size=8, max_size=20)
    # no shuffling: the seed changes only the crops and flips
    options = _training_options(batch_size=1, buckets=None, num_epochs=2, shuffle=False)
    a = _batches(options, ds)
    b = _batches(options, ds)
    c = _batches(dataclasses.replace(options, seed=12), ds)
    _assert_batches_equal(a, b)
    assert iterate_ids(a) == iterate_ids(c) == ds.ids * 2
    assert all(x["image"].shape == (1, 12, 12, 3) for x in a)
    assert any(not np.array_equal(x["image"], y["image"]) for x, y in zip(a, c, strict=True))
    # the same image is augmented differently in its two epochs
    by_id: dict[str, list[np.ndarray]] = {}
    for x in a:
        by_id.setdefault(str(x["id"][0]), []).append(x["image"][0])
    assert any(not np.array_equal(*views) for views in by_id.values())


def test_resume_from_state_replays_the_same_batches() -> None:
    ds = _data(5, min_size=8, max_size=20)
    n, m = 4, 6  # crosses epoch boundaries (5 images, 2 per batch)
    it = iter(make_pipeline(ds, _training_options()))
    try:
        _take(it, n)
        state = it.get_state()
        json.dumps(state)
        expected = _take(it, m)
    finally:
        it.close()
    resumed = iter(make_pipeline(ds, _training_options()))
    try:
        resumed.set_state(json.loads(json.dumps(state)))
        _assert_batches_equal(_take(resumed, m), expected)
    finally:
        resumed.close()
    # and a fresh iterator without set_state starts over, so the check above is not vacuous
    fresh = _batches(_training_options(), ds, n=n + m)
    _assert_batches_equal(fresh[n:], expected)
    assert any(
        not np.array_equal(x["image"], y["image"]) for x, y in zip(fresh[:m], expected, strict=True)
    )


def test_worker_processes_match_main_process() -> None:
    ds = _data(5, min_size=8, max_size=20)
    expected = _batches(_training_options(), ds, n=6)
    _assert_batches_equal(_batches(_training_options(worker_count=2), ds, n=6), expected)
    # a finite, unshuffled evaluation pass: every image once, in order
    evaluation = PipelineOptions(batch_size=2, buckets=(16, 32), pad_last_batch=True)
    _assert_batches_equal(
        _batches(dataclasses.replace(evaluation, worker_count=2), ds),
        _batches(evaluation, ds),
    )


def test_worker_processes_resume_from_state() -> None:
    ds = _data(5, min_size=8, max_size=20)
    n, m = 3, 4
    expected = _batches(_training_options(), ds, n=n + m)[n:]
    it = iter(make_pipeline(ds, _training_options(worker_count=2)))
    try:
        _take(it, n)
        state = it.get_state()
        json.dumps(state)
        _assert_batches_equal(_take(it, m), expected)
    finally:
        it.close()
    resumed = iter(make_pipeline(ds, _training_options(worker_count=2)))
    try:
        resumed.set_state(json.loads(json.dumps(state)))
        _assert_batches_equal(_take(resumed, m), expected)
    finally:
        resumed.close()


IMPORT_SIDE_EFFECTS = """
import json, sys
from absl import flags
before = (flags.FLAGS.is_parsed(), list(sys.warnoptions))
import fcn_jax.data, fcn_jax.data.pipeline as pipeline
from fcn_jax.data.synthetic import SyntheticSegmentation
imported = (flags.FLAGS.is_parsed(), list(sys.warnoptions))
data = SyntheticSegmentation("val", 3, num_images=2, min_size=8, max_size=8)
pipeline.make_pipeline(data, pipeline.PipelineOptions())
in_process = (flags.FLAGS.is_parsed(), list(sys.warnoptions))
pipeline.make_pipeline(data, pipeline.PipelineOptions(worker_count=1))
workers = (flags.FLAGS.is_parsed(), list(sys.warnoptions))
print(json.dumps([before, imported, in_process, workers, pipeline.QUIET_RESOURCE_TRACKER]))
"""


def test_importing_the_pipeline_leaves_flags_and_warnings_alone() -> None:
    # A fresh interpreter: this one has made worker pipelines already. Only a pipeline with
    # worker processes marks absl's flags parsed and quiets the resource tracker.
    run = subprocess.run(
        [sys.executable, "-c", IMPORT_SIDE_EFFECTS],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    before, imported, in_process, workers, quiet = json.loads(run.stdout.splitlines()[-1])
    assert before[0] is False  # a plain interpreter: nobody parsed absl's flags
    assert imported == in_process == before
    assert workers == [True, [*before[1], quiet]]
