"""The weights directory: the one on-disk format every fcn-jax tool reads and writes.

An orbax ``CheckpointManager`` directory whose steps hold these items:

- ``params``: the Flax params pytree (tensorstore arrays; loading never unpickles or runs code);
- ``model_state``: the model's other variable collections (``{"batch_stats": ...}``, BatchNorm's
  running statistics), for networks that have any: written only then, so a VGG16 FCN's
  directory is what it always was;
- ``metadata``: JSON (:meth:`WeightsMetadata.to_json`): the network (``arch``, ``backbone``,
  ``n_class``, ``width``, ``preprocessing`` as numbers, ``inputs``, ``streams``, ``heads``), the
  class names, and the provenance (``source``, ``source_sha256``).

Conversion writes a single step (0); training writes one per snapshot into the same layout, so
a training workdir is a weights directory too. Loading takes the latest step unless told, and
returns the model's variables as one collection dict, ``{"params": ..., "batch_stats": ...}``,
which every tool passes to the network as it is.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import traverse_util

from fcn_jax.errors import FCNError
from fcn_jax.models import NetSpec, abstract_variables, model_state
from fcn_jax.models.fcn import SINGLE_HEAD
from fcn_jax.preprocessing import Preprocessing
from fcn_jax.resources import voc_palette
from fcn_jax.strict import check_keys_and_shapes
from fcn_jax.types import PyTree

ITEMS = ("params", "model_state", "metadata")
Variables = dict[str, PyTree]  # {"params": ..., and any other collection}
METADATA_KEYS = ("arch", "n_class", "class_names", "width", "preprocessing")


@dataclasses.dataclass(frozen=True)
class WeightsMetadata:
    """What a weights directory says about its params: the network, its classes, provenance.

    Attributes:
        spec: the network (:class:`~fcn_jax.models.NetSpec`): arch, backbone, heads, inputs,
            preprocessing, streams, width.
        class_names: one name per class of the first head.
        head_class_names: class names of ``spec.heads[1:]`` (SIFT Flow's geometric classes).
        source: where the params came from (``torchfcn``, ``torchvision_vgg16``, ``fcn-jax``).
        source_sha256: SHA-256 of the source file, if converted.
        palette: optional RGB colour per class (the dataset's); VOC's colour map otherwise.
        eval_resize: the shorter side images are resized to before evaluation and prediction
            (labels nearest-neighbour, scored at that size), or None (every image as it is).
            torchvision's FCN-ResNets: 520 (:mod:`fcn_jax.data.resize`). Stored only when set.
    """

    spec: NetSpec
    class_names: tuple[str, ...]
    head_class_names: tuple[tuple[str, ...], ...] = ()
    source: str = "fcn-jax"
    source_sha256: str | None = None
    palette: tuple[tuple[int, int, int], ...] | None = None
    eval_resize: int | None = None

    def __post_init__(self) -> None:
        counts = [len(names) for names in (self.class_names, *self.head_class_names)]
        if counts != [n for _, n in self.spec.heads]:
            if len(self.spec.heads) == 1:
                raise FCNError(
                    f"metadata has {counts[0]} class_names for n_class={self.spec.n_class}"
                )
            raise FCNError(
                f"metadata has {counts} class names for heads {self.spec.heads} "
                "(one name per class of each head)"
            )
        if self.palette is not None and (
            len(self.palette) != self.n_class or any(len(c) != 3 for c in self.palette)
        ):
            raise FCNError(f"metadata palette must hold {self.n_class} RGB triples")
        if self.eval_resize is not None and (
            isinstance(self.eval_resize, bool)
            or not isinstance(self.eval_resize, int)
            or self.eval_resize < 1
        ):
            raise FCNError(
                f"metadata eval_resize must be a positive integer (a shorter side in pixels) or "
                f"absent, not {self.eval_resize!r}"
            )

    # The spec's fields every tool reads, by their metadata names.
    arch = property(lambda self: self.spec.arch, doc="The head variant (``fcn8s``, ...).")
    n_class = property(lambda self: self.spec.n_class, doc="Classes of the first head.")
    width = property(lambda self: self.spec.width, doc="Channel multiplier of the network.")
    inputs = property(lambda self: self.spec.inputs, doc="Record keys read, one per stream.")
    streams = property(lambda self: self.spec.streams, doc="Stream suffixes, if several.")
    preprocessing = property(
        lambda self: self.spec.preprocessing[0], doc="The first input's normalisation."
    )

    @property
    def head_classes(self) -> dict[str, tuple[str, ...]]:
        """Class names of each output, by output key (``out`` for a one-head network)."""
        names = (self.class_names, *self.head_class_names)
        return dict(zip(self.spec.head_names, names, strict=True))

    def palette_array(self) -> np.ndarray:
        """[256, 3] uint8 colours: the metadata's per-class colours over VOC's colour map."""
        colours = voc_palette().copy()
        if self.palette is not None:
            colours[: len(self.palette)] = np.asarray(self.palette, np.uint8)
        return colours

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict, in the layout every fcn-jax release has written (plus ``backbone``).

        ``n_class`` / ``class_names`` / ``preprocessing`` describe the first head and input;
        ``heads`` lists output names only for a multi-head network, whose other heads' classes
        are ``head_class_names``; ``input_preprocessing`` normalises ``inputs[1:]``.
        """
        spec = self.spec
        return {
            "arch": spec.arch,
            "backbone": spec.backbone,
            "n_class": spec.n_class,
            "class_names": list(self.class_names),
            "width": spec.width,
            "preprocessing": spec.preprocessing[0].to_dict(),
            "source": self.source,
            "source_sha256": self.source_sha256,
            "palette": None if self.palette is None else [list(c) for c in self.palette],
            "inputs": list(spec.inputs),
            "input_preprocessing": [p.to_dict() for p in spec.preprocessing[1:]],
            "streams": list(spec.streams),
            "heads": list(spec.head_names) if len(spec.heads) > 1 else [],
            "head_class_names": [list(names) for names in self.head_class_names],
            # Only where the upsampling learns (SpeedPaper's): older layouts stay as they were.
            **({"learn_upsampling": True} if spec.learn_upsampling else {}),
            # Only where an FCN-ResNet has its auxiliary head.
            **({"aux": True} if spec.aux else {}),
            # Only where the weights come with an evaluation resize (torchvision's: 520).
            **({"eval_resize": self.eval_resize} if self.eval_resize is not None else {}),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any], where: str = "metadata") -> WeightsMetadata:
        """Parse and validate; errors name ``where`` and the offending key.

        Directories written before ``backbone`` was stored are VGG16 networks.
        """
        missing = [k for k in METADATA_KEYS if k not in d]
        if missing:
            raise FCNError(f"{where} lacks {missing} (has {sorted(d)})")
        try:
            class_names = tuple(str(c) for c in d["class_names"])
            head_class_names = tuple(
                tuple(str(n) for n in h) for h in d.get("head_class_names", ())
            )
            names = [str(h) for h in d.get("heads", ())] or [SINGLE_HEAD]
            counts = [int(d["n_class"]), *(len(h) for h in head_class_names)]
            if len(names) != len(counts):
                raise FCNError(f"heads {names} need class names for each head")
            spec = NetSpec(
                arch=str(d["arch"]),
                heads=tuple(zip(names, counts, strict=True)),
                backbone=str(d.get("backbone", "vgg16")),
                streams=tuple(d.get("streams", ())),
                inputs=tuple(d.get("inputs", ("image",))),
                preprocessing=(
                    Preprocessing.from_dict(d["preprocessing"]),
                    *(Preprocessing.from_dict(p) for p in d.get("input_preprocessing", ())),
                ),
                width=float(d["width"]),
                learn_upsampling=bool(d.get("learn_upsampling", False)),
                aux=bool(d.get("aux", False)),
            )
            palette = d.get("palette")
            return cls(
                spec=spec,
                class_names=class_names,
                head_class_names=head_class_names,
                source=str(d.get("source", "fcn-jax")),
                source_sha256=d.get("source_sha256"),
                palette=None
                if palette is None
                else tuple(tuple(int(v) for v in c) for c in palette),
                eval_resize=d.get("eval_resize"),
            )
        except FCNError as e:
            raise FCNError(f"{where}: {e}") from None


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _manager(directory: Path, **options: Any) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
        directory.absolute(), item_names=ITEMS, options=ocp.CheckpointManagerOptions(**options)
    )


