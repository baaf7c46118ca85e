"""What an artifact says about itself: the sidecar of a StableHLO file, the props of an ONNX one.

One JSON-ready record (:class:`ArtifactInfo`) travels with every artifact: its inputs and
outputs (names, shapes with ``batch`` / ``height`` / ``width`` where symbolic, dtypes), the
classes and colours of each head, the evaluation resize the consumer applies (torchvision's
FCN-ResNets), the network it was made from, the SHA-256 of the variables and the versions that
made it. A StableHLO artifact ``model.stablehlo`` has it in ``model.stablehlo.json``; an ONNX
one in its ``metadata_props``, one prop per field, each value JSON-encoded.

Flax-free, like :mod:`fcn_jax.export.artifact`: a consumer reads it without the model code.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fcn_jax.errors import FCNError

FORMATS = {"stablehlo": ".stablehlo", "onnx": ".onnx"}  # format -> the file suffix it needs
OUTPUT_KINDS = ("logits", "labels", "both")
SYMBOLIC_DIMS = ("batch", "height", "width")  # the names of an input's symbolic dims
SCHEMA = 1  # bumped when a field changes meaning


def artifact_format(path: str | Path) -> str:
    """``stablehlo`` or ``onnx``, from the file's suffix; anything else is an error."""
    suffix = Path(path).suffix.lower()
    for name, ext in FORMATS.items():
        if suffix == ext:
            return name
    raise FCNError(
        f"{path}: not an artifact (.stablehlo or .onnx, as export.py writes them) nor a weights "
        "directory"
    )


def is_artifact_path(path: str | Path) -> bool:
    """Whether ``path`` names an artifact file (by suffix), existing or not, not a folder."""
    path = Path(path)
    return path.suffix.lower() in FORMATS.values() and not path.is_dir()


