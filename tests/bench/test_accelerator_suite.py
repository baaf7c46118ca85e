"""bench.py --suite accelerator: the CPU dry run end to end (files, fields, parity verdict; never a
timing), and its pieces: case order, budget, out-of-memory retries, parity comparisons, report."""

import dataclasses
import json
import time

import numpy as np
import pytest

from fcn_jax.bench import accelerator
from fcn_jax.bench.accelerator import suite_cases
from fcn_jax.bench.budget import BudgetExceeded, deadline_alarm, estimate_s, is_out_of_memory
from fcn_jax.bench.device_parity import (
    BF16_TOLERANCE,
    ParityCheck,
    compare_logits,
    compare_steps,
    verdict,
)
from fcn_jax.bench.env import BenchEnv
from fcn_jax.bench.peaks import known_peak
from fcn_jax.bench.plan import Case, Plan
from fcn_jax.bench.records import read_records
from fcn_jax.bench.suite_report import format_report
from fcn_jax.bench.suite_state import SuiteOptions, SuiteState
from tests.utils import run_script

pytestmark = pytest.mark.torch  # the suite compares against torch

# Every bench.py record field (test_bench.REQUIRED's and the rest of case_record's).
RECORD_KEYS = {
    "variant", "mode", "height", "width", "batch", "dtype", "width_mult", "gflop",
    "jax_ms", "jax_ms_q1", "jax_ms_q3", "jax_ms_min", "jax_ms_max", "jax_images_per_s",
    "jax_tflops", "jax_peak_fraction", "torch_ms", "torch_images_per_s", "torch_tflops",
    "torch_peak_fraction", "torch_compile_ms", "ratio", "ratio_compiled", "jax_compile_s",
    "jax_first_call_s", "torch_first_call_s", "torch_compile_s", "torch_compile_status",
    "jax_xla_bytes", "xla_gflop", "jax_peak_bytes", "torch_peak_bytes", "max_rel_diff",
    "torch_memory_format", "repeats", "warmup", "batch_requested", "case_s",
}  # fmt: skip
CHECK_KEYS = {f.name for f in dataclasses.fields(ParityCheck)}


def test_dry_run_end_to_end(tmp_path):
    """The command an accelerator user runs, on this CPU: every file, every field, PASS."""
    out = tmp_path / "suite"
    start = time.perf_counter()
    proc = run_script("bench.py", "--suite", "accelerator", "--out", out, timeout=600)
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    assert "dry run" in proc.stdout and "parity: pass" in proc.stdout

    parity = json.loads((out / "parity.json").read_text())
    assert parity["verdict"] == "pass" and parity["dry_run"] is True
    checks = parity["checks"]
    assert {c["check"] for c in checks} == {"float32", "bfloat16", "train step"}
    assert {c["variant"] for c in checks} == {"fcn8s", "fcn32s"}
    for c in checks:
        assert set(c) == CHECK_KEYS and c["passed"] is True, c
        assert 0 <= c["rel"] <= c["tolerance"], c
    f32 = [c for c in checks if c["check"] == "float32"]
    assert all(c["confident_agreement"] == 100.0 and c["confident_pixels"] > 0 for c in f32)

    records = json.loads((out / "bench.json").read_text())
    assert read_records(out / "bench.json") == records  # bench.py's schema, suite fields too
    assert [(r["variant"], r["mode"], r["dtype"]) for r in records] == [
        ("fcn8s", "train", "bfloat16"),
        ("fcn8s", "forward", "bfloat16"),
        ("fcn8s", "forward", "float32"),
        ("fcn8s", "forward", "tf32"),
        ("fcn32s", "forward", "float32"),
    ]
    for r in records:
        assert not r.get("skipped"), r
        assert set(r) >= RECORD_KEYS, RECORD_KEYS - set(r)
        assert r["width_mult"] == accelerator.DRY_RUN_WIDTH
        assert r["torch_compile_status"].startswith("skipped")
        expected = "channels_last" if r["dtype"] == "bfloat16" else "contiguous"
        assert r["torch_memory_format"] == expected
        # Ratios, rates and the fraction of peak exist (their values are CPU noise).
        for key in ("ratio", "jax_tflops", "jax_peak_fraction", "torch_peak_fraction"):
            assert r[key] > 0, key
        if r["mode"] == "forward":  # same weights in both frameworks
            assert r["max_rel_diff"] < (1e-4 if r["dtype"] != "bfloat16" else BF16_TOLERANCE)

    run = json.loads((out / "run.json").read_text())
    assert run["suite"] == "accelerator" and run["dry_run"] is True
    assert run["platform"] == "cpu" and run["machine"]["versions"]["jax"]
    assert set(run["peaks_tflops"]) == {"float32", "tf32", "bfloat16"}
    assert json.loads((out / "dataparallel.json").read_text()) == []

    report = (out / "report.md").read_text()
    for heading in ("## Machine", "## Parity on the device", "## Speed", "## Data-parallel"):
        assert heading in report
    assert "**parity: PASS** (5 checks)" in report
    assert "5 cases measured, 0 skipped, 0 pending" in report
    assert "no data-parallel run" in report
    assert not list(out.glob(".*.tmp"))  # every file was replaced whole
    print(f"dry run: {seconds:.0f} s")


