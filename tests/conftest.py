"""Test configuration: one thread per pytest worker, the ``torch`` marker's rule, shared fixtures.

XLA reads its flags when jax is first imported, so they are set here, before any test module
imports jax.

Tests that need PyTorch carry the ``torch`` marker (pyproject.toml). torch is optional: the suite
must collect without it, so nothing here or at a test module's top level imports it, unless the
whole module is marked (``pytestmark = pytest.mark.torch``): without torch such a module is
collected without being imported (:class:`TorchModule`). A run without torch must deselect those
tests (``-m "not torch"``): if it selects one, collection fails rather than skipping, so that a
leg never passes by running less than it claims.
"""

import ast
import importlib.util
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

from tests.utils import REPO

HAS_TORCH = importlib.util.find_spec("torch") is not None
NO_TORCH = "this environment has no torch: run with -m 'not torch' (or install torch, see README)"


def pytest_configure(config: pytest.Config) -> None:
    if HAS_TORCH:
        # One thread per worker, as OMP_NUM_THREADS above: torch sizes its intra-op pool from
        # the core count otherwise, and the xdist workers would oversubscribe the CPU.
        import torch

        torch.set_num_threads(1)


def module_marks(path: Path) -> list[pytest.MarkDecorator]:
    """The marks of a test module's top-level ``pytestmark = ...``, read without importing it."""
    for node in ast.parse(path.read_bytes(), filename=str(path)).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "pytestmark" for target in node.targets
        ):
            marks = eval(compile(ast.Expression(node.value), str(path), "eval"), {"pytest": pytest})
            return marks if isinstance(marks, list) else [marks]
    return []


class NeedsTorch(pytest.Item):
    """Stands for every test of a module marked ``torch`` as a whole, which a run without torch
    cannot import (such a module may import torch at its top)."""

    def runtest(self) -> None:
        raise AssertionError(NO_TORCH)  # never reached: selected, it fails the collection

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"{self.path.name}: every test, marked torch"


class TorchModule(pytest.File):
    """A module marked ``torch`` as a whole, collected without importing it: one
    :class:`NeedsTorch` item carrying the module's marks, which ``-m`` selects or deselects."""

    def collect(self) -> list[pytest.Item]:
        return [NeedsTorch.from_parent(self, name="needs_torch")]


def pytest_pycollect_makemodule(module_path: Path, parent: pytest.Collector) -> pytest.File | None:
    if HAS_TORCH:
        return None  # pytest's own Module
    marks = module_marks(module_path)
    if not any(mark.name == "torch" for mark in marks):
        return None
    module = TorchModule.from_parent(parent, path=module_path)
    for mark in marks:
        module.add_marker(mark)
    return module


@pytest.hookimpl(trylast=True)  # after -m and -k have deselected
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without torch, a selected test marked ``torch`` fails the collection: never a skip.

    Reported as a collection error (not raised), so that pytest-xdist's workers pass it on to
    the controller like any other: pytest then stops before running a test; under xdist, as
    for any collection error, the other tests run and the run fails.
    """
    if HAS_TORCH:
        return
    needs_torch = [item for item in items if item.get_closest_marker("torch")]
    if not needs_torch:
        return
    shown = "".join(f"\n  {item.nodeid}" for item in needs_torch[:10])
    more = f"\n  ... and {len(needs_torch) - 10} more" if len(needs_torch) > 10 else ""
    message = f"{NO_TORCH}. {len(needs_torch)} selected tests are marked torch:{shown}{more}"
    items[:] = [item for item in items if not item.get_closest_marker("torch")]
    report = pytest.CollectReport("tests: marked torch", "failed", message, [])
    config.hook.pytest_collectreport(report=report)


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
