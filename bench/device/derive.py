"""Derive planner/cost/kernels.py's tables from the measurements in bench/device/results/.

    .venv/bin/python bench/device/derive.py

prints the tables as they must appear in kernels.py; tests/cost/test_kernels.py re-derives them
and fails if kernels.py and the measurement files disagree.

- Matmul fraction: the median over every measured GEMM of at least LARGE_GEMM_FLOPS of achieved
  FLOP/s / (peak x the shape's tile and wave quantization efficiency, compute.py), so that the
  fraction and the quantization model together reproduce the measurements.
- Attention: each measured causal call of a backend as (forward FLOPs, forward FLOP/s,
  backward FLOP/s), in order of size.
- Host time per layer pass, where the GPU waits on Python and kernel launches: Megatron-Core's
  GPT model (local layer spec) with 12 layers minus 1 layer, over 11, forward and backward
  (megatron_host.py; the h 512 model, whose GPU time per layer is well under its wall time);
  plain PyTorch modules (torchtitan, DeepSpeed): the eager h 512 layer of kernels.py.
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


def per_layer(path: Path, experts: int | None = None) -> tuple[float, float, float]:
    """(forward, backward, GPU-busy) seconds per layer of one megatron_host.py run: the model
    with 12 layers minus the one with 1, over 11 (h 512)."""
    runs = json.loads(path.read_text())["runs"]
    by = {(r["layers"], r["h"], r.get("experts")): r for r in runs}
    one, many = by[(1, 512, experts)], by[(12, 512, experts)]
    layers = many["layers"] - one["layers"]
    forward = (many["forward_s"] - one["forward_s"]) / layers
    both = (many["forward_backward_s"] - one["forward_backward_s"]) / layers
    return forward, both - forward, (many["kernel_busy_s"] - one["kernel_busy_s"]) / layers


def host_layer_pass() -> dict[str, tuple[float, float]]:
    """Megatron: the median over the dense runs (three machines of one kind: the host time
    varied by +-20% between them); plain PyTorch: the eager toy layer."""
    dense = [per_layer(p) for p in sorted(RESULTS.glob("megatron-host-h100-*.json"))]
    assert all(busy < forward + backward for forward, backward, busy in dense)  # host-bound
    forward = statistics.median(d[0] for d in dense)
    backward = statistics.median(d[1] for d in dense)
    toy = next(e for e in load("h100-sxm5-80gb")["layers"] if e["h"] == 512)
    assert toy["kernel_busy_s"] < toy["forward_backward_s"]
    plain = (round(toy["forward_s"], 5), round(toy["forward_backward_s"] - toy["forward_s"], 5))
    return {"megatron": (round(forward, 5), round(backward, 5)),
            "torchtitan": plain, "deepspeed": plain}


def host_expert_pass() -> dict[str, tuple[float, float]]:
    """Megatron: host seconds each further sequential expert adds to an MoE layer (forward,
    backward): the slope between the MoE layers with 2 and 8 experts (megatron_host.py
    --experts, SequentialMLP, top-2 routing), both host-bound."""
    moe = RESULTS / "megatron-host-moe-h100.json"
    (f2, b2, busy2), (f8, b8, busy8) = per_layer(moe, 2), per_layer(moe, 8)
    assert busy2 < f2 + b2 and busy8 < f8 + b8  # host-bound
    return {"megatron": (round((f8 - f2) / 6, 6), round((b8 - b2) / 6, 6))}


def main() -> None:
    gpus = sorted(p for p in RESULTS.glob("*.json") if p.stem in GPU_CATALOG)
    moe = RESULTS / "megatron-host-moe-h100.json"
    for experts in (2, 8):
        forward, backward, busy = per_layer(moe, experts)
        print(f"# MoE layer, {experts} sequential experts: host {forward * 1e3:.2f} + "
              f"{backward * 1e3:.2f} ms, GPU busy {busy * 1e3:.2f} ms")
    for path in gpus:
        gpu_id = path.stem
        for precision, frac in matmul_fracs(gpu_id).items():
            print(f'    ("{gpu_id}", "{precision}"): {frac},')
    for path in gpus:
        for kernel, rows in attention_rates(path.stem).items():
            print(f'    ("{path.stem}", "{kernel}"): (')
            for row in rows:
                print(f"        {row},")
            print("    ),")
    for framework, (forward, backward) in host_layer_pass().items():
        print(f'    "{framework}": ({forward}, {backward}),')
    for framework, (forward, backward) in host_expert_pass().items():
        print(f'    "{framework}": ({forward}, {backward}),  # per sequential expert')


if __name__ == "__main__":
    main()
