"""The JAX side of a case: the network's forward pass or train step, compiled, as a runner.

The jitted function is lowered and compiled explicitly (that wall time is ``jax_compile_s``),
and the compiled executable is what gets timed, each call ended by ``block_until_ready``.
``forward`` is a :class:`~fcn_jax.models.NetSpec`'s network on preprocessed inputs (as torch's
side is timed; BatchNorm with its running statistics); ``train`` is the library's own train step
(:func:`fcn_jax.train.step.make_steps`: summed cross-entropy, the release's SGD with momentum
0.99, weight decay, biases at 2x the rate, frozen upsampling except SpeedPaper's, per example
dropout keys, BatchNorm on the batch's statistics, updating the running ones), its state
donated as in training. An FCN-ResNet is timed without its auxiliary head: the library's step
trains the ``out`` head (torchvision's recipe adds 0.5 x the aux head's loss: about 7% more
convolution work, see :mod:`fcn_jax.bench.flops_nets`).

bfloat16: parameters stay float32, convolutions compute in bfloat16 (Flax's ``dtype``), the loss
in float32. float32 compiles under ``jax.default_matmul_precision("highest")``; tf32 at the
device's default precision (:func:`fcn_jax.bench.timing.jax_precision`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fcn_jax.bench.network import Network, train_config
from fcn_jax.bench.plan import Case
from fcn_jax.bench.timing import Compiled, jax_precision
from fcn_jax.configs import spec_from_config
from fcn_jax.types import PyTree


def _xla_flop(compiled: Any) -> float | None:
    try:
        cost = compiled.cost_analysis()
    except Exception:  # not every backend implements it
        return None
    if isinstance(cost, list | tuple):  # one entry per device program in older releases
        cost = cost[0] if cost else None
    return float(cost["flops"]) if cost and "flops" in cost else None


def _xla_bytes(compiled: Any) -> int | None:
    try:
        m = compiled.memory_analysis()
    except Exception:  # not every backend implements it
        return None
    if m is None:
        return None
    total = m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
    return int(total - m.alias_size_in_bytes)


def jax_forward(
    net: Network, case: Case, images: np.ndarray, options: Mapping[str, str] | None = None
) -> Compiled:
    """The jitted inference function on preprocessed images, compiled for this case.

    ``options``: XLA compiler options (:attr:`fcn_jax.bench.plan.Plan.jax_compiler_options`).
    """
    spec = spec_from_config(train_config(case, net.n_class))
    x = tuple(jax.device_put(a) for a in spec.preprocess({spec.inputs[0]: images}))
    variables = net.variables
    with jax_precision(case.dtype):
        start = time.perf_counter()
        compiled = jax.jit(spec.apply).lower(variables, x).compile(_options(options))
        compile_s = time.perf_counter() - start
    result = Compiled(lambda: None, compile_s, _xla_bytes(compiled), _xla_flop(compiled))

    def run() -> None:
        result.last["out"] = jax.block_until_ready(compiled(variables, x)["out"])

    result.run = run
    return result


def make_jax_train_step(variables: PyTree, case: Case, n_class: int, seed: int) -> tuple:
    """The library's jitted train step and a fresh state (own buffers: the step donates them).

    Returns:
        (train_step, state).
    """
    from fcn_jax.train.optim import make_optimizer
    from fcn_jax.train.step import create_train_state, make_steps

    config = train_config(case, n_class)
    tx = make_optimizer(config, variables["params"])
    steps = make_steps(spec_from_config(config), tx, config.optim.loss, batch_size=case.batch)
    train_step = steps.train_step
    state = create_train_state(jax.tree.map(jnp.copy, variables), tx, seed)
    return train_step, state


def _options(options: Mapping[str, str] | None) -> dict[str, str] | None:
    return dict(options) if options else None


def compile_train(
    train_step: Any,
    state: PyTree,
    batch: PyTree,
    dtype: str,
    options: Mapping[str, str] | None = None,
) -> Compiled:
    """``train_step`` compiled for ``state`` and ``batch`` as placed; each run one update.

    The state is donated, so each run continues from the last one's state. ``options``: XLA
    compiler options.
    """
    with jax_precision(dtype):
        start = time.perf_counter()
        compiled = train_step.lower(state, batch).compile(_options(options))
        compile_s = time.perf_counter() - start
    result = Compiled(lambda: None, compile_s, _xla_bytes(compiled), _xla_flop(compiled))
    result.last["state"] = state

    def run() -> None:
        result.last["state"], metrics = compiled(result.last["state"], batch)
        jax.block_until_ready((result.last["state"], metrics))

    result.run = run
    return result


def jax_train(
    net: Network,
    case: Case,
    images: np.ndarray,
    labels: np.ndarray,
    seed: int,
    options: Mapping[str, str] | None = None,
) -> Compiled:
    """One optimiser step of the library's train step, compiled for this case.

    Args:
        net: the network (its params are copied: the step donates its state).
        case: the case (its dtype sets the precision).
        images: [B, H, W, 3] uint8 RGB.
        labels: [B, H, W] int32, void 255.
        seed: the dropout keys' seed.
        options: XLA compiler options.
    """
    train_step, state = make_jax_train_step(net.variables, case, net.n_class, seed)
    batch = jax.device_put({"image": images, "label": labels})
    return compile_train(train_step, state, batch, case.dtype, options)


def jax_peak_bytes() -> int | None:
    """JAX's device high-water mark so far (``peak_bytes_in_use``), where the backend keeps one.

    It cannot be reset: it is the largest of this case and every case before it.
    """
    stats = jax.devices()[0].memory_stats()
    if not stats or "peak_bytes_in_use" not in stats:
        return None
    return int(stats["peak_bytes_in_use"])
