"""Full-width parity: the paper's network, converted, against PyTorch (the one full-width module).

Random weights in every layer (a fresh FCN's zero score layers make all logits equal and prove
nothing). Each variant: our PyTorch FCN is first checked against torchfcn's own model classes,
then the Flax model converted through the real file path is checked against it.
"""

import importlib.util
import sys
import types

import numpy as np
import pytest
import torch

from fcn_jax.convert import convert_torch_file
from fcn_jax.convert.check import PARITY_TOLERANCE, check_parity
from fcn_jax.convert.torchfcn import flax_to_torchfcn
from fcn_jax.data.io import read_image
from fcn_jax.models import VARIANTS, get_variant
from fcn_jax.resources import VOC_SAMPLE_IMAGE
from fcn_jax.torch_reference import TorchFCN, random_state_dict, random_vgg16_state_dict
from tests.utils import random_image

pytestmark = [pytest.mark.full_width, pytest.mark.torch]

ALL = sorted(VARIANTS)
SIZES = [(64, 64), (45, 61)]  # <= 64 px (pad 100 makes them ~22 GMAC); one odd, non-square


@pytest.fixture(scope="module")
def torchfcn_models():
    """torchfcn's model classes, imported without its package __init__.

    torchfcn imports `fcn` and `torchvision` only to download weights; its __init__ also pulls in
    its trainer (skimage, pytz). Empty stand-ins for the two, and a bare package object, let the
    model modules import unchanged.
    """
    spec = importlib.util.find_spec("torchfcn")
    assert spec is not None and spec.submodule_search_locations, "pip install torchfcn==1.9.7"
    saved = {k: sys.modules.get(k) for k in ("fcn", "torchvision", "torchfcn")}
    package = types.ModuleType("torchfcn")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules.update(
        fcn=types.ModuleType("fcn"), torchvision=types.ModuleType("torchvision"), torchfcn=package
    )
    try:
        models = importlib.import_module("torchfcn.models")
        yield {name: getattr(models, VARIANTS[name].torch_name) for name in ALL}
    finally:
        for k in [k for k in sys.modules if k.startswith("torchfcn")]:
            del sys.modules[k]
        for k, v in saved.items():
            if v is not None:
                sys.modules[k] = v
            else:
                sys.modules.pop(k, None)


@pytest.fixture(scope="module", params=ALL)
def converted(request, tmp_path_factory):
    """(variant, torch state dict, converted variables, metadata, source) at full width."""
    variant = request.param
    state = random_state_dict(variant, 21, 1.0, seed=ALL.index(variant))
    path = tmp_path_factory.mktemp(variant) / f"{variant}.pth"
    torch.save({"model_state_dict": state, "arch": get_variant(variant).torch_name}, path)
    variables, meta, source = convert_torch_file(path, variant)
    return variant, state, variables, meta, source


def test_torch_reference_matches_torchfcn(converted, torchfcn_models, rng):
    variant, state, *_ = converted
    theirs = torchfcn_models[variant](n_class=21).eval()
    theirs.load_state_dict(state, strict=True)
    ours = TorchFCN(variant, 21, 1.0).eval()
    ours.load_state_dict(state, strict=True)
    for h, w in SIZES:
        x = torch.from_numpy(rng.standard_normal((1, 3, h, w)).astype(np.float32) * 50)
        with torch.no_grad():
            a, b = theirs(x), ours(x)
        assert a.shape == (1, 21, h, w)
        assert torch.equal(a, b), float((a - b).abs().max())


@pytest.mark.parametrize(("height", "width"), SIZES)
def test_flax_matches_torch_full_width(converted, height, width, rng):
    variant, _, variables, meta, source = converted
    report = check_parity(source, variables, meta, random_image(rng, height, width))
    print(f"\n{variant} {height}x{width}\n{report.format()}")
    assert report.final.rel <= PARITY_TOLERANCE, report.format()
    assert report.confident_agreement == 100.0, report.format()
    assert report.passed


def test_voc_sample_through_full_width_fcn8s(tmp_path):
    state = random_state_dict("fcn8s", 21, 1.0, seed=7)
    torch.save(state, tmp_path / "fcn8s.pth")
    variables, meta, source = convert_torch_file(tmp_path / "fcn8s.pth", "fcn8s")
    image = read_image(VOC_SAMPLE_IMAGE)
    report = check_parity(source, variables, meta, image)
    print(f"\nVOC sample {image.shape}\n{report.format()}")
    assert report.final.shape == (1, *image.shape[:2], 21)
    assert report.passed, report.format()


def test_vgg16_trunk_full_width(tmp_path, rng):
    torch.save(random_vgg16_state_dict(1.0, seed=11), tmp_path / "vgg16.pth")
    variables, meta, source = convert_torch_file(tmp_path / "vgg16.pth", "fcn32s")
    assert meta.width == 1.0 and meta.preprocessing.name == "torchvision"
    report = check_parity(source, variables, meta, random_image(rng, 48, 37))
    print(f"\nVGG16 trunk\n{report.format()}")
    assert report.compared == "fc7" and report.final.shape == (1, 2, 2, 4096)
    assert report.passed, report.format()


def test_bilinear_init_matches_torchfcn(torchfcn_models):
    from torchfcn.models.fcn32s import get_upsampling_weight

    from fcn_jax.convert.layout import deconv_to_torch
    from fcn_jax.models.layers import bilinear_init

    for k in (4, 16, 32, 64):
        ours = deconv_to_torch(np.asarray(bilinear_init(None, (k, k, 3, 3))))
        np.testing.assert_array_equal(ours, get_upsampling_weight(3, 3, k).numpy())


def test_export_loads_strictly_into_torchfcn(converted, torchfcn_models):
    # The state dict --to-torch writes (its file path is tested at narrow width) fits torchfcn.
    variant, state, variables, *_ = converted
    exported = {k: torch.from_numpy(v) for k, v in flax_to_torchfcn(variables["params"]).items()}
    model = torchfcn_models[variant](n_class=21)
    model.load_state_dict(exported, strict=True)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


@pytest.mark.parametrize(
    ("kind", "structure", "n_class"),
    [
        ("two-stream RGB-HHA", {"streams": ("color", "hha")}, 40),
        ("two-head SIFT Flow", {"heads": (("sem", 33), ("geo", 3))}, 33),
    ],
)
def test_two_stream_and_two_head_full_width(tmp_path, rng, kind, structure, n_class):
    state = random_state_dict("fcn16s", n_class, 1.0, seed=5, **structure)
    torch.save(state, tmp_path / "net.pth")
    variables, meta, source = convert_torch_file(tmp_path / "net.pth", "fcn16s")
    assert (meta.streams, meta.spec.heads) == (
        structure.get("streams", ()),
        structure.get("heads", (("out", n_class),)),
    )
    report = check_parity(source, variables, meta, random_image(rng, 56, 41))
    print(f"\n{kind} FCN-16s 56x41\n{report.format()}")
    assert report.final.rel <= PARITY_TOLERANCE and report.passed, report.format()
