"""reproduce.py end to end on generated datasets, the paper's data file, and the timing helpers.

The generated trees are in the real on-disk formats but hold noise and random networks, so the
figures are meaningless: the tests check the mechanics (which rows are evaluated, missing or n/a,
diff = ours - paper, the report's layout and files), never that a number is good.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from fcn_jax.checkpoint import WeightsMetadata, save_weights
from fcn_jax.errors import FCNError
from fcn_jax.models import NetSpec
from fcn_jax.paper.tables import load_tables, parse_tables
from fcn_jax.preprocessing import CAFFE_VOC, SIFTFLOW
from fcn_jax.resources import default_class_names
from tests.utils import REPO, random_weights, run_script, write_siftflow_tree, write_voc_tree

WIDTH = 0.0625  # narrow random networks: the report must take the width from the weights
# Two images share a size, so each network compiles twice, not three times.
VOC_SIZES = {"2007_000033": (40, 52), "2007_000042": (40, 52), "2008_000001": (33, 27)}
SIFTFLOW_SPLITS = {"test": {"coast_arnat59": (48, 48), "street_par151": (48, 48)}}

# The paper's figures as FCN_FACTS.md gives them, typed in independently of the data file.
FACTS = [
    ("1", "FCN-VGG16", {"mean_iou": 56.0, "forward_ms": 210}),
    ("1", "FCN-AlexNet", {"mean_iou": 39.8, "forward_ms": 50}),
    ("2", "FCN-32s-fixed", {"pixel_acc": 83.0, "mean_acc": 59.7, "mean_iou": 45.4, "fw_iou": 72.0}),
    ("2", "FCN-8s", {"pixel_acc": 90.3, "mean_acc": 75.9, "mean_iou": 62.7, "fw_iou": 83.2}),
    ("3", "FCN-8s", {"voc2011_test.mean_iou": 62.7, "voc2012_test.mean_iou": 62.2, "forward_ms": 175}),  # noqa: E501
    ("4", "FCN-32s RGBD", {"pixel_acc": 61.5, "mean_acc": 42.4, "mean_iou": 30.5, "fw_iou": 45.5}),
    ("4", "FCN-16s RGB-HHA", {"pixel_acc": 65.4, "mean_acc": 46.1, "mean_iou": 34.0, "fw_iou": 49.5}),  # noqa: E501
    (
        "5",
        "FCN-16s",
        {
            "semantic.pixel_acc": 85.2,
            "semantic.mean_acc": 51.7,
            "semantic.mean_iou": 39.5,
            "semantic.fw_iou": 76.1,
            "geometric.pixel_acc": 94.3,
        },
    ),
    ("6", "FCN-8s", {"pixel_acc": 65.9, "mean_acc": 46.5, "mean_iou": 35.1, "fw_iou": 51.0}),
    ("release", "FCN-32s", {"mean_iou": 63.6}),
    ("release", "FCN-8s-atonce", {"mean_iou": 65.4}),
    # torchvision's model cards (FCN_ResNet50/101_Weights.COCO_WITH_VOC_LABELS_V1 _metrics).
    ("torchvision", "FCN-ResNet50", {"pixel_acc": 91.4, "mean_iou": 60.5}),
    ("torchvision", "FCN-ResNet101", {"pixel_acc": 91.9, "mean_iou": 63.7}),
]  # fmt: skip


def run(*args: object) -> subprocess.CompletedProcess:
    return run_script("reproduce.py", *args)


def save_random_weights(
    directory: Path, arch: str, n_class: int, seed: int, heads: tuple = ()
) -> None:
    """A weights directory of a random narrow network (every layer random, He-scaled), with the
    metadata a converted torchfcn checkpoint of it gets (SIFT Flow's for the two-head net)."""
    names = default_class_names(n_class)
    if heads:
        geometric = ("sky", "horizontal", "vertical")
        spec = NetSpec(arch=arch, heads=heads, width=WIDTH, preprocessing=(SIFTFLOW,))
        metadata = WeightsMetadata(spec, names, head_class_names=(geometric,))
    else:
        spec = NetSpec.single(arch, n_class, width=WIDTH, preprocessing=(CAFFE_VOC,))
        metadata = WeightsMetadata(spec, names)
    save_weights(directory, random_weights(metadata.spec, seed), metadata)


def table_lines(stdout: str) -> dict[str, list[str]]:
    """Row name -> cells of the printed markdown table."""
    rows = {}
    for line in stdout.splitlines():
        if (
            line.startswith("| ")
            and not line.startswith("| ---")
            and not line.startswith("| model")
        ):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            rows[cells[0]] = cells
    return rows


def header(stdout: str) -> list[str]:
    line = next(line for line in stdout.splitlines() if line.startswith("| model"))
    return [c.strip() for c in line.strip("|").split(" | ")]


@pytest.fixture(scope="module")
def voc(tmp_path_factory) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """(VOC root, weights folder, labels): FCN-32s as a weights directory (under its second
    name, voc_fcn32s); every other row's weights absent."""
    root = tmp_path_factory.mktemp("pascal")
    labels = write_voc_tree(root, VOC_SIZES, split="seg11valid")
    weights = tmp_path_factory.mktemp("weights")
    save_random_weights(weights / "voc_fcn32s", "fcn32s", 21, seed=1)
    return root, weights, labels


# --- the data file ------------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "name", "expected"), FACTS)
def test_data_file_holds_the_papers_figures(key, name, expected):
    row = next(r for r in load_tables()[key].rows if r.name == name)
    assert row.paper == pytest.approx(expected, abs=0), row.paper


def test_data_file_tables_and_rows():
    tables = load_tables()
    assert set(tables) == {"1", "2", "3", "4", "5", "6", "release", "torchvision"}
    for key in "123456":
        assert "CVPR 2015" in tables[key].source, key  # labelled with the paper version
    release = {r.name: r for r in tables["release"].rows}
    assert release["FCN-8s"].references == {
        "torchfcn (trained)": {"mean_iou": 65.49},
        "torchfcn (release)": {"mean_iou": 65.51},
    }
    # Rows the suite cannot produce say why; Table 3 is all of them.
    assert not tables["3"].producible_rows
    assert all("evaluation server" in r.na for r in tables["3"].rows)
    na = {r.name for r in tables["1"].rows if not r.producible}
    assert na == {"FCN-AlexNet", "FCN-GoogLeNet"}
    assert not next(r for r in tables["4"].rows if r.name == "FCN-32s RGBD").producible
    # torchvision's rows take its published files under their download names (no .pth).
    assert [r.weights for r in tables["torchvision"].rows] == [
        ("coco_fcn_resnet50", "fcn_resnet50_coco-1167a1af"),
        ("coco_fcn_resnet101", "fcn_resnet101_coco-7ecb50ca"),
    ]


def test_every_producible_row_names_a_config_of_the_tables_split():
    from fcn_jax.configs import load_config_file

    for table in load_tables().values():
        for row in table.producible_rows:
            config = load_config_file(REPO / "configs" / f"{row.config}.py")
            assert config.data.eval_split == table.split, (table.key, row.name)
            assert row.weights[0] == row.config, (table.key, row.name)


def test_docs_name_every_rows_config_and_weights():
    """docs/reproducing.md's table of expected names must not drift from the data file."""
    docs = (REPO / "docs" / "reproducing.md").read_text()
    for table in load_tables().values():
        for row in table.producible_rows:
            line = f"| {table.key} | {row.name} | `{row.config}` | "
            names = ", then ".join(f"`{name}`" for name in row.weights)
            assert f"{line}{names} |" in docs, (table.key, row.name)
            assert f"--config configs/{row.weights[0]}.py" in docs  # its training command


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t["rows"][0].update(paper={"mean_iou": 1, "pixel_acc": 2}), "not columns"),
        (lambda t: t["rows"][0].update(na="why"), "either config and weights, or na"),
        (lambda t: t["rows"][0].pop("config"), "either config and weights, or na"),
        (lambda t: t.update(columns=["mean_iou", "miou"]), "unknown columns ['miou']"),
        # The timing column belongs to no metric set.
        (lambda t: t.update(columns=["x.forward_ms"]), "unknown columns ['x.forward_ms']"),
        (lambda t: t["rows"][0].update(paper={"mean_iou": "56"}), "is not a number"),
        (lambda t: t.pop("split"), "lacks ['split']"),
        (lambda t: t["rows"].append(dict(t["rows"][0])), "row names must be unique"),
    ],
)
def test_bad_data_file_is_refused(change, message):
    table = {
        "title": "t",
        "source": "s",
        "dataset": "d",
        "split": "seg11valid",
        "data_root": "r",
        "columns": ["mean_iou"],
        "rows": [
            {"name": "FCN-8s", "config": "voc_fcn8s", "weights": ["w"], "paper": {"mean_iou": 1}}
        ],
    }
    parse_tables({"tables": {"9": table}})  # valid as written
    change(table)
    with pytest.raises(FCNError, match=re.escape(message)):
        parse_tables({"tables": {"9": table}})


