"""ONNX artifacts, through the project's PyTorch twin of the network and ``torch.onnx.export``.

Why this route and not a JAX-to-ONNX converter: the PyTorch twin
(:func:`fcn_jax.torch_reference.torch_model`, torchvision's own classes for the FCN-ResNets)
is already proven equal to the Flax network layer by layer, and its modules are what ONNX has
operators for: ``Conv``, ``MaxPool`` with ``ceil_mode``, ``ConvTranspose``, ``Slice`` for the
crops, ``Resize`` for torchvision's bilinear upsampling. A converter of JAX programs sees the
lowered primitives instead (``reduce_window`` with -inf padding, the CPU's GEMM-formulated
transposed convolutions, ``dynamic_update_slice``), which give a longer graph for the same
network. The price: exporting needs torch (the ``torch`` extra); running needs only
onnxruntime. Every artifact is still checked against the live JAX network
(:mod:`fcn_jax.export.check`), not against the twin.

``torch.onnx.export(..., dynamo=True)`` (torch.export, then onnxscript's translation; torch
2.13's default exporter) with ``Dim.DYNAMIC`` batch, height and width, opset
:data:`OPSET`. The wrapper :class:`ArtifactModule` mirrors the JAX artifact function exactly:
uint8 NHWC RGB in, the weights' preprocessing (:meth:`fcn_jax.preprocessing.Preprocessing.apply`,
op for op), SpeedPaper's mean-pixel padding to multiples of 32, logits NHWC float32 and/or
uint8 argmax labels out.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from fcn_jax.checkpoint import WeightsMetadata
from fcn_jax.errors import FCNError
from fcn_jax.export.graph import (
    Sizes,
    artifact_info,
    check_labels,
    output_names,
    package_version,
)
from fcn_jax.export.info import ArtifactInfo, TensorSpec
from fcn_jax.models import NetSpec
from fcn_jax.models.spec import RESNET_ARCHS, Variables
from fcn_jax.preprocessing import LUMA_WEIGHTS, Preprocessing

OPSET = 18  # ONNX Runtime >= 1.14, TensorRT >= 8.6
EXAMPLE_SIZES = (2, 70, 90)  # traced example (batch, height, width): no side torch specialises


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        raise FCNError(
            "--format onnx exports through PyTorch: install the torch extra "
            "(pip install 'fcn-jax[torch,export]')"
        ) from None
    return torch


def torch_network(spec: NetSpec, variables: Variables) -> Any:
    """The PyTorch twin of ``spec`` holding ``variables``, eval mode, without an aux head."""
    torch = _torch()
    from fcn_jax.convert import torch_state_dict
    from fcn_jax.torch_reference import torch_model

    net = torch_model(spec)
    state = {
        k: torch.from_numpy(np.asarray(v).copy())
        for k, v in torch_state_dict(variables, spec).items()
    }
    net.load_state_dict(state, strict=True)
    if spec.arch in RESNET_ARCHS:
        net.aux_classifier = None  # a training loss: the artifact computes ``out`` only
    return net.eval()


def artifact_module(spec: NetSpec, net: Any, outputs: str) -> Any:
    """:class:`ArtifactModule` (built here so that torch is imported only when exporting)."""
    torch = _torch()

    class ArtifactModule(torch.nn.Module):
        """uint8 [N, H, W, 3] RGB per input -> per head, logits NHWC and/or uint8 labels."""

        def __init__(self) -> None:
            super().__init__()
            self.net = net
            self.names = output_names(spec, outputs)

        def forward(self, *images: Any) -> tuple[Any, ...]:
            h, w = images[0].shape[1], images[0].shape[2]
            xs = [
                preprocess(pad_to_multiple(x.float(), spec, p), p)
                for x, p in zip(images, spec.preprocessing, strict=True)
            ]
            out = self.net(tuple(xs) if spec.streams else xs[0])
            if not isinstance(out, dict):
                out = {spec.head_names[0]: out}
            several = len(spec.heads) > 1
            result = []
            for _, head, kind in self.names:
                scores = out[head if several else next(iter(out))]
                if spec.input_multiple > 1:  # crop SpeedPaper's padding back off
                    scores = scores[:, :, :h, :w]
                if kind == "logits":
                    result.append(scores.permute(0, 2, 3, 1).float())
                else:
                    result.append(scores.argmax(1).to(torch.uint8))
            return tuple(result)

    def pad_to_multiple(x: Any, spec: NetSpec, p: Preprocessing) -> Any:
        """SpeedPaper's padding: below and right, with the mean pixel (NetSpec.pad_inputs)."""
        m = spec.input_multiple
        if m == 1:
            return x
        h, w = x.shape[1], x.shape[2]
        pixel = torch.tensor(p.mean_pixel(), dtype=torch.float32)
        # x - pixel + pixel is exact for whole numbers up to 255: a plain zero Pad in between.
        padded = torch.nn.functional.pad(x - pixel, (0, 0, 0, (m - w % m) % m, 0, (m - h % m) % m))
        return padded + pixel

    def preprocess(x: Any, p: Preprocessing) -> Any:
        """Preprocessing.apply in torch, op for op; NHWC float pixels -> NCHW network input."""
        if p.grey:
            wr, wg, wb = LUMA_WEIGHTS
            luma = torch.floor(
                (x[..., 0] * wr + x[..., 1] * wg + x[..., 2] * wb + 32768.0) / 65536.0
            )
            x = luma[..., None].expand(-1, -1, -1, 3)
        if p.channel_order == "BGR":
            x = x.flip(-1)
        if p.scale != 255:
            x = x * (p.scale / 255.0)
        mean = torch.tensor(p.mean, dtype=torch.float32)
        std = torch.tensor(p.std, dtype=torch.float32)
        return ((x - mean) / std).permute(0, 3, 1, 2)

    return ArtifactModule().eval()


