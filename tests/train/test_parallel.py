"""Data parallelism proven equal: pmap, sharding and one device; the layout helpers; launchers.

The training runs happen in a subprocess with 4 fake CPU devices (XLA reads the device count
when jax is imported); see tests/train/parallel_runs.py.
"""

import json
import subprocess
import sys

import pytest

from fcn_jax.distributed import initialize, launcher
from fcn_jax.errors import FCNError
from tests.utils import REPO, device_env


def train_ways(case, tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "tests.train.parallel_runs", case, str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=240,
        env=device_env(4),
    )
    assert r.returncode == 0, r.stderr[-3000:]
    line = next(x for x in r.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def assert_same_training(runs):
    (_, reference), *others = runs.items()
    for collection, moved in reference["collections"].items():
        assert moved["max_update"] > 1e-4, (collection, moved)  # training moved them
    for name, run in others:
        assert run["devices"] == int(name.split("-")[1]), name
        assert run["collections"].keys() == reference["collections"].keys()
        # A gradient summed once too often (or normalised per device), or statistics of one
        # device's slice, would differ by a multiple of the update itself; float
        # reassociation leaves ~1e-7.
        for collection, diff in run["collections"].items():
            update = reference["collections"][collection]["max_update"]
            assert diff["max_abs_diff"] < 1e-3 * update + 1e-6, (name, collection, diff)
        for key, value in run["eval"].items():
            assert value == pytest.approx(reference["eval"][key], abs=1e-6), (name, key)


# The two wrappers on both stacks; accumulation and the summed loss (long) on the newest only.
@pytest.mark.parametrize(
    "case",
    ["sharding", "pmap", pytest.param("accum", marks=pytest.mark.long),
     pytest.param("sum", marks=pytest.mark.long),
     pytest.param("batchnorm", marks=pytest.mark.long)],
)  # fmt: skip
def test_data_parallel_training_equals_one_device(case, tmp_path):
    # Dropout on, SGD (Adam would hide a constant factor), batches of 4 mixed sizes padded to
    # one bucket: the devices hold different numbers of void pixels. Mean loss, except "sum";
    # "accum": micro-batches accumulated over devices, psum-med once; "batchnorm": vgg16_bn,
    # BatchNorm's statistics over the global batch on 1, 4 (sharding) and 4 (pmap) devices.
    runs = train_ways(case, tmp_path)
    assert_same_training(runs)


def test_launcher_detection():
    assert launcher({}, None, None) is None
    assert launcher({"SLURM_NTASKS": "1", "SLURM_PROCID": "0"}, None, None) is None
    assert launcher({"SLURM_NTASKS": "8", "SLURM_PROCID": "3"}, None, None) == "slurm"
    assert launcher({"TPU_WORKER_HOSTNAMES": "t0"}, None, None) is None  # one host
    assert launcher({"TPU_WORKER_HOSTNAMES": "t0,t1,t2,t3"}, None, None) == "tpu"
    assert launcher({}, "localhost:1234", 2) == "flags"
    assert initialize(environ={}) is None  # a single-process run initialises nothing
    with pytest.raises(FCNError, match="--process_id"):
        initialize("localhost:1234", 2, None, environ={})
    with pytest.raises(FCNError, match=r"not in \[0, 2\)"):
        initialize("localhost:1234", 2, 5, environ={})


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.long
def test_two_processes_of_two_devices_train_like_one_of_four(tmp_path):
    # Two "hosts" on this machine (coordinator on localhost, CPU collectives over gloo): each
    # reads its half of every global batch and they write one checkpoint together. One bucket:
    # several hosts pad every batch to the largest (a host sees only its own images), where one
    # host picks the smallest bucket that fits the whole batch.
    import numpy as np
    from flax import traverse_util

    from fcn_jax.checkpoint import load_weights

    args = [
        sys.executable,
        str(REPO / "train.py"),
        "--config",
        str(REPO / "configs/synthetic_fcn8s.py:smoke"),
        "--config.batch_size=4",
        "--config.data.num_images=16",
        "--config.data.buckets=(40,)",
        "--config.optim.name=sgd",
        "--config.optim.momentum=0.9",
        "--config.num_steps=3",
        "--config.eval_every=3",
        "--config.checkpoint_every=3",
    ]

    port = free_port()
    procs = [
        subprocess.Popen(
            [
                *args,
                "--workdir",
                str(tmp_path / "two"),
                f"--coordinator_address=localhost:{port}",
                "--num_processes=2",
                f"--process_id={i}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=device_env(2),
        )
        for i in range(2)
    ]
    one = subprocess.run(
        [*args, "--workdir", str(tmp_path / "one")],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=device_env(4),
        timeout=180,
    )
    outs = [p.communicate(timeout=180) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    assert one.returncode == 0, one.stderr[-3000:]
    # Process 0 alone reports (and logs); both saw 4 devices in 2 processes.
    summary = json.loads(outs[0][0][outs[0][0].index("{") :])
    assert (summary["devices"], summary["processes"]) == (4, 2)
    assert "{" not in outs[1][0]
    reference = json.loads(one.stdout[one.stdout.index("{") :])
    assert reference["devices"] == 4 and reference["processes"] == 1
    for key, value in summary["eval"].items():
        assert value == pytest.approx(reference["eval"][key], abs=1e-6), key
    a = traverse_util.flatten_dict(load_weights(tmp_path / "two", as_numpy=True)[0]["params"])
    b = traverse_util.flatten_dict(load_weights(tmp_path / "one", as_numpy=True)[0]["params"])
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-4, atol=1e-6, err_msg="/".join(key))
