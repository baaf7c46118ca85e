import numpy as np
import pytest

from fcn_jax.errors import FCNError
from fcn_jax.preprocessing import CAFFE_VOC, TORCHVISION, Preprocessing


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
