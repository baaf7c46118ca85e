"""torchvision's FCN-ResNets and ImageNet ResNets <-> Flax variables of ``fcn_resnet50/101``.

Two kinds of torchvision state dicts, recognised by their keys:

- a segmentation checkpoint (``fcn_resnet50_coco-1167a1af.pth``, or any
  ``torchvision.models.segmentation.fcn_resnet50(...).state_dict()``): ``backbone.*`` (the
  ResNet trunk up to layer4), ``classifier.*`` and, when trained with the auxiliary loss,
  ``aux_classifier.*``. Converted tensor for tensor; the depth (ResNet-50 or -101) is read
  from the number of blocks in layer3 (6 or 23), the class count from ``classifier.4.weight``,
  the width from ``backbone.conv1.weight`` and the auxiliary head from its keys;
- an ImageNet classification checkpoint (``resnet50-0676ba61.pth``, ``resnet101-63fe2227.pth``,
  any ``torchvision.models.resnet50().state_dict()``): the trunk of a *new* FCN-ResNet (with
  its auxiliary head, as torchvision's recipe trains it), whose heads are initialised as
  torchvision initialises ``FCNHead`` (:func:`~fcn_jax.models.spec.torch_default_head`); ``fc.*``
  (the 1000-way classifier) is dropped, said in a one-line warning.

Names: a torch module path is the Flax path with the dots as nesting (the trunk under the
backbone's name, ``resnet50``, instead of ``backbone``); leaves are renamed as everywhere in
fcn-jax (convolution ``weight`` -> ``kernel`` [kh, kw, in, out], BatchNorm ``weight`` /
``bias`` -> ``params/scale`` / ``params/bias``, ``running_mean`` / ``running_var`` ->
``batch_stats/mean`` / ``batch_stats/var``); ``num_batches_tracked`` (a count no computation
reads) is ignored on import and written as int64 0 on export (:func:`flax_to_torchvision`),
which loads strictly into ``torchvision.models.segmentation.fcn_resnet50(weights=None,
weights_backbone=None, num_classes=N, aux_loss=...)``.

Preprocessing: torchvision's (RGB in [0, 1], ImageNet mean and standard deviation), and its
evaluation resize: the shorter side to 520 (:data:`EVAL_RESIZE`, stored in the metadata; see
:mod:`fcn_jax.data.resize`), as torchvision's weights' ``transforms`` and reference evaluation
resize. A new FCN-ResNet on an ImageNet ResNet gets the same (torchvision's recipe evaluates it
so).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from flax import traverse_util

from fcn_jax.convert.layout import conv_to_flax, conv_to_torch
from fcn_jax.convert.torch_files import TorchWeights
from fcn_jax.convert.torchfcn import FLAG_OPTIONS, infer_width
from fcn_jax.errors import FCNError, format_list, warn
from fcn_jax.models import NetSpec, abstract_variables, initial_head_params
from fcn_jax.models.backbones.resnet import DEPTHS
from fcn_jax.models.fcn_resnet import AUX_HEAD, HEADS
from fcn_jax.models.spec import RESNET_ARCHS
from fcn_jax.preprocessing import TORCHVISION
from fcn_jax.strict import check_keys_and_shapes
from fcn_jax.types import PyTree

TRUNK_PREFIX = "backbone."  # the trunk's prefix in segmentation checkpoints
NUM_BATCHES_TRACKED = "num_batches_tracked"
SCORE = "classifier.4.weight"  # gives the class count
# Shorter side torchvision's segmentation weights are evaluated at (``resize_size=520``).
EVAL_RESIZE = 520
CLASSIFIER_FC = "fc."  # the ImageNet classifier, unused
ARCH_OF = {backbone: arch for arch, backbone in RESNET_ARCHS.items()}
# torch leaf of a BatchNorm -> (Flax collection, leaf).
BN_LEAVES = {
    "weight": ("params", "scale"),
    "bias": ("params", "bias"),
    "running_mean": ("batch_stats", "mean"),
    "running_var": ("batch_stats", "var"),
}
# A FCNHead's modules that hold tensors: (child, kind).
HEAD_MODULES = (("0", "conv"), ("1", "bn"), ("4", "conv_bias"))


def recognises_fcn(keys: set[str]) -> bool:
    """A torchvision FCN-ResNet: ``backbone.*`` trunk keys and a ``classifier.*`` head."""
    return any(k.startswith(("backbone.conv1.", "backbone.layer")) for k in keys) and any(
        k.startswith(("classifier.", "aux_classifier.")) for k in keys
    )


def recognises_resnet(keys: set[str]) -> bool:
    """A torchvision ImageNet ResNet: ``conv1.*`` / ``bn1.*`` and ``layer1.*`` keys."""
    return any(k.startswith(("conv1.", "bn1.")) for k in keys) and any(
        k.startswith("layer1.") for k in keys
    )


def module_table(blocks: tuple[int, ...]) -> list[tuple[str, str]]:
    """Every module of a torchvision ResNet trunk that holds tensors, ``(path, kind)``, in order.

    Kinds: ``conv`` (weight only) and ``bn``; paths without the trunk's prefix
    (``layer1.0.downsample.0``). The heads' are :func:`head_table`'s.
    """
    table = [("conv1", "conv"), ("bn1", "bn")]
    for stage, n in enumerate(blocks, start=1):
        for block in range(n):
            path = f"layer{stage}.{block}"
            for i in (1, 2, 3):
                table += [(f"{path}.conv{i}", "conv"), (f"{path}.bn{i}", "bn")]
            if block == 0:  # the projected shortcut of each stage's first block
                table += [(f"{path}.downsample.0", "conv"), (f"{path}.downsample.1", "bn")]
    return table


def head_table(aux: bool) -> list[tuple[str, str]]:
    """The heads' modules, ``(path, kind)``, in state-dict order (``classifier`` first).

    Kinds: ``conv`` (the 3x3, no bias), ``bn``, ``conv_bias`` (the 1x1 scoring the classes).
    """
    scopes = [HEADS["out"][0], *([HEADS[AUX_HEAD][0]] if aux else [])]
    return [(f"{scope}.{child}", kind) for scope in scopes for child, kind in HEAD_MODULES]


def key_table(
    backbone: str, aux: bool, trunk_prefix: str = TRUNK_PREFIX, heads: bool = True
) -> dict[str, tuple[str, tuple[str, ...], str]]:
    """The torch key -> (Flax collection, path in it, layout) table, in torchvision's order.

    Layouts: ``conv`` (:func:`conv_to_flax`) and ``copy``. ``num_batches_tracked`` is not in
    the table.

    Args:
        backbone: ``resnet50`` or ``resnet101``.
        aux: include ``aux_classifier``.
        trunk_prefix: ``backbone.`` (segmentation checkpoints) or empty (ImageNet ResNets).
        heads: include the heads (False: the trunk alone, as an ImageNet ResNet holds it).
    """
    modules = [
        (trunk_prefix + p, (backbone, *p.split(".")), k) for p, k in module_table(DEPTHS[backbone])
    ]
    if heads:
        modules += [(p, tuple(p.split(".")), k) for p, k in head_table(aux)]
    table = {}
    for prefix, path, kind in modules:
        if kind == "bn":
            for leaf, (collection, flax_leaf) in BN_LEAVES.items():
                table[f"{prefix}.{leaf}"] = (collection, (*path, flax_leaf), "copy")
            continue
        table[f"{prefix}.weight"] = ("params", (*path, "kernel"), "conv")
        if kind == "conv_bias":
            table[f"{prefix}.bias"] = ("params", (*path, "bias"), "copy")
    return table


_TO_FLAX = {"conv": conv_to_flax, "copy": np.asarray}
_TO_TORCH = {"conv": conv_to_torch, "copy": np.ascontiguousarray}


def _fail(src: TorchWeights, what: str, problem: str) -> FCNError:
    return FCNError(
        f"{src.path} looks like {what} but {problem}; its keys: " + format_list(sorted(src.state))
    )


def read_backbone(src: TorchWeights, trunk_prefix: str, what: str) -> str:
    """``resnet50`` or ``resnet101``: the blocks per stage of a state dict's trunk.

    Raises:
        FCNError: the stages hold another number of blocks (naming them) or none.
    """
    counts = []
    for stage in range(1, 5):
        prefix = f"{trunk_prefix}layer{stage}."
        blocks = {int(k[len(prefix) :].split(".")[0]) for k in src.state if k.startswith(prefix)}
        counts.append(max(blocks) + 1 if blocks else 0)
    for backbone, blocks in DEPTHS.items():
        if tuple(counts) == blocks:
            return backbone
    known = ", ".join(f"{'-'.join(map(str, b))} ({name})" for name, b in DEPTHS.items())
    raise _fail(
        src,
        what,
        f"its layer1 ... layer4 hold {'-'.join(map(str, counts))} Bottleneck blocks, not {known}",
    )


def _check_arch(src: TorchWeights, arch: str, backbone: str, what: str, options: Mapping) -> None:
    expected = ARCH_OF[backbone]
    if arch != expected:
        raise FCNError(
            f"{src.path} is {what} on {backbone} ({DEPTHS[backbone][2]} blocks in "
            f"layer3): {options['arch']} must be {expected} for it, not {arch}"
        )


def _expected_shapes(
    spec: NetSpec, table: Mapping[str, tuple[str, tuple[str, ...], str]]
) -> dict[str, tuple[int, ...]]:
    """The torch key -> torch shape that the Flax variables of ``spec`` need."""
    abstract = traverse_util.flatten_dict(abstract_variables(spec))
    return {
        key: tuple(_TO_TORCH[layout](np.empty(abstract[(collection, *path)].shape)).shape)
        for key, (collection, path, layout) in table.items()
    }


def spec_for(arch: str, n_class: int, aux: bool, width: float) -> NetSpec:
    """The network a torchvision checkpoint converts into (torchvision's preprocessing)."""
    return NetSpec.single(
        arch,
        n_class,
        backbone=RESNET_ARCHS[arch],
        aux=aux,
        width=width,
        preprocessing=(TORCHVISION,),
    )


def _convert(
    src: TorchWeights, table: Mapping[str, tuple[str, tuple[str, ...], str]]
) -> dict[str, PyTree]:
    flat = {
        (collection, *path): _TO_FLAX[layout](src.state[key])
        for key, (collection, path, layout) in table.items()
    }
    return traverse_util.unflatten_dict(flat)


def fcn_resnet_to_flax(
    src: TorchWeights,
    arch: str,
    n_class: int | None = None,
    options: Mapping[str, str] = FLAG_OPTIONS,
) -> tuple[dict[str, PyTree], NetSpec]:
    """Convert a torchvision FCN-ResNet state dict, every tensor copied.

    Args:
        src: the state dict (``backbone.*``, ``classifier.*``, optionally ``aux_classifier.*``),
            of any width.
        arch: ``fcn_resnet50`` or ``fcn_resnet101``; must be the checkpoint's (checked).
        n_class: expected class count, or None; must agree with ``classifier.4.weight``'s.
        options: how the user sets ``arch`` and ``n_class``, named in errors.

    Returns:
        (``{"params": ..., "batch_stats": ...}`` as numpy arrays, the network: aux head as
        the checkpoint has it, torchvision's preprocessing).

    Raises:
        FCNError: the wrong arch, a class count that disagrees, a missing or unexpected key or
            a shape that does not fit (each named).
    """
    what = "a torchvision FCN-ResNet state dict (backbone.*, classifier.*)"
    backbone = read_backbone(src, TRUNK_PREFIX, what)
    _check_arch(src, arch, backbone, "a torchvision FCN-ResNet", options)
    if SCORE not in src.state:
        raise _fail(src, what, f"it lacks {SCORE} (the 1x1 convolution that scores the classes)")
    if "backbone.conv1.weight" not in src.state:
        raise _fail(src, what, "it lacks backbone.conv1.weight (the stem, which gives the width)")
    classes = int(src.state[SCORE].shape[0])
    if n_class is not None and n_class != classes:
        raise FCNError(
            f"{src.path} has {classes} classes ({SCORE} is {tuple(src.state[SCORE].shape)}) but "
            f"{options['n_class']} is {n_class}: use weights with {n_class} classes, or set "
            f"{options['n_class']} to {classes}"
        )
    aux = any(k.startswith(f"{HEADS[AUX_HEAD][0]}.") for k in src.state)
    width = infer_width(src, "backbone.conv1.weight")
    spec = spec_for(arch, classes, aux, width)
    table = key_table(backbone, aux)
    found = {k: v for k, v in src.shapes().items() if not k.endswith(f".{NUM_BATCHES_TRACKED}")}
    check_keys_and_shapes(
        str(src.path),
        found,
        _expected_shapes(spec, table),
        f"torchvision's {arch} (width {width:g}, {classes} classes, "
        f"{'with' if aux else 'without'} aux_classifier)",
    )
    return _convert(src, table), spec


def resnet_to_fcn(
    src: TorchWeights,
    arch: str,
    n_class: int | None = None,
    options: Mapping[str, str] = FLAG_OPTIONS,
    seed: int = 0,
) -> tuple[dict[str, PyTree], NetSpec]:
    """A new FCN-ResNet on a torchvision ImageNet ResNet's trunk.

    Args:
        src: ``resnet50`` / ``resnet101`` weights (``conv1.*``, ``layer1.*`` ... ``fc.*``), any
            width.
        arch: ``fcn_resnet50`` for a ResNet-50, ``fcn_resnet101`` for a ResNet-101 (checked).
        n_class: classes of the new heads (21 by default).
        options: how the user sets ``arch``, named in errors.
        seed: NumPy seed of the heads' initial values.

    Returns:
        (variables: the trunk copied, ``classifier`` and ``aux_classifier`` as torchvision
        initialises them (BatchNorm statistics mean 0, variance 1); the network, with the
        auxiliary head and torchvision's preprocessing).

    Raises:
        FCNError: the wrong arch, a missing or unexpected key or a shape that does not fit.
    """
    what = "a torchvision ImageNet ResNet state dict (conv1.*, layer1.* ... fc.*)"
    backbone = read_backbone(src, "", what)
    _check_arch(src, arch, backbone, "a torchvision ImageNet ResNet", options)
    if "conv1.weight" not in src.state:
        raise _fail(src, what, "it lacks conv1.weight (the stem, which gives the width)")
    width = infer_width(src, "conv1.weight")
    spec = spec_for(arch, 21 if n_class is None else n_class, True, width)
    table = key_table(backbone, aux=True, trunk_prefix="", heads=False)
    found = {k: v for k, v in src.shapes().items() if not k.endswith(f".{NUM_BATCHES_TRACKED}")}
    check_keys_and_shapes(
        str(src.path),
        found,
        _expected_shapes(spec, table),
        f"a torchvision {backbone} of width {width:g}",
        ignore=(CLASSIFIER_FC,),
    )
    dropped = sorted(k for k in found if k.startswith(CLASSIFIER_FC))
    if dropped:
        warn(f"{src.path}: {', '.join(dropped)} (the ImageNet classifier) unused: dropped")
    variables = _convert(src, table)
    abstract = abstract_variables(spec)
    heads = initial_head_params(spec, abstract["params"], seed)
    variables["params"] |= jax_to_numpy(heads)
    for scope in heads:  # BatchNorm2d's initial running statistics
        stats = abstract["batch_stats"][scope]
        variables["batch_stats"][scope] = {
            module: {k: np.full(v.shape, k == "var", np.float32) for k, v in leaves.items()}
            for module, leaves in stats.items()
        }
    assert set(traverse_util.flatten_dict(variables)) == set(traverse_util.flatten_dict(abstract))
    return variables, spec


def jax_to_numpy(tree: PyTree) -> PyTree:
    """Every leaf of a nested dict as a numpy array."""
    flat = traverse_util.flatten_dict(tree)
    return traverse_util.unflatten_dict({k: np.asarray(v) for k, v in flat.items()})


def flax_to_torchvision(variables: Mapping[str, PyTree], spec: NetSpec) -> dict[str, np.ndarray]:
    """Flax variables of an FCN-ResNet -> torchvision's segmentation state dict (numpy).

    Keys and order as ``fcn_resnet50(..., aux_loss=spec.aux).state_dict()``; every
    ``num_batches_tracked`` an int64 0. Loads with ``strict=True``.
    """
    flat = traverse_util.flatten_dict(dict(variables))
    state: dict[str, np.ndarray] = {}
    for key, (collection, path, layout) in key_table(spec.backbone, spec.aux).items():
        state[key] = _TO_TORCH[layout](np.asarray(flat[(collection, *path)]))
        if key.endswith(".running_var"):
            state[key.replace("running_var", NUM_BATCHES_TRACKED)] = np.zeros((), np.int64)
    return state
