#!/usr/bin/env python
"""Predict class maps with a weights directory, for an image or a folder of images.

    python predict.py --weights weights/fcn8s --input image.jpg --out predictions/ [--save-logits]
    python predict.py --weights weights/fcn8s --input photos/ --out predictions/
    python predict.py --weights weights/fcn8s --input photos/ --out preds/ --overlay blend
    python predict.py --weights fcn8s.onnx --input photos/ --out predictions/
    python predict.py --weights W --input IN --out OUT [--overlay {side,blend}] [--alpha A]
        [--save-logits] [--step N | --best]

Writes, for each input, OUT/<stem>.png (class indices as a palette PNG in the dataset's colours,
the input's height and width as displayed), OUT/<stem>_overlay.png (the image beside its
coloured mask, or with --overlay blend the mask drawn over the image with opacity --alpha, and
a legend of the classes present; images under 256 pixels on the short side are enlarged,
nearest neighbour, so the legend can be read) and, with --save-logits, OUT/<stem>.npy (float32
logits, H x W x n_class). Outputs are named by each input's file stem. Preprocessing comes from
the weights' metadata.

--weights may also be an artifact written by export.py (model.onnx, or model.stablehlo beside
its model.stablehlo.json), recognised by its suffix: the same outputs, without the model code
(flax is not imported); --save-logits needs an artifact exported with logits.

Images are read as a viewer shows them: the EXIF orientation is applied (a photo stored on its
side is predicted upright) and 16-bit images are scaled to 8 bits (value >> 8); 32-bit integer
and float images are refused. Transparency (an alpha channel) is ignored.

A folder is read without its subfolders (named in a note) and hidden files (.DS_Store, ._x.jpg:
skipped silently). An image that cannot be read is reported and skipped; the others are still
predicted.

OUT must be a folder that can be written, is not the input folder or the weights, and where no
output would replace an input: it is checked before anything is loaded.

Exit codes: 0 every image predicted; 2 bad input (flags, weights, --out), or any image could not
be read (each is named, with why, at the end).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from absl import flags

from fcn_jax.cli import parse_flags, run
from fcn_jax.errors import FCNError, format_list

REQUIRED = {
    "weights": "a weights directory or an exported artifact (.onnx, .stablehlo)",
    "input": "an image file or a folder of images",
    "out": "the output folder",
}


def define_flags(fv: flags.FlagValues) -> None:
    """predict.py's flags."""
    flags.DEFINE_string(
        "weights", None, "weights directory, or an artifact (.onnx, .stablehlo)", flag_values=fv
    )
    flags.DEFINE_string("input", None, "image file or folder of images", flag_values=fv)
    flags.DEFINE_string("out", None, "output folder (created if missing)", flag_values=fv)
    flags.DEFINE_bool("save-logits", False, "also write <stem>.npy logits", flag_values=fv)
    flags.DEFINE_integer(
        "step", None, "checkpoint step of --weights (default: latest)", flag_values=fv
    )
    flags.DEFINE_bool("best", False, "a training workdir's best checkpoint", flag_values=fv)
    flags.DEFINE_enum(
        "overlay",
        "side",
        ["side", "blend"],
        "<stem>_overlay.png: the image beside its mask (side) or the mask over it",
        flag_values=fv,
    )
    flags.DEFINE_float(
        "alpha",
        0.5,
        "opacity of the mask in --overlay blend, 0 (image only) to 1 (mask only)",
        lower_bound=0,  # shown in errors: "not a number in the range [0, 1]"
        upper_bound=1,
        flag_values=fv,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Predict; returns the exit code."""
    args = parse_flags(define_flags, argv, __doc__, required=REQUIRED)
    from fcn_jax.export.info import is_artifact_path
    from fcn_jax.inference import predict_files

    weights = Path(args.weights)
    step = args.step
    if args.best and is_artifact_path(weights):
        raise FCNError(
            f"--best chooses a checkpoint of a training workdir; {weights} is an artifact"
        )
    if args.best:  # the model code (flax, orbax) is imported for a weights directory only
        from fcn_jax.checkpoint import best_step

        step = best_step(weights)
    result = predict_files(
        weights,
        Path(args.input),
        Path(args.out),
        args.save_logits,
        step=step,
        overlay=args.overlay,
        alpha=args.alpha,
    )
    if result.inputs.subfolders:
        names = format_list([f"{p.name}/" for p in result.inputs.subfolders])
        print(f"note: predict does not enter subfolders; not read: {names}", file=sys.stderr)
    print(f"wrote {len(result.written)} prediction(s) to {Path(args.out)}")
    if result.failed:
        n, total = len(result.failed), len(result.inputs.images)
        reasons = "".join(f"\n  {why}" for _, why in result.failed)  # each names its file
        raise FCNError(
            f"{n} of {total} image(s) could not be read, so were not predicted:{reasons}"
        )
    return 0


if __name__ == "__main__":
    run(main)
