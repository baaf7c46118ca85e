"""bfloat16 training: computes in bf16, keeps float32 params and optimiser state, and learns."""

import json

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from fcn_jax.checkpoint import load_weights
from fcn_jax.configs import load_config_file
from fcn_jax.train.loop import train_and_evaluate
from tests.utils import REPO


def demo_config():
    return load_config_file(REPO / "configs/synthetic_fcn8s.py")


@pytest.mark.long
def test_bf16_training_learns_with_float32_state(tmp_path):
    c = demo_config()
    c.dtype = "bfloat16"
    c.num_steps = c.eval_every = c.checkpoint_every = 80
    c.data.min_size, c.data.max_size = 32, 48
    summary = train_and_evaluate(c, tmp_path, progress=False)
    # Predicting background everywhere scores ~13% mean IU on this data (see test_train_cli).
    assert summary["eval"]["mean_iou"] > 0.2, summary
    log = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [row["train/loss"] for row in log if "train/loss" in row]
    assert losses[-1] < 0.7 * losses[0], losses
    variables, _ = load_weights(tmp_path, as_numpy=True)
    assert {x.dtype for x in jax.tree.leaves(variables["params"])} == {np.dtype(np.float32)}
    # The optimiser state as stored (Adam's moments float32, its count int32).
    stored = ocp.StandardCheckpointer().metadata(tmp_path / "80" / "train").item_metadata
    dtypes = {np.dtype(leaf.dtype) for leaf in jax.tree.leaves(stored["opt_state"])}
    assert dtypes == {np.dtype(np.float32), np.dtype(np.int32)}, dtypes
