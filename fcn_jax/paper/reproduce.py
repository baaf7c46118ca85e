"""Reproduce one of the paper's tables: evaluate each row's weights on the table's split.

Each producible row of :mod:`fcn_jax.paper.tables` names a config (``configs/<config>.py``:
dataset and model) and the names its weights go by under the weights folder: ``<name>/`` (a
weights directory, or a ``train.py`` workdir of that config) or ``<name>.pth`` (a torchfcn or
torchvision checkpoint, converted on the fly as ``eval.py`` does, with the evaluation resize a
torchvision segmentation checkpoint implies). The network's arch, width and classes come
from the weights (a directory's metadata; a ``.pth``'s tensors), never from an assumption, so
narrow test networks and the paper's full-width ones go through the same path.

Bad input stops before any evaluation: a missing data root, a root that does not hold the
table's dataset, weights of another architecture. Rows whose weights are absent are reported as
missing, not as errors: a table is useful with the rows one has.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import ml_collections

from fcn_jax.bench.records import run_device
from fcn_jax.checkpoint import WeightsMetadata, best_step, load_metadata
from fcn_jax.configs import load_config_file, spec_from_config
from fcn_jax.convert import load_weights_for_config
from fcn_jax.data import SegmentationDataset, make_dataset
from fcn_jax.errors import FCNError
from fcn_jax.eval.evaluate import evaluate
from fcn_jax.eval.metrics import Metrics
from fcn_jax.models import NetSpec
from fcn_jax.paper.report import EVALUATED, MISSING, NA, Report, RowResult
from fcn_jax.paper.tables import FORWARD_MS, Row, Table, split_column
from fcn_jax.paper.timing import (
    TIMING_SIZE,
    TIMING_TRIALS,
    device_description,
    forward_ms_from_bench,
    time_forward,
)


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- where a row's weights and config are --------------------------------------------------------


def find_weights(weights_dir: Path, names: Sequence[str]) -> Path | None:
    """The first of ``<name>/`` or ``<name>.pth`` present under ``weights_dir``, by name order."""
    for name in names:
        for candidate in (weights_dir / name, weights_dir / f"{name}.pth"):
            if candidate.is_dir() or candidate.is_file():
                return candidate
    return None


def missing_weights_message(weights_dir: Path, row: Row) -> str:
    """Where a missing row's weights go and what they are."""
    places = " or ".join(f"`{weights_dir / name}/`" for name in row.weights)
    return (
        f"{places} (a weights directory, or a train.py workdir of configs/{row.config}.py; "
        "or the same name + .pth, a torchfcn or torchvision checkpoint)"
    )


def load_config(configs_dir: Path, name: str, data_root: Path) -> ml_collections.ConfigDict:
    """``configs/<name>.py``'s ``get_config()`` with ``data.root`` set to ``data_root``."""
    path = configs_dir / f"{name}.py"
    if not path.is_file():
        raise FCNError(f"config {path} not found: the paper's tables use the experiment configs")
    config = load_config_file(path)
    config.data.root = str(data_root)
    return config


def _describe(spec: NetSpec) -> str:
    text = f"{spec.arch} with {spec.n_class} classes"
    if spec.backbone != "vgg16":
        text += f" on {spec.backbone}"
    if spec.streams:
        text += f", streams {spec.streams}"
    if len(spec.heads) > 1:
        text += f", heads {spec.head_names}"
    return text


def check_fits(
    row: Row, config: ml_collections.ConfigDict, meta: WeightsMetadata, path: Path
) -> None:
    """Fail unless the weights are the network the row's config defines (width aside).

    Width is the weights' own (narrow networks are evaluated as they are, and the report says
    so); architecture, classes, streams and heads must match, or the row would score another
    model than the paper's.
    """
    want = _describe(spec_from_config(config))
    got = _describe(meta.spec)
    if got != want:
        raise FCNError(
            f"{path} holds a {got}, but row {row.name!r} needs a {want} (configs/{row.config}.py)"
        )


