"""User-facing errors and the CLI wrapper that turns them into a message and exit code 2."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

EXIT_USER_ERROR = 2


class FCNError(Exception):
    """Bad input from the user (a file, a flag, a config key): the message says what and how to fix.

    CLIs print it without a traceback and exit with :data:`EXIT_USER_ERROR`.
    """


def format_list(items: Sequence[str], limit: int = 20) -> str:
    """``a, b, c`` with at most ``limit`` items and a count of the rest."""
    items = list(items)
    shown = ", ".join(items[:limit])
    if len(items) > limit:
        shown += f", ... ({len(items) - limit} more)"
    return shown


def warn(message: str) -> None:
    """Print ``warning: message`` on stderr, one clean line.

    For what the user should know but that does not stop the run (the config and the weights
    disagree, a setting that cannot apply). Unlike :mod:`warnings`, no source file and line,
    and never filtered or shown only once.
    """
    print(f"warning: {message}", file=sys.stderr, flush=True)


def run_cli(main: Callable[[Sequence[str] | None], int | None]) -> None:
    """Run a CLI ``main(argv)``; an :class:`FCNError` becomes ``error: ...`` on stderr, exit 2."""
    try:
        code = main(None)
    except FCNError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    sys.exit(code or 0)
