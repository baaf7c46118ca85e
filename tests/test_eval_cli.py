"""eval.py end to end on a generated VOC tree, and its errors."""

import json
import re

import jax
import numpy as np
import pytest

from fcn_jax.checkpoint import save_weights
from fcn_jax.configs import load_config_file
from fcn_jax.data import make_dataset
from fcn_jax.models import abstract_variables
from fcn_jax.preprocessing import CAFFE_VOC
from fcn_jax.resources import voc_class_names
from tests.utils import METRIC_KEYS as METRIC_SET_KEYS
from tests.utils import (
    NARROW,
    REPO,
    device_env,
    metadata_for,
    run_script,
    save_random_weights,
    write_mask_tree,
    write_png,
    write_sbd_tree,
    write_voc_tree,
)

SIZES = {
    "2007_000033": (40, 52),
    "2007_000042": (33, 33),
    "2008_000001": (64, 20),
    "2009_000002": (40, 52),
    "2010_000003": (27, 61),
}
METRIC_KEYS = METRIC_SET_KEYS | {"n_images", "seconds"}


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """(root, labels): a VOC tree (splits seg11valid and mini) and an SBD val split."""
    root = tmp_path_factory.mktemp("pascal")
    labels = write_voc_tree(root, SIZES, split="seg11valid")
    write_voc_tree(root, {"2011_000001": (30, 30)}, split="mini")
    write_sbd_tree(root, {"2008_000002": (36, 44), "2008_000003": (50, 29)}, split="val")
    return root, labels


@pytest.fixture(scope="module")
def pth(tmp_path_factory):
    """A random narrow torchfcn FCN-8s checkpoint for VOC, as torchfcn's trainer writes it."""
    import torch

    from fcn_jax.torch_reference import random_state_dict

    path = tmp_path_factory.mktemp("pth") / "fcn8s.pth"
    state = random_state_dict("fcn8s", 21, NARROW, seed=3)
    torch.save({"model_state_dict": state, "arch": "FCN8s"}, path)
    return path


@pytest.fixture(scope="module")
def voc_weights(tmp_path_factory):
    """A weights directory of a random narrow FCN-8s for VOC (what converting a .pth gives)."""
    meta = metadata_for("fcn8s", 21, NARROW, CAFFE_VOC, class_names=voc_class_names())
    return save_random_weights(tmp_path_factory.mktemp("voc") / "fcn8s", meta, seed=3)


def run_eval(*args):
    return run_script("eval.py", *args)


@pytest.mark.torch
def test_against_torch_on_generated_voc(tree, pth, tmp_path):
    root, labels = tree
    out = tmp_path / "m.json"
    r = run_eval(
        "--config",
        REPO / "configs/voc_fcn8s.py",
        "--weights",
        pth,
        f"--config.data.root={root}",
        "--out",
        out,
        "--against-torch",
    )
    assert r.returncode == 0, r.stderr
    metrics = json.loads(out.read_text())
    assert set(metrics) >= METRIC_KEYS
    assert metrics["n_images"] == len(SIZES)
    assert set(metrics["per_class_iou"]) >= {"background", "person", "tvmonitor"}
    assert all(0 <= metrics[k] <= 1 for k in ("pixel_acc", "mean_acc", "mean_iou", "fw_iou"))
    total = sum(int((lab < 21).sum()) for lab in labels.values())
    assert sum(map(sum, metrics["confusion_matrix"])) == total
    reference = metrics["torch"]
    assert set(reference) == METRIC_KEYS - {"n_images", "seconds"} | {"pixel_agreement"}
    assert abs(reference["mean_iou"] - metrics["mean_iou"]) <= 1e-3
    assert reference["pixel_agreement"] > 0.999
    assert "pixel agreement" in r.stdout and "mean IU" in r.stdout
    # --config.data.split names the split to score on eval.py's command line.
    r = run_eval(
        "--config",
        REPO / "configs/voc_fcn8s.py",
        "--weights",
        pth,
        f"--config.data.root={root}",
        "--config.data.split=mini",
        "--out",
        out,
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(out.read_text())["n_images"] == 1


@pytest.mark.torch
def test_against_torch_on_generated_sbd(tree, pth, tmp_path):
    root, _ = tree
    out = tmp_path / "sbd.json"
    r = run_eval(
        "--config",
        REPO / "configs/voc_fcn8s.py",
        "--weights",
        pth,
        f"--config.data.root={root}",
        "--config.data.eval_split=sbd_val",
        "--out",
        out,
        "--against-torch",
    )
    assert r.returncode == 0, r.stderr
    metrics = json.loads(out.read_text())
    assert metrics["n_images"] == 2
    assert abs(metrics["torch"]["mean_iou"] - metrics["mean_iou"]) <= 1e-3


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--config.data.rot=/x"], ["no key 'data.rot'", "did you mean:", "--config.data.root"]),
        (["--config.model.width=wide"], ["could not convert string to float"]),
        ([], ["config.data.root is not set"]),
        (["--config.data.root=/nonexistent/pascal"], ["VOCdevkit", "benchmark_RELEASE"]),
        (
            ["--config.data.root={root}", "--config.data.eval_split=nope"],
            ["unknown split 'nope'", "seg11valid"],
        ),
        (["--config.data.root={root}", "--config.data.name=coco"], ["unknown dataset 'coco'"]),
    ],
)
def test_bad_input_exits_2(tree, voc_weights, args, expected):
    root, _ = tree
    args = [a.format(root=root) for a in args]
    r = run_eval("--config", REPO / "configs/voc_fcn8s.py", "--weights", voc_weights, *args)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    for text in expected:
        assert text in r.stderr, r.stderr