def _choose_step(path: Path, best: bool) -> tuple[int | None, str]:
    """(checkpoint step, how it was chosen): the latest unless ``best`` and validation exists."""
    if not best or not path.is_dir():
        return None, ""
    try:
        step = best_step(path)
    except FCNError:
        return None, "latest step (no validation metrics to pick the best)"
    return step, f"step {step} (best validation mean IU)"


# --- figures ------------------------------------------------------------------------------------


def figures(metrics: Mapping[str, Metrics], columns: Sequence[str]) -> dict[str, float]:
    """Our figures (percent) for the metric columns, from eval's metric sets.

    Args:
        metrics: metric-set name (``""``, ``semantic``, ``geometric``) -> metrics (fractions).
        columns: the columns to fill (``mean_iou``, ``geometric.pixel_acc``, ...).

    Returns:
        column -> 100 x the metric (NaN stays NaN).
    """
    out = {}
    for column in columns:
        metric_set, metric = split_column(column)
        if metric_set not in metrics:
            raise FCNError(
                f"column {column!r} needs the metric set {metric_set!r}, but the network "
                f"produced {sorted(metrics)}"
            )
        out[column] = 100.0 * float(getattr(metrics[metric_set], metric))
    return out


# --- the table ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Plan:
    """A row about to be evaluated: everything checked, nothing computed yet."""

    row: Row
    config: ml_collections.ConfigDict
    weights: Path
    step: int | None
    step_note: str
    dataset: SegmentationDataset


def _dataset_for(
    config: ml_collections.ConfigDict,
    table: Table,
    row: Row,
    cache: dict[tuple, SegmentationDataset],
) -> SegmentationDataset:
    """The table's split as the row's config reads it (shared by rows that read the same)."""
    d = config.data
    key = (d.name, tuple(d.modalities), d.get("year"))
    if key not in cache:
        try:
            cache[key] = make_dataset(config, table.split)
        except FCNError as e:
            raise FCNError(
                f"--data-root {d.root} does not hold {table.dataset} as configs/{row.config}.py "
                f"reads it (split {table.split!r}): {e}"
            ) from None
    return cache[key]


def _evaluate(plan: _Plan, columns: Sequence[str], progress: bool) -> RowResult:
    config, row = plan.config, plan.row
    variables, metadata = load_weights_for_config(config, plan.weights, plan.step)
    check_fits(row, config, metadata, plan.weights)
    result = evaluate(
        variables,
        metadata,
        plan.dataset,
        progress=progress,
        worker_count=config.data.worker_count,
        dtype=config.dtype,
    )
    notes = [n for n in (plan.step_note,) if n]
    if metadata.width != 1.0:  # not the paper's network: say so beside its numbers
        notes.insert(0, f"width {metadata.width:g}")
    return RowResult(
        row=row,
        status=EVALUATED,
        ours=figures(result.metrics, [c for c in columns if c in row.paper and c != FORWARD_MS]),
        weights=plan.weights.name + ("/" if plan.weights.is_dir() else ""),
        detail=", ".join(notes),
        n_images=result.n_images,
        seconds=result.seconds,
    )


