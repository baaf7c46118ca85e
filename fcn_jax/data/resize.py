"""The evaluation resize some weights come with: shorter side to a fixed size, as torchvision's.

torchvision's segmentation weights (the FCN-ResNets) are evaluated on images whose shorter side
is resized to 520 (``references/segmentation``'s ``SegmentationPresetEval``:
``F.resize(image, 520)`` bilinear, ``F.resize(target, 520, NEAREST)``, on PIL images) and scored
at that resolution; their weights' ``transforms`` resize the same way for inference. The
weights' metadata stores the size (:attr:`~fcn_jax.checkpoint.WeightsMetadata.eval_resize`);
evaluation wraps the split in :class:`ResizedDataset` (the JAX network and ``--against-torch``'s
PyTorch one then see the same resized images and labels) and prediction resizes each image
before the network and its scores back after it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from fcn_jax.data.base import Record, SegmentationDataset


def resized_size(height: int, width: int, shorter: int) -> tuple[int, int]:
    """(H, W) with the shorter side ``shorter``, torchvision's rule (the longer side truncated).

    ``torchvision.transforms.functional._compute_resized_output_size`` with one size: the
    longer side is ``int(shorter * long / short)``; a square stays square.
    """
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(shorter * long / short)
    return (new_long, shorter) if width <= height else (shorter, new_long)


def resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """[H, W, 3] uint8 -> [height, width, 3] uint8, PIL's bilinear (torchvision's on PIL)."""
    if image.shape[:2] == (height, width):
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))


def resize_label(label: np.ndarray, height: int, width: int) -> np.ndarray:
    """[H, W] uint8 -> [height, width] uint8, nearest neighbour (PIL's, torchvision's)."""
    if label.shape == (height, width):
        return label
    return np.asarray(Image.fromarray(label).resize((width, height), Image.Resampling.NEAREST))


def resize_shorter(
    record: Record, shorter: int, image_keys: tuple[str, ...], label_keys: tuple[str, ...]
) -> Record:
    """``record`` with its images (bilinear) and labels (nearest) at shorter side ``shorter``.

    Other entries are kept as they are.
    """
    first = next(record[k] for k in image_keys if k in record)
    height, width = resized_size(*first.shape[:2], shorter)
    out = dict(record)
    for key in image_keys:
        if key in record:
            out[key] = resize_image(record[key], height, width)
    for key in label_keys:
        if key in record:
            out[key] = resize_label(record[key], height, width)
    return out


class ResizedDataset(SegmentationDataset):
    """A split whose records are resized to shorter side ``shorter`` (:func:`resize_shorter`).

    Everything else (ids, classes, palette, scoring options) is the wrapped dataset's.
    """

    def __init__(self, dataset: SegmentationDataset, shorter: int) -> None:
        super().__init__(dataset.split, dataset.ids, dataset.class_names)
        self.dataset = dataset
        self.shorter = int(shorter)
        self.name = dataset.name
        self.image_keys = dataset.image_keys

    def __getattr__(self, name: str) -> Any:  # scoring options etc. of the wrapped dataset
        if name == "dataset":  # not set yet (during unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)

    @property
    def label_classes(self) -> dict[str, tuple[str, ...]]:
        """The wrapped dataset's label keys and their classes."""
        return self.dataset.label_classes

    @property
    def palette(self) -> np.ndarray:
        """The wrapped dataset's colours."""
        return self.dataset.palette

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Record:
        record = self.dataset[index]  # read and checked by the wrapped dataset
        return resize_shorter(
            record, self.shorter, tuple(self.image_keys), tuple(self.label_classes)
        )

    def __repr__(self) -> str:
        return f"{self.dataset!r} resized to shorter side {self.shorter}"

    def files(self, sample_id: str) -> tuple[Any, ...]:
        """The wrapped dataset's files of a sample."""
        return self.dataset.files(sample_id)

    def load(self, sample_id: str) -> Record:
        """A sample read by the wrapped dataset, resized."""
        record = self.dataset.load(sample_id)
        return resize_shorter(
            record, self.shorter, tuple(self.image_keys), tuple(self.label_classes)
        )
