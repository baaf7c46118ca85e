"""JAX against PyTorch on one case: same device, same weights, same inputs, interleaved repeats.

For each case both frameworks get the network of one random torchfcn-layout state dict
(:func:`fcn_jax.torch_reference.random_state_dict`, converted to Flax by
:func:`fcn_jax.convert.torchfcn_to_flax`) and the same seeded NumPy inputs, then:

- JAX: the jitted function is lowered and compiled explicitly (that wall time is
  ``jax_compile_s``), and the compiled executable is what gets timed, each call ended by
  ``block_until_ready``. ``forward`` is :func:`fcn_jax.models.make_forward`; ``train`` is the
  library's own train step (:func:`fcn_jax.train.step.make_steps`: summed cross-entropy, the
  release's SGD with momentum 0.99, weight decay, biases at 2x the rate, frozen upsampling, per
  example dropout keys), its state donated as in training.
- PyTorch: :class:`fcn_jax.torch_reference.TorchFCN`, eager, and ``torch.compile`` of it where
  that works (its compile time is its first call minus its steady time). ``forward`` runs under
  ``inference_mode``; ``train`` is the same recipe: summed cross-entropy (void 255 ignored), SGD
  with momentum 0.99, weight decay 5e-4 on weights, biases at 2x without decay, ``upscore*``
  frozen, dropout on, preprocessing (BGR minus the mean) inside the step as in JAX's.
- After compilation, one first call and ``warmup`` more untimed calls of each, the timed calls
  alternate between the frameworks (JAX, torch, torch.compile, JAX, ...), so drift in the
  machine's load (other processes, clocks, caches) hits all of them alike. Reported per image:
  the median, the quartiles and the extremes.

bfloat16 means the same in both: parameters stay float32, convolutions compute in bfloat16
(Flax's ``dtype``; ``torch.autocast``; with ``Plan.channels_last`` torch runs them in its
channels-last layout, its fast path on tensor cores), the loss in float32. float32 means full
float32: JAX under ``jax.default_matmul_precision("highest")``, torch with TF32 off. tf32 is
float32 at each framework's default precision on the device: TF32 tensor cores on NVIDIA Ampere
and later (JAX's default; torch with ``allow_tf32`` on), plain float32 on a CPU.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import gc
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fcn_jax.bench.flops import format_breakdown, gflop, layer_costs
from fcn_jax.bench.peaks import PEAK_SOURCE, known_peak, measure_matmul_tflops
from fcn_jax.bench.plan import Case, Plan
from fcn_jax.checkpoint import WeightsMetadata
from fcn_jax.configs import base, model_from_config
from fcn_jax.models import make_forward
from fcn_jax.preprocessing import CAFFE_VOC
from fcn_jax.resources import default_class_names
from fcn_jax.types import PyTree

LEARNING_RATE = 1e-10  # the release's FCN-32s rate: the weights barely move between repeats
VOID_FRACTION = 0.05  # share of void (255) labels in the synthetic targets
Runner = Callable[[], None]


@dataclasses.dataclass
class BenchEnv:
    """The devices and settings shared by every case of a run.

    Attributes:
        platform: JAX's default backend (``cpu``, ``gpu``, ``tpu``).
        device_kind: JAX's name for its first device.
        torch_device: ``cpu`` or ``cuda`` (same device as JAX), or None where torch cannot
            run on JAX's device (TPU, or a CPU-only torch beside a GPU JAX).
        torch_note: why torch is missing, or "".
        peaks: dtype -> (peak TFLOP/s or None, where the number comes from).
    """

    platform: str
    device_kind: str
    torch_device: str | None
    torch_note: str = ""
    peaks: dict[str, tuple[float | None, str]] = dataclasses.field(default_factory=dict)


def prepare(plan: Plan) -> BenchEnv:
    """Fix both frameworks' precision settings, pick torch's device, find the device's peaks."""
    from fcn_jax.convert.torch_files import import_torch_float32

    # Full float32 in torch, as in JAX's "highest": TF32 would be ~8x faster on Ampere+ and
    # make the comparison unfair to JAX's float32.
    torch = import_torch_float32()

    if plan.single_thread:  # XLA's half is in the environment (plan.single_thread_environment)
        torch.set_num_threads(1)

    # XLA autotunes its convolution algorithms while compiling; cuDNN's benchmark mode does the
    # same on the first call of each shape (absorbed by the warm-up).
    torch.backends.cudnn.benchmark = True
    device = jax.devices()[0]
    backend = jax.default_backend()
    torch_device, note = "cpu", ""
    if backend == "gpu":
        torch_device = "cuda" if torch.cuda.is_available() else None
        note = "" if torch_device else "JAX runs on a GPU but this torch is a CPU build"
    elif backend != "cpu":
        torch_device, note = None, f"torch has no {backend} backend here"
    env = BenchEnv(backend, device.device_kind, torch_device, note)
    for dtype in sorted({c.dtype for c in plan.cases}):
        env.peaks[dtype] = device_peak(backend, device.device_kind, dtype, torch_device)
    return env


