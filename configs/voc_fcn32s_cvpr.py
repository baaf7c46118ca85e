"""FCN-32s with the CVPR 2015 recipe: mean loss, momentum 0.9, lr 1e-4, 20 images a step.

Whole images of different sizes cannot share a batch, so, as Caffe's iter_size did, each step
accumulates 20 batch-1 micro-batches; the mean is taken over all their valid pixels.
"""

from fcn_jax import configs as common


def get_config(arg: str | None = None):
    """The experiment's config; ``arg="smoke"`` for a seconds-long CPU run."""
    c = common.base()
    c.model.arch = "fcn32s"
    c.learning_rate = 1e-4
    c.init.from_ = "weights/vgg16.pth"
    c.optim.loss = "mean"
    c.optim.momentum = 0.9
    c.optim.accum_steps = 20
    c.num_steps = 5_000  # 100k images
    c.eval_every = 200
    c.checkpoint_every = 200
    return common.finish(c, arg)
