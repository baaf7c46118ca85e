"""``eval.py --against-torch`` on the BatchNorm networks: the PyTorch reference (TorchFCN with
BatchNorm, TorchSpeedPaperFCN, torchvision's own FCN-ResNet50) gets the same variables, running
statistics included, and scores the same images; SpeedPaper's on sizes that are not multiples of
32 (both sides pad them); the FCN-ResNet's ``out`` only (its ``aux`` is a training loss).
"""

import dataclasses

import pytest

from fcn_jax.convert import convert_torch_file
from fcn_jax.data.synthetic import SyntheticSegmentation
from fcn_jax.eval.evaluate import evaluate
from tests.utils import NARROW

pytestmark = pytest.mark.torch

N_CLASS = 4


def vgg16_bn_fcn8s():
    from fcn_jax.torch_reference import random_state_dict

    return "fcn8s", random_state_dict("fcn8s", N_CLASS, NARROW, seed=4, batch_norm=True)


def speedpaper():
    from fcn_jax.torch_reference import random_speedpaper_state_dict

    return "speedpaper", random_speedpaper_state_dict(N_CLASS, NARROW, seed=4)


def fcn_resnet50():
    from fcn_jax.torch_reference import random_fcn_resnet_state_dict

    return "fcn_resnet50", random_fcn_resnet_state_dict("fcn_resnet50", N_CLASS, True, NARROW, 4)


@pytest.mark.parametrize(
    "build",
    [vgg16_bn_fcn8s, speedpaper, fcn_resnet50],
    ids=["vgg16_bn-fcn8s", "speedpaper", "fcn_resnet50"],
)
def test_against_torch_scores_the_same(build, tmp_path):
    import torch

    arch, state = build()
    torch.save(state, tmp_path / "net.pth")
    variables, meta, _ = convert_torch_file(tmp_path / "net.pth", arch, N_CLASS)
    assert "batch_stats" in variables
    if meta.eval_resize is not None:  # torchvision's 520: the same path at a cheaper size
        meta = dataclasses.replace(meta, eval_resize=36)
    dataset = SyntheticSegmentation("val", N_CLASS, num_images=3, min_size=40, max_size=50)
    result = evaluate(variables, meta, dataset, against_torch=True, progress=False)
    assert result.torch is not None and result.torch_agrees, result.format()
    assert result.torch_miou_diff <= 1e-3
    assert result.pixel_agreement > 0.999
