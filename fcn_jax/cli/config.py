"""``--config path[:variant]`` and ``--config.KEY=VALUE``: the flag, loading, key checks."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path

import ml_collections
from absl import flags
from ml_collections import config_flags

from fcn_jax.errors import FCNError, format_list

CONFIG_HELP = (
    "  --config: experiment config file, with an optional variant, e.g.\n"
    "    --config configs/voc_fcn8s.py   or   --config configs/synthetic_fcn8s.py:smoke\n"
    "  --config.KEY=VALUE: override any key of the config, e.g.\n"
    "    --config.data.root=/data/pascal --config.learning_rate=1e-4"
)


def define_config_flag(
    flag_values: flags.FlagValues = flags.FLAGS, argv: Sequence[str] | None = None
) -> None:
    """``--config path/to/experiment.py[:variant]`` plus ``--config.KEY=value`` overrides.

    Args:
        flag_values: where to define it.
        argv: the command line the overrides are read from (program name first); None: sys.argv
            at parse time. ml_collections reads the overrides from it, not from what absl parses.
    """
    config_flags.DEFINE_config_file(
        "config",
        None,
        "experiment config file, e.g. configs/voc_fcn8s.py",
        flag_values=flag_values,
        lock_config=True,
        sys_argv=None if argv is None else list(argv),
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


def config_spec(argv: Sequence[str]) -> str | None:
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


def unknown(what: str, suggestions: Sequence[str], more: str = "") -> FCNError:
    """``what``, then ``did you mean:`` and one suggestion a line, then ``more``."""
    lines = [what]
    if suggestions:
        lines.append("did you mean:")
        lines += [f"  {s}" for s in suggestions]
    if more:
        lines.append(more)
    return FCNError("\n".join(lines))


def check_config_overrides(argv: Sequence[str], config: ml_collections.ConfigDict) -> None:
    """Every ``--config.KEY=...`` names a key of the config, or an error suggests the nearest."""
    keys = config_keys(config)
    for a in argv:
        if not a.startswith("--config."):
            continue
        key = a[len("--config.") :].split("=", 1)[0]
        if key in keys:
            continue
        raise unknown(
            f"--config.{key}: the config has no key {key!r}",
            [f"--config.{k}" for k in suggest_config_key(key, keys)],
        )
