"""Which label key and metric-set name each output head of a network is scored against."""

from __future__ import annotations

from fcn_jax.data.siftflow import HEAD_LABELS
from fcn_jax.models import NetSpec


def head_targets(spec: NetSpec) -> dict[str, tuple[str, str]]:
    """Output key -> (label key, metric-set name) for every head of a network.

    The first head of any network reads ``label``; a head the datasets name (SIFT Flow's
    ``sem`` / ``geo``, :data:`fcn_jax.data.siftflow.HEAD_LABELS`) takes their metric-set name,
    any other head ``h`` reads ``label_h`` and is scored as ``h``. A single-head network's one
    output (``out``) is scored as the metric set ``""``, written flat in the metrics JSON.
    """
    names = spec.head_names
    if len(names) == 1:
        return {names[0]: ("label", "")}
    targets = {}
    for i, head in enumerate(names):
        key, name = HEAD_LABELS.get(head, (f"label_{head}", head))
        targets[head] = ("label" if i == 0 else key, name)
    return targets


def head_class_counts(spec: NetSpec) -> dict[str, int]:
    """Output key -> class count of every head (the keys of :func:`head_targets`)."""
    return dict(spec.heads)
