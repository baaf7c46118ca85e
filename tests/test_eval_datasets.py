"""eval.py end to end on generated NYUDv2, SIFT Flow, PASCAL-Context, CamVid and folder trees.

Each case writes a tiny tree in the dataset's on-disk format, a random narrow torchfcn-layout
``.pth`` of the config's structure (two streams for RGB-HHA, two heads for SIFT Flow), and runs
``eval.py --against-torch`` (so these are marked torch). The confusion matrices are checked
against ground-truth class counts computed here from the files written, with each dataset's
documented label mapping.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import scipy.io
from PIL import Image

from fcn_jax.data.splits import shipped_split_dir
from fcn_jax.preprocessing import NYUD_HHA, NYUD_RGB
from tests.utils import (
    CAMVID11,
    NARROW,
    REPO,
    SIFTFLOW_SEMANTIC,
    SIFTFLOW_SUBDIR,
    metadata_for,
    save_random_weights,
    write_camvid_tree,
    write_context_tree,
    write_mask_tree,
    write_nyud_tree,
    write_siftflow_tree,
)
from tests.utils import METRIC_KEYS as METRIC_SET_KEYS

if TYPE_CHECKING:
    import torch

METRIC_KEYS = METRIC_SET_KEYS
SCALARS = ("pixel_acc", "mean_acc", "mean_iou", "fw_iou")
PER_CLASS = ("per_class_iou", "per_class_dice", "per_class_precision", "per_class_recall")

# Split -> id -> (height, width): 2-3 images of varied sizes, sides 20..64.
NYUD_SPLITS = {"test": {"5001": (40, 52), "5002": (33, 27), "5003": (20, 64)}}
SIFTFLOW_SPLITS = {"test": {"coast_arnat59": (48, 48), "street_par151": (30, 57)}}
CONTEXT_SPLITS = {
    "val": {"2008_000002": (44, 36), "2010_000050": (25, 60), "2010_000051": (44, 36)}
}
CAMVID_SPLITS = {"val": {"0001TP_006690": (36, 48), "Seq05VD_f00000": (24, 40)}}
FOLDER_SPLITS = {"val": {"a": (50, 30), "b": (21, 45), "c": (64, 22)}}

FOLDER_N_CLASS = 5

GEOMETRIC = ["sky", "horizontal", "vertical"]


def read_mat(path: Path, key: str) -> np.ndarray:
    return scipy.io.loadmat(path)[key]


def counts(labels: list[np.ndarray], n_class: int) -> np.ndarray:
    """Ground-truth pixels per class of 0-based labels, anything outside [0, n) left out."""
    total = np.zeros(n_class, np.int64)
    for label in labels:
        label = np.asarray(label, np.int64).ravel()
        total += np.bincount(label[(label >= 0) & (label < n_class)], minlength=n_class)
    return total


# --- the names and ground truth of each dataset, from the files written -------------------------


def nyud_names() -> list[str]:
    """The shipped classes.txt: one name per line (some with spaces), then a blank line, notes."""
    text = (shipped_split_dir("nyud") / "classes.txt").read_text()
    names = text.split("\n\n")[0].splitlines()
    assert len(names) == 40 and names[:2] == ["wall", "floor"] and names[-1] == "otherprop"
    return names


def nyud_truth(root: Path, ids: list[str]) -> dict[str, np.ndarray]:
    """File value 0 is void, 1..40 are classes 0..39."""
    values = [read_mat(root / "segmentation" / f"img_{i}.mat", "segmentation") for i in ids]
    return {"": counts([v.astype(np.int64) - 1 for v in values], 40)}


def siftflow_truth(root: Path, ids: list[str]) -> dict[str, np.ndarray]:
    """Semantic 0 and geometric -1 / 0 are unlabeled; 1..n are classes 0..n-1."""
    semantic = [read_mat(root / "SemanticLabels" / SIFTFLOW_SUBDIR / f"{i}.mat", "S") for i in ids]
    geometric = [read_mat(root / "GeoLabels" / SIFTFLOW_SUBDIR / f"{i}.mat", "S") for i in ids]
    return {
        "semantic": counts([s.astype(np.int64) - 1 for s in semantic], 33),
        "geometric": counts([np.where(g < 0, 0, g).astype(np.int64) - 1 for g in geometric], 3),
    }


def context_names() -> tuple[list[str], list[str]]:
    """(labels.txt's 459 names, the task's 59) from the lists the loader falls back on."""
    lists = shipped_split_dir("context")
    full, task = (
        [line.split(": ", 1)[1].strip() for line in (lists / name).read_text().splitlines()]
        for name in ("classes-400.txt", "classes-59.txt")
    )
    assert len(full) == 459 and task[0] == "background" and len(task) == 60
    return full, task[1:]


def context_truth(root: Path, ids: list[str]) -> dict[str, np.ndarray]:
    """LabelMap value v names labels.txt's class v (1-based); the task's class i is label i + 1
    (names compared without spaces, three renamed as the reference layer does), all else 0."""
    full, task = context_names()
    renamed = {"diningtable": "table", "bedcloth": "bedclothes", "clothes": "cloth"}
    position = {renamed.get(n, n): i + 1 for i, n in enumerate(task)}
    lookup = np.array([0] + [position.get(n.replace(" ", ""), 0) for n in full])
    assert sorted(set(lookup) - {0}) == list(range(1, 60))  # every task class is reachable
    maps = [read_mat(root / "trainval" / f"{i}.mat", "LabelMap") for i in ids]
    return {"": counts([lookup[m.astype(np.intp)] for m in maps], 60)}


def camvid_truth(root: Path, ids: list[str]) -> dict[str, np.ndarray]:
    """Label colours are the csv's rows in class order; Void's colour is not counted."""
    colour_class = {c: i for i, (_, c) in enumerate(CAMVID11[:-1])}
    labels = []
    for i in ids:
        rgb = np.asarray(Image.open(root / "val_labels" / f"{i}_L.png").convert("RGB"))
        flat = [colour_class.get(tuple(int(v) for v in p), -1) for p in rgb.reshape(-1, 3)]
        labels.append(np.array(flat))
    return {"": counts(labels, 11)}


def folder_truth(root: Path, ids: list[str]) -> dict[str, np.ndarray]:
    """Mask values are the classes; 255 is void."""
    masks = [np.asarray(Image.open(root / "masks" / "val" / f"{i}.png")) for i in ids]
    assert all(np.isin(m, [*range(FOLDER_N_CLASS), 255]).all() for m in masks)
    return {"": counts(masks, FOLDER_N_CLASS)}


# --- the cases ----------------------------------------------------------------------------------


def random_state_dict(*args, **kwargs) -> dict[str, torch.Tensor]:
    """:func:`fcn_jax.torch_reference.random_state_dict`, torch imported when a case is run."""
    from fcn_jax.torch_reference import random_state_dict

    return random_state_dict(*args, **kwargs)


@dataclasses.dataclass(frozen=True)
class Case:
    config: str
    split: str
    splits: dict[str, dict[str, tuple[int, int]]]
    write: Callable[[Path], object]  # writes the tree under a root
    truth: Callable[[Path, list[str]], dict[str, np.ndarray]]  # metric set -> class counts
    names: Callable[[], dict[str, list[str]]]  # metric set -> class names
    state: Callable[[], dict[str, torch.Tensor]]  # the random torchfcn state dict
    args: tuple[str, ...] = ()

    @property
    def ids(self) -> list[str]:
        return list(self.splits[self.split])


def nyud_case(config: str, arch: str, streams: tuple[str, ...] = (), hha: bool = True) -> Case:
    return Case(
        config=config,
        split="test",
        splits=NYUD_SPLITS,
        write=lambda root: write_nyud_tree(root, NYUD_SPLITS, hha=hha, seed=1),
        truth=nyud_truth,
        names=lambda: {"": nyud_names()},
        state=lambda: random_state_dict(arch, 40, NARROW, seed=5, streams=streams),
    )


CASES = {
    # RGB only: the tree has no data/hha at all, which RGB evaluation must not need.
    "nyud_rgb": nyud_case("nyud_fcn32s_rgb", "fcn32s", hha=False),
    "nyud_hha": nyud_case("nyud_fcn32s_hha", "fcn32s"),
    "nyud_rgbhha": nyud_case("nyud_fcn16s_rgbhha", "fcn16s", streams=("color", "hha")),
    "siftflow": Case(
        config="siftflow_fcn16s",
        split="test",
        splits=SIFTFLOW_SPLITS,
        write=lambda root: write_siftflow_tree(root, SIFTFLOW_SPLITS, seed=2),
        truth=siftflow_truth,
        names=lambda: {"semantic": SIFTFLOW_SEMANTIC, "geometric": GEOMETRIC},
        state=lambda: random_state_dict(
            "fcn16s", 33, NARROW, seed=6, heads=(("sem", 33), ("geo", 3))
        ),
    ),
    "context": Case(
        config="context_fcn8s",
        split="val",
        splits=CONTEXT_SPLITS,
        write=lambda root: write_context_tree(root, CONTEXT_SPLITS, seed=3),
        truth=context_truth,
        names=lambda: {"": ["background", *context_names()[1]]},
        state=lambda: random_state_dict("fcn8s", 60, NARROW, seed=7),
    ),
    "camvid": Case(
        config="camvid_fcn8s",
        split="val",
        splits=CAMVID_SPLITS,
        write=lambda root: write_camvid_tree(root, CAMVID_SPLITS, rows=CAMVID11, seed=4),
        truth=camvid_truth,
        names=lambda: {"": [name for name, _ in CAMVID11[:-1]]},
        state=lambda: random_state_dict("fcn8s", 11, NARROW, seed=8),
    ),
    "folder": Case(
        config="folder_fcn8s",
        split="val",
        splits=FOLDER_SPLITS,
        write=lambda root: write_mask_tree(root, FOLDER_SPLITS, FOLDER_N_CLASS, seed=5),
        truth=folder_truth,
        names=lambda: {"": [f"class_{i}" for i in range(FOLDER_N_CLASS)]},
        state=lambda: random_state_dict("fcn8s", FOLDER_N_CLASS, NARROW, seed=9),
        args=(f"--config.model.n_class={FOLDER_N_CLASS}",),
    ),
}


def run_eval(config: str, weights: Path, root: Path, split: str, *args: object):
    return subprocess.run(
        [
            sys.executable,
            str(REPO / "eval.py"),
            "--config",
            str(REPO / "configs" / f"{config}.py"),
            "--weights",
            str(weights),
            f"--config.data.root={root}",
            f"--config.data.eval_split={split}",
            *map(str, args),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )


@pytest.fixture(scope="module")
def prepared(request, tmp_path_factory) -> tuple[Case, Path, Path]:
    """(case, tree root, .pth) for the case named by the parameter, written once per module."""
    import torch

    case = CASES[request.param]
    root = tmp_path_factory.mktemp(request.param)
    case.write(root)
    pth = tmp_path_factory.mktemp(f"{request.param}_weights") / "fcn.pth"
    torch.save(case.state(), pth)
    return case, root, pth


def check_metrics(metrics: dict, names: list[str], truth: np.ndarray, where: str) -> None:
    """One metric set: keys, class names in order, and ground-truth rows of the confusion."""
    assert set(metrics) >= METRIC_KEYS, (where, sorted(metrics))
    for key in PER_CLASS:
        assert list(metrics[key]) == names, (where, key)
    for key in SCALARS:
        assert metrics[key] is not None and 0 <= metrics[key] <= 1, (where, key, metrics[key])
    hist = np.array(metrics["confusion_matrix"], np.int64)
    assert hist.shape == (len(names), len(names)), where
    # Rows are ground truth: their sums are the labelled pixels of each class, void left out.
    np.testing.assert_array_equal(hist.sum(1), truth, err_msg=where)
    assert hist.sum() == truth.sum() > 0, where
    # The random network predicts several classes: agreeing with PyTorch is then no accident.
    assert np.count_nonzero(hist.sum(0)) > 1, where
    assert np.isclose(metrics["pixel_acc"], np.trace(hist) / hist.sum()), where


PARAMS = list(CASES)


@pytest.mark.torch
@pytest.mark.parametrize("prepared", PARAMS, indirect=True)
def test_eval_against_torch(prepared, tmp_path: Path) -> None:
    case, root, pth = prepared
    out = tmp_path / "metrics.json"
    r = run_eval(case.config, pth, root, case.split, *case.args, "--out", out, "--against-torch")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "Traceback" not in r.stderr, r.stderr
    result = json.loads(out.read_text())
    names, truth = case.names(), case.truth(root, case.ids)
    assert result["n_images"] == len(case.ids)
    assert result["seconds"] > 0
    reference = result["torch"]
    assert 0.999 < reference["pixel_agreement"] <= 1
    if list(names) == [""]:  # one head: the metrics at the top level
        assert set(result) >= METRIC_KEYS | {"n_images", "seconds", "torch"}
        check_metrics(result, names[""], truth[""], "jax")
        check_metrics(reference, names[""], truth[""], "torch")
        assert set(reference) == METRIC_KEYS | {"pixel_agreement"}
        assert abs(reference["mean_iou"] - result["mean_iou"]) <= 1e-3
    else:  # SIFT Flow: one metric set per head
        assert set(result) >= set(names) | {"n_images", "seconds", "torch"}
        assert not set(result) & METRIC_KEYS, sorted(result)
        assert set(reference) == set(names) | {"pixel_agreement"}
        for head, head_names in names.items():
            check_metrics(result[head], head_names, truth[head], head)
            check_metrics(reference[head], head_names, truth[head], f"torch {head}")
            assert abs(reference[head]["mean_iou"] - result[head]["mean_iou"]) <= 1e-3, head
        assert "== semantic ==" in r.stdout and "== geometric ==" in r.stdout
    assert "pixel agreement" in r.stdout


def test_rgbhha_without_hha_fails_cleanly(tmp_path: Path) -> None:
    """A two-stream eval on a tree without data/hha names the missing HHA files, no traceback."""
    root = tmp_path
    write_nyud_tree(root, NYUD_SPLITS, hha=False)
    meta = metadata_for(
        "fcn16s", 40, NARROW, (NYUD_RGB, NYUD_HHA), inputs=("image", "hha"),
        streams=("color", "hha"),
    )  # fmt: skip
    weights = save_random_weights(root / "rgbhha", meta, seed=5)
    r = run_eval("nyud_fcn16s_rgbhha", weights, root, "test", "--out", root / "m.json")
    assert r.returncode == 2, (r.returncode, r.stderr[-3000:])
    assert "Traceback" not in r.stderr, r.stderr
    assert "HHA" in r.stderr and str(root / "data" / "hha" / "img_5001.png") in r.stderr, r.stderr
    assert not (root / "m.json").exists()
