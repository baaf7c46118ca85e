"""How to evaluate, as an experiment config decides it, checked before any work.

:class:`EvalOptions` reads ``eval.bucket``, ``eval.batch_size``, ``dtype``, ``num_devices``,
``data.buckets`` / ``max_size`` / ``bucket_step`` and ``data.worker_count``.
"""

from __future__ import annotations

import dataclasses

import jax
import ml_collections

from fcn_jax.data.transforms import default_buckets
from fcn_jax.errors import FCNError

COMPUTE_DTYPES = ("float32", "bfloat16")
# |mean IU (bfloat16) - mean IU (float32)| we promise for the same float32 weights, as a
# fraction (0.5 points): bf16 keeps 8 bits of mantissa, so logits move by ~1% of their scale
# and only pixels whose top two classes are that close flip (tests/eval: measured on converted
# weights).
BF16_MIOU_TOLERANCE = 5e-3


@dataclasses.dataclass(frozen=True)
class EvalOptions:
    """How to evaluate: the keyword arguments of :func:`evaluate` a config decides.

    Attributes:
        bucket: pad batches to ``buckets`` over the devices, instead of whole images one by one.
        batch_size: global batch size of bucketed evaluation (whole images go one at a time).
        buckets: bucket sizes (bucketed evaluation).
        worker_count: data-loading worker processes.
        dtype: compute dtype of the network.
        num_devices: local devices to spread buckets over; None for all.
    """

    bucket: bool = False
    batch_size: int = 1
    buckets: tuple[int, ...] = ()
    worker_count: int = 0
    dtype: str = "float32"
    num_devices: int | None = None

    @classmethod
    def from_config(
        cls, config: ml_collections.ConfigDict, bucket: bool | None = None
    ) -> EvalOptions:
        """The options ``config`` holds, checked now rather than after loading weights and data.

        Args:
            config: the experiment config: ``eval.bucket``, ``eval.batch_size``, ``dtype``,
                ``num_devices``, ``data.buckets`` (else multiples of ``data.bucket_step`` up to
                ``data.max_size``) and ``data.worker_count``.
            bucket: a command line's explicit choice, overriding ``config.eval.bucket``; None
                leaves it to the config.

        Raises:
            FCNError: an unknown dtype, a batch size below 1 or (bucketed) not a multiple of the
                device count, a device count this host does not have; each names its key.
        """
        d = config.data
        options = cls(
            bucket=bool(config.eval.bucket if bucket is None else bucket),
            batch_size=config.eval.batch_size,
            buckets=tuple(d.get("buckets") or default_buckets(d.max_size, d.bucket_step)),
            worker_count=d.get("worker_count") or 0,
            dtype=config.dtype,
            num_devices=config.get("num_devices"),
        )
        options.check()
        return options

    def check(self) -> list[jax.Device]:
        """Fail on options that cannot work on this host; returns the devices to use.

        Raises:
            FCNError: see :meth:`from_config`.
        """
        if self.dtype not in COMPUTE_DTYPES:
            raise FCNError(f"config.dtype {self.dtype!r} is not one of {COMPUTE_DTYPES}")
        if self.batch_size < 1:
            raise FCNError(f"config.eval.batch_size must be at least 1, got {self.batch_size}")
        devices = jax.local_devices()
        if self.num_devices is not None:
            if not 1 <= self.num_devices <= len(devices):
                raise FCNError(
                    f"config.num_devices={self.num_devices} but this host has {len(devices)} "
                    "devices"
                )
            devices = devices[: self.num_devices]
        if self.bucket:
            if not self.buckets:
                raise FCNError(
                    "bucketed evaluation needs bucket sizes (config.data.buckets or "
                    "config.data.max_size)"
                )
            if self.batch_size % len(devices):
                raise FCNError(
                    f"eval batch size {self.batch_size} does not divide over {len(devices)} "
                    f"devices (config.eval.batch_size): use a multiple of {len(devices)}, or "
                    "fewer devices (config.num_devices)"
                )
        return devices
