"""``bench.py --onnx``: the ONNX Runtime artifact beside the JAX and PyTorch forwards, on the CPU.

One case (FCN-8s, 500x500, batch 1, full width by default): the network's weights
(:func:`~fcn_jax.models.random_variables`: timing needs realistic magnitudes, not trained
values) exported as an ONNX artifact (:func:`~fcn_jax.export.onnx_torch.export_onnx`, logits
only), then three forwards from the same uint8 images, preprocessing included in each:

- ``jax``: :func:`~fcn_jax.models.predict_fn`, the function every fcn-jax tool runs;
- ``torch``: the artifact's own PyTorch module (the twin network behind the same uint8
  preprocessing), eager;
- ``onnxruntime``: the artifact, loaded as a consumer loads it
  (:func:`~fcn_jax.export.load_artifact`, CPU execution provider, its default threads).

Timed interleaved after warm-up calls (:func:`~fcn_jax.bench.timing.interleave`); writes
``onnx.json`` and ``onnx.md`` and returns the record: ms per image of each and the ratios
``onnxruntime / jax`` and ``onnxruntime / torch``.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from fcn_jax.bench.timing import interleave, jax_precision, per_image_ms
from fcn_jax.checkpoint import WeightsMetadata
from fcn_jax.export import load_artifact
from fcn_jax.export.graph import package_version
from fcn_jax.export.onnx_torch import artifact_module, export_onnx, torch_network
from fcn_jax.models import NetSpec, predict_fn, random_variables
from fcn_jax.resources import default_class_names


def run_onnx_bench(
    out: str | Path,
    *,
    arch: str = "fcn8s",
    size: tuple[int, int] = (500, 500),
    batch: int = 1,
    width: float = 1.0,
    repeats: int = 5,
    warmup: int = 1,
    seed: int = 0,
) -> dict[str, Any]:
    """Export, time the three forwards, write ``out/onnx.json`` and ``out/onnx.md``."""
    import torch

    spec = NetSpec.single(arch, 21, width=width)
    variables = random_variables(spec, seed)
    metadata = WeightsMetadata(spec, default_class_names(21))
    images = np.random.default_rng(seed).integers(0, 256, (batch, *size, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{arch}.onnx"
        start = time.perf_counter()
        export_onnx(variables, metadata, path, outputs="logits")
        export_s = time.perf_counter() - start
        artifact = load_artifact(path)  # ORT reads the file now; it may go afterwards
        artifact_bytes = path.stat().st_size
    forward = predict_fn(spec)
    module = artifact_module(spec, torch_network(spec, variables), "logits")
    x = torch.from_numpy(images)

    def run_jax() -> None:
        jax.block_until_ready(forward(variables, {"image": images}))

    def run_torch() -> None:
        with torch.no_grad():
            module(x)

    def run_ort() -> None:
        artifact(images)

    with jax_precision("float32"):
        times = interleave(
            {"jax": run_jax, "torch": run_torch, "onnxruntime": run_ort}, warmup, repeats
        )
    ms = {name: per_image_ms(t, batch) for name, t in times.items()}
    record = {
        "case": {"arch": arch, "size": list(size), "batch": batch, "width": width},
        "repeats": repeats,
        "warmup": warmup,
        "ms_per_image": ms,
        "ratio_ort_over_jax": ms["onnxruntime"]["ms"] / ms["jax"]["ms"],
        "ratio_ort_over_torch": ms["onnxruntime"]["ms"] / ms["torch"]["ms"],
        "artifact_bytes": artifact_bytes,
        "export_s": export_s,
        "threads": {
            "torch": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        },
        "versions": {
            "jax": jax.__version__,
            "torch": torch.__version__,
            "onnxruntime": package_version("onnxruntime"),
        },
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "onnx.json").write_text(json.dumps(record, indent=2) + "\n")
    (out / "onnx.md").write_text(markdown(record) + "\n")
    return record


def markdown(record: dict[str, Any]) -> str:
    """The record as a small table."""
    c = record["case"]
    lines = [
        f"{c['arch']} {c['size'][0]}x{c['size'][1]}, batch {c['batch']}, width {c['width']:g}, "
        f"CPU, float32, uint8 input with preprocessing, median of {record['repeats']}",
        "",
        "| runtime | ms / image | q1 | q3 |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, m in record["ms_per_image"].items():
        lines.append(f"| {name} | {m['ms']:.1f} | {m['q1']:.1f} | {m['q3']:.1f} |")
    lines += [
        "",
        f"onnxruntime / jax: {record['ratio_ort_over_jax']:.2f}; "
        f"onnxruntime / torch: {record['ratio_ort_over_torch']:.2f}; "
        f"artifact {record['artifact_bytes'] / 1e6:.1f} MB, exported in {record['export_s']:.1f} s",
    ]
    return "\n".join(lines)
