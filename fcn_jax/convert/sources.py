"""The PyTorch weight sources fcn-jax converts: one converter module each, one entry here.

A source is recognised by the keys of its state dict and converted into Flax variables plus the
:class:`~fcn_jax.models.NetSpec` they belong to (the preprocessing its weights expect
included). Adding a source (a new backbone's ImageNet weights, another project's FCNs) means
one converter module and one entry in :data:`SOURCES`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path

from fcn_jax.convert import speedpaper, torchfcn, torchvision_resnet, torchvision_vgg
from fcn_jax.convert.torch_files import (
    SPEEDPAPER,
    TORCHFCN,
    TORCHVISION_FCN_RESNET,
    TORCHVISION_RESNET,
    TORCHVISION_VGG16,
    TORCHVISION_VGG16_BN,
    TorchWeights,
)
from fcn_jax.errors import FCNError, format_list
from fcn_jax.models import VARIANTS, NetSpec
from fcn_jax.models.spec import RESNET_ARCHS
from fcn_jax.models.spec import SPEEDPAPER as SPEEDPAPER_ARCH
from fcn_jax.types import PyTree


@dataclasses.dataclass(frozen=True)
class Converted:
    """A converted state dict.

    Attributes:
        variables: ``{"params": ..., <other collections, e.g. batch_stats>}`` (numpy arrays).
        spec: the network they belong to, with the preprocessing the source expects.
        head_class_names: class names of ``spec.heads[1:]`` where the source implies them.
        eval_resize: the shorter side the weights are evaluated at, where the source's own
            evaluation resizes (torchvision's segmentation weights: 520).
    """

    variables: dict[str, PyTree]
    spec: NetSpec
    head_class_names: tuple[tuple[str, ...], ...] = ()
    eval_resize: int | None = None


@dataclasses.dataclass(frozen=True)
class Source:
    """One kind of PyTorch weights.

    Attributes:
        looks_like: what its keys look like, for the error that lists the known kinds.
        recognises: whether a state dict's key set is of this kind.
        convert: ``(weights, arch, n_class or None, options) -> Converted``; ``options`` name
            the user's settings of arch and class count in errors.
        archs: the ``NetSpec.arch`` values it converts into (the paper's variants by default).
    """

    looks_like: str
    recognises: Callable[[set[str]], bool]
    convert: Callable[[TorchWeights, str, int | None, Mapping[str, str]], Converted]
    archs: tuple[str, ...] = tuple(VARIANTS)


def _torchfcn(src: TorchWeights, arch: str, n_class: int | None, options: Mapping[str, str]):
    variables = torchfcn.torchfcn_to_variables(src, arch, n_class, options)
    spec, head_class_names = torchfcn.spec_for(torchfcn.read_structure(src), arch)
    return Converted(variables, spec, head_class_names)


def _torchvision_vgg16(src: TorchWeights, arch: str, n_class: int | None, _: Mapping[str, str]):
    # VGG16 and VGG16-BN alike: the converter reads which from src.kind.
    variables, spec = torchvision_vgg.vgg16_to_fcn(src, arch, 21 if n_class is None else n_class)
    return Converted(variables, spec)


def _speedpaper(src: TorchWeights, arch: str, n_class: int | None, options: Mapping[str, str]):
    variables, spec = speedpaper.speedpaper_to_flax(src, arch, n_class, options)
    return Converted(variables, spec)


def _fcn_resnet(src: TorchWeights, arch: str, n_class: int | None, options: Mapping[str, str]):
    variables, spec = torchvision_resnet.fcn_resnet_to_flax(src, arch, n_class, options)
    return Converted(variables, spec, eval_resize=torchvision_resnet.EVAL_RESIZE)


def _resnet(src: TorchWeights, arch: str, n_class: int | None, options: Mapping[str, str]):
    variables, spec = torchvision_resnet.resnet_to_fcn(src, arch, n_class, options)
    return Converted(variables, spec, eval_resize=torchvision_resnet.EVAL_RESIZE)


SOURCES: dict[str, Source] = {
    TORCHVISION_VGG16: Source(
        "a torchvision VGG16 state dict (features.N.*, classifier.N.*)",
        torchvision_vgg.recognises,
        _torchvision_vgg16,
    ),
    TORCHVISION_VGG16_BN: Source(
        "a torchvision VGG16-BN state dict (features.N.* with BatchNorm running statistics, "
        "classifier.N.*)",
        torchvision_vgg.recognises_bn,
        _torchvision_vgg16,
        archs=(*VARIANTS, SPEEDPAPER_ARCH),  # SpeedPaper's FCN stands on vgg16_bn's features
    ),
    TORCHFCN: Source(
        "a torchfcn FCN checkpoint (conv1_1.*, ..., score_fr.*)",
        torchfcn.recognises,
        _torchfcn,
    ),
    SPEEDPAPER: Source(
        "a SpeedPaper FCN state dict (stage1.0.*, ..., conv_trans1.*, upsample_8x.*)",
        speedpaper.recognises,
        _speedpaper,
        archs=(SPEEDPAPER_ARCH,),
    ),
    TORCHVISION_FCN_RESNET: Source(
        "a torchvision FCN-ResNet state dict (backbone.*, classifier.*, aux_classifier.*)",
        torchvision_resnet.recognises_fcn,
        _fcn_resnet,
        archs=tuple(RESNET_ARCHS),
    ),
    TORCHVISION_RESNET: Source(
        "a torchvision ImageNet ResNet state dict (conv1.*, layer1.*, ..., fc.*)",
        torchvision_resnet.recognises_resnet,
        _resnet,
        archs=tuple(RESNET_ARCHS),
    ),
}


def detect_kind(path: Path, keys: set[str]) -> str:
    """The kind of :data:`SOURCES` a state dict's keys belong to.

    Raises:
        FCNError: no known kind; the message lists what each looks like and the file's keys.
    """
    for kind, source in SOURCES.items():
        if source.recognises(keys):
            return kind
    known = " nor ".join(s.looks_like for s in SOURCES.values())
    raise FCNError(f"{path} is neither {known}; its keys: " + format_list(sorted(keys)))