def test_report_layout_with_references_and_test_server_columns():
    """The release table in-process: torchfcn's columns, and a column only one row has."""
    from fcn_jax.paper.report import Report, RowResult

    table = load_tables()["release"]
    results = [
        RowResult(r, "evaluated", {"mean_iou": 65.0}, "voc_fcn8s/", "", 736, 60.0)
        if r.name == "FCN-8s"
        else RowResult(r, "n/a" if r.na else "missing", detail="why")
        for r in table.rows
    ]
    report = Report(table, tuple(results), device="cpu", weights_dir="w", data_root="d")
    text = report.to_markdown()
    assert header(text) == [
        "model",
        "mean IU paper",
        "mean IU torchfcn (trained)",
        "mean IU torchfcn (release)",
        "mean IU ours",
        "mean IU diff",
        "VOC2012 test mean IU paper",
        "VOC2012 test mean IU ours",
        "VOC2012 test mean IU diff",
        "weights / status",
    ]
    cells = table_lines(text)
    assert cells["FCN-8s"] == [
        "FCN-8s", "65.5", "65.49", "65.51", "65.00", "-0.50", "", "", "",
        "`voc_fcn8s/`, 736 images, 60 s",
    ]  # fmt: skip
    assert cells["FCN-8s-atonce"][3] == "65.40"  # torchfcn's precision kept
    assert cells["FCN-8s, VOC2012 test"][4:8] == ["", "", "67.2", "n/a"]
    (row,) = [r for r in report.to_json()["rows"] if r["status"] == "evaluated"]
    assert row["diff"] == {"mean_iou": pytest.approx(-0.5)}


