"""train.py end to end: learning, resume after SIGKILL or Ctrl-C, NaN, bad input, messages."""

import contextlib
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from flax import traverse_util

from fcn_jax.checkpoint import load_weights, save_weights
from fcn_jax.models import random_variables
from fcn_jax.preprocessing import CAFFE_VOC
from fcn_jax.train.snapshots import training_steps
from tests.utils import REPO, device_env, metadata_for, run_script, write_list, write_voc_tree

SMOKE = str(REPO / "configs/synthetic_fcn8s.py:smoke")
# The smoke data's largest bucket for every batch: one compilation a run, not one per bucket.
ONE_BUCKET = "--config.data.buckets=(40,)"


run = run_script


def final_variables(workdir):
    """Every variable of a run's latest step, params and BatchNorm statistics alike."""
    variables, _ = load_weights(workdir, as_numpy=True)
    return traverse_util.flatten_dict(variables)


@pytest.mark.long
def test_training_visibly_learns(tmp_path):
    work = tmp_path / "run"
    r = run(
        "train.py",
        "--config",
        REPO / "configs/synthetic_fcn8s.py",
        "--workdir",
        work,
        "--config.num_steps=80",
        "--config.eval_every=80",
        "--config.checkpoint_every=80",
        "--config.data.min_size=32",
        "--config.data.max_size=48",
    )
    assert r.returncode == 0, r.stderr
    log = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
    evals = [row for row in log if "eval/mean_iou" in row]
    # Predicting background everywhere scores ~13% mean IU on this data; 80 steps learn.
    assert evals[-1]["step"] == 80 and evals[-1]["eval/mean_iou"] > 0.2, evals
    assert any("train/loss" in row for row in log)
    assert (work / "samples" / "step_0000080.png").is_file()
    assert any((work / "tensorboard").iterdir())
    summary = json.loads(r.stdout[r.stdout.index("{") :])
    assert summary["compilations"] == 1  # batches of 4 padded to one 64x64 bucket


@pytest.mark.long
@pytest.mark.parametrize("backbone", ["vgg16", "vgg16_bn"])
def test_sigkill_then_resume_is_bitwise_identical(backbone, tmp_path):
    # vgg16_bn: the BatchNorm statistics are saved and restored with the rest of the state.
    args = [
        "--config",
        SMOKE,
        ONE_BUCKET,
        f"--config.model.backbone={backbone}",
        "--config.num_steps=6",
        "--config.checkpoint_every=2",
        "--config.eval_every=6",
    ]
    r = run("train.py", *args, "--workdir", tmp_path / "straight")
    assert r.returncode == 0, r.stderr
    killed = tmp_path / "killed"
    r = run("train.py", *args, "--workdir", killed, env={"FCN_JAX_KILL_AFTER_CHECKPOINT": "4"})
    assert r.returncode == -signal.SIGKILL, (r.returncode, r.stderr)
    assert load_weights(killed, as_numpy=True)[0] is not None  # step 4 survived the kill
    r = run("train.py", *args, "--workdir", killed)
    assert r.returncode == 0, r.stderr
    assert "resuming at step 4" in r.stderr, r.stderr
    a, b = final_variables(tmp_path / "straight"), final_variables(killed)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg="/".join(key))


def test_nan_loss_stops_with_the_last_good_checkpoint(tmp_path):
    r = run(
        "train.py",
        "--config",
        SMOKE,
        "--workdir",
        tmp_path / "w",
        "--config.num_steps=10",
        "--config.optim.name=sgd",
        "--config.optim.loss=sum",
        "--config.learning_rate=1e8",
        "--config.checkpoint_every=10",
        "--config.eval_every=20",
        ONE_BUCKET,
    )
    assert r.returncode == 2, r.stderr
    assert "WARNING" in r.stderr and "will likely diverge" in r.stderr
    assert "last good checkpoint is step None" in r.stderr and "Traceback" not in r.stderr
    # The progress bar was closed first: the error starts a line of its own.
    assert re.search(r"^error: the loss became nan at step 10", r.stderr, re.M), r.stderr
    assert not [p for p in (tmp_path / "w").iterdir() if p.name.isdigit()]  # nothing written


@pytest.fixture(scope="module")
def fcn8s_workdir(tmp_path_factory):
    work = tmp_path_factory.mktemp("w") / "fcn8s"
    r = run("train.py", "--config", SMOKE, "--workdir", work)
    assert r.returncode == 0, r.stderr
    return work


