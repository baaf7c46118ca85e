"""torchfcn FCN checkpoints <-> Flax FCN variables, every tensor copied (upsampling kernels too).

The layout extends to FCNs on the ``vgg16_bn`` backbone (what
:class:`~fcn_jax.torch_reference.TorchFCN` saves with ``batch_norm=True``): torchfcn's keys plus
``bn1_1.*`` ... ``bn5_3.*`` (``weight``, ``bias``, ``running_mean``, ``running_var``,
``num_batches_tracked``), recognised by those keys.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

import numpy as np
from flax import traverse_util

from fcn_jax.convert.layout import NUM_BATCHES_TRACKED, to_flax, to_torch, torch_key, torch_shape
from fcn_jax.convert.torch_files import TorchWeights
from fcn_jax.data.siftflow import GEOMETRIC_CLASSES
from fcn_jax.errors import FCNError
from fcn_jax.models import VARIANTS, NetSpec, abstract_variables
from fcn_jax.models.fcn import SINGLE_HEAD
from fcn_jax.preprocessing import CAFFE_VOC, NYUD_HHA, NYUD_RGB, SIFTFLOW, TORCHVISION
from fcn_jax.resources import default_class_names
from fcn_jax.strict import check_keys_and_shapes
from fcn_jax.types import PyTree

# torchfcn class names (its checkpoints' ``arch``) and our own names -> variant.
ARCH_ALIASES = {spec.torch_name.lower(): name for name, spec in VARIANTS.items()} | {
    name: name for name in VARIANTS
}


def variant_from_arch_entry(arch: str) -> str | None:
    """The variant a checkpoint's ``arch`` entry names, or None if unknown."""
    return ARCH_ALIASES.get(arch.lower())


def recognises(keys: set[str]) -> bool:
    """A torchfcn FCN: ``conv1_1.*`` (``conv1_1color.*`` in two-stream nets) and ``score_fr*``."""
    return any(k.startswith("conv1_1") for k in keys) and any(
        k.startswith("score_fr") for k in keys
    )


def guess_variant(keys: set[str]) -> str:
    """The variant family a set of torchfcn keys looks like (for error messages)."""
    if any(k.startswith("upscore8") for k in keys):
        return "fcn8s or fcn8s-atonce"
    if any(k.startswith("upscore16") for k in keys):
        return "fcn16s"
    if any(k.startswith("upscore") and not k.startswith("upscore2") for k in keys):
        return "fcn32s"
    return "no FCN variant"


def infer_width(src: TorchWeights, key: str, base: int = 64) -> float:
    """Width multiplier from the output channels of the first conv (64 at width 1)."""
    return src.state[key].shape[0] / base


@dataclasses.dataclass(frozen=True)
class Structure:
    """What a torchfcn-layout state dict holds, read off its keys.

    Attributes:
        streams: stream suffixes (``("color", "hha")`` for the release's RGB-HHA nets), or ().
        heads: ``(suffix, n_class)`` per output, ``sem`` first (``(("sem", 33), ("geo", 3))``
            for SIFT Flow), or () for one output.
        n_class: classes of the (first) output.
        width: channel multiplier, from the first conv.
        score_key: the key ``n_class`` was read from.
        batch_norm: it has BatchNorm layers (``bn1_1.*`` ...): an FCN on ``vgg16_bn``.
    """

    streams: tuple[str, ...]
    heads: tuple[tuple[str, int], ...]
    n_class: int
    width: float
    score_key: str
    batch_norm: bool = False


# A VGG16-BN trunk's BatchNorm keys: bn1_1.weight, bn5_3color.running_var, ...
_BN_KEY = re.compile(r"bn\d+_\d+[a-z]*\.")


def has_batch_norm(keys: set[str]) -> bool:
    """Whether torchfcn-layout keys include a VGG16-BN trunk's BatchNorms."""
    return any(_BN_KEY.match(k) for k in keys)


def _suffixes(keys: set[str], prefix: str) -> list[str]:
    """What follows ``prefix`` in ``<prefix><suffix>.weight`` keys, sorted."""
    return sorted(
        k[len(prefix) : -len(".weight")]
        for k in keys
        if k.startswith(prefix) and k.endswith(".weight")
    )