def device_peak(
    backend: str, device_kind: str, dtype: str, torch_device: str | None = "cpu"
) -> tuple[float | None, str]:
    """(peak TFLOP/s, source): a datasheet's for known accelerators, else measured.

    CPUs and accelerators missing from :data:`~fcn_jax.bench.peaks.KNOWN_PEAKS` get the best
    matmul either framework reaches on the device (2048^3 on a CPU, 8192^3 on an accelerator).
    """
    found = None if backend == "cpu" else known_peak(device_kind, dtype)
    if found is not None:
        name, tflops = found
        return tflops, f"{name}, {PEAK_SOURCE}"
    n = 2048 if backend == "cpu" else 8192
    measured = measure_matmul_tflops(dtype, n, torch_device=torch_device)
    best = max(measured.values())
    shown = ", ".join(f"{k} {v:.3f}" for k, v in measured.items())
    return best, f"measured: best {n}^3 {dtype} matmul ({shown} TFLOP/s)"


# --- weights and inputs ----------------------------------------------------------------------


@dataclasses.dataclass
class Network:
    """One network in both frameworks, same weights.

    Attributes:
        variant: FCN variant.
        width_mult: hidden channel multiplier.
        n_class: classes.
        params: Flax params on JAX's device.
        torch_model: the :class:`~fcn_jax.torch_reference.TorchFCN` on torch's device (or None).
    """

    variant: str
    width_mult: float
    n_class: int
    params: PyTree
    torch_model: Any


def build_network(
    variant: str, width_mult: float, n_class: int, seed: int, torch_device: str | None
) -> Network:
    """Random torchfcn weights in every layer, loaded by torch and converted to Flax."""
    from fcn_jax.convert import TorchWeights, torchfcn_to_flax
    from fcn_jax.torch_reference import TorchFCN, random_state_dict

    state = random_state_dict(variant, n_class, width_mult, seed)
    source = TorchWeights(
        Path(f"<random {variant} width {width_mult:g}>"),
        "torchfcn",
        {k: v.numpy() for k, v in state.items()},
    )
    params = jax.device_put(torchfcn_to_flax(source, variant, n_class))
    model = None
    if torch_device is not None:
        model = TorchFCN(variant, n_class, width_mult)
        model.load_state_dict(state)
        model.to(torch_device)
    return Network(variant, width_mult, n_class, params, model)


