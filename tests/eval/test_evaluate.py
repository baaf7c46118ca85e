"""Scoring weights on a split: whole-image and bucketed, one and four devices, beside PyTorch."""

import dataclasses
import json
import re
import subprocess
import sys
import warnings

import jax
import numpy as np
import pytest

from fcn_jax.configs import base
from fcn_jax.convert import warn_network_differs
from fcn_jax.data.synthetic import SyntheticSegmentation
from fcn_jax.data.transforms import default_buckets
from fcn_jax.errors import FCNError
from fcn_jax.eval.evaluate import EvalOptions, evaluate, head_targets
from fcn_jax.eval.metrics import compute_metrics
from fcn_jax.models import NetSpec, abstract_variables
from fcn_jax.preprocessing import CAFFE_VOC, TORCHVISION, reconcile
from tests.utils import METRIC_KEYS, NARROW, REPO, device_env, metadata_for

N_CLASS = 4


def random_variables(meta, seed=0, scale=0.05):
    """{"params": ...} of ``meta``'s network, normal with standard deviation ``scale``."""
    leaves, tree = jax.tree.flatten(abstract_variables(meta.spec)["params"])
    rng = np.random.default_rng(seed)
    params = jax.tree.unflatten(
        tree, [(scale * rng.standard_normal(x.shape)).astype(np.float32) for x in leaves]
    )
    return {"params": params}


@pytest.fixture(scope="module")
def setup():
    meta = metadata_for("fcn16s", N_CLASS, NARROW, CAFFE_VOC, class_names=("bg", "a", "b", "c"))
    dataset = SyntheticSegmentation("val", N_CLASS, num_images=6, min_size=20, max_size=30)
    return meta, random_variables(meta), dataset


def reference_confusion(meta, variables, dataset):
    """Image by image, through the plain jitted forward and numpy: independent of evaluate()."""
    forward = jax.jit(meta.spec.module().apply)
    hist = np.zeros((N_CLASS, N_CLASS), np.int64)
    for i in range(len(dataset)):
        r = dataset[i]
        logits = forward(variables, CAFFE_VOC.apply(r["image"][None]))["out"]
        pred = np.asarray(logits[0]).argmax(-1)
        keep = r["label"] < N_CLASS
        np.add.at(hist, (r["label"][keep], pred[keep]), 1)
    return hist


def test_whole_image_evaluation_matches_reference(setup):
    meta, variables, dataset = setup
    result = evaluate(variables, meta, dataset, progress=False)
    np.testing.assert_array_equal(
        result.metrics[""].confusion, reference_confusion(meta, variables, dataset)
    )
    assert result.n_images == 6
    shapes = {dataset[i]["label"].shape for i in range(len(dataset))}
    assert result.compilations == len(shapes)  # one per distinct shape, no more
    assert result.metrics[""].class_names == dataset.class_names
    out = result.to_json()
    assert set(out) >= METRIC_KEYS | {"n_images", "seconds"}
    json.dumps(out, allow_nan=False)
    assert "torch" not in out


def test_bucketed_evaluation_counts_every_pixel_once(setup):
    meta, variables, dataset = setup
    result = evaluate(
        variables, meta, dataset, bucket=True, batch_size=4, buckets=(16, 24, 32), progress=False
    )
    labels = [dataset[i]["label"] for i in range(len(dataset))]
    assert result.metrics[""].confusion.sum() == sum(int((lab < N_CLASS).sum()) for lab in labels)
    np.testing.assert_array_equal(
        result.metrics[""].confusion.sum(1),
        sum(np.bincount(lab[lab < N_CLASS], minlength=N_CLASS) for lab in labels),
    )
    assert result.n_images == 6
    assert 1 <= result.compilations <= 2  # 6 images in batches of 4: two batches at most


@pytest.mark.torch
def test_against_torch(setup):
    meta, variables, dataset = setup
    result = evaluate(variables, meta, dataset, against_torch=True, progress=False)
    assert result.torch is not None and result.torch_agrees
    assert result.torch_miou_diff <= 1e-3
    assert result.pixel_agreement > 0.999
    out = result.to_json()
    assert set(out["torch"]) == set(result.metrics[""].to_json()) | {"pixel_agreement"}
    assert "PyTorch" in result.format() and "within the tolerance" in result.format()


def test_against_torch_without_torch_says_how_to_install_it(setup, monkeypatch):
    meta, variables, dataset = setup
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    with pytest.raises(
        FCNError, match=r"PyTorch is needed for this: pip install 'fcn-jax\[torch\]'"
    ):
        evaluate(variables, meta, dataset, against_torch=True, progress=False)


def test_class_count_mismatch(setup):
    meta, variables, _ = setup
    other = SyntheticSegmentation("val", 7, num_images=2)
    with pytest.raises(FCNError, match=r"predict 4 classes but .* has 7"):
        evaluate(variables, meta, other, progress=False)


def test_config_and_weights_preprocessing_disagree_loudly(capsys):
    # One clean "warning: ..." line on stderr each time, not a UserWarning with a source line.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert reconcile("torchvision", CAFFE_VOC) is CAFFE_VOC
        assert reconcile(TORCHVISION.to_dict(), CAFFE_VOC) is CAFFE_VOC
        first, second = capsys.readouterr().err.splitlines()
        assert first.startswith("warning: the config expects 'torchvision' preprocessing")
        assert "weights were made for 'caffe'" in first
        assert first.endswith("using the weights' preprocessing")
        assert second == first
        assert reconcile("caffe", CAFFE_VOC) is CAFFE_VOC
        assert reconcile(None, TORCHVISION) is TORCHVISION
        assert capsys.readouterr().err == ""


