"""What a benchmark run measures: its cases and settings, checked before anything is computed.

Kept free of jax and torch imports (beyond the variant table) so that a bad flag is reported in
a second, naming the flag.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

from fcn_jax.errors import FCNError, format_list
from fcn_jax.models.spec import ARCHS, SPEEDPAPER
from fcn_jax.models.speedpaper import STRIDE as SPEEDPAPER_MULTIPLE

MODES = ("forward", "train")
# float32: full float32 (TF32 off, JAX precision "highest"); tf32: float32 at the device's default
# precision (TF32 tensor cores on NVIDIA Ampere and later; plain float32 on a CPU); bfloat16:
# float32 params, bf16 compute.
DTYPES = ("float32", "tf32", "bfloat16")
DEFAULT_VARIANTS = ("fcn32s", "fcn16s", "fcn8s")
DEFAULT_SIZES = ((256, 256), (384, 384), (500, 500), (512, 512))
SCALING_SIZES = tuple((s, s) for s in (128, 256, 384, 512, 768, 1024))
SCALING_BATCHES = (1, 4)
QUICK_SCALING_SIZES = tuple((s, s) for s in (128, 256, 384, 512))
QUICK_SCALING_BATCHES = (1, 2)


@dataclasses.dataclass(frozen=True)
class Case:
    """One measured configuration, run by both frameworks.

    Attributes:
        variant: the network: an FCN variant (``fcn8s``, ...), ``speedpaper``,
            ``fcn_resnet50`` or ``fcn_resnet101`` (a :class:`~fcn_jax.models.NetSpec` arch).
        mode: ``forward`` (inference) or ``train`` (one optimiser step).
        height: input height.
        width: input width.
        batch: images per call.
        dtype: arithmetic, ``float32``, ``tf32`` or ``bfloat16`` (see :data:`DTYPES`;
            parameters stay float32).
        width_mult: hidden channel multiplier (1.0 is the paper's network).
    """

    variant: str
    mode: str
    height: int
    width: int
    batch: int
    dtype: str
    width_mult: float

    def key(self) -> dict[str, object]:
        """The case's fields, as the JSON records them."""
        return dataclasses.asdict(self)

    @classmethod
    def from_record(cls, record: dict[str, object]) -> Case:
        """The case a bench record (``{**case.key(), ...}``) was measured for."""
        return cls(**{f.name: record[f.name] for f in dataclasses.fields(cls)})


@dataclasses.dataclass(frozen=True)
class Plan:
    """A benchmark run.

    Attributes:
        cases: what to measure, in order.
        repeats: timed calls per framework and case (after the warm-up).
        warmup: untimed calls per framework and case, after compilation.
        torch_compile: also time ``torch.compile`` of the PyTorch FCN.
        n_class: classes of the network (21: PASCAL VOC).
        seed: seed of the weights and inputs.
        quick: the plan is ``--quick``'s (recorded in the run metadata).
        single_thread: both frameworks on one CPU thread (see :func:`single_thread_environment`).
        channels_last: torch runs bfloat16 cases in its channels-last memory layout (its fast
            path on tensor cores; JAX is NHWC throughout).
        jax_compiler_options: ``(name, value)`` XLA options every timed JAX executable is
            compiled with (``--jax-compiler-options``; none by default: JAX as shipped).
    """

    cases: tuple[Case, ...]
    repeats: int = 10
    warmup: int = 2
    torch_compile: bool = True
    n_class: int = 21
    seed: int = 0
    quick: bool = False
    single_thread: bool = False
    channels_last: bool = False
    jax_compiler_options: tuple[tuple[str, str], ...] = ()


CASE_FLAGS = ("variants", "sizes", "batch", "dtype", "mode", "width")


def check_suite_flags(
    suite: str, case_flags: dict[str, object], suite_flags: dict[str, object]
) -> dict[str, object]:
    """Check ``--suite``'s flags; returns the suite's options (None: the suite's default).

    A suite fixes its own cases, so a case flag beside it is an error rather than a silent
    override.

    Args:
        suite: the suite's name (``accelerator``).
        case_flags: flag name -> value of the flags that choose cases (None: not given).
        suite_flags: ``budget-s``, ``throughput-batch`` and ``dry-run`` (None: not given).

    Raises:
        FCNError: a clash or a bad value, naming the flag.
    """
    clash = [f"--{k}" for k, v in case_flags.items() if v is not None]
    if clash:
        raise FCNError(f"--suite {suite} sets its own cases; drop {', '.join(clash)}")
    budget, batch = suite_flags["budget-s"], suite_flags["throughput-batch"]
    if budget is not None and budget < 30:
        raise FCNError(
            f"--budget-s must be at least 30 (seconds for the whole run), got {budget:g}"
        )
    if batch is not None and batch < 1:
        raise FCNError(f"--throughput-batch must be at least 1, got {batch}")
    options: dict[str, object] = {"dry_run": suite_flags["dry-run"]}
    if budget is not None:
        options["budget_s"] = float(budget)
    if batch is not None:
        options["throughput_batch"] = batch
    return options


def single_thread_environment() -> None:
    """Ask XLA and torch for one CPU thread each; call before either starts its thread pool.

    On a shared or loaded machine, multi-threaded runs measure contention as much as the
    frameworks (torch's OpenMP threads wait for each other at every barrier when one of them is
    descheduled); one thread each compares like with like.

    XLA:CPU runs its YNNPACK/XNNPACK kernels (every convolution and matrix product) on its own
    thread pool, which ``--xla_cpu_multi_thread_eigen=false`` does not shrink, sized to the CPUs
    the process may run on when JAX's CPU backend starts: the backend is started here with the
    process bound to one CPU, then the binding is lifted (the one thread may run on any CPU).
    Without this, a "single-thread" JAX ran on every core (FCN-ResNet-50's forward at 520 px:
    7.0 s of CPU in 3.7 s).
    """
    # First: XLA stops reading its flags at a token that does not start with "--".
    flags = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = f"--xla_cpu_multi_thread_eigen=false {flags}".strip()
    os.environ["OMP_NUM_THREADS"] = "1"
    if not hasattr(os, "sched_setaffinity"):  # not Linux: XLA's pool keeps its size
        return
    import jax

    cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cpus)})
    try:
        jax.devices("cpu")  # starts the CPU backend, its pool sized to one CPU
    finally:
        os.sched_setaffinity(0, cpus)