def make_inputs(case: Case, n_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded images [B, H, W, 3] uint8 RGB and labels [B, H, W] int32 (5% void, 255)."""
    rng = np.random.default_rng([seed, case.height, case.width, case.batch])
    shape = (case.batch, case.height, case.width)
    images = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    labels = rng.integers(0, n_class, shape, dtype=np.int32)
    labels[rng.random(shape) < VOID_FRACTION] = 255
    return images, labels


# --- JAX -------------------------------------------------------------------------------------


@contextlib.contextmanager
def jax_precision(dtype: str) -> Iterator[None]:
    """Full float32 matmuls for float32 cases (XLA on GPU/TPU would otherwise use TF32/bf16).

    ``tf32`` and ``bfloat16`` cases compile at the default precision.
    """
    with jax.default_matmul_precision("highest" if dtype == "float32" else "default"):
        yield


def model_dtype(dtype: str) -> str:
    """The network's computation dtype for a case's ``dtype`` (``tf32`` stores float32)."""
    return "float32" if dtype == "tf32" else dtype


@dataclasses.dataclass
class Compiled:
    """A runner and what compiling it cost.

    Attributes:
        run: one call, returning when the device is done.
        compile_s: wall time of tracing, lowering and compiling (JAX), else None.
        xla_bytes: XLA's buffer plan for the executable: arguments + outputs + temporaries,
            minus what is aliased (donated), bytes; None where not reported.
        xla_flop: XLA's cost analysis of the executable, FLOPs per call; None where not
            reported. It counts only taps that fall inside the inputs (not on the padding) plus
            elementwise work (see :mod:`fcn_jax.bench.flops`), and a loop's body once: on
            XLA:CPU the train step's weight gradients, looped over bands of rows
            (:mod:`fcn_jax.models.conv`), are counted for one band each. ``gflop`` (the
            analytic model) is the figure the rates use.
        last: the last call's output (forward: logits, for the parity check; train: the
            state).
    """

    run: Runner
    compile_s: float | None = None
    xla_bytes: int | None = None
    xla_flop: float | None = None
    last: dict[str, Any] = dataclasses.field(default_factory=dict)


def _xla_flop(compiled: Any) -> float | None:
    try:
        cost = compiled.cost_analysis()
    except Exception:  # not every backend implements it
        return None
    if isinstance(cost, list | tuple):  # one entry per device program in older releases
        cost = cost[0] if cost else None
    return float(cost["flops"]) if cost and "flops" in cost else None


def _xla_bytes(compiled: Any) -> int | None:
    try:
        m = compiled.memory_analysis()
    except Exception:  # not every backend implements it
        return None
    if m is None:
        return None
    total = m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
    return int(total - m.alias_size_in_bytes)


def jax_forward(net: Network, case: Case, images: np.ndarray) -> Compiled:
    """The jitted inference function on preprocessed images, compiled for this case."""
    model = model_from_config(train_config(case, net.n_class))
    x = jax.device_put(CAFFE_VOC.apply(images))
    with jax_precision(case.dtype):
        start = time.perf_counter()
        compiled = make_forward(model).lower(net.params, x).compile()
        compile_s = time.perf_counter() - start
    result = Compiled(lambda: None, compile_s, _xla_bytes(compiled), _xla_flop(compiled))

    def run() -> None:
        result.last["out"] = compiled(net.params, x).block_until_ready()

    result.run = run
    return result


def train_config(case: Case, n_class: int) -> Any:
    """The release's recipe (SGD, momentum 0.99, weight decay 5e-4, biases 2x, summed loss)."""
    c = base()
    c.model.arch = case.variant
    c.model.n_class = n_class
    c.model.width = case.width_mult
    c.dtype = model_dtype(case.dtype)
    c.learning_rate = LEARNING_RATE
    return c


def make_jax_train_step(params: PyTree, case: Case, n_class: int, seed: int) -> tuple:
    """The library's jitted train step and a fresh state (own buffers: the step donates them).

    Returns:
        (train_step, state).
    """
    from fcn_jax.train.optim import make_optimizer
    from fcn_jax.train.step import create_train_state, make_steps

    config = train_config(case, n_class)
    model = model_from_config(config)
    tx = make_optimizer(config, params)
    metadata = WeightsMetadata(
        case.variant, n_class, default_class_names(n_class), case.width_mult, CAFFE_VOC
    )
    train_step = make_steps(
        model, metadata, tx, config.optim.loss, batch_size=case.batch
    ).train_step
    state = create_train_state(jax.tree.map(jnp.copy, params), tx, seed)
    return train_step, state