def _set_dims(value: Any, spec: TensorSpec) -> None:
    """Name a graph input's or output's dims as the description does (``batch``, ...)."""
    dims = value.type.tensor_type.shape.dim
    for dim, side in zip(dims, spec.shape, strict=True):
        if isinstance(side, str):
            dim.dim_param = side
        else:
            dim.dim_value = int(side)


def export_onnx(
    variables: Variables,
    metadata: WeightsMetadata,
    out: str | Path,
    *,
    outputs: str = "both",
    sizes: Sizes = (None, None, None),
    dtype: str = "float32",
    source: dict | None = None,
) -> ArtifactInfo:
    """Write ``out``, an ONNX model with dynamic axes and the description in its metadata props.

    Args:
        variables: the weights' variables.
        metadata: their metadata.
        out: the ``.onnx`` file to write.
        outputs: ``logits``, ``labels`` or ``both``.
        sizes: (batch, height, width), None where dynamic.
        dtype: ``float32`` only (ONNX Runtime's CPU provider has no bfloat16 convolutions).
        source: extra provenance for the description (weights directory, step).

    Returns:
        The artifact's description, as written to the props.

    Raises:
        FCNError: bfloat16, labels for over 256 classes, or torch / onnx missing.
    """
    if dtype != "float32":
        raise FCNError(
            "--format onnx --dtype bfloat16: ONNX Runtime's CPU provider has no bfloat16 "
            "convolutions; export float32 (or --format stablehlo for bfloat16)"
        )
    torch = _torch()
    try:
        import onnx
    except ImportError:
        raise FCNError(
            "--format onnx needs the onnx package (pip install 'fcn-jax[export]')"
        ) from None
    spec = metadata.spec
    check_labels(spec, outputs)
    module = artifact_module(spec, torch_network(spec, variables), outputs)
    info = artifact_info(
        "onnx",
        metadata,
        variables,
        outputs=outputs,
        sizes=sizes,
        dtype=dtype,
        source=dict(source or {}),
        more_versions={
            "torch": torch.__version__.split("+")[0],
            "onnx": onnx.__version__,
            "onnxscript": package_version("onnxscript"),
            "opset": OPSET,
        },
    )
    shape = tuple(s if s is not None else e for s, e in zip(sizes, EXAMPLE_SIZES, strict=True))
    example = tuple(torch.randint(0, 256, (*shape, 3), dtype=torch.uint8) for _ in spec.inputs)
    dynamic = {i: torch.export.Dim.DYNAMIC for i, s in enumerate(sizes) if s is None}
    log = io.StringIO()
    # The exporter prints its steps, and torch.export warns about its own pytree internals.
    with contextlib.redirect_stdout(log), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        try:
            program = torch.onnx.export(
                module,
                example,
                dynamo=True,
                input_names=[t.name for t in info.inputs],
                output_names=[t.name for t in info.outputs],
                # forward(*images): torch.export sees one argument, the tuple of inputs.
                dynamic_shapes=(tuple(dynamic for _ in spec.inputs),),
                opset_version=OPSET,
                verbose=False,
            )
        except Exception as e:  # torch.export's many error types
            if sizes[1] is not None:
                raise
            raise FCNError(
                f"{spec.arch} ({spec.backbone}) cannot be exported to ONNX with dynamic sizes "
                f"({type(e).__name__}: {str(e).strip().splitlines()[0]}): export a fixed size "
                "with --height and --width"
            ) from None
    proto = program.model_proto
    for value, t in zip(proto.graph.input, info.inputs, strict=True):
        _set_dims(value, t)
    for value, t in zip(proto.graph.output, info.outputs, strict=True):
        _set_dims(value, t)
    for key, value in info.to_props().items():
        proto.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(out))
    return info
