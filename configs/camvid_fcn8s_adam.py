"""FCN-8s on CamVid as the seed trained it: Adam, lr 1e-4 halved every 50 epochs."""

from fcn_jax import configs as common


def get_config(arg: str | None = None):
    """The experiment's config; ``arg="smoke"`` for a seconds-long CPU run."""
    c = common.camvid(common.base())
    c.batch_size = 4  # whole images padded to 32-px buckets
    c.optim.name = "adam"
    c.optim.loss = "mean"
    c.optim.weight_decay = 0.0
    c.optim.lr_halve_every_epochs = 50
    c.learning_rate = 1e-4
    c.num_steps = 20_000
    c.eval_every = 500
    c.checkpoint_every = 500
    c.eval.bucket = True
    c.eval.batch_size = 4
    return common.finish(c, arg)