def sidecar_path(path: str | Path) -> Path:
    """A StableHLO artifact's sidecar: ``model.stablehlo`` -> ``model.stablehlo.json``."""
    return Path(f"{path}.json")


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """One input or output of an artifact.

    Attributes:
        name: its name in the graph (``image``, ``logits``, ``labels_sem``, ...).
        shape: sides, an int where fixed, ``batch`` / ``height`` / ``width`` where symbolic.
        dtype: ``uint8`` or ``float32``.
        head: the output head it belongs to (``out``, ``sem``, ...); None for an input.
    """

    name: str
    shape: tuple[int | str, ...]
    dtype: str
    head: str | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (``head`` only for outputs)."""
        d: dict[str, Any] = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}
        if self.head is not None:
            d["head"] = self.head
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> TensorSpec:
        """Inverse of :meth:`to_json`."""
        return cls(str(d["name"]), tuple(d["shape"]), str(d["dtype"]), d.get("head"))


@dataclasses.dataclass(frozen=True)
class ArtifactInfo:
    """An artifact's contract and provenance.

    Attributes:
        format: ``stablehlo`` or ``onnx``.
        inputs: one uint8 [N, H, W, 3] RGB input per network input (``image``; NYUD's
            two-stream nets: ``image`` and ``hha``), sharing N, H and W.
        outputs: per head, ``logits`` [N, H, W, C] float32 and/or ``labels`` [N, H, W] uint8
            (names suffixed ``_<head>`` for a multi-head net: ``logits_sem``, ``labels_geo``).
        head_classes: ``{head: class names}``, heads in output order.
        palette: RGB colour of each class of the first head (the dataset's, else VOC's).
        eval_resize: the shorter side the weights expect images resized to (PIL bilinear)
            before the artifact, logits resized back after (bilinear); None: images as they are.
        network: the weights' network: ``arch``, ``backbone``, ``width``, ``dtype``,
            ``preprocessing`` (applied inside the graph; informational).
        weights_sha256: SHA-256 of the variables (:func:`fcn_jax.export.graph.variables_sha256`).
        source: the weights' provenance (``source``, ``source_sha256``, ``weights``, ``step``).
        versions: ``fcn_jax``, ``jax`` and, for ONNX, ``torch``, ``onnx`` and the ``opset``.
        note: why the sizes are fixed, when they are; else empty.
    """

    format: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    head_classes: dict[str, tuple[str, ...]]
    palette: tuple[tuple[int, int, int], ...]
    eval_resize: int | None
    network: dict[str, Any]
    weights_sha256: str
    source: dict[str, Any]
    versions: dict[str, Any]
    note: str = ""

    @property
    def heads(self) -> tuple[str, ...]:
        """Head names, in order (``("out",)`` for a one-output net)."""
        return tuple(self.head_classes)

    @property
    def class_names(self) -> tuple[str, ...]:
        """Class names of the first head."""
        return self.head_classes[self.heads[0]]

    def output(self, kind: str, head: str | None = None) -> TensorSpec | None:
        """The ``logits`` or ``labels`` output of ``head`` (default: the first), if exported."""
        head = head or self.heads[0]
        return next((o for o in self.outputs if o.head == head and o.name.startswith(kind)), None)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (the sidecar's content)."""
        return {
            "fcn_jax_artifact": SCHEMA,
            "format": self.format,
            "inputs": [t.to_json() for t in self.inputs],
            "outputs": [t.to_json() for t in self.outputs],
            "head_classes": {k: list(v) for k, v in self.head_classes.items()},
            "palette": [list(c) for c in self.palette],
            "eval_resize": self.eval_resize,
            "network": self.network,
            "weights_sha256": self.weights_sha256,
            "source": self.source,
            "versions": self.versions,
            "note": self.note,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any], where: str) -> ArtifactInfo:
        """Parse a sidecar; a missing or malformed field is an error naming ``where``."""
        if d.get("fcn_jax_artifact") != SCHEMA:
            raise FCNError(
                f"{where}: not an fcn-jax artifact description (fcn_jax_artifact: "
                f"{d.get('fcn_jax_artifact')!r}, expected {SCHEMA})"
            )
        try:
            return cls(
                format=str(d["format"]),
                inputs=tuple(TensorSpec.from_json(t) for t in d["inputs"]),
                outputs=tuple(TensorSpec.from_json(t) for t in d["outputs"]),
                head_classes={str(k): tuple(v) for k, v in d["head_classes"].items()},
                palette=tuple(tuple(int(v) for v in c) for c in d["palette"]),  # type: ignore[misc]  # RGB triples
                eval_resize=d["eval_resize"],
                network=dict(d["network"]),
                weights_sha256=str(d["weights_sha256"]),
                source=dict(d["source"]),
                versions=dict(d["versions"]),
                note=str(d.get("note", "")),
            )
        except (KeyError, TypeError, ValueError) as e:
            what = f"{type(e).__name__}: {e}"
            raise FCNError(f"{where}: malformed artifact description ({what})") from None

    def to_props(self) -> dict[str, str]:
        """The ONNX ``metadata_props``: each field JSON-encoded under its own key."""
        return {k: json.dumps(v) for k, v in self.to_json().items()}

    @classmethod
    def from_props(cls, props: Mapping[str, str], where: str) -> ArtifactInfo:
        """Inverse of :meth:`to_props` (ONNX Runtime's ``custom_metadata_map``)."""
        try:
            d = {k: json.loads(v) for k, v in props.items()}
        except json.JSONDecodeError as e:
            raise FCNError(f"{where}: a metadata prop is not JSON ({e})") from None
        return cls.from_json(d, where)


def write_sidecar(info: ArtifactInfo, artifact: str | Path) -> Path:
    """Write ``info`` beside a StableHLO artifact (:func:`sidecar_path`)."""
    path = sidecar_path(artifact)
    path.write_text(json.dumps(info.to_json(), indent=2) + "\n")
    return path


def read_sidecar(artifact: str | Path) -> ArtifactInfo:
    """The sidecar of a StableHLO artifact; missing or unreadable: an error naming the file."""
    path = sidecar_path(artifact)
    if not path.is_file():
        raise FCNError(
            f"{artifact}: its description {path} is missing (export.py writes the two together; "
            "keep them side by side)"
        )
    try:
        d = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise FCNError(f"{path}: cannot be read as JSON ({e})") from None
    return ArtifactInfo.from_json(d, str(path))
