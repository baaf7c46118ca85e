#!/usr/bin/env python
r"""Train an FCN from a config; rerunning the same command resumes from the last checkpoint.

    python train.py --config configs/voc_fcn32s.py --workdir runs/fcn32s \
        --config.data.root=/data/pascal [--config.key=value ...]

The workdir is a weights directory: eval.py and predict.py take it as --weights. It must not be
(or contain) the init.from_ weights or the data root, nor be a converted weights directory.
--config.init.from_=None (or an empty value) trains from scratch; a resumed run does not read
init.from_. Resuming with another model (arch, n_class, width, streams, heads) or optimiser
(optim.name, or a setting that changes its state, e.g. weight decay on/off, optim.trainable)
exits 2; other config changes are listed, then training continues with them.
Every device of the host trains (data parallel; config.parallel = sharding | pmap). Several
hosts: run the same command on each, under SLURM (srun) or on a TPU pod slice it joins the others
by itself; elsewhere add --coordinator_address host:port --num_processes N --process_id i.
A start-of-run summary, the progress bar and messages go to stderr; stdout holds the validation
lines and, at the end, the JSON summary.
Ctrl-C (SIGINT) or SIGTERM: any checkpoint being written is finished, the step a rerun resumes
from is printed, and train.py exits 130 (SIGINT) or 143 (SIGTERM).
Exit codes: 0 done; 2 bad input (config key, split, workdir, init.from_, a config change a
resumed run cannot take) or a NaN loss; 130 / 143 interrupted.
"""

from __future__ import annotations

import json
import sys

from absl import flags
from ml_collections import config_flags

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
    from fcn_jax.train.interrupts import TrainingInterrupted
    from fcn_jax.train.loop import train_and_evaluate
    from fcn_jax.train.workdir import check_workdir

    if not FLAGS.workdir:
        raise FCNError("--workdir is required: where checkpoints, logs and samples go")
    check_workdir(FLAGS.config, FLAGS.workdir)  # before any work (the loop checks it again)
    distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    enable_compilation_cache()
    import jax

    try:
        summary = train_and_evaluate(
            FLAGS.config,
            FLAGS.workdir,
            config_file=config_flags.get_config_filename(FLAGS["config"]),
            overrides=config_flags.get_override_values(FLAGS["config"]),
        )
    except TrainingInterrupted as e:
        if jax.process_index() == 0:
            print(str(e), file=sys.stderr)
        return e.exit_code
    if jax.process_index() == 0:
        print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    try:
        run_config_cli(main)
    except KeyboardInterrupt:  # Ctrl-C outside the training loop's own handler (imports, ...)
        print("interrupted; no checkpoint was being written", file=sys.stderr)
        sys.exit(130)
