"""torchvision's FCN-ResNet50 (``fcn_resnet50``, aux head on), its reference recipe, on VOC + SBD.

torchvision's ``references/segmentation/train.py --model fcn_resnet50 --aux-loss`` (see
:func:`fcn_jax.configs.fcn_resnet`): SGD 0.9, weight decay 1e-4, rate 0.02 for a global batch
of 32 with the poly schedule (0.9, per iteration), 30 epochs, aux loss 0.5 at 10x the rate,
random resize 0.5-2.0 x 520, crop 480, flip, BatchNorm over the global batch, the trunk from
torchvision's ImageNet ResNet-50 (``weights/resnet50.pth``, converted on the fly).

Differences from torchvision's run, on purpose or by necessity:

- its published weights were trained on COCO's 20 VOC classes (configs/coco_fcn_resnet50.py);
  this recipe trains on SBD train (8,498 images) and validates on seg11valid, the paper's VOC
  split;
- torch's DDP averages each GPU's mean loss; here the mean is over the valid pixels of the
  global batch (equal when every GPU's crops hold as many valid pixels);
- evaluation resizes the shorter side to 520 (``eval.resize``, as torchvision's
  ``SegmentationPresetEval``) and scores at that size.
"""

from fcn_jax import configs as common


def get_config(arg: str | None = None):
    """The experiment's config; ``arg="smoke"`` for a seconds-long CPU run."""
    c = common.finish(common.fcn_resnet(common.base(), 50), arg)
    return common.fcn_resnet_smoke(c) if arg == "smoke" else c
