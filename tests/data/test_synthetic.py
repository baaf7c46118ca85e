"""fcn_jax.data.synthetic: procedural shapes (format, classes, void borders, seeding)."""

from __future__ import annotations

import numpy as np
import pytest

from fcn_jax.data.base import IGNORE_LABEL
from fcn_jax.data.synthetic import SyntheticSegmentation, class_colours


def _records(ds: SyntheticSegmentation) -> list[dict]:
    return [ds[i] for i in range(len(ds))]


def _same(a: dict, b: dict) -> bool:
    return (
        a["id"] == b["id"]
        and np.array_equal(a["image"], b["image"])
        and np.array_equal(a["label"], b["label"])
    )


# --- record format ------------------------------------------------------------------------------


def test_record_format_and_dtypes() -> None:
    ds = SyntheticSegmentation(split="val", n_class=5, num_images=8, min_size=12, max_size=30)
    for i, record in enumerate(_records(ds)):
        image, label = record["image"], record["label"]
        assert image.dtype == np.uint8 and label.dtype == np.uint8
        assert image.ndim == 3 and image.shape[2] == 3
        assert label.shape == image.shape[:2]
        assert record["id"] == ds.ids[i] == f"val_{i:05d}"
        # a real image, not a constant fill
        assert image.std() > 5


def test_len_ids_class_names_n_class() -> None:
    ds = SyntheticSegmentation(split="train", n_class=7, num_images=11)
    assert len(ds) == 11
    assert ds.ids == [f"train_{i:05d}" for i in range(11)]
    assert ds.n_class == 7 == len(ds.class_names)
    assert ds.class_names[0] == "background"
    assert len(set(ds.class_names)) == 7
    assert ds.split == "train"
    assert len(SyntheticSegmentation(num_images=0)) == 0


def test_sizes_within_bounds_and_varied() -> None:
    ds = SyntheticSegmentation(num_images=40, min_size=10, max_size=30)
    shapes = [ds[i]["label"].shape for i in range(len(ds))]
    for h, w in shapes:
        assert 10 <= h <= 30 and 10 <= w <= 30
    assert len(set(shapes)) > 10
    assert any(h != w for h, w in shapes)  # sides drawn independently
    assert len({h for h, _ in shapes}) > 5 and len({w for _, w in shapes}) > 5


def test_min_equals_max_size_gives_that_square() -> None:
    ds = SyntheticSegmentation(num_images=5, min_size=17, max_size=17)
    assert all(ds[i]["image"].shape == (17, 17, 3) for i in range(5))


# --- labels and colours -------------------------------------------------------------------------


@pytest.mark.parametrize("n_class", [2, 5, 21])
def test_label_values_in_range_and_classes_used(n_class: int) -> None:
    ds = SyntheticSegmentation(n_class=n_class, num_images=30, min_size=24, max_size=40)
    seen: set[int] = set()
    for record in _records(ds):
        values = set(np.unique(record["label"]).tolist())
        assert values <= {*range(n_class), IGNORE_LABEL}
        seen |= values
    assert 0 in seen and IGNORE_LABEL in seen
    # shape classes are drawn from all of 1..n_class-1
    assert len(seen - {0, IGNORE_LABEL}) >= min(n_class - 1, 10)


@pytest.mark.parametrize("n_class", [2, 5, 21])
def test_void_border_separates_classes(n_class: int) -> None:
    ds = SyntheticSegmentation(n_class=n_class, num_images=20, min_size=20, max_size=40)
    multi_class_images = 0
    for record in _records(ds):
        label = record["label"]
        void = label == IGNORE_LABEL
        # No two 4-neighbours that are both non-void carry different classes.
        right = ~void[:, :-1] & ~void[:, 1:]
        down = ~void[:-1, :] & ~void[1:, :]
        assert np.all(label[:, :-1][right] == label[:, 1:][right]), record["id"]
        assert np.all(label[:-1, :][down] == label[1:, :][down]), record["id"]
        classes = set(np.unique(label[~void]).tolist())
        if len(classes) > 1:
            multi_class_images += 1
            assert void.any(), record["id"]
            # the border is thin (one pixel), not a large void region
            assert void.mean() < 0.35, record["id"]
    assert multi_class_images >= len(ds) // 2


