"""FCN-8s on your own data: a template. Copy it, or pass ``--config.data.root=DIR``.

Either layout under ``data.root`` (auto-detected): CamVid's (``<split>/``, ``<split>_labels/``
colour-coded PNGs and ``class_dict.csv``), or ``images/<split>/*`` with index-mask PNGs in
``masks/<split>/*`` (pairs matched by file stem; class names from ``classes.txt`` if present).
The class count comes from ``class_dict.csv`` or ``classes.txt``; index masks without
``classes.txt`` need ``--config.model.n_class=N``.
Compute your data's mean/std with ``python -m fcn_jax.data.stats --config <this file>``.
"""

from ml_collections import config_dict

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
    # None: from the data's class_dict.csv or classes.txt (void excluded). Set it only for index
    # masks without classes.txt; set, it must match the data's class files.
    c.model.n_class = config_dict.placeholder(int)
    c.learning_rate = 1e-4
    c.optim.loss = "mean"
    c.optim.momentum = 0.9
    c.init.from_ = "weights/vgg16.pth"  # torchvision VGG16 (or a converted weights dir)
    return common.finish(c, arg)
