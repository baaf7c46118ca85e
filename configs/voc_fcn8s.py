"""FCN-8s on PASCAL VOC, the release's "heavy" recipe (SBD train, seg11valid)."""

from fcn_jax import configs as common


def get_config(arg: str | None = None):
    """The experiment's config; ``arg="smoke"`` for a seconds-long CPU run."""
    c = common.base()
    c.model.arch = "fcn8s"
    c.learning_rate = 1e-14
    c.num_steps = 100_000
    c.init.from_ = "runs/voc_fcn16s"  # staged: the FCN-16s workdir
    return common.finish(c, arg)
