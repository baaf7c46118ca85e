"""The proof an artifact computes what its weights compute: ``export.py --check``.

The artifact (loaded as a consumer loads it, :func:`~fcn_jax.export.artifact.load_artifact`)
and the live JAX network (:func:`~fcn_jax.models.predict_fn` on the weights' variables, the
function every fcn-jax tool runs) see the same uint8 images: the bundled VOC sample at its own
size, and the sample resized to two other sizes, one of them not a multiple of 32 (a fixed-size
artifact: the sample resized to that size, once). A multi-input net (NYUD's RGB-HHA) gets the
sample as its RGB and the sample's channels rolled as its second input.

Per case and head: the largest absolute logit difference, against the logit scale (the largest
absolute live logit); the share of pixels whose labels agree among those *away from ties*,
where the live top two logits differ by more than the tolerance (closer than that, float
rounding may legitimately swap them). It passes when the difference is within
:data:`TOLERANCE` of the scale (float32; bfloat16 artifacts: :data:`TOLERANCE_BF16`, against
the live bfloat16 network) and every label away from ties agrees.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from fcn_jax.checkpoint import WeightsMetadata
from fcn_jax.data.io import read_image
from fcn_jax.data.resize import resize_image
from fcn_jax.export.artifact import Artifact
from fcn_jax.export.info import ArtifactInfo
from fcn_jax.models import predict_fn
from fcn_jax.models.spec import Variables
from fcn_jax.resources import VOC_SAMPLE_IMAGE

TOLERANCE = 1e-4  # of the logit scale, float32
TOLERANCE_BF16 = 2e-2  # bfloat16 keeps 8 bits of mantissa; XLA may fuse differently
OTHER_SIZES = ((224, 320), (157, 203))  # a multiple of 32, and odd sides that are not


@dataclasses.dataclass(frozen=True)
class CaseResult:
    """One image size, one head.

    Attributes:
        case: what was run (``voc_sample 375x500``).
        head: the head compared.
        max_abs_diff: largest |artifact logit - live logit| (NaN with a labels-only artifact).
        logit_scale: largest |live logit|.
        label_agreement: share of pixels away from ties whose labels agree.
        ties: pixels left out as ties.
        ok: within tolerance and every label away from ties agrees.
    """

    case: str
    head: str
    max_abs_diff: float
    logit_scale: float
    label_agreement: float
    ties: int
    ok: bool

    @property
    def relative(self) -> float:
        """max_abs_diff / logit_scale."""
        return self.max_abs_diff / max(self.logit_scale, 1e-30)


def check_images(n_inputs: int, sizes: Sequence[tuple[int, int]] | None) -> list:
    """``(case name, [inputs])``: the VOC sample, and resized to each of ``sizes``.

    ``sizes`` None: the sample as it is plus :data:`OTHER_SIZES`.
    """
    sample = read_image(VOC_SAMPLE_IMAGE)
    h, w = sample.shape[:2]
    cases = [(f"voc_sample {h}x{w}", sample)] if sizes is None else []
    for sh, sw in OTHER_SIZES if sizes is None else sizes:
        cases.append((f"voc_sample resized {sh}x{sw}", resize_image(sample, sh, sw)))
    # Other inputs (NYUD's HHA): the same pixels with their channels rolled, a different image.
    return [(name, [np.roll(im, k, axis=-1) for k in range(n_inputs)]) for name, im in cases]


def check_artifact(
    artifact: Artifact,
    variables: Variables,
    metadata: WeightsMetadata,
    *,
    dtype: str = "float32",
    sizes: Sequence[tuple[int, int]] | None = None,
) -> list[CaseResult]:
    """Compare ``artifact`` with the live network on the check images (module docstring).

    ``sizes``: the sample resized to these (H, W) instead (a fixed-size artifact: its size).
    """
    spec = metadata.spec.replace(dtype=dtype)
    live = predict_fn(spec)
    info = artifact.info
    # A fixed batch as exported; a symbolic one: 1 for the sample, 2 for the other sizes (the
    # second image flipped).
    fixed_batch = info.inputs[0].shape[0] if isinstance(info.inputs[0].shape[0], int) else None
    _, height, width, _ = info.inputs[0].shape
    if isinstance(height, int):
        sizes = [(int(height), int(width))]
    tolerance = TOLERANCE if dtype == "float32" else TOLERANCE_BF16
    results = []
    for i, (name, images) in enumerate(check_images(len(spec.inputs), sizes)):
        batch = fixed_batch or (1 if i == 0 and sizes is None else 2)
        batched = [np.stack([np.flip(x, 1) if j % 2 else x for j in range(batch)]) for x in images]
        want = live(variables, dict(zip(spec.inputs, batched, strict=True)))
        got = artifact(*batched)
        name = f"{name} x{batch}" if batch > 1 else name
        for head in spec.head_names:
            results.append(_compare(name, head, np.asarray(want[head]), got, info, tolerance))
    return results


def _compare(
    case: str,
    head: str,
    live: np.ndarray,
    got: dict[str, np.ndarray],
    info: ArtifactInfo,
    tolerance: float,
) -> CaseResult:
    """One head of one case (:class:`CaseResult`): ``live`` [N, H, W, C] against ``got``."""
    scale = float(np.abs(live).max())
    logits_out, labels_out = info.output("logits", head), info.output("labels", head)
    diff = float("nan")
    if logits_out is not None:
        diff = float(np.abs(got[logits_out.name].astype(np.float64) - live).max())
    top2 = np.sort(live, axis=-1)[..., -2:]
    clear = (top2[..., 1] - top2[..., 0]) > tolerance * scale
    labels = got[labels_out.name] if labels_out is not None else np.argmax(got[logits_out.name], -1)
    agree = labels[clear] == np.argmax(live, -1)[clear]
    agreement = float(agree.mean()) if agree.size else 1.0
    ok = agreement == 1.0 and (np.isnan(diff) or diff <= tolerance * scale)
    return CaseResult(case, head, diff, scale, agreement, int((~clear).sum()), bool(ok))


def format_results(results: Sequence[CaseResult], dtype: str = "float32") -> str:
    """A table of the check, one line per case and head, and the verdict."""
    tolerance = TOLERANCE if dtype == "float32" else TOLERANCE_BF16
    lines = [f"{'case':<32} {'head':<5} {'max|diff|':>10} {'scale':>9} {'rel':>9} labels  ties"]
    for r in results:
        lines.append(
            f"{r.case:<32} {r.head:<5} {r.max_abs_diff:>10.3g} {r.logit_scale:>9.4g} "
            f"{r.relative:>9.2g} {100 * r.label_agreement:>5.1f}% {r.ties:>5}"
            + ("" if r.ok else "  FAIL")
        )
    verdict = all(r.ok for r in results)
    lines.append(
        f"check {'passed' if verdict else 'FAILED'}: max |logit difference| within "
        f"{tolerance:g} of the logit scale, labels equal away from ties"
    )
    return "\n".join(lines)
