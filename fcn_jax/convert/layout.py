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
- vectors (biases, BatchNorm's affine parameters and running statistics) have no layout: they
  are copied as they are, under torch's names (:data:`TORCH_LEAVES`). torch's BatchNorm also
  keeps ``num_batches_tracked``, which nothing here uses (ignored on import, 0 on export).
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


# Flax leaf name -> torch's: conv kernels and BatchNorm scales are ``weight``; BatchNorm's
# running statistics (the ``batch_stats`` collection) are buffers.
TORCH_LEAVES = {
    "kernel": "weight",
    "bias": "bias",
    "scale": "weight",
    "mean": "running_mean",
    "var": "running_var",
}
NUM_BATCHES_TRACKED = "num_batches_tracked"  # torch-only BatchNorm buffer (int64 step count)


def torch_key(path: tuple[str, ...]) -> str:
    """Torchfcn state-dict key of a Flax variable path.

    ``('vgg16', 'conv1_1', 'kernel')`` -> ``conv1_1.weight``; BatchNorm's
    ``('vgg16_bn', 'bn1_1', 'scale')`` -> ``bn1_1.weight`` and, in ``batch_stats``,
    ``(..., 'bn1_1', 'var')`` -> ``bn1_1.running_var``. A leading collection name is allowed.
    """
    layer, leaf = path[-2], path[-1]
    if leaf not in TORCH_LEAVES:
        raise ValueError(f"no torch name for the Flax variable {'/'.join(path)}")
    return f"{layer}.{TORCH_LEAVES[leaf]}"


def torchfcn_names(variables: PyTree) -> dict[str, tuple[str, ...]]:
    """Torchfcn key -> Flax path, for every leaf of an FCN params tree or variables dict.

    Given variables (``{"params": ..., "batch_stats": ...}``) the paths start with the
    collection. torch's ``num_batches_tracked`` buffers have no Flax counterpart.
    """
    return {torch_key(path): path for path in traverse_util.flatten_dict(variables)}


def to_flax(key: str, w: np.ndarray) -> np.ndarray:
    """Convert one torchfcn tensor to the Flax layout of the variable it maps to."""
    if w.ndim <= 1:  # biases, BatchNorm's vectors
        return w
    return deconv_to_flax(w) if is_upsampling(key.split(".")[0]) else conv_to_flax(w)


def to_torch(key: str, w: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_flax`."""
    if w.ndim <= 1:
        return np.ascontiguousarray(w)
    return deconv_to_torch(w) if is_upsampling(key.split(".")[0]) else conv_to_torch(w)


def torch_shape(key: str, flax_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Shape of :func:`to_torch`'s result for a Flax array of ``flax_shape``.

    Read off :func:`to_torch` applied to a tiny array whose axes have distinct sizes, so the
    layouts stay written once and fc6's 400 MB kernel is not built to learn its shape.
    """
    probe = (2, 3, 5, 7, 11, 13)[: len(flax_shape)]
    out = to_torch(key, np.empty(probe, np.float32)).shape
    return tuple(flax_shape[probe.index(n)] for n in out)
