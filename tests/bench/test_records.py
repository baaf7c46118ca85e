"""fcn_jax.bench.records: the schema case_record writes, and the reader of bench.json."""

import json
import math

import pytest

from fcn_jax.bench.env import BenchEnv
from fcn_jax.bench.plan import Case, Plan
from fcn_jax.bench.records import (
    CASE_FIELDS,
    MEASURED_FIELDS,
    SKIPPED,
    case_label,
    case_record,
    error_text,
    read_records,
    run_device,
    skipped_record,
    write_json,
)
from fcn_jax.bench.timing import per_image_ms
from fcn_jax.errors import FCNError

CASE = Case("fcn8s", "forward", 64, 96, 2, "float32", 0.25)


def record(**stats_of) -> dict:
    """A record of CASE from fake timings: framework -> seconds per call."""
    plan = Plan((CASE,), repeats=3, warmup=1)
    env = BenchEnv("cpu", "cpu", "cpu", peaks={"float32": (2.0, "test")})
    stats = {k: per_image_ms(v, CASE.batch) for k, v in stats_of.items()}
    return case_record(
        CASE,
        plan,
        env,
        stats,
        jax_compile_s=1.5,
        jax_first_call_s=0.2,
        torch_first_call_s=0.3,
        jax_xla_bytes=1000,
        jax_xla_flop=4e9,
        jax_peak_bytes=None,
        torch_bytes=None,
        compile_status="skipped: --notorch-compile",
        torch_compile_first_s=None,
        rel_diff=1e-6,
        torch_memory_format="contiguous",
    )


def test_case_record_writes_exactly_the_schema():
    r = record(jax=[0.010, 0.012, 0.014], torch=[0.020, 0.024, 0.028])
    assert set(r) == set(CASE_FIELDS) | set(MEASURED_FIELDS)
    assert r["jax_ms"] == pytest.approx(6.0)  # median 12 ms per call, batch 2
    assert r["torch_ms"] == pytest.approx(12.0)
    assert r["ratio"] == pytest.approx(0.5)
    assert r["jax_images_per_s"] == pytest.approx(1e3 / 6.0)
    assert r["jax_peak_fraction"] == pytest.approx(r["jax_tflops"] / 2.0)
    assert r["xla_gflop"] == pytest.approx(2.0)  # 4 GFLOP per call of 2 images
    assert r["torch_compile_ms"] is None and r["ratio_compiled"] is None
    assert r["torch_compile_s"] is None


def test_records_round_trip_through_the_reader(tmp_path):
    measured = record(jax=[0.01, 0.02], torch=[0.01, 0.03])
    measured["jax_ms_max"] = math.inf  # a diverged figure: written as null, read as None
    skipped = skipped_record(CASE, "failed: out of memory")
    path = tmp_path / "out" / "bench.json"
    write_json(path, [measured, skipped])
    got = read_records(path)
    assert got[0] == {**measured, "jax_ms_max": None}
    assert got[1] == {**CASE.key(), SKIPPED: "failed: out of memory"}
    assert Case.from_record(got[0]) == CASE


def test_old_records_get_the_defaults_of_their_time(tmp_path):
    path = tmp_path / "bench.json"
    path.write_text(
        json.dumps([dict(variant="fcn32s", mode="forward", height=8, width=8, batch=1)])
    )
    (got,) = read_records(path)
    assert (got["dtype"], got["width_mult"]) == ("float32", 1.0)
    assert case_label(got) == "fcn32s/forward/8x8/b1/float32/w1.0"


@pytest.mark.parametrize(
    "text, message",
    [
        ("{}", "expected a list of objects"),
        ("[1]", "expected a list of objects"),
        ("not json", r"cannot read bench\.py's JSON"),
        ('[{"variant": "fcn8s", "mode": "forward"}]', "record 0 lacks height, width, batch"),
        ('[{"variant": "fcn8s", "mode": "forward", "height": "8", "width": 8, "batch": 1}]',
         r"record 0 has height='8', expected int"),
        ('[{"variant": "fcn8s", "mode": "forward", "height": 8, "width": 8, "batch": 1,'
         ' "jax_ms": "fast"}]', r"jax_ms='fast', expected int or float"),
        ('[{"variant": "fcn8s", "mode": "forward", "height": 8, "width": 8, "batch": true}]',
         r"batch=True, expected int"),
    ],
)  # fmt: skip
def test_bad_records_are_refused_naming_the_field(tmp_path, text, message):
    path = tmp_path / "bench.json"
    path.write_text(text)
    with pytest.raises(FCNError, match=message):
        read_records(path)


def test_missing_file_is_an_fcn_error(tmp_path):
    with pytest.raises(FCNError, match=r"cannot read bench\.py's JSON"):
        read_records(tmp_path / "nothing.json")


def test_run_device_reads_run_json_beside(tmp_path):
    bench = tmp_path / "bench.json"
    assert run_device(bench) is None  # no run.json: the figures still count, no device
    (tmp_path / "run.json").write_text(json.dumps({"device_kind": "H100", "platform": "gpu"}))
    assert run_device(bench) == "H100 (gpu)"
    (tmp_path / "run.json").write_text("[]")
    assert run_device(bench) is None


def test_error_text_is_one_line():
    e = RuntimeError("\n  RESOURCE_EXHAUSTED: out of memory\nwhile allocating\n")
    assert error_text(e) == "RuntimeError: RESOURCE_EXHAUSTED: out of memory"
    assert error_text(ValueError()) == "ValueError: "
