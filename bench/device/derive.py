"""Derive planner/cost/kernels.py's tables from the measurements in bench/device/results/.

    .venv/bin/python bench/device/derive.py

prints the tables as they must appear in kernels.py; tests/cost/test_kernels.py re-derives them
and fails if kernels.py and the measurement files disagree.

- Matmul fraction: the median over every measured GEMM of at least LARGE_GEMM_FLOPS of achieved
  FLOP/s / (peak x the shape's tile and wave quantization efficiency, compute.py), so that the
  fraction and the quantization model together reproduce the measurements.
- Attention: each measured causal call of a backend as (forward FLOPs, forward FLOP/s,
  backward FLOP/s), in order of size.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from planner.cost.compute import Gemm, quantization_efficiency
from planner.gpus import GPU_CATALOG

RESULTS = Path(__file__).resolve().parent / "results"

# GEMMs of at least this many FLOPs fill the GPU long enough that their rate is the GPU's and
# not launch overhead's (the benchmark launches back to back from Python: ~13 us per call).
LARGE_GEMM_FLOPS = 1e11

# bench/device/kernels.py's SDPA backend names -> AttentionKernel values.
BACKENDS = {"flash": "fa2", "cudnn": "cudnn"}


def load(gpu_id: str) -> dict[str, Any]:
    data = json.loads((RESULTS / f"{gpu_id}.json").read_text())
    assert isinstance(data, dict)
    return data


def matmul_fracs(gpu_id: str) -> dict[str, float]:
    gpu = GPU_CATALOG[gpu_id]
    fracs: dict[str, list[float]] = {}
    for g in load(gpu_id)["gemms"]:
        if "s" not in g or g.get("twin_of_fp8"):
            continue
        gemm = Gemm(m=g["m"], n=g["n"], k=g["k"], batch=g["batch"])
        if gemm.flops < LARGE_GEMM_FLOPS:
            continue
        achieved = gemm.flops / g["s"]
        fracs.setdefault(g["precision"], []).append(
            achieved / (gpu.peak(g["precision"]) * quantization_efficiency(gemm, gpu.num_sms)))
    return {p: round(statistics.median(v), 3) for p, v in sorted(fracs.items())}


def attention_rates(gpu_id: str) -> dict[str, tuple[tuple[float, float, float], ...]]:
    rows: dict[str, list[tuple[float, float, float]]] = {}
    for a in load(gpu_id)["attention"]:
        if a["backend"] not in BACKENDS or "forward_s" not in a:
            continue
        flops = 4.0 * a["b"] * a["heads"] * a["s"] ** 2 * a["d"] * 0.5
        rows.setdefault(BACKENDS[a["backend"]], []).append(
            (float(f"{flops:.3e}"), round(a["forward_tflops"], 1), round(a["backward_tflops"], 1)))
    return {k: tuple(sorted(v)) for k, v in sorted(rows.items())}


def main() -> None:
    for path in sorted(RESULTS.glob("*.json")):
        gpu_id = path.stem
        for precision, frac in matmul_fracs(gpu_id).items():
            print(f'    ("{gpu_id}", "{precision}"): {frac},')
    for path in sorted(RESULTS.glob("*.json")):
        for kernel, rows in attention_rates(path.stem).items():
            print(f'    ("{path.stem}", "{kernel}"): (')
            for row in rows:
                print(f"        {row},")
            print("    ),")


if __name__ == "__main__":
    main()
