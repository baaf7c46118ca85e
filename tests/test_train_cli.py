"""train.py end to end: learning, bitwise resume after SIGKILL, NaN, bad input."""

import json
import signal

import numpy as np
import pytest
from flax import traverse_util

from fcn_jax.checkpoint import load_weights
from tests.utils import REPO, device_env, run_script, write_list, write_voc_tree

SMOKE = str(REPO / "configs/synthetic_fcn8s.py:smoke")
# The smoke data's largest bucket for every batch: one compilation a run, not one per bucket.
ONE_BUCKET = "--config.data.buckets=(40,)"


run = run_script


def final_params(workdir):
    params, _ = load_weights(workdir, as_numpy=True)
    return traverse_util.flatten_dict(params)


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


def test_sigkill_then_resume_is_bitwise_identical(tmp_path):
    args = [
        "--config",
        SMOKE,
        ONE_BUCKET,
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
    assert "resumed" in r.stdout and "at step 4" in r.stdout
    a, b = final_params(tmp_path / "straight"), final_params(killed)
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
    assert "WARNING" in r.stdout and "will likely diverge" in r.stdout
    assert "last good checkpoint is step None" in r.stderr and "Traceback" not in r.stderr
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
            ["holds a checkpoint of", "fcn8s", "use another --workdir"],
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
    assert f"init from {fcn8s_workdir}" in r.stdout


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
    return final_params(work)


@pytest.mark.parametrize(("first", "then"), [(4, 1), (1, 4)])
def test_resume_on_another_device_count(first, then, tmp_path, unmoved_run):
    # Data parallel (the global batch split over fake CPU devices) gives the one-device update,
    # and a checkpoint written on one device count resumes on another: orbax restores against
    # the new run's shardings. Either way the result is the run that never moved.
    r = run("train.py", *DEVICE_ARGS, "--workdir", tmp_path, env=device_env(first))
    assert r.returncode == 0, r.stderr
    r = run("train.py", *DEVICE_ARGS, *MORE_STEPS, "--workdir", tmp_path, env=device_env(then))
    assert r.returncode == 0 and "at step 3" in r.stdout, r.stderr
    moved = final_params(tmp_path)
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
