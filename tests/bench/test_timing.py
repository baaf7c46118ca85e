"""fcn_jax.bench.timing: the precision context and the timer paper/ shares with bench.py."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fcn_jax.bench.timing import first_call, interleave, jax_precision, model_dtype, per_image_ms
from tests.utils import REPO


def test_jax_precision_is_highest_for_float32_only():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 4)), jnp.float32)

    def precision() -> str:
        text = jax.jit(lambda a: a @ a).lower(x).as_text()
        return "HIGHEST" if "HIGHEST" in text.upper() else "DEFAULT"

    with jax_precision("float32"):
        assert precision() == "HIGHEST"
    for dtype in ("tf32", "bfloat16"):
        with jax_precision(dtype):
            assert precision() == "DEFAULT"


def test_model_dtype():
    assert [model_dtype(d) for d in ("float32", "tf32", "bfloat16")] == [
        "float32",
        "float32",
        "bfloat16",
    ]


def test_one_runner_is_warmed_then_timed():
    calls = []
    times = interleave({"a": lambda: calls.append("a")}, warmup=2, repeats=3)
    assert calls == ["a"] * 5 and len(times["a"]) == 3
    assert first_call(lambda: calls.append("first")) >= 0 and calls[-1] == "first"


def test_per_image_ms_divides_by_the_batch():
    s = per_image_ms([0.004, 0.008, 0.012], batch=4)
    assert s == pytest.approx({"ms": 2.0, "q1": 1.5, "q3": 2.5, "min": 1.0, "max": 3.0})


def test_paper_needs_neither_torch_nor_the_harness():
    code = (
        "import sys, fcn_jax.paper.reproduce, fcn_jax.paper.timing\n"
        "print(sorted(m for m in ('torch', 'fcn_jax.bench.harness', 'fcn_jax.bench.schedule')"
        " if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
