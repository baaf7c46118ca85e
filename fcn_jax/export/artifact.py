"""Run an artifact without the model code: :func:`load_artifact`.

Imports neither flax nor the network modules: a StableHLO artifact needs jax (and flatbuffers,
which ``jax.export``'s deserializer reads), an ONNX one onnxruntime. The format is recognised
from the file's suffix (``.stablehlo`` / ``.onnx``); the description (sidecar or metadata
props, :class:`~fcn_jax.export.info.ArtifactInfo`) says what the inputs and outputs are, and
each call is checked against it, so a wrong size, dtype or channel count is an
:class:`~fcn_jax.errors.FCNError` naming the artifact, not a runtime's stack trace.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fcn_jax.errors import FCNError
from fcn_jax.export.info import ArtifactInfo, artifact_format, read_sidecar

Runner = Callable[..., dict[str, np.ndarray]]


@dataclasses.dataclass
class Artifact:
    """A loaded artifact: call it with uint8 images, get its outputs as NumPy arrays.

    Attributes:
        path: the artifact file.
        info: its description (inputs, outputs, classes, palette, eval resize, provenance).
        run: the runtime's function, ``run(*images) -> {output name: array}``.
    """

    path: Path
    info: ArtifactInfo
    run: Runner

    def __call__(self, *images: np.ndarray) -> dict[str, np.ndarray]:
        """Outputs of [N, H, W, 3] uint8 RGB images, one per input of :attr:`info`.

        Raises:
            FCNError: the wrong number of inputs, or one whose dtype, channels or a fixed
                side is not what the artifact takes, or inputs of different sizes.
        """
        specs = self.info.inputs
        if len(images) != len(specs):
            raise FCNError(
                f"{self.path} takes {len(specs)} input(s) ({', '.join(t.name for t in specs)}), "
                f"got {len(images)}"
            )
        images = tuple(np.asarray(x) for x in images)
        for x, t in zip(images, specs, strict=True):
            want = " x ".join(str(d) for d in t.shape)
            sides = zip(t.shape, x.shape, strict=False)  # a wrong rank is reported below
            fixed_ok = all(isinstance(d, str) or d == n for d, n in sides)
            if x.dtype != np.uint8 or x.ndim != 4 or x.shape[3] != 3 or not fixed_ok:
                raise FCNError(
                    f"{self.path} input {t.name!r} takes {t.dtype} [{want}] (RGB), got "
                    f"{x.dtype} {list(x.shape)}"
                    + ("" if fixed_ok else "; export again for this size, or with symbolic sizes")
                )
            if min(x.shape[:3]) < 1:
                raise FCNError(f"{self.path} input {t.name!r}: empty image {list(x.shape)}")
        if len({x.shape for x in images}) > 1:
            raise FCNError(
                f"{self.path}: inputs {[t.name for t in specs]} must share batch, height and "
                f"width, got {[list(x.shape) for x in images]}"
            )
        return self.run(*images)


def _stablehlo_runner(path: Path) -> Runner:
    import jax

    try:
        exported = jax.export.deserialize(bytearray(path.read_bytes()))
    except ImportError as e:  # the deserializer's flatbuffers
        raise FCNError(f"{path}: reading a StableHLO artifact needs {e}") from None
    except Exception as e:  # a corrupt or foreign file: jax raises several types
        what = type(e).__name__
        raise FCNError(f"{path}: not a serialized jax.export artifact ({what})") from None
    platform = jax.default_backend()
    platform = "cuda" if platform == "gpu" else platform
    if platform not in exported.platforms:
        raise FCNError(
            f"{path} was lowered for {', '.join(exported.platforms)}, not this {platform}: "
            f"export it with --platforms {','.join((*exported.platforms, platform))}"
        )
    call = jax.jit(exported.call)  # compiled once per input size

    def run(*images: np.ndarray) -> dict[str, np.ndarray]:
        return {k: np.asarray(v) for k, v in call(*images).items()}

    return run


def _onnx_runner(path: Path) -> tuple[Runner, ArtifactInfo]:
    try:
        import onnxruntime as ort
    except ImportError:
        raise FCNError(f"{path}: running an ONNX artifact needs onnxruntime") from None
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime's own exception types
        raise FCNError(f"{path}: ONNX Runtime cannot load it ({str(e).splitlines()[0]})") from None
    props = session.get_modelmeta().custom_metadata_map
    info = ArtifactInfo.from_props(props, f"{path} metadata")
    names = [o.name for o in session.get_outputs()]
    inputs = [i.name for i in session.get_inputs()]

    def run(*images: np.ndarray) -> dict[str, np.ndarray]:
        feed = dict(zip(inputs, images, strict=True))
        return dict(zip(names, session.run(names, feed), strict=True))

    return run, info


def load_artifact(path: str | Path) -> Artifact:
    """Load a ``.stablehlo`` (with its ``.json`` sidecar) or ``.onnx`` artifact.

    Raises:
        FCNError: a missing file, another suffix, a missing sidecar, a file the runtime
            cannot read, or a StableHLO artifact lowered for other platforms.
    """
    path = Path(path)
    fmt = artifact_format(path)
    if not path.is_file():
        raise FCNError(f"artifact {path} does not exist")
    if fmt == "onnx":
        run, info = _onnx_runner(path)
    else:
        info = read_sidecar(path)
        run = _stablehlo_runner(path)
    if info.format != fmt:
        raise FCNError(f"{path}: its description says format {info.format!r}, not {fmt!r}")
    return Artifact(path, info, run)
