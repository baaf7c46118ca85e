"""Prediction from a weights directory or an artifact: images or folders in; class maps out.

A weights directory is run by :class:`Predictor` (the Flax network); an exported artifact
(``.onnx`` / ``.stablehlo``, :mod:`fcn_jax.export`) by
:class:`~fcn_jax.export.predictor.ArtifactPredictor`, with the same outputs. The model code
(flax, the network modules) is imported only for a weights directory, so predicting with an
artifact needs neither.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
from tqdm import tqdm

from fcn_jax.data.io import read_image
from fcn_jax.data.resize import resize_image, resized_size
from fcn_jax.errors import FCNError, format_list
from fcn_jax.export.info import is_artifact_path
from fcn_jax.outputs import output_dir
from fcn_jax.resources import voc_palette
from fcn_jax.types import Array, PyTree
from fcn_jax.visualize import check_overlay, overlay_picture

if TYPE_CHECKING:
    from fcn_jax.checkpoint import WeightsMetadata
    from fcn_jax.export.predictor import ArtifactPredictor


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


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class InputImages:
    """What an ``--input`` path holds: the images to predict and what was left out.

    Attributes:
        images: image files (by suffix, :data:`IMAGE_SUFFIXES`), sorted by name.
        subfolders: folders inside an input folder, not entered (no recursion), sorted.
        hidden: hidden files (names starting with ``.``: macOS ``._x.jpg`` and ``.DS_Store``,
            editors' temporaries), skipped without a word.
    """

    images: list[Path]
    subfolders: list[Path] = field(default_factory=list)
    hidden: list[Path] = field(default_factory=list)


def output_names(stem: str, save_logits: bool) -> list[str]:
    """The files :func:`predict_files` writes for an input of this stem."""
    return [f"{stem}.png", f"{stem}_overlay.png"] + ([f"{stem}.npy"] if save_logits else [])


def find_images(path: str | Path, save_logits: bool = False) -> InputImages:
    """An image file, or the image files of a folder (not its subfolders, nor hidden files).

    Args:
        path: an image file or a folder.
        save_logits: whether ``.npy`` outputs will be written too (for the name check).

    Raises:
        FCNError: missing path, a folder without images, or two images whose outputs would
            have the same name (``x.jpg`` and ``x.png``; ``x.jpg`` and ``x_overlay.png``).
    """
    path = Path(path)
    if path.is_file():
        return InputImages([path])
    if not path.is_dir():
        raise FCNError(f"input {path} does not exist")
    entries = sorted(path.iterdir())
    hidden = [p for p in entries if p.name.startswith(".")]
    visible = [p for p in entries if not p.name.startswith(".")]
    subfolders = [p for p in visible if p.is_dir()]
    images = [p for p in visible if not p.is_dir() and p.suffix.lower() in IMAGE_SUFFIXES]
    if not images:
        inside = (
            f"; predict does not enter subfolders ({format_list([p.name for p in subfolders])}): "
            "pass one of them as --input"
            if subfolders
            else ""
        )
        raise FCNError(f"folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)}){inside}")
    owners: dict[str, Path] = {}
    for p in images:
        for name in output_names(p.stem, save_logits):
            if name in owners:
                other = owners[name]
                clash = (
                    f"share the stem {p.stem!r}"
                    if other.stem == p.stem
                    else f"would both write {name}"
                )
                raise FCNError(
                    f"{other.name} and {p.name} in {path} {clash}: outputs are named by stem, "
                    "so rename one"
                )
            owners[name] = p
    return InputImages(images, subfolders, hidden)


@dataclass(frozen=True)
class PredictResult:
    """What :func:`predict_files` did.

    Attributes:
        written: the class-map PNGs written, in input order.
        failed: ``(image, why)`` for each input that could not be read; its outputs are not
            written.
        inputs: what the input path held (:class:`InputImages`: subfolders not entered...).
    """

    written: list[Path]
    failed: list[tuple[Path, str]]
    inputs: InputImages


@functools.cache
def _resize_back() -> Callable[[Array, int, int], Array]:
    """Scores of a resized image back to the image's size (one compilation per size pair)."""
    from fcn_jax.models.fcn_resnet import resize_bilinear

    return jax.jit(resize_bilinear, static_argnums=(1, 2))


class Predictor:
    """A model loaded from a weights directory, with its preprocessing, ready to predict.

    The jitted function takes uint8 images and preprocesses on the device (a quarter of the
    float32 transfer); it compiles once per image shape. A multi-head network (SIFT Flow)
    predicts its first head (the semantic classes).
    """

    def __init__(self, variables: PyTree, metadata: WeightsMetadata) -> None:
        """Hold ``variables`` (``{"params": ..., ...}``) of the network ``metadata`` describes."""
        if metadata.inputs != ("image",):
            raise FCNError(
                f"these weights read {metadata.inputs}, not RGB images alone: score them on their "
                "dataset with eval.py"
            )
        from fcn_jax.models import predict_fn

        self.variables = variables
        self.metadata = metadata
        self.class_names = metadata.class_names
        self._predict = predict_fn(metadata.spec)
        self._head = metadata.spec.head_names[0]

    @classmethod
    def from_dir(cls, weights_dir: str | Path, step: int | None = None) -> Predictor:
        """Load variables and metadata from a weights directory (latest step by default)."""
        from fcn_jax.checkpoint import load_weights

        return cls(*load_weights(weights_dir, step))

    has_logits = True  # as an ArtifactPredictor without a logits output has not

    def palette_array(self) -> np.ndarray:
        """[256, 3] uint8 colours of the classes (``metadata.palette_array()``)."""
        return self.metadata.palette_array()

    def __call__(self, image: np.ndarray) -> tuple[Array, Array]:
        """Logits [H, W, n_class] float32 and class map [H, W] uint8 for one [H, W, 3] uint8 image.

        Weights with an evaluation resize (``metadata.eval_resize``, torchvision's FCN-ResNets)
        see the image resized to that shorter side (as their ``transforms`` resize it), and
        their logits are resized back to the image's size (bilinear) before the argmax.
        Returned as device arrays: only what the caller reads is transferred.
        """
        height, width = image.shape[:2]
        if self.metadata.eval_resize is not None:
            image = resize_image(image, *resized_size(height, width, self.metadata.eval_resize))
        logits = self._predict(self.variables, {"image": jnp.asarray(image)[None]})
        logits = logits[self._head]
        if logits.shape[1:3] != (height, width):
            logits = _resize_back()(logits, height, width)
        logits = logits[0]
        return logits, jnp.argmax(logits, axis=-1).astype(jnp.uint8)


def load_predictor(weights: str | Path, step: int | None = None) -> Predictor | ArtifactPredictor:
    """A :class:`Predictor` for a weights directory, an ``ArtifactPredictor`` for an artifact.

    An artifact is recognised by its suffix (``.onnx``, ``.stablehlo``) and loaded without
    the model code (:mod:`fcn_jax.export.predictor`).
    """
    if is_artifact_path(weights):
        if step is not None:
            raise FCNError(
                f"--step / --best choose a checkpoint of a weights directory; {weights} is an "
                "exported artifact (one set of weights)"
            )
        from fcn_jax.export.predictor import ArtifactPredictor

        return ArtifactPredictor.from_file(weights)
    return Predictor.from_dir(weights, step)


def predict_files(
    weights_dir: str | Path,
    input_path: str | Path,
    out_dir: str | Path,
    save_logits: bool = False,
    progress: bool = True,
    step: int | None = None,
    overlay: str = "side",
    alpha: float = 0.5,
) -> PredictResult:
    """Predict an image or every image of a folder; outputs are named by each input's stem.

    Writes to ``out_dir``, for each input ``<stem>``:

    - ``<stem>.png``: class indices as a palette PNG in the dataset's colours (VOC's for VOC),
      the image's height and width as displayed (EXIF orientation applied, see
      :func:`~fcn_jax.data.io.read_image`);
    - ``<stem>_overlay.png``: :func:`~fcn_jax.visualize.overlay_picture`, the image beside its
      coloured mask (``side``) or blended with it (``blend``), with a legend of the classes
      present;
    - with ``save_logits``, ``<stem>.npy``: float32 logits [H, W, n_class].

    Everything is checked before the model is loaded: the inputs, the overlay settings and
    ``out_dir`` (:func:`~fcn_jax.outputs.output_dir`: a writable folder that is not the input
    folder or the weights, and where no output would overwrite an input). Images that cannot
    be read are skipped, reported as they are met (above the progress bar, when it is shown)
    and returned in :attr:`PredictResult.failed`; every other image is predicted.

    Args:
        weights_dir: a weights directory (or a training workdir), or an artifact file
            (``.onnx`` / ``.stablehlo``, :func:`load_predictor`).
        input_path: an image file or a folder of images (hidden files and subfolders skipped).
        out_dir: the output folder (``--out``), created if missing.
        save_logits: also write ``<stem>.npy``.
        progress: show a progress bar (for two inputs or more).
        step: checkpoint step (default: latest); a weights directory's only.
        overlay: ``side`` or ``blend``.
        alpha: the mask's weight in a ``blend`` overlay, 0..1.

    Returns:
        What was written, what failed and what the input held.

    Raises:
        FCNError: bad inputs, overlay settings, output folder or weights, found before any
            output is written.
    """
    check_overlay(overlay, alpha)
    found = find_images(input_path, save_logits)
    out = output_dir(
        out_dir,
        "--out",
        inputs={"input": input_path, "weights": weights_dir},
        files=[name for p in found.images for name in output_names(p.stem, save_logits)],
    )
    predictor = load_predictor(weights_dir, step)
    if save_logits and not predictor.has_logits:
        raise FCNError(f"--save-logits: {weights_dir} has no logits output (exported labels only)")
    palette = predictor.palette_array()
    written, failed = [], []
    show = progress and len(found.images) > 1
    for path in tqdm(found.images, unit="img", desc="predict", disable=not show):
        try:
            image = read_image(path)
        except FCNError as e:
            failed.append((path, str(e)))
            if show:
                # tqdm.write puts the line above the bar; print() would glue it to the bar's end.
                tqdm.write(f"skipped: {e}", file=sys.stderr)
            continue
        logits, labels = predictor(image)
        labels = np.asarray(labels)
        stem = path.stem
        written.append(save_index_png(labels, out / f"{stem}.png", palette))
        picture = overlay_picture(image, labels, palette, predictor.class_names, overlay, alpha)
        Image.fromarray(picture).save(out / f"{stem}_overlay.png")
        if save_logits:
            np.save(out / f"{stem}.npy", np.asarray(logits, np.float32))
    return PredictResult(written, failed, found)