def parse_choices(flag: str, values: Sequence[str], choices: Sequence[str]) -> tuple[str, ...]:
    """Check a comma list against its valid values; an unknown one names the flag."""
    values = tuple(v.strip() for v in values if v.strip())
    if not values:
        raise FCNError(f"--{flag} is empty; choose from {format_list(sorted(choices))}")
    for v in values:
        if v not in choices:
            raise FCNError(
                f"--{flag}: unknown value {v!r}; choose from {format_list(sorted(choices))}"
            )
    return values


def parse_ints(flag: str, values: Sequence[str], minimum: int = 1) -> tuple[int, ...]:
    """Positive integers of a comma list; anything else names the flag."""
    out = []
    for v in values:
        try:
            n = int(v)
        except ValueError:
            raise FCNError(f"--{flag}: {v!r} is not an integer") from None
        if n < minimum:
            raise FCNError(f"--{flag}: {n} is below {minimum}")
        out.append(n)
    if not out:
        raise FCNError(f"--{flag} is empty")
    return tuple(out)


def parse_sizes(values: Sequence[str]) -> tuple[tuple[int, int], ...]:
    """``--sizes``: ``S`` (a square) or ``HxW`` per item."""
    sizes = []
    for v in values:
        h, _, w = v.strip().lower().partition("x")
        hw = parse_ints("sizes", [h, w or h])
        sizes.append((hw[0], hw[1]))
    if not sizes:
        raise FCNError("--sizes is empty")
    return tuple(sizes)


