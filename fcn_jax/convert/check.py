"""Proof of a conversion: run the PyTorch source and the converted Flax model on the same input.

For an FCN source (torchfcn's, SpeedPaper's) the logits are compared, with a block-by-block
table of intermediate maps so a mismatch points at its layer. SpeedPaper's FCN takes sides that
are multiples of 32 only: its check image is centre-cropped to them (padded with the mean pixel
where a side is under 32), and the report says so. For a torchvision VGG16 or VGG16-BN source
the new score layers are zero (every logit equal, proving nothing), so the trunk is compared
instead: fc7 of the VGG with its classifier run as convolutions (BatchNorm in eval mode) against
the Flax trunk's.

torchvision's FCN-ResNets are checked against torchvision's own model
(:func:`~fcn_jax.torch_reference.torchvision_fcn_resnet`): the trunk's stages, both heads'
scores and both outputs (``out`` and ``aux``). A new FCN-ResNet on an ImageNet ResNet (its
heads freshly initialised) is checked up to layer4 against torchvision's ``resnet50`` /
``resnet101`` with the segmentation dilations.

Both frameworks compute in full float32 (``jax_default_matmul_precision="highest"``, TF32 off in
torch) so the comparison measures the conversion, not a GPU's reduced-precision matmuls.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import numpy as np

from fcn_jax.checkpoint import WeightsMetadata
from fcn_jax.convert.speedpaper import NUM_BATCHES_TRACKED, flax_to_speedpaper, stage_of
from fcn_jax.convert.torch_files import SPEEDPAPER as SPEEDPAPER_KIND
from fcn_jax.convert.torch_files import (
    TORCHVISION_RESNET,
    TORCHVISION_VGG16,
    TORCHVISION_VGG16_BN,
    TorchWeights,
    import_torch_float32,
)
from fcn_jax.models import NetSpec
from fcn_jax.models.spec import RESNET_ARCHS, SPEEDPAPER
from fcn_jax.models.speedpaper import STRIDE as SPEEDPAPER_STRIDE
from fcn_jax.types import PyTree

STAGES = ("s1", "s2", "s3", "s4", "s5")  # SpeedPaper's trunk outputs, as both models name them
# Max |logit difference| allowed, relative to the largest |logit| of the reference (float32).
PARITY_TOLERANCE = 1e-4
# ImageNet trunks whose FCN init is checked at fc7 (BatchNorm, if any, in eval mode).
TORCHVISION_VGGS = (TORCHVISION_VGG16, TORCHVISION_VGG16_BN)


@dataclasses.dataclass(frozen=True)
class LayerDiff:
    """Difference of one intermediate map.

    Attributes:
        name: layer (``pool3``, ``score_fr``, ``logits``...).
        shape: NHWC shape.
        max_abs: max |flax - torch|.
        scale: max |torch| (the reference's magnitude).
    """

    name: str
    shape: tuple[int, ...]
    max_abs: float
    scale: float

    @property
    def rel(self) -> float:
        """max_abs / scale (0 when both are 0)."""
        return self.max_abs / self.scale if self.scale > 0 else float(self.max_abs > 0)


@dataclasses.dataclass(frozen=True)
class ParityReport:
    """Outcome of :func:`check_parity`.

    Attributes:
        compared: ``logits`` (FCN source), ``fc7`` (VGG16 source), ``s5`` (VGG16-BN source
            of SpeedPaper's FCN) or ``layer4`` (ImageNet ResNet source of an FCN-ResNet).
        layers: per-block differences, input to output; the last row is ``compared``.
        argmax_agreement: % of pixels with the same argmax class (logits only).
        confident_agreement: % agreement on pixels whose reference top-2 margin exceeds the
            tolerance (must be 100).
        confident_pixels: how many pixels that is.
        tolerance: relative tolerance on the compared map.
        note: how the input was changed to fit the network (e.g. cropped), or empty.
    """

    compared: str
    layers: tuple[LayerDiff, ...]
    argmax_agreement: float | None
    confident_agreement: float | None
    confident_pixels: int | None
    tolerance: float = PARITY_TOLERANCE
    note: str = ""

    @property
    def final(self) -> LayerDiff:
        """The compared map's row."""
        return self.layers[-1]

    @property
    def passed(self) -> bool:
        """Within tolerance and, for logits, every confident pixel agrees."""
        ok = self.final.rel <= self.tolerance
        return ok and (self.confident_agreement is None or self.confident_agreement == 100.0)

    def format(self) -> str:
        """Human-readable report: per-layer table, then the verdict."""
        lines = [self.note] if self.note else []
        lines.append(
            f"{'layer':<16}{'shape (NHWC)':<24}{'max |diff|':>12}{'max |ref|':>12}{'rel':>11}"
        )
        for d in self.layers:
            lines.append(
                f"{d.name:<16}{'x'.join(map(str, d.shape)):<24}{d.max_abs:>12.3e}{d.scale:>12.3e}"
                f"{d.rel:>11.2e}"
            )
        f = self.final
        lines.append("")
        lines.append(
            f"{self.compared}: max abs diff {f.max_abs:.3e}, relative {f.rel:.3e} "
            f"(tolerance {self.tolerance:.0e})"
        )
        if self.argmax_agreement is not None:
            lines.append(
                f"argmax agreement: {self.argmax_agreement:.4f}% of pixels; "
                f"{self.confident_agreement:.4f}% of the {self.confident_pixels} pixels whose "
                f"top-2 margin exceeds the tolerance"
            )
        lines.append("PASS" if self.passed else "FAIL")
        return "\n".join(lines)


def _diff(name: str, ours: np.ndarray, ref: np.ndarray) -> LayerDiff:
    if ours.shape != ref.shape:
        raise AssertionError(f"{name}: Flax shape {ours.shape} != torch shape {ref.shape}")
    return LayerDiff(
        name,
        tuple(ours.shape),
        float(np.max(np.abs(ours.astype(np.float64) - ref))),
        float(np.max(np.abs(ref))),
    )


def fit_to_stride(
    image: np.ndarray, stride: int, fill: tuple[int, int, int]
) -> tuple[np.ndarray, str]:
    """Centre-crop ``image`` to sides that are multiples of ``stride`` (pad a side under it).

    Args:
        image: [H, W, 3] uint8.
        stride: the multiple the network needs (32 for SpeedPaper's FCN).
        fill: RGB pixel padding uses (the mean pixel, which normalises to about zero).

    Returns:
        (the image, a one-line note of what was done; empty when nothing was).
    """
    height, width = image.shape[:2]
    target = [max(stride, side // stride * stride) for side in (height, width)]
    if target == [height, width]:
        return image, ""
    out = np.empty((*target, 3), np.uint8)
    out[...] = np.asarray(fill, np.uint8)
    src, dst = [], []
    for side, want in zip((height, width), target, strict=True):
        keep = min(side, want)
        src.append(slice((side - keep) // 2, (side - keep) // 2 + keep))
        dst.append(slice((want - keep) // 2, (want - keep) // 2 + keep))
    out[dst[0], dst[1]] = image[src[0], src[1]]
    how = "centre-cropped" if all(s >= stride for s in (height, width)) else "cropped / padded"
    return out, (
        f"input {height}x{width} {how} to {target[0]}x{target[1]}: this network takes sides "
        f"that are multiples of {stride}"
    )


@functools.cache
def _flax_forward(spec: NetSpec) -> Any:
    # One jitted function per network: repeated checks reuse the compilation.
    return jax.jit(functools.partial(spec.apply, mutable=["intermediates"]))


def check_parity(
    source: TorchWeights, variables: PyTree, metadata: WeightsMetadata, image: np.ndarray
) -> ParityReport:
    """Run source and converted model on ``image`` and compare.

    Args:
        source: the PyTorch weights the params were converted from.
        variables: the converted Flax variables (``{"params": ..., ...}``).
        metadata: their metadata (arch, classes, width, preprocessing).
        image: [H, W, 3] uint8 RGB; for SpeedPaper's FCN centre-cropped to multiples of 32
            (:func:`fit_to_stride`, said in ``report.note``).

    Returns:
        The report; ``report.passed`` says whether it is within tolerance.
    """
    torch = import_torch_float32()
    from fcn_jax.torch_reference import (
        torch_model,
        torchvision_maps,
        torchvision_resnet,
        vgg16_fc7,
    )

    # Every input of a multi-stream net gets the same image: this checks numerics, not data.
    spec = metadata.spec
    note = ""
    if spec.arch == SPEEDPAPER:
        image, note = fit_to_stride(image, SPEEDPAPER_STRIDE, spec.mean_pixels()[0][1])
    x = spec.preprocess({key: image[None] for key in spec.inputs})
    xs = tuple(np.asarray(xi) for xi in x)
    xs_torch = tuple(torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2))) for a in xs)
    state = {k: torch.from_numpy(v) for k, v in source.state.items()}

    ref: dict[str, torch.Tensor] = {}
    # The new head is zero / bilinear / random: comparing its logits proves little.
    trunk_only = source.kind in (*TORCHVISION_VGGS, TORCHVISION_RESNET)
    with torch.no_grad():
        if source.kind == TORCHVISION_RESNET:
            net = torchvision_resnet(spec.backbone, spec.width)
            net.load_state_dict(state, strict=True)
            _, ref = torchvision_maps(net.eval(), xs_torch[0])
            outputs = ("layer4",)
        elif spec.arch in RESNET_ARCHS:
            net = torch_model(spec)
            net.load_state_dict(state, strict=True)
            out, ref = torchvision_maps(net.eval(), xs_torch[0])
            ref |= _named_logits(dict(out))
            outputs = tuple(_named_logits(dict(out)))
        elif trunk_only and spec.arch == SPEEDPAPER:
            # vgg16_bn's features are SpeedPaper's stages (same indices); compare up to s5.
            net = torch_model(spec)
            head = flax_to_speedpaper(jax.device_get(variables))
            head = {k: torch.from_numpy(v) for k, v in head.items() if not k.startswith("stage")}
            stages = {
                f"stage{stage_of(int(k.split('.')[1]))}.{k.removeprefix('features.')}": v
                for k, v in state.items()
                if k.startswith("features.")
            }
            net.load_state_dict(stages | head, strict=True)
            net.eval()(xs_torch[0], intermediates=ref)
            ref = {k: v for k, v in ref.items() if k in STAGES}
            outputs = (STAGES[-1],)
        elif trunk_only:
            ref = vgg16_fc7(state, xs_torch[0], batch_norm=source.kind == TORCHVISION_VGG16_BN)
            outputs = ("fc7",)
        else:
            net = torch_model(spec)
            _load_source(net, state, source)
            out = net.eval()(xs_torch if spec.streams else xs_torch[0], intermediates=ref)
            ref |= _named_logits(out)
            outputs = tuple(_named_logits(out))
    ref_np = {k: v.numpy().transpose(0, 2, 3, 1) for k, v in ref.items()}

    forward = _flax_forward(spec)
    with jax.default_matmul_precision("highest"):
        logits, state_out = forward(variables, x)
    ours = {k: np.asarray(v) for k, v in state_out["intermediates"]["maps"][0].items()}
    ours |= {k: np.asarray(v) for k, v in _named_logits(logits).items()}

    names = [k for k in ref_np if k in ours and k not in outputs]
    finals = [_diff(k, ours[k], ref_np[k]) for k in outputs]
    # The headline row: the output that differs most (relative to its scale).
    finals.sort(key=lambda d: d.rel)
    layers = (*(_diff(k, ours[k], ref_np[k]) for k in names), *finals)
    if trunk_only:
        return ParityReport(outputs[0], layers, None, None, None, note=note)
    agree, confident, pixels = logit_agreement(
        [ours[k][0] for k in outputs], [ref_np[k][0] for k in outputs]
    )
    return ParityReport(
        "logits",
        layers,
        argmax_agreement=agree,
        confident_agreement=confident,
        confident_pixels=pixels,
        note=note,
    )


def _load_source(net: Any, state: dict[str, Any], source: TorchWeights) -> None:
    """Load the source's tensors into the torch reference, every one of its layers filled.

    Strict, except that SpeedPaper's checkpoints may lack what no computation reads:
    ``num_batches_tracked`` (older torch) and the unused ``scores*`` layers.
    """
    if source.kind != SPEEDPAPER_KIND:
        net.load_state_dict(state, strict=True)
        return
    missing, unexpected = net.load_state_dict(state, strict=False)
    needed = [k for k in missing if not k.endswith(NUM_BATCHES_TRACKED) and "scores" not in k]
    if needed or unexpected:
        raise AssertionError(f"torch reference: missing {needed}, unexpected {unexpected}")


def logit_agreement(
    ours: list[np.ndarray], refs: list[np.ndarray], margin: float = PARITY_TOLERANCE
) -> tuple[float, float, int]:
    """How often two sets of logits pick the same class.

    Args:
        ours: logits [..., C] of the model under test, one array per output.
        refs: the reference's, same shapes.
        margin: a pixel is *confident* where the reference's top-2 logits differ by more than
            ``margin`` times the largest |logit| of its output: there, a difference within the
            tolerance cannot flip the argmax, so agreement must be 100%.

    Returns:
        (% of pixels whose argmax agrees, % of the confident ones that agree, how many
        confident pixels there are).
    """
    agree, confident = [], []
    for our_logits, ref_logits in zip(ours, refs, strict=True):
        agree.append((np.argmax(ref_logits, -1) == np.argmax(our_logits, -1)).ravel())
        top2 = np.sort(ref_logits, axis=-1)[..., -2:]
        scale = float(np.max(np.abs(ref_logits)))
        confident.append(((top2[..., 1] - top2[..., 0]) > margin * scale).ravel())
    agree_all, confident_all = np.concatenate(agree), np.concatenate(confident)
    confident_pct = 100.0 * float(agree_all[confident_all].mean()) if confident_all.any() else 100.0
    return 100.0 * float(agree_all.mean()), confident_pct, int(confident_all.sum())


def _named_logits(out: Any) -> dict[str, Any]:
    """``{"logits": x}`` for one output, ``{"logits_<head>": x}`` for a multi-head net.

    ``out``: the torch reference's output (an array, or a dict per head) or ours (a dict).
    """
    if not isinstance(out, dict):
        return {"logits": out}
    if len(out) == 1:
        return {"logits": next(iter(out.values()))}
    return {f"logits_{head}": v for head, v in out.items()}
