"""Score a weights directory (or a .pth) on a config's split: what eval.py runs."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping

import ml_collections


def eval_split(config: ml_collections.ConfigDict, overrides: Mapping[str, object]) -> str:
    """The split eval.py scores: ``config.data.eval_split``, or ``data.split`` when overridden.

    On eval.py's command line the training split means nothing: ``--config.data.split`` names
    the split to score, like ``--config.data.eval_split``.

    Args:
        config: the experiment config.
        overrides: the ``--config.KEY`` values of the command line, by dotted key.
    """
    return config.data.split if "data.split" in overrides else config.data.eval_split


def evaluate_weights(
    config: ml_collections.ConfigDict,
    weights: str,
    split: str,
    *,
    out: str | None = None,
    config_file: str = "",
    bucket: bool | None = None,
    step: int | None = None,
    best: bool = False,
    against_torch: bool = False,
) -> int:
    """Evaluate ``weights`` on ``split`` of the config's dataset; print (and write) the metrics.

    Args:
        config: the experiment config: how to evaluate (eval.*, dtype, num_devices, data.*).
        weights: a weights directory (a training workdir included) or a PyTorch .pth.
        split: the split name or list file to score.
        out: where to write the metrics JSON; checked before any work.
        config_file: the config's path (never a place ``out`` may write to).
        bucket: padded batches over the devices (True) or whole images (False); None: the
            config's ``eval.bucket``.
        step: the checkpoint step of a weights directory (None: the latest).
        best: the training workdir's best checkpoint (validation mean IU) instead of ``step``.
        against_torch: also score the project's PyTorch FCN with the same weights.

    Returns:
        The exit status: 0, or 1 when ``against_torch`` found the mean IUs too far apart.

    Raises:
        FCNError: bad input (weights, data, config, ``out``).
    """
    from fcn_jax.checkpoint import best_step
    from fcn_jax.cli import enable_compilation_cache
    from fcn_jax.configs import resolve_n_class
    from fcn_jax.convert import load_weights_for_config
    from fcn_jax.data import make_dataset
    from fcn_jax.errors import warn
    from fcn_jax.eval.evaluate import EvalOptions, evaluate
    from fcn_jax.outputs import output_file

    # Before any work: an unwritable --out used to fail after the whole evaluation.
    config_path = config_file.partition(":")[0]  # without its :variant
    inputs = {"weights": weights, "config": config_path}
    out_file = output_file(out, "--out", inputs=inputs) if out else None
    # The config says how to evaluate; --bucket / --nobucket, when given, win (None: not given).
    options = EvalOptions.from_config(config, bucket)
    if not options.bucket and options.batch_size != 1:
        warn(
            f"config.eval.batch_size={options.batch_size} is for bucketed evaluation "
            "(config.eval.bucket or --bucket); whole images are scored one at a time"
        )
    enable_compilation_cache()
    variables, metadata = load_weights_for_config(
        config, weights, best_step(weights) if best else step
    )
    dataset = make_dataset(config, split)
    # An unset model.n_class is the data's; a set one must be (the weights' is checked by
    # evaluate against the data).
    resolve_n_class(config, dataset)
    mode = f"bucketed, batches of {options.batch_size}" if options.bucket else "whole images"
    print(f"evaluating {weights} ({metadata.arch}) on {dataset!r} ({mode})")
    result = evaluate(
        variables, metadata, dataset, **dataclasses.asdict(options), against_torch=against_torch
    )
    print(result.format())
    if out_file is not None:
        out_file.write_text(json.dumps(result.to_json(), indent=2, allow_nan=False) + "\n")
        print(f"wrote {out_file}")
    return 0 if result.torch_agrees else 1
