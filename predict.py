#!/usr/bin/env python
"""Predict class maps with a weights directory.

    python predict.py --weights weights/fcn8s --input image.jpg --out predictions/ [--save-logits]

Writes OUT/<stem>.png (class indices as a VOC-palette PNG, the input's height and width) and, with
--save-logits, OUT/<stem>.npy (float32 logits, H x W x n_class); with --side-by-side,
OUT/<stem>_side.png (the image beside its coloured prediction). Preprocessing comes from the
weights' metadata.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from fcn_jax.errors import run_cli


def main(argv: Sequence[str] | None = None) -> int:
    """Predict the input image; returns the exit code."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--weights", required=True, type=Path, help="weights directory")
    p.add_argument("--input", required=True, type=Path, help="image file")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--save-logits", action="store_true", help="also write <stem>.npy logits")
    p.add_argument(
        "--side-by-side", action="store_true", help="also write <stem>_side.png: image | prediction"
    )
    args = p.parse_args(argv)
    from fcn_jax.inference import predict_files

    for path in predict_files(
        args.weights, [args.input], args.out, args.save_logits, args.side_by_side
    ):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    run_cli(main)
