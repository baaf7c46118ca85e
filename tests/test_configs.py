"""Every experiment config: the shared schema, its model (shapes only), its smoke variant."""

import json
import math
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from fcn_jax.checkpoint import load_metadata, save_weights
from fcn_jax.cli import config_keys
from fcn_jax.configs import (
    load_config_file,
    resolve_n_class,
    resolve_num_steps,
    spec_from_config,
)
from fcn_jax.data import make_dataset
from fcn_jax.errors import FCNError
from fcn_jax.models import abstract_variables
from fcn_jax.models.spec import ARCHS
from fcn_jax.preprocessing import SPEEDPAPER_GREY, TORCHVISION
from tests.utils import REPO, metadata_for, run_script, write_camvid_tree, write_mask_tree

CONFIGS = sorted(p.stem for p in (REPO / "configs").glob("*.py"))
# Configs whose data names its classes (class_dict.csv, classes.txt): model.n_class unset.
FROM_DATA = {"camvid_fcn8s", "camvid_fcn8s_adam", "camvid_speedpaper", "folder_fcn8s"}
# Recipes that start from scratch as their original does (the others start from weights).
FROM_SCRATCH = {"folder_speedpaper"}
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
    # torchvision's model cards (aux head included): 35,322,218 and 54,314,346.
    "fcn_resnet50": 35_322_218,
    "fcn_resnet101": 54_314_346,
}
FCN_RESNETS = {"voc_fcn_resnet50", "voc_fcn_resnet101"}
# torchvision's own runs behind its published FCN-ResNet weights: COCO's VOC categories.
COCO_FCN_RESNETS = {"coco_fcn_resnet50", "coco_fcn_resnet101"}


def load(name, arg=None):
    return load_config_file(REPO / "configs" / f"{name}.py", arg)


def load_resolved(name):
    """The config with a class count, as train and eval have it once the dataset is made."""
    c = load(name)
    if c.model.n_class is None:
        c.model.n_class = 11  # what resolve_n_class takes from e.g. the seed's class_dict.csv
    return c


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
    assert c.model.arch in ARCHS
    # One schema for all: every config has the same keys.
    assert config_keys(c) == config_keys(load("voc_fcn32s"))


@pytest.mark.parametrize("name", CONFIGS)
def test_builds_its_model(name):
    c = load_resolved(name)
    params = abstract_variables(spec_from_config(c))["params"]  # shapes only, no init
    count = sum(math.prod(x.shape) for x in jax.tree.leaves(params))
    if name.startswith("voc_"):
        assert (c.model.width, c.model.n_class, c.data.name) == (1.0, 21, "voc")
        assert count == PARAMS[c.model.arch]
        batch = 32 if name in FCN_RESNETS else 1  # torchvision's 8 GPUs x 4; the paper's 1
        assert (c.data.split, c.data.eval_split, c.batch_size) == ("sbd_train", "seg11valid", batch)
    elif name in COCO_FCN_RESNETS:  # torchvision's network and batch, on COCO's VOC classes
        assert (c.model.width, c.model.n_class, c.data.name) == (1.0, 21, "coco_voc")
        assert count == PARAMS[c.model.arch]
        assert (c.data.split, c.data.eval_split, c.batch_size) == ("train2017", "val2017", 32)
    elif name.startswith("synthetic"):
        assert count < 10_000_000
    elif c.model.arch == "speedpaper":  # vgg16_bn's features, no fc6/fc7, feature-map fusion
        n = c.model.n_class
        trunk = 14_714_688 + 2 * 4_224  # 13 convs + a BatchNorm scale and bias per channel
        head = 512 * 512 * 16 + (512 * 256 + 256) + 256 * 256 * 16 + (256 * n + n) + n * n * 256
        assert (c.model.width, c.model.backbone, count) == (1.0, "vgg16_bn", trunk + head)
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
        "voc_fcn_resnet50": 0.02,
        "voc_fcn_resnet101": 0.02,
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
    model = spec_from_config(c)
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
        match=r"unknown dataset 'imagenet'.*'camvid', 'coco_voc', 'context', 'folder', 'nyud', "
        r"'sbd', 'siftflow', 'synthetic', 'tfds', 'voc'",
    ):
        make_dataset(c, "train")