# --- the plan ---------------------------------------------------------------------------------


def test_cases_are_ordered_most_valuable_first():
    cases = suite_cases(16, dry_run=False)
    first = [(c.variant, c.mode, c.batch, c.dtype) for c in cases[:4]]
    assert first == [
        ("fcn8s", "train", 16, "bfloat16"),
        ("fcn8s", "forward", 16, "bfloat16"),
        ("fcn8s", "train", 16, "float32"),
        ("fcn8s", "forward", 16, "float32"),
    ]
    # Every combination once: 2 variants x 2 batches x 3 precisions x 2 modes, at 500x500.
    assert len(set(cases)) == len(cases) == 24
    assert {(c.height, c.width, c.width_mult) for c in cases} == {(500, 500, 1.0)}
    fcn8s = [i for i, c in enumerate(cases) if c.variant == "fcn8s"]
    assert fcn8s == list(range(12))  # FCN-8s before FCN-32s
    assert len(suite_cases(1, dry_run=False)) == 12  # batch 1 is the throughput batch: once


def test_dry_run_keeps_one_case_of_each_kind():
    cases = suite_cases(16, dry_run=True)
    assert len(cases) == len(accelerator.DRY_RUN_KEEP)
    assert {c.dtype for c in cases} == {"float32", "tf32", "bfloat16"}
    assert {c.mode for c in cases} == {"forward", "train"}
    assert {c.width_mult for c in cases} == {accelerator.DRY_RUN_WIDTH}


def test_estimate_uses_the_most_similar_case_done():
    a = Case("fcn8s", "train", 500, 500, 16, "bfloat16", 1.0)
    assert estimate_s(a, {}) == 0.0
    done = {
        dataclasses.replace(a, dtype="float32"): 30.0,
        dataclasses.replace(a, variant="fcn32s", batch=1): 10.0,
        dataclasses.replace(a, mode="forward"): 5.0,
    }
    assert estimate_s(a, done) == 30.0  # same variant, mode and batch
    assert estimate_s(dataclasses.replace(a, variant="fcn32s"), done) == 30.0  # mode, batch
    assert estimate_s(dataclasses.replace(a, batch=4), done) == 30.0  # mode only: the max
    assert estimate_s(dataclasses.replace(a, mode="forward", batch=1), done) == 5.0


