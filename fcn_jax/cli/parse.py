"""Parse a script's absl flags into :class:`Args`; ``--help``; every bad flag an :class:`FCNError`.

Each call defines the script's flags on a fresh :class:`absl.flags.FlagValues`: nothing global is
parsed, so ``main(argv)`` can run twice in one process (the tests do) and two scripts never
share a flag.
"""

from __future__ import annotations

import difflib
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from types import SimpleNamespace

import ml_collections
from absl import flags
from ml_collections import config_flags

from fcn_jax.cli.config import (
    CONFIG_HELP,
    check_config_overrides,
    config_keys,
    config_spec,
    define_config_flag,
    load_config_spec,
    suggest_config_key,
    unknown,
)
from fcn_jax.errors import FCNError, format_list

HELP_FLAGS = ("-h", "--help", "-help", "--helpshort", "--helpfull")

DefineFlags = Callable[[flags.FlagValues], None]


class Args(SimpleNamespace):
    """Parsed flags: one attribute per flag, hyphens as underscores (``--n-class``: ``n_class``).

    Attributes:
        present: the names of the flags the command line gave (as defined, aliases resolved).
        config: with ``config=True``, the loaded and overridden ConfigDict; else absent.
        config_file: ``path[:variant]`` as given to ``--config``.
        config_overrides: ``{"data.root": value, ...}``, the ``--config.KEY`` the command gave.
    """

    def if_given(self, name: str) -> object:
        """The value of flag ``name`` if the command line gave it, else None."""
        return getattr(self, attribute(name)) if name in self.present else None


def attribute(name: str) -> str:
    """The :class:`Args` attribute of flag ``name`` (``against-torch``: ``against_torch``)."""
    return name.replace("-", "_")


def parse_flags(
    define: DefineFlags,
    argv: Sequence[str] | None,
    doc: str,
    *,
    config: bool = False,
    required: Mapping[str, str] | None = None,
) -> Args:
    """Define a script's flags, parse ``argv``; bad flags, config files or keys: :class:`FCNError`.

    Args:
        define: defines the script's own flags on the FlagValues it is given.
        argv: the arguments, without the program name; None: ``sys.argv[1:]``.
        doc: the script's docstring, printed first by ``--help``.
        config: also ``--config path[:variant]`` and ``--config.KEY=VALUE``; then required.
        required: flag name -> what to give, for the flags that must be on the command line.

    Returns:
        The flags' values.

    Raises:
        SystemExit: 0, after printing the help, when ``argv`` asks for it.
        FCNError: an unknown flag (with the nearest ones), a bad value, a missing required flag.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    program = sys.argv[0] if sys.argv else "fcn_jax"
    fv = flags.FlagValues()
    define(fv)
    if any(a in HELP_FLAGS for a in argv):
        print(help_text(doc, fv, config))
        raise SystemExit(0)
    if config:
        define_config_flag(fv, [program, *argv])
    return parse_into(fv, [program, *argv], config=config, required=required or {})


def parse_into(
    fv: flags.FlagValues, argv: Sequence[str], *, config: bool, required: Mapping[str, str]
) -> Args:
    """Parse ``argv`` (program name first) into flags already defined on ``fv``.

    The config file and every ``--config.KEY`` are checked first, so the errors name the file,
    the key and the nearest valid keys (one per line) instead of absl's raw text.
    """
    spec = config_spec(argv) if config else None
    loaded = load_config_spec(spec) if spec else None
    if loaded is not None:
        check_config_overrides(argv[1:], loaded)
    try:
        rest = fv(list(argv))
        if config and fv.config is not None:
            fv.config.keys()  # a config file that failed to load raises only when first used
    except flags.UnrecognizedFlagError as e:
        raise unknown_flag(e.flagname, fv, loaded) from None
    except Exception as e:  # absl and ml_collections raise many types
        raise FCNError(absl_message(str(e))) from None
    if config and fv.config is None:
        raise FCNError("--config is required, e.g. --config configs/voc_fcn8s.py")
    if len(rest) > 1:
        raise FCNError(f"unexpected arguments {rest[1:]}")
    for name, what in required.items():
        if fv[name].value is None:
            raise FCNError(f"--{name} is required: {what}")
    return to_args(fv, config)


def to_args(fv: flags.FlagValues, config: bool) -> Args:
    """The parsed values of ``fv``; the config's file and overrides when it has ``--config``."""
    values = {attribute(n): fv[n].value for n in fv if not n.startswith("config.")}
    present = frozenset(n for n in fv if fv[n].present and not n.startswith("config."))
    args = Args(**values, present=present)
    if config:
        args.config_file = config_flags.get_config_filename(fv["config"])
        args.config_overrides = dict(config_flags.get_override_values(fv["config"]))
    return args


