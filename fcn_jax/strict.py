"""Strict matching of named tensors: every key accounted for, every shape right, or a loud error.

Used wherever params come from outside (PyTorch files, weights directories): a silent partial
load is how converted FCNs end up below the paper's numbers.
"""

from __future__ import annotations

from collections.abc import Mapping

from fcn_jax.errors import FCNError, format_list


def check_keys_and_shapes(
    source: str,
    found: Mapping[str, tuple[int, ...]],
    expected: Mapping[str, tuple[int, ...]],
    what: str,
    ignore: tuple[str, ...] = (),
) -> None:
    """Fail loudly unless ``found`` has exactly the ``expected`` keys and shapes.

    Args:
        source: the file being converted (named in the error).
        found: key -> shape in the source.
        expected: key -> shape the target needs.
        what: description of the target, e.g. ``an fcn8s with 21 classes``.
        ignore: source key prefixes that are known and deliberately unused.

    Raises:
        FCNError: listing every missing and unexpected key and every shape mismatch.
    """
    used = {k for k in found if not k.startswith(ignore)}
    missing = sorted(set(expected) - used)
    unexpected = sorted(used - set(expected))
    problems = []
    if missing:
        problems.append(f"missing keys: {format_list(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {format_list(unexpected)}")
    for key in sorted(set(expected) & used):
        if tuple(found[key]) != tuple(expected[key]):
            problems.append(
                f"shape mismatch in {key.rsplit('.', 1)[0]}: {key} is {tuple(found[key])} there, "
                f"{what} needs {tuple(expected[key])}"
            )
    if problems:
        raise FCNError(f"{source} does not fit {what}:\n  " + "\n  ".join(problems))