def test_out_of_memory_is_recognised_in_both_frameworks():
    assert is_out_of_memory(RuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 4 GiB"))
    assert is_out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert not is_out_of_memory(ValueError("shapes do not match"))


def test_known_peaks_cover_tf32():
    assert known_peak("NVIDIA H200", "tf32") == ("H200", 494.7)
    assert known_peak("NVIDIA H200", "bfloat16") == ("H200", 989.4)
    assert known_peak("NVIDIA GH200 480GB", "bfloat16")[0] == "GH200"
    assert known_peak("Tesla V100-SXM2-16GB", "tf32") == ("V100 SXM2", 15.7)  # no TF32 units
    assert known_peak("TPU v4", "tf32") == ("TPU v4", 275.0)  # default precision: one bf16 pass


def test_deadline_alarm_interrupts_python_work():
    with pytest.raises(BudgetExceeded), deadline_alarm(0.2):
        time.sleep(5)
    time.sleep(0.3)  # the alarm was cancelled on the way out: nothing fires later


# --- budget and memory, without computing anything --------------------------------------------


def fake_state(tmp_path, cases, budget=100.0, **kw) -> SuiteState:
    options = SuiteOptions(tmp_path, budget_s=budget, **kw)
    env = BenchEnv("cpu", "cpu", "cpu", peaks={"float32": (1.0, "test")})
    return SuiteState(options, time.time(), fake_machine(), env, Plan(tuple(cases)))


def fake_machine():
    return {
        "host": {"python": "3", "system": "Linux", "machine": "x86_64", "cpu_count": 2},
        "jax": {
            "platform": "gpu", "device_kind": "NVIDIA H200", "device_count": 1,
            "local_device_count": 1, "process_count": 1, "memory_bytes": 140 * 2**30,
        },
        "torch": {"device": "cuda", "cuda_version": "13.0", "cudnn_version": 91000},
        "nvidia_smi": [{"name": "NVIDIA H200", "memory.total": "143771 MiB",
                        "driver_version": "580.159.03"}],
        "versions": {"jax": "0.11.2"},
        "env": {},
    }  # fmt: skip


CASE = Case("fcn8s", "train", 500, 500, 16, "bfloat16", 1.0)


def test_case_over_budget_is_skipped_unmeasured(tmp_path, monkeypatch):
    state = fake_state(tmp_path, [CASE], budget=60.0)
    state.durations[dataclasses.replace(CASE, dtype="float32")] = 120.0
    monkeypatch.setattr(accelerator, "measure_case", _must_not_run)
    accelerator._measure(state, CASE, None, {})
    (record,) = state.records
    assert record["skipped"].startswith("budget: ~120 s needed")


def test_torch_compile_is_left_out_when_the_budget_cannot_pay_for_it(tmp_path, monkeypatch):
    state = fake_state(tmp_path, [CASE], budget=80.0)
    state.compile_s["train"] = 90.0
    seen = {}

    def fake_measure(case, net, plan, env, compile_skip):
        seen["compile_skip"] = compile_skip
        return fake_record(case)

    monkeypatch.setattr(accelerator, "measure_case", fake_measure)
    accelerator._measure(state, CASE, None, {})
    assert seen["compile_skip"].startswith("budget: ~90 s for torch.compile")
    assert state.records[0]["batch_requested"] == 16


def test_out_of_memory_halves_the_batch_and_remembers(tmp_path, monkeypatch):
    state = fake_state(tmp_path, [CASE])
    tried = []

    def fake_measure(case, net, plan, env, compile_skip):
        tried.append(case.batch)
        if case.batch > 4:
            raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate")
        return fake_record(case)

    monkeypatch.setattr(accelerator, "measure_case", fake_measure)
    monkeypatch.setattr(accelerator, "free_device_memory", lambda: None)
    fitted = {}
    accelerator._measure(state, CASE, None, fitted)
    assert tried == [16, 8, 4]
    assert state.records[0]["batch"] == 4 and state.records[0]["batch_requested"] == 16
    assert fitted == {("fcn8s", "train", "bfloat16"): 4}
    assert any("retried at batch 8" in n for n in state.notes)
    # The next case of the same kind starts at the batch that fitted.
    accelerator._measure(state, CASE, None, fitted)
    assert tried[-1] == 4


def test_other_failures_are_recorded_and_the_run_goes_on(tmp_path, monkeypatch):
    state = fake_state(tmp_path, [CASE])

    def boom(*args):
        raise ValueError("cuDNN could not find an algorithm\nmore detail")

    monkeypatch.setattr(accelerator, "measure_case", boom)
    monkeypatch.setattr(accelerator, "free_device_memory", lambda: None)
    accelerator._measure(state, CASE, None, {})
    assert state.records[0]["skipped"] == "failed: ValueError: cuDNN could not find an algorithm"


def _must_not_run(*args, **kwargs):
    raise AssertionError("measured a case the budget ruled out")


def fake_record(case):
    r = {**case.key(), "ratio": 0.5, "ratio_compiled": 0.5, "torch_compile_status": "ok"}
    for p in ("jax", "torch", "torch_compile"):
        r |= {f"{p}_ms": 10.0, f"{p}_ms_q1": 9.0, f"{p}_ms_q3": 11.0, f"{p}_tflops": 100.0}
        r |= {f"{p}_images_per_s": 100.0, f"{p}_peak_fraction": 0.25}
    r |= {"jax_compile_s": 20.0, "torch_compile_s": 50.0, "jax_peak_bytes": 2**30}
    r |= {"torch_peak_bytes": None}
    return r


# --- a failing parity check: exit status 1, and timing still runs ------------------------------


def test_parity_failure_exits_1_and_timing_still_runs(tmp_path, monkeypatch):
    ran = []

    def bad_parity(*args, on_check, **kwargs):
        on_check(failing_check())

    monkeypatch.setattr(accelerator, "run_parity", bad_parity)
    monkeypatch.setattr(accelerator, "_timing", lambda state: ran.append(True))
    monkeypatch.setattr(accelerator, "prepare", lambda plan: BenchEnv("cpu", "cpu", "cpu"))
    monkeypatch.setattr(accelerator, "describe_machine", lambda device: fake_machine())
    status = accelerator.run_suite(SuiteOptions(tmp_path, budget_s=60.0, dry_run=True))
    assert status == 1 and ran == [True]
    parity = json.loads((tmp_path / "parity.json").read_text())
    assert parity["verdict"] == "fail"
    assert "**parity: FAIL** (1 checks)" in (tmp_path / "report.md").read_text()


def test_a_crash_in_parity_is_a_failed_check(tmp_path, monkeypatch):
    def crash(*args, **kwargs):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(accelerator, "run_parity", crash)
    monkeypatch.setattr(accelerator, "_timing", lambda state: None)
    monkeypatch.setattr(accelerator, "prepare", lambda plan: BenchEnv("cpu", "cpu", "cpu"))
    monkeypatch.setattr(accelerator, "describe_machine", lambda device: fake_machine())
    monkeypatch.setattr(accelerator, "free_device_memory", lambda: None)
    assert accelerator.run_suite(SuiteOptions(tmp_path, budget_s=60.0, dry_run=True)) == 1
    (check,) = json.loads((tmp_path / "parity.json").read_text())["checks"]
    assert check["check"] == "crashed" and "illegal memory access" in check["note"]


def test_budget_running_out_finishes_the_files(tmp_path, monkeypatch):
    cases = suite_cases(16, dry_run=False)[:3]

    def slow_timing(state):
        state.records.append(fake_record(cases[0]) | {"batch_requested": 16, "case_s": 1.0})
        time.sleep(10)  # the alarm stops this

    monkeypatch.setattr(accelerator, "run_parity", lambda *a, **k: None)
    monkeypatch.setattr(accelerator, "_timing", slow_timing)
    monkeypatch.setattr(accelerator, "prepare", lambda plan: BenchEnv("cpu", "cpu", "cpu"))
    monkeypatch.setattr(accelerator, "describe_machine", lambda device: fake_machine())
    monkeypatch.setattr(accelerator, "suite_cases", lambda batch, dry_run: cases)
    monkeypatch.setattr(accelerator, "RESERVE_S", 0.0)
    start = time.perf_counter()
    assert accelerator.run_suite(SuiteOptions(tmp_path, budget_s=1.0)) == 0
    assert time.perf_counter() - start < 8
    records = json.loads((tmp_path / "bench.json").read_text())
    assert [r.get("skipped") for r in records] == [None, "budget: run out", "budget: run out"]
    report = (tmp_path / "report.md").read_text()
    assert "ran out" in report and "1 cases measured, 2 skipped, 0 pending" in report


def failing_check():
    return ParityCheck(
        "fcn8s", 1.0, "float32", "jax gpu float32", "torch cuda float32", "logits",
        0.5, 100.0, 5e-3, 1e-4, 99.0, 99.5, 1000, 1e-4, passed=False,
    )  # fmt: skip


# --- the comparisons ---------------------------------------------------------------------------


def test_compare_logits_passes_rounding_and_fails_a_real_difference():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((1, 8, 8, 5)).astype(np.float32) * 10
    ok = compare_logits(ref * (1 + 1e-7), ref, 1e-4, 1e-4)
    assert ok["passed"] and ok["argmax_agreement"] == 100.0
    wrong = ref.copy()
    wrong[0, 0, 0] = np.roll(wrong[0, 0, 0], 1)  # one pixel's scores given to other classes
    bad = compare_logits(wrong, ref, 1e-4, 1e-4)
    assert not bad["passed"] and bad["rel"] > 1e-4 and bad["argmax_agreement"] < 100.0


def test_compare_logits_fails_a_flipped_confident_pixel_within_tolerance():
    ref = np.zeros((1, 1, 2, 2), np.float32)
    ref[0, 0, 0] = [100.0, 0.0]  # the scale
    ref[0, 0, 1] = [0.5, 0.0]  # top-2 margin 0.5: confident above a margin of 0.5 / 100
    ours = ref.copy()
    ours[0, 0, 1] = [0.0, 0.5]  # flipped; |diff| = 0.5 = 5e-3 of the scale
    assert not compare_logits(ours, ref, 1e-2, 1e-3)["passed"]  # rel ok, a confident flip
    assert compare_logits(ours, ref, 1e-2, 1e-2)["passed"]  # margin 1.0: not confident


def test_compare_steps():
    before = {"a": np.ones(4, np.float32), "up": np.full(2, 0.5, np.float32)}
    ref = {"a": before["a"] - 1e-3, "up": before["up"]}
    close = {"a": ref["a"] + 1e-8, "up": before["up"]}
    assert compare_steps(before, close, ref)["passed"]
    wrong = {"a": before["a"] - 2e-3, "up": before["up"]}  # twice the update
    result = compare_steps(before, wrong, ref)
    assert not result["passed"] and result["rel"] == pytest.approx(1.0, rel=1e-3)
    assert "['a']" in result["note"]
    moved = {"a": ref["a"], "up": before["up"] + 1e-3}  # a frozen layer moved
    assert not compare_steps(before, moved, ref)["passed"]


def test_verdict():
    assert verdict([]) == "not run"
    assert verdict([failing_check()]) == "fail"
    assert verdict([dataclasses.replace(failing_check(), passed=True)]) == "pass"


def test_report_leads_with_ratios_and_mfu(tmp_path):
    state = fake_state(tmp_path, [CASE, dataclasses.replace(CASE, mode="forward")])
    state.records = [fake_record(CASE), {**CASE.key(), "mode": "forward", "skipped": "budget"}]
    state.checks = [dataclasses.replace(failing_check(), passed=True)]
    report = format_report(state)
    header = next(line for line in report.splitlines() if line.startswith("| variant | mode"))
    assert header.split("|")[5:10] == [
        " **JAX/torch** ", " **JAX/torch.compile** ", " JAX MFU ", " torch MFU ",
        " torch.compile MFU ",
    ]  # fmt: skip
    row = next(line for line in report.splitlines() if line.startswith("| fcn8s | train"))
    assert "| **0.50** | **0.50** | 25.0% | 25.0% | 25.0% |" in row
    assert "- fcn8s forward 500x500 b16 bfloat16 w1: budget" in report
    assert "NVIDIA H200" in report and "driver 580.159.03" in report


# --- the command line -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sizes", "256"], "--suite accelerator sets its own cases; drop --sizes"),
        (["--quick"], "drop --quick"),
        (["--budget-s", "5"], "--budget-s must be at least 30"),
        (["--throughput-batch", "0"], "--throughput-batch must be at least 1"),
    ],
)
def test_bad_suite_flags_exit_2(args, message, tmp_path):
    proc = run_script("bench.py", "--suite", "accelerator", *args, "--out", tmp_path / "o")
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert not (tmp_path / "o").exists()


