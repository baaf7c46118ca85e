"""Input normalisation, stored with the weights so that no tool can feed the wrong one.

The first pitfall of FCN ports: Caffe-derived VGG16 weights (the release, torchfcn) expect BGR
pixels in 0-255 minus the dataset mean; torchvision's expect RGB in [0, 1] normalised by the
ImageNet mean and std. Feeding one the other's input costs points of mIoU silently. The weights'
metadata holds the numbers below, and every tool reads them from there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

from fcn_jax.errors import FCNError, warn
from fcn_jax.types import Array


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """How to turn uint8 RGB pixels into network input.

    ``x = (pixels[..., order] * scale / 255 - mean) / std``; with ``grey``, ``pixels`` is first
    made grey: each pixel's luma (:func:`luma`) in all three channels.

    Attributes:
        name: ``caffe`` or ``torchvision`` (or a dataset's own name).
        channel_order: ``RGB`` or ``BGR``: the channel order the network expects.
        scale: pixel range the network expects, 255 (Caffe) or 1 (torchvision).
        mean: per-channel mean, in ``channel_order`` and in the ``scale`` range.
        std: per-channel std, same convention.
        grey: the network expects a greyscale image replicated to three channels (SpeedPaper's
            second version, trained on grey images read as RGB): a colour image is turned grey
            as PIL's ``convert("L")`` does before normalising, so that a colour photo reaches
            the network as the grey picture it was trained on. A grey image (R = G = B, as a
            single-channel file is read) is unchanged by it. Stored in the weights' metadata
            only when true, so older metadata reads back as false.
    """

    name: str
    channel_order: str
    scale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    grey: bool = False

    def __post_init__(self) -> None:
        if self.channel_order not in ("RGB", "BGR"):
            raise FCNError(
                f"preprocessing channel_order must be RGB or BGR, not {self.channel_order!r}"
            )
        if self.scale not in (1, 255):
            raise FCNError(f"preprocessing scale must be 1 or 255, not {self.scale!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise FCNError(
                f"preprocessing needs 3 means and 3 positive stds, got {self.mean}, {self.std}"
            )

    def apply(self, images: Array | np.ndarray) -> Array:
        """Normalise images.

        Args:
            images: [..., H, W, 3] uint8 (or float in 0-255), RGB.

        Returns:
            float32 array of the same shape, ready for the network.
        """
        x = jnp.asarray(images, jnp.float32)
        if self.grey:
            x = jnp.repeat(luma(x)[..., None], 3, axis=-1)
        if self.channel_order == "BGR":
            x = x[..., ::-1]
        if self.scale != 255:
            x = x * (self.scale / 255.0)
        mean = jnp.asarray(self.mean, jnp.float32)
        std = jnp.asarray(self.std, jnp.float32)
        return (x - mean) / std

    def mean_pixel(self) -> tuple[int, int, int]:
        """The uint8 RGB pixel closest to the mean: what normalises to (about) zero.

        With ``grey``, the grey pixel at the channels' mean level (it stays itself when made grey).
        """
        mean = np.asarray(self.mean, np.float64) * (255.0 / self.scale)
        if self.channel_order == "BGR":
            mean = mean[::-1]
        if self.grey:
            mean = np.full(3, mean.mean())
        r, g, b = (int(v) for v in np.clip(np.round(mean), 0, 255))
        return r, g, b

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (numbers, not names); ``grey`` only when true.

        Without ``grey`` the dict is the one every earlier version wrote, so metadata written
        before the field existed and metadata written now for the same weights are identical.
        """
        d = dataclasses.asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        if not self.grey:
            del d["grey"]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Preprocessing:
        """Inverse of :meth:`to_dict`; a missing key is an error naming it (``grey``: false)."""
        missing = [k for k in ("name", "channel_order", "scale", "mean", "std") if k not in d]
        if missing:
            raise FCNError(f"preprocessing metadata lacks {missing}; got keys {sorted(d)}")
        grey = d.get("grey", False)
        if not isinstance(grey, bool):  # "false" would be truthy: refuse rather than guess
            raise FCNError(f"preprocessing metadata: grey must be true or false, not {grey!r}")
        return cls(
            name=str(d["name"]),
            channel_order=str(d["channel_order"]),
            scale=float(d["scale"]),
            mean=tuple(float(v) for v in d["mean"]),  # type: ignore[arg-type]  # length checked
            std=tuple(float(v) for v in d["std"]),  # type: ignore[arg-type]  # length checked
            grey=grey,
        )


# PIL's fixed-point weights of ITU-R 601-2 luma (L = R 299/1000 + G 587/1000 + B 114/1000),
# scaled by 2^16; they sum to exactly 2^16, so a grey pixel maps to itself.
LUMA_WEIGHTS = (19595, 38470, 7471)


def luma(images: Array | np.ndarray) -> Array:
    """Grey levels of RGB pixels, exactly as PIL's ``Image.convert("L")`` computes them.

    ITU-R 601-2 luma, ``L = R * 299/1000 + G * 587/1000 + B * 114/1000``, in PIL's fixed point:
    ``(19595 R + 38470 G + 7471 B + 32768) >> 16``. On uint8 pixels the result is bit-identical
    to PIL's (float32 holds every intermediate exactly: at most 255 * 2^16 + 2^15 < 2^24), and
    a grey pixel (R = G = B) stays exactly itself. Float pixels in 0-255 go through the same
    formula, rounded the same way.

    Args:
        images: [..., 3] RGB, uint8 or float in 0-255.

    Returns:
        [...] float32 whole numbers in 0-255.
    """
    x = jnp.asarray(images, jnp.float32)
    # Elementwise, not a matrix product: an accelerator may compute float32 dots at reduced
    # precision (TF32, bf16 passes), which would lose the exact integers.
    wr, wg, wb = LUMA_WEIGHTS
    return jnp.floor((x[..., 0] * wr + x[..., 1] * wg + x[..., 2] * wb + 32768.0) / 65536.0)


def reconcile(configured: str | Mapping[str, Any] | None, weights: Preprocessing) -> Preprocessing:
    """The weights' preprocessing, with a loud warning if the config expected another one.

    The warning is one ``warning: ...`` line on stderr (:func:`fcn_jax.errors.warn`), not a
    Python ``UserWarning``: it is meant for the person running a tool, and the warnings module
    would print this file's source line with it.

    Args:
        configured: what the config says (a name such as ``caffe``, a dict of numbers, or None).
        weights: what the weights' metadata says; it always wins.
    """
    if configured is None:
        return weights
    expected = Preprocessing.from_dict(configured) if isinstance(configured, Mapping) else None
    name = expected.name if expected is not None else str(configured)
    differs = (expected != weights) if expected is not None else (name != weights.name)
    if differs:
        warn(
            f"the config expects {name!r} preprocessing (config.data.preprocessing) but the "
            f"weights were made for {weights.name!r} ({weights.channel_order}, scale "
            f"{weights.scale:g}, mean {list(weights.mean)}, std {list(weights.std)}): using the "
            "weights' preprocessing"
        )
    return weights


# torchfcn / Caffe VGG16: BGR, 0-255, minus the mean of the release's PASCAL models (BGR order).
CAFFE_VOC = Preprocessing("caffe", "BGR", 255, (104.00699, 116.66877, 122.67892))
# torchvision VGG16: RGB in [0, 1], ImageNet mean and std.
TORCHVISION = Preprocessing("torchvision", "RGB", 1, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
# The release's other datasets: Caffe input (BGR, 0-255) minus each dataset's own mean.
NYUD_RGB = Preprocessing("caffe-nyud", "BGR", 255, (116.190, 97.203, 92.318))
NYUD_HHA = Preprocessing("caffe-nyud-hha", "BGR", 255, (132.431, 94.076, 118.477))
SIFTFLOW = Preprocessing("caffe-siftflow", "BGR", 255, (114.578, 115.294, 108.353))
CONTEXT = Preprocessing("caffe-context", "BGR", 255, (104.007, 116.669, 122.679))
# SpeedPaper's second version: grey images (read as RGB) in [0, 1] normalised by the grey-level
# mean and std of its training set (its config.py: DATA_MEAN / DATA_STD, the same in each channel).
SPEEDPAPER_GREY = Preprocessing(
    "speedpaper-grey", "RGB", 1, (0.16328026,) * 3, (0.2432042,) * 3, grey=True
)

PRESETS: dict[str, Preprocessing] = {
    p.name: p
    for p in (CAFFE_VOC, TORCHVISION, NYUD_RGB, NYUD_HHA, SIFTFLOW, CONTEXT, SPEEDPAPER_GREY)
}
