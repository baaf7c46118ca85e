"""Shared plumbing of the config-driven CLIs (eval.py, later train.py): flags, errors, devices."""

from __future__ import annotations

import difflib
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


def _config_spec(argv: Sequence[str]) -> str | None:
    """The value of ``--config`` in ``argv`` (``path[:variant]``), or None."""
    for i, a in enumerate(argv):
        if a.startswith("--config="):
            return a.split("=", 1)[1]
        if a == "--config" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def load_config_spec(spec: str) -> ml_collections.ConfigDict:
    """``get_config(variant)`` of ``path[:variant]``, every failure an :class:`FCNError`.

    absl would report a missing file or an unknown variant as ml_collections' raw text or a
    flattened traceback; this names the file, the variant and the choices.
    """
    from fcn_jax.configs import load_config_file

    path, _, arg = spec.partition(":")
    if not Path(path).is_file():
        folder = Path(path).parent if str(Path(path).parent) not in ("", ".") else Path("configs")
        choices = sorted(p.name for p in folder.glob("*.py")) if folder.is_dir() else []
        where = f"; {folder}/ holds {format_list(choices, 30)}" if choices else ""
        raise FCNError(f"--config: config file {path} not found{where}")
    try:
        return load_config_file(path, arg or None)
    except FCNError:
        raise
    except Exception as e:  # the experiment file's own code failed: name it and say what
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FCNError(f"--config {spec}: {detail}") from None


def suggest_config_key(key: str, keys: Sequence[str]) -> list[str]:
    """Valid dotted keys close to a mistyped one (by the whole key, then by its last part)."""
    close = difflib.get_close_matches(key, keys, n=5, cutoff=0.6)
    leaf = key.rsplit(".", 1)[-1]
    leaves = {k: k.rsplit(".", 1)[-1] for k in keys}
    close += [k for k in keys if leaves[k] in difflib.get_close_matches(leaf, leaves.values(), 5)]
    return list(dict.fromkeys(close))[:3]


def _unknown(what: str, suggestions: Sequence[str], more: str = "") -> FCNError:
    lines = [what]
    if suggestions:
        lines.append("did you mean:")
        lines += [f"  {s}" for s in suggestions]
    if more:
        lines.append(more)
    return FCNError("\n".join(lines))


def _check_config_overrides(argv: Sequence[str], config: ml_collections.ConfigDict) -> None:
    """Every ``--config.KEY=...`` names a key of the config, or an error suggests the nearest."""
    keys = config_keys(config)
    for a in argv[1:]:
        if not a.startswith("--config."):
            continue
        key = a[len("--config.") :].split("=", 1)[0]
        if key in keys:
            continue
        raise _unknown(
            f"--config.{key}: the config has no key {key!r}",
            [f"--config.{k}" for k in suggest_config_key(key, keys)],
        )


def _unknown_flag(name: str, config: ml_collections.ConfigDict | None) -> FCNError:
    """An unknown ``--name``: the config key it probably means, or the nearest flags."""
    name = name.lstrip("-").split("=", 1)[0]
    keys = config_keys(config) if config is not None else []
    if name in keys or name.removeprefix("no") in keys:
        return _unknown(
            f"unknown flag --{name}: config keys are set with --config.KEY=VALUE",
            [f"--config.{name}=..."],
        )
    own = sorted(n for n in FLAGS if FLAGS[n].name == n and not _absl_internal(n))
    close = difflib.get_close_matches(name, own, n=3)
    close += [f"config.{k}" for k in suggest_config_key(name, keys)]
    return _unknown(f"unknown flag --{name}", [f"--{c}" for c in close], "(--help lists them)")


def _absl_internal(name: str) -> bool:
    module = FLAGS.find_module_defining_flag(name) or ""
    return module.startswith("absl.")


HELP_FLAGS = ("-h", "--help", "-help", "--helpshort", "--helpfull")


def help_requested(argv: Sequence[str]) -> bool:
    """Print the script's docstring and its own flags if ``argv`` asks for help; whether it did.

    absl's parser, used without ``absl.app``, knows no ``--help``. ``--config`` is defined in
    this module, not the script, so absl would list it only under ``--helpfull``: it is listed
    first here, with an example.
    """
    if not any(a in HELP_FLAGS for a in argv[1:]):
        return False
    main = sys.modules["__main__"]
    print((main.__doc__ or "").strip() + "\n")
    print("flags:")
    if "config" in FLAGS:
        print(
            "  --config: experiment config file, with an optional variant, e.g.\n"
            "    --config configs/voc_fcn8s.py   or   --config configs/synthetic_fcn8s.py:smoke\n"
            "  --config.KEY=VALUE: override any key of the config, e.g.\n"
            "    --config.data.root=/data/pascal --config.learning_rate=1e-4"
        )
    if "--helpfull" in argv:
        print(FLAGS.get_help())
    else:
        own = FLAGS.main_module_help().split("\n", 2)  # drop absl's "<script>:" heading
        print(own[-1] if len(own) == 3 else FLAGS.main_module_help())
    return True


def parse_flags(argv: Sequence[str]) -> None:
    """Parse absl flags; bad flags, config files or keys become :class:`FCNError`s.

    The config file and every ``--config.KEY`` are checked here first, so the errors name the
    file, the key and the nearest valid keys (one per line) instead of absl's raw text.
    """
    if help_requested(argv):
        sys.exit(0)
    spec = _config_spec(argv)
    config = load_config_spec(spec) if spec else None
    if config is not None:
        _check_config_overrides(argv, config)
    try:
        rest = FLAGS(list(argv))
        parsed = FLAGS.config
        if parsed is not None:
            parsed.keys()  # a config file that failed to load raises only when first used
    except flags.UnrecognizedFlagError as e:
        raise _unknown_flag(e.flagname, config) from None
    except Exception as e:  # absl and ml_collections raise many types
        message = str(e).strip().replace("\\'", "'")
        if len(message) > 1 and message[0] == message[-1] in "'\"":  # a KeyError's repr
            message = message[1:-1]
        raise FCNError(" ".join(message.split())) from None
    if parsed is None:
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
