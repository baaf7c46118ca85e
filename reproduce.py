#!/usr/bin/env python
r"""Reproduce one of the paper's tables: the paper's figures and ours side by side.

    python reproduce.py --table {1,2,3,4,5,6,release} --data-root DIR --weights-dir DIR \
        [--out DIR] [--best] [--no-timing | --timing-json bench.json]

Evaluates the models behind each row of the table (weights found under --weights-dir by the
names docs/reproducing.md lists: <name>/ a weights directory or train.py workdir, <name>.pth a
torchfcn checkpoint) on the table's split of the dataset under --data-root, and prints a markdown
table: per row and figure, the paper's, ours and the difference (ours - paper). Rows the suite
cannot produce print n/a with the reason; rows whose weights are absent print missing, with
where they go. --out DIR also writes DIR/table_<key>.md and DIR/table_<key>.json. Progress goes
to stderr, the report to stdout.

Exit codes: 0 the report was made (a table without producible rows, such as Table 3, included);
2 bad input, or a table with producible rows none of which could be evaluated.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from fcn_jax.errors import FCNError, run_cli
from fcn_jax.paper.tables import load_tables

CONFIGS = Path(__file__).resolve().parent / "configs"


def main(argv: Sequence[str] | None = None) -> int:
    """Reproduce a table; returns the exit code."""
    tables = load_tables()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--table", required=True, choices=sorted(tables), help="which table")
    p.add_argument("--data-root", type=Path, help="the folder holding the table's dataset")
    p.add_argument("--weights-dir", type=Path, help="the folder holding each row's weights")
    p.add_argument("--out", type=Path, help="also write table_<key>.md and .json here")
    p.add_argument("--best", action="store_true", help="training workdirs' best checkpoint")
    timing = p.add_mutually_exclusive_group()
    timing.add_argument("--no-timing", action="store_true", help="skip Table 1's forward time")
    timing.add_argument("--timing-json", type=Path, help="take the forward time from bench.py")
    p.add_argument("--timing-trials", type=int, default=20, help="trials of the forward time")
    args = p.parse_args(argv)
    table = tables[args.table]
    if args.timing_trials < 1:
        raise FCNError(f"--timing-trials must be at least 1, got {args.timing_trials}")

    from fcn_jax.cli import enable_compilation_cache
    from fcn_jax.outputs import output_dir
    from fcn_jax.paper.reproduce import reproduce_table

    if args.out:  # checked before the evaluations, never on top of what the run reads
        output_dir(
            args.out,
            "--out",
            inputs={
                "--timing-json": args.timing_json,
                "--weights-dir": args.weights_dir,
                "--data-root": args.data_root,
            },
            files=(f"table_{table.key}.md", f"table_{table.key}.json"),
        )

    enable_compilation_cache()
    report = reproduce_table(
        table,
        args.data_root,
        args.weights_dir,
        CONFIGS,
        measure_timing=not args.no_timing,
        timing_json=args.timing_json,
        timing_trials=args.timing_trials,
        best=args.best,
    )
    text = report.to_markdown()
    print(text, end="")
    if args.out:
        (args.out / f"table_{table.key}.md").write_text(text)
        (args.out / f"table_{table.key}.json").write_text(
            json.dumps(report.to_json(), indent=2, allow_nan=False) + "\n"
        )
        print(f"wrote {args.out / f'table_{table.key}.md'} and .json", file=sys.stderr)
    if table.producible_rows and not report.evaluated:
        raise FCNError(
            f"no row of table {table.key} could be evaluated: none of their weights is under "
            f"{args.weights_dir} (the missing rows above say what goes where; see "
            "docs/reproducing.md)"
        )
    return 0


if __name__ == "__main__":
    run_cli(main)
