#!/usr/bin/env python
r"""Convert PyTorch weights (VGGs, ResNets, torchfcn/SpeedPaper/torchvision FCNs) to Flax, and back.

    python convert_torch_weights.py --src vgg16.pth --arch fcn32s --out weights/fcn32s-init
    python convert_torch_weights.py --src fcn8s_from_caffe.pth --arch fcn8s \
        --out weights/fcn8s --check
    python convert_torch_weights.py --to-torch --src weights/fcn8s --out fcn8s.pth
    python convert_torch_weights.py --src 169.pth --arch speedpaper \
        --preprocessing torchvision --out weights/speedpaper --check
    python convert_torch_weights.py --src BaseLine_76e_43.7023%.pkl --arch speedpaper \
        --mean 0.2 0.2 0.2 --std 0.25 0.25 0.25 --grey --out weights/speedpaper-own
    python convert_torch_weights.py --src fcn_resnet50_coco-1167a1af.pth --arch fcn_resnet50 \
        --out weights/fcn_resnet50 --check
    python convert_torch_weights.py --src resnet101-63fe2227.pth --arch fcn_resnet101 \
        --out weights/fcn_resnet101-init

Exit codes: 0 ok; 1 ``--check`` found a difference past tolerance; 2 bad input.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from absl import flags

from fcn_jax.checkpoint import load_weights, save_weights
from fcn_jax.cli import Args, parse_flags, run
from fcn_jax.errors import FCNError
from fcn_jax.models.spec import ARCHS
from fcn_jax.outputs import output_dir, output_file
from fcn_jax.preprocessing import PRESETS
from fcn_jax.resources import VOC_SAMPLE_IMAGE, read_class_names

REQUIRED = {
    "src": "the .pth file (or, with --to-torch, the weights directory) to convert",
    "out": "the weights directory (or, with --to-torch, the .pth file) to write",
}


def define_flags(fv: flags.FlagValues) -> None:
    """The command line."""
    flags.DEFINE_string(
        "src", None, ".pth file (or, with --to-torch, a weights dir)", flag_values=fv
    )
    flags.DEFINE_enum(
        "arch",
        None,
        sorted(ARCHS),
        "network to build (speedpaper: SpeedPaper's; fcn_resnet50/101: torchvision's)",
        flag_values=fv,
    )
    flags.DEFINE_string("out", None, "weights directory (or .pth with --to-torch)", flag_values=fv)
    flags.DEFINE_integer(
        "n-class", None, "class count (checked against a checkpoint's)", flag_values=fv
    )
    flags.DEFINE_string("class-names", None, "text file, one class name per line", flag_values=fv)
    flags.DEFINE_string(
        "preprocessing",
        None,
        f"preset the weights expect ({', '.join(PRESETS)}); default: from the source's kind",
        flag_values=fv,
    )
    for name, what in (("mean", "means"), ("std", "standard deviations")):
        flags.DEFINE_string(
            name,
            None,
            f"instead of --preprocessing: the per-channel {what} the weights expect, three "
            f"numbers R G B for pixels in [0, 1] (--{name} R G B or --{name}=R,G,B)",
            flag_values=fv,
        )
    flags.DEFINE_bool(
        "grey",
        False,
        "with --mean / --std: the network reads grey images replicated to three channels "
        "(colour inputs are made grey first, as PIL's convert('L'))",
        flag_values=fv,
    )
    flags.DEFINE_bool("check", False, "compare PyTorch and Flax outputs", flag_values=fv)
    flags.DEFINE_string(
        "image",
        str(VOC_SAMPLE_IMAGE),
        "input for --check (default: the bundled VOC sample)",
        flag_values=fv,
    )
    flags.DEFINE_bool(
        "to-torch",
        False,
        "weights dir -> PyTorch checkpoint (torchfcn's layout; SpeedPaper's for speedpaper, "
        "torchvision's for fcn_resnet50/101)",
        flag_values=fv,
    )
    flags.DEFINE_bool("overwrite", False, "replace an existing --out", flag_values=fv)


def check_outputs(args: Args) -> None:
    """Every input exists and ``--out`` can take the result, before anything is loaded.

    Conversion reads and converts ~500 MB; a bad ``--out`` must fail before that, and no
    ``--out`` (with or without ``--overwrite``) may replace the source or anything holding it.
    """
    if not Path(args.src).exists():
        what = "weights directory" if args.to_torch else ".pth file"
        raise FCNError(f"--src {args.src} does not exist: give the {what} to convert")
    if not args.to_torch and args.arch is None:
        raise FCNError("--arch is required: one of " + ", ".join(sorted(ARCHS)))
    if args.class_names is not None and not Path(args.class_names).is_file():
        raise FCNError(f"--class-names file {args.class_names} does not exist")
    if args.check and not Path(args.image).is_file():
        raise FCNError(f"--image {args.image} does not exist: the --check input")
    inputs = {"--src": args.src, "--class-names": args.class_names, "--image": args.image}
    hint = "choose another --out or pass --overwrite"
    if args.to_torch:
        output_file(args.out, "--out", inputs=inputs, overwrite=args.overwrite, hint=hint)
    else:
        output_dir(
            args.out,
            "--out",
            inputs=inputs,
            deletes="--overwrite replaces it" if args.overwrite else "",
            overwrite=args.overwrite,
            hint=hint,
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Convert (or export), optionally check; returns the exit code."""
    argv = join_numbers(list(sys.argv[1:] if argv is None else argv), ("--mean", "--std"))
    args = parse_flags(define_flags, argv, __doc__, required=REQUIRED)
    # Imported here so that --help answers without loading jax and torch.
    from fcn_jax.convert import (
        convert_torch_file,
        custom_preprocessing,
        export_torch,
        read_torch_weights,
    )
    from fcn_jax.convert.check import check_parity
    from fcn_jax.data.io import read_image

    preprocessing = custom_preprocessing(
        parse_numbers(args.mean, "--mean"), parse_numbers(args.std, "--std"), args.grey
    )
    if preprocessing is not None and (args.preprocessing is not None or args.to_torch):
        raise FCNError("--mean / --std go with a conversion to fcn-jax, not with --preprocessing")
    check_outputs(args)
    if args.to_torch:
        out = export_torch(args.src, args.out)
        print(f"wrote {out}")
        source = read_torch_weights(out)
        variables, metadata = load_weights(args.src, as_numpy=True)
    else:
        names = read_class_names(Path(args.class_names)) if args.class_names else None
        variables, metadata, source = convert_torch_file(
            args.src,
            args.arch,
            args.n_class,
            names,
            args.preprocessing,
            preprocessing=preprocessing,
        )
        save_weights(args.out, variables, metadata, overwrite=args.overwrite)
        print(
            f"converted {source.kind} {args.src} -> {args.out}: {metadata.arch}, "
            f"{metadata.n_class} classes, width {metadata.width:g}, "
            f"preprocessing {metadata.preprocessing.name}"
            + (
                f", evaluated at shorter side {metadata.eval_resize}"
                if metadata.eval_resize is not None
                else ""
            )
        )
    if not args.check:
        return 0
    report = check_parity(source, variables, metadata, read_image(Path(args.image)))
    print(f"\nparity check on {args.image}:")
    print(report.format())
    return 0 if report.passed else 1


def join_numbers(argv: list[str], names: Sequence[str]) -> list[str]:
    """``--mean 0.5 0.5 0.5`` -> ``--mean=0.5,0.5,0.5`` (absl flags take one value each).

    The numbers after each of ``names`` are joined, as many as follow (a count other than
    three is then an error naming the flag, not a stray argument).
    """
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg not in names:
            out.append(arg)
            continue
        values = []
        while i < len(argv) and _is_number(argv[i]):
            values.append(argv[i])
            i += 1
        out.append(f"{arg}={','.join(values)}" if values else arg)
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def parse_numbers(text: str | None, flag: str) -> list[float] | None:
    """``"0.5,0.5,0.5"`` (or space-separated) -> floats; a non-number: an error naming ``flag``."""
    if text is None:
        return None
    parts = text.replace(",", " ").split()
    try:
        return [float(p) for p in parts]
    except ValueError:
        raise FCNError(f"{flag} takes numbers (R G B, pixels in [0, 1]), got {text!r}") from None


if __name__ == "__main__":
    run(main)
