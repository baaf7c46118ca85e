import dataclasses
import json

import jax
import numpy as np
import pytest
from PIL import Image

from fcn_jax.checkpoint import WeightsMetadata
from fcn_jax.data.io import read_image
from fcn_jax.errors import FCNError
from fcn_jax.preprocessing import (
    CAFFE_VOC,
    PRESETS,
    SPEEDPAPER_GREY,
    TORCHVISION,
    Preprocessing,
    luma,
)
from tests.utils import metadata_for


def test_caffe_is_bgr_0_255_minus_mean():
    pixel = np.array([[[10, 20, 30]]], np.uint8)  # R, G, B
    out = np.asarray(CAFFE_VOC.apply(pixel))[0, 0]
    np.testing.assert_allclose(out, [30 - 104.00699, 20 - 116.66877, 10 - 122.67892], rtol=1e-6)


def test_torchvision_is_rgb_unit_range_imagenet_stats():
    pixel = np.array([[[255, 0, 51]]], np.uint8)
    out = np.asarray(TORCHVISION.apply(pixel))[0, 0]
    expected = (np.array([1.0, 0.0, 0.2]) - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    np.testing.assert_allclose(out, expected, rtol=1e-5)


def test_dict_round_trip_and_validation():
    assert Preprocessing.from_dict(CAFFE_VOC.to_dict()) == CAFFE_VOC
    assert Preprocessing.from_dict(TORCHVISION.to_dict()) == TORCHVISION
    with pytest.raises(FCNError, match=r"lacks \['std'\]"):
        Preprocessing.from_dict({k: v for k, v in CAFFE_VOC.to_dict().items() if k != "std"})
    with pytest.raises(FCNError, match="RGB or BGR"):
        Preprocessing("x", "GBR", 255, (0, 0, 0))
    with pytest.raises(FCNError, match="scale must be 1 or 255"):
        Preprocessing("x", "RGB", 100, (0, 0, 0))


# --- grey input (SpeedPaper's second version) ---------------------------------------------------


def test_speedpaper_grey_preset():
    assert PRESETS["speedpaper-grey"] is SPEEDPAPER_GREY
    assert SPEEDPAPER_GREY.grey and (SPEEDPAPER_GREY.channel_order, SPEEDPAPER_GREY.scale) == (
        "RGB",
        1,
    )
    assert SPEEDPAPER_GREY.mean == (0.16328026,) * 3 and SPEEDPAPER_GREY.std == (0.2432042,) * 3
    assert SPEEDPAPER_GREY.mean_pixel() == (42, 42, 42)  # 0.16328026 * 255 = 41.6
    assert not any(p.grey for name, p in PRESETS.items() if name != "speedpaper-grey")


def test_grey_png_is_exactly_its_levels_in_three_channels(tmp_path):
    # A grey PNG, read as every loader reads images (three equal channels), normalises to its
    # own levels in each channel: (v / 255 - mean) / std, as torchvision's ToTensor+Normalize.
    levels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    Image.fromarray(levels, "L").save(tmp_path / "g.png")
    image = read_image(tmp_path / "g.png")
    assert np.array_equal(image, np.repeat(levels[..., None], 3, -1))
    out = np.asarray(SPEEDPAPER_GREY.apply(image[None]))[0]
    assert out.shape == (16, 16, 3)
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 0], out[..., 2])
    expected = (levels.astype(np.float32) / 255 - np.float32(0.16328026)) / np.float32(0.2432042)
    np.testing.assert_allclose(out[..., 0], expected, rtol=1e-6, atol=1e-6)
    # Grey or not, the same numbers give the same input for a grey image: bit for bit.
    colour_path = dataclasses.replace(SPEEDPAPER_GREY, grey=False)
    assert np.array_equal(out, np.asarray(colour_path.apply(image[None]))[0])
    assert np.array_equal(np.asarray(luma(image)), levels.astype(np.float32))


def test_luma_is_pils_convert_L_bit_for_bit():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    image[0, :8] = [[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255],
                    [1, 2, 3], [254, 255, 253], [128, 127, 129]]  # fmt: skip
    pil = np.asarray(Image.fromarray(image).convert("L"))
    assert np.array_equal(np.asarray(luma(image)), pil.astype(np.float32))
    # apply = the PIL grey picture, replicated, then normalised.
    out = np.asarray(SPEEDPAPER_GREY.apply(image))
    replicated = np.repeat(pil[..., None], 3, -1)
    plain = dataclasses.replace(SPEEDPAPER_GREY, grey=False)
    assert np.array_equal(out, np.asarray(plain.apply(replicated)))
    # Jitted (as the train and eval steps run it) the grey levels are the same bits (XLA may
    # fuse the normalisation's division differently: the last bit of the result may move).
    assert np.array_equal(np.asarray(jax.jit(luma)(image)), pil.astype(np.float32))
    np.testing.assert_allclose(np.asarray(jax.jit(SPEEDPAPER_GREY.apply)(image)), out, atol=1e-6)


def test_grey_metadata_round_trip_and_old_json():
    d = SPEEDPAPER_GREY.to_dict()
    assert d["grey"] is True and Preprocessing.from_dict(d) == SPEEDPAPER_GREY
    assert Preprocessing.from_dict(json.loads(json.dumps(d))) == SPEEDPAPER_GREY
    # Not grey: the dict (hence the metadata JSON) every earlier version wrote, key for key.
    assert json.dumps(TORCHVISION.to_dict()) == (
        '{"name": "torchvision", "channel_order": "RGB", "scale": 1, '
        '"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}'
    )
    old = {"name": "x", "channel_order": "RGB", "scale": 1, "mean": [0.5] * 3, "std": [0.2] * 3}
    assert Preprocessing.from_dict(old).grey is False
    assert dataclasses.replace(SPEEDPAPER_GREY, grey=False) != SPEEDPAPER_GREY  # reconcile sees it
    with pytest.raises(FCNError, match="grey must be true or false, not 'false'"):
        Preprocessing.from_dict({**d, "grey": "false"})


def test_grey_metadata_through_a_weights_directory(tmp_path):
    meta = metadata_for("fcn32s", 3, 0.0625, SPEEDPAPER_GREY)
    assert WeightsMetadata.from_json(meta.to_json()).preprocessing == SPEEDPAPER_GREY
    caffe = metadata_for("fcn32s", 3, 0.0625)
    assert "grey" not in json.dumps(caffe.to_json())
    assert WeightsMetadata.from_json(caffe.to_json()).preprocessing.grey is False
