#!/usr/bin/env python
r"""Reproduce one of the paper's tables: the paper's figures and ours side by side.

    python reproduce.py --table {1,2,3,4,5,6,release,torchvision} --data-root DIR \
        --weights-dir DIR [--out DIR] [--best] [--no-timing | --timing-json bench.json]

Evaluates the models behind each row of the table (weights found under --weights-dir by the
names docs/reproducing.md lists: <name>/ a weights directory or train.py workdir, <name>.pth a
torchfcn or torchvision checkpoint) on the table's split of the dataset under --data-root
(--table torchvision: torchvision's FCN-ResNets on COCO val2017), and prints a markdown
table: per row and figure, the paper's, ours and the difference (ours - paper). Rows the suite
cannot produce print n/a with the reason; rows whose weights are absent print missing, with
where they go. --out DIR also writes DIR/table_<key>.md and DIR/table_<key>.json. Progress goes
to stderr, the report to stdout.

Exit codes: 0 the report was made (a table without producible rows, such as Table 3, included);
2 bad input, or a table with producible rows none of which could be evaluated.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from functools import partial
from pathlib import Path

from absl import flags

from fcn_jax.cli import parse_flags, run
from fcn_jax.errors import FCNError
from fcn_jax.paper.tables import load_tables

CONFIGS = Path(__file__).resolve().parent / "configs"


def define_flags(fv: flags.FlagValues, tables: Iterable[str]) -> None:
    """reproduce.py's flags; ``tables``: the keys ``--table`` accepts."""
    flags.DEFINE_enum("table", None, sorted(tables), "which table", flag_values=fv)
    flags.DEFINE_string("data-root", None, "the folder holding the table's dataset", flag_values=fv)
    flags.DEFINE_string(
        "weights-dir", None, "the folder holding each row's weights", flag_values=fv
    )
    flags.DEFINE_string("out", None, "also write table_<key>.md and .json here", flag_values=fv)
    flags.DEFINE_bool("best", False, "training workdirs' best checkpoint", flag_values=fv)
    flags.DEFINE_bool("no-timing", False, "skip Table 1's forward time", flag_values=fv)
    flags.DEFINE_string("timing-json", None, "take the forward time from bench.py", flag_values=fv)
    flags.DEFINE_integer("timing-trials", 20, "trials of the forward time", flag_values=fv)


def optional_path(value: str | None) -> Path | None:
    """A flag's path, or None when the flag was not given."""
    return None if value is None else Path(value)


def main(argv: Sequence[str] | None = None) -> int:
    """Reproduce a table; returns the exit code."""
    tables = load_tables()
    required = {"table": "one of " + ", ".join(sorted(tables))}
    args = parse_flags(partial(define_flags, tables=tables), argv, __doc__, required=required)
    table = tables[args.table]
    if args.no_timing and args.timing_json is not None:
        raise FCNError("--no-timing and --timing-json exclude each other: give one")
    if args.timing_trials < 1:
        raise FCNError(f"--timing-trials must be at least 1, got {args.timing_trials}")
    out = optional_path(args.out)
    weights_dir = optional_path(args.weights_dir)
    data_root = optional_path(args.data_root)
    timing_json = optional_path(args.timing_json)

    from fcn_jax.cli import enable_compilation_cache
    from fcn_jax.outputs import output_dir
    from fcn_jax.paper.reproduce import reproduce_table

    if out:  # checked before the evaluations, never on top of what the run reads
        output_dir(
            out,
            "--out",
            inputs={
                "--timing-json": timing_json,
                "--weights-dir": weights_dir,
                "--data-root": data_root,
            },
            files=(f"table_{table.key}.md", f"table_{table.key}.json"),
        )

    enable_compilation_cache()
    report = reproduce_table(
        table,
        data_root,
        weights_dir,
        CONFIGS,
        measure_timing=not args.no_timing,
        timing_json=timing_json,
        timing_trials=args.timing_trials,
        best=args.best,
    )
    text = report.to_markdown()
    print(text, end="")
    if out:
        (out / f"table_{table.key}.md").write_text(text)
        (out / f"table_{table.key}.json").write_text(
            json.dumps(report.to_json(), indent=2, allow_nan=False) + "\n"
        )
        print(f"wrote {out / f'table_{table.key}.md'} and .json", file=sys.stderr)
    if table.producible_rows and not report.evaluated:
        raise FCNError(
            f"no row of table {table.key} could be evaluated: none of their weights is under "
            f"{weights_dir} (the missing rows above say what goes where; see "
            "docs/reproducing.md)"
        )
    return 0


if __name__ == "__main__":
    run(main)
