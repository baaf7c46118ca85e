"""Reading and writing PyTorch weight files, safely (``torch.load(..., weights_only=True)``)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fcn_jax.errors import FCNError, format_list

TORCHVISION_VGG16 = "torchvision_vgg16"
TORCHVISION_VGG16_BN = "torchvision_vgg16_bn"
TORCHFCN = "torchfcn"
SPEEDPAPER = "speedpaper"
TORCHVISION_FCN_RESNET = "torchvision_fcn_resnet"  # torchvision's segmentation FCN-ResNets
TORCHVISION_RESNET = "torchvision_resnet"  # torchvision's ImageNet ResNet-50 / -101
# SpeedPaper's second version saves {"CustomNet": state_dict} as <tag>_<epoch>e_<miou>.pkl.
SPEEDPAPER_ENTRY = "CustomNet"


def import_torch() -> Any:
    """Import torch, or say how to install it."""
    try:
        import torch
    except ImportError:
        raise FCNError(
            "PyTorch is needed for this: pip install 'fcn-jax[torch]' (on CPU machines "
            "torch==2.13.0 avoids the multi-GB CUDA build)"
        ) from None
    return torch


def import_torch_float32() -> Any:
    """:func:`import_torch`, with float32 matmuls and convolutions in full float32 (TF32 off).

    JAX's float32 side computes at ``highest`` precision; on an Ampere or newer GPU torch would
    otherwise round to TF32 and a parity check or a timing would compare unequal arithmetic.
    """
    torch = import_torch()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    return torch


@dataclasses.dataclass(frozen=True)
class TorchWeights:
    """A state dict read from a PyTorch file.

    Attributes:
        path: the file.
        kind: a key of :data:`fcn_jax.convert.sources.SOURCES` (``torchvision_vgg16``,
            ``torchvision_vgg16_bn``, ``torchfcn``, ``speedpaper``, ``torchvision_fcn_resnet``,
            ``torchvision_resnet``), recognised by the keys.
        state: key -> array, exactly as stored (float32 for the known sources).
        arch: the checkpoint's own ``arch`` entry, if it has one.
    """

    path: Path
    kind: str
    state: dict[str, np.ndarray]
    arch: str | None = None

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Key -> shape."""
        return {k: tuple(v.shape) for k, v in self.state.items()}


def read_torch_weights(path: str | Path) -> TorchWeights:
    """Load a PyTorch weights file without running any code it may carry.

    Accepts a bare state dict, a dict holding ``model_state_dict`` (torchfcn's trainer
    checkpoints, with ``arch``) or ``CustomNet`` (SpeedPaper's ``.pkl``); a ``module.`` prefix
    (DataParallel) is stripped.

    Raises:
        FCNError: the file is missing, not a torch file, not weights-only (it pickles other
            Python objects, which are never unpickled), or holds no recognisable state dict.
    """
    path = Path(path)
    if not path.is_file():  # said first: a wrong path needs no torch to fix
        raise FCNError(f"{path} does not exist" if not path.exists() else f"{path} is not a file")
    torch = import_torch()
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for bad files (pickle, zip, runtime)
        raise FCNError(
            f"{path} is not a PyTorch checkpoint that torch.load(weights_only=True) can read "
            f"({_load_error(e)})"
        ) from None
    arch = None
    if isinstance(obj, Mapping) and "model_state_dict" in obj:
        arch = obj.get("arch")
        obj = obj["model_state_dict"]
    elif isinstance(obj, Mapping) and SPEEDPAPER_ENTRY in obj:
        obj = obj[SPEEDPAPER_ENTRY]
    if not (isinstance(obj, Mapping) and obj and all(torch.is_tensor(v) for v in obj.values())):
        keys = sorted(map(str, obj)) if isinstance(obj, Mapping) else []
        raise FCNError(
            f"{path} holds no state dict: expected a dict of tensors, or a dict with "
            f"'model_state_dict' (torchfcn) or '{SPEEDPAPER_ENTRY}' (SpeedPaper's .pkl), found "
            f"{type(obj).__name__}" + (f" with keys {format_list(keys)}" if keys else "")
        )
    state = {}
    for key, value in obj.items():
        key = key.removeprefix("module.")
        state[key] = (
            value.detach().cpu().float().numpy() if value.is_floating_point() else value.numpy()
        )
    # The sources import this module (TorchWeights): their table is read here, not at import.
    from fcn_jax.convert.sources import detect_kind

    return TorchWeights(path, detect_kind(path, set(state)), state, str(arch) if arch else None)


def _load_error(e: Exception) -> str:
    """What went wrong in ``torch.load(weights_only=True)``, in one line.

    A pickle of other objects than tensors and containers (a config object, a numpy scalar)
    fails with torch's long "Weights only load failed" text: reduced to the object refused.
    """
    text = str(e).strip()
    refused = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if refused or "Weights only load failed" in text:
        what = f" (it holds {refused.group(1)})" if refused else ""
        return (
            f"not weights-only: it pickles Python objects besides tensors{what}, which fcn-jax "
            "never unpickles since unpickling can run code; where you trust the file, re-save "
            "its state dict alone with torch.save"
        )
    first = text.splitlines()[0] if text else ""
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


def write_state_dict(path: str | Path, state: Mapping[str, np.ndarray]) -> Path:
    """Write a bare state dict (SpeedPaper's ``<epoch>.pth`` form)."""
    torch = import_torch()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: torch.from_numpy(np.array(v)) for k, v in state.items()}, path)
    return path


def write_torchfcn_checkpoint(path: str | Path, state: Mapping[str, np.ndarray], arch: str) -> Path:
    """Write ``{'model_state_dict': ..., 'arch': ...}`` as torchfcn's trainer does."""
    torch = import_torch()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: torch.from_numpy(np.array(v)) for k, v in state.items()}  # owned, writable
    torch.save({"model_state_dict": tensors, "arch": arch}, path)
    return path
