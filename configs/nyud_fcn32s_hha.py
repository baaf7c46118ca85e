"""FCN-32s on NYUDv2, HHA input (the paper's Table 4)."""

from fcn_jax import configs as common


def get_config(arg: str | None = None):
    """The experiment's config; ``arg="smoke"`` for a seconds-long CPU run."""
    c = common.nyud(common.base())
    c.model.arch = "fcn32s"
    c.data.modalities = ("hha",)
    c.data.preprocessing = "caffe-nyud-hha"
    return common.finish(c, arg)