# --- end to end -----------------------------------------------------------------------------------


def reference_figures(pth: Path, root: Path, labels: dict[str, np.ndarray]) -> dict[str, float]:
    """Pixel acc and mean IU (percent) of a torchfcn .pth on the VOC tree, via our PyTorch FCN."""
    import torch
    from PIL import Image

    from fcn_jax.eval.metrics import compute_metrics
    from fcn_jax.resources import voc_class_names
    from fcn_jax.torch_reference import TorchFCN

    state = torch.load(pth, weights_only=True)["model_state_dict"]
    net = TorchFCN("fcn8s", 21, WIDTH).eval()
    net.load_state_dict(state)
    hist = np.zeros((21, 21), np.int64)
    for sample_id, label in labels.items():
        image = np.asarray(Image.open(root / "VOCdevkit/VOC2012/JPEGImages" / f"{sample_id}.jpg"))
        x = np.asarray(CAFFE_VOC.apply(image[None]), np.float32).transpose(0, 3, 1, 2)
        with torch.no_grad():
            pred = net(torch.from_numpy(np.ascontiguousarray(x))).argmax(1)[0].numpy()
        valid = label < 21
        hist += np.bincount(21 * label[valid].astype(int) + pred[valid], minlength=441).reshape(
            21, 21
        )
    metrics = compute_metrics(hist, voc_class_names())
    return {"pixel_acc": 100 * metrics.pixel_acc, "mean_iou": 100 * metrics.mean_iou}