def test_missing_weights_and_config(tree):
    root, _ = tree
    r = run_eval(
        "--config",
        REPO / "configs/voc_fcn8s.py",
        "--weights",
        root / "nothing",
        f"--config.data.root={root}",
    )
    assert r.returncode == 2 and "nothing do not exist" in r.stderr
    r = run_eval("--config", REPO / "configs/missing.py", "--weights", root)
    assert r.returncode == 2 and "missing.py" in r.stderr and "Traceback" not in r.stderr


# --- the config decides how to evaluate; --out checked first; messages --------------------------

SMOKE = REPO / "configs/synthetic_fcn8s.py:smoke"  # eval.bucket=True, eval.batch_size=8
SMOKE_WIDTH = 0.0625


def smoke_metadata(preprocessing=CAFFE_VOC):
    return metadata_for("fcn8s", 5, SMOKE_WIDTH, preprocessing)


@pytest.fixture(scope="module")
def smoke_weights(tmp_path_factory):
    """A weights directory that fits the smoke config: fcn8s, 5 classes, width 0.0625."""
    meta = smoke_metadata()
    leaves, tree = jax.tree.flatten(abstract_variables(meta.spec)["params"])
    rng = np.random.default_rng(0)
    params = jax.tree.unflatten(
        tree, [(0.05 * rng.standard_normal(x.shape)).astype(np.float32) for x in leaves]
    )
    return save_weights(tmp_path_factory.mktemp("smoke") / "w", {"params": params}, meta)


def smoke_shapes():
    """Distinct image shapes of the smoke config's validation split (4 images, 24-40 px)."""
    c = load_config_file(REPO / "configs/synthetic_fcn8s.py", "smoke")
    ds = make_dataset(c, c.data.eval_split)
    return len(ds), len({ds[i]["label"].shape for i in range(len(ds))})


def eval_json(weights, tmp_path, *args, env=None):
    out = tmp_path / "m.json"
    out.unlink(missing_ok=True)
    r = run_script("eval.py", "--config", SMOKE, "--weights", weights, "--out", out, *args, env=env)
    assert r.returncode == 0, r.stderr
    return json.loads(out.read_text()), r


def test_config_eval_section_decides(smoke_weights, tmp_path):
    n_images, n_shapes = smoke_shapes()
    assert n_images == 4 and n_shapes > 2  # else whole images would not compile more
    # The config's eval.bucket=True: one padded batch of 8 for 4 images.
    bucketed, r = eval_json(smoke_weights, tmp_path)
    assert "bucketed, batches of 8" in r.stdout
    assert bucketed["batches"] == 1 and bucketed["compilations"] == 1
    # eval.bucket=False: whole images, one step and one compilation per image shape.
    whole, _ = eval_json(smoke_weights, tmp_path, "--config.eval.bucket=False")
    assert whole["batches"] == n_images and whole["compilations"] == n_shapes
    # eval.batch_size: smaller batches, more of them.
    small, _ = eval_json(smoke_weights, tmp_path, "--config.eval.batch_size=2")
    assert small["batches"] >= 2 > bucketed["batches"]
    # The same labelled pixels scored, however batched (padding may move a few predictions).
    labelled = np.array(bucketed["confusion_matrix"]).sum(1)
    for metrics in (whole, small):
        np.testing.assert_array_equal(np.array(metrics["confusion_matrix"]).sum(1), labelled)


def test_bucket_flag_overrides_the_config(smoke_weights, tmp_path):
    n_images, n_shapes = smoke_shapes()
    flagged, _ = eval_json(smoke_weights, tmp_path, "--config.eval.bucket=False", "--bucket")
    assert flagged["batches"] == 1
    whole, r = eval_json(smoke_weights, tmp_path, "--nobucket")
    assert whole["batches"] == n_images and whole["compilations"] == n_shapes
    # The config's batch size of 8 cannot apply to whole images: said once, on its own line.
    assert re.search(r"^warning: config\.eval\.batch_size=8 is for bucketed", r.stderr, re.M)