def test_eval_and_predict_take_a_workdir(tmp_path, fcn8s_workdir):
    # --best: the checkpoint with the best validation mean IU (the smoke run validates at 2).
    out = tmp_path / "m.json"
    r = run("eval.py", "--config", SMOKE, "--weights", fcn8s_workdir, "--best", "--out", out)
    assert r.returncode == 0, r.stderr
    log = [
        json.loads(line)
        for line in (fcn8s_workdir / "metrics.jsonl").read_text().split("\n")
        if line
    ]
    best = max(row["eval/mean_iou"] for row in log if "eval/mean_iou" in row)
    assert abs(json.loads(out.read_text())["mean_iou"] - best) < 1e-6
    r = run(
        "predict.py",
        "--weights",
        fcn8s_workdir,
        "--input",
        REPO / "fcn_jax/assets/voc_sample.jpg",
        "--out",
        tmp_path / "pred",
        "--step",
        "2",
    )
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "pred" / "voc_sample_overlay.png").is_file()


def test_bad_input_exits_2_before_compute(tmp_path, fcn8s_workdir):
    cases = [
        (
            ["--workdir", tmp_path / "a", "--config.optim.momentun=0.9"],
            ["no key 'optim.momentun'", "did you mean:", "  --config.optim.momentum"],
        ),
        (
            ["--workdir", fcn8s_workdir, "--config.model.arch=fcn32s"],
            ['model.arch: "fcn8s" -> "fcn32s"', "use another --workdir"],
        ),
        (
            # Adam's state cannot become SGD's: before, an orbax tree-dump traceback.
            ["--workdir", fcn8s_workdir, "--config.optim.name=sgd"],
            ['optim.name: "adam" -> "sgd"', "use another --workdir"],
        ),
        (["--workdir", tmp_path / "e", "--config.log_every=0"], ["log_every=0", "must be >= 1"]),
        (["--workdir", tmp_path / "f", "--config.eval_every=0"], ["eval_every=0", "must be >= 1"]),
        # Validation takes eval.py's settings, checked before the first step.
        (
            ["--workdir", tmp_path / "g", "--config.eval.batch_size=0"],
            ["config.eval.batch_size must be at least 1"],
        ),
        (
            ["--workdir", tmp_path / "b", "--config.init.from_=/nonexistent/weights"],
            ["init.from_ /nonexistent/weights does not exist"],
        ),
        (
            [
                "--workdir",
                tmp_path / "c",
                f"--config.init.from_={fcn8s_workdir}",
                "--config.model.n_class=7",
            ],
            ["does not fit this model", "score_fr"],
        ),
        ([], ["--workdir is required"]),
    ]
    root = tmp_path / "pascal"
    write_voc_tree(root, {"2007_000001": (20, 20)})
    write_list(tmp_path / "empty.txt", [])
    voc = [
        "--config",
        REPO / "configs/voc_fcn32s.py",
        f"--config.data.root={root}",
        "--config.init.from_=",
        "--config.model.width=0.0625",
    ]
    r = run(
        "train.py",
        *voc,
        "--workdir",
        tmp_path / "d",
        f"--config.data.split={tmp_path / 'empty.txt'}",
    )
    assert r.returncode == 2 and "lists no ids" in r.stderr and "Traceback" not in r.stderr, (
        r.stderr
    )
    for args, expected in cases:
        r = run("train.py", "--config", SMOKE, *args)
        assert r.returncode == 2, (args, r.stderr)
        assert "Traceback" not in r.stderr, r.stderr
        for text in expected:
            assert text in r.stderr, (text, r.stderr)


def test_staged_init_from_a_workdir(tmp_path, fcn8s_workdir):
    # FCN-8s-atonce shares every layer with FCN-8s: the copy is complete, training continues.
    r = run(
        "train.py",
        "--config",
        SMOKE,
        "--workdir",
        tmp_path / "next",
        f"--config.init.from_={fcn8s_workdir}",
        "--config.model.arch=fcn8s-atonce",
        "--config.num_steps=1",
        "--config.checkpoint_every=1",
        "--config.eval_every=1",
    )
    assert r.returncode == 0, r.stderr
    assert f"init:      from {fcn8s_workdir} (new layers: none)" in r.stderr, r.stderr


def _voc_root(tmp_path):
    root = tmp_path / "pascal"
    write_voc_tree(root, {"2007_000001": (20, 20)})
    return root