def compile_train(train_step: Any, state: PyTree, batch: PyTree, dtype: str) -> Compiled:
    """``train_step`` compiled for ``state`` and ``batch`` as placed; each run one update.

    The state is donated, so each run continues from the last one's state.
    """
    with jax_precision(dtype):
        start = time.perf_counter()
        compiled = train_step.lower(state, batch).compile()
        compile_s = time.perf_counter() - start
    result = Compiled(lambda: None, compile_s, _xla_bytes(compiled), _xla_flop(compiled))
    result.last["state"] = state

    def run() -> None:
        result.last["state"], metrics = compiled(result.last["state"], batch)
        jax.block_until_ready((result.last["state"], metrics))

    result.run = run
    return result


def jax_train(net: Network, case: Case, images: np.ndarray, labels: np.ndarray, seed: int):
    """One optimiser step of the library's train step, compiled for this case."""
    train_step, state = make_jax_train_step(net.params, case, net.n_class, seed)
    batch = jax.device_put({"image": images, "label": labels})
    return compile_train(train_step, state, batch, case.dtype)


# --- PyTorch ---------------------------------------------------------------------------------


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

    The run starts with TF32 off (:func:`prepare`); this turns it on for one case's calls and
    back off after.
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
    x = torch.from_numpy(np.asarray(CAFFE_VOC.apply(images)).transpose(0, 3, 1, 2).copy())
    x = x.to(device)
    if memory_format != "contiguous":
        model, x = _to_memory_format(copy.deepcopy(model), x, memory_format)
    fn = torch.compile(model) if compiled else model
    sync = _torch_sync(device)
    result = Compiled(lambda: None)

    def run() -> None:
        with torch.inference_mode(), _autocast(device, case.dtype):
            result.last["out"] = fn(x)
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
    weights, biases = [], []
    for name, p in model.named_parameters():
        if name.startswith("upscore"):  # frozen bilinear upsampling, as in JAX's step
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
    mean = torch.tensor(CAFFE_VOC.mean, dtype=torch.float32, device=device)
    sync = _torch_sync(device)

    def run() -> None:
        # CAFFE_VOC.apply in torch: RGB -> BGR, minus the mean (std 1), then NCHW.
        # The permuted NHWC tensor is channels-last in memory: say which layout is meant.
        x = (images_t.flip(-1).float() - mean).permute(0, 3, 1, 2).contiguous(memory_format=fmt)
        with _autocast(device, case.dtype):
            logits = fn(x)
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


def jax_peak_bytes() -> int | None:
    """JAX's device high-water mark so far (``peak_bytes_in_use``), where the backend keeps one.

    It cannot be reset: it is the largest of this case and every case before it.
    """
    stats = jax.devices()[0].memory_stats()
    if not stats or "peak_bytes_in_use" not in stats:
        return None
    return int(stats["peak_bytes_in_use"])


# --- timing ----------------------------------------------------------------------------------


def interleave(runners: dict[str, Runner], warmup: int, repeats: int) -> dict[str, list[float]]:
    """``warmup`` untimed calls of each runner, then ``repeats`` timed rounds, A B A B ...

    Returns:
        runner name -> wall seconds of each timed call.
    """
    for _ in range(warmup):
        for run in runners.values():
            run()
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return times


def per_image_ms(seconds: list[float], batch: int) -> dict[str, float]:
    """Median, quartiles and extremes of per-call wall times, as ms per image."""
    ms = np.asarray(seconds) * 1e3 / batch
    q1, median, q3 = np.percentile(ms, [25, 50, 75])
    return {
        "ms": float(median),
        "q1": float(q1),
        "q3": float(q3),
        "min": float(ms.min()),
        "max": float(ms.max()),
    }


def _first_call(run: Runner) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def error_text(e: BaseException) -> str:
    """An exception in one line: its type and the first line of its message (300 chars)."""
    lines = [line for line in str(e).strip().splitlines() if line.strip()]
    return f"{type(e).__name__}: {lines[0][:300] if lines else ''}"