def parse_widths(values: Sequence[str]) -> tuple[float, ...]:
    """``--width``: channel multipliers in (0, 4], multiples of 1/64 (1.0: the paper's net)."""
    widths = []
    for v in values:
        try:
            w = float(v)
        except ValueError:
            raise FCNError(f"--width: {v!r} is not a number") from None
        if not 0 < w <= 4:
            raise FCNError(f"--width: {w:g} is outside (0, 4]")
        # The converter infers the width from conv1_1's channels (64 x width): other widths
        # would round differently in the torch and the Flax networks.
        if (64 * w) % 1:
            raise FCNError(f"--width: {w:g} is not a multiple of 1/64 (conv1_1 has 64 x width)")
        widths.append(w)
    if not widths:
        raise FCNError("--width is empty")
    return tuple(widths)


def grid(
    variants: Sequence[str],
    sizes: Sequence[tuple[int, int]],
    batches: Sequence[int],
    dtypes: Sequence[str],
    modes: Sequence[str],
    widths: Sequence[float],
) -> tuple[Case, ...]:
    """Every combination, grouped by network (variant, width) so that weights are built once."""
    return tuple(
        Case(v, m, h, w, b, d, wm)
        for wm in widths
        for v in variants
        for d in dtypes
        for (h, w) in sizes
        for b in batches
        for m in modes
    )


def quick_cases() -> tuple[Case, ...]:
    """``--quick``: narrow networks at two sizes, and the paper's full width at one small size.

    Sized to finish in under 2 minutes on an idle 2-core CPU (101 s measured), compilation of
    both frameworks included.
    The full-width size is 192 px, the smallest round size whose fc6 output (pool5 - 6 = 7)
    is not smaller than fc6's 7x7 kernel: below that, XLA:CPU computes fc6's input gradient
    50-100x slower than at 192 px (~30 s a step at 128 px, against ~1 s), which alone would
    take the whole budget. The narrow 128 px cases still show that effect, scaled down.
    """
    narrow = grid(("fcn32s", "fcn8s"), ((128, 128), (256, 256)), (1,), ("float32",), MODES, (0.25,))
    full = grid(("fcn8s",), ((192, 192),), (1,), ("float32",), MODES, (1.0,))
    return narrow + full


def quick_summary() -> str:
    """``--quick``'s cases in words, built from :func:`quick_cases` so the help cannot drift."""
    groups: dict[float, dict[str, set]] = {}
    for c in quick_cases():
        g = groups.setdefault(c.width_mult, {"variants": set(), "sizes": set(), "modes": set()})
        g["variants"].add(c.variant)
        g["sizes"].add(c.height if c.height == c.width else f"{c.height}x{c.width}")
        g["modes"].add(c.mode)
    parts = []
    for width, g in sorted(groups.items()):
        net = "full width" if width == 1.0 else f"width {width:g}"
        variants = ", ".join(sorted(g["variants"]))
        sizes = ", ".join(str(v) for v in sorted(g["sizes"], key=str))
        parts.append(f"{variants} at {net}, {sizes} px")
    modes = " and ".join(sorted(next(iter(groups.values()))["modes"]))
    return "; ".join(parts) + f"; {modes}, batch 1, float32 (under 2 min on an idle 2-core CPU)"


def _check_speedpaper_sizes(cases: Sequence[Case]) -> None:
    """SpeedPaper's FCN adds its skips without crops: its input sides are multiples of 32."""
    m = SPEEDPAPER_MULTIPLE
    sizes = {(c.height, c.width) for c in cases if c.variant == SPEEDPAPER}
    bad = [f"{h}x{w}" for h, w in sorted(sizes) if h % m or w % m]
    if bad:
        raise FCNError(
            f"--variants {SPEEDPAPER} needs --sizes whose sides are multiples of {m} "
            f"(SpeedPaper's FCN adds its skips without crops), not {', '.join(bad)}"
        )


