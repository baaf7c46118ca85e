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

import dataclasses
import json
import sys

from absl import flags

from fcn_jax.cli import FLAGS, define_config_flag, enable_compilation_cache, run_config_cli

define_config_flag()
flags.DEFINE_string("weights", None, "weights directory or PyTorch .pth file")
flags.DEFINE_string("out", None, "write the metrics JSON here")
flags.DEFINE_bool("against-torch", False, "also score the project's PyTorch FCN, same weights")
flags.DEFINE_bool(
    "bucket",
    None,
    "padded batches over the devices instead of whole images (default: config.eval.bucket)",
)
flags.DEFINE_integer("step", None, "checkpoint step of a weights directory (default: latest)")
flags.DEFINE_bool("best", False, "the training workdir's best checkpoint (validation mean IU)")


def main() -> int:
    """Evaluate; returns the exit code."""
    from fcn_jax.checkpoint import best_step
    from fcn_jax.configs import resolve_n_class
    from fcn_jax.convert import load_weights_for_config
    from fcn_jax.data import make_dataset
    from fcn_jax.errors import FCNError, warn
    from fcn_jax.eval.evaluate import EvalOptions, evaluate
    from fcn_jax.outputs import output_file

    config = FLAGS.config
    if FLAGS.weights is None:
        raise FCNError("--weights is required: a weights directory or a .pth file")
    # Before any work: an unwritable --out used to fail after the whole evaluation.
    config_file = FLAGS["config"].config_filename.partition(":")[0]  # without its :variant
    out = (
        output_file(FLAGS.out, "--out", inputs={"weights": FLAGS.weights, "config": config_file})
        if FLAGS.out
        else None
    )
    # The config says how to evaluate; --bucket / --nobucket, when given, win (None: not given).
    options = EvalOptions.from_config(config, FLAGS.bucket)
    if not options.bucket and options.batch_size != 1:
        warn(
            f"config.eval.batch_size={options.batch_size} is for bucketed evaluation "
            "(config.eval.bucket or --bucket); whole images are scored one at a time"
        )
    # On eval.py's command line the training split means nothing: --config.data.split names the
    # split to score, like --config.data.eval_split.
    split_given = any(a.startswith("--config.data.split") for a in sys.argv)
    split = config.data.split if split_given else config.data.eval_split
    enable_compilation_cache()
    step = best_step(FLAGS.weights) if FLAGS.best else FLAGS.step
    params, metadata = load_weights_for_config(config, FLAGS.weights, step)
    dataset = make_dataset(config, split)
    # An unset model.n_class is the data's; a set one must be (the weights' is checked by
    # evaluate against the data).
    resolve_n_class(config, dataset)
    mode = f"bucketed, batches of {options.batch_size}" if options.bucket else "whole images"
    print(f"evaluating {FLAGS.weights} ({metadata.arch}) on {dataset!r} ({mode})")
    result = evaluate(
        params,
        metadata,
        dataset,
        **dataclasses.asdict(options),
        against_torch=FLAGS["against-torch"].value,
    )
    print(result.format())
    if out is not None:
        out.write_text(json.dumps(result.to_json(), indent=2, allow_nan=False) + "\n")
        print(f"wrote {out}")
    return 0 if result.torch_agrees else 1


if __name__ == "__main__":
    run_config_cli(main)
