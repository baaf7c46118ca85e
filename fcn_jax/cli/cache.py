"""JAX's persistent compilation cache, shared by the CLIs that compile per image shape."""

from __future__ import annotations

import os
from pathlib import Path


def enable_compilation_cache(directory: str | None = None) -> Path:
    """Turn on JAX's persistent compilation cache (``$FCN_JAX_CACHE`` or ~/.cache/fcn_jax/xla).

    Whole-image evaluation and batch-1 training compile once per image shape; the cache makes
    the second run over the same data skip those compilations.

    Returns:
        The cache folder (created if missing).
    """
    import jax

    path = Path(
        directory or os.environ.get("FCN_JAX_CACHE") or Path.home() / ".cache" / "fcn_jax" / "xla"
    ).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    return path
