"""Helpers shared by the test modules."""

from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
NARROW = 0.125  # width of the cheap networks used everywhere but the full-width parity module


def random_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """[H, W, 3] uint8 RGB noise."""
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
