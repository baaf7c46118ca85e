"""FCN-8s on PASCAL-Context, 59 classes + background (the paper's Table 6)."""

from fcn_jax import configs as common


def get_config(arg: str | None = None):
    """The experiment's config; ``arg="smoke"`` for a seconds-long CPU run."""
    c = common.base()
    c.data.name = "context"
    c.data.split = "train"  # VOC2010 train (4,998 images)
    c.data.eval_split = "val"  # VOC2010 val (5,105 images)
    c.data.preprocessing = "caffe-context"
    c.model.arch = "fcn8s"
    c.model.n_class = 60
    c.learning_rate = 1e-14
    c.init.from_ = "runs/context_fcn16s"  # staged
    return common.finish(c, arg)