def config_for(**model):
    c = base()
    c.model.arch, c.model.width, c.model.n_class = "fcn16s", NARROW, N_CLASS
    for key, value in model.items():
        c.model[key] = value
    return c


def test_config_and_weights_network_disagree_loudly(setup, capsys):
    meta, _, _ = setup  # fcn16s, width 0.125, 4 classes
    warn_network_differs(config_for(), meta, "w")
    assert capsys.readouterr().err == ""
    warn_network_differs(config_for(arch="fcn32s", width=1.0), meta, "w")
    assert capsys.readouterr().err == (
        "warning: config.model.arch='fcn32s', config.model.width=1.0 but the weights w have "
        "arch='fcn16s', width=0.125: the weights decide (their network is used)\n"
    )
    warn_network_differs(config_for(n_class=21), meta, "w")
    assert "config.model.n_class=21 but the weights w have n_class=4" in capsys.readouterr().err
    c = config_for()
    c.model.n_class = None  # unset: from the data, nothing to compare
    warn_network_differs(c, meta, "w")
    assert capsys.readouterr().err == ""


def test_eval_options_from_config():
    c = base()
    assert EvalOptions.from_config(c) == EvalOptions(
        bucket=False, batch_size=1, buckets=default_buckets(500, 32), worker_count=0
    )
    c.eval.bucket, c.eval.batch_size, c.dtype, c.num_devices = True, 2, "bfloat16", 1
    c.data.buckets, c.data.worker_count = (64, 128), 3
    options = EvalOptions.from_config(c)
    assert options == EvalOptions(True, 2, (64, 128), 3, "bfloat16", 1)
    assert not EvalOptions.from_config(c, bucket=False).bucket  # the command line wins
    c.eval.bucket = False
    assert EvalOptions.from_config(c, bucket=True).bucket
    c.data.buckets = None
    c.data.max_size, c.data.bucket_step = 100, 48
    assert EvalOptions.from_config(c).buckets == (48, 96, 144)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("dtype", "float16", "config.dtype 'float16' is not one of"),
        ("eval.batch_size", 0, "config.eval.batch_size must be at least 1, got 0"),
        ("num_devices", 2, "config.num_devices=2 but this host has 1 devices"),
    ],
)
def test_eval_options_refused(key, value, message):
    c = base()
    *section, last = key.split(".")
    (c[section[0]] if section else c)[last] = value
    with pytest.raises(FCNError, match=re.escape(message)):
        EvalOptions.from_config(c)


def test_batches_count_the_steps(setup):
    meta, variables, dataset = setup
    result = evaluate(
        variables, meta, dataset, bucket=True, batch_size=2, buckets=(32,), progress=False
    )
    assert result.batches == 3 and result.to_json()["batches"] == 3
    assert "6 images in 3 batch(es)" in result.format()


MULTI_DEVICE = """
import json, jax, numpy as np
from fcn_jax.data.synthetic import SyntheticSegmentation
from fcn_jax.errors import FCNError
from fcn_jax.eval.evaluate import evaluate
from tests.eval.test_evaluate import random_variables
from tests.utils import metadata_for
meta = metadata_for("fcn16s", 4, 0.125, class_names=("bg", "a", "b", "c"))
variables = random_variables(meta)
data = SyntheticSegmentation("val", 4, num_images=6, min_size=20, max_size=30)
try:
    evaluate(variables, meta, data, bucket=True, batch_size=6, buckets=(32,), progress=False)
    error = None
except FCNError as e:
    error = str(e)
r = evaluate(variables, meta, data, bucket=True, batch_size=4, buckets=(32,), progress=False)
print(json.dumps({"devices": jax.local_device_count(), "error": error,
                  "confusion": r.metrics[""].confusion.tolist(), "n": r.n_images}))
"""


def test_four_devices_equal_one_device(setup):
    # 6 images, global batch 4 over 4 devices: the last batch holds 2 real + 2 void examples.
    meta, variables, dataset = setup
    single = evaluate(
        variables, meta, dataset, bucket=True, batch_size=4, buckets=(32,), progress=False
    )
    env = device_env(4)
    run = subprocess.run(
        [sys.executable, "-c", MULTI_DEVICE],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["devices"] == 4 and out["n"] == 6
    assert "batch size 6 does not divide over 4 devices" in out["error"]
    np.testing.assert_array_equal(np.array(out["confusion"]), single.metrics[""].confusion)
    assert compute_metrics(np.array(out["confusion"]), dataset.class_names).mean_iou == (
        single.metrics[""].mean_iou
    )


def test_head_targets_name_the_datasets_label_keys(setup):
    meta, _, _ = setup
    assert head_targets(meta.spec) == {"out": ("label", "")}
    heads = (("sem", 4), ("geo", 3), ("depth", 2))
    two = dataclasses.replace(
        meta,
        spec=NetSpec(arch="fcn16s", heads=heads, width=NARROW),
        head_class_names=(("s", "h", "v"), ("near", "far")),
    )
    assert head_targets(two.spec) == {
        "sem": ("label", "semantic"),
        "geo": ("label_geo", "geometric"),
        "depth": ("label_depth", "depth"),
    }