def absl_message(text: str) -> str:
    """The error text of absl or ml_collections, as one clean line.

    ``flag --x=v: ...`` loses absl's ``flag`` prefix; an enum's ``value should be one of <a|b>``
    becomes ``invalid choice 'v' (choose from a, b)``; a KeyError's quotes go.
    """
    message = " ".join(text.strip().replace("\\'", "'").split())
    if len(message) > 1 and message[0] == message[-1] in "'\"":  # a KeyError's repr
        message = message[1:-1]
    choice = re.fullmatch(r"flag --(\S+?)=(.*): value should be one of <(.*)>", message)
    if choice:
        name, value, choices = choice.groups()
        return f"--{name}: invalid choice {value!r} (choose from {choices.replace('|', ', ')})"
    return message.removeprefix("flag ")


def unknown_flag(
    name: str, fv: flags.FlagValues, config: ml_collections.ConfigDict | None
) -> FCNError:
    """An unknown ``--name``: the config key it probably means, or the nearest flags."""
    name = name.lstrip("-").split("=", 1)[0]
    keys = config_keys(config) if config is not None else []
    if name in keys or name.removeprefix("no") in keys:
        return unknown(
            f"unknown flag --{name}: config keys are set with --config.KEY=VALUE",
            [f"--config.{name}=..."],
        )
    own = sorted(n for n in fv if not n.startswith("config.") and not absl_internal(fv, n))
    close = difflib.get_close_matches(name, own, n=3)
    close += [f"config.{k}" for k in suggest_config_key(name, keys)]
    return unknown(f"unknown flag --{name}", [f"--{c}" for c in close], "(--help lists them)")


def absl_internal(fv: flags.FlagValues, name: str) -> bool:
    """Whether absl itself defined flag ``name`` (--logtostderr, ... on the global FlagValues)."""
    module = fv.find_module_defining_flag(name) or ""
    return module.startswith("absl.")


def help_text(
    doc: str, fv: flags.FlagValues, config: bool, names: Sequence[str] | None = None
) -> str:
    """The script's docstring, then its flags: ``--config`` first, with an example.

    absl's own help groups flags by defining module and lists absl's internal flags; this lists
    the script's flags only (``names``, default all of ``fv``'s), an enum's choices as
    ``--name {a,b}``.
    """
    lines = [doc.strip(), "", "flags:"]
    if config:
        lines.append(CONFIG_HELP)
    for name in sorted(fv if names is None else names):
        if not absl_internal(fv, name) and name != "config":
            lines.append(describe_flag(fv[name], name))
    return "\n".join(lines)


def describe_flag(flag: flags.Flag, name: str) -> str:
    """``  --name: help`` (``--[no]name`` for a boolean), then its default, wrapped."""
    text = flag.help
    if isinstance(flag.parser, flags.EnumParser):
        values = flag.parser.enum_values
        name = f"{name} {{{','.join(values)}}}"
        text = text.removeprefix(f"<{'|'.join(values)}>: ")
    elif flag.boolean and not name.startswith("no-"):  # --no-timing reads as itself
        name = f"[no]{name}"
    if flag.default not in (None, False, []) and not re.search("alias for|default", text, re.I):
        shown = format_list(flag.default) if isinstance(flag.default, list) else flag.default
        text += f" (default: {shown})"
    return flags.text_wrap(f"--{name}: {text}", indent="      ", firstline_indent="  ")
