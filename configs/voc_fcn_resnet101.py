"""torchvision's FCN-ResNet101 (``fcn_resnet101``, aux head on), its reference recipe, on VOC + SBD.

The recipe and its differences from torchvision's run are configs/voc_fcn_resnet50.py's (see
there and :func:`fcn_jax.configs.fcn_resnet`), on the ResNet-101 trunk, from torchvision's
ImageNet ResNet-101 (``weights/resnet101.pth``).
"""

from fcn_jax import configs as common


def get_config(arg: str | None = None):
    """The experiment's config; ``arg="smoke"`` for a seconds-long CPU run."""
    c = common.finish(common.fcn_resnet(common.base(), 101), arg)
    return common.fcn_resnet_smoke(c) if arg == "smoke" else c
