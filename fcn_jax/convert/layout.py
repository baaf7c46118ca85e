"""Tensor layouts between PyTorch and Flax, and torchfcn's key of each Flax param.

Every layout change lives here, pinned by the torch parity tests (the layer *names* of a
backbone's foreign checkpoints live with the backbone, e.g.
:data:`~fcn_jax.models.backbones.vgg16.TORCHVISION_CONVS`):

- conv kernels: torch [out, in, kh, kw] <-> Flax [kh, kw, in, out];
- transposed conv kernels: torch ``ConvTranspose2d`` [in, out, kh, kw] <-> Flax
  :class:`~fcn_jax.models.fcn.Upsample` [kh, kw, in, out], *spatially flipped*: torch scatters
  each input pixel through the kernel (the gradient of a convolution), while
  ``lax.conv_transpose`` correlates the stride-dilated input with the kernel, which reverses it.
  A symmetric bilinear kernel hides the difference; a learned one does not.
- torchvision's classifier: ``classifier.0`` [4096, 25088] is fc6 as a [4096, 512, 7, 7] conv
  (torch flattens pool5 channel-major), ``classifier.3`` [4096, 4096] is fc7 as 1x1.
"""

from __future__ import annotations

import numpy as np
from flax import traverse_util

from fcn_jax.errors import FCNError
from fcn_jax.types import PyTree


def conv_to_flax(w: np.ndarray) -> np.ndarray:
    """Torch conv weight [O, I, kh, kw] -> Flax kernel [kh, kw, I, O]."""
    return np.ascontiguousarray(np.transpose(w, (2, 3, 1, 0)))


def conv_to_torch(k: np.ndarray) -> np.ndarray:
    """Flax conv kernel [kh, kw, I, O] -> torch weight [O, I, kh, kw]."""
    return np.ascontiguousarray(np.transpose(k, (3, 2, 0, 1)))


def deconv_to_flax(w: np.ndarray) -> np.ndarray:
    """Torch ConvTranspose2d weight [I, O, kh, kw] -> Flax Upsample kernel [kh, kw, I, O]."""
    return np.ascontiguousarray(np.transpose(w[:, :, ::-1, ::-1], (2, 3, 0, 1)))


def deconv_to_torch(k: np.ndarray) -> np.ndarray:
    """Flax Upsample kernel [kh, kw, I, O] -> torch ConvTranspose2d weight [I, O, kh, kw]."""
    return np.ascontiguousarray(np.transpose(k, (2, 3, 0, 1))[:, :, ::-1, ::-1])


def linear_to_conv(w: np.ndarray, in_channels: int, kernel: int) -> np.ndarray:
    """Torch Linear weight [O, I * k * k] -> Flax conv kernel [k, k, I, O]."""
    if w.shape[1] != in_channels * kernel * kernel:
        raise FCNError(
            f"Linear weight {tuple(w.shape)} cannot be a {kernel}x{kernel} conv on "
            f"{in_channels} channels (needs {in_channels * kernel * kernel} inputs)"
        )
    return conv_to_flax(w.reshape(w.shape[0], in_channels, kernel, kernel))


def is_upsampling(layer: str) -> bool:
    """Whether a layer name is one of the transposed convolutions (upscore*)."""
    return layer.startswith("upscore")


def torch_key(path: tuple[str, ...]) -> str:
    """Torchfcn state-dict key of a Flax param path, e.g. ('vgg16', 'conv1_1', 'kernel')."""
    layer, leaf = path[-2], path[-1]
    return f"{layer}.{'weight' if leaf == 'kernel' else 'bias'}"


def torchfcn_names(params: PyTree) -> dict[str, tuple[str, ...]]:
    """Torchfcn key -> Flax param path, for every param of an FCN params tree."""
    return {torch_key(path): path for path in traverse_util.flatten_dict(params)}


def to_flax(key: str, w: np.ndarray) -> np.ndarray:
    """Convert one torchfcn tensor to the Flax layout of the param it maps to."""
    if key.endswith(".bias"):
        return w
    return deconv_to_flax(w) if is_upsampling(key.split(".")[0]) else conv_to_flax(w)


def to_torch(key: str, w: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_flax`."""
    if key.endswith(".bias"):
        return np.ascontiguousarray(w)
    return deconv_to_torch(w) if is_upsampling(key.split(".")[0]) else conv_to_torch(w)
