"""The paper's full-width FCN-8s as an ONNX artifact: ONNX Runtime equals the live network."""

import pytest

from fcn_jax.export import load_artifact
from fcn_jax.export.check import check_artifact
from fcn_jax.export.onnx_torch import export_onnx
from tests.export.nets import case_metadata, lively_variables

pytestmark = [pytest.mark.torch, pytest.mark.full_width]


def test_full_width_fcn8s_onnx(tmp_path):
    metadata = case_metadata("fcn8s", width=1.0)
    variables = lively_variables(metadata.spec)
    out = tmp_path / "fcn8s.onnx"
    export_onnx(variables, metadata, out)
    # 134M float32 parameters, stored once in the file.
    assert 530e6 < out.stat().st_size < 545e6
    (check,) = check_artifact(load_artifact(out), variables, metadata, sizes=[(45, 38)])
    assert check.ok, check
    assert check.logit_scale > 1 and check.relative < 1e-5
