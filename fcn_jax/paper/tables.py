"""The paper's tables as data: ``assets/paper_tables.toml`` parsed and checked.

A table lists *columns* (our metric names, ``pixel_acc``, ``mean_acc``, ``mean_iou``, ``fw_iou``
in percent, ``<set>.<metric>`` for a metric set of a multi-head network such as SIFT Flow's
``semantic`` / ``geometric``, and ``forward_ms``) and *rows*. A row either names the config and
the weights that produce it, or says why the suite cannot (``na``). The file's header comment
describes every field; this module refuses a file that breaks those rules, naming the table and
row, so a typo in the data cannot silently drop a figure.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fcn_jax.errors import FCNError
from fcn_jax.resources import ASSETS

PAPER_TABLES = ASSETS / "paper_tables.toml"
FORWARD_MS = "forward_ms"  # the timing column (Tables 1 and 3), milliseconds
METRICS = ("pixel_acc", "mean_acc", "mean_iou", "fw_iou")  # fields of fcn_jax.eval Metrics
METRIC_LABELS = {
    "pixel_acc": "pixel acc",
    "mean_acc": "mean acc",
    "mean_iou": "mean IU",
    "fw_iou": "f.w. IU",
    FORWARD_MS: "forward ms",
}
# How a metric set shows in a column header; SIFT Flow's semantic head is the paper's main one,
# so its metrics keep the plain names.
SET_LABELS = {
    "": "",
    "semantic": "",
    "geometric": "geo.",
    "voc2011_test": "VOC2011 test",
    "voc2012_test": "VOC2012 test",
}


@dataclasses.dataclass(frozen=True)
class Row:
    """One row of a table.

    Attributes:
        name: the model as the paper names it (``FCN-8s``).
        paper: column -> the paper's figure (percent, or ms for ``forward_ms``).
        config: the experiment config (``configs/<config>.py``) that defines the row's dataset
            and model; ``None`` for a row the suite cannot produce.
        weights: names looked up under the weights folder, first present wins: ``<name>/`` (a
            weights directory or training workdir) or ``<name>.pth`` (torchfcn, converted).
        na: why the suite cannot produce the row; ``None`` if it can.
        references: label -> column -> figure of other published reproductions (torchfcn).
        note: a remark shown with the row.
    """

    name: str
    paper: dict[str, float]
    config: str | None = None
    weights: tuple[str, ...] = ()
    na: str | None = None
    references: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    note: str = ""

    @property
    def producible(self) -> bool:
        """Whether the suite can evaluate this row (it has a config and weights names)."""
        return self.na is None


@dataclasses.dataclass(frozen=True)
class Table:
    """One of the paper's tables (or the release's results).

    Attributes:
        key: the name ``--table`` takes (``1`` ... ``6``, ``release``).
        title: what the table shows.
        source: the paper version and table number it is copied from.
        dataset: the data it scores, in words.
        split: the split every producible row is evaluated on.
        data_root: what ``--data-root`` must hold, in words.
        columns: the figures compared, in order.
        rows: the rows, in the paper's order.
        notes: remarks printed under the table.
    """

    key: str
    title: str
    source: str
    dataset: str
    split: str
    data_root: str
    columns: tuple[str, ...]
    rows: tuple[Row, ...]
    notes: tuple[str, ...] = ()

    @property
    def producible_rows(self) -> tuple[Row, ...]:
        """The rows the suite can evaluate."""
        return tuple(row for row in self.rows if row.producible)

    @property
    def reference_labels(self) -> tuple[str, ...]:
        """Labels of the rows' references, in order of first appearance."""
        labels: dict[str, None] = {}
        for row in self.rows:
            labels.update(dict.fromkeys(row.references))
        return tuple(labels)


def split_column(column: str) -> tuple[str, str]:
    """``(metric set, metric)`` of a column: ``semantic.mean_iou`` -> ``("semantic", "mean_iou")``.

    A plain metric belongs to the set ``""`` (a single-head network's, as in eval.py's result).
    """
    metric_set, _, metric = column.rpartition(".")
    return metric_set, metric


