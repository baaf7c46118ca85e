#!/usr/bin/env python
"""Predict class maps with a weights directory, for an image or a folder of images.

    python predict.py --weights weights/fcn8s --input image.jpg --out predictions/ [--save-logits]
    python predict.py --weights weights/fcn8s --input photos/ --out predictions/

Writes, for each input, OUT/<stem>.png (class indices as a palette PNG in the dataset's colours,
the input's height and width), OUT/<stem>_overlay.png (the image beside its coloured mask, with
a legend of the classes present) and, with --save-logits, OUT/<stem>.npy (float32 logits,
H x W x n_class). Outputs are named by each input's file stem. Preprocessing comes from the
weights' metadata. Exit codes: 0 ok; 2 bad input.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from fcn_jax.errors import run_cli


def main(argv: Sequence[str] | None = None) -> int:
    """Predict; returns the exit code."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--weights", required=True, type=Path, help="weights directory")
    p.add_argument("--input", required=True, type=Path, help="image file or folder of images")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--save-logits", action="store_true", help="also write <stem>.npy logits")
    p.add_argument("--step", type=int, help="checkpoint step of --weights (default: latest)")
    p.add_argument("--best", action="store_true", help="a training workdir's best checkpoint")
    args = p.parse_args(argv)
    from fcn_jax.checkpoint import best_step
    from fcn_jax.inference import predict_files

    step = best_step(args.weights) if args.best else args.step
    written = predict_files(args.weights, args.input, args.out, args.save_logits, step=step)
    print(f"wrote {len(written)} prediction(s) to {args.out}")
    return 0


if __name__ == "__main__":
    run_cli(main)
