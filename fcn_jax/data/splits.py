"""Split lists: a name or a path, found under the dataset root first, then in the package.

The paper's lists (seg11valid, ...) ship in ``fcn_jax/assets/splits/<dataset>/``; a list with
the same name under the dataset root wins, so a user's own copy of a split is always the one used.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fcn_jax.errors import FCNError, format_list
from fcn_jax.resources import SPLITS


def read_split_file(path: Path) -> list[str]:
    """Ids in a split list: one per line, blank lines and ``#`` comments skipped."""
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise FCNError(f"split file {path} is not a text file of ids") from None
    ids = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            ids.append(line.split()[0])
    if not ids:
        raise FCNError(f"split file {path} lists no ids")
    return ids


def shipped_split_dir(dataset: str) -> Path:
    """Where the package keeps a dataset's split lists."""
    return SPLITS / dataset


def resolve_split(
    split: str, search_dirs: Sequence[Path], names: Sequence[str] = ()
) -> tuple[Path, list[str]]:
    """Find a split's list file and read it.

    Args:
        split: a split name (``seg11valid``) or a path to a list file.
        search_dirs: directories that may hold ``<split>.txt``, most preferred first (the
            dataset root's, then the package's).
        names: further valid split names, for the error message.

    Returns:
        (the file used, the ids it lists).
    """
    as_path = Path(split)
    if as_path.suffix == ".txt" or len(as_path.parts) > 1:
        if not as_path.is_file():
            raise FCNError(f"split file {as_path} does not exist")
        return as_path, read_split_file(as_path)
    for directory in search_dirs:
        candidate = directory / f"{split}.txt"
        if candidate.is_file():
            return candidate, read_split_file(candidate)
    known = set(names)
    for directory in search_dirs:
        if directory.is_dir():
            known |= {p.stem for p in directory.glob("*.txt") if p.stem != "classes"}
    raise FCNError(
        f"unknown split {split!r}: no {split}.txt in {', '.join(map(str, search_dirs))}. "
        f"Known splits: {format_list(sorted(known)) or 'none'}; or give a path to a list file"
    )
