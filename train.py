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
by itself; elsewhere add --coordinator-address host:port --num-processes N --process-id i (the
underscore spellings --coordinator_address, ... are aliases).
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
from collections.abc import Sequence

from absl import flags

from fcn_jax.cli import parse_flags, run

# Multi-host flags, hyphenated like every other flag; the underscore spellings (jax's own
# argument names, documented before) stay as aliases.
MULTI_HOST = {
    "coordinator-address": "coordinator_address",
    "num-processes": "num_processes",
    "process-id": "process_id",
}


def define_flags(fv: flags.FlagValues) -> None:
    """train.py's own flags (parse_flags adds --config)."""
    flags.DEFINE_string(
        "workdir", None, "directory for checkpoints, logs and samples", flag_values=fv
    )
    flags.DEFINE_string(
        "coordinator-address", None, "multi-host: process 0's host:port", flag_values=fv
    )
    flags.DEFINE_integer(
        "num-processes", None, "multi-host: number of processes (hosts)", flag_values=fv
    )
    flags.DEFINE_integer(
        "process-id", None, "multi-host: this process's index, 0 .. N-1", flag_values=fv
    )
    for name, alias in MULTI_HOST.items():
        flags.DEFINE_alias(alias, name, flag_values=fv)


def main(argv: Sequence[str] | None = None) -> int:
    """Train; returns the exit code."""
    required = {"workdir": "where checkpoints, logs and samples go"}
    args = parse_flags(define_flags, argv, __doc__, config=True, required=required)
    from fcn_jax import distributed
    from fcn_jax.cli import enable_compilation_cache
    from fcn_jax.train.interrupts import TrainingInterrupted
    from fcn_jax.train.loop import train_and_evaluate
    from fcn_jax.train.workdir import check_workdir

    check_workdir(args.config, args.workdir)  # before any work (the loop checks it again)
    distributed.initialize(args.coordinator_address, args.num_processes, args.process_id)
    enable_compilation_cache()
    import jax

    try:
        summary = train_and_evaluate(
            args.config,
            args.workdir,
            config_file=args.config_file,
            overrides=args.config_overrides,
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
        run(main)
    except KeyboardInterrupt:  # Ctrl-C outside the training loop's own handler (imports, ...)
        print("interrupted; no checkpoint was being written", file=sys.stderr)
        sys.exit(130)
