"""A full-width network as an ONNX artifact: ONNX Runtime equals the live JAX network.

SpeedPaper's FCN (VGG16-BN, 81 MB): BatchNorm, learned transposed convolutions, grey
preprocessing and the padding to multiples of 32, at the channel counts of the real network,
for a fraction of the full-width FCN-8s's time (538 MB; its figures are in the README,
measured with export.py's check).
"""

import pytest

from fcn_jax.export import load_artifact
from fcn_jax.export.check import check_artifact
from fcn_jax.export.onnx_torch import export_onnx
from tests.export.nets import case_metadata, lively_variables

pytestmark = [pytest.mark.torch, pytest.mark.full_width]


def test_full_width_speedpaper_onnx(tmp_path):
    metadata = case_metadata("speedpaper", width=1.0)
    variables = lively_variables(metadata.spec)
    out = tmp_path / "speedpaper.onnx"
    export_onnx(variables, metadata, out)
    assert 78e6 < out.stat().st_size < 84e6  # 20M float32 parameters, stored once
    (check,) = check_artifact(load_artifact(out), variables, metadata, sizes=[(45, 70)])
    assert check.ok, check
    assert check.logit_scale > 0.1 and check.relative < 1e-5
