"""FCN-32s on PASCAL VOC, the release's "heavy" recipe (SBD train, seg11valid)."""

from fcn_jax import configs as common


def get_config(arg: str | None = None):
    """The experiment's config; ``arg="smoke"`` for a seconds-long CPU run."""
    c = common.base()
    c.model.arch = "fcn32s"
    c.learning_rate = 1e-10
    c.num_steps = 100_000
    c.init.from_ = "weights/vgg16.pth"  # torchvision VGG16 state dict (or a converted dir)
    return common.finish(c, arg)
