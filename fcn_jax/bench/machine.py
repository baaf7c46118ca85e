"""What a benchmark ran on: devices, their memory, drivers, and the software stack.

Everything here is read, never assumed: a field that the backend or the host does not report
is None (a CPU has no device memory limit; ``nvidia-smi`` is missing on a TPU VM).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from importlib import metadata
from typing import Any

# Distributions whose versions a report names, where installed: the frameworks, JAX's device
# plugins (CUDA, TPU, ROCm) and the rest of the stack.
PACKAGES = (
    "jax",
    "jaxlib",
    "jax-cuda12-plugin",
    "jax-cuda12-pjrt",
    "jax-cuda13-plugin",
    "jax-cuda13-pjrt",
    "jax-rocm60-plugin",
    "libtpu",
    "libtpu-nightly",
    "flax",
    "optax",
    "orbax-checkpoint",
    "grain",
    "numpy",
    "torch",
    "torchvision",
    "triton",
)


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Installed version of each distribution in ``names`` that is installed."""
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def jax_devices() -> dict[str, Any]:
    """JAX's backend and devices: platform, kind, count, hosts, memory of the first device."""
    import jax

    devices = jax.devices()
    stats = devices[0].memory_stats() or {}
    return {
        "platform": jax.default_backend(),
        "device_kind": devices[0].device_kind,
        "device_count": len(devices),
        "local_device_count": jax.local_device_count(),
        "process_count": jax.process_count(),
        # What XLA's allocator may use on one device (GPU/TPU; None on a CPU).
        "memory_bytes": stats.get("bytes_limit"),
    }


def nvidia_smi() -> list[dict[str, str]] | None:
    """One dict per GPU from ``nvidia-smi`` (name, memory, driver, clocks), or None without it."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    fields = (
        "name",
        "memory.total",
        "driver_version",
        "clocks.max.sm",
        "power.limit",
        "pci.bus_id",
    )
    try:
        out = subprocess.run(
            [exe, f"--query-gpu={','.join(fields)}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return [
        dict(zip(fields, (v.strip() for v in line.split(",")), strict=False))
        for line in out.strip().splitlines()
    ]


def torch_device_info(torch_device: str | None) -> dict[str, Any]:
    """The view torch has of its device: CUDA / cuDNN versions and the GPU's name and memory."""
    try:
        import torch
    except ImportError:
        return {"torch": None}
    info: dict[str, Any] = {
        "device": torch_device,
        "cuda_version": torch.version.cuda,
        "cudnn_version": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        "cuda_available": torch.cuda.is_available(),
        "num_threads": torch.get_num_threads(),
    }
    if torch_device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info |= {
            "name": props.name,
            "memory_bytes": int(props.total_memory),
            "multiprocessors": int(props.multi_processor_count),
            "capability": f"{props.major}.{props.minor}",
        }
    return info


def describe_machine(torch_device: str | None) -> dict[str, Any]:
    """The whole description a report starts with (JSON-ready)."""
    return {
        "host": {
            "python": platform.python_version(),
            "system": f"{platform.system()} {platform.release()}",
            "machine": platform.machine(),
            "cpu_count": os.cpu_count(),
        },
        "jax": jax_devices(),
        "torch": torch_device_info(torch_device),
        "nvidia_smi": nvidia_smi(),
        "versions": package_versions(),
        "env": {
            k: os.environ.get(k)
            for k in ("XLA_FLAGS", "XLA_PYTHON_CLIENT_PREALLOCATE", "CUDA_VISIBLE_DEVICES")
            if os.environ.get(k) is not None
        },
    }


def machine_lines(machine: dict[str, Any]) -> list[str]:
    """The description as Markdown bullet lines."""
    j, t = machine["jax"], machine["torch"]
    mem = j["memory_bytes"] or t.get("memory_bytes")
    lines = [
        f"- device: {j['device_count']} x {j['device_kind']} ({j['platform']}), "
        f"{j['process_count']} process(es)" + (f", {mem / 2**30:.1f} GiB each" if mem else ""),
    ]
    for gpu in machine["nvidia_smi"] or []:
        lines.append(
            f"- nvidia-smi: {gpu.get('name')}, {gpu.get('memory.total')}, driver "
            f"{gpu.get('driver_version')}, max SM clock {gpu.get('clocks.max.sm')}, power limit "
            f"{gpu.get('power.limit')}"
        )
    if t.get("torch") is not None or "device" in t:
        lines.append(
            f"- torch on {t.get('device')}: CUDA {t.get('cuda_version')}, cuDNN "
            f"{t.get('cudnn_version')}"
            + (f", {t['multiprocessors']} SMs, capability {t['capability']}" if "name" in t else "")
        )
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items())
    h = machine["host"]
    lines.append(f"- software: Python {h['python']}, {versions}")
    lines.append(f"- host: {h['system']} {h['machine']}, {h['cpu_count']} CPUs")
    return lines