@pytest.mark.parametrize(
    "case",
    [
        "file",
        "under_a_file",
        "not_writable",
        "weights_directory",
        "is_init_weights",
        "contains_init_weights",
        "is_data_root",
        "contains_data_root",
    ],
)
def test_bad_workdir_exits_2_before_any_work(case, tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    weights = tmp_path / "parent" / "weights"
    if "weights" in case:  # a converted weights directory: step 0, params and metadata only
        meta = metadata_for("fcn8s", 5, 0.0625, CAFFE_VOC)
        save_weights(weights, random_variables(meta.spec), meta)
    voc = [
        "--config",
        REPO / "configs/voc_fcn32s.py",
        f"--config.data.root={tmp_path / 'pascal'}",
        "--config.init.from_=",
        "--config.model.width=0.0625",  # cheap, should the check ever let it train
    ]
    if "data_root" in case:
        _voc_root(tmp_path)
    args, expected = {
        "file": (["--workdir", tmp_path / "a_file"], "is a file, not a folder"),
        "under_a_file": (["--workdir", tmp_path / "a_file" / "run"], "is a file, not a folder"),
        # Root may write anywhere but /sys: the same message as a read-only folder.
        "not_writable": (["--workdir", "/sys/fcn_jax_test"], "cannot be written"),
        "weights_directory": (["--workdir", weights], "is a weights directory (steps [0])"),
        "is_init_weights": (
            ["--workdir", weights, f"--config.init.from_={weights}"],
            "is the init.from_ weights",
        ),
        "contains_init_weights": (
            ["--workdir", weights.parent, f"--config.init.from_={weights}"],
            "contains the init.from_ weights",
        ),
        "is_data_root": ([*voc, "--workdir", tmp_path / "pascal"], "is the data root"),
        "contains_data_root": ([*voc, "--workdir", tmp_path], "contains the data root"),
    }[case]
    if "--config" not in args:
        args = ["--config", SMOKE, *args]
    r = run("train.py", *args)
    assert r.returncode == 2, r.stderr
    assert expected in r.stderr and "--workdir" in r.stderr, r.stderr
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    workdir = Path(args[args.index("--workdir") + 1])
    if workdir.is_dir():  # refused before any work: nothing written there
        assert not (workdir / "tensorboard").exists() and not (workdir / "1").exists()
    if "weights" in case:
        assert sorted(p.name for p in weights.iterdir()) == ["0"]


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory):
    """Three steps from scratch spelled ``None``, the loss logged every step, checkpoints at
    every step between two validations."""
    work = tmp_path_factory.mktemp("logged") / "w"
    r = run(
        "train.py",
        "--config",
        SMOKE,
        ONE_BUCKET,
        "--workdir",
        work,
        "--config.init.from_=None",
        "--config.log_every=1",
        "--config.num_steps=3",
        "--config.checkpoint_every=1",
        "--config.eval_every=3",
    )
    assert r.returncode == 0, r.stderr
    return work, r


def test_init_from_none_trains_from_scratch(logged_run):
    _, r = logged_run  # before: "init.from_ None does not exist", exit 2
    assert "init:      from scratch (random initialisation)" in r.stderr, r.stderr


def test_log_every_sets_the_logged_steps(logged_run, fcn8s_workdir):
    def logged_steps(work):
        rows = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
        return [row["step"] for row in rows if "train/loss" in row]

    assert logged_steps(logged_run[0]) == [1, 2, 3]
    assert logged_steps(fcn8s_workdir) == [2]  # the default, 10: only the last step of 2


def test_start_summary_and_compiling_on_stderr(logged_run):
    work, r = logged_run
    for text in [
        "config:    " + SMOKE,
        "overrides: --config.data.buckets=(40,) --config.init.from_=None",
        f"workdir:   {work} (new run)",
        "devices:   1 cpu device in 1 process, parallel=sharding",
        "synthetic: 4 train images (train), 4 val images (val)",
        "parameters",
        "steps:     0 -> 3: log every 1",
        "compiling...",  # the bar's postfix until the first step has run
    ]:
        assert text in r.stderr, (text, r.stderr)
    assert json.loads(r.stdout[r.stdout.index("{") :])["step"] == 3  # stdout: results only


def test_no_orbax_warning_for_checkpoints_between_validations(logged_run):
    _, r = logged_run  # steps 1 and 2 are saved without validation metrics
    assert "tracked_metric" not in r.stderr, r.stderr


def test_resume_lists_config_changes_and_continues(tmp_path, fcn8s_workdir):
    work = tmp_path / "w"
    shutil.copytree(fcn8s_workdir, work)
    r = run(
        "train.py",
        "--config",
        SMOKE,
        "--workdir",
        work,
        # A resumed run does not read init.from_: it may even be the workdir itself.
        f"--config.init.from_={work}",
        "--config.learning_rate=0.5",
        "--config.num_steps=3",
        "--config.eval_every=3",
        "--config.checkpoint_every=3",
    )
    assert r.returncode == 0, r.stderr
    for text in [
        "config changes since the checkpoint of step 2",
        "learning_rate: 0.001 -> 0.5",
        "num_steps: 2 -> 3",
        f'init.from_: None -> "{work}"  (not read',
        "resuming at step 2",
    ]:
        assert text in r.stderr, (text, r.stderr)
    assert training_steps(work)[-1] == 3


