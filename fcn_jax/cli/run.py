"""The one runner of the CLIs: a user error is ``error: ...`` on stderr and exit status 2."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from fcn_jax.errors import EXIT_USER_ERROR, FCNError

Main = Callable[[Sequence[str] | None], int | None]


def run(main: Main) -> NoReturn:
    """Run ``main(None)`` (it parses ``sys.argv``) and exit with the status it returns.

    An :class:`FCNError` prints ``error: <message>`` on stderr, without a traceback, and exits
    with :data:`~fcn_jax.errors.EXIT_USER_ERROR` (2). orbax logs every save and restore at INFO
    through absl's logger: a CLI shows its warnings only (set here, not at any import).
    """
    logging.getLogger("absl").setLevel(logging.WARNING)
    try:
        code = main(None)
    except FCNError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    sys.exit(code or 0)
