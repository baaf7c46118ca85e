"""Parity on the benchmark's device, before any timing: are the numbers being timed right?

On the bundled VOC sample (500x334, real content, a size no power of two divides), with
random weights in *every* layer (:func:`fcn_jax.torch_reference.random_state_dict`: score
layers and upsampling kernels non-zero, so the logits depend on all of them) converted from the
project's torch FCN, for each variant:

1. JAX on the device against torch on the same device, both full float32 (JAX precision
   ``highest``, torch TF32 off): max |logit difference| relative to the largest |logit|, within
   :data:`~fcn_jax.convert.check.PARITY_TOLERANCE` (1e-4, as on the CPU), and the argmax equal
   on every pixel whose top-2 margin exceeds it.
2. JAX on the device against torch on the CPU: the same test, against the reference that the
   CPU test suite checks (on a CPU-only run it is check 1, and not repeated).
3. bfloat16 JAX against float32 JAX on the device: the difference within
   :data:`BF16_TOLERANCE` of the scale, and the argmax equal wherever the top-2 margin exceeds
   twice that (a difference within the bound cannot flip those pixels); the overall agreement is
   reported alongside.
4. One step of the library's train step (the release's SGD recipe, dropout on, same keys) on the
   device against the same step on the host's CPU, from the same state: the params after the
   step, their difference relative to the size of the step's update in each layer, within
   :data:`TRAIN_TOLERANCE` (the bound the CPU data-parallel tests hold).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fcn_jax.bench.jax_side import jax_forward
from fcn_jax.bench.network import Network, build_network, train_config
from fcn_jax.bench.plan import Case
from fcn_jax.bench.timing import jax_precision
from fcn_jax.bench.torch_side import torch_forward
from fcn_jax.convert.check import PARITY_TOLERANCE, logit_agreement
from fcn_jax.types import PyTree

# bfloat16 keeps 8 bits of mantissa: a relative rounding of 2^-9 per operation, grown over the
# 15+ layers to ~1e-2 of the logit scale (on XLA:CPU, VOC sample: 1.0e-2 for FCN-8s and 8.6e-3
# for FCN-32s at full width, 1.1e-2 at width 1/16); 5x that is the bound.
BF16_TOLERANCE = 5e-2
# The params after one step may differ by this fraction of the step's own update per layer: the
# bound the CPU data-parallel tests hold (tests/train/test_parallel.py), where a different
# summation order leaves ~1e-7; a wrong gradient differs by ~1.
TRAIN_TOLERANCE = 1e-3
# The parity step's learning rate: 1e3 times the release's FCN-32s rate, so that every layer's
# update stands far above the float32 rounding of its params (the difference is measured
# relative to the update).
PARITY_LEARNING_RATE = 1e-7


@dataclasses.dataclass
class ParityCheck:
    """One comparison and its verdict.

    Attributes:
        variant: FCN variant.
        width: channel multiplier (1.0: the paper's network).
        check: ``float32``, ``float32 vs cpu``, ``bfloat16`` or ``train step``.
        ours: what was tested (``jax gpu float32``).
        reference: what it was compared with (``torch cuda float32``).
        compared: ``logits`` or ``params after one train step``.
        max_abs: max |ours - reference| (for the train step: of the worst layer).
        scale: the reference's scale: max |logit|, or the worst layer's max |update|.
        rel: max_abs / scale.
        tolerance: the bound on ``rel``.
        argmax_agreement: % of pixels with the same argmax (logits only).
        confident_agreement: % agreement where the reference's top-2 margin exceeds
            ``margin`` (must be 100).
        confident_pixels: how many pixels that is.
        margin: the margin, relative to the logit scale.
        passed: the verdict.
        seconds: wall time of the check, compiles included.
        note: anything the reader should know (the worst layer, a check that could not run).
    """

    variant: str
    width: float
    check: str
    ours: str
    reference: str
    compared: str
    max_abs: float | None
    scale: float | None
    rel: float | None
    tolerance: float
    argmax_agreement: float | None = None
    confident_agreement: float | None = None
    confident_pixels: int | None = None
    margin: float | None = None
    passed: bool = False
    seconds: float = 0.0
    note: str = ""


def compare_logits(
    ours: np.ndarray, ref: np.ndarray, tolerance: float, margin: float
) -> dict[str, Any]:
    """The fields of a logits :class:`ParityCheck`: difference, agreement, verdict."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    if ours.shape != ref.shape:
        raise AssertionError(f"shapes differ: {ours.shape} against {ref.shape}")
    max_abs = float(np.abs(ours - ref).max())
    scale = float(np.abs(ref).max())
    rel = max_abs / scale if scale > 0 else float(max_abs > 0)
    agree, confident, pixels = logit_agreement(list(ours), list(ref), margin)
    return {
        "max_abs": max_abs,
        "scale": scale,
        "rel": rel,
        "tolerance": tolerance,
        "argmax_agreement": agree,
        "confident_agreement": confident,
        "confident_pixels": pixels,
        "margin": margin,
        "passed": rel <= tolerance and confident == 100.0,
    }


def compare_steps(
    before: PyTree, ours: PyTree, ref: PyTree, tolerance: float = TRAIN_TOLERANCE
) -> dict[str, Any]:
    """Params after one step on two devices, each layer's difference relative to its update.

    A layer passes where ``max |ours - ref| <= tolerance * max |ref - before|`` plus the
    float32 rounding of its params (2 ulp of its largest |param|); the worst layer is reported.
    """
    worst: dict[str, Any] = {"rel": -1.0}
    flat_before = jax.tree_util.tree_leaves_with_path(before)
    flat_ours, flat_ref = jax.tree.leaves(ours), jax.tree.leaves(ref)
    passed = True
    for (path, p0), p1, r1 in zip(flat_before, flat_ours, flat_ref, strict=True):
        p0, p1, r1 = (np.asarray(a, np.float64) for a in (p0, p1, r1))
        update = float(np.abs(r1 - p0).max())
        diff = float(np.abs(p1 - r1).max())
        rounding = 2 * float(np.spacing(np.float32(np.abs(p0).max())))
        if update == 0.0:  # a frozen layer (the bilinear upsampling): must not move at all
            passed &= diff == 0.0 and float(np.abs(p1 - p0).max()) == 0.0
            continue
        rel = diff / update
        passed &= diff <= tolerance * update + rounding
        if rel > worst["rel"]:
            worst = {
                "rel": rel,
                "max_abs": diff,
                "scale": update,
                "layer": jax.tree_util.keystr(path),
            }
    return {
        "max_abs": worst.get("max_abs"),
        "scale": worst.get("scale"),
        "rel": worst["rel"] if worst["rel"] >= 0 else None,
        "tolerance": tolerance,
        "passed": bool(passed),
        "note": f"worst layer {worst['layer']}" if "layer" in worst else "",
    }


def _on_cpu(net: Network) -> Network:
    """The same network with its torch model on the CPU."""
    return dataclasses.replace(net, torch_model=copy.deepcopy(net.torch_model).to("cpu"))


def _torch_logits(compiled: Any) -> np.ndarray:
    return compiled.last["out"].float().cpu().numpy().transpose(0, 2, 3, 1)


def run_parity(
    variants: tuple[str, ...],
    width: float,
    torch_device: str | None,
    image: np.ndarray,
    label: np.ndarray,
    n_class: int = 21,
    seed: int = 0,
    on_check: Callable[[ParityCheck], None] | None = None,
    train_variants: tuple[str, ...] | None = None,
) -> list[ParityCheck]:
    """Every check of the module docstring, for each variant, in order.

    Args:
        variants: FCN variants (the suite: FCN-8s and FCN-32s).
        width: channel multiplier (1.0 on an accelerator; narrow in a CPU dry run).
        torch_device: torch's device beside JAX's (``cuda``, ``cpu``), or None (a TPU): then
            only the CPU reference is compared.
        image: [H, W, 3] uint8 RGB.
        label: [H, W] int labels (255 void) for the train step.
        n_class: classes.
        seed: seed of the random weights.
        on_check: called with each check as soon as it is done (to save it at once).
        train_variants: the variants whose train step is checked (None: all; a CPU dry run
            checks one, each train step costing a compile of ~15 s on XLA:CPU).

    Returns:
        The checks.
    """
    checks: list[ParityCheck] = []
    platform = jax.default_backend()

    def add(check: ParityCheck, start: float) -> None:
        check.seconds = time.perf_counter() - start
        checks.append(check)
        print(
            f"parity {check.variant} {check.check}: {check.ours} vs {check.reference}: "
            f"rel {_fmt(check.rel)} ({'PASS' if check.passed else 'FAIL'})",
            flush=True,
        )
        if on_check is not None:
            on_check(check)

    h, w = image.shape[:2]
    for variant in variants:
        # Without torch on JAX's device (a TPU), torch runs the reference on the CPU.
        net = build_network(variant, width, n_class, seed, torch_device or "cpu")
        f32 = Case(variant, "forward", h, w, 1, "float32", width)
        start = time.perf_counter()
        ours = jax_forward(net, f32, image[None])
        ours.run()
        jax_f32 = np.asarray(ours.last["out"], np.float32)
        references = []
        if torch_device is not None:
            references.append((torch_device, net))
        if torch_device != "cpu":
            references.append(("cpu", net if torch_device is None else _on_cpu(net)))
        for device, ref_net in references:
            ref = torch_forward(ref_net, f32, image[None], device, compiled=False)
            ref.run()
            fields = compare_logits(jax_f32, _torch_logits(ref), PARITY_TOLERANCE, PARITY_TOLERANCE)
            name = "float32" if device == torch_device else "float32 vs cpu"
            add(
                ParityCheck(
                    variant,
                    width,
                    name,
                    f"jax {platform} float32",
                    f"torch {device} float32",
                    "logits",
                    **fields,
                ),
                start,
            )
            start = time.perf_counter()
        bf16 = jax_forward(net, dataclasses.replace(f32, dtype="bfloat16"), image[None])
        bf16.run()
        fields = compare_logits(
            np.asarray(bf16.last["out"], np.float32), jax_f32, BF16_TOLERANCE, 2 * BF16_TOLERANCE
        )
        add(
            ParityCheck(
                variant,
                width,
                "bfloat16",
                f"jax {platform} bfloat16",
                f"jax {platform} float32",
                "logits",
                **fields,
            ),
            start,
        )
        if train_variants is not None and variant not in train_variants:
            continue
        start = time.perf_counter()
        fields = train_step_parity(net, variant, width, image, label, n_class, seed)
        note = fields.pop("note")
        if platform == "cpu":
            note = "the device is the CPU: both sides run the same program; " + note
        add(
            ParityCheck(
                variant,
                width,
                "train step",
                f"jax {platform} float32",
                "jax cpu float32",
                "params after one train step",
                **fields,
                note=note,
            ),
            start,
        )
    return checks


def train_step_parity(
    net: Network,
    variant: str,
    width: float,
    image: np.ndarray,
    label: np.ndarray,
    n_class: int,
    seed: int,
) -> dict[str, Any]:
    """One train step on JAX's default device and on the CPU from the same state: compared."""
    from fcn_jax.configs import spec_from_config
    from fcn_jax.train.optim import make_optimizer
    from fcn_jax.train.step import create_train_state, make_steps

    case = Case(variant, "train", *image.shape[:2], 1, "float32", width)
    config = train_config(case, n_class)
    config.learning_rate = PARITY_LEARNING_RATE
    params = jax.device_get(net.variables["params"])
    tx = make_optimizer(config, params)
    spec = spec_from_config(config)
    train_step = make_steps(spec, tx, config.optim.loss, batch_size=1).train_step
    batch = {"image": image[None], "label": label[None].astype(np.int32)}
    after = {}
    for name, device in (("device", jax.devices()[0]), ("cpu", jax.devices("cpu")[0])):
        # Each side gets its own copy: the step donates its state.
        state = jax.device_put(
            create_train_state({"params": jax.tree.map(jnp.array, params)}, tx, seed), device
        )
        with jax_precision("float32"):
            state, _ = train_step(state, jax.device_put(batch, device))
        after[name] = jax.device_get(state.params)
    return compare_steps(params, after["device"], after["cpu"])


def verdict(checks: list[ParityCheck]) -> str:
    """``pass`` when every check passed, ``fail`` otherwise (``not run`` without checks)."""
    if not checks:
        return "not run"
    return "pass" if all(c.passed for c in checks) else "fail"


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2e}"


def format_checks(checks: list[ParityCheck]) -> str:
    """The checks as a Markdown table (PASS / FAIL first)."""
    header = (
        "| verdict | variant | check | ours | reference | max abs diff | scale | rel "
        "| tolerance | argmax agree | confident agree (pixels) | s |"
    )
    rows = [header, "|" + "---|" * (header.count("|") - 1)]
    for c in checks:
        agree = "" if c.argmax_agreement is None else f"{c.argmax_agreement:.3f}%"
        confident = (
            ""
            if c.confident_agreement is None
            else f"{c.confident_agreement:.3f}% ({c.confident_pixels})"
        )
        rows.append(
            f"| **{'PASS' if c.passed else 'FAIL'}** | {c.variant} w{c.width:g} | {c.check} "
            f"| {c.ours} | {c.reference} | {_fmt(c.max_abs)} | {_fmt(c.scale)} | {_fmt(c.rel)} "
            f"| {c.tolerance:.0e} | {agree} | {confident} | {c.seconds:.1f} |"
        )
    notes = [f"- {c.variant} {c.check}: {c.note}" for c in checks if c.note]
    return "\n".join(rows + (["", *notes] if notes else []))