def test_num_devices_and_batch_size_over_two_devices(smoke_weights, tmp_path):
    env = device_env(2)
    r = run_script(
        "eval.py", "--config", SMOKE, "--weights", smoke_weights, "--config.eval.batch_size=3",
        env=env,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert "eval batch size 3 does not divide over 2 devices (config.eval.batch_size)" in r.stderr
    assert "evaluating" not in r.stdout  # refused before loading anything
    r = run_script(
        "eval.py", "--config", SMOKE, "--weights", smoke_weights, "--config.num_devices=3",
        env=env,
    )  # fmt: skip
    assert r.returncode == 2 and "config.num_devices=3 but this host has 2 devices" in r.stderr
    # config.num_devices=1: one device takes the batches of 3 (4 images: two batches).
    one, _ = eval_json(
        smoke_weights, tmp_path, "--config.num_devices=1", "--config.eval.batch_size=3", env=env
    )
    assert one["batches"] == 2 and one["n_images"] == 4


def test_out_is_checked_before_evaluating(smoke_weights, tmp_path):
    pth = tmp_path / "fcn8s.pth"  # never read: --out is refused first
    pth.write_bytes(b"a torchfcn checkpoint")
    (tmp_path / "file.txt").write_text("not a folder")
    config = tmp_path / "my_config.py"
    config.write_text((REPO / "configs/synthetic_fcn8s.py").read_text())
    cases = [
        (["--weights", smoke_weights, "--out", tmp_path / "file.txt/m.json"], "is a file"),
        (["--weights", pth, "--out", pth], "is the weights"),
        (["--weights", smoke_weights, "--out", smoke_weights], "is a folder"),
    ]
    for args, message in cases:
        r = run_eval("--config", f"{SMOKE}", *args)
        assert r.returncode == 2, (args, r.stderr)
        assert r.stderr.startswith("error: --out") and message in r.stderr, r.stderr
        assert "evaluating" not in r.stdout and "Traceback" not in r.stderr
    before = config.read_text()
    r = run_eval("--config", f"{config}:smoke", "--weights", smoke_weights, "--out", config)
    assert r.returncode == 2 and "is the config" in r.stderr, r.stderr
    assert config.read_text() == before
    assert pth.read_bytes() == b"a torchfcn checkpoint"  # the .pth untouched


@pytest.mark.torch
def test_pth_class_count_names_the_config_key(pth):  # 21 classes; the synthetic config says 5
    r = run_eval(
        "--config", REPO / "configs/synthetic_fcn8s.py", "--weights", pth
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert "has 21 classes" in r.stderr and "but config.model.n_class is 5" in r.stderr
    assert "--config.model.n_class=21" in r.stderr and "--n-class" not in r.stderr


def test_step_folder_of_a_workdir_suggests_step(smoke_weights):
    r = run_eval("--config", SMOKE, "--weights", smoke_weights / "0")
    assert r.returncode == 2, r.stderr
    assert f"--weights {smoke_weights} --step 0" in r.stderr
    assert "holds no checkpoint" not in r.stderr


FOLDER = {"train": {"a": (24, 24)}, "val": {"b": (24, 30), "c": (30, 24), "d": (26, 26)}}
FOLDER_CLASSES = ["background", "road", "car", "tree", "sky"]


def folder_root(tmp_path, bad_last=False):
    root = tmp_path / "data"
    written = write_mask_tree(root, FOLDER, n_class=5, classes=FOLDER_CLASSES)
    if bad_last:  # a label value past the classes in the last image: read mid-evaluation
        label = written["d"][1].copy()
        label[10, 10] = 7
        write_png(root / "masks" / "val" / "d.png", label)
    return root


def test_folder_config_without_n_class_and_clean_warnings(smoke_weights, tmp_path):
    # configs/folder_fcn8s.py: no n_class (classes.txt has 5), torchvision preprocessing and
    # width 1; the weights are Caffe-preprocessed, width 0.0625, and decide.
    root = folder_root(tmp_path)
    out = tmp_path / "m.json"
    r = run_eval(
        "--config", REPO / "configs/folder_fcn8s.py", "--weights", smoke_weights,
        f"--config.data.root={root}", "--config.model.arch=fcn16s", "--out", out,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads(out.read_text())["n_images"] == 3
    warnings = [line for line in r.stderr.splitlines() if line.startswith("warning: ")]
    assert any(
        "the config expects 'torchvision' preprocessing" in w and "weights' preprocessing" in w
        for w in warnings
    ), r.stderr
    assert any(
        "config.model.arch='fcn16s', config.model.width=1.0 but the weights" in w
        and "arch='fcn8s', width=0.0625: the weights decide" in w
        for w in warnings
    ), r.stderr
    assert "UserWarning" not in r.stderr and "warnings.warn" not in r.stderr
    assert ".py:" not in r.stderr  # no source file and line


def test_data_error_during_evaluation_starts_its_own_line(smoke_weights, tmp_path):
    root = folder_root(tmp_path, bad_last=True)
    r = run_eval(
        "--config", REPO / "configs/folder_fcn8s.py", "--weights", smoke_weights,
        f"--config.data.root={root}", "--config.data.preprocessing=caffe",
        f"--config.model.width={SMOKE_WIDTH}",
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert "eval:" in r.stderr  # the progress bar was drawn, then ended before the error
    assert re.search(r"^error: folder d .*outside \[0, 5\)", r.stderr, re.M), r.stderr
    assert "warning" not in r.stderr  # config and weights agree: nothing to warn about
