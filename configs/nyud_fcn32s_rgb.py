"""FCN-32s on NYUDv2, 40 classes, image input (the paper's Table 4)."""

from fcn_jax import configs as common


def get_config(arg: str | None = None):
    """The experiment's config; ``arg="smoke"`` for a seconds-long CPU run."""
    c = common.base()
    c.data.name = "nyud"
    c.data.split = "trainval"  # 795 images (train + val)
    c.data.eval_split = "test"  # 654 images
    c.data.modalities = ("image",)
    c.data.preprocessing = "caffe-nyud"
    c.data.max_size = 640
    c.model.arch = "fcn32s"
    c.model.n_class = 40
    c.model.streams = ()
    c.learning_rate = 1e-10
    c.init.from_ = "weights/vgg16.pth"  # torchvision VGG16 (or a converted weights dir)
    return common.finish(c, arg)