@pytest.mark.torch
def test_table2_evaluates_present_rows_and_reports_missing_ones(voc, tmp_path):
    import torch

    from fcn_jax.torch_reference import random_state_dict

    root, shared, labels = voc
    # FCN-32s as a weights directory, FCN-8s as a torchfcn .pth (converted on the fly);
    # FCN-32s-fixed and FCN-16s absent.
    weights = tmp_path / "weights"
    shutil.copytree(shared, weights)
    torch.save(
        {"model_state_dict": random_state_dict("fcn8s", 21, WIDTH, seed=2), "arch": "FCN8s"},
        weights / "voc_fcn8s.pth",
    )
    out = tmp_path / "out"
    r = run("--table", 2, "--data-root", root, "--weights-dir", weights, "--out", out)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    # The report on stdout is the markdown file, progress on stderr.
    assert (out / "table_2.md").read_text() == r.stdout
    assert "eval" in r.stderr and "[2/2] FCN-8s" in r.stderr
    report = json.loads((out / "table_2.json").read_text())
    rows = {row["name"]: row for row in report["rows"]}
    assert list(rows) == ["FCN-32s-fixed", "FCN-32s", "FCN-16s", "FCN-8s"]  # the paper's order
    assert {n: row["status"] for n, row in rows.items()} == {
        "FCN-32s-fixed": "missing",
        "FCN-32s": "evaluated",
        "FCN-16s": "missing",
        "FCN-8s": "evaluated",
    }
    assert rows["FCN-32s"]["weights"] == "voc_fcn32s/"  # voc_fcn32s_cvpr absent: the next name
    assert rows["FCN-8s"]["weights"] == "voc_fcn8s.pth"  # converted on the fly
    columns = ["pixel_acc", "mean_acc", "mean_iou", "fw_iou"]
    assert report["columns"] == columns
    for name in ("FCN-32s", "FCN-8s"):
        row = rows[name]
        assert row["n_images"] == len(VOC_SIZES)
        assert f"width {WIDTH:g}" in row["detail"]  # the width came from the weights
        assert set(row["ours"]) == set(columns)
        for c in columns:
            assert 0 <= row["ours"][c] <= 100
            assert row["diff"][c] == pytest.approx(row["ours"][c] - row["paper"][c], abs=1e-9)
    # Our FCN-8s figures are those of the .pth's network on the tree's images.
    expected = reference_figures(weights / "voc_fcn8s.pth", root, labels)
    for c, value in expected.items():
        assert rows["FCN-8s"]["ours"][c] == pytest.approx(value, abs=1e-6), c

    # The printed table: the paper's figures from the data file, ours, diff; missing rows say
    # where their weights go.
    assert header(r.stdout)[:4] == ["model", "pixel acc paper", "pixel acc ours", "pixel acc diff"]
    cells = table_lines(r.stdout)
    assert cells["FCN-8s"][1:4] == [
        "90.3",
        f"{rows['FCN-8s']['ours']['pixel_acc']:.2f}",
        f"{rows['FCN-8s']['diff']['pixel_acc']:+.2f}",
    ]
    assert cells["FCN-8s"][7] == "62.7"  # mean IU paper
    assert cells["FCN-16s"][2] == "missing"
    assert cells["FCN-16s"][-1].startswith(f"missing: `{weights / 'voc_fcn16s'}/`")
    assert "configs/voc_fcn16s.py" in cells["FCN-16s"][-1]
    assert "2 evaluated, 2 missing, 0 n/a" in r.stdout
    assert "Paper: CVPR 2015 (arXiv 1411.4038), Table 2" in r.stdout


def test_table1_na_rows_and_timing_from_bench_json(voc, tmp_path):
    root, weights, _ = voc
    bench = tmp_path / "bench.json"
    entry = dict(variant="fcn32s", mode="forward", height=500, width=500, batch=1)
    entry |= dict(dtype="float32", width_mult=1.0, jax_ms=123.4, torch_ms=150.0, ratio=0.82)
    other = {**entry, "variant": "fcn8s", "jax_ms": 999.0}
    bench.write_text(json.dumps([other, {**entry, "mode": "train", "jax_ms": 7.0}, entry]))
    (tmp_path / "run.json").write_text(json.dumps({"device_kind": "Tesla K80", "platform": "gpu"}))
    out = tmp_path / "out"
    r = run("--table", 1, "--data-root", root, "--weights-dir", weights, "--out", out,
            "--timing-json", bench, "--best")  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    rows = {row["name"]: row for row in json.loads((out / "table_1.json").read_text())["rows"]}
    assert [rows[n]["status"] for n in ("FCN-AlexNet", "FCN-VGG16", "FCN-GoogLeNet")] == [
        "n/a",
        "evaluated",
        "n/a",
    ]
    vgg = rows["FCN-VGG16"]
    # --best on converted weights (no validation metrics) falls back to the latest step.
    assert "latest step (no validation metrics" in vgg["detail"]
    assert vgg["ours"]["forward_ms"] == 123.4
    assert vgg["diff"]["forward_ms"] == pytest.approx(123.4 - 210)
    assert vgg["diff"]["mean_iou"] == pytest.approx(vgg["ours"]["mean_iou"] - 56.0)
    cells = table_lines(r.stdout)
    assert cells["FCN-VGG16"][1:7] == [
        "56.0",
        f"{vgg['ours']['mean_iou']:.2f}",
        f"{vgg['diff']['mean_iou']:+.2f}",
        "210",
        "123.4",
        "-86.6",
    ]
    assert cells["FCN-AlexNet"][1:7] == ["39.8", "n/a", "", "50", "n/a", ""]
    assert cells["FCN-AlexNet"][-1] == "n/a: no AlexNet trunk: fcn-jax builds FCNs on VGG16 only"
    assert cells["FCN-GoogLeNet"][-1].startswith("n/a: no GoogLeNet trunk")
    assert f"from {bench}" in r.stdout and "Tesla K80 (gpu)" in r.stdout  # bench.py's device