def weights_args(variables: Variables, metadata: WeightsMetadata) -> dict[str, Any]:
    """The orbax save arguments of a weights directory's items (training adds its own)."""
    if "params" not in variables:
        raise ValueError(f"variables need a 'params' collection, got {sorted(variables)}")
    args = {
        "params": ocp.args.StandardSave(variables["params"]),
        "metadata": ocp.args.JsonSave(metadata.to_json()),
    }
    state = model_state(variables)
    if state:
        args["model_state"] = ocp.args.StandardSave(state)
    return args


def save_weights(
    directory: str | Path,
    variables: Variables,
    metadata: WeightsMetadata,
    step: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write ``variables`` and ``metadata`` as step ``step`` of the weights directory.

    Args:
        directory: output directory; must not already hold checkpoints unless ``overwrite``.
        variables: ``{"params": ..., <other collections>}`` (numpy or jax arrays).
        metadata: what the variables are.
        step: checkpoint step.
        overwrite: replace existing checkpoints in ``directory``.

    Returns:
        The directory.
    """
    directory = Path(directory)
    if directory.exists() and any(directory.iterdir()):
        if not overwrite:
            raise FCNError(
                f"{directory} already exists and is not empty: choose another --out or "
                "pass --overwrite"
            )
        with _manager(directory) as old:
            for s in old.all_steps():
                old.delete(s)
    with _manager(directory) as manager:
        manager.save(step, args=ocp.args.Composite(**weights_args(variables, metadata)))
        manager.wait_until_finished()
    return directory


def _step_folder(path: Path) -> Path | None:
    """The step folder (``run/40``) that ``path`` is or lies in (``run/40/params``), if any.

    A step folder is named by its step and holds the items of :data:`ITEMS`: what a user who
    browses a training workdir finds and passes instead of the workdir itself.
    """
    for p in (path, path.parent):
        if p.name.isdigit() and any((p / item).is_dir() for item in ITEMS):
            return p
    return None


def _not_a_step_folder(directory: Path) -> None:
    """Fail, saying how to name it, if ``directory`` is (in) one step of a weights directory."""
    folder = _step_folder(directory)
    if folder is not None:
        step = int(folder.name)
        raise FCNError(
            f"{directory} is step {step} of the weights directory {folder.parent}, not a "
            f"weights directory: give the directory and the step, --weights {folder.parent} "
            f"--step {step}"
        )


def _latest_step(manager: ocp.CheckpointManager, directory: Path, step: int | None) -> int:
    steps = manager.all_steps()
    if not steps:
        _not_a_step_folder(directory)
        raise FCNError(
            f"{directory} holds no checkpoint: give a weights directory written by "
            "convert_torch_weights.py or train.py"
        )
    if step is None:
        return max(steps)
    if step not in steps:
        raise FCNError(f"{directory} has no step {step}; it has steps {sorted(steps)}")
    return step


def _check_dir(directory: Path) -> None:
    if not directory.is_dir():
        what = "is a file, not a weights directory" if directory.exists() else "does not exist"
        raise FCNError(f"weights directory {directory} {what}")


def best_step(directory: str | Path) -> int:
    """The step of a training workdir with the best validation mean IU."""
    directory = Path(directory)
    _check_dir(directory)
    options = ocp.CheckpointManagerOptions(best_fn=lambda m: m["mean_iou"], best_mode="max")
    with ocp.CheckpointManager(directory.absolute(), options=options) as manager:
        step = manager.best_step()
    if step is None:
        _not_a_step_folder(directory)
        raise FCNError(f"{directory} has no checkpoint with validation metrics: use --step")
    return step


def load_metadata(directory: str | Path, step: int | None = None) -> WeightsMetadata:
    """Read the metadata of a weights directory."""
    directory = Path(directory)
    _check_dir(directory)
    with _manager(directory) as manager:
        step = _latest_step(manager, directory, step)
        restored = manager.restore(step, args=ocp.args.Composite(metadata=ocp.args.JsonRestore()))
    return WeightsMetadata.from_json(restored.metadata, where=f"{directory} metadata")


def _stored_tree(directory: Path, step: int, item: str) -> dict[str, Any] | None:
    """Shapes and dtypes of one item of a step, as written (None if the step lacks it)."""
    path = directory.absolute() / str(step) / item
    if not path.is_dir():
        return None
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)  # reading an item's metadata directly warns about the step's
    try:
        with ocp.StandardCheckpointer() as reader:
            return dict(reader.metadata(path).item_metadata.tree)
    finally:
        absl.setLevel(level)


def _check_item(where: str, stored: PyTree, expected: PyTree, what: str) -> None:
    flat = traverse_util.flatten_dict
    check_keys_and_shapes(
        where,
        {k: tuple(v.shape) for k, v in flat(stored, sep=".").items()},
        {k: tuple(v.shape) for k, v in flat(expected, sep=".").items()},
        what,
    )


def load_weights(
    directory: str | Path, step: int | None = None, as_numpy: bool = False
) -> tuple[Variables, WeightsMetadata]:
    """Read the model's variables and metadata from a weights directory.

    The stored shapes are checked against the model the metadata describes, so a mismatch is
    reported by layer and shape instead of failing deep inside a forward pass; then the
    variables are restored against a single-device target, whatever devices wrote them (orbax
    refuses a bare restore across topologies).

    Args:
        directory: the weights directory.
        step: which step (latest by default).
        as_numpy: return numpy arrays exactly as stored (for exporting) instead of device arrays.

    Returns:
        (``{"params": ..., <other collections, e.g. batch_stats>}``, metadata).

    Raises:
        FCNError: no such directory or step, shapes that are not the metadata's network, or a
            network with BatchNorm whose step lacks its statistics.
    """
    directory = Path(directory)
    metadata = load_metadata(directory, step)
    what = (
        f"a {metadata.arch} ({metadata.spec.backbone}) with n_class={metadata.n_class}, "
        f"width={metadata.width:g} (as its metadata says)"
    )
    expected = abstract_variables(metadata.spec)
    with _manager(directory) as manager:
        step = _latest_step(manager, directory, step)
        where = f"{directory} (step {step})"
        stored = {"params": _stored_tree(directory, step, "params")}
        _check_item(f"params in {where}", stored["params"], expected["params"], what)
        state = model_state(expected)
        if state:
            stored["model_state"] = _stored_tree(directory, step, "model_state")
            if stored["model_state"] is None:
                raise FCNError(
                    f"{where} has no model_state item: {what} needs its BatchNorm statistics "
                    f"({sorted(state)}); save the weights with them (save_weights(dir, "
                    "variables, ...) with the whole variables dict)"
                )
            _check_item(f"model_state in {where}", stored["model_state"], state, what)
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        targets = {
            item: ocp.args.StandardRestore(
                jax.tree.map(
                    lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=device),
                    tree,
                )
            )
            for item, tree in stored.items()
        }
        restored = manager.restore(step, args=ocp.args.Composite(**targets))
    variables = {"params": restored.params, **(restored.model_state if state else {})}
    return (jax.device_get(variables) if as_numpy else variables), metadata
