"""Export for deployment: StableHLO and ONNX artifacts of a weights directory, and their loader.

An artifact takes uint8 RGB images [N, H, W, 3] (any N, H, W unless fixed at export), does the
weights' preprocessing inside its graph and returns, per head, logits [N, H, W, C] float32
and/or labels [N, H, W] uint8 (:mod:`fcn_jax.export.graph`). Its description (classes,
palette, inputs, outputs, evaluation resize, provenance) travels with it
(:mod:`fcn_jax.export.info`).

- :func:`fcn_jax.export.build.export_weights`: weights directory -> artifact, checked against
  the live network (:mod:`fcn_jax.export.check`); ``export.py`` is its command line;
- :mod:`fcn_jax.export.stablehlo`: ``jax.export``, symbolic sizes; :mod:`fcn_jax.export.onnx_torch`:
  ONNX through the project's PyTorch twin of the network;
- :func:`load_artifact` and :class:`~fcn_jax.export.predictor.ArtifactPredictor`: run one,
  without flax (this package's ``__init__`` imports only those flax-free modules).
"""

from fcn_jax.export.artifact import Artifact, load_artifact
from fcn_jax.export.info import FORMATS, ArtifactInfo, artifact_format, is_artifact_path

__all__ = [
    "FORMATS",
    "Artifact",
    "ArtifactInfo",
    "artifact_format",
    "is_artifact_path",
    "load_artifact",
]