def test_suite_flags_need_the_suite(tmp_path):
    proc = run_script("bench.py", "--budget-s", "100", "--out", tmp_path)
    assert proc.returncode == 2
    assert "--budget-s only applies to --suite accelerator" in proc.stderr


def test_data_parallel_section_spans_the_hosts_devices(tmp_path, monkeypatch):
    """The loop over device counts (dataparallel.measure itself: test_bench's fake devices)."""
    import jax

    from fcn_jax.bench import dataparallel
    from fcn_jax.bench.network import Network

    calls = []

    def fake_measure(n, case, variables, n_class, warmup, repeats, seed):
        calls.append((n, case.batch, case.dtype, case.mode))
        return {"devices": n, "global_batch": n * case.batch, "step_ms": 10.0 * (1 + n / 10),
                "step_ms_q1": 9.0, "step_ms_q3": 11.0, "images_per_s": 100.0 * n / (1 + n / 10),
                "compile_s": 1.0}  # fmt: skip

    monkeypatch.setattr(dataparallel, "measure", fake_measure)
    monkeypatch.setattr(jax, "device_count", lambda: 4)
    state = fake_state(tmp_path, [CASE], throughput_batch=16)
    net = Network("fcn8s", 1.0, 21, {}, None)
    accelerator._scaling(state, net)
    assert calls == [(1, 8, "bfloat16", "train"), (2, 8, "bfloat16", "train"),
                     (4, 8, "bfloat16", "train")]  # fmt: skip
    assert [r["devices"] for r in state.scaling] == [1, 2, 4]
    assert state.scaling[2]["efficiency"] == pytest.approx(1.1 / 1.4)
    table = format_report(state)
    assert "| 4 | 32 | 14.0 [9.0, 11.0]" in table
    saved = json.loads((tmp_path / "dataparallel.json").read_text())
    assert [r["devices"] for r in saved] == [1, 2, 4]
