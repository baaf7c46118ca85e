"""A reproduced table: the paper's figures, ours and the difference, as markdown and JSON.

Every row of the paper's table appears, whatever happened to it: evaluated (ours and the
difference), ``n/a`` (the suite cannot produce it, with the reason) or ``missing`` (the suite
could, but its weights are not where the report looked; the cell says what to put there). A
reader therefore sees the table's gaps next to its numbers, never a shorter table.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from fcn_jax.paper.tables import FORWARD_MS, Row, Table, column_label

EVALUATED = "evaluated"
NA = "n/a"
MISSING = "missing"


@dataclasses.dataclass(frozen=True)
class RowResult:
    """What became of one row.

    Attributes:
        row: the paper's row.
        status: :data:`EVALUATED`, :data:`NA` or :data:`MISSING`.
        ours: column -> our figure (percent, ms for ``forward_ms``; NaN where undefined), for
            an evaluated row.
        weights: the weights evaluated (a folder or ``.pth``), as shown to the reader.
        detail: the n/a reason, what is missing and where it goes, or how the row was produced
            (width of narrow weights, checkpoint step).
        n_images: images scored.
        seconds: evaluation wall time.
    """

    row: Row
    status: str
    ours: dict[str, float] = dataclasses.field(default_factory=dict)
    weights: str | None = None
    detail: str = ""
    n_images: int | None = None
    seconds: float | None = None

    @property
    def diff(self) -> dict[str, float]:
        """Column -> ours - paper, where both exist and ours is defined."""
        return {
            column: value - self.row.paper[column]
            for column, value in self.ours.items()
            if column in self.row.paper and not math.isnan(value)
        }


@dataclasses.dataclass(frozen=True)
class Report:
    """A reproduced table.

    Attributes:
        table: the paper's table.
        results: one per row, in the table's order.
        device: where our figures were computed (``None`` if nothing ran).
        timing: how the ``forward_ms`` column was obtained (``None`` if the table has none).
        weights_dir: the folder the rows' weights were looked up in.
        data_root: the dataset root.
    """

    table: Table
    results: tuple[RowResult, ...]
    device: str | None = None
    timing: str | None = None
    weights_dir: str | None = None
    data_root: str | None = None

    @property
    def evaluated(self) -> int:
        """Number of rows evaluated."""
        return sum(r.status == EVALUATED for r in self.results)

    @property
    def heading(self) -> str:
        """``Table 2: Skip architectures`` (or ``Release: ...`` for the release's results)."""
        key = self.table.key
        name = f"Table {key}" if key.isdigit() else key.capitalize()
        return f"{name}: {self.table.title}"

    def _header(self) -> list[str]:
        cells = ["model"]
        for column in self.table.columns:
            label = column_label(column)
            cells.append(f"{label} paper")
            cells += [
                f"{label} {ref}"
                for ref in self.table.reference_labels
                if any(column in row.references.get(ref, {}) for row in self.table.rows)
            ]
            cells += [f"{label} ours", f"{label} diff"]
        return [*cells, "weights / status"]

    def _cells(self, result: RowResult) -> list[str]:
        row = result.row
        cells = [row.name]
        for column in self.table.columns:
            cells.append(_paper_number(row.paper.get(column), column))
            for ref in self.table.reference_labels:
                if any(column in r.references.get(ref, {}) for r in self.table.rows):
                    cells.append(_reference_number(row.references.get(ref, {}).get(column)))
            if column not in row.paper:  # nothing to compare with (e.g. a test-server column)
                cells += ["", ""]
            elif result.status == EVALUATED:
                cells.append(_ours_number(result.ours.get(column), column))
                cells.append(_ours_number(result.diff.get(column), column, signed=True))
            else:
                cells += [result.status, ""]
        return [*cells, _status_cell(result)]

    def to_markdown(self) -> str:
        """The report: heading, source, the table, then how ours was produced and the notes."""
        table = self.table
        header = self._header()
        timed = FORWARD_MS in table.columns
        lines = [
            f"## {self.heading}",
            "",
            f"Paper: {table.source}. Data: {table.dataset}, split `{table.split}`.",
            f"Figures in percent{', forward time in ms' if timed else ''}; diff = ours - paper.",
            "",
            _markdown_row(header),
            _markdown_row(["---"] + ["---:"] * (len(header) - 2) + ["---"]),
        ]
        lines += [_markdown_row(self._cells(r)) for r in self.results]
        lines.append("")
        counts = {
            status: sum(r.status == status for r in self.results)
            for status in (EVALUATED, MISSING, NA)
        }
        lines.append(
            f"- Rows: {counts[EVALUATED]} evaluated, {counts[MISSING]} missing, {counts[NA]} n/a."
        )
        if self.device:
            lines.append(f"- Ours computed on {self.device}.")
        if self.weights_dir:
            lines.append(f"- Weights from `{self.weights_dir}`; data from `{self.data_root}`.")
        if self.timing:
            lines.append(f"- Forward time (ours): {self.timing}.")
        lines += [f"- {note}" for note in table.notes]
        lines += [f"- {r.row.name}: {r.row.note}" for r in self.results if r.row.note]
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict: the table's description, then per row paper, ours, diff and status.

        Undefined figures (NaN) are ``None``, so ``json.dumps(..., allow_nan=False)`` works.
        """
        table = self.table
        return {
            "table": table.key,
            "title": table.title,
            "source": table.source,
            "dataset": table.dataset,
            "split": table.split,
            "columns": list(table.columns),
            "units": "percent; forward_ms in milliseconds",
            "device": self.device,
            "timing": self.timing,
            "weights_dir": self.weights_dir,
            "data_root": self.data_root,
            "notes": list(table.notes),
            "rows": [
                {
                    "name": r.row.name,
                    "status": r.status,
                    "detail": r.detail,
                    "config": r.row.config,
                    "weights": r.weights,
                    "paper": r.row.paper,
                    "references": r.row.references,
                    "ours": {k: _json_number(v) for k, v in r.ours.items()},
                    "diff": {k: _json_number(v) for k, v in r.diff.items()},
                    "n_images": r.n_images,
                    "seconds": r.seconds,
                    "note": r.row.note,
                }
                for r in self.results
            ],
        }


def _json_number(x: float) -> float | None:
    return None if math.isnan(x) else x


def _paper_number(value: float | None, column: str) -> str:
    """A published figure as printed there: 56.0, 62.84, 210 (ms)."""
    if value is None:
        return ""
    if column == FORWARD_MS and value.is_integer():
        return str(int(value))
    return repr(value)


def _reference_number(value: float | None) -> str:
    """A reproduction's figure with the two decimals torchfcn reports (65.40, not 65.4)."""
    return "" if value is None else f"{value:.2f}"


def _ours_number(value: float | None, column: str, signed: bool = False) -> str:
    """Our figure: two decimals in percent (torchfcn's precision), one in ms; ``-`` if none."""
    if value is None or math.isnan(value):
        return "-"
    decimals = 1 if column == FORWARD_MS else 2
    return f"{value:+.{decimals}f}" if signed else f"{value:.{decimals}f}"


def _status_cell(result: RowResult) -> str:
    if result.status == EVALUATED:
        parts = [f"`{result.weights}`"]
        if result.detail:
            parts.append(result.detail)
        if result.n_images is not None:
            parts.append(f"{result.n_images} images")
        if result.seconds is not None:
            parts.append(f"{result.seconds:.0f} s")
        return ", ".join(parts)
    return f"{result.status}: {result.detail}"


def _markdown_row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"
