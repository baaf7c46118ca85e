"""The fully convolutional network of Long, Shelhamer & Darrell: FCN-32s, 16s, 8s and 8s-atonce.

One module, :class:`FCN`; the variant is data (:class:`VariantSpec`): which pools feed skip
connections, at what fixed scale, and hence which upsampling layers exist. Layer names follow
the Caffe release and torchfcn (``score_fr``, ``upscore2``, ``score_pool4``, ``upscore_pool4``,
``score_pool3``, ``upscore8``, ...), so weight conversion is a name table.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fcn_jax.models.conv import conv_fn, on_cpu, upsample
from fcn_jax.models.layers import CoordMap, bilinear_init, crop_like, crop_offset
from fcn_jax.models.vgg import VGG16, trunk_coord_maps
from fcn_jax.types import Array, PyTree

SKIP_UPSAMPLE = (4, 2)  # kernel, stride of every 2x upsampling between skips (upscore2, ...)


@dataclasses.dataclass(frozen=True)
class VariantSpec:
    """What distinguishes the FCN variants.

    Attributes:
        name: ``fcn32s``, ``fcn16s``, ``fcn8s`` or ``fcn8s-atonce``.
        skips: pools fused into the score map, coarse to fine.
        skip_scales: fixed factor applied to each skip's pool before its score layer. The atonce
            net scales pool4 by 0.01 and pool3 by 1e-4 (constant ``Scale`` layers with lr 0 in the
            release) so that all streams can be trained in one stage.
        torch_name: torchfcn's class name, stored as ``arch`` in its checkpoints.
    """

    name: str
    skips: tuple[str, ...]
    skip_scales: tuple[float, ...]
    torch_name: str

    @property
    def output_stride(self) -> int:
        """Stride of the last score map before the final upsampling: 32, 16 or 8."""
        return 32 // 2 ** len(self.skips)

    @property
    def upsamplers(self) -> tuple[tuple[str, int, int], ...]:
        """(name, kernel, stride) of each transposed convolution, in order of application.

        A 2x layer precedes every skip (``upscore2``, then ``upscore_pool4`` on the pool4 fusion);
        the last one upsamples by the output stride with kernel twice the stride (``upscore``
        for FCN-32s, ``upscore16`` / ``upscore8`` otherwise).
        """
        names = ["upscore2", *(f"upscore_{pool}" for pool in self.skips[:-1])]
        layers = [(name, *SKIP_UPSAMPLE) for name in names[: len(self.skips)]]
        stride = self.output_stride
        final = "upscore" if not self.skips else f"upscore{stride}"
        return (*layers, (final, 2 * stride, stride))


VARIANTS: dict[str, VariantSpec] = {
    "fcn32s": VariantSpec("fcn32s", (), (), "FCN32s"),
    "fcn16s": VariantSpec("fcn16s", ("pool4",), (1.0,), "FCN16s"),
    "fcn8s": VariantSpec("fcn8s", ("pool4", "pool3"), (1.0, 1.0), "FCN8s"),
    "fcn8s-atonce": VariantSpec("fcn8s-atonce", ("pool4", "pool3"), (0.01, 0.0001), "FCN8sAtOnce"),
}


def get_variant(name: str) -> VariantSpec:
    """Look up a variant by name; an unknown name raises an error listing the valid ones."""
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(
            f"unknown FCN variant {name!r}; choose one of {sorted(VARIANTS)}"
        ) from None


@functools.cache
def crop_offsets(variant: str) -> dict[str, int]:
    """Crop offsets of a variant, derived from the layer geometry.

    Returns:
        ``{"score_<pool>": offset}`` for each skip (cropped to the upsampled score map it is
        added to) and ``{<final upsampler>: offset}`` for the crop back to the input.
        FCN-32s: upscore 19; FCN-16s: score_pool4 5, upscore16 27; FCN-8s: score_pool4 5,
        score_pool3 9, upscore8 31.
    """
    spec = get_variant(variant)
    maps = trunk_coord_maps()
    score = maps["fc7"]  # score_fr and score_pool* are 1x1 convolutions: same map
    offsets: dict[str, int] = {}
    *skip_ups, (final, kernel, stride) = spec.upsamplers
    for (_, k, s), pool in zip(skip_ups, spec.skips, strict=True):
        score = score.then(CoordMap.deconv(k, s))
        offsets[f"score_{pool}"] = crop_offset(maps[pool], score)
    offsets[final] = crop_offset(score.then(CoordMap.deconv(kernel, stride)), CoordMap())
    return offsets


class Upsample(nn.Module):
    """Transposed convolution without bias, 'VALID' like Caffe's Deconvolution.

    Output size is ``(n - 1) * stride + kernel``. The kernel is stored [k, k, C_in, C_out] and
    applied as a correlation over the dilated input: a torch ``ConvTranspose2d`` weight
    [C_in, C_out, k, k] maps to it spatially flipped (see :mod:`fcn_jax.convert.layout`).

    Attributes:
        features: output channels (= input channels, n_class).
        kernel: square kernel side.
        stride: upsampling factor.
        learnable: if False (the release's choice) the kernel stays the bilinear filter: its
            gradient is stopped here, so no loss can move it.
        dtype: computation dtype.
    """

    features: int
    kernel: int
    stride: int
    learnable: bool = False
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """Upsample [N, h, w, C] to [N, (h - 1) * s + k, (w - 1) * s + k, C]."""
        c_in = x.shape[-1]
        w = self.param("kernel", bilinear_init, (self.kernel, self.kernel, c_in, self.features))
        if not self.learnable:
            w = jax.lax.stop_gradient(w)
        x, w = nn.dtypes.promote_dtype(x, w, dtype=self.dtype)
        if on_cpu() and self.kernel % self.stride == 0:
            return upsample(x, w, self.stride)  # XLA:CPU's transposed convolution is slow
        return jax.lax.conv_transpose(
            x,
            w,
            strides=(self.stride, self.stride),
            padding="VALID",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )


class FCN(nn.Module):
    """Fully convolutional network on a VGG16 trunk, NHWC.

    The paper's single network by default; two options cover its other experiments:

    - ``streams`` (NYUDv2 RGB-HHA, "late fusion"): one VGG16 trunk per input, layers suffixed by
      the stream (``conv1_1color``, ``conv1_1hha``, ...), each with its own score layers
      (``score_frcolor``, ``score_frhha``, and per-stream skip scores) whose outputs are averaged
      with fixed weights (0.5 / 0.5 for two streams: ``score_fused``) before the shared
      upsampling. Skip scores are fused the same way (our reading of the release's nets).
    - ``heads`` (SIFT Flow): one trunk, several sets of score and upsampling layers suffixed by
      the head (``score_frsem``, ``upscore2sem``, ... and ``score_frgeo``, ...), each predicting
      its own classes; the output is then a dict ``{suffix: logits}``.

    Attributes:
        variant: ``fcn32s``, ``fcn16s``, ``fcn8s`` or ``fcn8s-atonce``.
        n_class: number of classes (21 for PASCAL VOC, background included); with ``heads``, the
            class counts come from there.
        width: multiplier of every hidden channel count, fc6/fc7 included; 1.0 is the paper's
            network, smaller values give cheap networks for tests and demos.
        dtype: computation dtype (parameters are always float32).
        learn_upsampling: let the transposed convolutions learn (frozen bilinear by default).
        dropout_rate: dropout after fc6 and fc7, training only.
        streams: stream suffixes, e.g. ``("color", "hha")``; empty for one input.
        heads: ``(suffix, n_class)`` per output, e.g. ``(("sem", 33), ("geo", 3))``; empty for
            one output of ``n_class`` classes.
    """

    variant: str = "fcn8s"
    n_class: int = 21
    width: float = 1.0
    dtype: jnp.dtype = jnp.float32
    learn_upsampling: bool = False
    dropout_rate: float = 0.5
    streams: tuple[str, ...] = ()
    heads: tuple[tuple[str, int], ...] = ()

    @nn.compact
    def __call__(
        self, images: Array | Sequence[Array], *, train: bool = False
    ) -> Array | dict[str, Array]:
        """Per-pixel class scores.

        Args:
            images: [N, H, W, 3] float, preprocessed as the weights' metadata says; with
                ``streams``, a sequence of such arrays in stream order.
            train: enables dropout (needs a ``dropout`` PRNG stream).

        Returns:
            [N, H, W, n_class] float32 logits, or with ``heads`` a dict suffix -> logits. A dict
            of the intermediate maps (``pool1`` ... ``fc7``, ``score_fr``, each upsampled and
            fused score; suffixed per stream / head) is sown as ``intermediates/maps``
            (``apply(..., mutable=["intermediates"])`` returns it).
        """
        if self.streams and self.heads:
            raise ValueError("an FCN has either several streams or several heads, not both")
        inputs = tuple(images) if self.streams else (images,)
        if len(inputs) != max(len(self.streams), 1):
            raise ValueError(f"{len(inputs)} inputs for streams {self.streams}")
        height, width = inputs[0].shape[1:3]
        maps: dict[str, Array] = {}  # every intermediate map, sown at the end for parity checks
        features = []
        for suffix, x in zip(self.streams or ("",), inputs, strict=True):
            trunk = VGG16(self.width, self.dtype, self.dropout_rate, suffix, name=f"vgg16{suffix}")
            features.append(trunk(x, train=train))
            maps |= {f"{k}{suffix}": v for k, v in features[-1].items()}
        outputs = {
            head: self._head(features, head, n_class, height, width, maps)
            for head, n_class in (self.heads or (("", self.n_class),))
        }
        self.sow("intermediates", "maps", maps)
        return outputs if self.heads else outputs[""]

    def _head(
        self,
        features: list[dict[str, Array]],
        head: str,
        n_class: int,
        height: int,
        width: int,
        maps: dict[str, Array],
    ) -> Array:
        """Score layers, skips and upsampling of one output; [N, height, width, n_class]."""
        spec = get_variant(self.variant)
        offsets = crop_offsets(self.variant)
        score = self._fused_score("score_fr", [f["fc7"] for f in features], head, n_class, maps)
        *skip_ups, final = spec.upsamplers
        for (up, k, s), pool, scale in zip(skip_ups, spec.skips, spec.skip_scales, strict=True):
            score = maps[f"{up}{head}"] = self._upsample(f"{up}{head}", k, s, n_class)(score)
            pooled = [f[pool] if scale == 1.0 else f[pool] * scale for f in features]
            skip = self._fused_score(f"score_{pool}", pooled, head, n_class, maps)
            skip = crop_like(skip, offsets[f"score_{pool}"], score.shape[1], score.shape[2])
            score = maps[f"fuse_{pool}{head}"] = score + skip
        name, k, s = final
        score = maps[f"{name}{head}"] = self._upsample(f"{name}{head}", k, s, n_class)(score)
        return crop_like(score, offsets[name], height, width).astype(jnp.float32)

    def _fused_score(
        self, layer: str, inputs: list[Array], head: str, n_class: int, maps: dict[str, Array]
    ) -> Array:
        """A score layer per stream, averaged with fixed equal weights (late fusion)."""
        suffixes = self.streams or (head,)
        scores = [
            self._score(f"{layer}{suffix}", n_class)(x)
            for suffix, x in zip(suffixes, inputs, strict=True)
        ]
        for suffix, score in zip(suffixes, scores, strict=True):
            maps[f"{layer}{suffix}"] = score
        if len(scores) == 1:
            return scores[0]
        fused = sum(scores[1:], scores[0]) / len(scores)
        maps[f"{layer}_fused" if layer != "score_fr" else "score_fused"] = fused
        return fused

    def _score(self, name: str, n_class: int) -> nn.Conv:
        # Zero init, as the release: a new score layer starts by predicting nothing, so staged
        # training (32s -> 16s -> 8s) begins exactly at the previous stage's output.
        return nn.Conv(
            n_class,
            (1, 1),
            dtype=self.dtype,
            kernel_init=nn.initializers.zeros,
            conv_general_dilated=conv_fn(),
            name=name,
        )

    def _upsample(self, name: str, kernel: int, stride: int, n_class: int) -> Upsample:
        return Upsample(n_class, kernel, stride, self.learn_upsampling, self.dtype, name=name)


MODELS: dict[str, Callable[..., FCN]] = {
    name: functools.partial(FCN, variant=name) for name in VARIANTS
}


def init_params(model: FCN, key: jax.Array, image_shape: tuple[int, int] = (32, 32)) -> PyTree:
    """Initialise ``model``'s params (score layers zero, upsampling bilinear).

    Args:
        model: the FCN.
        key: PRNG key.
        image_shape: (H, W) of the dummy input; params do not depend on it.

    Returns:
        The params pytree (``variables["params"]``).
    """
    dummy = jnp.zeros((1, *image_shape, 3), jnp.float32)
    inputs = (dummy,) * len(model.streams) if model.streams else dummy
    return jax.jit(model.init)(key, inputs)["params"]


def abstract_params(model: FCN) -> PyTree:
    """Shapes and dtypes of ``model``'s params, without allocating or computing anything."""
    dummy = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    inputs = (dummy,) * len(model.streams) if model.streams else dummy
    return jax.eval_shape(model.init, jax.random.key(0), inputs)["params"]


def initial_head_params(abstract: PyTree) -> PyTree:
    """Initial values of every layer outside the trunk, as :meth:`FCN.init` would set them.

    Score layers are zero and upsampling kernels bilinear, whatever the key, so converting a
    VGG16 into an FCN does not need to run (and compile) a full-width ``init``.

    Args:
        abstract: the model's params or their shapes (:func:`abstract_params`).

    Returns:
        ``{layer: {leaf: array}}`` for every top-level layer except the ``vgg16*`` trunks.
    """
    head = {}
    for layer, leaves in abstract.items():
        if layer.startswith("vgg16"):
            continue
        if layer.startswith("upscore"):
            head[layer] = {"kernel": bilinear_init(None, leaves["kernel"].shape)}
        else:
            head[layer] = {k: jnp.zeros(v.shape, v.dtype) for k, v in leaves.items()}
    return head


def random_params(model: FCN, seed: int = 0) -> PyTree:
    """He-normal trunk, zero biases and the initial head, drawn in NumPy (no ``init`` compile).

    For timing, where the values only need realistic magnitudes and a full-width ``init``
    would cost more than the measurement on a CPU (bench.py, reproduce.py's timing column).
    """
    rng = np.random.default_rng(seed)
    abstract = abstract_params(model)
    params = initial_head_params(abstract)
    for name, layers in abstract.items():
        if not name.startswith("vgg16"):
            continue
        params[name] = {}
        for layer, leaves in layers.items():
            shape = leaves["kernel"].shape
            std = np.sqrt(2.0 / np.prod(shape[:3]))
            params[name][layer] = {
                "kernel": rng.normal(0, std, shape).astype(np.float32),
                "bias": np.zeros(leaves["bias"].shape, np.float32),
            }
    return jax.tree.map(jnp.asarray, params)


def make_forward(model: FCN) -> Callable[[PyTree, Array], Array]:
    """The jitted pure inference function ``(params, images [N, H, W, 3]) -> logits [N, H, W, C]``.

    Compiles once per input shape.
    """

    @jax.jit
    def forward(params: PyTree, images: Array) -> Array:
        return model.apply({"params": params}, images)

    return forward
