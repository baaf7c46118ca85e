#!/usr/bin/env python
r"""Score weights on a dataset split with the paper's metrics (optionally beside PyTorch).

    python eval.py --config configs/voc_fcn8s.py --weights weights/fcn8s \
        --config.data.root=/data/pascal [--config.data.split=seg11valid] [--out metrics.json] \
        [--against-torch] [--bucket] [--config.dtype=bfloat16]

Evaluates ``config.data.eval_split`` (seg11valid for the VOC configs); ``--config.data.split``
or ``--config.data.eval_split`` on this command line names another split or a list file.
WEIGHTS is a weights directory or a PyTorch .pth converted on the fly (arch from the config).
Exit codes: 0 ok; 1 --against-torch found a mean IU difference past its tolerance; 2 bad input.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from absl import flags

from fcn_jax.cli import FLAGS, define_config_flag, enable_compilation_cache, run_config_cli

define_config_flag()
flags.DEFINE_string("weights", None, "weights directory or PyTorch .pth file")
flags.DEFINE_string("out", None, "write the metrics JSON here")
flags.DEFINE_bool("against-torch", False, "also score the project's PyTorch FCN, same weights")
flags.DEFINE_bool("bucket", False, "padded batches over all devices instead of whole images")
flags.DEFINE_integer("step", None, "checkpoint step of a weights directory (default: latest)")
flags.DEFINE_bool("best", False, "the training workdir's best checkpoint (validation mean IU)")


def main() -> int:
    """Evaluate; returns the exit code."""
    from fcn_jax.checkpoint import best_step
    from fcn_jax.convert import load_weights_for_config
    from fcn_jax.data import make_dataset
    from fcn_jax.data.transforms import default_buckets
    from fcn_jax.errors import FCNError
    from fcn_jax.eval.evaluate import evaluate

    config = FLAGS.config
    if FLAGS.weights is None:
        raise FCNError("--weights is required: a weights directory or a .pth file")
    # On eval.py's command line the training split means nothing: --config.data.split names the
    # split to score, like --config.data.eval_split.
    split_given = any(a.startswith("--config.data.split") for a in sys.argv)
    split = config.data.split if split_given else config.data.eval_split
    enable_compilation_cache()
    step = best_step(FLAGS.weights) if FLAGS.best else FLAGS.step
    params, metadata = load_weights_for_config(config, FLAGS.weights, step)
    dataset = make_dataset(config, split)
    print(f"evaluating {FLAGS.weights} ({metadata.arch}) on {dataset!r}")
    buckets = config.data.buckets or default_buckets(config.data.max_size, config.data.bucket_step)
    result = evaluate(
        params,
        metadata,
        dataset,
        bucket=FLAGS.bucket,
        batch_size=config.eval.batch_size,
        buckets=tuple(buckets),
        against_torch=FLAGS["against-torch"].value,
        worker_count=config.data.worker_count,
        dtype=config.dtype,
    )
    print(result.format())
    if FLAGS.out:
        Path(FLAGS.out).parent.mkdir(parents=True, exist_ok=True)
        Path(FLAGS.out).write_text(json.dumps(result.to_json(), indent=2, allow_nan=False) + "\n")
        print(f"wrote {FLAGS.out}")
    return 0 if result.torch_agrees else 1


if __name__ == "__main__":
    run_config_cli(main)