def measure_case(
    case: Case, net: Network, plan: Plan, env: BenchEnv, compile_skip: str | None = None
) -> dict[str, Any]:
    """Run one case in both frameworks and return its JSON record (see the module docstring).

    Args:
        case: what to measure.
        net: its network in both frameworks.
        plan: the run's settings.
        env: from :func:`prepare`.
        compile_skip: a reason not to time ``torch.compile`` in this case (a time budget,
            say), recorded as its status; None to follow ``plan.torch_compile``.
    """
    with torch_precision(case.dtype):
        return _measure_case(case, net, plan, env, compile_skip)


def _measure_case(
    case: Case, net: Network, plan: Plan, env: BenchEnv, compile_skip: str | None
) -> dict[str, Any]:
    images, labels = make_inputs(case, net.n_class, plan.seed)
    runners: dict[str, Compiled] = {}
    if case.mode == "forward":
        runners["jax"] = jax_forward(net, case, images)
    else:
        runners["jax"] = jax_train(net, case, images, labels, plan.seed)
    compile_status, compile_first_s = "skipped: --notorch-compile", None
    memory_format = torch_memory_format(plan, case)
    if env.torch_device is None:
        compile_status = f"skipped: {env.torch_note}"
    else:
        dev = env.torch_device
        if case.mode == "forward":
            runners["torch"] = torch_forward(net, case, images, dev, False, memory_format)
        else:
            runners["torch"] = torch_train(net, case, images, labels, dev, False, memory_format)
        if plan.torch_compile and compile_skip is None:
            compile_status, compile_first_s, compiled = _try_torch_compile(
                case, net, images, labels, dev, memory_format
            )
            if compiled is not None:
                runners["torch_compile"] = compiled
        elif compile_skip is not None:
            compile_status = f"skipped: {compile_skip}"
        elif plan.quick:
            compile_status = "skipped: --quick"
    # One untimed first call each (JAX's runs the freshly compiled executable; torch's builds
    # its kernels / cuDNN plans; torch.compile's happened while compiling).
    jax_first_s = _first_call(runners["jax"].run)
    torch_first_s = _first_call(runners["torch"].run) if "torch" in runners else None
    torch_bytes = (
        torch_peak_bytes(env.torch_device, runners["torch"].run) if "torch" in runners else None
    )
    times = interleave({k: r.run for k, r in runners.items()}, plan.warmup, plan.repeats)
    stats = {k: per_image_ms(v, case.batch) for k, v in times.items()}
    return case_record(
        case,
        plan,
        env,
        stats,
        jax_compile_s=runners["jax"].compile_s,
        jax_first_call_s=jax_first_s,
        torch_first_call_s=torch_first_s,
        jax_xla_bytes=runners["jax"].xla_bytes,
        jax_xla_flop=runners["jax"].xla_flop,
        torch_bytes=torch_bytes,
        compile_status=compile_status,
        torch_compile_first_s=compile_first_s,
        rel_diff=_relative_difference(runners) if case.mode == "forward" else None,
        torch_memory_format=memory_format if "torch" in runners else None,
    )