@pytest.mark.parametrize("name", CONFIGS)
def test_builds_its_train_state(name):
    from fcn_jax.train.optim import make_optimizer
    from fcn_jax.train.step import create_train_state

    c = load_resolved(name)
    variables = abstract_variables(spec_from_config(c))
    params = variables["params"]
    tx = make_optimizer(c, params, steps_per_epoch=100)
    state = jax.eval_shape(lambda v: create_train_state(v, tx, c.seed), variables)
    assert jax.tree.structure(state.params) == jax.tree.structure(params)
    assert jax.tree.structure(state.variables) == jax.tree.structure(variables)
    assert int(np.prod(state.step.shape)) == 1
    # Paper configs start from weights; SpeedPaper's second version from scratch, as it does.
    assert bool(c.init.from_) != (name.startswith("synthetic") or name in FROM_SCRATCH)


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


# --- the class count from the data ----------------------------------------------------------------

FOLDER_SPLITS = {"train": {"a": (24, 24)}, "val": {"b": (24, 24)}}
CAMVID_ROWS = (("Road", (128, 64, 128)), ("Car", (64, 0, 128)), ("Sky", (128, 128, 128)))
CAMVID_ROWS += (("Void", (0, 0, 0)),)


def test_class_count_comes_from_the_data(tmp_path):
    assert {n for n in CONFIGS if load(n).model.n_class is None} == FROM_DATA
    write_mask_tree(tmp_path / "f", FOLDER_SPLITS, 5, classes=list("abcde"))
    write_camvid_tree(tmp_path / "c", FOLDER_SPLITS, rows=CAMVID_ROWS)
    for name, root, n_class in (("folder_fcn8s", "f", 5), ("camvid_fcn8s", "c", 3)):
        c = load(name)
        c.data.root = str(tmp_path / root)
        with pytest.raises(FCNError, match=r"config\.model\.n_class is not set"):
            spec_from_config(c)
        dataset = make_dataset(c, "train")
        resolved = resolve_n_class(c, dataset)
        assert resolved.model.n_class == n_class and c.model.n_class is None  # a copy
        assert spec_from_config(resolved).n_class == n_class
        c.model.n_class = n_class  # set and right: kept
        assert resolve_n_class(c, dataset).model.n_class == n_class
    # Set and wrong: the data says how many, the error which key to fix.
    c = load("synthetic_fcn8s")  # n_class=5
    dataset = make_dataset(load("synthetic_fcn8s", "smoke"), "val")
    c.model.n_class = 7
    with pytest.raises(FCNError, match=r"config\.model\.n_class is 7 but .* has 5 classes"):
        resolve_n_class(c, dataset)


def test_smoke_of_a_from_data_config_has_a_class_count():
    # The smoke variant reads synthetic data, which has no class file: it needs a count.
    for name in FROM_DATA:
        c = load(name, "smoke")
        assert c.model.n_class == make_dataset(c, "train").n_class == 5


def data_args(name, root):
    """Command-line arguments of a tool reading ``name``'s data at ``root``, n_class unset."""
    return [
        "--config", REPO / "configs" / f"{name}.py", f"--config.data.root={root}",
        "--config.model.width=0.0625", "--config.model.arch=fcn32s",  # the quickest to compile
    ]  # fmt: skip


def run_stats(name, root):
    return subprocess.run(
        [sys.executable, "-m", "fcn_jax.data.stats", *map(str, data_args(name, root)[:3])],
        capture_output=True, text=True, cwd=REPO, timeout=120, check=False,
    )  # fmt: skip


