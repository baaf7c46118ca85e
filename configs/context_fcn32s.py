"""FCN-32s on PASCAL-Context, 59 classes + background (the paper's Table 6)."""

from fcn_jax import configs as common


def get_config(arg: str | None = None):
    """The experiment's config; ``arg="smoke"`` for a seconds-long CPU run."""
    c = common.context(common.base())
    c.model.arch = "fcn32s"
    c.learning_rate = 1e-10
    return common.finish(c, arg)
