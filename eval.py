#!/usr/bin/env python
r"""Score weights on a dataset split with the paper's metrics (optionally beside PyTorch).

    python eval.py --config configs/voc_fcn8s.py --weights weights/fcn8s \
        --config.data.root=/data/pascal [--config.data.split=seg11valid] [--out metrics.json] \
        [--against-torch] [--bucket] [--config.dtype=bfloat16]

Evaluates ``config.data.eval_split`` (seg11valid for the VOC configs); ``--config.data.split``
or ``--config.data.eval_split`` on this command line names another split or a list file.
WEIGHTS is a weights directory or a PyTorch .pth converted on the fly (arch from the config).
How to evaluate comes from the config: ``eval.bucket`` (``--bucket`` / ``--nobucket`` override
it), ``eval.batch_size``, ``dtype``, ``num_devices``, ``data.buckets`` (or ``data.max_size`` and
``data.bucket_step``) and ``data.worker_count``. ``--out`` is checked before any work.
Exit codes: 0 ok; 1 --against-torch found a mean IU difference past its tolerance; 2 bad input.
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import flags

from fcn_jax.cli import parse_flags, run


def define_flags(fv: flags.FlagValues) -> None:
    """eval.py's own flags (parse_flags adds --config)."""
    flags.DEFINE_string("weights", None, "weights directory or PyTorch .pth file", flag_values=fv)
    flags.DEFINE_string("out", None, "write the metrics JSON here", flag_values=fv)
    flags.DEFINE_bool(
        "against-torch", False, "also score the project's PyTorch FCN, same weights", flag_values=fv
    )
    flags.DEFINE_bool(
        "bucket",
        None,
        "padded batches over the devices instead of whole images (default: config.eval.bucket)",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "step", None, "checkpoint step of a weights directory (default: latest)", flag_values=fv
    )
    flags.DEFINE_bool(
        "best", False, "the training workdir's best checkpoint (validation mean IU)", flag_values=fv
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Evaluate; returns the exit code."""
    required = {"weights": "a weights directory or a .pth file"}
    args = parse_flags(define_flags, argv, __doc__, config=True, required=required)
    from fcn_jax.eval.run import eval_split, evaluate_weights

    return evaluate_weights(
        args.config,
        args.weights,
        eval_split(args.config, args.config_overrides),
        out=args.out,
        config_file=args.config_file,
        bucket=args.bucket,
        step=args.step,
        best=args.best,
        against_torch=args.against_torch,
    )


if __name__ == "__main__":
    run(main)