def test_folder_config_trains_evaluates_stats_without_n_class(tmp_path):
    root = tmp_path / "data"
    write_mask_tree(root, FOLDER_SPLITS, 5, classes=list("abcde"))
    args = data_args("folder_fcn8s", root)
    r = run_script(
        "train.py", *args, "--workdir", tmp_path / "run", "--config.init.from_=None",
        "--config.num_steps=1", "--config.eval_every=1", "--config.checkpoint_every=1",
        timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "fcn32s, 5 classes" in r.stderr  # the run's summary: the count from classes.txt
    assert load_metadata(tmp_path / "run").class_names == tuple("abcde")
    out = tmp_path / "m.json"
    r = run_script("eval.py", *args, "--weights", tmp_path / "run", "--out", out)
    assert r.returncode == 0, r.stderr
    assert list(json.loads(out.read_text())["per_class_iou"]) == list("abcde")
    r = run_stats("folder_fcn8s", root)
    assert r.returncode == 0, r.stderr
    assert "RGB 0-255" in r.stdout


def test_camvid_config_evaluates_stats_without_n_class(tmp_path):
    # (Training reads the config through the same resolve_n_class: see the folder test.)
    root = tmp_path / "data"
    write_camvid_tree(root, FOLDER_SPLITS, rows=CAMVID_ROWS)
    names = ("Road", "Car", "Sky")
    meta = metadata_for("fcn32s", 3, 0.0625, TORCHVISION, class_names=names)
    leaves, tree = jax.tree.flatten(abstract_variables(meta.spec)["params"])
    params = jax.tree.unflatten(tree, [np.zeros(x.shape, np.float32) for x in leaves])
    save_weights(tmp_path / "w", {"params": params}, meta)
    out = tmp_path / "m.json"
    args = data_args("camvid_fcn8s", root)
    r = run_script("eval.py", *args, "--weights", tmp_path / "w", "--out", out)
    assert r.returncode == 0, r.stderr
    assert list(json.loads(out.read_text())["per_class_iou"]) == list(names)
    r = run_stats("camvid_fcn8s", root)
    assert r.returncode == 0, r.stderr
    assert "CamVid(split='train', 1 images, 3 classes)" in r.stdout


# --- SpeedPaper's recipes ------------------------------------------------------------------------


def test_speedpaper_recipes():
    v1, v2 = load("camvid_speedpaper"), load("folder_speedpaper")
    for c in (v1, v2):
        assert (c.model.arch, c.model.backbone, c.model.learn_upsampling) == (
            "speedpaper", "vgg16_bn", True,
        )  # fmt: skip
        assert (c.optim.name, c.optim.loss, c.optim.weight_decay, c.optim.bias_lr_mult) == (
            "adam", "mean", 0.0, 1.0,
        )  # fmt: skip
    assert (v1.data.name, v1.data.void_as_class) == ("camvid", True)
    assert v1.data.centre_crop == (352, 480)
    assert (v1.data.preprocessing, v1.batch_size, v1.learning_rate) == ("torchvision", 2, 1e-4)
    assert (v1.optim.lr_halve_every_epochs, v1.optim.lr_milestone_epochs) == (50, None)
    assert v1.init.from_ == "weights/vgg16_bn.pth"
    assert (v2.data.name, v2.data.preprocessing, v2.model.n_class) == (
        "folder", "speedpaper-grey", 5,
    )  # fmt: skip
    assert (v2.batch_size, v2.num_epochs, v2.learning_rate) == (8, 100, 0.01)
    assert (v2.optim.lr_milestone_epochs, v2.optim.lr_gamma) == ((50, 80), 0.1)
    assert v2.init.from_ is None and not v2.data.void_as_class and v2.data.centre_crop is None
    spec = spec_from_config(v2)
    assert spec.arch == "speedpaper" and spec.batch_norm and spec.n_class == 5
    assert spec.preprocessing[0] == SPEEDPAPER_GREY
    assert spec_from_config(load_resolved("camvid_speedpaper")).preprocessing[0] == TORCHVISION


def test_speedpaper_schedules_over_their_epochs():
    from fcn_jax.train.optim import learning_rate_schedule

    v1 = resolve_num_steps(load("camvid_speedpaper"), 183)  # 367 CamVid images, batch 2
    assert v1.num_steps == 200 * 183
    lr = learning_rate_schedule(v1, 183)
    assert [float(lr(e * 183)) for e in (0, 49, 50, 100, 150, 199)] == pytest.approx(
        [1e-4, 1e-4, 5e-5, 2.5e-5, 1.25e-5, 1.25e-5]
    )
    v2 = resolve_num_steps(load("folder_speedpaper"), 10)
    assert v2.num_steps == 1_000
    lr = learning_rate_schedule(v2, 10)
    assert [float(lr(s)) for s in (0, 499, 500, 799, 800, 999)] == pytest.approx(
        [1e-2, 1e-2, 1e-3, 1e-3, 1e-4, 1e-4]
    )


def test_resolve_num_steps():
    c = load("voc_fcn8s")
    assert c.num_epochs is None and resolve_num_steps(c, 7) is c  # num_steps decides
    c.num_epochs = 3
    resolved = resolve_num_steps(c, 7)
    assert resolved.num_steps == 21 and c.num_steps == 100_000  # a copy
    c.num_epochs = 0
    with pytest.raises(FCNError, match=r"config\.num_epochs=0 must be >= 1"):
        resolve_num_steps(c, 7)
    assert load("folder_speedpaper", "smoke").num_epochs is None  # smoke runs count steps
    assert load("camvid_speedpaper", "smoke").data.centre_crop is None


# The seed's CamVid csv shape: classes, then the void row (trained as class 3 here).
SPEEDPAPER_ROWS = (("Sky", (128, 128, 128)), ("Road", (128, 64, 128)), ("Car", (64, 0, 128)))
SPEEDPAPER_ROWS += (("Unlabelled", (0, 0, 0)),)
# A tiny, narrow run: 2 training images = 1 step per epoch at batch 2.
TINY_RUN = ("--config.model.width=0.0625", "--config.init.from_=None", "--config.num_epochs=1")
TINY_RUN += ("--config.eval_every=1", "--config.checkpoint_every=1")


def test_camvid_speedpaper_trains_on_colour_labels_with_void_as_class(tmp_path):
    root = tmp_path / "camvid"
    splits = {"train": {"a": (40, 70), "b": (36, 66)}, "val": {"c": (40, 70)}}
    write_camvid_tree(root, splits, rows=SPEEDPAPER_ROWS)
    r = run_script(
        "train.py", "--config", REPO / "configs/camvid_speedpaper.py", "--workdir",
        tmp_path / "run", f"--config.data.root={root}", "--config.data.centre_crop=(32,64)",
        *TINY_RUN, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "speedpaper, 4 classes" in r.stderr and "0 -> 1:" in r.stderr  # 1 epoch = 1 step
    meta = load_metadata(tmp_path / "run")
    assert meta.class_names == ("Sky", "Road", "Car", "Unlabelled")
    assert (meta.spec.arch, meta.spec.backbone, meta.preprocessing) == (
        "speedpaper", "vgg16_bn", TORCHVISION,
    )  # fmt: skip


def test_folder_speedpaper_trains_on_grey_index_masks(tmp_path):
    root = tmp_path / "dagm"
    splits = {"train": {"a": (64, 64), "b": (48, 40)}, "val": {"c": (50, 64)}}
    write_mask_tree(root, splits, 5, image_ext=".png")
    rng = np.random.default_rng(0)
    for split, sizes in splits.items():  # grey images, as the defect data's
        for stem, shape in sizes.items():
            grey = rng.integers(0, 256, shape, dtype=np.uint8)
            Image.fromarray(grey, "L").save(root / "images" / split / f"{stem}.png")
    r = run_script(
        "train.py", "--config", REPO / "configs/folder_speedpaper.py", "--workdir",
        tmp_path / "run", f"--config.data.root={root}", "--config.batch_size=2",
        "--config.eval.batch_size=1", *TINY_RUN, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "speedpaper, 5 classes" in r.stderr and "0 -> 1:" in r.stderr
    meta = load_metadata(tmp_path / "run")
    assert meta.preprocessing == SPEEDPAPER_GREY and meta.class_names[0] == "class_0"


@pytest.mark.parametrize("data", ["voc", "coco"])
@pytest.mark.parametrize("depth", [50, 101])
def test_fcn_resnet_recipes(depth, data):
    # torchvision's references/segmentation: train.py --model fcn_resnet{depth} --aux-loss,
    # on VOC + SBD or on COCO (--dataset coco: its published weights' data).
    c = load(f"{data}_fcn_resnet{depth}")
    assert (c.model.arch, c.model.backbone, c.model.aux) == (
        f"fcn_resnet{depth}",
        f"resnet{depth}",
        True,
    )
    o = c.optim
    assert (o.name, o.momentum, o.weight_decay, o.decay_biases, o.bias_lr_mult) == (
        "sgd", 0.9, 1e-4, True, 1.0,
    )  # fmt: skip
    assert (c.learning_rate, c.batch_size, c.num_epochs, o.lr_poly_power) == (0.02, 32, 30, 0.9)
    assert (o.loss, o.aux_loss_weight, o.lr_mults) == ("mean", 0.5, (("aux_classifier/", 10.0),))
    d = c.data
    assert (d.resize_range, d.crop_size, d.flip, d.preprocessing) == (
        (260, 1040), 480, True, "torchvision",
    )  # fmt: skip
    assert (c.eval.resize, c.init.from_) == (520, f"weights/resnet{depth}.pth")
    assert not c.model.freeze_bn  # statistics over the global batch, SyncBatchNorm's
    spec = spec_from_config(c)
    assert spec.aux and spec.batch_norm and spec.preprocessing[0] == TORCHVISION
    if data == "coco":  # the same recipe, only the data differs
        voc = load(f"voc_fcn_resnet{depth}")
        for section in ("model", "optim", "init", "eval"):
            assert c[section].to_dict() == voc[section].to_dict(), section
        assert (c.data.name, c.data.split, c.data.eval_split, c.data.max_size) == (
            "coco_voc", "train2017", "val2017", 640,
        )  # fmt: skip
    smoke = load(f"{data}_fcn_resnet{depth}", "smoke")
    assert (smoke.model.aux, smoke.data.crop_size, smoke.eval.resize, smoke.batch_size) == (
        True, 64, 64, 4,
    )  # fmt: skip
