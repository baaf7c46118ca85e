"""Every experiment config: the shared schema, its model (shapes only), its smoke variant."""

import math

import jax
import numpy as np
import pytest

from fcn_jax.cli import config_keys
from fcn_jax.configs import load_config_file, model_from_config
from fcn_jax.data import make_dataset
from fcn_jax.errors import FCNError
from fcn_jax.models import VARIANTS, abstract_params
from tests.utils import REPO

CONFIGS = sorted(p.stem for p in (REPO / "configs").glob("*.py"))
TOP = {
    "seed",
    "num_steps",
    "batch_size",
    "learning_rate",
    "eval_every",
    "checkpoint_every",
    "parallel",
    "num_devices",
    "dtype",
}
SECTIONS = {"data", "model", "init", "optim", "eval"}
PARAMS = {
    "fcn32s": 136_152_917,
    "fcn16s": 134_815_994,
    "fcn8s": 134_489_759,
    "fcn8s-atonce": 134_489_759,
}


def load(name, arg=None):
    return load_config_file(REPO / "configs" / f"{name}.py", arg)


def test_the_issue_configs_exist():
    assert {"voc_fcn32s", "voc_fcn16s", "voc_fcn8s", "voc_fcn8s_atonce", "synthetic_fcn8s"} <= set(
        CONFIGS
    )


@pytest.mark.parametrize("name", CONFIGS)
def test_schema(name):
    c = load(name)
    assert set(c.keys()) >= TOP | SECTIONS
    assert {"name", "root", "split", "eval_split"} <= set(c.data.keys())
    assert {"arch", "n_class", "width"} <= set(c.model.keys())
    assert c.dtype == "float32" and c.parallel == "sharding"  # the faithful default
    assert c.model.arch in VARIANTS
    # One schema for all: every config has the same keys.
    assert config_keys(c) == config_keys(load("voc_fcn32s"))


@pytest.mark.parametrize("name", CONFIGS)
def test_builds_its_model(name):
    c = load(name)
    params = abstract_params(model_from_config(c))  # shapes only, no full-width init
    count = sum(math.prod(x.shape) for x in jax.tree.leaves(params))
    if name.startswith("voc_"):
        assert (c.model.width, c.model.n_class, c.data.name) == (1.0, 21, "voc")
        assert count == PARAMS[c.model.arch]
        assert (c.data.split, c.data.eval_split, c.batch_size) == ("sbd_train", "seg11valid", 1)
    elif name.startswith("synthetic"):
        assert count < 10_000_000
    else:  # the paper's network: one VGG16 per stream
        assert c.model.width == 1.0
        assert count > 134_000_000 * max(len(c.model.streams), 1)


def test_paper_tables_configs():
    assert load("nyud_fcn16s_rgbhha").model.streams == ("color", "hha")
    assert load("nyud_fcn32s_hha").data.modalities == ("hha",)
    assert load("siftflow_fcn16s").model.heads == (("sem", 33), ("geo", 3))
    assert {load(f"context_fcn{n}").model.n_class for n in ("32s", "16s", "8s")} == {60}


def test_voc_recipes():
    lrs = {
        n: load(n).learning_rate
        for n in CONFIGS
        if n.startswith("voc_fcn") and "_fixed" not in n and "_cvpr" not in n
    }
    assert lrs == {
        "voc_fcn32s": 1e-10,
        "voc_fcn16s": 1e-12,
        "voc_fcn8s": 1e-14,
        "voc_fcn8s_atonce": 1e-10,
    }
    assert load("voc_fcn8s_atonce").num_steps == 300_000
    assert load("voc_fcn8s").model.arch == "fcn8s"


@pytest.mark.parametrize("name", CONFIGS)
def test_smoke_variant_runs_anywhere(name):
    c = load(name, "smoke")
    assert c.num_steps <= 2 and c.model.width <= 0.125 and c.data.name == "synthetic"
    dataset = make_dataset(c, c.data.split)
    record = dataset[0]
    assert dataset.n_class == c.model.n_class
    for key in c.data.modalities:  # every input the network reads
        assert record[key].shape[:2] == record["label"].shape
    if c.model.heads:  # every head's labels
        assert record["label_geo"].shape == record["label"].shape
    model = model_from_config(c)
    assert len(model.streams) == (len(c.data.modalities) if model.streams else 0)


def test_unknown_variant_and_dataset():
    with pytest.raises(ValueError, match="unknown config variant 'tiny'"):
        load("voc_fcn8s", "tiny")
    c = load("voc_fcn8s")
    with pytest.raises(FCNError, match=r"config\.data\.root is not set"):
        make_dataset(c, "seg11valid")
    c.data.name = "imagenet"
    with pytest.raises(
        FCNError,
        match=r"unknown dataset 'imagenet'.*'camvid', 'context', 'folder', 'nyud', 'sbd', "
        r"'siftflow', 'synthetic', 'tfds', 'voc'",
    ):
        make_dataset(c, "train")


@pytest.mark.parametrize("name", CONFIGS)
def test_builds_its_train_state(name):
    from fcn_jax.train.optim import make_optimizer
    from fcn_jax.train.step import create_train_state

    c = load(name)
    params = abstract_params(model_from_config(c))
    tx = make_optimizer(c, params, steps_per_epoch=100)
    state = jax.eval_shape(lambda p: create_train_state(p, tx, c.seed), params)
    assert jax.tree.structure(state.params) == jax.tree.structure(params)
    assert int(np.prod(state.step.shape)) == 1
    assert c.init.from_ or name.startswith("synthetic")  # paper configs start from weights


def test_training_recipes():
    fixed, cvpr = load("voc_fcn32s_fixed"), load("voc_fcn32s_cvpr")
    assert fixed.optim.trainable == "score_fr"
    assert (cvpr.optim.loss, cvpr.optim.momentum, cvpr.learning_rate, cvpr.optim.accum_steps) == (
        "mean",
        0.9,
        1e-4,
        20,
    )
    adam = load("camvid_fcn8s_adam")
    assert (adam.optim.name, adam.learning_rate, adam.optim.lr_halve_every_epochs) == (
        "adam",
        1e-4,
        50,
    )
    assert load("voc_fcn16s").init.from_ == "runs/voc_fcn32s"
    assert load("voc_fcn8s").init.from_ == "runs/voc_fcn16s"
    for name in ("voc_fcn32s", "voc_fcn16s", "voc_fcn8s", "voc_fcn8s_atonce"):
        c = load(name)
        assert (c.optim.loss, c.optim.momentum, c.optim.weight_decay, c.batch_size) == (
            "sum",
            0.99,
            5e-4,
            1,
        )
        assert (c.eval_every, c.checkpoint_every) == (4000, 4000)