def read_structure(src: TorchWeights) -> Structure:
    """Streams, heads, classes and width of a torchfcn-layout checkpoint, from its keys."""
    keys = set(src.state)
    # Stream suffixes of conv1_1; the RGB stream first (the inputs are image, then hha).
    streams = tuple(sorted((s for s in _suffixes(keys, "conv1_1") if s), key=_stream_order))
    heads: tuple[tuple[str, int], ...] = ()
    if not streams and _suffixes(keys, "score_fr") != [""]:
        # SIFT Flow's semantic head first: its classes are the net's n_class.
        ordered = sorted(_suffixes(keys, "score_fr"), key=lambda h: (h != "sem", h))
        heads = tuple((h, src.state[f"score_fr{h}.weight"].shape[0]) for h in ordered)
    score = f"score_fr{streams[0] if streams else (heads[0][0] if heads else '')}.weight"
    first_conv = f"conv1_1{streams[0] if streams else ''}.weight"
    return Structure(
        streams,
        heads,
        src.state[score].shape[0],
        infer_width(src, first_conv),
        score,
        has_batch_norm(keys),
    )


def _stream_order(suffix: str) -> tuple[bool, str]:
    return (suffix != "color", suffix)


# Where the user sets what a .pth cannot say (its architecture, its class count): the flags of
# convert_torch_weights.py, or the experiment config (eval.py, reproduce.py, train.py's
# init.from_). Errors name the one the user can change, and how.
FLAG_OPTIONS = {"arch": "--arch", "n_class": "--n-class"}
CONFIG_OPTIONS = {"arch": "config.model.arch", "n_class": "config.model.n_class"}


def _setting(option: str, value: object) -> str:
    """How to set ``option`` on a command line: ``--arch fcn8s``, ``--config.model.arch=fcn8s``."""
    return f"{option} {value}" if option.startswith("--") else f"--{option}={value}"


def check_fits(
    src: TorchWeights,
    variant: str,
    n_class: int | None,
    options: Mapping[str, str] = FLAG_OPTIONS,
) -> None:
    """Fail where a torchfcn checkpoint contradicts the caller's variant or class count.

    Args:
        src: the checkpoint.
        variant: the FCN variant asked for.
        n_class: the class count asked for, or None.
        options: how the user sets ``arch`` and ``n_class`` (:data:`FLAG_OPTIONS` or
            :data:`CONFIG_OPTIONS`), named in the errors with the value to pass.
    """
    named = variant_from_arch_entry(src.arch) if src.arch is not None else None
    if named is not None and named != variant:
        raise FCNError(
            f"{src.path} says arch={src.arch!r} ({named}) but {options['arch']} is "
            f"{variant}: pass {_setting(options['arch'], named)}"
        )
    structure = read_structure(src)
    if n_class is not None and n_class != structure.n_class:
        shape = tuple(src.state[structure.score_key].shape)
        raise FCNError(
            f"{src.path} has {structure.n_class} classes ({structure.score_key} is {shape}) "
            f"but {options['n_class']} is {n_class}: use weights with {n_class} classes, or "
            f"pass {_setting(options['n_class'], structure.n_class)} (for data with "
            f"{structure.n_class} classes)"
        )


