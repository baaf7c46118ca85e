#!/usr/bin/env python
"""Train an FCN from a config; rerunning the same command resumes from the last checkpoint.

    python train.py --config configs/voc_fcn32s.py --workdir runs/fcn32s \
        --config.data.root=/data/pascal [--config.key=value ...]

The workdir is a weights directory: eval.py and predict.py take it as --weights.
Exit codes: 0 done; 2 bad input (config key, split, workdir, init.from_) or a NaN loss.
"""

from __future__ import annotations

import json

from absl import flags

from fcn_jax.cli import FLAGS, define_config_flag, enable_compilation_cache, run_config_cli

define_config_flag()
flags.DEFINE_string("workdir", None, "directory for checkpoints, logs and samples")


def main() -> int:
    """Train; returns the exit code."""
    from fcn_jax.errors import FCNError
    from fcn_jax.train.loop import train_and_evaluate

    if not FLAGS.workdir:
        raise FCNError("--workdir is required: where checkpoints, logs and samples go")
    enable_compilation_cache()
    summary = train_and_evaluate(FLAGS.config, FLAGS.workdir)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    run_config_cli(main)
