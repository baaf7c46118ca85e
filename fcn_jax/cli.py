"""Shared plumbing of the config-driven CLIs (eval.py, later train.py): flags, errors, devices."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import ml_collections
from absl import flags
from ml_collections import config_flags

from fcn_jax.errors import EXIT_USER_ERROR, FCNError, format_list

FLAGS = flags.FLAGS


def define_config_flag() -> None:
    """``--config path/to/experiment.py[:variant]`` plus ``--config.key=value`` overrides."""
    config_flags.DEFINE_config_file(
        "config", None, "experiment config file, e.g. configs/voc_fcn8s.py", lock_config=True
    )


def config_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    """Every leaf key of a config, dotted (``data.root``, ``model.arch``, ...)."""
    keys = []
    for key, value in config.items():
        if isinstance(value, ml_collections.ConfigDict):
            keys += config_keys(value, f"{prefix}{key}.")
        else:
            keys.append(f"{prefix}{key}")
    return keys


def _load_config_file(argv: Sequence[str]) -> ml_collections.ConfigDict | None:
    """The config named by ``--config`` in ``argv``, loaded without overrides (for messages)."""
    spec = next(
        (a.split("=", 1)[1] for a in argv if a.startswith("--config=")),
        next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--config"), None),
    )
    if spec is None:
        return None
    path, _, arg = spec.partition(":")
    try:
        from fcn_jax.configs import load_config_file

        return load_config_file(path, arg or None)
    except Exception:  # the message is about the flags; a broken file only loses the hint
        return None


HELP_FLAGS = ("-h", "--help", "-help", "--helpshort", "--helpfull")


def help_requested(argv: Sequence[str]) -> bool:
    """Print the script's docstring and flags if ``argv`` asks for help; whether it did.

    absl's parser, used without ``absl.app``, knows no ``--help``.
    """
    if not any(a in HELP_FLAGS for a in argv[1:]):
        return False
    main = sys.modules["__main__"]
    print((main.__doc__ or "").strip() + "\n")
    flags_help = FLAGS.get_help() if "--helpfull" in argv else FLAGS.main_module_help()
    print("flags:\n" + flags_help)
    return True


def parse_flags(argv: Sequence[str]) -> None:
    """Parse absl flags; bad flags, config files or keys become :class:`FCNError`s."""
    if help_requested(argv):
        sys.exit(0)
    try:
        rest = FLAGS(list(argv))
        config = FLAGS.config
        if config is not None:
            config.keys()  # a config file that failed to load raises only when first used
    except Exception as e:  # absl and ml_collections raise many types
        message = str(e).strip().strip("'").replace("\\n", " ").replace("\n", " ")
        config = _load_config_file(argv)
        hint = f"; known config keys: {format_list(config_keys(config), 200)}" if config else ""
        raise FCNError(f"{message}{hint}") from None
    if config is None:
        raise FCNError("--config is required, e.g. --config configs/voc_fcn8s.py")
    if len(rest) > 1:
        raise FCNError(f"unexpected arguments {rest[1:]}")


def run_config_cli(main: Callable[[], int | None]) -> None:
    """Parse flags then run ``main()``; user errors print ``error: ...`` and exit 2."""
    try:
        parse_flags(sys.argv)
        code = main()
    except FCNError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    sys.exit(code or 0)


def enable_compilation_cache(directory: str | None = None) -> Path:
    """Turn on JAX's persistent compilation cache (``$FCN_JAX_CACHE`` or ~/.cache/fcn_jax/xla).

    Whole-image evaluation and batch-1 training compile once per image shape; the cache makes
    the second run over the same data skip those compilations.
    """
    import jax

    path = Path(
        directory or os.environ.get("FCN_JAX_CACHE") or Path.home() / ".cache" / "fcn_jax" / "xla"
    ).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    return path
