"""StableHLO artifacts of every network: symbolic sizes, the sidecar, the loader, the check."""

import json

import jax
import numpy as np
import pytest

from fcn_jax.errors import FCNError
from fcn_jax.export import load_artifact
from fcn_jax.export.build import export_weights
from fcn_jax.export.check import check_artifact
from fcn_jax.export.graph import variables_sha256
from fcn_jax.export.stablehlo import export_stablehlo
from tests.export.nets import CASES, case_metadata, lively_variables, save_case

SIZE = (37, 45)  # small, odd sides (SpeedPaper pads them to 64)


@pytest.mark.parametrize("name", list(CASES))
def test_stablehlo_artifact_equals_the_live_network(name, tmp_path):
    metadata = case_metadata(name)
    spec = metadata.spec
    variables = lively_variables(spec)
    out = tmp_path / "net.stablehlo"
    info = export_stablehlo(variables, metadata, out)

    sidecar = json.loads((tmp_path / "net.stablehlo.json").read_text())
    assert sidecar["weights_sha256"] == variables_sha256(variables)
    assert sidecar["network"]["arch"] == spec.arch
    assert sidecar["eval_resize"] == metadata.eval_resize
    assert [i["name"] for i in sidecar["inputs"]] == list(spec.inputs)
    assert all(i["shape"] == ["batch", "height", "width", 3] for i in sidecar["inputs"])
    several = len(spec.heads) > 1
    assert [o["name"] for o in sidecar["outputs"]] == [
        f"{kind}_{head}" if several else kind
        for head in spec.head_names
        for kind in ("logits", "labels")
    ]
    assert list(sidecar["head_classes"]) == list(spec.head_names)
    assert len(sidecar["palette"]) == spec.n_class
    assert sidecar["versions"]["platforms"] == ["cpu"]

    artifact = load_artifact(out)
    assert artifact.info == info
    checks = check_artifact(artifact, variables, metadata, sizes=[SIZE])
    assert [c.head for c in checks] == list(spec.head_names)
    assert all(c.ok for c in checks), checks
    assert max(c.relative for c in checks) < 1e-5  # the same XLA computation, traced twice
    assert all(c.case.endswith(" x2") for c in checks)  # the batch axis is symbolic too

    assert_outputs(artifact, spec)


def assert_outputs(artifact, spec):
    """At the checked size (compiled already): per head, float32 logits and their uint8 argmax."""
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (2, *SIZE, 3), dtype=np.uint8) for _ in spec.inputs]
    got = artifact(*images)
    several = len(spec.heads) > 1
    assert len(got) == 2 * len(spec.heads)
    for head, n_class in spec.heads:
        suffix = f"_{head}" if several else ""
        assert got[f"logits{suffix}"].dtype == np.float32
        assert got[f"logits{suffix}"].shape == (2, *SIZE, n_class)
        assert got[f"labels{suffix}"].dtype == np.uint8
        np.testing.assert_array_equal(got[f"labels{suffix}"], got[f"logits{suffix}"].argmax(-1))


def test_fixed_size_labels_only_bfloat16(tmp_path):
    weights, variables = save_case(tmp_path / "w", "fcn8s")
    out = tmp_path / "fixed.stablehlo"
    result = export_weights(
        weights,
        out,
        "stablehlo",
        sizes=(2, 40, 56),
        outputs="labels",
        dtype="bfloat16",
        check=False,
    )
    assert result.info.inputs[0].shape == (2, 40, 56, 3)
    assert [o.name for o in result.info.outputs] == ["labels"]
    assert result.info.note == "fixed batch, height, width (given at export)"
    artifact = load_artifact(out)
    checks = check_artifact(artifact, variables, case_metadata("fcn8s"), dtype="bfloat16")
    assert len(checks) == 1 and checks[0].ok and np.isnan(checks[0].max_abs_diff)
    image = np.zeros((2, 40, 56, 3), np.uint8)
    assert artifact(image)["labels"].shape == (2, 40, 56)
    with pytest.raises(FCNError, match=r"takes uint8 \[2 x 40 x 56 x 3\].*export again"):
        artifact(np.zeros((2, 40, 57, 3), np.uint8))
    with pytest.raises(FCNError, match=r"takes uint8.*got float32"):
        artifact(image.astype(np.float32))
    with pytest.raises(FCNError, match="takes 1 input"):
        artifact(image, image)


def test_loader_errors(tmp_path):
    weights, _ = save_case(tmp_path / "w", "fcn32s")
    out = tmp_path / "a.stablehlo"
    export_weights(weights, out, "stablehlo", sizes=(1, 33, 33), check=False)
    artifact = load_artifact(out)
    with pytest.raises(FCNError, match=r"got uint8 \[33, 33, 3\]"):
        artifact(np.zeros((33, 33, 3), np.uint8))
    with pytest.raises(FCNError, match=r"does not exist"):
        load_artifact(tmp_path / "missing.stablehlo")
    with pytest.raises(FCNError, match=r"not an artifact \(.stablehlo or .onnx"):
        load_artifact(weights)
    (tmp_path / "b.stablehlo").write_bytes(b"not flatbuffers")
    (tmp_path / "b.stablehlo.json").write_text((tmp_path / "a.stablehlo.json").read_text())
    with pytest.raises(FCNError, match=r"not a serialized jax\.export artifact"):
        load_artifact(tmp_path / "b.stablehlo")
    (tmp_path / "a.stablehlo.json").unlink()
    with pytest.raises(FCNError, match=r"a.stablehlo.json is missing"):
        load_artifact(out)


def test_a_network_that_cannot_be_symbolic_is_told_to_fix_its_size(tmp_path, monkeypatch):
    # No network of ARCHS fails to trace symbolically; one that did gets this advice.
    metadata = case_metadata("fcn32s")
    variables = lively_variables(metadata.spec)

    def fails(*args, **kwargs):
        raise ValueError("inconclusive dimension operation\nmore detail")

    monkeypatch.setattr(jax.export, "export", fails)
    with pytest.raises(FCNError, match=r"symbolic sizes \(ValueError: inconclusive dimension "):
        export_stablehlo(variables, metadata, tmp_path / "a.stablehlo")
    with pytest.raises(ValueError):  # a fixed size has no such excuse: the error as it is
        export_stablehlo(variables, metadata, tmp_path / "a.stablehlo", sizes=(1, 32, 32))


def test_platforms(tmp_path):
    metadata = case_metadata("fcn32s")
    variables = lively_variables(metadata.spec)
    info = export_stablehlo(variables, metadata, tmp_path / "g.stablehlo", platforms=["gpu"])
    assert info.versions["platforms"] == ["cuda"] and info.versions["conv_impl"] == "xla"
    with pytest.raises(
        FCNError, match="lowered for cuda, not this cpu: export it with --platforms cuda,cpu"
    ):
        load_artifact(tmp_path / "g.stablehlo")
    info = export_stablehlo(
        variables, metadata, tmp_path / "b.stablehlo", platforms=["cpu", "cuda"]
    )
    assert info.versions["conv_impl"] == "gemm"
    assert load_artifact(tmp_path / "b.stablehlo")(np.zeros((1, 9, 9, 3), np.uint8))[
        "labels"
    ].shape == (1, 9, 9)
