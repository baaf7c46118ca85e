"""The PyTorch side of a case: the network's PyTorch model, eager or compiled.

The model is :class:`fcn_jax.torch_reference.TorchFCN` for the paper's variants, torchvision's
own ``fcn_resnet50`` / ``fcn_resnet101`` and :class:`~fcn_jax.torch_reference.
TorchSpeedPaperFCN` for the others (:mod:`fcn_jax.bench.network`).
``forward`` runs under ``inference_mode`` in ``eval()`` (BatchNorm on its running statistics);
``train`` is the release's recipe, as in JAX's step: summed cross-entropy of the ``out`` head
(void 255 ignored), SGD with momentum 0.99, weight decay 5e-4 on weights (BatchNorm's scales
too, as in JAX), biases at 2x without decay, the upsampling frozen (``upscore*``; SpeedPaper's
learns), ``train()`` mode (dropout on, BatchNorm on the batch's statistics), the network's
preprocessing inside the step. ``torch.compile`` is tried where the plan asks (its compile
time is its first call minus its steady time).

bfloat16 is ``torch.autocast`` (with ``Plan.channels_last``, in torch's channels-last layout,
its fast path on tensor cores); float32 runs with TF32 off (set once by
:func:`fcn_jax.bench.env.prepare`), tf32 with it on (:func:`torch_precision`).

torch is imported inside each function: a JAX-only run never loads it.
"""

from __future__ import annotations

import contextlib
import copy
import gc
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from fcn_jax.bench.network import LEARNING_RATE, Network
from fcn_jax.bench.plan import Case, Plan
from fcn_jax.bench.records import error_text
from fcn_jax.bench.timing import Compiled, Runner, first_call
from fcn_jax.configs import base
from fcn_jax.models.spec import is_upsampling
from fcn_jax.preprocessing import Preprocessing


def _torch_sync(device: str) -> Callable[[], None]:
    import torch

    return torch.cuda.synchronize if device == "cuda" else (lambda: None)


def _autocast(device: str, dtype: str) -> Any:
    import torch

    if dtype != "bfloat16":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device, dtype=torch.bfloat16)


@contextlib.contextmanager
def torch_precision(dtype: str) -> Iterator[None]:
    """TF32 on in torch's matmuls and cuDNN convolutions for ``tf32`` cases only.

    The run starts with TF32 off (:func:`fcn_jax.bench.env.prepare`); this turns it on for one
    case's calls and back off after.
    """
    import torch

    on = dtype == "tf32"
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = on
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def torch_memory_format(plan: Plan, case: Case) -> str:
    """``channels_last`` for bfloat16 cases of a plan that asks for it, else ``contiguous``."""
    return "channels_last" if plan.channels_last and case.dtype == "bfloat16" else "contiguous"


def _to_memory_format(model: Any, x: Any, memory_format: str) -> tuple[Any, Any]:
    import torch

    if memory_format == "contiguous":
        return model, x
    fmt = torch.channels_last
    return model.to(memory_format=fmt), x.contiguous(memory_format=fmt)


def _logits(out: Any) -> Any:
    """The ``out`` scores of a model's output: torchvision's FCNs return a dict of heads."""
    return out["out"] if isinstance(out, dict) else out


def _preprocess(p: Preprocessing, images: Any, fmt: Any) -> Any:
    """``p.apply`` in torch, on uint8 RGB [B, H, W, 3]: float32 [B, 3, H, W] in layout ``fmt``."""
    import torch

    if p.grey:
        raise NotImplementedError("bench.py's networks take colour inputs")
    x = images.flip(-1) if p.channel_order == "BGR" else images
    x = x.float() * (p.scale / 255.0) if p.scale != 255 else x.float()
    mean = torch.tensor(p.mean, dtype=torch.float32, device=x.device)
    std = torch.tensor(p.std, dtype=torch.float32, device=x.device)
    # The permuted NHWC tensor is channels-last in memory: say which layout is meant.
    return ((x - mean) / std).permute(0, 3, 1, 2).contiguous(memory_format=fmt)


