"""Test configuration: one thread per pytest worker, shared fixtures.

XLA reads its flags when jax is first imported, so they are set here, before any test module
imports jax.
"""

import os
import tempfile

os.environ.setdefault("OMP_NUM_THREADS", "1")
# train.py, eval.py and the data-parallel runs keep XLA's persistent compilation cache: one per
# test session (the xdist workers share their controller's), never the user's ~/.cache.
os.environ.setdefault(
    "FCN_JAX_CACHE",
    os.path.join(tempfile.gettempdir(), f"fcn_jax_test_xla_cache_{os.getppid()}"),
)
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
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
