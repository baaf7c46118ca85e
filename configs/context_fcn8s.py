"""FCN-8s on PASCAL-Context, 59 classes + background (the paper's Table 6)."""

from fcn_jax import configs as common


def get_config(arg: str | None = None):
    """The experiment's config; ``arg="smoke"`` for a seconds-long CPU run."""
    c = common.context(common.base())
    c.model.arch = "fcn8s"
    c.learning_rate = 1e-14
    c.init.from_ = "runs/context_fcn16s"  # staged
    return common.finish(c, arg)
