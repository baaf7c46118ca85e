"""Conversion between PyTorch weights and weights directories.

Sources: torchvision VGG16, torchfcn FCNs, SpeedPaper's FCN (:mod:`fcn_jax.convert.speedpaper`),
torchvision's FCN-ResNets and ImageNet ResNets (:mod:`fcn_jax.convert.torchvision_resnet`).

- :func:`convert_torch_file`: a ``.pth`` file -> Flax variables + metadata (the preprocessing the
  source expects included), by the converter of its kind (:data:`~fcn_jax.convert.sources.SOURCES`:
  one module per weight source);
- :func:`export_torch`: a weights directory -> the checkpoint layout of its architecture
  (:func:`export_torchfcn` for the paper's variants, a bare SpeedPaper state dict for
  ``speedpaper``, a bare torchvision state dict for ``fcn_resnet50`` / ``fcn_resnet101``);
  :func:`torch_state_dict` is that state dict in memory;
- :func:`fcn_jax.convert.check.check_parity`: runs both frameworks on one image and reports.

torch is imported lazily, only by the functions that read or write torch files.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

import ml_collections
import numpy as np

from fcn_jax.checkpoint import WeightsMetadata, load_weights, sha256_file
from fcn_jax.convert.sources import SOURCES
from fcn_jax.convert.speedpaper import flax_to_speedpaper
from fcn_jax.convert.torch_files import (
    TorchWeights,
    read_torch_weights,
    write_state_dict,
    write_torchfcn_checkpoint,
)
from fcn_jax.convert.torchfcn import (
    CONFIG_OPTIONS,
    FLAG_OPTIONS,
    flax_to_torchfcn,
    torchfcn_to_variables,
)
from fcn_jax.convert.torchvision_resnet import flax_to_torchvision
from fcn_jax.errors import FCNError, warn
from fcn_jax.models import NetSpec, get_variant
from fcn_jax.models.spec import ARCHS, RESNET_ARCHS, SPEEDPAPER
from fcn_jax.preprocessing import PRESETS, Preprocessing, reconcile
from fcn_jax.resources import default_class_names
from fcn_jax.types import PyTree

__all__ = [
    "TorchWeights",
    "convert_torch_file",
    "custom_preprocessing",
    "export_torch",
    "export_torchfcn",
    "load_any_weights",
    "load_weights_for_config",
    "read_torch_weights",
    "torch_state_dict",
    "torchfcn_to_variables",
    "warn_network_differs",
]


def convert_torch_file(
    src: str | Path,
    arch: str,
    n_class: int | None = None,
    class_names: Sequence[str] | None = None,
    preprocessing_name: str | None = None,
    options: Mapping[str, str] = FLAG_OPTIONS,
    preprocessing: Preprocessing | None = None,
) -> tuple[PyTree, WeightsMetadata, TorchWeights]:
    """Convert a PyTorch weights file, recognised by its keys.

    Args:
        src: a torchvision VGG16 or VGG16-BN state dict, a torchfcn FCN checkpoint (bare state
            dict or a dict with ``model_state_dict``; with ``bn*`` keys, on vgg16_bn), a
            SpeedPaper FCN state dict (bare, or under ``CustomNet`` in its ``.pkl``), or a
            torchvision FCN-ResNet or ImageNet ResNet-50 / -101 state dict.
        arch: the network to build: an FCN variant (``fcn32s``, ``fcn16s``, ``fcn8s``,
            ``fcn8s-atonce``), ``speedpaper`` (from a SpeedPaper checkpoint or a torchvision
            VGG16-BN), or ``fcn_resnet50`` / ``fcn_resnet101`` (from a torchvision FCN-ResNet
            or ImageNet ResNet of that depth).
        n_class: class count; for an FCN checkpoint it must match the checkpoint's, for a
            VGG16 or an ImageNet ResNet it sets the new score layers (21 by default).
        class_names: one per class; VOC's for 21 classes by default.
        preprocessing_name: a preset of :data:`fcn_jax.preprocessing.PRESETS` overriding the
            source's default (Caffe VOC for torchfcn FCNs, NYUDv2 / SIFT Flow means for the
            two-stream / two-head nets, torchvision for VGG16, SpeedPaper's FCN and the
            ResNets).
        options: how the user sets ``arch`` and ``n_class`` (:data:`FLAG_OPTIONS` or
            :data:`CONFIG_OPTIONS`), named in errors.
        preprocessing: explicit numbers overriding the source's default
            (:func:`custom_preprocessing`); not with ``preprocessing_name``.

    Returns:
        (variables as numpy arrays, ``{"params": ..., ...}``; metadata; the source weights).
    """
    if arch not in ARCHS:
        raise FCNError(f"unknown --arch {arch!r}; choose one of {sorted(ARCHS)}")
    if preprocessing_name is not None and preprocessing is not None:
        raise FCNError("give a --preprocessing preset or --mean / --std, not both")
    weights = read_torch_weights(src)
    source = SOURCES[weights.kind]
    if arch not in source.archs:
        raise FCNError(
            f"{weights.path} is {source.looks_like}: {options['arch']} must be "
            + (source.archs[0] if len(source.archs) == 1 else f"one of {', '.join(source.archs)}")
            + f" for it, not {arch}"
        )
    converted = source.convert(weights, arch, n_class, options)
    variables, spec = converted.variables, converted.spec
    if preprocessing_name is not None:
        if preprocessing_name not in PRESETS:
            raise FCNError(
                f"unknown --preprocessing {preprocessing_name!r}; choose one of {sorted(PRESETS)}"
            )
        preprocessing = PRESETS[preprocessing_name]
    if preprocessing is not None:
        spec = spec.replace(preprocessing=(preprocessing, *spec.preprocessing[1:]))
    n_class = spec.n_class
    names = tuple(class_names) if class_names is not None else default_class_names(n_class)
    if len(names) != n_class:
        raise FCNError(f"{len(names)} class names given for {n_class} classes")
    metadata = WeightsMetadata(
        spec=spec,
        class_names=names,
        head_class_names=converted.head_class_names,
        source=weights.kind,
        source_sha256=sha256_file(src),
        eval_resize=converted.eval_resize,
    )
    return variables, metadata, weights


def load_any_weights(
    path: str | Path,
    arch: str,
    n_class: int | None = None,
    preprocessing_name: str | None = None,
    inputs: Sequence[str] | None = None,
    step: int | None = None,
    options: Mapping[str, str] = CONFIG_OPTIONS,
) -> tuple[PyTree, WeightsMetadata]:
    """Variables and metadata from a weights directory, or a PyTorch file converted on the fly.

    A directory's metadata says everything; a ``.pth`` holds tensors only, so what it cannot
    say comes from the caller's config.

    Args:
        path: a weights directory, or a ``.pth`` that :func:`convert_torch_file` accepts.
        arch: the variant to build from a ``.pth`` (a directory's metadata names its own).
        n_class: expected classes of a ``.pth``.
        preprocessing_name: the preset a ``.pth`` expects (the config's).
        inputs: the record keys a single-stream ``.pth`` reads (the config's modalities).
        step: the checkpoint step of a directory (latest by default).
        options: how the user sets ``arch`` and ``n_class``, named in errors (the config's
            keys by default).
    """
    path = Path(path)
    if path.is_dir():
        return load_weights(path, step)
    if not path.exists():
        raise FCNError(f"weights {path} do not exist: give a weights directory or a .pth file")
    variables, metadata, _ = convert_torch_file(
        path, arch, n_class, None, preprocessing_name, options=options
    )
    if inputs is not None and not metadata.streams:
        metadata = dataclasses.replace(metadata, spec=metadata.spec.replace(inputs=tuple(inputs)))
    return variables, metadata


def load_weights_for_config(
    config: ml_collections.ConfigDict, path: str | Path, step: int | None = None
) -> tuple[PyTree, WeightsMetadata]:
    """:func:`load_any_weights` for an experiment config (eval.py, reproduce.py).

    A ``.pth`` takes its architecture, classes, preprocessing and inputs from ``config``; a
    weights directory's own metadata wins. Either way the weights decide, with a one-line
    ``warning:`` on stderr where the config expected another preprocessing, architecture or
    width (or, where the config sets it, class count).

    Args:
        config: the experiment's config (``model.arch``, ``model.n_class``, ``model.width``,
            ``data``); ``model.n_class`` may be None (the weights' count is taken).
        path: a weights directory or a ``.pth`` file.
        step: the checkpoint step of a directory (latest by default).

    Raises:
        FCNError: missing or unreadable weights, or a ``.pth`` whose architecture or class count
            contradicts the config (naming ``config.model.arch`` / ``config.model.n_class``).
    """
    variables, metadata = load_any_weights(
        path,
        config.model.arch,
        config.model.n_class,
        preprocessing_name=config.data.get("preprocessing"),
        inputs=config.data.get("modalities"),
        step=step,
    )
    reconcile(config.data.get("preprocessing"), metadata.preprocessing)
    warn_network_differs(config, metadata, path)
    return variables, metadata


def warn_network_differs(
    config: ml_collections.ConfigDict, metadata: WeightsMetadata, path: str | Path
) -> None:
    """Warn where ``config.model`` describes another network than the weights (they decide).

    Compares the architecture and width, and the class count where the config sets one (None
    means "from the data or the weights"). Silent when they agree.
    """
    model = config.model
    said = {"arch": model.arch, "width": model.width, "n_class": model.get("n_class")}
    have = {"arch": metadata.arch, "width": metadata.width, "n_class": metadata.n_class}
    differ = [k for k, v in said.items() if v is not None and v != have[k]]
    if differ:
        warn(
            ", ".join(f"config.model.{k}={said[k]!r}" for k in differ)
            + f" but the weights {path} have "
            + ", ".join(f"{k}={have[k]!r}" for k in differ)
            + ": the weights decide (their network is used)"
        )


def export_torchfcn(weights_dir: str | Path, out: str | Path) -> Path:
    """Write a weights directory as ``{'model_state_dict': ..., 'arch': ...}`` (torchfcn layout).

    ``arch`` is torchfcn's class name (``FCN8s``, ...), which its trainer writes and
    :func:`convert_torch_file` checks. Tensors are copied bit for bit; a ``vgg16_bn`` network's
    BatchNorms are written with their running statistics (``num_batches_tracked`` 0).
    """
    variables, metadata = load_weights(weights_dir, as_numpy=True)
    state = flax_to_torchfcn(variables)
    return write_torchfcn_checkpoint(out, state, get_variant(metadata.arch).torch_name)


def torch_state_dict(variables: Mapping[str, PyTree], spec: NetSpec) -> dict[str, np.ndarray]:
    """The state dict (numpy) that ``spec``'s PyTorch reference loads strictly.

    SpeedPaper's layout for ``speedpaper`` (:func:`flax_to_speedpaper`), torchvision's for the
    FCN-ResNets (:func:`flax_to_torchvision`), torchfcn's otherwise.
    """
    if spec.arch in RESNET_ARCHS:
        return flax_to_torchvision(variables, spec)
    if spec.arch == SPEEDPAPER:
        return flax_to_speedpaper(variables)
    return flax_to_torchfcn(variables)


def export_torch(weights_dir: str | Path, out: str | Path) -> Path:
    """Write a weights directory in its architecture's PyTorch layout, tensors bit for bit.

    ``speedpaper``: a bare state dict, as SpeedPaper's first version saves ``<epoch>.pth`` (its
    unused ``scores*`` layers zero, ``num_batches_tracked`` 0), loadable with ``strict=True``;
    ``fcn_resnet50`` / ``fcn_resnet101``: a bare state dict in torchvision's layout, which
    ``torchvision.models.segmentation.fcn_resnet50(weights=None, weights_backbone=None,
    num_classes=N, aux_loss=...)`` loads with ``strict=True``; the paper's variants:
    :func:`export_torchfcn`.
    """
    variables, metadata = load_weights(weights_dir, as_numpy=True)
    if metadata.arch in RESNET_ARCHS:
        return write_state_dict(out, flax_to_torchvision(variables, metadata.spec))
    if metadata.arch == SPEEDPAPER:
        return write_state_dict(out, flax_to_speedpaper(variables))
    return export_torchfcn(weights_dir, out)


def custom_preprocessing(
    mean: Sequence[float] | None, std: Sequence[float] | None, grey: bool = False
) -> Preprocessing | None:
    """``--mean R G B --std R G B [--grey]`` (RGB, [0, 1] pixels) as a Preprocessing, or None.

    Stored as ``Preprocessing("custom", "RGB", 1, mean, std, grey)``: ``x = (pixels / 255 -
    mean) / std``, as ``torchvision.transforms.Normalize`` after ``ToTensor``; with ``grey``
    the image is first made grey and replicated to three channels.

    Raises:
        FCNError: only one of the two given, not three numbers each, a std <= 0, or ``grey``
            without them (naming the flag).
    """
    if mean is None and std is None:
        if grey:
            raise FCNError(
                "--grey goes with --mean and --std (or use --preprocessing speedpaper-grey)"
            )
        return None
    if mean is None or std is None:
        given, missing = ("--mean", "--std") if std is None else ("--std", "--mean")
        raise FCNError(
            f"{given} needs {missing} too: three numbers each, RGB, for pixels in [0, 1]"
        )
    for flag, values in (("--mean", mean), ("--std", std)):
        if len(values) != 3:
            raise FCNError(
                f"{flag} takes three numbers (R G B, for pixels in [0, 1]), got {len(values)}: "
                f"{list(values)}"
            )
    if min(std) <= 0:
        raise FCNError(f"--std must be positive, got {list(std)}")
    return Preprocessing(
        "custom",
        "RGB",
        1,
        tuple(float(v) for v in mean),
        tuple(float(v) for v in std),
        grey=grey,
    )
