"""Per-channel mean/std: exact against numpy on real files, and the CLI end to end."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fcn_jax.data.folder import FolderDataset
from fcn_jax.data.stats import _subset, channel_stats, format_stats
from fcn_jax.data.synthetic import SyntheticSegmentation
from fcn_jax.errors import FCNError
from tests.utils import REPO, write_mask_tree

SIZES = {f"img_{i}": (10 + 3 * i, 31 - 2 * i) for i in range(7)}  # sizes differ on purpose


@pytest.fixture
def folder(tmp_path: Path) -> tuple[FolderDataset, dict]:
    written = write_mask_tree(tmp_path, {"train": SIZES}, n_class=3, image_ext=".png")
    return FolderDataset(tmp_path, "train", n_class=3), written


def numpy_stats(images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    pixels = np.concatenate([im.reshape(-1, 3) for im in images]).astype(np.float64)
    return pixels.mean(0), pixels.std(0)


def test_equals_numpy_on_concatenated_pixels(folder) -> None:
    ds, written = folder
    mean, std = channel_stats(ds)
    expected_mean, expected_std = numpy_stats([written[s][0] for s in ds.ids])
    assert mean.dtype == np.float64
    assert std.dtype == np.float64
    assert mean.shape == std.shape == (3,)
    np.testing.assert_allclose(mean, expected_mean, rtol=1e-13)
    np.testing.assert_allclose(std, expected_std, rtol=1e-12)


def test_pixel_weighted_not_image_weighted() -> None:
    # A big black image and a small white one: per-pixel, not the mean of per-image means.
    records = [
        {"image": np.zeros((10, 10, 3), np.uint8)},
        {"image": np.full((1, 10, 3), 255, np.uint8)},
    ]
    mean, std = channel_stats(records)
    expected_mean, expected_std = numpy_stats([r["image"] for r in records])
    np.testing.assert_allclose(mean, expected_mean, rtol=1e-14)
    np.testing.assert_allclose(std, expected_std, rtol=1e-14)
    assert mean[0] == pytest.approx(255 / 11)


def test_channels_in_rgb_order() -> None:
    image = np.zeros((2, 3, 3), np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = 10, 20, 30
    mean, std = channel_stats([{"image": image}])
    assert mean.tolist() == [10.0, 20.0, 30.0]
    assert std.tolist() == [0.0, 0.0, 0.0]


def test_large_values_no_cancellation() -> None:
    # Nearly constant bright images: float sums of squares would lose the tiny variance.
    image = np.full((300, 300, 3), 250, np.uint8)
    image[0, 0] = 251
    mean, std = channel_stats([{"image": image}] * 3)
    expected_mean, expected_std = numpy_stats([image] * 3)
    np.testing.assert_allclose(mean, expected_mean, rtol=1e-15)
    np.testing.assert_allclose(std, expected_std, rtol=1e-12)


@pytest.mark.parametrize("max_images", [1, 2, 3, 6, 7, 100])
def test_max_images(folder, max_images: int) -> None:
    ds, written = folder
    used = _subset(len(ds), max_images)
    assert len(used) == min(max_images, len(ds))
    assert used[0] == 0
    if max_images > 1:
        assert used[-1] == len(ds) - 1  # spread over the whole split
    mean, std = channel_stats(ds, max_images=max_images)
    expected_mean, expected_std = numpy_stats([written[ds.ids[i]][0] for i in used])
    np.testing.assert_allclose(mean, expected_mean, rtol=1e-13)
    np.testing.assert_allclose(std, expected_std, rtol=1e-12)


def test_subset_evenly_spaced() -> None:
    assert _subset(10, 3) == [0, 4, 9]
    assert _subset(5, None) == [0, 1, 2, 3, 4]
    assert _subset(100, 4) == [0, 33, 66, 99]


def test_streams_one_image_at_a_time() -> None:
    # A dataset that fails if asked for an image twice or out of order: no buffering, one pass.
    class Once:
        def __init__(self) -> None:
            self.read: list[int] = []

        def __len__(self) -> int:
            return 4

        def __getitem__(self, i: int) -> dict:
            assert i not in self.read
            self.read.append(i)
            return {"image": np.full((3, 3, 3), i, np.uint8)}

    ds = Once()
    mean, _ = channel_stats(ds)
    assert ds.read == [0, 1, 2, 3]
    assert mean.tolist() == [1.5, 1.5, 1.5]


def test_errors() -> None:
    with pytest.raises(FCNError, match="has no images"):
        channel_stats([])
    with pytest.raises(FCNError, match="max_images must be at least 1, got 0"):
        channel_stats([{"image": np.zeros((2, 2, 3), np.uint8)}] * 2, max_images=0)
    with pytest.raises(FCNError, match=r"expected HxWx3 uint8, got \(2, 2\)"):
        channel_stats([{"image": np.zeros((2, 2), np.uint8)}])


def test_synthetic_dataset_with_progress() -> None:
    ds = SyntheticSegmentation("train", n_class=5, num_images=3, min_size=20, max_size=30)
    mean, std = channel_stats(ds, progress=True)
    expected_mean, expected_std = numpy_stats([ds[i]["image"] for i in range(3)])
    np.testing.assert_allclose(mean, expected_mean, rtol=1e-13)
    np.testing.assert_allclose(std, expected_std, rtol=1e-12)


def test_format_stats() -> None:
    text = format_stats(np.array([123.675, 116.28, 103.53]), np.array([58.395, 57.12, 57.375]))
    lines = text.splitlines()
    assert lines[0] == "RGB 0-255:   mean=(123.675, 116.280, 103.530)  std=(58.395, 57.120, 57.375)"
    assert lines[1].startswith(
        "BGR 0-255:   mean=(103.530, 116.280, 123.675)  std=(57.375, 57.120, 58.395)"
    )
    assert lines[2].startswith(
        "RGB [0, 1]:  mean=(0.4850, 0.4560, 0.4060)  std=(0.2290, 0.2240, 0.2250)"
    )


# --- the CLI --------------------------------------------------------------------------------------


def run_stats(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fcn_jax.data.stats", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )


def parse_triple(line: str, name: str) -> np.ndarray:
    found = re.search(rf"{name}=\(([^)]*)\)", line)
    assert found, line
    return np.array([float(v) for v in found.group(1).split(",")])


def test_cli_prints_stats() -> None:
    r = run_stats(
        "--config",
        "configs/synthetic_fcn8s.py",
        "--config.data.num_images=3",
        "--split",
        "val",
        "--max-images",
        "2",
    )
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    ds = SyntheticSegmentation("val", n_class=5, num_images=3, min_size=48, max_size=64)
    mean, std = channel_stats(ds, max_images=2)
    lines = r.stdout.splitlines()
    assert "SyntheticSegmentation(split='val', 3 images, 5 classes): 2 of 3 images" in lines[0]
    rgb = next(line for line in lines if line.startswith("RGB 0-255"))
    bgr = next(line for line in lines if line.startswith("BGR 0-255"))
    unit = next(line for line in lines if line.startswith("RGB [0, 1]"))
    np.testing.assert_allclose(parse_triple(rgb, "mean"), mean, atol=6e-4)
    np.testing.assert_allclose(parse_triple(rgb, "std"), std, atol=6e-4)
    np.testing.assert_allclose(parse_triple(bgr, "mean"), mean[::-1], atol=6e-4)
    np.testing.assert_allclose(parse_triple(unit, "std"), std / 255, atol=6e-5)


def test_cli_bad_config_key_exits_2() -> None:
    r = run_stats("--config", "configs/synthetic_fcn8s.py", "--config.data.nope=1")
    assert r.returncode == 2
    assert r.stderr.startswith("error: ")
    assert "nope" in r.stderr
    assert "did you mean:\n  --config.data.name" in r.stderr  # the nearest known keys
    assert "Traceback" not in r.stderr


def test_cli_dataset_error_exits_2() -> None:
    r = run_stats("--config", "configs/voc_fcn8s.py")
    assert r.returncode == 2
    assert "error: config.data.root is not set" in r.stderr
    assert "Traceback" not in r.stderr


def test_cli_needs_no_class_count(tmp_path: Path) -> None:
    # Index masks without classes.txt, and configs/folder_fcn8s.py without model.n_class: the
    # statistics read images only, so nothing asks for a class count.
    written = write_mask_tree(tmp_path, {"train": SIZES}, n_class=7, image_ext=".png")
    r = run_stats("--config", "configs/folder_fcn8s.py", f"--config.data.root={tmp_path}")
    assert r.returncode == 0, r.stderr
    mean, _ = numpy_stats([written[s][0] for s in sorted(SIZES)])
    rgb = next(line for line in r.stdout.splitlines() if line.startswith("RGB 0-255"))
    np.testing.assert_allclose(parse_triple(rgb, "mean"), mean, atol=6e-4)
    # A class count that disagrees with classes.txt does not matter either.
    (tmp_path / "classes.txt").write_text("a\nb\nc\n")
    r = run_stats(
        "--config", "configs/folder_fcn8s.py", f"--config.data.root={tmp_path}",
        "--config.model.n_class=5",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr


def test_images_only_folder(tmp_path: Path) -> None:
    written = write_mask_tree(tmp_path, {"train": SIZES}, n_class=7, image_ext=".png")
    with pytest.raises(FCNError, match=r"has no classes\.txt"):
        FolderDataset(tmp_path, "train")  # training needs the classes
    ds = FolderDataset(tmp_path, "train", n_class=2, images_only=True)  # 2 ignored: labels to 6
    assert ds.label_classes == {}
    mean, std = channel_stats(ds)
    expected_mean, expected_std = numpy_stats([written[s][0] for s in ds.ids])
    np.testing.assert_allclose(mean, expected_mean, rtol=1e-13)
    np.testing.assert_allclose(std, expected_std, rtol=1e-12)
