#!/usr/bin/env python
"""Export a weights directory as a StableHLO or ONNX artifact, checked against the live network.

    python export.py --weights weights/fcn8s --format onnx --out fcn8s.onnx
    python export.py --weights weights/fcn8s --format stablehlo --out fcn8s.stablehlo
    python export.py --weights runs/voc --best --format onnx --out voc.onnx --outputs labels
    python export.py --weights W (--step N | --best) --format {stablehlo,onnx} --out PATH
        [--batch N] [--height H --width W] [--outputs {logits,labels,both}]
        [--dtype {float32,bfloat16}] [--platforms cpu,cuda] [--nocheck]

The artifact takes uint8 RGB images [N, H, W, 3], as read from files, and does the weights'
preprocessing inside its graph; it returns logits [N, H, W, C] float32 and/or labels [N, H, W]
uint8 (the argmax), per head (a multi-head net's names end in _<head>: logits_sem, labels_geo).
A multi-stream net (NYUD RGB-HHA) takes one input per stream (image, hha). Batch, height and
width are symbolic unless given: one artifact takes any image size. Weights with an evaluation
resize (torchvision's FCN-ResNets: shorter side 520) leave it to the consumer, as the weights
directory's predict does: the artifact's description says so (eval_resize), and predict.py on
the artifact applies it.

stablehlo: jax.export's serialized bytes in PATH (*.stablehlo), its description in PATH.json
(classes, palette, inputs, outputs, the variables' sha256, versions); it runs where it was
lowered (--platforms, default this machine's backend). onnx: PATH (*.onnx), exported through
the PyTorch twin of the network (needs torch), with dynamic axes, opset 18, the same
description in its metadata props. Load either with fcn_jax.export.load_artifact, or
python predict.py --weights PATH.

--check (default) runs the artifact and the live network on the bundled VOC sample and on two
other sizes (one not a multiple of 32): the largest |logit difference| must be within 1e-4 of
the logit scale (float32; bfloat16: 2e-2) and the labels equal away from ties.

Exit codes: 0 exported (and checked); 1 the check failed (the artifact is kept for a look);
2 bad input (flags, weights, --out, a network or dtype the format cannot take).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from absl import flags

from fcn_jax.cli import parse_flags, run
from fcn_jax.errors import FCNError

REQUIRED = {
    "weights": "a weights directory (or a training workdir)",
    "format": "stablehlo or onnx",
    "out": "the artifact file to write (*.stablehlo or *.onnx)",
}


def define_flags(fv: flags.FlagValues) -> None:
    """export.py's flags."""
    flags.DEFINE_string("weights", None, "weights directory", flag_values=fv)
    flags.DEFINE_integer("step", None, "checkpoint step (default: latest)", flag_values=fv)
    flags.DEFINE_bool("best", False, "a training workdir's best checkpoint", flag_values=fv)
    flags.DEFINE_enum("format", None, ["stablehlo", "onnx"], "artifact format", flag_values=fv)
    flags.DEFINE_string("out", None, "artifact file (*.stablehlo or *.onnx)", flag_values=fv)
    for name, what in (("batch", "batch size"), ("height", "image height"), ("width", "width")):
        flags.DEFINE_integer(name, None, f"fixed {what} (default: symbolic, any)", flag_values=fv)
    flags.DEFINE_enum(
        "outputs", "both", ["logits", "labels", "both"], "what the artifact returns", flag_values=fv
    )
    flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "compute dtype", flag_values=fv)
    flags.DEFINE_list(
        "platforms",
        None,
        "stablehlo: platforms to lower for, e.g. cpu,cuda (default: this machine's)",
        flag_values=fv,
    )
    flags.DEFINE_bool(
        "check",
        True,
        "compare the artifact with the live network (--nocheck: skip)",
        flag_values=fv,
    )


def size_text(n: int) -> str:
    """Bytes as ``12.3 MB``."""
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def main(argv: Sequence[str] | None = None) -> int:
    """Export; returns the exit code."""
    args = parse_flags(define_flags, argv, __doc__, required=REQUIRED)
    if args.best and args.step is not None:
        raise FCNError("give --step or --best, not both")
    from fcn_jax.checkpoint import best_step
    from fcn_jax.export.build import export_weights
    from fcn_jax.export.check import format_results

    weights = Path(args.weights)
    result = export_weights(
        weights,
        Path(args.out),
        args.format,
        step=best_step(weights) if args.best else args.step,
        outputs=args.outputs,
        sizes=(args.batch, args.height, args.width),
        dtype=args.dtype,
        check=args.check,
        platforms=args.platforms,
    )
    info = result.info
    for path, size in result.files.items():
        print(f"wrote {path} ({size_text(size)})")
    shapes = lambda ts: ", ".join(f"{t.name} {t.dtype}[{','.join(map(str, t.shape))}]" for t in ts)  # noqa: E731
    print(f"inputs: {shapes(info.inputs)}")
    print(f"outputs: {shapes(info.outputs)}")
    if info.eval_resize is not None:
        print(
            f"note: these weights expect images resized to shorter side {info.eval_resize} "
            "before the artifact (predict.py on the artifact does it; other consumers: see "
            "eval_resize in its description)"
        )
    print(f"export took {result.export_seconds:.1f} s")
    if result.checks is not None:
        print(format_results(result.checks, args.dtype))
    return 0 if result.ok else 1


if __name__ == "__main__":
    run(main)
