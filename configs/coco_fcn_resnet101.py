"""torchvision's FCN-ResNet101 (``fcn_resnet101``, aux head on) as torchvision trained its weights.

torchvision's published ``fcn_resnet101`` weights (``COCO_WITH_VOC_LABELS_V1``,
``fcn_resnet101_coco-*.pth``) come from ``references/segmentation/train.py --dataset coco
--model fcn_resnet101 --aux-loss``: its recipe (:func:`fcn_jax.configs.fcn_resnet`, as
configs/voc_fcn_resnet101.py) on COCO train2017 turned into VOC's 21 classes, scored on COCO
val2017 the same way (:mod:`fcn_jax.data.coco`; the coco_voc dataset), shorter side resized to
520. Its model card: mean IU 63.7, pixel accuracy 91.9 (``reproduce.py --table torchvision``).

Differences from torchvision's run: torch's DDP averages each GPU's mean loss, here the mean is
over the valid pixels of the global batch (equal when every GPU's crops hold as many valid
pixels). 30 epochs are counted over the training split as this loader builds it (the images
with VOC instances covering more than 1000 pixels, as torchvision's).
"""

from fcn_jax import configs as common


def get_config(arg: str | None = None):
    """The experiment's config; ``arg="smoke"`` for a seconds-long CPU run."""
    c = common.finish(common.coco_voc(common.fcn_resnet(common.base(), 101)), arg)
    return common.fcn_resnet_smoke(c) if arg == "smoke" else c
