"""Where the train state and the batches live: one host or many, jit over a mesh or pmap.

:class:`DataParallel` hides the two layouts of ``config.parallel`` from the training loop:

- ``"sharding"`` (default): one global ``jax.Array`` per leaf over a 1-D mesh ``data`` of every
  device of every host; the state is replicated (``P()``) and each batch split on its first
  axis (``P("data")``). Each host feeds the rows of the global batch its own devices hold
  (``jax.make_array_from_process_local_data``), which is how the same code spans hosts.
- ``"pmap"``: arrays with a leading axis of the host's devices; the state stacked (replicated)
  along it and each host's batch reshaped to ``(devices, batch / devices, ...)``.

Both give the loop the same handful of operations: put a state or a batch on the devices, read
a step's metrics, and hand back params that a single-device ``jit`` (evaluation, the sample
picture) or a checkpoint can take.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from fcn_jax.errors import FCNError
from fcn_jax.train.step import AXIS, PARALLEL_MODES
from fcn_jax.types import PyTree


@dataclasses.dataclass(frozen=True)
class DataParallel:
    """The data-parallel layout of one training run.

    Attributes:
        mode: ``"sharding"`` or ``"pmap"``.
        devices: every device taking part (all hosts), in mesh order.
        local_devices: this host's devices among them.
    """

    mode: str
    devices: tuple[jax.Device, ...]
    local_devices: tuple[jax.Device, ...]

    # Cached (a frozen dataclass still has an instance dict): put_batch runs every step.
    @functools.cached_property
    def mesh(self) -> jax.sharding.Mesh:
        """The 1-D ``data`` mesh (``sharding`` mode). Auto axes: XLA places the reductions."""
        return jax.make_mesh(
            (len(self.devices),), (AXIS,), (jax.sharding.AxisType.Auto,), devices=self.devices
        )

    @functools.cached_property
    def batch_sharding(self) -> NamedSharding:
        """Batches split on their first axis over the mesh (``sharding`` mode)."""
        return NamedSharding(self.mesh, P(AXIS))

    def check_batch(self, batch_size: int) -> int:
        """The examples each host reads per micro-batch, after checking ``batch_size`` splits.

        Raises:
            FCNError: the global batch does not divide over the devices.
        """
        if batch_size % len(self.devices):
            raise FCNError(
                f"batch_size {batch_size} (global) does not divide over {len(self.devices)} "
                f"devices: use a multiple of {len(self.devices)}, or fewer devices "
                "(--config.num_devices=N on one host; batch 1 is the paper's recipe)"
            )
        return batch_size // jax.process_count()

    def put_state(self, state: PyTree) -> PyTree:
        """Replicate a (host-local, identical on every host) state over the devices."""
        if self.mode == "pmap":
            n = len(self.local_devices)
            mesh = jax.sharding.Mesh(np.array(self.local_devices), (AXIS,))
            sharding = NamedSharding(mesh, P(AXIS))  # the layout pmap's outputs have
            return jax.tree.map(
                lambda x: jax.device_put(np.stack([np.asarray(x)] * n), sharding), state
            )
        replicated = NamedSharding(self.mesh, P())
        return jax.tree.map(
            lambda x: jax.make_array_from_process_local_data(replicated, np.asarray(x)), state
        )

    def put_batch(self, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        """This host's rows of the global batch, on its devices."""
        if self.mode == "pmap":
            n = len(self.local_devices)  # pmap splits the leading axis over the devices
            return jax.tree.map(lambda x: x.reshape(n, -1, *x.shape[1:]), batch)
        sharding = self.batch_sharding
        return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)

    def metrics(self, metrics: dict[str, jax.Array]) -> dict[str, float]:
        """A step's metrics as host floats (the one device-to-host read of a logging step)."""
        first = (lambda v: v[0]) if self.mode == "pmap" else (lambda v: v)
        return {k: float(first(v)) for k, v in metrics.items()}

    def local(self, tree: PyTree) -> PyTree:
        """A replicated tree as single-device arrays on this host's first device (no copy).

        What evaluation, the sample picture and the checkpoint take: every host holds the whole
        replicated state, so each can use its own copy.
        """
        if self.mode == "pmap":
            return jax.tree.map(lambda x: x.addressable_data(0)[0], tree)
        return jax.tree.map(lambda x: x.addressable_data(0), tree)

    def saveable(self, state: PyTree) -> PyTree:
        """The state as a checkpoint takes it.

        ``sharding``: the global arrays themselves (orbax writes each once, from the hosts that
        hold it). ``pmap``: one device's copy, as host NumPy arrays (written by process 0).
        """
        if self.mode == "pmap":
            return jax.tree.map(np.asarray, self.local(state))
        return state


def data_parallel(mode: str, num_devices: int | None = None) -> DataParallel:
    """The layout ``config.parallel`` (and ``config.num_devices``) ask for.

    Args:
        mode: ``"sharding"`` or ``"pmap"``.
        num_devices: devices of this host to use (one host only); None for all.

    Raises:
        FCNError: an unknown mode, or more devices than the host has.
    """
    if mode not in PARALLEL_MODES:
        raise FCNError(f"config.parallel {mode!r} is not one of {PARALLEL_MODES}")
    local = jax.local_devices()
    if num_devices is not None:
        if jax.process_count() > 1:
            raise FCNError("config.num_devices is for one host; with several, every device runs")
        if not 1 <= num_devices <= len(local):
            raise FCNError(
                f"config.num_devices={num_devices} but this host has {len(local)} devices"
            )
        local = local[:num_devices]
        return DataParallel(mode, tuple(local), tuple(local))
    return DataParallel(mode, tuple(jax.devices()), tuple(local))