def test_table3_is_all_na_without_data(tmp_path):
    r = run("--table", 3, "--out", tmp_path)
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "table_3.json").read_text())
    assert [row["status"] for row in report["rows"]] == ["n/a"]
    assert "evaluation server" in report["rows"][0]["detail"]
    assert report["rows"][0]["paper"]["voc2012_test.mean_iou"] == 62.2
    assert table_lines(r.stdout)["FCN-8s"][1:3] == ["62.7", "n/a"]
    assert "0 evaluated, 0 missing, 1 n/a" in r.stdout


def test_table5_siftflow_two_heads(tmp_path):
    root = tmp_path / "siftflow"
    write_siftflow_tree(root, SIFTFLOW_SPLITS, seed=2)
    weights = tmp_path / "weights"
    weights.mkdir()
    heads = (("sem", 33), ("geo", 3))
    save_random_weights(weights / "siftflow_fcn16s", "fcn16s", 33, seed=3, heads=heads)
    r = run("--table", 5, "--data-root", root, "--weights-dir", weights, "--out", tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    (row,) = json.loads((tmp_path / "table_5.json").read_text())["rows"]
    assert row["status"] == "evaluated" and row["n_images"] == 2
    columns = ["semantic.pixel_acc", "semantic.mean_acc", "semantic.mean_iou", "semantic.fw_iou"]
    assert set(row["ours"]) == {*columns, "geometric.pixel_acc"}
    for c, value in row["ours"].items():
        assert row["diff"][c] == pytest.approx(value - row["paper"][c])
    assert row["paper"]["geometric.pixel_acc"] == 94.3
    assert "geo. pixel acc paper" in header(r.stdout)
    assert table_lines(r.stdout)["FCN-16s"][-4] == "94.3"


# --- bad input ----------------------------------------------------------------------------------


def test_bad_input_exits_2(voc, tmp_path):
    root, weights, _ = voc
    r = run("--table", 7)
    assert r.returncode == 2 and "invalid choice" in r.stderr
    r = run("--table", 2, "--weights-dir", weights)
    assert r.returncode == 2 and "--data-root is required for table 2" in r.stderr
    assert "VOCdevkit" in r.stderr and "Traceback" not in r.stderr
    r = run("--table", 2, "--data-root", tmp_path, "--weights-dir", weights)
    assert r.returncode == 2 and "does not hold" in r.stderr and "VOCdevkit" in r.stderr
    assert "Traceback" not in r.stderr
    # No weights at all: the report still lists every row as missing, then exit 2.
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run("--table", 2, "--data-root", root, "--weights-dir", empty)
    assert r.returncode == 2, r.stderr
    assert "no row of table 2 could be evaluated" in r.stderr
    assert "0 evaluated, 4 missing, 0 n/a" in r.stdout
    # Weights of another network under a row's name: named, before any evaluation.
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    save_random_weights(wrong / "voc_fcn16s", "fcn8s", 21, seed=4)
    r = run("--table", 2, "--data-root", root, "--weights-dir", wrong)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "holds a fcn8s with 21 classes, but row 'FCN-16s' needs a fcn16s" in r.stderr
    assert "[1/" not in r.stderr  # nothing was evaluated


# --- timing -------------------------------------------------------------------------------------


def test_time_forward_and_bench_lookup(tmp_path):
    from fcn_jax.paper.timing import forward_ms_from_bench, time_forward

    ms = time_forward(NetSpec.single("fcn32s", 21, width=WIDTH), size=40, trials=3)
    assert 0 < ms < 10_000 and math.isfinite(ms)
    bench = tmp_path / "bench.json"
    entry = dict(variant="fcn8s", mode="train", height=500, width=500, batch=1)
    bench.write_text(json.dumps([entry | dict(dtype="float32", width_mult=1.0, jax_ms=5.0)]))
    with pytest.raises(FCNError, match=r"no full-width float32 fcn32s.*fcn8s/train/500x500"):
        forward_ms_from_bench(bench, "fcn32s")
    bench.write_text("{}")
    with pytest.raises(FCNError, match="expected a list"):
        forward_ms_from_bench(bench, "fcn32s")


def test_out_never_overwrites_an_input(tmp_path):
    # --out is checked before any evaluation: writing table_1.json there would replace the
    # bench.py JSON the run reads its timing from.
    timing = tmp_path / "table_1.json"
    timing.write_text("[]")
    r = run("--table", 1, "--timing-json", timing, "--out", tmp_path)
    assert r.returncode == 2, r.stderr
    assert "would overwrite the --timing-json" in r.stderr and "Traceback" not in r.stderr
    assert timing.read_text() == "[]"
    (tmp_path / "file").write_text("x")
    r = run("--table", 3, "--out", tmp_path / "file")
    assert r.returncode == 2 and "is a file, not a folder" in r.stderr, r.stderr
