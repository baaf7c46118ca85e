"""Prediction from a weights directory: images in, class maps (palette PNGs) and logits out."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from fcn_jax.checkpoint import WeightsMetadata, load_weights
from fcn_jax.data.io import read_image
from fcn_jax.resources import voc_palette
from fcn_jax.types import Array, PyTree


def save_index_png(labels: np.ndarray, path: str | Path, palette: np.ndarray | None = None) -> Path:
    """Write class indices [H, W] as a palette ('P' mode) PNG, VOC colours by default.

    The file holds the indices themselves (readable as labels) and shows as colours.
    """
    if labels.max(initial=0) > 255:
        raise ValueError("a palette PNG holds at most 256 classes")
    im = Image.fromarray(labels.astype(np.uint8), mode="P")
    im.putpalette((voc_palette() if palette is None else palette).reshape(-1).tolist())
    path = Path(path)
    im.save(path)
    return path


def side_by_side(
    image: np.ndarray, labels: np.ndarray, palette: np.ndarray | None = None
) -> np.ndarray:
    """``image | coloured prediction`` as one [H, 2W, 3] uint8 picture.

    Args:
        image: [H, W, 3] uint8 RGB.
        labels: [H, W] class indices.
        palette: [256, 3] uint8 colours (VOC's by default).
    """
    colours = (voc_palette() if palette is None else palette)[labels]
    return np.concatenate([image, colours], axis=1)


class Predictor:
    """A model loaded from a weights directory, with its preprocessing, ready to predict.

    The jitted function takes uint8 images and preprocesses on the device (a quarter of the
    float32 transfer); it compiles once per image shape.
    """

    def __init__(self, params: PyTree, metadata: WeightsMetadata) -> None:
        self.params = params
        self.metadata = metadata
        model = metadata.model()
        preprocessing = metadata.preprocessing

        @jax.jit
        def run(params: PyTree, images: Array) -> tuple[Array, Array]:
            logits = model.apply({"params": params}, preprocessing.apply(images))
            return logits, jnp.argmax(logits, axis=-1).astype(jnp.uint8)

        self._run = run

    @classmethod
    def from_dir(cls, weights_dir: str | Path) -> Predictor:
        """Load params and metadata from a weights directory."""
        return cls(*load_weights(weights_dir))

    def __call__(self, image: np.ndarray) -> tuple[Array, Array]:
        """Logits [H, W, n_class] float32 and class map [H, W] uint8 for one [H, W, 3] uint8 image.

        Returned as device arrays: only what the caller reads is transferred.
        """
        logits, labels = self._run(self.params, jnp.asarray(image)[None])
        return logits[0], labels[0]


def predict_files(
    weights_dir: str | Path,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    save_logits: bool = False,
    save_side_by_side: bool = False,
) -> list[Path]:
    """Predict each input image and write the results to ``out_dir``.

    Writes ``<stem>.png`` (class indices, palette PNG), with ``save_logits`` ``<stem>.npy``
    (float32 logits [H, W, n_class]) and with ``save_side_by_side`` ``<stem>_side.png``
    (image | coloured prediction).

    Returns:
        The written class-map paths, in input order.
    """
    predictor = Predictor.from_dir(weights_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in inputs:
        image = read_image(path)
        logits, labels = predictor(image)
        stem = Path(path).stem
        labels = np.asarray(labels)
        written.append(save_index_png(labels, out / f"{stem}.png"))
        if save_side_by_side:
            Image.fromarray(side_by_side(image, labels)).save(out / f"{stem}_side.png")
        if save_logits:
            np.save(out / f"{stem}.npy", np.asarray(logits, np.float32))
    return written
