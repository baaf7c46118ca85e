"""Test configuration: one thread per pytest worker, shared fixtures.

XLA reads its flags when jax is first imported, so they are set here, before any test module
imports jax.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "")
    + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
).strip()

from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(1)

from tests.utils import REPO  # noqa: E402


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
