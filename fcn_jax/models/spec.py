"""``NetSpec``: the one description of a network, and the functions built from it.

A spec names everything that decides a network's computation: the head variant (``arch``), the
backbone, the outputs (``heads``), the inputs and their preprocessing, the streams, the width,
the compute dtype and the convolution implementation. Configs produce one
(:func:`fcn_jax.configs.spec_from_config`), a weights directory stores one with its provenance
(:class:`fcn_jax.checkpoint.WeightsMetadata`), converters emit one, and every tool that runs a
network runs it through one:

- :meth:`NetSpec.module` builds the Flax module;
- :meth:`NetSpec.logits` preprocesses uint8 records and applies the module, returning
  ``{head: logits}`` whatever the network (one head, several heads, several streams);
- :func:`predict_fn` is that, jitted and cached per spec: training's samples, evaluation,
  inference and bench all call it (or trace :meth:`NetSpec.logits` inside their own step).

Model variables are one collection dict (``{"params": ..., <other collections>}``) everywhere,
so a backbone that carries state (BatchNorm statistics) travels through the same functions.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from fcn_jax.errors import FCNError
from fcn_jax.models.backbones import BACKBONES
from fcn_jax.models.conv import CONV_IMPLS
from fcn_jax.models.fcn import FCN, SINGLE_HEAD, VARIANTS
from fcn_jax.models.fcn_resnet import FCNResNet
from fcn_jax.models.layers import bilinear_init
from fcn_jax.models.speedpaper import STRIDE, SpeedPaperFCN
from fcn_jax.preprocessing import CAFFE_VOC, Preprocessing
from fcn_jax.types import Array, PyTree

COMPUTE_DTYPES = ("float32", "bfloat16")
Variables = dict[str, PyTree]  # {"params": ..., and any other collection}
SPEEDPAPER = "speedpaper"  # SpeedPaper's FCN (fcn_jax.models.speedpaper), on vgg16_bn
# torchvision's FCN-ResNets (fcn_jax.models.fcn_resnet): arch -> the backbone it stands on.
RESNET_ARCHS = {"fcn_resnet50": "resnet50", "fcn_resnet101": "resnet101"}
ARCHS = (*VARIANTS, SPEEDPAPER, *RESNET_ARCHS)  # every value of NetSpec.arch
# Module attributes a step may set besides the spec's (how it trains, not what it computes).
TRAINING_OVERRIDES = ("dropout_rate", "freeze_bn", "bn_axis_name")


def is_upsampling(layer: str) -> bool:
    """Whether a top-level layer is a transposed convolution (bilinear at init)."""
    return layer.startswith(("upscore", "upsample_"))


@dataclasses.dataclass(frozen=True)
class NetSpec:
    """Everything that decides what a network computes.

    Attributes:
        arch: the head variant: ``fcn32s``, ``fcn16s``, ``fcn8s`` or ``fcn8s-atonce`` (on
            ``vgg16`` or ``vgg16_bn``); ``speedpaper`` (SpeedPaper's FCN, whose backbone is
            ``vgg16_bn``); or ``fcn_resnet50`` / ``fcn_resnet101`` (torchvision's FCNs, on
            ``resnet50`` / ``resnet101``).
        heads: ``(name, n_class)`` of every output, e.g. ``(("out", 21),)`` for the paper's
            single output (:meth:`single`) or ``(("sem", 33), ("geo", 3))`` for SIFT Flow.
        backbone: a key of :data:`~fcn_jax.models.backbones.BACKBONES`.
        streams: stream suffixes of a late-fusion net (``("color", "hha")``); empty for one.
        inputs: the record keys the network reads, one per stream (``("image", "hha")``).
        preprocessing: the normalisation of each input, in ``inputs`` order.
        width: channel multiplier of every hidden layer (1.0 is the paper's network).
        dtype: compute dtype, ``float32`` or ``bfloat16`` (params stay float32).
        learn_upsampling: whether the transposed convolutions learn (frozen bilinear otherwise).
        conv_impl: ``auto``, ``xla`` or ``gemm`` (:func:`~fcn_jax.models.conv.resolve_conv_impl`).
        aux: an FCN-ResNet's auxiliary head on layer3 exists (output ``aux``, besides the
            ``out`` that ``heads`` describes: a training loss, not a scored head).
    """

    arch: str = "fcn8s"
    heads: tuple[tuple[str, int], ...] = ((SINGLE_HEAD, 21),)
    backbone: str = "vgg16"
    streams: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ("image",)
    preprocessing: tuple[Preprocessing, ...] = (CAFFE_VOC,)
    width: float = 1.0
    dtype: str = "float32"
    learn_upsampling: bool = False
    conv_impl: str = "auto"
    aux: bool = False

    def __post_init__(self) -> None:
        checks = {
            "arch": (self.arch, ARCHS),
            "backbone": (self.backbone, BACKBONES),
            "dtype": (self.dtype, COMPUTE_DTYPES),
            "conv_impl": (self.conv_impl, CONV_IMPLS),
        }
        for key, (value, valid) in checks.items():
            if value not in valid:
                raise FCNError(f"network {key} {value!r} is not one of {sorted(valid)}")
        names = [h for h, _ in self.heads]
        if not self.heads or len(set(names)) != len(names) or any(n < 1 for _, n in self.heads):
            raise FCNError(f"network heads {self.heads}: give distinct names, >= 1 class each")
        if self.streams and len(self.heads) > 1:
            raise FCNError("a network has either several streams or several heads, not both")
        if self.arch == SPEEDPAPER and (
            self.backbone != "vgg16_bn" or self.streams or len(self.heads) > 1
        ):
            raise FCNError(
                "network arch 'speedpaper' has one input, one head and backbone vgg16_bn"
            )
        self._check_backbone()
        if not (len(self.inputs) == max(len(self.streams), 1) == len(self.preprocessing)):
            raise FCNError(
                f"network inputs {self.inputs} need one per stream {self.streams} and one "
                f"preprocessing each (got {len(self.preprocessing)})"
            )

    def _check_backbone(self) -> None:
        """Each head on the backbones it stands on; an FCN-ResNet's own options."""
        if self.arch in RESNET_ARCHS:
            backbone = RESNET_ARCHS[self.arch]
            if self.backbone != backbone or self.streams or len(self.heads) > 1:
                raise FCNError(
                    f"network arch {self.arch!r} has one input, one head (plus the optional "
                    f"aux) and backbone {backbone}, not {self.backbone}"
                )
            if self.learn_upsampling:
                raise FCNError(
                    f"network arch {self.arch!r} resizes its scores bilinearly: it has no "
                    "upsampling to learn (learn_upsampling must be False)"
                )
            return
        if self.aux:
            raise FCNError(
                f"network aux: only the FCN-ResNets ({', '.join(RESNET_ARCHS)}) have an "
                f"auxiliary head, not arch {self.arch!r}"
            )
        # The paper's head reads the features a backbone's TAPS name (the ResNets have none).
        if self.arch in VARIANTS and not hasattr(BACKBONES[self.backbone], "TAPS"):
            taps = sorted(k for k, v in BACKBONES.items() if hasattr(v, "TAPS"))
            suggestion = {v: k for k, v in RESNET_ARCHS.items()}.get(self.backbone)
            raise FCNError(
                f"network arch {self.arch!r} (the paper's head) stands on a backbone with "
                f"skip taps ({', '.join(taps)}), not {self.backbone}"
                + (f": backbone {self.backbone} goes with arch {suggestion}" if suggestion else "")
            )

    @classmethod
    def single(cls, arch: str, n_class: int, **fields: Any) -> NetSpec:
        """A one-output network of ``n_class`` classes (output key ``out``)."""
        return cls(arch=arch, heads=((SINGLE_HEAD, n_class),), **fields)

    @property
    def n_class(self) -> int:
        """Classes of the first head (the only one, except SIFT Flow's)."""
        return self.heads[0][1]

    @property
    def head_names(self) -> tuple[str, ...]:
        """Output keys, in order: ``("out",)`` or ``("sem", "geo")``."""
        return tuple(h for h, _ in self.heads)

    def replace(self, **changes: Any) -> NetSpec:
        """This spec with some fields changed (``spec.replace(dtype="bfloat16")``)."""
        return dataclasses.replace(self, **changes)

    @property
    def batch_norm(self) -> bool:
        """Whether the network has BatchNorm (its variables hold ``batch_stats``)."""
        return bool(getattr(BACKBONES[self.backbone], "BATCH_NORM", False))

    def module(self, **overrides: Any) -> FCN | SpeedPaperFCN | FCNResNet:
        """The Flax module (``overrides``: :data:`TRAINING_OVERRIDES`, e.g. ``freeze_bn``)."""
        unknown = set(overrides) - set(TRAINING_OVERRIDES)
        if unknown:
            raise ValueError(f"module overrides {sorted(unknown)}: only {TRAINING_OVERRIDES}")
        if self.arch == SPEEDPAPER:
            overrides.pop("dropout_rate", None)  # it has no dropout
            return SpeedPaperFCN(
                n_class=self.n_class,
                width=self.width,
                dtype=jnp.dtype(self.dtype),
                learn_upsampling=self.learn_upsampling,
                conv_impl=self.conv_impl,
                **overrides,
            )
        if self.arch in RESNET_ARCHS:
            return FCNResNet(
                n_class=self.n_class,
                backbone=self.backbone,
                aux=self.aux,
                width=self.width,
                dtype=jnp.dtype(self.dtype),
                conv_impl=self.conv_impl,
                **overrides,
            )
        return FCN(
            variant=self.arch,
            heads=self.heads,
            width=self.width,
            dtype=jnp.dtype(self.dtype),
            learn_upsampling=self.learn_upsampling,
            streams=self.streams,
            backbone=self.backbone,
            conv_impl=self.conv_impl,
            **overrides,
        )

    @property
    def backbone_scopes(self) -> tuple[str, ...]:
        """Top-level param names of the backbone(s): ``vgg16``, or one per stream."""
        return tuple(f"{self.backbone}{s}" for s in self.streams or ("",))

    @property
    def input_multiple(self) -> int:
        """What the input sides must be a multiple of (1: any size; SpeedPaper's FCN: 32)."""
        return STRIDE if self.arch == SPEEDPAPER else 1

    def pad_inputs(self, batch: Mapping[str, Any]) -> tuple[dict[str, Any], tuple[int, int]]:
        """``batch`` with its inputs padded to :attr:`input_multiple`, and their (H, W).

        Padding goes below and to the right, with each input's mean pixel (zero after
        normalisation), so cropping the logits back leaves the image's own pixels aligned.
        """
        h, w = batch[self.inputs[0]].shape[1:3]
        m = self.input_multiple
        if h % m == 0 and w % m == 0:
            return dict(batch), (h, w)
        padded = dict(batch)
        for key, pixel in self.mean_pixels():
            x = jnp.asarray(batch[key])
            # m * ceil(side / m), written so that jax.export can prove a symbolic side a
            # multiple of m (``side + -side % m`` is the same number, but not to its algebra).
            shape = (x.shape[0], m * ((h + m - 1) // m), m * ((w + m - 1) // m), x.shape[3])
            canvas = jnp.broadcast_to(jnp.asarray(pixel, x.dtype), shape)
            padded[key] = jax.lax.dynamic_update_slice(canvas, x, (0, 0, 0, 0))
        return padded, (h, w)

    def preprocess(self, batch: Mapping[str, Any]) -> tuple[Array, ...]:
        """Normalise the network's inputs of a batch of uint8 records, one array per input.

        Args:
            batch: holds each key of ``inputs``: [N, H, W, 3] uint8 (on the host or device).

        Returns:
            One [N, H, W, 3] float32 array per input, in ``inputs`` order.
        """
        return tuple(
            p.apply(batch[k]) for k, p in zip(self.inputs, self.preprocessing, strict=True)
        )

    def mean_pixels(self) -> tuple[tuple[str, tuple[int, int, int]], ...]:
        """``(input key, RGB mean pixel)`` per input: the padding that normalises to zero."""
        return tuple(
            (k, p.mean_pixel()) for k, p in zip(self.inputs, self.preprocessing, strict=True)
        )

    def apply(
        self,
        variables: Variables,
        inputs: tuple[Array, ...],
        *,
        overrides: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        """The module on preprocessed inputs (one per stream): ``{head: logits}``.

        ``overrides`` go to :meth:`module`; ``kwargs`` to ``module.apply`` (``train``, ``rngs``,
        ``mutable``: with it the result is ``(outputs, updated collections)``).
        """
        x = inputs if self.streams else inputs[0]
        return self.module(**(overrides or {})).apply(variables, x, **kwargs)

    def logits(self, variables: Variables, batch: Mapping[str, Any], **kwargs: Any) -> Any:
        """Preprocess ``batch``'s uint8 inputs and run the network: ``{head: [N, H, W, C]}``.

        Any input size: where the network needs sides of a multiple (SpeedPaper's FCN), the
        inputs are padded with the mean pixel (:meth:`pad_inputs`) and the logits cropped back.
        Only the outputs of :attr:`heads` are returned (an FCN-ResNet's training-only ``aux``
        is not, and is not computed under ``jit``). Traceable: jit it, or call it inside a
        jitted step. ``kwargs`` as :meth:`apply`.
        """
        padded, (h, w) = self.pad_inputs(batch)
        out = self.apply(variables, self.preprocess(padded), **kwargs)
        crop = lambda heads: {k: heads[k][:, :h, :w] for k in self.head_names}  # noqa: E731
        return (crop(out[0]), *out[1:]) if isinstance(out, tuple) else crop(out)


def model_state(variables: Variables) -> Variables:
    """Every collection but ``params``: ``{"batch_stats": ...}`` with BatchNorm, else ``{}``."""
    return {k: v for k, v in variables.items() if k != "params"}


def _init_fn(spec: NetSpec) -> Callable[[jax.Array, tuple], Variables]:
    module = spec.module()
    return lambda key, x: module.init(key, x if spec.streams else x[0])


def init_variables(
    spec: NetSpec, key: jax.Array, image_shape: tuple[int, int] = (32, 32)
) -> Variables:
    """Initial variables of ``spec``'s network (score layers zero, upsampling bilinear).

    Args:
        spec: the network.
        key: PRNG key.
        image_shape: (H, W) of the dummy input; the variables do not depend on it.

    Returns:
        ``{"params": ...}`` (plus any other collection the backbone keeps).
    """
    dummy = jnp.zeros((1, *image_shape, 3), jnp.float32)
    return dict(jax.jit(_init_fn(spec))(key, (dummy,) * len(spec.inputs)))


def abstract_variables(spec: NetSpec) -> Variables:
    """Shapes and dtypes of ``spec``'s variables, without allocating or computing anything."""
    dummy = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    return dict(jax.eval_shape(_init_fn(spec), jax.random.key(0), (dummy,) * len(spec.inputs)))


def initial_head_params(spec: NetSpec, abstract: PyTree, seed: int = 0) -> PyTree:
    """Initial values of every layer outside the backbone, as ``init`` would set them.

    Upsampling kernels are bilinear and the paper's score layers zero, whatever the key;
    SpeedPaper's 1x1 convolutions are drawn as torch draws them (uniform, variance
    1 / (3 fan_in), zero bias) from ``seed``; an FCN-ResNet's heads as torchvision's
    ``FCNHead`` is initialised (:func:`torch_default_head`). Converting a backbone's weights
    into an FCN thus does not need to run (and compile) a full-width ``init``.

    Args:
        spec: the network.
        abstract: its params or their shapes (``abstract_variables(spec)["params"]``).
        seed: NumPy seed of the random layers (SpeedPaper's).

    Returns:
        ``{layer: {leaf: array}}`` for every top-level layer except the backbone(s).
    """
    rng = np.random.default_rng(seed)
    head = {}
    for layer, leaves in abstract.items():
        if layer in spec.backbone_scopes:
            continue
        if spec.arch in RESNET_ARCHS:
            head[layer] = torch_default_head(leaves, rng)
        elif is_upsampling(layer):
            head[layer] = {"kernel": bilinear_init(None, leaves["kernel"].shape)}
        elif spec.arch == SPEEDPAPER:
            shape = leaves["kernel"].shape
            bound = 1 / np.sqrt(np.prod(shape[:-1]))
            kernel = rng.uniform(-bound, bound, shape).astype(np.float32)
            head[layer] = {"kernel": jnp.asarray(kernel), "bias": jnp.zeros(shape[-1:])}
        else:
            head[layer] = {k: jnp.zeros(v.shape, v.dtype) for k, v in leaves.items()}
    return head


def torch_default_head(leaves: PyTree, rng: np.random.Generator) -> PyTree:
    """A head's params as torch's default init sets them (torchvision's ``FCNHead`` keeps it).

    Convolutions: ``kaiming_uniform_(a=sqrt(5))``, i.e. U(+-1/sqrt(fan_in)), and their biases
    U(+-1/sqrt(fan_in)) too; BatchNorm: scale 1, bias 0 (its running statistics, mean 0 and
    variance 1, are not params). Drawn in NumPy, module by module in sorted name order.

    Args:
        leaves: ``{module: {leaf: array or shape struct}}`` of one head (``classifier``).
        rng: NumPy generator the values are drawn from.
    """
    out = {}
    for name in sorted(leaves):
        module = leaves[name]
        if "scale" in module:  # BatchNorm
            out[name] = {k: jnp.full(v.shape, k == "scale", jnp.float32) for k, v in module.items()}
            continue
        shape = module["kernel"].shape
        bound = 1 / np.sqrt(np.prod(shape[:-1]))
        out[name] = {"kernel": jnp.asarray(rng.uniform(-bound, bound, shape).astype(np.float32))}
        if "bias" in module:
            bias = rng.uniform(-bound, bound, shape[-1:]).astype(np.float32)
            out[name]["bias"] = jnp.asarray(bias)
    return out


def random_variables(spec: NetSpec, seed: int = 0) -> Variables:
    """He-normal backbone, zero biases and the initial head, drawn in NumPy (no ``init`` compile).

    BatchNorm starts as ``init`` starts it (scale 1, bias 0, running mean 0 and variance 1).
    For timing, where the values only need realistic magnitudes and a full-width ``init``
    would cost more than the measurement on a CPU (bench.py, reproduce.py's timing column).
    """
    rng = np.random.default_rng(seed)
    abstract = abstract_variables(spec)
    params = initial_head_params(spec, abstract["params"], seed)
    for scope in spec.backbone_scopes:
        flat = {}
        for path, leaf in traverse_util.flatten_dict(abstract["params"][scope]).items():
            if path[-1] == "kernel":
                std = np.sqrt(2.0 / np.prod(leaf.shape[:-1]))
                flat[path] = rng.normal(0, std, leaf.shape).astype(np.float32)
            else:  # biases and BatchNorm shifts 0, BatchNorm scales 1
                flat[path] = np.full(leaf.shape, path[-1] == "scale", np.float32)
        params[scope] = traverse_util.unflatten_dict(flat)
    state = {  # BatchNorm's running variance 1, every other statistic 0
        path: np.full(leaf.shape, path[-1] == "var", np.float32)
        for path, leaf in traverse_util.flatten_dict(model_state(abstract)).items()
    }
    return jax.tree.map(jnp.asarray, {"params": params, **traverse_util.unflatten_dict(state)})


@functools.cache
def predict_fn(spec: NetSpec) -> Callable[[Variables, Mapping[str, Array]], dict[str, Array]]:
    """The jitted ``(variables, {input key: [N, H, W, 3] uint8}) -> {head: logits}`` of a spec.

    Preprocessing runs on the device. Cached per spec, so every caller in a process shares one
    function and each input shape compiles once.
    """
    return jax.jit(spec.logits)
