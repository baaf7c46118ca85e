"""SpeedPaper's FCN on your own index-mask folders, as its second version trains it.

SpeedPaper's second version (``config.py``, ``train.py``, ``tools/my_dataset.py``) reads
``images/<split>/<stem>.jpg`` with index masks ``masks/<split>/<stem>.png`` (pixel value =
class, 5 classes: a defect dataset's background and four defect kinds), greyscale images read as
RGB and normalised with the training set's grey-level mean and std (0.16328026, 0.2432042 in
every channel): the ``speedpaper-grey`` preprocessing, which also turns a colour image grey
before the network sees it. It trains ``model.arch="speedpaper"`` (VGG16-BN, feature-map fusion,
learnable transposed convolutions) from scratch with Adam (lr 0.01, no weight decay), torch's
``MultiStepLR`` (x0.1 at epochs 50 and 80), batch 8, 100 epochs, per-pixel mean cross-entropy.

Layout and class names as ``folder_fcn8s.py`` describes; a ``classes.txt`` must name 5 classes
(or pass ``--config.model.n_class=N`` for another count). Whole images, batched by padding to
multiples of 32 (void labels in the padding, which the loss ignores). Compare with
``folder_fcn8s.py`` (the paper's FCN-8s on the same data).
"""

from fcn_jax import configs as common


def get_config(arg: str | None = None):
    """The experiment's config; ``arg="smoke"`` for a seconds-long CPU run."""
    c = common.base()
    c.data.name = "folder"
    c.data.split = "train"
    c.data.eval_split = "val"
    c.data.preprocessing = "speedpaper-grey"  # grey levels replicated, grey-level mean / std
    c.data.max_size = 640  # largest image side; batches pad to multiples of 32 up to it
    c.model.arch = "speedpaper"
    c.model.backbone = "vgg16_bn"
    c.model.learn_upsampling = True
    c.model.n_class = 5  # its masks have no class file: the count is the recipe's
    # From scratch, as the original (models.vgg16_bn(weights=None)). ImageNet weights expect
    # torchvision's preprocessing, which would then replace the grey-level statistics.
    c.init.from_ = None
    c.batch_size = 8
    c.num_epochs = 100
    c.learning_rate = 0.01
    c.optim.name = "adam"
    c.optim.loss = "mean"  # nn.CrossEntropyLoss: the mean over pixels
    c.optim.weight_decay = 0.0
    c.optim.bias_lr_mult = 1.0  # torch's Adam: one rate for every parameter
    c.optim.lr_milestone_epochs = (50, 80)  # MultiStepLR(milestones=[50, 80], gamma=0.1)
    c.optim.lr_gamma = 0.1
    c.eval_every = 500
    c.checkpoint_every = 500
    c.eval.bucket = True  # pad validation images to multiples of 32 (the network's stride)
    c.eval.batch_size = 8
    return common.finish(c, arg)
