"""eval.py end to end on a generated VOC tree, and its errors."""

import json

import pytest
import torch

from fcn_jax.torch_reference import random_state_dict
from tests.utils import METRIC_KEYS as METRIC_SET_KEYS
from tests.utils import NARROW, REPO, run_script, write_sbd_tree, write_voc_tree

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
    root = tmp_path_factory.mktemp("pascal")
    labels = write_voc_tree(root, SIZES, split="seg11valid")
    write_voc_tree(root, {"2011_000001": (30, 30)}, split="mini")
    write_sbd_tree(root, {"2008_000002": (36, 44), "2008_000003": (50, 29)}, split="val")
    pth = root / "fcn8s.pth"
    torch.save(
        {"model_state_dict": random_state_dict("fcn8s", 21, NARROW, seed=3), "arch": "FCN8s"}, pth
    )
    return root, pth, labels


def run_eval(*args):
    return run_script("eval.py", *args)


def test_against_torch_on_generated_voc(tree, tmp_path):
    root, pth, labels = tree
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


def test_against_torch_on_generated_sbd(tree, tmp_path):
    root, pth, _ = tree
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
def test_bad_input_exits_2(tree, args, expected):
    root, pth, _ = tree
    args = [a.format(root=root) for a in args]
    r = run_eval("--config", REPO / "configs/voc_fcn8s.py", "--weights", pth, *args)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    for text in expected:
        assert text in r.stderr, r.stderr


def test_missing_weights_and_config(tree):
    root, _, _ = tree
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
