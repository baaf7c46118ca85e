"""User-facing errors and warnings; :func:`fcn_jax.cli.run` turns an error into exit status 2."""

from __future__ import annotations

import sys
from collections.abc import Sequence

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