def torch_forward(
    net: Network,
    case: Case,
    images: np.ndarray,
    device: str,
    compiled: bool,
    memory_format: str = "contiguous",
) -> Compiled:
    """Eager (or ``torch.compile``d) inference on the same preprocessed images, NCHW.

    ``memory_format="channels_last"`` runs a channels-last copy of the model (the network's
    own model stays contiguous for the other cases).
    """
    import torch

    model = net.torch_model.eval()
    (x,) = net.spec.preprocess({net.spec.inputs[0]: images})
    x = torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy()).to(device)
    if memory_format != "contiguous":
        model, x = _to_memory_format(copy.deepcopy(model), x, memory_format)
    fn = torch.compile(model) if compiled else model
    sync = _torch_sync(device)
    result = Compiled(lambda: None)

    def run() -> None:
        with torch.inference_mode(), _autocast(device, case.dtype):
            result.last["out"] = _logits(fn(x))
        sync()

    result.run = run
    return result


def torch_train(
    net: Network,
    case: Case,
    images: np.ndarray,
    labels: np.ndarray,
    device: str,
    compiled: bool,
    memory_format: str = "contiguous",
) -> Compiled:
    """One step of the release's recipe on a copy of the torch model (the original stays put)."""
    import torch
    import torch.nn.functional as F

    model = copy.deepcopy(net.torch_model).train()
    fmt = torch.channels_last if memory_format == "channels_last" else torch.contiguous_format
    model = model.to(memory_format=fmt)
    spec = net.spec
    weights, biases = [], []
    for name, p in model.named_parameters():
        if is_upsampling(name) and not spec.learn_upsampling:  # frozen, as in JAX's step
            p.requires_grad_(False)
        else:
            (biases if name.endswith(".bias") else weights).append(p)
    o = base().optim
    opt = torch.optim.SGD(
        [
            {"params": weights, "weight_decay": o.weight_decay},
            {"params": biases, "lr": o.bias_lr_mult * LEARNING_RATE, "weight_decay": 0.0},
        ],
        lr=LEARNING_RATE,
        momentum=o.momentum,
    )
    fn = torch.compile(model) if compiled else model
    images_t = torch.from_numpy(images).to(device)
    labels_t = torch.from_numpy(labels).long().to(device)
    sync = _torch_sync(device)

    def run() -> None:
        x = _preprocess(spec.preprocessing[0], images_t, fmt)
        with _autocast(device, case.dtype):
            logits = _logits(fn(x))
        loss = F.cross_entropy(logits.float(), labels_t, ignore_index=255, reduction="sum")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync()

    return Compiled(run)


def torch_peak_bytes(device: str, run: Runner) -> int | None:
    """Peak memory torch's allocator reached during one more call (CUDA only; else None)."""
    import torch

    if device != "cuda":
        return None
    torch.cuda.reset_peak_memory_stats()
    run()
    return int(torch.cuda.max_memory_allocated())


def try_torch_compile(
    case: Case,
    net: Network,
    images: np.ndarray,
    labels: np.ndarray,
    device: str,
    memory_format: str,
) -> tuple[str, float | None, Compiled | None]:
    """``torch.compile`` the case: (status, first call's seconds, runner), Nones on failure."""
    import torch

    # Each case compiles for its own static shapes: without a reset, dynamo would recompile
    # the next shape as a dynamic-shape graph, a different (usually slower) program.
    torch._dynamo.reset()
    try:
        if case.mode == "forward":
            compiled = torch_forward(net, case, images, device, True, memory_format)
        else:
            compiled = torch_train(net, case, images, labels, device, True, memory_format)
        first = first_call(compiled.run)
    except Exception as e:  # any backend failure: record it and carry on with eager
        return f"failed: {error_text(e)}", None, None
    return "ok", first, compiled


def free_device_memory() -> None:
    """Drop what a failed case left behind (its buffers and torch's cached blocks)."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
