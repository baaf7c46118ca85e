"""FCN-8s-atonce on PASCAL VOC, the release's "heavy" recipe (SBD train, seg11valid)."""

from fcn_jax import configs as common


def get_config(arg: str | None = None):
    """The experiment's config; ``arg="smoke"`` for a seconds-long CPU run."""
    c = common.base()
    c.model.arch = "fcn8s-atonce"
    c.learning_rate = 1e-10
    c.num_steps = 300_000
    c.init.from_ = "weights/vgg16.pth"  # trained at once from VGG16, no stages
    return common.finish(c, arg)
