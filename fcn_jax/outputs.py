"""Where tools write: every output checked before any work, and never on top of an input.

Each tool that writes calls :func:`output_dir` or :func:`output_file` for each of its outputs
as soon as it has parsed its flags, naming the inputs of the run (weights, images, config,
data root, ...). The checks are the same everywhere:

- the location has the right kind (a folder where a folder is wanted, a file where a file is);
- it can be created and written (tried with a probe file, so a read-only folder or file system
  fails now, not after an hour of work);
- nothing the tool will write or replace there is, contains or lies inside an input, compared
  through symlinks and hard links (``os.path.samefile``), not by spelling.

Failures raise :class:`~fcn_jax.errors.FCNError` naming the flag, the path and what to do.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from fcn_jax.errors import FCNError

Inputs = Mapping[str, "str | Path | Iterable[str | Path] | None"]


def _input_paths(inputs: Inputs) -> list[tuple[str, Path]]:
    """``(what, absolute path)`` for every existing input (a value may be one path or many)."""
    out = []
    for what, value in inputs.items():
        if value is None:
            continue
        values = [value] if isinstance(value, str | os.PathLike) else list(value)
        for v in values:
            p = Path(v).expanduser()
            if p.exists():
                out.append((what, p.resolve()))
    return out


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _within(inner: Path, outer: Path) -> bool:
    """``inner`` is ``outer`` or lies inside it (both resolved)."""
    return inner == outer or outer in inner.parents


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _probe_writable(folder: Path, flag: str, shown: Path) -> None:
    """Create ``folder`` (and parents) and write a probe file there, or say why not."""
    existing = _nearest_existing(folder)
    if existing.exists() and not existing.is_dir():
        raise FCNError(f"{flag} {shown}: {existing} is a file, not a folder; choose another {flag}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        reason = {
            errno.EACCES: "permission denied",
            errno.EPERM: "not permitted",
            errno.EROFS: "read-only file system",
            errno.ENOSPC: "no space left",
        }.get(e.errno, e.strerror or str(e))
        raise FCNError(
            f"{flag} {shown} cannot be written ({reason} at {e.filename or folder}); "
            f"choose another {flag}"
        ) from None


def output_dir(
    path: str | Path,
    flag: str,
    *,
    inputs: Inputs | None = None,
    files: Iterable[str] = (),
    deletes: str = "",
    overwrite: bool = True,
    hint: str = "",
) -> Path:
    """Check a folder the tool writes into, before any work; create it.

    Args:
        path: the folder.
        flag: how the user named it (``--out``, ``--workdir``), for messages.
        inputs: what the run reads, ``{description: path or paths}``; files or folders.
        files: names (relative to ``path``) the tool will write there.
        deletes: why the tool may delete what the folder holds (``--overwrite`` replaces it,
            orbax rotates checkpoints there), in words for the message; then no input may be
            the folder or lie inside it. Empty: the tool only adds files.
        overwrite: whether an existing, non-empty folder may be written into (or replaced).
        hint: what to do when it may not (e.g. "choose another --out or pass --overwrite").

    Returns:
        ``path`` as a :class:`Path`.

    Raises:
        FCNError: ``path`` is a file, is not empty (without ``overwrite``), cannot be
            written, or the outputs would overwrite, delete or mix with an input.
    """
    shown = Path(path)
    folder = shown.expanduser().absolute()
    if folder.is_file():
        raise FCNError(f"{flag} {shown} is a file, not a folder: choose a folder for {flag}")
    if not overwrite and folder.is_dir() and any(folder.iterdir()):
        raise FCNError(
            f"{flag} {shown} already exists and is not empty{': ' + hint if hint else ''}"
        )
    resolved = folder.resolve()
    for what, p in _input_paths(inputs or {}):
        if deletes and _within(p, resolved):
            relation = "is" if p == resolved else "contains"
            raise FCNError(
                f"{flag} {shown} {relation} the {what} {p}: {deletes}; choose another {flag}"
            )
        if p.is_dir() and p == resolved and files:
            raise FCNError(
                f"{flag} {shown} is the {what} {p}: outputs would mix with (and could "
                f"overwrite) its files; choose another {flag}"
            )
        for name in files:
            if _same(folder / name, p):
                raise FCNError(
                    f"{flag} {shown}: writing {name} there would overwrite the {what} {p}; "
                    f"choose another {flag}"
                )
    _probe_writable(folder, flag, shown)
    return shown


def output_file(
    path: str | Path,
    flag: str,
    *,
    inputs: Inputs | None = None,
    overwrite: bool = True,
    hint: str = "",
) -> Path:
    """Check a file the tool writes, before any work; create its folder.

    Args:
        path: the file.
        flag: how the user named it (``--out``), for messages.
        inputs: what the run reads, ``{description: path or paths}``.
        overwrite: whether an existing file there may be replaced (a previous output);
            an input never may.
        hint: what to do if the file exists and may not be replaced (e.g. "pass --overwrite").

    Returns:
        ``path`` as a :class:`Path`.

    Raises:
        FCNError: ``path`` is a folder, cannot be written, exists (without ``overwrite``), or
            is (or lies inside) one of ``inputs``.
    """
    shown = Path(path)
    file = shown.expanduser().absolute()
    if file.is_dir():
        raise FCNError(f"{flag} {shown} is a folder; {flag} names a file to write")
    for what, p in _input_paths(inputs or {}):
        if _same(file, p):
            raise FCNError(
                f"{flag} {shown} is the {what} {p}: it would be overwritten; choose another {flag}"
            )
    if file.exists() and not overwrite:
        raise FCNError(f"{flag} {shown} already exists{': ' + hint if hint else ''}")
    _probe_writable(file.parent, flag, shown)
    if file.exists() and not os.access(file, os.W_OK):
        raise FCNError(f"{flag} {shown} exists and cannot be written; choose another {flag}")
    return shown
