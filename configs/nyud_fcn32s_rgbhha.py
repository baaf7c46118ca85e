"""FCN-32s on NYUDv2, two streams RGB + HHA, late fusion (Table 4)."""

from fcn_jax import configs as common


def get_config(arg: str | None = None):
    """The experiment's config; ``arg="smoke"`` for a seconds-long CPU run."""
    c = common.nyud(common.base())
    c.model.arch = "fcn32s"
    c.data.modalities = ("image", "hha")
    c.model.streams = ("color", "hha")
    return common.finish(c, arg)
