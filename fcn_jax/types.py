"""Type aliases shared across the package."""

from typing import Any

import jax

Array = jax.Array
PyTree = Any  # nested dicts of arrays: Flax params, optimiser states
