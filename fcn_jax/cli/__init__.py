"""The command-line tools' one style: absl flags, one parser, one runner.

Every script (train.py, eval.py, predict.py, convert_torch_weights.py, bench.py, reproduce.py)
is written the same way::

    def define_flags(fv: flags.FlagValues) -> None:
        flags.DEFINE_string("weights", None, "weights directory", flag_values=fv)

    def main(argv: Sequence[str] | None = None) -> int:
        args = parse_flags(define_flags, argv, __doc__, required={"weights": "a directory"})
        ...  # call the library with args.weights, ...

    if __name__ == "__main__":
        run(main)

:func:`parse_flags` answers ``--help`` (the docstring, then the flags) and turns every bad flag,
config file or ``--config.KEY`` into an :class:`~fcn_jax.errors.FCNError`; :func:`run` prints
that as ``error: ...`` and exits with status 2. ``config=True`` adds ml_collections'
``--config path[:variant]`` and ``--config.KEY=VALUE`` (train.py, eval.py,
``python -m fcn_jax.data.stats``).
"""

from fcn_jax.cli.cache import enable_compilation_cache
from fcn_jax.cli.config import config_keys, define_config_flag, load_config_spec
from fcn_jax.cli.parse import Args, parse_flags
from fcn_jax.cli.run import run

__all__ = [
    "Args",
    "config_keys",
    "define_config_flag",
    "enable_compilation_cache",
    "load_config_spec",
    "parse_flags",
    "run",
]
