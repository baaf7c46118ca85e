"""FCN-16s on PASCAL-Context, 59 classes + background (the paper's Table 6)."""

from fcn_jax import configs as common


def get_config(arg: str | None = None):
    """The experiment's config; ``arg="smoke"`` for a seconds-long CPU run."""
    c = common.context(common.base())
    c.model.arch = "fcn16s"
    c.learning_rate = 1e-12
    c.init.from_ = "runs/context_fcn32s"  # staged
    return common.finish(c, arg)