def _try_torch_compile(
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
        first = _first_call(compiled.run)
    except Exception as e:  # any backend failure: record it and carry on with eager
        return f"failed: {error_text(e)}", None, None
    return "ok", first, compiled


def _relative_difference(runners: dict[str, Compiled]) -> float | None:
    """The last forward outputs' max |JAX - torch| / max |torch|: proof of the same weights."""
    if "torch" not in runners:
        return None
    ours = np.asarray(runners["jax"].last["out"], np.float32)
    theirs = runners["torch"].last["out"].float().cpu().numpy().transpose(0, 2, 3, 1)
    return float(np.abs(ours - theirs).max() / max(np.abs(theirs).max(), 1e-30))


def case_record(
    case: Case,
    plan: Plan,
    env: BenchEnv,
    stats: dict[str, dict[str, float]],
    *,
    jax_compile_s: float | None,
    jax_first_call_s: float,
    torch_first_call_s: float | None,
    jax_xla_bytes: int | None,
    jax_xla_flop: float | None,
    torch_bytes: int | None,
    compile_status: str,
    torch_compile_first_s: float | None,
    rel_diff: float | None,
    torch_memory_format: str | None = None,
) -> dict[str, Any]:
    """The JSON record of one measured case (per-image times in ms, sizes in bytes)."""
    work = gflop(case.variant, case.height, case.width, case.mode, case.width_mult, plan.n_class)
    peak = env.peaks.get(case.dtype, (None, ""))[0]
    record: dict[str, Any] = {**case.key(), "gflop": work}

    def framework(prefix: str, s: dict[str, float] | None) -> None:
        keys = ("ms", "q1", "q3", "min", "max")
        for k in keys:
            name = f"{prefix}_ms" if k == "ms" else f"{prefix}_ms_{k}"
            record[name] = None if s is None else s[k]
        ms = None if s is None else s["ms"]
        record[f"{prefix}_images_per_s"] = None if ms is None else 1e3 / ms
        tflops = None if ms is None else work / ms  # GFLOP per ms = TFLOP/s
        record[f"{prefix}_tflops"] = tflops
        record[f"{prefix}_peak_fraction"] = None if tflops is None or not peak else tflops / peak

    framework("jax", stats["jax"])
    framework("torch", stats.get("torch"))
    framework("torch_compile", stats.get("torch_compile"))
    jax_ms, torch_ms = record["jax_ms"], record["torch_ms"]
    record["ratio"] = jax_ms / torch_ms if torch_ms else None
    tc_ms = record["torch_compile_ms"]
    record["ratio_compiled"] = jax_ms / tc_ms if tc_ms else None
    record["jax_compile_s"] = jax_compile_s
    record["jax_first_call_s"] = jax_first_call_s
    record["torch_first_call_s"] = torch_first_call_s
    record["torch_compile_s"] = (
        None
        if torch_compile_first_s is None or tc_ms is None
        else max(torch_compile_first_s - tc_ms * case.batch / 1e3, 0.0)
    )
    record["torch_compile_status"] = compile_status
    record["jax_xla_bytes"] = jax_xla_bytes
    record["xla_gflop"] = None if jax_xla_flop is None else jax_xla_flop / case.batch / 1e9
    record["jax_peak_bytes"] = jax_peak_bytes()
    record["torch_peak_bytes"] = torch_bytes
    record["max_rel_diff"] = rel_diff
    record["torch_memory_format"] = torch_memory_format
    record["repeats"] = plan.repeats
    record["warmup"] = plan.warmup
    return record


# --- a run -----------------------------------------------------------------------------------


def networks(plan: Plan) -> Iterator[tuple[tuple[str, float], list[Case]]]:
    """The plan's cases grouped by network (variant, width), in the plan's order."""
    groups: dict[tuple[str, float], list[Case]] = {}
    for case in plan.cases:
        groups.setdefault((case.variant, case.width_mult), []).append(case)
    yield from groups.items()


def measure_all(
    plan: Plan,
    env: BenchEnv,
    skip: Callable[[Case], str | None] | None = None,
    on_record: Callable[[list[dict[str, Any]]], None] | None = None,
) -> list[dict[str, Any]]:
    """Measure every case of ``plan``, building each network once; prints a line per case.

    A case that raises (out of memory, say) is recorded as skipped with the error and the run
    goes on.

    Args:
        plan: the cases and settings.
        env: from :func:`prepare`.
        skip: returns a reason to skip a case (recorded as ``{**case, "skipped": reason}``).
        on_record: called with the records so far after each case (to save them as they come:
            a process the OS kills for memory keeps what it measured).
    """
    records = []
    for (variant, width_mult), cases in networks(plan):
        reasons = {c: skip(c) if skip else None for c in cases}
        net = None
        if not all(reasons.values()):  # some case of this network runs
            net = build_network(variant, width_mult, plan.n_class, plan.seed, env.torch_device)
        for case in cases:
            reason = reasons[case]
            if reason or net is None:
                records.append({**case.key(), "skipped": reason})
                print(f"{describe(case)}: skipped ({reason})", flush=True)
                continue
            try:
                record = measure_case(case, net, plan, env)
            except Exception as e:  # out of memory, a backend's error: record it, go on
                reason = f"failed: {error_text(e)}"
                records.append({**case.key(), "skipped": reason})
                print(f"{describe(case)}: {reason}", flush=True)
                free_device_memory()
                continue
            records.append(record)
            print(f"{describe(case)}: {summary_line(record)}", flush=True)
            if on_record is not None:
                on_record(records)
        del net
        gc.collect()
    return records


def free_device_memory() -> None:
    """Drop what a failed case left behind (its buffers and torch's cached blocks)."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def describe(case: Case) -> str:
    """``fcn8s train 256x256 b1 float32 w0.25``."""
    return (
        f"{case.variant} {case.mode} {case.height}x{case.width} b{case.batch} {case.dtype} "
        f"w{case.width_mult:g}"
    )


def summary_line(r: dict[str, Any]) -> str:
    """JAX and torch ms/image, and their ratio."""
    torch_part = "n/a" if r["torch_ms"] is None else f"{r['torch_ms']:.2f}"
    ratio = "n/a" if r["ratio"] is None else f"{r['ratio']:.2f}"
    return f"JAX {r['jax_ms']:.2f} ms/img, torch {torch_part} ms/img, JAX/torch {ratio}"


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def format_table(records: list[dict[str, Any]]) -> str:
    """Markdown table, one row per case; JAX/torch (ms per image, <1: JAX faster) leads."""
    header = (
        "| variant | mode | size | batch | dtype | width | **JAX/torch** | JAX ms/img [IQR] "
        "| torch ms/img [IQR] | torch.compile ms/img | JAX compile s | GFLOP/img "
        "| JAX TFLOP/s (% peak) | torch TFLOP/s (% peak) |"
    )
    rows = [header, _separator(header)]
    for r in records:
        case = (
            f"| {r['variant']} | {r['mode']} | {r['height']}x{r['width']} | {r['batch']} "
            f"| {r['dtype']} | {r['width_mult']:g} "
        )
        if r.get("skipped"):
            rows.append(case + f"| skipped: {r['skipped']} |" + " |" * 7)
            continue

        compiled = (
            _fmt(r["torch_compile_ms"], ".2f")
            if r["torch_compile_ms"] is not None
            else r["torch_compile_status"].split(":")[0]
        )
        rows.append(
            case + f"| **{_fmt(r['ratio'], '.2f')}** | {_timing(r, 'jax')} | {_timing(r, 'torch')} "
            f"| {compiled} | {_fmt(r['jax_compile_s'], '.1f')} | {r['gflop']:.2f} "
            f"| {_rate(r, 'jax')} | {_rate(r, 'torch')} |"
        )
    return "\n".join(rows)


def _timing(r: dict[str, Any], p: str) -> str:
    """``median [q1, q3]`` ms per image of framework ``p``."""
    if r[f"{p}_ms"] is None:
        return "n/a"
    return f"{r[f'{p}_ms']:.2f} [{r[f'{p}_ms_q1']:.2f}, {r[f'{p}_ms_q3']:.2f}]"


def _rate(r: dict[str, Any], p: str) -> str:
    """``TFLOP/s (% of peak)`` of framework ``p``."""
    if r[f"{p}_tflops"] is None:
        return "n/a"
    frac = r[f"{p}_peak_fraction"]
    pct = "" if frac is None else f" ({100 * frac:.1f}%)"
    return f"{r[f'{p}_tflops']:.3f}{pct}"


def _separator(header: str) -> str:
    return "|" + "---|" * (header.count("|") - 1)


def run_metadata(plan: Plan, env: BenchEnv, argv: list[str] | None = None) -> dict[str, Any]:
    """Device, versions, threads and precision settings of a run (written to ``run.json``)."""
    import flax
    import torch

    devices = jax.devices()
    return {
        "command": " ".join(argv if argv is not None else sys.argv),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "git_commit": git_commit(),
        "platform": env.platform,
        "device_kind": env.device_kind,
        "device_count": len(devices),
        "torch_device": env.torch_device,
        "torch_note": env.torch_note,
        "versions": {
            "python": platform.python_version(),
            "jax": jax.__version__,
            "jaxlib": jax.lib.__version__ if hasattr(jax.lib, "__version__") else None,
            "flax": flax.__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
        },
        "threads": {
            "single_thread": plan.single_thread,
            "load_average_1_5_15_min": os.getloadavg(),
            "cpu_count": os.cpu_count(),
            "torch_num_threads": torch.get_num_threads(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
        },
        "precision": {
            "jax_default_matmul_precision": "highest for float32 cases, default for bfloat16",
            "torch_allow_tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
            "torch_allow_tf32_cudnn": torch.backends.cudnn.allow_tf32,
            "torch_cudnn_benchmark": torch.backends.cudnn.benchmark,
            "bfloat16": "float32 params, bf16 compute (flax dtype / torch.autocast), f32 loss",
        },
        "peaks_tflops": {d: {"tflops": p, "source": s} for d, (p, s) in env.peaks.items()},
        "flop_convention": "2 FLOP per MAC, convolutions only; see fcn_jax/bench/flops.py",
        "memory": {
            "jax_xla_bytes": "XLA buffer plan of the executable: args + outputs + temps - aliased",
            "jax_peak_bytes": "device peak_bytes_in_use so far (process high-water mark; null "
            "where the backend keeps none, e.g. CPU)",
            "torch_peak_bytes": "torch.cuda.max_memory_allocated over one call (null on CPU)",
            "process_max_rss_bytes": _max_rss_bytes(),
        },
        "plan": {
            "repeats": plan.repeats,
            "warmup": plan.warmup,
            "torch_compile": plan.torch_compile,
            "n_class": plan.n_class,
            "seed": plan.seed,
            "quick": plan.quick,
            "learning_rate": LEARNING_RATE,
        },
    }


def git_commit() -> str | None:
    """The checkout's HEAD commit, or None outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _max_rss_bytes() -> int:
    """This process's peak resident memory (both frameworks, all cases): Linux reports KiB."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


def write_json(path: Path, data: Any) -> None:
    """Pretty, strict JSON: a NaN or infinity (a diverged output, say) becomes null."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_finite(data), indent=2, allow_nan=False) + "\n")


def _finite(data: Any) -> Any:
    if isinstance(data, float):
        return data if np.isfinite(data) else None
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_finite(v) for v in data]
    return data


