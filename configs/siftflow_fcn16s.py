"""FCN-16s on SIFT Flow with two heads: 33 semantic and 3 geometric classes (Table 5)."""

from fcn_jax import configs as common


def get_config(arg: str | None = None):
    """The experiment's config; ``arg="smoke"`` for a seconds-long CPU run."""
    c = common.base()
    c.data.name = "siftflow"
    c.data.split = "trainval"  # 2,488 images
    c.data.eval_split = "test"  # 200 images
    c.data.preprocessing = "caffe-siftflow"
    c.data.max_size = 256
    c.model.arch = "fcn16s"
    c.model.n_class = 33  # the semantic head; the geometric one is in model.heads
    c.model.heads = (("sem", 33), ("geo", 3))
    c.learning_rate = 1e-12
    c.init.from_ = "weights/vgg16.pth"  # torchvision VGG16 (or a converted weights dir)
    return common.finish(c, arg)