def torchfcn_to_variables(
    src: TorchWeights,
    variant: str,
    n_class: int | None = None,
    options: Mapping[str, str] = FLAG_OPTIONS,
) -> dict[str, PyTree]:
    """Convert a torchfcn-layout checkpoint into the Flax variables of ``variant``.

    Single-stream FCNs as torchfcn saves them, the release's two-stream (``conv1_1color``,
    ``conv1_1hha``, ...) and two-head (``score_frsem``, ``score_frgeo``, ...) nets in the same
    layout, and FCNs on ``vgg16_bn`` (``bn1_1.*`` ...: their affine parameters go to
    ``params``, their running statistics to ``batch_stats``; ``num_batches_tracked`` is
    ignored): the structure is read off the keys (:func:`read_structure`).

    Args:
        src: the checkpoint, ``kind == "torchfcn"``.
        variant: the FCN variant (fcn8s and fcn8s-atonce share keys, so this decides).
        n_class: expected class count of the (first) output; must agree with the checkpoint.
        options: how the caller's user sets the variant and class count, for errors
            (:func:`check_fits`).

    Returns:
        ``{"params": ...}`` (plus ``"batch_stats"`` with BatchNorm), numpy arrays, every
        tensor copied from the checkpoint.

    Raises:
        FCNError: arch entry, class count, keys or shapes disagree with ``variant``.
    """
    check_fits(src, variant, n_class, options)
    structure = read_structure(src)
    spec, _ = spec_for(structure, variant)
    abstract = traverse_util.flatten_dict(abstract_variables(spec))
    expected = {
        torch_key(path): torch_shape(torch_key(path), leaf.shape) for path, leaf in abstract.items()
    }
    what = f"an {variant} (width {structure.width:g}, {structure.n_class} classes"
    what += ", vgg16_bn backbone)" if structure.batch_norm else ")"
    # torch's BatchNorm step counters: no Flax counterpart, ignored.
    shapes = {k: s for k, s in src.shapes().items() if not k.endswith(f".{NUM_BATCHES_TRACKED}")}
    if set(expected) != set(shapes):
        what += f"; its keys look like {guess_variant(set(shapes))}"
    check_keys_and_shapes(str(src.path), shapes, expected, what)
    flat = {path: to_flax(torch_key(path), src.state[torch_key(path)]) for path in abstract}
    return traverse_util.unflatten_dict(flat)


def spec_for(structure: Structure, variant: str) -> tuple[NetSpec, tuple[tuple[str, ...], ...]]:
    """The network a checkpoint of this structure converts into, with the release's inputs.

    The release's nets take Caffe inputs: VOC's mean by default, NYUDv2's for the RGB-HHA
    streams (``color`` reads ``image``), SIFT Flow's for the semantic + geometric net. A net
    with BatchNorm is on ``vgg16_bn``, whose only ImageNet weights are torchvision's: it takes
    torchvision's input by default (``--preprocessing`` overrides any of these).

    Returns:
        (the spec, class names of its heads after the first: SIFT Flow's geometric classes
        for a 3-class ``geo`` head, ``class_<i>`` otherwise).
    """
    backbone = "vgg16_bn" if structure.batch_norm else "vgg16"
    common = dict(arch=variant, width=structure.width, backbone=backbone)
    if structure.streams:
        inputs = tuple("image" if s == "color" else s for s in structure.streams)
        spec = NetSpec(
            heads=((SINGLE_HEAD, structure.n_class),),
            streams=structure.streams,
            inputs=inputs,
            preprocessing=(NYUD_RGB, *(NYUD_HHA,) * (len(inputs) - 1)),
            **common,
        )
        return spec, ()
    if structure.heads:
        spec = NetSpec(heads=structure.heads, preprocessing=(SIFTFLOW,), **common)
        names = tuple(
            GEOMETRIC_CLASSES if (h, n) == ("geo", 3) else default_class_names(n)
            for h, n in structure.heads[1:]
        )
        return spec, names
    default = TORCHVISION if structure.batch_norm else CAFFE_VOC
    return NetSpec.single(n_class=structure.n_class, preprocessing=(default,), **common), ()


def flax_to_torchfcn(variables: PyTree) -> dict[str, np.ndarray]:
    """Flax FCN variables -> torchfcn state dict (numpy), loadable strictly by torchfcn's classes.

    Args:
        variables: ``{"params": ..., "batch_stats": ...}``, or a bare params tree (a network
            without BatchNorm).

    Returns:
        torchfcn key -> array in torch's layout. With BatchNorm, its running statistics too and
        a ``num_batches_tracked`` of 0 (int64) per BatchNorm, which torch's strict loading
        (:class:`~fcn_jax.torch_reference.TorchFCN` with ``batch_norm=True``) requires.
    """
    if "params" not in variables:  # a params tree: its top level is layer names
        variables = {"params": variables}
    state = {
        torch_key(path): to_torch(torch_key(path), np.asarray(leaf))
        for path, leaf in traverse_util.flatten_dict(variables).items()
    }
    for key in [k for k in state if k.endswith(".running_mean")]:
        state[f"{key.rsplit('.', 1)[0]}.{NUM_BATCHES_TRACKED}"] = np.zeros((), np.int64)
    return state
