"""SpeedPaper's FCN on CamVid, as its first version trains it (``cfg.py``, ``train.py``).

SpeedPaper (``hanknewbird/SpeedPaper``, ``Segmentation/FCN``) sums VGG16-BN feature maps (not the
paper's class scores) through learnable transposed convolutions: ``model.arch="speedpaper"``.
Its first version reads CamVid with colour labels through ``class_dict.csv`` and numbers every
csv row, void included (12 classes for the 11-class csv): ``data.void_as_class``. It centre-crops
images and labels to 352x480, normalises RGB in [0, 1] with ImageNet's mean and std, and trains
with Adam (lr 1e-4, no weight decay, one rate for every parameter), batch 2, the rate halved at
the start of every 50th epoch, on a per-pixel mean cross-entropy.

Differences from the original, all on purpose:

- it starts ``vgg16_bn`` from scratch (``models.vgg16_bn(pretrained=False)``); this recipe
  starts from ImageNet's torchvision ``vgg16_bn``. ``--config.init.from_=None`` trains from
  scratch as it does;
- it validates on the centre crops too; ``eval.py`` and validation here score whole images
  (padded to multiples of 32, the network's stride, with the mean pixel);
- its loop runs ``cfg.EPOCH_NUMBER`` epochs and keeps a snapshot only after epoch 160 (its
  released ``169.pth``); this recipe runs 200 epochs (``num_epochs``).

Compare with ``camvid_fcn8s.py`` / ``camvid_fcn8s_adam.py`` (the paper's FCN-8s on the same data).
"""

from fcn_jax import configs as common


def get_config(arg: str | None = None):
    """The experiment's config; ``arg="smoke"`` for a seconds-long CPU run."""
    c = common.camvid(common.base())
    c.model.arch = "speedpaper"
    c.model.backbone = "vgg16_bn"  # BatchNorm after every 3x3 convolution
    c.model.learn_upsampling = True  # its three transposed convolutions start bilinear and learn
    c.data.void_as_class = True  # every class_dict.csv row is a class, void too
    c.data.centre_crop = (352, 480)  # CamVid's 360x480 cut to multiples of 32
    c.data.preprocessing = "torchvision"  # RGB [0, 1], ImageNet mean / std
    c.init.from_ = "weights/vgg16_bn.pth"  # torchvision's ImageNet vgg16_bn (or None: scratch)
    c.batch_size = 2
    c.num_epochs = 200
    c.learning_rate = 1e-4
    c.optim.name = "adam"
    c.optim.loss = "mean"  # nn.NLLLoss of log_softmax: the mean over pixels
    c.optim.weight_decay = 0.0
    c.optim.bias_lr_mult = 1.0  # torch's Adam: one rate for every parameter
    c.optim.lr_halve_every_epochs = 50  # `if epoch % 50 == 0 and epoch != 0: lr *= 0.5`
    c.eval_every = 1_000
    c.checkpoint_every = 1_000
    c.eval.bucket = True  # pad validation images to multiples of 32 (the network's stride)
    return common.finish(c, arg)
