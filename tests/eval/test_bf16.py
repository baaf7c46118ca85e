"""bf16 evaluation of float32 weights: within the promised tolerance of float32."""

import numpy as np

from fcn_jax.configs import base
from fcn_jax.data import make_dataset
from fcn_jax.eval.evaluate import BF16_MIOU_TOLERANCE, evaluate
from fcn_jax.preprocessing import CAFFE_VOC
from fcn_jax.resources import voc_class_names
from tests.utils import NARROW, metadata_for, random_weights, write_voc_tree

SIZES = {
    "2007_000033": (64, 48),
    "2007_000042": (40, 56),
    "2008_000001": (60, 60),
    "2009_000002": (48, 64),
}


def test_bf16_eval_of_float32_weights_stays_within_tolerance(tmp_path):
    write_voc_tree(tmp_path, SIZES, split="seg11valid")
    # Random in every layer, as a converted torchfcn FCN-8s would be (float32, Caffe VOC input).
    metadata = metadata_for("fcn8s", 21, NARROW, CAFFE_VOC, class_names=voc_class_names())
    variables = random_weights(metadata.spec, seed=5)
    config = base()
    config.data.root = str(tmp_path)
    dataset = make_dataset(config, "seg11valid")
    f32 = evaluate(variables, metadata, dataset, progress=False)
    bf16 = evaluate(variables, metadata, dataset, progress=False, dtype="bfloat16")
    a, b = f32.metrics[""], bf16.metrics[""]
    print(f"mean IU float32 {a.mean_iou:.5f} bfloat16 {b.mean_iou:.5f}")
    assert abs(a.mean_iou - b.mean_iou) <= BF16_MIOU_TOLERANCE
    assert abs(a.pixel_acc - b.pixel_acc) <= BF16_MIOU_TOLERANCE
    # It did compute in bf16: the logits move, by about bf16's precision of their scale.
    image = dataset[0]["image"][None]
    logits = {
        dtype: np.asarray(
            metadata.spec.replace(dtype=dtype).logits(variables, {"image": image})["out"],
            np.float32,
        )
        for dtype in ("float32", "bfloat16")
    }
    diff = np.abs(logits["float32"] - logits["bfloat16"]).max() / np.abs(logits["float32"]).max()
    print(f"bf16 logits: max |diff| / max |logit| = {diff:.2e}")
    assert 1e-4 < diff < 3e-2
