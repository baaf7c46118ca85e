"""ONNX artifacts (exported through the PyTorch twin), run by ONNX Runtime, equal the network."""

import json

import numpy as np
import onnx
import pytest

from fcn_jax.errors import FCNError
from fcn_jax.export import load_artifact
from fcn_jax.export.check import check_artifact
from fcn_jax.export.graph import variables_sha256
from fcn_jax.export.onnx_torch import OPSET, export_onnx
from tests.export.nets import CASES, case_metadata, lively_variables
from tests.export.test_stablehlo import SIZE, assert_outputs

pytestmark = pytest.mark.torch


@pytest.mark.parametrize("name", list(CASES))
def test_onnx_artifact_equals_the_live_network(name, tmp_path):
    metadata = case_metadata(name)
    spec = metadata.spec
    variables = lively_variables(spec)
    out = tmp_path / "net.onnx"
    info = export_onnx(variables, metadata, out)

    model = onnx.load(out)
    assert {o.domain: o.version for o in model.opset_import}[""] == OPSET
    dims = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
    assert [(i.name, dims(i)) for i in model.graph.input] == [
        (k, ["batch", "height", "width", 3]) for k in spec.inputs
    ]
    assert [dims(o)[:3] for o in model.graph.output] == [["batch", "height", "width"]] * len(
        info.outputs
    )
    props = {p.key: json.loads(p.value) for p in model.metadata_props}
    assert props["weights_sha256"] == variables_sha256(variables)
    assert props["eval_resize"] == metadata.eval_resize
    assert props["versions"]["opset"] == OPSET
    ops = {n.op_type for n in model.graph.node}
    assert "Loop" not in ops and "If" not in ops  # a plain feed-forward graph

    artifact = load_artifact(out)
    assert artifact.info == info
    checks = check_artifact(artifact, variables, metadata, sizes=[SIZE])
    assert all(c.ok for c in checks), checks
    assert_outputs(artifact, spec)


def test_onnx_fixed_size_and_refusals(tmp_path):
    metadata = case_metadata("fcn8s")
    variables = lively_variables(metadata.spec)
    out = tmp_path / "fixed.onnx"
    info = export_onnx(variables, metadata, out, sizes=(None, 40, 56), outputs="logits")
    assert info.inputs[0].shape == ("batch", 40, 56, 3)
    artifact = load_artifact(out)
    assert set(artifact(np.zeros((3, 40, 56, 3), np.uint8))) == {"logits"}
    with pytest.raises(FCNError, match=r"takes uint8 \[batch x 40 x 56 x 3\]"):
        artifact(np.zeros((1, 41, 56, 3), np.uint8))
    with pytest.raises(FCNError, match="no bfloat16 convolutions"):
        export_onnx(variables, metadata, tmp_path / "b.onnx", dtype="bfloat16")
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    with pytest.raises(FCNError, match="ONNX Runtime cannot load it"):
        load_artifact(tmp_path / "junk.onnx")


def test_a_network_torch_cannot_export_dynamically_is_told_to_fix_its_size(tmp_path, monkeypatch):
    import torch

    metadata = case_metadata("fcn32s")
    variables = lively_variables(metadata.spec)

    def fails(*args, **kwargs):
        raise RuntimeError("Constraints violated (height)\nmore detail")

    monkeypatch.setattr(torch.onnx, "export", fails)
    with pytest.raises(FCNError, match=r"dynamic sizes \(RuntimeError: Constraints violated"):
        export_onnx(variables, metadata, tmp_path / "a.onnx")
