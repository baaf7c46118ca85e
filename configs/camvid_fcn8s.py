"""FCN-8s on CamVid: the paper's faithful FCN-8s on the seed's data, SGD on the mean loss."""

from fcn_jax import configs as common


def get_config(arg: str | None = None):
    """The experiment's config; ``arg="smoke"`` for a seconds-long CPU run."""
    c = common.camvid(common.base())
    c.learning_rate = 1e-4
    c.optim.loss = "mean"
    c.optim.momentum = 0.9
    return common.finish(c, arg)
