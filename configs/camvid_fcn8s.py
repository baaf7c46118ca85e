"""FCN-8s on CamVid as the seed's users have it (class_dict.csv, colour-coded labels).

The paper's faithful FCN-8s (pad 100, score-level skips) on the seed's data. The seed's csv
holds 11 classes and Void; with Kaggle's 32-row csv pass --config.model.n_class=31.
"""

from fcn_jax import configs as common


def get_config(arg: str | None = None):
    """The experiment's config; ``arg="smoke"`` for a seconds-long CPU run."""
    c = common.base()
    c.data.name = "camvid"
    c.data.split = "train"
    c.data.eval_split = "val"
    c.data.preprocessing = "torchvision"  # the seed normalises with ImageNet mean/std
    c.data.max_size = 960
    c.model.arch = "fcn8s"
    c.model.n_class = 11
    c.learning_rate = 1e-4
    c.optim.loss = "mean"
    c.optim.momentum = 0.9
    c.init.from_ = "weights/vgg16.pth"  # torchvision VGG16 (or a converted weights dir)
    return common.finish(c, arg)
