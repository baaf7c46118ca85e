"""The PyTorch comparison of ``eval.py --against-torch``, as an observer of the evaluation.

The project's PyTorch reference of the network (:func:`fcn_jax.torch_reference.torch_model`:
the paper's FCNs, or SpeedPaper's) is given the same variables (BatchNorm statistics included)
and run in float32 on every batch JAX scores; it keeps its own confusion matrices, scored like
JAX's, and counts the image pixels where both frameworks predict the same class.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import jax
import numpy as np

from fcn_jax.checkpoint import WeightsMetadata
from fcn_jax.eval.heads import head_class_counts, head_targets
from fcn_jax.eval.metrics import confusion_matrix
from fcn_jax.types import PyTree


@dataclasses.dataclass(frozen=True)
class TorchComparisonResult:
    """What the PyTorch reference scored.

    Attributes:
        confusions: head -> [n, n] int64 confusion matrix of its predictions.
        pixel_agreement: fraction of the real images' pixels (padding left out) where both
            frameworks predict the same class.
    """

    confusions: dict[str, np.ndarray]
    pixel_agreement: float


class TorchComparison:
    """The project's PyTorch network holding the same weights, scoring the same batches."""

    def __init__(self, variables: PyTree, metadata: WeightsMetadata) -> None:
        """Build the PyTorch network and load ``variables`` into it.

        Args:
            variables: ``{"params": ...}``, with ``batch_stats`` for a BatchNorm network.
            metadata: the weights' metadata (its spec picks the network).

        Raises:
            FCNError: torch is not installed (the message says how to install it).
        """
        from fcn_jax.convert import torch_state_dict
        from fcn_jax.convert.torch_files import import_torch_float32

        torch = import_torch_float32()  # first: without torch, say how to install it
        from fcn_jax.torch_reference import torch_model

        self.torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.net = torch_model(metadata.spec)
        state = {
            k: torch.from_numpy(np.array(v))
            for k, v in torch_state_dict(variables, metadata.spec).items()
        }
        self.net.load_state_dict(state, strict=True)
        self.net.eval().to(self.device)
        self.metadata = metadata
        self.classes = head_class_counts(metadata.spec)
        self.label_keys = {head: key for head, (key, _) in head_targets(metadata.spec).items()}
        self.hists = {h: np.zeros((n, n), np.int64) for h, n in self.classes.items()}
        self.agree = 0
        self.pixels = 0

    def on_batch(
        self,
        batch: Mapping[str, np.ndarray],
        labels: Mapping[str, jax.Array],
        preds: Mapping[str, jax.Array],
    ) -> None:
        """Run the PyTorch net on the batch; count its confusions and its agreement with JAX.

        Args:
            batch: the host batch (inputs, label keys, ``height`` / ``width``, ``valid``); its
                labels are scored here, so ``labels`` (on the device) is not read.
            labels: unused (see ``batch``).
            preds: head -> [B, H, W] uint8 JAX predictions.
        """
        del labels
        out = self._forward(batch)
        for head, logits in out.items():
            torch_preds = logits.argmax(1).to(self.torch.uint8).cpu().numpy()
            self.hists[head] += np.asarray(
                confusion_matrix(batch[self.label_keys[head]], torch_preds, self.classes[head])
            )
            jax_preds = np.asarray(preds[head])
            for i in np.flatnonzero(batch["valid"]):
                h, w = batch["height"][i], batch["width"][i]
                self.agree += int((torch_preds[i, :h, :w] == jax_preds[i, :h, :w]).sum())
                self.pixels += int(h) * int(w)

    def _forward(self, batch: Mapping[str, np.ndarray]) -> dict:
        """Head -> [B, C, H, W] torch logits of the batch's inputs (JAX's head keys).

        Inputs are padded as :meth:`~fcn_jax.models.NetSpec.logits` pads them on the JAX side
        (:meth:`~fcn_jax.models.NetSpec.pad_inputs`: SpeedPaper's FCN takes multiples of 32),
        and the logits cropped back.
        """
        spec = self.metadata.spec
        batch, (height, width) = spec.pad_inputs(batch)
        xs = tuple(
            self.torch.from_numpy(np.ascontiguousarray(np.asarray(xi).transpose(0, 3, 1, 2))).to(
                self.device
            )
            for xi in spec.preprocess(batch)
        )
        with self.torch.no_grad():
            out = self.net(xs if spec.streams else xs[0])
        # The reference returns a bare tensor for one head, as torchfcn does; torchvision's
        # FCN-ResNets a dict that may hold the training-only "aux" too (not scored).
        out = out if isinstance(out, dict) else {spec.head_names[0]: out}
        return {head: out[head][:, :, :height, :width] for head in spec.head_names}

    def result(self) -> TorchComparisonResult:
        """The reference's confusion matrices and the pixel agreement."""
        return TorchComparisonResult(
            {h: hist.copy() for h, hist in self.hists.items()},
            self.agree / max(self.pixels, 1),
        )
