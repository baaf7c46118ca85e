"""FCN-32s on NYUDv2, RGB input (the paper's Table 4)."""

from fcn_jax import configs as common


def get_config(arg: str | None = None):
    """The experiment's config; ``arg="smoke"`` for a seconds-long CPU run."""
    c = common.nyud(common.base())
    c.model.arch = "fcn32s"
    c.data.modalities = ("image",)
    return common.finish(c, arg)
