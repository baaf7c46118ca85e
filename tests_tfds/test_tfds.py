"""The TFDS adapter on TFDS's own mock data (``make test-tfds``; needs the ``tfds`` extra).

Kept out of tests/ so the main suite never needs tensorflow.
"""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from fcn_jax.configs import base
from fcn_jax.data import make_dataset
from fcn_jax.data.pipeline import PipelineOptions, make_pipeline
from fcn_jax.data.tfds import PRESETS, TFDSSegmentation
from fcn_jax.errors import FCNError


def pet_examples(n=3):
    """Oxford-IIIT Pet examples as TFDS decodes them: image, trimap mask [H, W, 1] in {1, 2, 3}."""
    rng = np.random.default_rng(0)
    examples = []
    for i in range(n):
        h, w = 20 + 3 * i, 30 - 2 * i
        examples.append(
            {
                "image": rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
                "segmentation_mask": rng.integers(1, 4, (h, w, 1), dtype=np.uint8),
                "file_name": f"pet_{i}.jpg".encode(),
                "label": i,
                "species": 0,
                "head_bbox": np.zeros(4, np.float32),
            }
        )
    return examples


def test_oxford_pet_masks_map_to_classes():
    examples = pet_examples()
    with tfds.testing.mock_data(as_data_source_fn=lambda *a, **k: examples):
        ds = TFDSSegmentation("oxford_iiit_pet", "train")
        assert len(ds) == 3 and ds.class_names == ("background", "pet")
        for i, example in enumerate(examples):
            record = ds[i]
            mask = example["segmentation_mask"][..., 0]
            expected = np.select([mask == 1, mask == 2], [1, 0], 255).astype(np.uint8)
            np.testing.assert_array_equal(record["label"], expected)
            np.testing.assert_array_equal(record["image"], example["image"])
            assert record["id"] == f"pet_{i}.jpg"
        batches = list(make_pipeline(ds, PipelineOptions(batch_size=2, buckets=(32,))))
        assert [b["image"].shape for b in batches] == [(2, 32, 32, 3), (1, 32, 32, 3)]


def test_through_the_config_table():
    c = base()
    c.data.name = "tfds"
    c.data.tfds_name = "oxford_iiit_pet"
    c.model.n_class = 2
    with tfds.testing.mock_data(as_data_source_fn=lambda *a, **k: pet_examples(2)):
        ds = make_dataset(c, "test")
    assert len(ds) == 2 and ds.n_class == 2


def test_tfds_random_mock_is_caught_cleanly():
    # TFDS's own random mock draws image and mask sizes independently: a clear error, no crash.
    with tfds.testing.mock_data(num_examples=2, policy=tfds.testing.MockPolicy.USE_CODE):
        ds = TFDSSegmentation("oxford_iiit_pet", "train")
        with pytest.raises(FCNError, match=r"label is .* but its image is|outside"):
            ds[0]


def test_unknown_dataset_without_mask_key():
    with pytest.raises(FCNError, match=r"no preset for TFDS dataset .coco.*tfds_mask_key"):
        TFDSSegmentation("coco", "train")
    assert "cityscapes" in PRESETS and len(PRESETS["cityscapes"].class_names) == 19
