"""Prediction from a weights directory: images or folders in; class maps, overlays, logits out."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
from tqdm import tqdm

from fcn_jax.checkpoint import WeightsMetadata, load_weights
from fcn_jax.data.io import read_image
from fcn_jax.errors import FCNError
from fcn_jax.resources import voc_palette
from fcn_jax.types import Array, PyTree
from fcn_jax.visualize import overlay_picture


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


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".tif", ".tiff", ".webp")


def list_images(path: str | Path) -> list[Path]:
    """An image file, or the image files of a folder (sorted by name).

    Raises:
        FCNError: missing path, a folder without images, or two images with the same stem (their
            outputs would overwrite each other).
    """
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FCNError(f"input {path} does not exist")
    images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise FCNError(f"folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    stems: dict[str, Path] = {}
    for p in images:
        if p.stem in stems:
            raise FCNError(
                f"{stems[p.stem].name} and {p.name} in {path} share the stem {p.stem!r}: outputs "
                "are named by stem, so rename one"
            )
        stems[p.stem] = p
    return images


class Predictor:
    """A model loaded from a weights directory, with its preprocessing, ready to predict.

    The jitted function takes uint8 images and preprocesses on the device (a quarter of the
    float32 transfer); it compiles once per image shape. A multi-head network (SIFT Flow)
    predicts its first head (the semantic classes).
    """

    def __init__(self, params: PyTree, metadata: WeightsMetadata) -> None:
        if metadata.inputs != ("image",):
            raise FCNError(
                f"these weights read {metadata.inputs}, not RGB images alone: score them on their "
                "dataset with eval.py"
            )
        self.params = params
        self.metadata = metadata
        model = metadata.model()
        preprocessing = metadata.preprocessing
        first_head = metadata.heads[0] if metadata.heads else None

        @jax.jit
        def run(params: PyTree, images: Array) -> tuple[Array, Array]:
            logits = model.apply({"params": params}, preprocessing.apply(images))
            if first_head is not None:
                logits = logits[first_head]
            return logits, jnp.argmax(logits, axis=-1).astype(jnp.uint8)

        self._run = run

    @classmethod
    def from_dir(cls, weights_dir: str | Path, step: int | None = None) -> Predictor:
        """Load params and metadata from a weights directory (latest step by default)."""
        return cls(*load_weights(weights_dir, step))

    def __call__(self, image: np.ndarray) -> tuple[Array, Array]:
        """Logits [H, W, n_class] float32 and class map [H, W] uint8 for one [H, W, 3] uint8 image.

        Returned as device arrays: only what the caller reads is transferred.
        """
        logits, labels = self._run(self.params, jnp.asarray(image)[None])
        return logits[0], labels[0]


def predict_files(
    weights_dir: str | Path,
    input_path: str | Path,
    out_dir: str | Path,
    save_logits: bool = False,
    progress: bool = True,
    step: int | None = None,
) -> list[Path]:
    """Predict an image or every image of a folder; outputs are named by each input's stem.

    Writes to ``out_dir``, for each input ``<stem>``:

    - ``<stem>.png``: class indices as a palette PNG in the dataset's colours (VOC's for VOC);
    - ``<stem>_overlay.png``: the image beside its coloured mask, with a legend of the classes
      present;
    - with ``save_logits``, ``<stem>.npy``: float32 logits [H, W, n_class].

    Returns:
        The written class-map paths, in input order.
    """
    inputs = list_images(input_path)
    predictor = Predictor.from_dir(weights_dir, step)
    palette = predictor.metadata.palette_array()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in tqdm(inputs, unit="img", desc="predict", disable=not progress or len(inputs) < 2):
        image = read_image(path)
        logits, labels = predictor(image)
        labels = np.asarray(labels)
        stem = path.stem
        written.append(save_index_png(labels, out / f"{stem}.png", palette))
        picture = overlay_picture(image, labels, palette, predictor.metadata.class_names)
        Image.fromarray(picture).save(out / f"{stem}_overlay.png")
        if save_logits:
            np.save(out / f"{stem}.npy", np.asarray(logits, np.float32))
    return written
