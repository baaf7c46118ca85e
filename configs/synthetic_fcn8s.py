"""FCN-8s, narrow, on the built-in synthetic shapes: the demo, minutes on 2 CPU cores."""

from fcn_jax import configs as common


def get_config(arg: str | None = None):
    """The demo's config; ``arg="smoke"`` for a seconds-long run."""
    c = common.base()
    c.data.name = "synthetic"
    c.data.split = "train"
    c.data.eval_split = "val"
    c.data.num_images = 64
    c.data.min_size = 48
    c.data.max_size = 64
    c.data.preprocessing = "caffe"
    c.model.arch = "fcn8s"
    c.model.n_class = 5
    c.model.width = 0.125
    # Training from scratch (no pretrained VGG16 here): Adam on the mean loss, batches of 4
    # padded to 64 px buckets; visibly learns in a few minutes on 2 CPU cores.
    c.batch_size = 4
    c.optim.name = "adam"
    c.optim.loss = "mean"
    c.optim.weight_decay = 0.0
    c.learning_rate = 1e-3
    c.num_steps = 400
    c.eval_every = 100
    c.checkpoint_every = 100
    c.eval.bucket = True
    c.eval.batch_size = 8
    return common.finish(c, arg)