@pytest.mark.parametrize("n_class", [2, 5, 21])
def test_colours_consistent_with_classes(n_class: int) -> None:
    ds = SyntheticSegmentation(
        n_class=n_class, num_images=40, min_size=24, max_size=40, max_shapes=6
    )
    colours = class_colours(n_class)
    assert colours.shape == (n_class, 3)
    sums, counts = np.zeros((n_class, 3)), np.zeros(n_class)
    for record in _records(ds):
        image, label = record["image"].astype(np.float64), record["label"]
        for c in np.unique(label):
            if c == IGNORE_LABEL:
                continue
            pixels = image[label == c]
            sums[c] += pixels.sum(0)
            counts[c] += len(pixels)
            if n_class <= 5:  # hues far apart: even one image's class mean is unambiguous
                distance = np.linalg.norm(colours - pixels.mean(0), axis=1)
                assert distance.argmin() == c, (record["id"], c, distance)
    assert np.all(counts > 0), counts
    means = sums / counts[:, None]
    distance = np.linalg.norm(means[:, None] - colours[None], axis=2)  # [class, colour]
    assert np.array_equal(distance.argmin(1), np.arange(n_class)), distance
    # background is the grey class
    assert np.allclose(colours[0], colours[0].mean())


# --- determinism --------------------------------------------------------------------------------


def test_deterministic_across_instances() -> None:
    kwargs = dict(split="train", n_class=5, num_images=6, min_size=10, max_size=30, seed=3)
    a, b = SyntheticSegmentation(**kwargs), SyntheticSegmentation(**kwargs)
    for i in range(6):
        assert _same(a[i], b[i])
        assert _same(a[i], a[i])  # no hidden state consumed by a read


def test_split_and_seed_change_images() -> None:
    kwargs = dict(n_class=5, num_images=4, min_size=10, max_size=30)
    base = SyntheticSegmentation(split="train", seed=0, **kwargs)
    other_split = SyntheticSegmentation(split="val", seed=0, **kwargs)
    other_seed = SyntheticSegmentation(split="train", seed=1, **kwargs)
    for i in range(4):
        for other in (other_split, other_seed):
            a, b = base[i], other[i]
            assert a["image"].shape != b["image"].shape or not np.array_equal(
                a["image"], b["image"]
            )
    # and within a split, different indices differ
    assert not any(
        base[i]["image"].shape == base[j]["image"].shape
        and np.array_equal(base[i]["image"], base[j]["image"])
        for i in range(4)
        for j in range(i)
    )


def test_random_access_equals_sequential() -> None:
    ds = SyntheticSegmentation(num_images=10, min_size=8, max_size=24, seed=5)
    sequential = _records(ds)
    order = [*np.random.default_rng(0).permutation(10).tolist(), 9, 0, 9, 3]
    fresh = SyntheticSegmentation(num_images=10, min_size=8, max_size=24, seed=5)
    for i in order:
        assert _same(ds[i], sequential[i])
        assert _same(fresh[i], sequential[i])
    assert _same(ds[-1], sequential[-1])


# --- bad arguments ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(n_class=1), "n_class"),
        (dict(n_class=0), "n_class"),
        (dict(min_size=40, max_size=30), "min_size"),
        (dict(min_size=0, max_size=10), "min_size"),
    ],
)
def test_bad_arguments_raise(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SyntheticSegmentation(**kwargs)


def test_synthetic_data_needs_a_class_count():
    # A config that takes its class count from its data (folder_fcn8s) switched to synthetic
    # data: a clear error, not a TypeError from deep inside the generator.
    from fcn_jax.configs import load_config_file
    from fcn_jax.data import make_dataset
    from fcn_jax.errors import FCNError
    from tests.utils import REPO

    config = load_config_file(REPO / "configs/folder_fcn8s.py")
    config.data.name = "synthetic"
    with pytest.raises(FCNError, match=r"pass --config\.model\.n_class=N"):
        make_dataset(config, "train")
    config.model.n_class = 3
    assert make_dataset(config, "train").n_class == 3


def test_synthetic_two_streams_and_two_heads_pass_their_checks() -> None:
    # It stands in for NYUDv2 (hha) and SIFT Flow (label_geo) and declares their keys.
    ds = SyntheticSegmentation(
        "val", 4, num_images=1, min_size=8, max_size=8, modalities=("hha",), geometric=True
    )
    record = ds[0]  # checked by validate_record with the dataset's image keys
    assert set(record) == {"hha", "label", "label_geo", "id"}
    assert ds.image_keys == ("image", "hha")
    assert ds.label_classes["label_geo"] == ("sky", "horizontal", "vertical")
