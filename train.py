#!/usr/bin/env python
r"""Train an FCN from a config; rerunning the same command resumes from the last checkpoint.

    python train.py --config configs/voc_fcn32s.py --workdir runs/fcn32s \
        --config.data.root=/data/pascal [--config.key=value ...]

The workdir is a weights directory: eval.py and predict.py take it as --weights.
Every device of the host trains (data parallel; config.parallel = sharding | pmap). Several
hosts: run the same command on each, under SLURM (srun) or on a TPU pod slice it joins the others
by itself; elsewhere add --coordinator_address host:port --num_processes N --process_id i.
Exit codes: 0 done; 2 bad input (config key, split, workdir, init.from_) or a NaN loss.
"""

from __future__ import annotations

import json

from absl import flags

from fcn_jax.cli import FLAGS, define_config_flag, enable_compilation_cache, run_config_cli

define_config_flag()
flags.DEFINE_string("workdir", None, "directory for checkpoints, logs and samples")
flags.DEFINE_string("coordinator_address", None, "multi-host: process 0's host:port")
flags.DEFINE_integer("num_processes", None, "multi-host: number of processes (hosts)")
flags.DEFINE_integer("process_id", None, "multi-host: this process's index, 0 .. N-1")


def main() -> int:
    """Train; returns the exit code."""
    from fcn_jax import distributed
    from fcn_jax.errors import FCNError
    from fcn_jax.train.loop import train_and_evaluate

    if not FLAGS.workdir:
        raise FCNError("--workdir is required: where checkpoints, logs and samples go")
    distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    enable_compilation_cache()
    summary = train_and_evaluate(FLAGS.config, FLAGS.workdir)
    import jax

    if jax.process_index() == 0:
        print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    run_config_cli(main)
