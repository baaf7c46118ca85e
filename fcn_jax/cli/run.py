"""The one runner of the CLIs: a user error is ``error: ...`` on stderr and exit status 2."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from absl import flags

from fcn_jax.cli.parse import HELP_FLAGS, help_text, parse_into
from fcn_jax.errors import EXIT_USER_ERROR, FCNError

Main = Callable[[Sequence[str] | None], int | None]


def run(main: Main) -> NoReturn:
    """Run ``main(None)`` (it parses ``sys.argv``) and exit with the status it returns.

    An :class:`FCNError` prints ``error: <message>`` on stderr, without a traceback, and exits
    with :data:`~fcn_jax.errors.EXIT_USER_ERROR` (2).
    """
    try:
        code = main(None)
    except FCNError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    sys.exit(code or 0)


def run_config_cli(main: Callable[[], int | None]) -> NoReturn:
    """Old entry point: parse the flags defined on absl's global ``FLAGS``, then run ``main()``.

    Kept for ``python -m fcn_jax.data.stats``, which defines its flags globally with
    :func:`~fcn_jax.cli.config.define_config_flag`; a script should define them in a function
    given to :func:`~fcn_jax.cli.parse.parse_flags` instead.
    """

    def parsed_then_main(argv: Sequence[str] | None) -> int | None:
        argv = list(sys.argv if argv is None else argv)
        if any(a in HELP_FLAGS for a in argv[1:]):
            own = [f.name for f in flags.FLAGS.get_key_flags_for_module(sys.argv[0])]
            doc = sys.modules["__main__"].__doc__ or ""
            print(help_text(doc, flags.FLAGS, config=True, names=own))
            return 0
        parse_into(flags.FLAGS, argv, config=True, required={})
        return main()

    run(parsed_then_main)
