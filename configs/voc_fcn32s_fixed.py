"""FCN-32s-fixed (Table 2, first row): only the score layer learns, everything else frozen."""

from fcn_jax import configs as common


def get_config(arg: str | None = None):
    """The experiment's config; ``arg="smoke"`` for a seconds-long CPU run."""
    c = common.base()
    c.model.arch = "fcn32s"
    c.learning_rate = 1e-10
    c.init.from_ = "weights/vgg16.pth"
    c.optim.trainable = "score_fr"  # the frozen trunk is the paper's "fixed" baseline
    return common.finish(c, arg)
