"""The evaluation resize of torchvision's weights: torchvision's sizes and pixels, the wrapper."""

import dataclasses

import numpy as np
import pytest

from fcn_jax.checkpoint import WeightsMetadata
from fcn_jax.data.resize import (
    ResizedDataset,
    resize_image,
    resize_label,
    resize_shorter,
    resized_size,
)
from fcn_jax.data.synthetic import SyntheticSegmentation
from fcn_jax.errors import FCNError
from fcn_jax.models import NetSpec
from fcn_jax.resources import default_class_names

SIZES = [(375, 500), (500, 375), (333, 333), (40, 52), (1, 7), (521, 520), (97, 131)]


def test_resized_size_keeps_the_aspect_truncating_the_longer_side():
    assert resized_size(375, 500, 520) == (520, 693)  # 520 * 500 / 375 = 693.3
    assert resized_size(500, 375, 520) == (693, 520)
    assert resized_size(333, 333, 520) == (520, 520)
    assert resized_size(1, 7, 4) == (4, 28)


@pytest.mark.torch
@pytest.mark.parametrize("size", SIZES)
def test_sizes_and_pixels_are_torchvisions(size):
    # torchvision's reference evaluation: F.resize(pil_image, 520) and
    # F.resize(pil_target, 520, interpolation=NEAREST).
    from PIL import Image

    from fcn_jax.torch_reference import import_torchvision

    import_torchvision()
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as F

    rng = np.random.default_rng(sum(size))
    image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    label = rng.integers(0, 21, size, dtype=np.uint8)
    label[: size[0] // 3] = 255
    shorter = 520 if min(size) > 8 else 5
    theirs_image = np.asarray(F.resize(Image.fromarray(image), shorter))
    theirs_label = np.asarray(
        F.resize(Image.fromarray(label), shorter, interpolation=InterpolationMode.NEAREST)
    )
    out = resize_shorter(
        {"image": image, "label": label, "id": "x"}, shorter, ("image",), ("label",)
    )
    assert out["image"].shape[:2] == resized_size(*size, shorter) == theirs_image.shape[:2]
    np.testing.assert_array_equal(out["image"], theirs_image)
    np.testing.assert_array_equal(out["label"], theirs_label)
    assert out["id"] == "x"


def test_same_size_is_untouched():
    image = np.zeros((4, 6, 3), np.uint8)
    assert resize_image(image, 4, 6) is image
    label = np.zeros((4, 6), np.uint8)
    assert resize_label(label, 4, 6) is label


def test_resized_dataset_wraps_a_split():
    data = SyntheticSegmentation("val", 4, num_images=2, min_size=30, max_size=40)
    resized = ResizedDataset(data, 24)
    assert len(resized) == 2 and resized.ids == data.ids
    assert resized.label_classes == data.label_classes and resized.name == data.name
    np.testing.assert_array_equal(resized.palette, data.palette)
    assert "resized to shorter side 24" in repr(resized)
    for i in range(2):
        original, record = data[i], resized[i]
        h, w = resized_size(*original["image"].shape[:2], 24)
        assert record["image"].shape == (h, w, 3) and record["label"].shape == (h, w)
        assert set(np.unique(record["label"])) <= set(np.unique(original["label"]))


def test_metadata_stores_eval_resize_only_when_set():
    spec = NetSpec.single("fcn8s", 3, width=0.125)
    metadata = WeightsMetadata(spec, default_class_names(3))
    assert "eval_resize" not in metadata.to_json()
    sized = dataclasses.replace(metadata, eval_resize=520)
    assert sized.to_json()["eval_resize"] == 520
    assert WeightsMetadata.from_json(sized.to_json()) == sized
    for bad in (0, -3, 1.5, True, "520"):
        with pytest.raises(FCNError, match="eval_resize must be a positive integer"):
            dataclasses.replace(metadata, eval_resize=bad)
