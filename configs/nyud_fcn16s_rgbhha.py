"""FCN-16s on NYUDv2, two streams RGB + HHA, late fusion (Table 4)."""

from fcn_jax import configs as common


def get_config(arg: str | None = None):
    """The experiment's config; ``arg="smoke"`` for a seconds-long CPU run."""
    c = common.nyud(common.base())
    c.model.arch = "fcn16s"
    c.data.modalities = ("image", "hha")
    c.model.streams = ("color", "hha")
    c.init.from_ = "runs/nyud_fcn32s_rgbhha"  # staged: the two-stream FCN-32s workdir
    return common.finish(c, arg)
