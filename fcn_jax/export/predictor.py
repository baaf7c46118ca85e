"""Predict with an artifact as :class:`fcn_jax.inference.Predictor` predicts with weights.

Same contract, same numbers: one [H, W, 3] uint8 image in, the first head's logits
[H, W, C] float32 and labels [H, W] uint8 out; weights with an evaluation resize (the
FCN-ResNets) see the image resized to that shorter side with PIL's bilinear, and their logits
are resized back with the same ``jax.image.resize`` call as
:func:`fcn_jax.models.fcn_resnet.resize_bilinear` before the argmax. Flax-free: predict.py
on an artifact never imports the model code.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from fcn_jax.data.resize import resize_image, resized_size
from fcn_jax.errors import FCNError
from fcn_jax.export.artifact import Artifact, load_artifact
from fcn_jax.resources import voc_palette


def resize_bilinear(logits: jax.Array, height: int, width: int) -> jax.Array:
    """[N, h, w, C] -> [N, height, width, C], the call of the model's ``resize_bilinear``.

    :func:`fcn_jax.models.fcn_resnet.resize_bilinear` (torch's ``align_corners=False``) lives
    with the flax modules; this is the same ``jax.image.resize`` call, without them
    (tests/export/ checks the two agree).
    """
    shape = (logits.shape[0], height, width, logits.shape[3])
    return jax.image.resize(logits, shape, "bilinear", antialias=False)


_resize_back = jax.jit(resize_bilinear, static_argnums=(1, 2))


class ArtifactPredictor:
    """An artifact ready to predict single images (its first head, as :class:`Predictor`).

    Attributes:
        artifact: the loaded artifact.
        class_names: the first head's classes.
    """

    def __init__(self, artifact: Artifact) -> None:
        """Check that ``artifact`` can predict RGB images alone."""
        info = artifact.info
        if len(info.inputs) != 1:
            raise FCNError(
                f"{artifact.path} reads {[t.name for t in info.inputs]}, not RGB images alone: "
                "run it on its inputs with fcn_jax.export.load_artifact"
            )
        self.artifact = artifact
        self.class_names = info.class_names
        self._logits = info.output("logits")
        self._labels = info.output("labels")
        if info.eval_resize is not None and self._logits is None:
            raise FCNError(
                f"{artifact.path} has no logits output, which these weights' evaluation resize "
                f"(shorter side {info.eval_resize}) needs to resize back: export --outputs "
                "logits or both"
            )

    @classmethod
    def from_file(cls, path: str | Path) -> ArtifactPredictor:
        """Load an artifact file and wrap it."""
        return cls(load_artifact(path))

    @property
    def has_logits(self) -> bool:
        """Whether the artifact outputs logits (``--save-logits`` needs them)."""
        return self._logits is not None

    def palette_array(self) -> np.ndarray:
        """[256, 3] uint8 colours: the artifact's per-class colours over VOC's colour map."""
        colours = voc_palette().copy()
        palette = np.asarray(self.artifact.info.palette, np.uint8).reshape(-1, 3)
        colours[: len(palette)] = palette
        return colours

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        """Logits [H, W, C] float32 (None without a logits output) and labels [H, W] uint8."""
        height, width = image.shape[:2]
        shorter = self.artifact.info.eval_resize
        if shorter is not None:
            image = resize_image(image, *resized_size(height, width, shorter))
        out = self.artifact(np.asarray(image, np.uint8)[None])
        if self._logits is None:
            return None, out[self._labels.name][0]  # type: ignore[union-attr]  # checked in init
        logits = out[self._logits.name]
        if logits.shape[1:3] != (height, width):
            logits = np.asarray(_resize_back(jnp.asarray(logits), height, width))
        labels = np.argmax(logits[0], axis=-1).astype(np.uint8)
        return logits[0], labels
