"""FCN-8s on your own data: a template. Copy it, then set the class count and the root.

Either layout under ``data.root`` (auto-detected): CamVid's (``<split>/``, ``<split>_labels/``
colour-coded PNGs and ``class_dict.csv``), or ``images/<split>/*`` with index-mask PNGs in
``masks/<split>/*`` (pairs matched by file stem; class names from ``classes.txt`` if present).
Compute your data's mean/std with ``python -m fcn_jax.data.stats --config <this file>``.
"""

from fcn_jax import configs as common


def get_config(arg: str | None = None):
    """The template's config; ``arg="smoke"`` for a seconds-long CPU run."""
    c = common.base()
    c.data.name = "folder"
    c.data.split = "train"
    c.data.eval_split = "val"
    c.data.preprocessing = "torchvision"
    c.data.max_size = 512
    c.model.arch = "fcn8s"
    c.model.n_class = 2  # set to your number of classes (void excluded)
    c.learning_rate = 1e-4
    c.optim.loss = "mean"
    c.optim.momentum = 0.9
    c.init.from_ = "weights/vgg16.pth"  # torchvision VGG16 (or a converted weights dir)
    return common.finish(c, arg)