def flop_breakdowns(plan: Plan) -> str:
    """Markdown: the per-layer forward MACs of each network and size in the plan."""
    parts = []
    seen = set()
    for c in plan.cases:
        key = (c.variant, c.height, c.width, c.width_mult)
        if key in seen:
            continue
        seen.add(key)
        layers = layer_costs(c.variant, c.height, c.width, c.width_mult, plan.n_class)
        parts.append(
            f"## {c.variant} {c.height}x{c.width}, width {c.width_mult:g}\n\n```\n"
            f"{format_breakdown(layers)}\n```\n"
        )
    return "\n".join(parts)


def run_bench(plan: Plan, out_dir: str | Path, argv: list[str] | None = None) -> list[dict]:
    """Measure every case, print the table and write it under ``out_dir``.

    Files: ``bench.json`` (a list of case records), ``bench.md`` (the table), ``run.json``
    (device, versions, threads, precision) and ``flops.md`` (per-layer FLOP breakdowns).

    Returns:
        The case records.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    env = prepare(plan)
    print(f"device: {env.device_kind} ({env.platform}); torch on {env.torch_device}", flush=True)
    records = measure_all(plan, env)
    table = format_table(records)
    write_json(out / "bench.json", records)
    (out / "bench.md").write_text(table + "\n")
    (out / "flops.md").write_text(flop_breakdowns(plan))
    write_json(out / "run.json", run_metadata(plan, env, argv))
    print("\n" + table)
    print(f"\nwrote bench.json, bench.md, run.json and flops.md to {out}")
    return records
