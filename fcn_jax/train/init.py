"""Merging another network's params into a fresh model's, strictly (``init.from_``).

Staged training (FCN-32s -> 16s -> 8s, a VGG16 into an FCN) starts from another network's
params. :func:`merge_params` takes them strictly (as big_vision's ``merge_params``): the layers
that are new are named by a pattern, those of the source that are not used by another, and any
other difference (a missing param, a left-over one, a shape) is an error listing them. The
patterns come from the two architectures (:func:`stage_params`): new layers are those the
source's architecture lacks, so a source file that lacks a layer its own architecture has is
refused rather than silently left at its initialisation.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import jax.numpy as jnp
from flax import traverse_util

from fcn_jax.errors import FCNError
from fcn_jax.types import PyTree

SHOWN = 3  # paths shown per kind of difference in an error (then a count of the rest)


def _flat(tree: PyTree) -> dict[str, Any]:
    """``{"vgg16/conv1_1/kernel": leaf, ...}``."""
    return {"/".join(p): v for p, v in traverse_util.flatten_dict(tree).items()}


def layer_names(tree: PyTree) -> set[str]:
    """The layers of a params tree: every param's path less its leaf (``vgg16/conv1_1``)."""
    return {path.rsplit("/", 1)[0] for path in _flat(tree)}


def layers_pattern(layers: Iterable[str]) -> str | None:
    """A regex matching every param path of ``layers`` (None for no layer)."""
    layers = sorted(layers)
    if not layers:
        return None
    return "(?:" + "|".join(re.escape(layer) for layer in layers) + ")/[^/]+"


def _matcher(pattern: str | None) -> Any:
    compiled = re.compile(pattern) if pattern else None
    return lambda path: compiled is not None and compiled.fullmatch(path) is not None


def _some(paths: list[str], what: str) -> str:
    shown = ", ".join(paths[:SHOWN])
    rest = f" (and {len(paths) - SHOWN} more)" if len(paths) > SHOWN else ""
    return f"{len(paths)} {what}: {shown}{rest}"


def merge_params(
    loaded: PyTree,
    init: PyTree,
    new: str | None = None,
    ignore: str | None = None,
    where: str = "the loaded params",
) -> PyTree:
    """``init``'s tree with ``loaded``'s values, every difference accounted for.

    Args:
        loaded: params from elsewhere (another stage's network), nested dicts of arrays.
        init: this model's freshly initialised params: the tree the result has.
        new: regex; ``init`` params whose path (``layer/.../leaf``, fullmatch) it matches
            keep their initial values (layers the source does not have).
        ignore: regex; ``loaded`` params whose path it matches may be left unused (layers
            this model does not have).
        where: the source, named first in an error (e.g. ``init.from_ runs/voc_fcn32s``).

    Returns:
        A tree shaped as ``init``: ``loaded``'s arrays (as ``jax.Array``) except at ``new``.

    Raises:
        FCNError: on one line, the ``init`` params neither new nor loaded (missing), the
            ``loaded`` params neither used nor ignored (unexpected), and those whose shapes
            differ (a few of each and their counts); or, when no loaded param would be used,
            that the source shares no layer with this model.
    """
    is_new, is_ignored = _matcher(new), _matcher(ignore)
    target, source = _flat(init), _flat(loaded)
    wanted = [p for p in target if not is_new(p)]
    if not any(p in source for p in wanted):
        raise FCNError(f"{where} shares no layer with this model")
    missing = sorted(p for p in wanted if p not in source)
    unexpected = sorted(p for p in source if p not in wanted and not is_ignored(p))
    mismatched = [
        f"{p} is {tuple(source[p].shape)} there, {tuple(target[p].shape)} here"
        for p in sorted(wanted)
        if p in source and tuple(source[p].shape) != tuple(target[p].shape)
    ]
    problems = [
        _some(paths, what)
        for paths, what in (
            (mismatched, "shape mismatches"),
            (missing, "missing params"),
            (unexpected, "unexpected params"),
        )
        if paths
    ]
    if problems:
        raise FCNError(f"{where} does not fit this model: " + "; ".join(problems))
    merged = {p: (v if is_new(p) else jnp.asarray(source[p])) for p, v in target.items()}
    return traverse_util.unflatten_dict({tuple(p.split("/")): v for p, v in merged.items()})


def stage_params(
    loaded: PyTree, init: PyTree, where: str, source: PyTree | None = None
) -> tuple[PyTree, list[str]]:
    """Staged initialisation: :func:`merge_params` with patterns from the two architectures.

    FCN-16s from FCN-32s: the trunk and ``score_fr`` carry over, ``score_pool4`` and the
    upsamplings are new (score layers zero, upsampling bilinear, so training starts exactly at
    the previous stage's predictions), FCN-32s's ``upscore`` is not used.

    Args:
        loaded: the source's params.
        init: this model's initial params.
        where: the source, for errors.
        source: the params (or shapes) the source's architecture has; ``loaded`` by default.

    Returns:
        (the merged params, the layers left at their initialisation, sorted).
    """
    theirs, ours = layer_names(loaded if source is None else source), layer_names(init)
    new = sorted(ours - theirs)
    merged = merge_params(
        loaded, init, new=layers_pattern(new), ignore=layers_pattern(theirs - ours), where=where
    )
    return merged, new


def stream_trunks(params: PyTree, streams: tuple[str, ...], backbone: str = "vgg16") -> PyTree:
    """One backbone for every stream, as the release initialises its two-stream nets.

    ``vgg16/conv1_1`` -> ``vgg16color/conv1_1color``, ``vgg16hha/conv1_1hha``; ``params`` is
    returned as is where it has no single backbone (``vgg16``) or there are no streams.
    """
    if not streams or backbone not in params:
        return params
    one = params[backbone]
    trunks = {f"{backbone}{s}": {f"{k}{s}": v for k, v in one.items()} for s in streams}
    return {**params, **trunks}
