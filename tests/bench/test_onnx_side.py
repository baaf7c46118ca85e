"""bench.py --onnx: ONNX Runtime timed beside JAX and torch, the ratio recorded."""

import json

import pytest

from fcn_jax.cli import run
from tests.test_cli import load_script

pytestmark = pytest.mark.torch


def test_onnx_bench_records_the_three_runtimes_and_the_ratio(tmp_path, capsys):
    bench = load_script("bench")
    args = ["--onnx", "--width", "0.0625", "--sizes", "40x48", "--batch", "2"]
    with pytest.raises(SystemExit) as exit_info:
        run(
            lambda _: bench.main([*args, "--repeats", "2", "--warmup", "0", "--out", str(tmp_path)])
        )
    assert exit_info.value.code == 0, capsys.readouterr().err
    record = json.loads((tmp_path / "onnx.json").read_text())
    assert record["case"] == {"arch": "fcn8s", "size": [40, 48], "batch": 2, "width": 0.0625}
    ms = record["ms_per_image"]
    assert set(ms) == {"jax", "torch", "onnxruntime"} and all(m["ms"] > 0 for m in ms.values())
    assert record["ratio_ort_over_jax"] == pytest.approx(ms["onnxruntime"]["ms"] / ms["jax"]["ms"])
    assert "onnxruntime / jax:" in (tmp_path / "onnx.md").read_text()
    assert "| onnxruntime |" in capsys.readouterr().out
