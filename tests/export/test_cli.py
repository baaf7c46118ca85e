"""export.py: the default check on the VOC sample, exit 1 when it fails, exit 2 on bad input."""

import json

import pytest

from fcn_jax.cli import run
from tests.export.nets import save_case
from tests.test_cli import load_script


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return save_case(tmp_path_factory.mktemp("export_cli") / "fcn8s", "fcn8s")[0]


def export(args, capsys):
    """Run export.py's main through its runner: (exit status, stdout, stderr)."""
    cli = load_script("export")
    with pytest.raises(SystemExit) as exit_info:
        run(lambda _: cli.main(list(map(str, args))))
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err


def test_export_stablehlo_with_the_default_check(weights, tmp_path, capsys):
    out = tmp_path / "fcn8s.stablehlo"
    code, stdout, err = export(
        ["--weights", weights, "--format", "stablehlo", "--out", out], capsys
    )
    assert code == 0, err
    assert f"wrote {out}" in stdout and f"wrote {out}.json" in stdout
    assert "image uint8[batch,height,width,3]" in stdout
    assert "logits float32[batch,height,width,21], labels uint8[batch,height,width]" in stdout
    # The VOC sample at its size (batch 1), then two other sizes at batch 2, one not a
    # multiple of 32.
    cases = [line.split("  ")[0] for line in stdout.splitlines() if line.startswith("voc_sample")]
    assert cases == [
        "voc_sample 500x334",
        "voc_sample resized 224x320 x2",
        "voc_sample resized 157x203 x2",
    ]
    assert "check passed" in stdout
    sidecar = json.loads(out.with_name("fcn8s.stablehlo.json").read_text())
    assert sidecar["source"]["weights"] == "fcn8s" and sidecar["source"]["step"] is None


def test_a_failed_check_exits_1_and_keeps_the_artifact(weights, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("fcn_jax.export.check.TOLERANCE", -1.0)  # nothing can pass
    out = tmp_path / "a.stablehlo"
    args = ["--weights", weights, "--format", "stablehlo", "--out", out, "--height", 33]
    code, stdout, _ = export([*args, "--width", 35, "--batch", 1], capsys)
    assert code == 1
    assert "FAIL" in stdout and "check FAILED" in stdout
    assert out.is_file()


W = ["--weights", "{w}"]
ONNX = ["--format", "onnx", "--out", "{tmp}/a.onnx"]
HLO = ["--format", "stablehlo", "--out", "{tmp}/a.stablehlo"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--weights", "{tmp}/none", *ONNX], "does not exist"),
        ([*W, "--format", "onnx", "--out", "{tmp}/file/a.onnx"], "is a file, not a folder"),
        ([*W, "--format", "stablehlo", "--out", "{tmp}/a.onnx"], "stablehlo writes *.stablehlo"),
        ([*W, *ONNX, "--height", "64"], "give --height and --width together"),
        ([*W, *ONNX, "--batch", "0"], "--batch 0: give a positive size"),
        ([*W, *ONNX, "--dtype", "bfloat16"], "no bfloat16 convolutions"),
        ([*W, *ONNX, "--platforms", "cpu"], "--platforms applies to --format stablehlo"),
        ([*W, *HLO, "--platforms", "cpu,nes"], "choose from cpu, cuda, rocm, tpu"),
        ([*W, *HLO, "--best"], "no checkpoint with validation metrics"),
        ([*W, *HLO, "--best", "--step", "0"], "give --step or --best, not both"),
        ([*W, "--format", "tflite", "--out", "{tmp}/a.tflite"], "invalid choice"),
        ([*W, "--format", "onnx"], "--out is required"),
    ],
)
def test_bad_input_exits_2(args, message, weights, tmp_path, capsys):
    (tmp_path / "file").write_text("a file")
    args = [a.format(tmp=tmp_path, w=weights) for a in args]
    code, stdout, err = export(args, capsys)
    assert code == 2, (stdout, err)
    assert err.startswith("error: ") and message in err, err
    assert not (tmp_path / "a.onnx").exists() and not (tmp_path / "a.stablehlo").exists()