def reproduce_table(
    table: Table,
    data_root: Path | None,
    weights_dir: Path | None,
    configs_dir: Path,
    *,
    measure_timing: bool = True,
    timing_json: Path | None = None,
    timing_trials: int = TIMING_TRIALS,
    best: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = _stderr,
) -> Report:
    """Evaluate every producible row of ``table`` whose weights are present; report all rows.

    Args:
        table: the paper's table.
        data_root: the folder holding the table's dataset as its configs' ``data.root`` expects
            (not needed for a table without producible rows).
        weights_dir: the folder holding each row's weights under the row's names.
        configs_dir: the experiment configs (the repository's ``configs/``).
        measure_timing: time the forward pass for a ``forward_ms`` column (Table 1).
        timing_json: take the forward time from bench.py's JSON instead of measuring it.
        timing_trials: trials of the measured forward time.
        best: evaluate a training workdir's best checkpoint (by its validation mean IU, which
            is measured on the same split for VOC: optimistic) instead of its latest.
        progress: show evaluation progress bars.
        log: where progress lines go (stderr, keeping stdout for the report).

    Returns:
        The :class:`~fcn_jax.paper.report.Report`; rows are evaluated, missing or n/a.

    Raises:
        FCNError: no data root or weights folder for a table that needs them, a root that does
            not hold the dataset, or weights that are not the row's network.
    """
    if table.producible_rows:
        for flag, path, holds in (
            ("--data-root", data_root, table.data_root),
            ("--weights-dir", weights_dir, "the folder holding each row's weights"),
        ):
            if path is None:
                raise FCNError(f"{flag} is required for table {table.key}: {holds}")
            if not path.is_dir():
                raise FCNError(f"{flag} {path} is not a directory; it should be {holds}")

    # Check everything that can be wrong before the first (long) evaluation.
    results: dict[str, RowResult] = {}
    plans: list[_Plan] = []
    datasets: dict[tuple, SegmentationDataset] = {}
    for row in table.rows:
        if not row.producible:
            results[row.name] = RowResult(row, NA, detail=str(row.na))
            continue
        assert weights_dir is not None and data_root is not None and row.config is not None
        path = find_weights(weights_dir, row.weights)
        if path is None:
            results[row.name] = RowResult(
                row, MISSING, detail=missing_weights_message(weights_dir, row)
            )
            continue
        config = load_config(configs_dir, row.config, data_root)
        step, step_note = _choose_step(path, best)
        if path.is_dir():  # a .pth's structure is known only once converted
            check_fits(row, config, load_metadata(path, step), path)
        dataset = _dataset_for(config, table, row, datasets)
        plans.append(_Plan(row, config, path, step, step_note, dataset))

    timed = [p for p in plans if FORWARD_MS in p.row.paper]  # a row's figures are columns
    # bench.py's figures are read before the evaluations, so that a bad file stops the run early.
    forward_ms = {}
    if timing_json is not None:
        forward_ms = {
            p.row.name: forward_ms_from_bench(timing_json, p.config.model.arch) for p in timed
        }

    for i, plan in enumerate(plans, 1):
        log(f"[{i}/{len(plans)}] {plan.row.name}: {plan.weights} on {plan.dataset!r}")
        results[plan.row.name] = _evaluate(plan, table.columns, progress)

    timing = None
    if timed:
        if timing_json is not None:
            device = run_device(timing_json) or "device not recorded"
            timing = (
                f"from {timing_json} (bench.py, full width, {TIMING_SIZE}x{TIMING_SIZE}, "
                f"batch 1, float32; {device})"
            )
        elif measure_timing:
            timing = (
                f"median of {timing_trials} trials of the row's network at full width, "
                f"{TIMING_SIZE}x{TIMING_SIZE}, batch 1, float32 (the paper: mean of 20 trials "
                "on a K40c)"
            )
            for plan in timed:
                log(
                    f"timing {plan.row.name}: {timing_trials} trials at {TIMING_SIZE}x{TIMING_SIZE}"
                )
                # The paper's network, whatever the width of the weights evaluated.
                spec = spec_from_config(plan.config).replace(width=1.0)
                forward_ms[plan.row.name] = time_forward(spec, TIMING_SIZE, timing_trials)
        else:
            timing = "not measured"
        for plan in timed:
            result = results[plan.row.name]
            ms = forward_ms.get(plan.row.name, math.nan)
            results[plan.row.name] = dataclasses.replace(
                result, ours={**result.ours, FORWARD_MS: ms}
            )

    return Report(
        table=table,
        results=tuple(results[row.name] for row in table.rows),
        device=device_description() if plans else None,
        timing=timing,
        weights_dir=None if weights_dir is None else str(weights_dir),
        data_root=None if data_root is None else str(data_root),
    )