def column_label(column: str) -> str:
    """A column's header text.

    ``mean_iou`` -> ``mean IU``, ``geometric.pixel_acc`` -> ``geo. pixel acc``.
    """
    metric_set, metric = split_column(column)
    prefix = SET_LABELS.get(metric_set, metric_set.replace("_", " "))
    return f"{prefix} {METRIC_LABELS.get(metric, metric)}".strip()


def _flatten(figures: Mapping[str, Any], where: str, prefix: str = "") -> dict[str, float]:
    """``{set: {metric: x}}`` or ``{"set.metric": x}`` -> ``{"set.metric": x}``, numbers only."""
    flat: dict[str, float] = {}
    for key, value in figures.items():
        if isinstance(value, Mapping):
            flat |= _flatten(value, where, f"{prefix}{key}.")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[f"{prefix}{key}"] = float(value)
        else:
            raise FCNError(f"{where}: {prefix}{key} = {value!r} is not a number")
    return flat


def _parse_row(raw: Mapping[str, Any], columns: tuple[str, ...], where: str) -> Row:
    known = {"name", "paper", "config", "weights", "na", "references", "note"}
    unknown = sorted(set(raw) - known)
    if unknown or "name" not in raw or "paper" not in raw:
        raise FCNError(f"{where}: a row needs name and paper and takes {sorted(known)}: {raw}")
    where = f"{where} row {raw['name']!r}"
    paper = _flatten(raw["paper"], where)
    references = {
        label: _flatten(figures, f"{where} reference {label!r}")
        for label, figures in raw.get("references", {}).items()
    }
    for figures in (paper, *references.values()):
        stray = sorted(set(figures) - set(columns))
        if stray:
            raise FCNError(f"{where}: figures {stray} are not columns of the table {columns}")
    weights = tuple(raw.get("weights", ()))
    producible = raw.get("config") is not None and bool(weights)
    if producible == ("na" in raw):
        raise FCNError(f"{where}: give either config and weights, or na (the reason it is n/a)")
    return Row(
        name=str(raw["name"]),
        paper=paper,
        config=raw.get("config"),
        weights=weights,
        na=raw.get("na"),
        references=references,
        note=str(raw.get("note", "")),
    )


def parse_tables(data: Mapping[str, Any], where: str = "paper tables") -> dict[str, Table]:
    """Build and check the tables of the data file's parsed TOML (``{"tables": {key: ...}}``)."""
    tables = {}
    for key, raw in data.get("tables", {}).items():
        at = f"{where}, table {key}"
        needed = ("title", "source", "dataset", "split", "data_root", "columns", "rows")
        missing = [k for k in needed if k not in raw]
        if missing:
            raise FCNError(f"{at} lacks {missing}")
        columns = tuple(raw["columns"])
        bad = [c for c in columns if c != FORWARD_MS and split_column(c)[1] not in METRICS]
        if bad:
            raise FCNError(
                f"{at}: unknown columns {bad}; use {FORWARD_MS} or [set.]metric, metrics "
                f"{list(METRICS)}"
            )
        rows = tuple(_parse_row(r, columns, at) for r in raw["rows"])
        names = [row.name for row in rows]
        if len(set(names)) != len(names):
            raise FCNError(f"{at}: row names must be unique, got {names}")
        tables[str(key)] = Table(
            key=str(key),
            title=raw["title"],
            source=raw["source"],
            dataset=raw["dataset"],
            split=raw["split"],
            data_root=raw["data_root"],
            columns=columns,
            rows=rows,
            notes=tuple(raw.get("notes", ())),
        )
    if not tables:
        raise FCNError(f"{where} holds no [tables.<key>]")
    return tables


def load_tables(path: str | Path = PAPER_TABLES) -> dict[str, Table]:
    """The paper's tables, by key (``1`` ... ``6``, ``release``), from the data file."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise FCNError(f"cannot read the paper's tables from {path}: {e}") from None
    return parse_tables(data, str(path))
