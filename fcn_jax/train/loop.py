"""``train_and_evaluate(config, workdir)``: the training loop behind train.py.

:func:`fcn_jax.train.setup.prepare_run` checks every input before any compute and builds or
restores the run (the data, the device layout, the model, the params: from scratch, from
``init.from_``, or the workdir's latest snapshot, whereupon the run continues exactly). The loop
here then only takes steps, calling the periodic hooks of :mod:`fcn_jax.train.hooks`: log,
validate (and draw a sample), save; :class:`fcn_jax.train.writer.Writer` writes the logs.

SIGINT (Ctrl-C) and SIGTERM stop training cleanly at the end of the current step
(:mod:`fcn_jax.train.interrupts`); the workdir's rules and what a resumed run may change are in
:mod:`fcn_jax.train.workdir`.

No host round-trip inside the loop except the periodic read of the step's metrics for the
progress bar and logs, which is also where a NaN/Inf loss stops training (checkpoints are
checked finite before they are written, so nothing after the last good step is saved).

Data parallel over every device of every host (:mod:`fcn_jax.train.parallel`). With several
hosts each reads its share of every global batch, all write the checkpoint together (orbax
coordinates them), each validates on its own devices (the same numbers everywhere), and only
process 0 prints, logs and draws.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax

from fcn_jax.train.hooks import Saver, TrainLog, Validation, every
from fcn_jax.train.interrupts import (
    Interrupted,
    Interrupts,
    RunProgress,
    close_after_error,
    stopped,
)
from fcn_jax.train.optim import learning_rate_schedule
from fcn_jax.train.progress import Progress
from fcn_jax.train.setup import PreparedRun, prepare_run, start_summary
from fcn_jax.train.writer import Writer


def train_and_evaluate(
    config: Any,
    workdir: str | Path,
    progress: bool = True,
    *,
    config_file: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Train (or resume) as ``config`` says, in ``workdir``.

    Args:
        config: the experiment config.
        workdir: the run's folder (checked first, by :func:`check_workdir`).
        progress: show a progress bar.
        config_file: where the config came from, for the start-of-run summary.
        overrides: the ``--config.key=value`` overrides given, for the summary.

    Returns:
        A summary: final step, last validation metrics, compilations, seconds per step.

    Raises:
        FCNError: bad input (the message says what and how to fix it), or a non-finite loss.
        TrainingInterrupted: SIGINT or SIGTERM arrived (handled when called from the main
            thread), once any checkpoint being written was finished.
    """
    workdir = Path(workdir)
    interrupts = Interrupts()
    run = RunProgress()
    with interrupts.installed():
        try:
            prepared = prepare_run(config, workdir, run)
            interrupts.check()  # the setup can take a while (init.from_, a restore)
            if prepared.chief:
                print(start_summary(prepared, config_file, overrides), file=sys.stderr, flush=True)
            return _train(prepared, progress, interrupts, run)
        except Interrupted as e:
            raise stopped(e.signum, run, workdir) from None
        except Exception:
            close_after_error(run)
            raise


def _train(p: PreparedRun, progress: bool, interrupts: Interrupts, run: RunProgress) -> dict:
    """Take the prepared run's steps, with its hooks; ``run`` tells the caller how far it got."""
    config, state, step = p.config, p.state, int(p.dp.local(p.state.step))
    run.step, last = step, config.num_steps
    writer = run.writer = Writer(p.workdir, p.chief)
    per_step = config.batch_size * config.optim.accum_steps
    bar = run.bar = Progress(step, last, per_step, progress and p.chief)
    config_json = json.loads(config.to_json_best_effort())
    save = Saver(p.snapshots, p.metadata, p.iterator, config_json, p.dp, last_saved=p.start)
    schedule = learning_rate_schedule(config, p.steps_per_epoch)
    log = TrainLog(p.dp, schedule, bar, writer, save, p.workdir)
    validate = Validation(p.metadata, p.eval_ds, p.eval_options, writer, p.eval_ds[0])
    logging, validating, saving = (
        every(n, last) for n in (config.log_every, config.eval_every, config.checkpoint_every)
    )
    while step < last:
        interrupts.check()  # between steps: nothing half done (a save is awaited when stopping)
        state, metrics = p.steps.run(state, p.next_batch, config.optim.accum_steps)
        step = run.step = step + 1
        bar.stepped(step, metrics)
        if logging(step):
            log(step, metrics)
        mean_iou = validate(step, p.dp.local(state.variables)) if validating(step) else None
        if saving(step):
            save(step, state, mean_iou)
    bar.close()
    p.snapshots.wait()
    p.snapshots.close()
    writer.close()
    return {
        "step": step,
        "eval": validate.last,
        "compilations": p.steps.traces.count,
        "eval_compilations": validate.compilations,
        "seconds_per_step": bar.seconds() / max(step - (p.start or 0), 1),
        "workdir": str(p.workdir),
        "devices": len(p.dp.devices),
        "processes": jax.process_count(),
        "parallel": p.dp.mode,
    }