@contextlib.contextmanager
def sigint_not_ignored():
    """A child inherits an ignored SIGINT (a shell's background job), and train.py keeps it
    ignored on purpose: let the test's child receive it."""
    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        if previous is signal.SIG_IGN:
            signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_stops_cleanly_and_a_rerun_resumes(sig, code, tmp_path):
    work = tmp_path / "w"
    args = [
        "--config",
        SMOKE,
        ONE_BUCKET,
        "--workdir",
        work,
        "--config.checkpoint_every=2",
        "--config.eval_every=100000",
    ]
    err = tmp_path / "stderr"
    with sigint_not_ignored(), err.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, str(REPO / "train.py"), *map(str, args), "--config.num_steps=100000"],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            cwd=REPO,
        )
    try:
        deadline = time.monotonic() + 90
        while not training_steps(work):  # the first checkpoint; training goes on
            assert proc.poll() is None, err.read_text()
            assert time.monotonic() < deadline, err.read_text()
            time.sleep(0.05)
        proc.send_signal(sig)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr_text = err.read_text()
    assert proc.returncode == code, stderr_text
    assert "Traceback" not in stderr_text, stderr_text
    m = re.search(
        rf"interrupted by {sig.name} at step (\d+): a rerun of the same command resumes from "
        r"step (\d+), the last checkpoint",
        stderr_text,
    )
    assert m, stderr_text
    stopped, resume = int(m[1]), int(m[2])
    assert 2 <= resume <= stopped and resume % 2 == 0
    # The checkpoint being written was finished: no orbax temporary folder is left over.
    assert training_steps(work)[-1] == resume
    assert not [p.name for p in work.iterdir() if "tmp" in p.name]
    r = run("train.py", *args, f"--config.num_steps={resume + 1}")
    assert r.returncode == 0, r.stderr
    assert f"resuming at step {resume}" in r.stderr, r.stderr
    assert training_steps(work)[-1] == resume + 1


DEVICE_ARGS = [
    "--config",
    SMOKE,
    "--config.batch_size=4",
    "--config.num_steps=3",
    "--config.eval_every=3",
    "--config.checkpoint_every=3",
]
MORE_STEPS = ["--config.num_steps=5", "--config.checkpoint_every=5", "--config.eval_every=5"]


@pytest.fixture(scope="module")
def unmoved_run(tmp_path_factory):
    """Five steps on one device, never interrupted: the reference of the resumed runs."""
    work = tmp_path_factory.mktemp("unmoved")
    r = run("train.py", *DEVICE_ARGS, *MORE_STEPS, "--workdir", work, env=device_env(1))
    assert r.returncode == 0, r.stderr
    return final_variables(work)


@pytest.mark.parametrize(("first", "then"), [(4, 1), (1, 4)])
def test_resume_on_another_device_count(first, then, tmp_path, unmoved_run):
    # Data parallel (the global batch split over fake CPU devices) gives the one-device update,
    # and a checkpoint written on one device count resumes on another: orbax restores against
    # the new run's shardings. Either way the result is the run that never moved.
    r = run("train.py", *DEVICE_ARGS, "--workdir", tmp_path, env=device_env(first))
    assert r.returncode == 0, r.stderr
    r = run("train.py", *DEVICE_ARGS, *MORE_STEPS, "--workdir", tmp_path, env=device_env(then))
    assert r.returncode == 0 and "resuming at step 3" in r.stderr, r.stderr
    moved = final_variables(tmp_path)
    for key, value in unmoved_run.items():
        np.testing.assert_allclose(moved[key], value, rtol=1e-4, atol=1e-5, err_msg="/".join(key))


def test_batch_that_does_not_divide_over_the_devices_exits_2(tmp_path):
    args = [*DEVICE_ARGS, "--config.batch_size=6", "--workdir", tmp_path]
    r = run("train.py", *args, env=device_env(4))
    assert r.returncode == 2 and "batch_size 6 (global) does not divide over 4 devices" in r.stderr


@pytest.mark.parametrize("script", ["train.py", "eval.py", "bench.py"])
def test_help_prints_usage_and_flags(script):
    r = run(script, "--help")
    assert r.returncode == 0, r.stderr
    assert "python " + script in r.stdout
    assert "--out" in r.stdout or "--workdir" in r.stdout  # the script's own flags
