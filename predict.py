#!/usr/bin/env python
"""Predict class maps with a weights directory, for an image or a folder of images.

    python predict.py --weights weights/fcn8s --input image.jpg --out predictions/ [--save-logits]
    python predict.py --weights weights/fcn8s --input photos/ --out predictions/
    python predict.py --weights weights/fcn8s --input photos/ --out preds/ --overlay blend

Writes, for each input, OUT/<stem>.png (class indices as a palette PNG in the dataset's colours,
the input's height and width as displayed), OUT/<stem>_overlay.png (the image beside its
coloured mask, or with --overlay blend the mask drawn over the image with opacity --alpha, and
a legend of the classes present; images under 256 pixels on the short side are enlarged,
nearest neighbour, so the legend can be read) and, with --save-logits, OUT/<stem>.npy (float32
logits, H x W x n_class). Outputs are named by each input's file stem. Preprocessing comes from
the weights' metadata.

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

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from fcn_jax.errors import FCNError, format_list, run_cli


def _alpha(text: str) -> float:
    """--alpha: a number in [0, 1] (argparse reports anything else as a usage error)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Predict; returns the exit code."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--weights", required=True, type=Path, help="weights directory")
    p.add_argument("--input", required=True, type=Path, help="image file or folder of images")
    p.add_argument("--out", required=True, type=Path, help="output folder (created if missing)")
    p.add_argument("--save-logits", action="store_true", help="also write <stem>.npy logits")
    p.add_argument("--step", type=int, help="checkpoint step of --weights (default: latest)")
    p.add_argument("--best", action="store_true", help="a training workdir's best checkpoint")
    p.add_argument(
        "--overlay",
        choices=("side", "blend"),
        default="side",
        help="<stem>_overlay.png: the image beside its mask (side, default) or the mask over it",
    )
    p.add_argument(
        "--alpha",
        type=_alpha,
        default=0.5,
        help="opacity of the mask in --overlay blend, 0 (image only) to 1 (mask only); default 0.5",
    )
    args = p.parse_args(argv)
    from fcn_jax.checkpoint import best_step
    from fcn_jax.inference import predict_files

    step = best_step(args.weights) if args.best else args.step
    result = predict_files(
        args.weights,
        args.input,
        args.out,
        args.save_logits,
        step=step,
        overlay=args.overlay,
        alpha=args.alpha,
    )
    if result.inputs.subfolders:
        names = format_list([f"{p.name}/" for p in result.inputs.subfolders])
        print(f"note: predict does not enter subfolders; not read: {names}", file=sys.stderr)
    print(f"wrote {len(result.written)} prediction(s) to {args.out}")
    if result.failed:
        n, total = len(result.failed), len(result.inputs.images)
        reasons = "".join(f"\n  {why}" for _, why in result.failed)  # each names its file
        raise FCNError(
            f"{n} of {total} image(s) could not be read, so were not predicted:{reasons}"
        )
    return 0


if __name__ == "__main__":
    run_cli(main)
