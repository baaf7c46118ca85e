"""reproduce.py --table torchvision end to end: a tiny COCO tree, a narrow torchvision checkpoint.

The checkpoint is a random FCN-ResNet50 in torchvision's layout under the published weights'
download name, so the row goes the way the real file would: found by name, converted on the
fly (width and classes from its tensors, the 520 evaluation resize from the conversion), scored
on val2017 as the coco_voc dataset draws it. Its figures are checked against torchvision's own
evaluation written out here: its model, its transforms and its ConfusionMatrix's formulas, on
the labels drawn by hand (tests.utils.write_coco_tree).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.utils import run_script, write_coco_tree

WIDTH = 0.0625
PTH = "fcn_resnet50_coco-1167a1af.pth"
EVAL_RESIZE = 520  # torchvision's SegmentationPresetEval / the weights' transforms


def torchvision_figures(pth: Path, root: Path, labels: dict[str, np.ndarray]) -> dict[str, float]:
    """Pixel acc and mean IU (percent) as torchvision's references/segmentation scores them.

    Per image: ``F.resize(image, 520)`` (bilinear) and ``F.resize(target, 520, NEAREST)``, then
    ``pil_to_tensor``, ``convert_image_dtype``, ``normalize`` (ImageNet); ``model(x)["out"]``
    argmax; ``ConfusionMatrix.update`` counts targets in [0, 21). Mean IU leaves out 0/0 classes,
    as ours does (torchvision's plain mean would be NaN with classes absent from a tiny split).
    """
    import torch

    from fcn_jax.torch_reference import import_torchvision, torchvision_fcn_resnet

    import_torchvision()
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as F

    net = torchvision_fcn_resnet("fcn_resnet50", 21, aux=True, width=WIDTH).eval()
    net.load_state_dict(torch.load(pth, weights_only=True))
    n = 21
    mat = torch.zeros((n, n), dtype=torch.int64)
    for stem, label in labels.items():
        image = F.resize(Image.open(root / "val2017" / f"{stem}.jpg").convert("RGB"), EVAL_RESIZE)
        target = F.resize(
            Image.fromarray(label), EVAL_RESIZE, interpolation=InterpolationMode.NEAREST
        )
        x = F.convert_image_dtype(F.pil_to_tensor(image), torch.float)
        x = F.normalize(x, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
        with torch.no_grad():
            pred = net(x[None])["out"].argmax(1).flatten()
        a = torch.as_tensor(np.asarray(target), dtype=torch.int64).flatten()
        k = (a >= 0) & (a < n)
        mat += torch.bincount(n * a[k] + pred[k], minlength=n * n).reshape(n, n)
    h = mat.double()
    diag = torch.diag(h)
    iu = diag / (h.sum(1) + h.sum(0) - diag)
    return {
        "pixel_acc": 100 * float(diag.sum() / h.sum()),
        "mean_iou": 100 * float(iu[~iu.isnan()].mean()),
    }


@pytest.mark.torch
def test_torchvision_table_on_a_tiny_coco(tmp_path):
    import torch

    from fcn_jax.torch_reference import random_fcn_resnet_state_dict

    root = tmp_path / "coco"
    labels = write_coco_tree(root)
    weights = tmp_path / "weights"
    weights.mkdir()
    state = random_fcn_resnet_state_dict("fcn_resnet50", 21, aux=True, width=WIDTH, seed=3)
    torch.save(state, weights / PTH)
    out = tmp_path / "out"
    r = run_script(
        "reproduce.py", "--table", "torchvision", "--data-root", root, "--weights-dir", weights,
        "--out", out,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert (out / "table_torchvision.md").read_text() == r.stdout
    report = json.loads((out / "table_torchvision.json").read_text())
    assert (report["split"], report["columns"]) == ("val2017", ["pixel_acc", "mean_iou"])
    rows = {row["name"]: row for row in report["rows"]}
    assert list(rows) == ["FCN-ResNet50", "FCN-ResNet101"]
    r50, r101 = rows["FCN-ResNet50"], rows["FCN-ResNet101"]
    assert (r50["status"], r50["weights"], r50["n_images"]) == ("evaluated", PTH, 3)
    assert r50["paper"] == {"pixel_acc": 91.4, "mean_iou": 60.5}  # the model card's
    assert f"width {WIDTH:g}" in r50["detail"]  # the width came from the tensors
    # Scored as torchvision scores it: at shorter side 520, its labels, its formulas.
    expected = torchvision_figures(weights / PTH, root, labels)
    for column, value in expected.items():
        assert r50["ours"][column] == pytest.approx(value, abs=1e-6), column
        assert r50["diff"][column] == pytest.approx(value - r50["paper"][column], abs=1e-6)
    # The other row: missing, saying where its weights go under both of its names.
    assert r101["status"] == "missing" and r101["paper"] == {"pixel_acc": 91.9, "mean_iou": 63.7}
    assert f"`{weights / 'coco_fcn_resnet101'}/`" in r101["detail"]
    assert f"`{weights / 'fcn_resnet101_coco-7ecb50ca'}/`" in r101["detail"]
    assert "configs/coco_fcn_resnet101.py" in r101["detail"]
    assert "1 evaluated, 1 missing, 0 n/a" in r.stdout
    assert "| FCN-ResNet101 | 91.9 | missing |  | 63.7 | missing |" in r.stdout
