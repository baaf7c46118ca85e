"""Joining a multi-host run: ``jax.distributed.initialize`` when the launcher says so.

One process per host (or per GPU under SLURM), every process running the same command. JAX
must be told about the others before its first computation:

- explicit flags (``--coordinator_address host:port --num_processes N --process_id i``), for
  any launcher, and for tests (several processes on one machine, CPU devices);
- SLURM (``srun``): ``SLURM_NTASKS`` > 1; JAX reads the rest from SLURM's environment;
- a Cloud TPU pod slice: ``TPU_WORKER_HOSTNAMES`` lists more than one host; JAX reads the rest
  from the TPU metadata.

Anything else is a single-process run and initialises nothing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from fcn_jax.errors import FCNError


def launcher(
    environ: Mapping[str, str], coordinator_address: str | None, num_processes: int | None
) -> str | None:
    """Which multi-host launcher started this process: ``flags``, ``slurm``, ``tpu`` or None."""
    if coordinator_address or num_processes:
        return "flags"
    if int(environ.get("SLURM_NTASKS", "1") or 1) > 1 and "SLURM_PROCID" in environ:
        return "slurm"
    if "," in environ.get("TPU_WORKER_HOSTNAMES", ""):
        return "tpu"
    return None


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> str | None:
    """Initialise JAX's distributed runtime if this is a multi-host run; returns the launcher.

    Must run before any JAX computation (train.py calls it first thing).

    Raises:
        FCNError: explicit flags that are incomplete.
    """
    how = launcher(os.environ if environ is None else environ, coordinator_address, num_processes)
    if how is None:
        return None
    import jax

    if how == "flags":
        if not (coordinator_address and num_processes and process_id is not None):
            raise FCNError(
                "a multi-host run needs all of --coordinator_address host:port, "
                "--num_processes N and --process_id i (0 on the coordinator's host)"
            )
        if not 0 <= process_id < num_processes:
            raise FCNError(f"--process_id {process_id} is not in [0, {num_processes})")
        jax.distributed.initialize(coordinator_address, num_processes, process_id)
    else:
        jax.distributed.initialize()  # SLURM and TPU: JAX detects the cluster itself
    return how
