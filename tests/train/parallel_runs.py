"""Train the smoke config several ways in one process of 4 CPU devices; print the outcomes.

Run by tests/train/test_parallel.py as ``python -m tests.train.parallel_runs CASE WORKDIR`` with
``XLA_FLAGS=--xla_force_host_platform_device_count=4`` (it must be set before jax is imported,
hence the subprocess). One process serves every layout: ``num_devices=1`` is the reference.
Prints one JSON object: per run, the final params' max |difference| from the first run and the
validation scores.
"""

import json
import sys
from pathlib import Path

import numpy as np
from flax import traverse_util

from fcn_jax.checkpoint import load_weights
from fcn_jax.cli import enable_compilation_cache
from fcn_jax.configs import load_config_file, spec_from_config
from fcn_jax.train.loop import train_and_evaluate
from fcn_jax.train.setup import initial_variables

REPO = Path(__file__).resolve().parents[2]
# (loss, optimiser overrides): plain SGD, because Adam would hide a gradient off by a constant
# factor (a psum too many multiplies it by the device count).
LOSSES = {
    "mean": {"optim.loss": "mean", "learning_rate": 1e-3},
    "sum": {"optim.loss": "sum", "learning_rate": 5e-7},
}
# name -> overrides; the first is the one-device reference.
CASES = {
    "sharding": [("one-device", {"num_devices": 1}), ("sharding-4", {})],
    "pmap": [("one-device", {"num_devices": 1}), ("pmap-4", {"parallel": "pmap"})],
    # Two micro-batches of 2 on 2 devices = one batch of 4 on one device (same examples, same
    # dropout keys, one normalisation after the psum).
    "accum": [
        ("one-device", {"num_devices": 1}),
        (
            "pmap-2-accum-2",
            {"parallel": "pmap", "num_devices": 2, "batch_size": 2, "optim.accum_steps": 2},
        ),
    ],
    "sum": [("one-device", {"num_devices": 1}), ("pmap-4", {"parallel": "pmap"})],
    # BatchNorm's statistics over the global batch however it is split (SyncBatchNorm): the
    # params and the running statistics of both wrappers equal one device's.
    "batchnorm": [
        ("one-device", {"num_devices": 1, "model.backbone": "vgg16_bn"}),
        ("sharding-4", {"model.backbone": "vgg16_bn"}),
        ("pmap-4", {"parallel": "pmap", "model.backbone": "vgg16_bn"}),
    ],
}


def config(overrides: dict):
    c = load_config_file(REPO / "configs/synthetic_fcn8s.py", "smoke")
    c.optim.name = "sgd"
    c.optim.momentum = 0.9
    c.batch_size = 4
    c.num_steps = c.eval_every = c.checkpoint_every = 3
    c.data.num_images = 16
    # One bucket: a micro-batch of 2 would otherwise pick its own, smaller, padding.
    c.data.buckets = (40,)
    for key, value in overrides.items():
        *path, leaf = key.split(".")
        node = c
        for p in path:
            node = node[p]
        node[leaf] = value
    return c


def main(case: str, workdir: str) -> None:
    enable_compilation_cache()  # as train.py: the cases share their one-device reference's
    loss = LOSSES["sum" if case == "sum" else "mean"]
    out, reference, start = {}, None, None
    for name, overrides in CASES[case]:
        c = config({**loss, **overrides})
        summary = train_and_evaluate(c, Path(workdir) / name, progress=False)
        variables, _ = load_weights(Path(workdir) / name, as_numpy=True)
        flat = traverse_util.flatten_dict(variables)  # params and any batch_stats
        if reference is None:
            reference = flat
            initial, _, _ = initial_variables(c, spec_from_config(c))
            start = traverse_util.flatten_dict(initial)
        out[name] = {
            "devices": summary["devices"],
            "parallel": summary["parallel"],
            "eval": summary["eval"],
            "collections": {},
        }
        for collection in variables:  # params; BatchNorm's running statistics apart
            keys = [k for k in flat if k[0] == collection]
            out[name]["collections"][collection] = {
                "max_abs_diff": max(float(np.abs(flat[k] - reference[k]).max()) for k in keys),
                # How far training moved them: the scale the differences are read against.
                "max_update": max(
                    float(np.abs(flat[k] - np.asarray(start[k])).max()) for k in keys
                ),
            }
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main(*sys.argv[1:])
