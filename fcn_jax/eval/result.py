"""The scores of one evaluation: the metrics JSON and the printed report.

:class:`EvalResult` holds the paper's metrics per metric set and, when the PyTorch reference
was run beside JAX, its metrics and the pixel agreement of the two predictions.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from fcn_jax.eval.metrics import Metrics

# |mean IU (JAX) - mean IU (PyTorch)| allowed by --against-torch, as a fraction (0.1 points).
TORCH_MIOU_TOLERANCE = 1e-3


@dataclasses.dataclass(frozen=True)
class EvalResult:
    """Scores of one evaluation.

    Attributes:
        metrics: metric-set name -> the paper's metrics over the whole split (one set, keyed
            ``""``, for a single-head network; ``semantic`` and ``geometric`` for SIFT Flow).
        n_images: images scored.
        seconds: wall time of the loop (compilation included).
        compilations: XLA compilations of the evaluation step (one per distinct batch shape).
        batches: steps run (one per image scored whole; bucketed, padded batches).
        torch: the PyTorch reference's metrics on the same images (same keys), if asked for.
        pixel_agreement: fraction of image pixels where both frameworks predict the same class.
    """

    metrics: dict[str, Metrics]
    n_images: int
    seconds: float
    compilations: int
    batches: int = 0
    torch: dict[str, Metrics] | None = None
    pixel_agreement: float | None = None

    @property
    def torch_miou_diff(self) -> float | None:
        """Largest |mean IU difference| between JAX and PyTorch over the heads, if compared."""
        if self.torch is None:
            return None
        return max(abs(m.mean_iou - self.torch[k].mean_iou) for k, m in self.metrics.items())

    @property
    def torch_agrees(self) -> bool:
        """Whether the PyTorch comparison (if any) is within :data:`TORCH_MIOU_TOLERANCE`."""
        diff = self.torch_miou_diff
        return diff is None or diff <= TORCH_MIOU_TOLERANCE

    def to_json(self) -> dict[str, Any]:
        """The metrics JSON.

        Metric keys (flat, or under ``semantic`` / ``geometric``), ``n_images``, ``seconds``,
        ``compilations``, ``batches`` and, compared with PyTorch, ``torch`` (same keys +
        ``pixel_agreement``).
        """
        out = _metrics_json(self.metrics)
        out |= {"n_images": self.n_images, "seconds": self.seconds}
        out["compilations"] = self.compilations
        out["batches"] = self.batches
        if self.torch is not None:
            out["torch"] = {**_metrics_json(self.torch), "pixel_agreement": self.pixel_agreement}
        return out

    def format(self) -> str:
        """The metrics tables and, with a PyTorch comparison, both side by side."""
        lines = []
        for name, metrics in self.metrics.items():
            if name:
                lines += [f"== {name} ==", ""]
            lines += [metrics.format_table(), ""]
        if self.torch is not None:
            lines.append(f"{'':<24}{'JAX':>10}{'PyTorch':>10}{'diff':>10}")
            for name, metrics in self.metrics.items():
                for key, label in (
                    ("pixel_acc", "pixel acc"),
                    ("mean_acc", "mean acc"),
                    ("mean_iou", "mean IU"),
                    ("fw_iou", "f.w. IU"),
                ):
                    a, b = getattr(metrics, key), getattr(self.torch[name], key)
                    row = f"{name} {label}".strip()
                    lines.append(
                        f"{row:<24}{100 * a:>10.3f}{100 * b:>10.3f}{100 * (a - b):>+10.3f}"
                    )
            lines.append(
                f"pixel agreement of the two predictions: {100 * self.pixel_agreement:.4f}%"
            )
            verdict = "within" if self.torch_agrees else "OUTSIDE"
            lines.append(
                f"mean IU difference {self.torch_miou_diff:.2e} is {verdict} the tolerance "
                f"{TORCH_MIOU_TOLERANCE:.0e}"
            )
        lines.append(
            f"{self.n_images} images in {self.batches} batch(es), {self.seconds:.1f} s, "
            f"{self.compilations} compilation(s)"
        )
        return "\n".join(lines)


def _metrics_json(metrics: dict[str, Metrics]) -> dict[str, Any]:
    if list(metrics) == [""]:
        return metrics[""].to_json()
    return {name: m.to_json() for name, m in metrics.items()}