def parse_compiler_options(values: Sequence[str] | None) -> tuple[tuple[str, str], ...]:
    """``--jax-compiler-options``: ``name=value`` items, XLA's option names.

    E.g. ``xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT`` (XLA:CPU's
    convolutions by its Eigen kernels instead of YNNPACK's; see docs/benchmarks.md).
    """
    options = []
    for v in values or ():
        name, eq, value = v.strip().partition("=")
        if not eq or not name.strip():
            raise FCNError(f"--jax-compiler-options: {v!r} is not name=value")
        options.append((name.strip(), value.strip()))
    return tuple(options)


def make_plan(
    *,
    variants: Sequence[str] | None,
    sizes: Sequence[str] | None,
    batches: Sequence[str] | None,
    dtypes: Sequence[str] | None,
    modes: Sequence[str] | None,
    widths: Sequence[str] | None,
    repeats: int | None,
    warmup: int | None,
    torch_compile: bool | None,
    quick: bool = False,
    scaling: bool = False,
    n_class: int = 21,
    seed: int = 0,
    single_thread: bool = False,
    jax_compiler_options: Sequence[str] | None = None,
) -> Plan:
    """Build and check the plan from the command line's values (None: not given).

    ``--quick`` fixes its own cases (3 repeats, no warm-up beyond each framework's untimed
    first call, no torch.compile unless asked):
    combining it with a case flag is an error rather than a silent override. ``--scaling``
    changes the defaults to sizes 128 ... 1024, batches 1 and 4, FCN-8s (with ``--quick``:
    sizes 128 ... 512, batches 1 and 2, width 0.25).

    Raises:
        FCNError: a value that is not valid, naming its flag.
    """
    if n_class < 1:
        raise FCNError(f"--n-class must be positive, got {n_class}")
    xla_options = parse_compiler_options(jax_compiler_options)
    if repeats is not None and repeats < 1:
        raise FCNError(f"--repeats must be at least 1, got {repeats}")
    if warmup is not None and warmup < 0:
        raise FCNError(f"--warmup must be 0 or more, got {warmup}")
    given = {
        "variants": variants,
        "sizes": sizes,
        "batch": batches,
        "dtype": dtypes,
        "mode": modes,
        "width": widths,
    }
    if quick and not scaling:
        clash = [f"--{k}" for k, v in given.items() if v is not None]
        if clash:
            raise FCNError(f"--quick sets its own cases; drop {', '.join(clash)} or --quick")
        return Plan(
            quick_cases(),
            repeats=repeats or 3,
            warmup=0 if warmup is None else warmup,  # after each framework's first call
            torch_compile=bool(torch_compile),
            n_class=n_class,
            seed=seed,
            quick=True,
            single_thread=single_thread,
            jax_compiler_options=xla_options,
        )
    if scaling:
        default_sizes = QUICK_SCALING_SIZES if quick else SCALING_SIZES
        default_batches = QUICK_SCALING_BATCHES if quick else SCALING_BATCHES
    else:
        default_sizes, default_batches = DEFAULT_SIZES, (1,)
    cases = grid(
        parse_choices("variants", variants, ARCHS)
        if variants is not None
        else (("fcn8s",) if scaling else DEFAULT_VARIANTS),
        parse_sizes(sizes) if sizes is not None else default_sizes,
        parse_ints("batch", batches) if batches is not None else default_batches,
        parse_choices("dtype", dtypes, DTYPES) if dtypes is not None else ("float32",),
        parse_choices("mode", modes, MODES) if modes is not None else MODES,
        parse_widths(widths) if widths is not None else ((0.25,) if quick else (1.0,)),
    )
    _check_speedpaper_sizes(cases)
    return Plan(
        cases,
        repeats=repeats or (3 if quick else 10),
        warmup=(1 if quick else 2) if warmup is None else warmup,
        torch_compile=(not quick) if torch_compile is None else torch_compile,
        n_class=n_class,
        seed=seed,
        quick=quick,
        single_thread=single_thread,
        jax_compiler_options=xla_options,
    )
