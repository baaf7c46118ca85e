"""The weights directory: the one on-disk format every fcn-jax tool reads and writes.

An orbax ``CheckpointManager`` directory whose steps hold two items:

- ``params``: the Flax params pytree (tensorstore arrays; loading never unpickles or runs code);
- ``metadata``: JSON with ``arch``, ``n_class``, ``class_names``, ``width``, ``preprocessing``
  (numbers, see :class:`~fcn_jax.preprocessing.Preprocessing`), ``source`` and
  ``source_sha256``.

Conversion writes a single step (0); training writes one per snapshot into the same layout, so
a training workdir is a weights directory too. Loading takes the latest step unless told.
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
from fcn_jax.models import FCN, VARIANTS, abstract_params
from fcn_jax.preprocessing import Preprocessing
from fcn_jax.resources import voc_palette
from fcn_jax.strict import check_keys_and_shapes
from fcn_jax.types import PyTree

ITEMS = ("params", "metadata")
METADATA_KEYS = ("arch", "n_class", "class_names", "width", "preprocessing")


@dataclasses.dataclass(frozen=True)
class WeightsMetadata:
    """What a weights directory says about its params.

    Attributes:
        arch: FCN variant (``fcn32s``, ``fcn16s``, ``fcn8s``, ``fcn8s-atonce``).
        n_class: number of classes.
        class_names: one name per class.
        width: channel multiplier of the network (1.0 is the paper's).
        preprocessing: the input normalisation these weights expect.
        source: where the params came from (``torchfcn``, ``torchvision_vgg16``, ``fcn-jax``).
        source_sha256: SHA-256 of the source file, if converted.
        palette: optional RGB colour per class (the dataset's); VOC's colour map otherwise.
        inputs: the record keys the network reads, one per stream (``("image", "hha")``).
        input_preprocessing: the normalisation of ``inputs[1:]`` (``preprocessing`` is that of
            ``inputs[0]``).
        streams: stream suffixes of a multi-stream FCN (``("color", "hha")``).
        heads: output suffixes of a multi-head FCN (``("sem", "geo")``); ``n_class`` and
            ``class_names`` describe the first, ``head_class_names`` the others.
        head_class_names: class names of ``heads[1:]``.
    """

    arch: str
    n_class: int
    class_names: tuple[str, ...]
    width: float
    preprocessing: Preprocessing
    source: str = "fcn-jax"
    source_sha256: str | None = None
    palette: tuple[tuple[int, int, int], ...] | None = None
    inputs: tuple[str, ...] = ("image",)
    input_preprocessing: tuple[Preprocessing, ...] = ()
    streams: tuple[str, ...] = ()
    heads: tuple[str, ...] = ()
    head_class_names: tuple[tuple[str, ...], ...] = ()

    def __post_init__(self) -> None:
        if self.arch not in VARIANTS:
            raise FCNError(f"metadata arch {self.arch!r} is not one of {sorted(VARIANTS)}")
        if len(self.class_names) != self.n_class:
            raise FCNError(
                f"metadata has {len(self.class_names)} class_names for n_class={self.n_class}"
            )
        if self.palette is not None and (
            len(self.palette) != self.n_class or any(len(c) != 3 for c in self.palette)
        ):
            raise FCNError(f"metadata palette must hold {self.n_class} RGB triples")
        if (
            len(self.inputs) != max(len(self.streams), 1)
            or len(self.input_preprocessing) != len(self.inputs) - 1
        ):
            raise FCNError(
                f"metadata inputs {self.inputs} do not match streams {self.streams} and "
                f"{len(self.input_preprocessing)} extra preprocessing entries"
            )
        if self.heads and len(self.head_class_names) != len(self.heads) - 1:
            raise FCNError(f"metadata heads {self.heads} need class names for each head")

    @property
    def head_classes(self) -> dict[str, tuple[str, ...]]:
        """Class names of each output (key ``""`` for a single-head network)."""
        if not self.heads:
            return {"": self.class_names}
        return dict(zip(self.heads, (self.class_names, *self.head_class_names), strict=True))

    def mean_pixels(self) -> tuple[tuple[str, tuple[int, int, int]], ...]:
        """``(input key, RGB mean pixel)`` per input: the padding that normalises to zero."""
        steps = (self.preprocessing, *self.input_preprocessing)
        return tuple((k, p.mean_pixel()) for k, p in zip(self.inputs, steps, strict=True))

    def preprocess(self, batch: Mapping[str, Any]) -> Any:
        """Normalise the network's inputs from a batch of uint8 records.

        Returns:
            [N, H, W, 3] float32, or a tuple of them (one per stream) for a multi-stream net.
        """
        steps = (self.preprocessing, *self.input_preprocessing)
        xs = tuple(p.apply(batch[key]) for key, p in zip(self.inputs, steps, strict=True))
        return xs if self.streams else xs[0]

    def palette_array(self) -> np.ndarray:
        """[256, 3] uint8 colours: the metadata's per-class colours over VOC's colour map."""
        colours = voc_palette().copy()
        if self.palette is not None:
            colours[: len(self.palette)] = np.asarray(self.palette, np.uint8)
        return colours

    def model(self, **overrides: Any) -> FCN:
        """The FCN these params belong to (``overrides``: dtype, learn_upsampling, ...)."""
        heads = tuple((h, len(names)) for h, names in self.head_classes.items() if self.heads)
        return FCN(
            variant=self.arch,
            n_class=self.n_class,
            width=self.width,
            streams=self.streams,
            heads=heads,
            **overrides,
        )

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        d = dataclasses.asdict(self)
        d["class_names"] = list(self.class_names)
        d["preprocessing"] = self.preprocessing.to_dict()
        d["palette"] = None if self.palette is None else [list(c) for c in self.palette]
        d["inputs"] = list(self.inputs)
        d["input_preprocessing"] = [p.to_dict() for p in self.input_preprocessing]
        d["streams"] = list(self.streams)
        d["heads"] = list(self.heads)
        d["head_class_names"] = [list(names) for names in self.head_class_names]
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any], where: str = "metadata") -> WeightsMetadata:
        """Parse and validate; errors name ``where`` and the offending key."""
        missing = [k for k in METADATA_KEYS if k not in d]
        if missing:
            raise FCNError(f"{where} lacks {missing} (has {sorted(d)})")
        try:
            return cls(
                arch=str(d["arch"]),
                n_class=int(d["n_class"]),
                class_names=tuple(str(c) for c in d["class_names"]),
                width=float(d["width"]),
                preprocessing=Preprocessing.from_dict(d["preprocessing"]),
                source=str(d.get("source", "fcn-jax")),
                source_sha256=d.get("source_sha256"),
                palette=(
                    None
                    if d.get("palette") is None
                    else tuple(tuple(int(v) for v in c) for c in d["palette"])
                ),
                inputs=tuple(d.get("inputs", ("image",))),
                input_preprocessing=tuple(
                    Preprocessing.from_dict(p) for p in d.get("input_preprocessing", ())
                ),
                streams=tuple(d.get("streams", ())),
                heads=tuple(d.get("heads", ())),
                head_class_names=tuple(tuple(n) for n in d.get("head_class_names", ())),
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


def save_weights(
    directory: str | Path,
    params: PyTree,
    metadata: WeightsMetadata,
    step: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write ``params`` and ``metadata`` as step ``step`` of the weights directory.

    Args:
        directory: output directory; must not already hold checkpoints unless ``overwrite``.
        params: Flax params pytree (numpy or jax arrays).
        metadata: what the params are.
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
        manager.save(
            step,
            args=ocp.args.Composite(
                params=ocp.args.StandardSave(params),
                metadata=ocp.args.JsonSave(metadata.to_json()),
            ),
        )
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


def load_weights(
    directory: str | Path, step: int | None = None, as_numpy: bool = False
) -> tuple[PyTree, WeightsMetadata]:
    """Read params and metadata from a weights directory.

    The stored shapes are checked against the model the metadata describes, so a mismatch is
    reported by layer and shape instead of failing deep inside a forward pass; then the params
    are restored against a single-device target, whatever devices wrote them (orbax refuses a
    bare restore across topologies).

    Args:
        directory: the weights directory.
        step: which step (latest by default).
        as_numpy: return numpy arrays exactly as stored (for exporting) instead of device arrays.

    Returns:
        (params, metadata).
    """
    directory = Path(directory)
    metadata = load_metadata(directory, step)
    with _manager(directory) as manager:
        step = _latest_step(manager, directory, step)
        absl = logging.getLogger("absl")
        level = absl.level
        absl.setLevel(logging.ERROR)  # reading an item's metadata directly warns about the step's
        try:
            with ocp.StandardCheckpointer() as reader:
                item = directory.absolute() / str(step) / "params"
                stored = reader.metadata(item).item_metadata
        finally:
            absl.setLevel(level)
        stored = dict(stored.tree)
        expected = traverse_util.flatten_dict(abstract_params(metadata.model()), sep=".")
        check_keys_and_shapes(
            f"params in {directory} (step {step})",
            {k: tuple(v.shape) for k, v in traverse_util.flatten_dict(stored, sep=".").items()},
            {k: tuple(v.shape) for k, v in expected.items()},
            f"a {metadata.arch} with n_class={metadata.n_class}, width={metadata.width:g} "
            "(as its metadata says)",
        )
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        target = jax.tree.map(
            lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=device), stored
        )
        restored = manager.restore(
            step, args=ocp.args.Composite(params=ocp.args.StandardRestore(target))
        )
    params = restored.params
    return (jax.device_get(params) if as_numpy else params), metadata


# orbax logs every save/restore at INFO through absl; keep CLIs readable.
logging.getLogger("absl").setLevel(logging.WARNING)
