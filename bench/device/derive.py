"""Derive planner/cost/kernels.py's tables from the measurements in bench/device/results/.

    .venv/bin/python bench/device/derive.py

prints the tables as they must appear in kernels.py; tests/cost/test_kernels.py re-derives them
and fails if kernels.py and the measurement files disagree.

- Matmul fraction: the median over every measured GEMM of at least LARGE_GEMM_FLOPS of achieved
  FLOP/s / (peak x the shape's tile and wave quantization efficiency x its K loop's share,
  compute.py), so that the fraction and the shape model together reproduce the measurements.
- K-loop overhead: the per-tile cost, in elements of K, that best fits the measured GEMMs of at
  least FILLED_GEMM_FLOPS with the fractions refit under it (gemm_k_overhead).
- Attention: each measured causal call of a backend as (forward FLOPs, forward FLOP/s,
  backward FLOP/s), in order of size.
- Host time per layer pass, where the GPU waits on Python and kernel launches: Megatron-Core's
  GPT model (local layer spec) with 12 layers minus 1 layer, over 11, forward and backward
  (megatron_host.py; the h 512 model, whose GPU time per layer is well under its wall time);
  plain PyTorch modules (torchtitan, DeepSpeed): the eager h 512 layer of kernels.py.
- Deterministic mode (megatron_host.py --deterministic, Megatron's --deterministic-mode): each
  megatron-host-det-h100-N.json was run on the machine, minutes apart, of the plain run
  megatron-host-h100-N.json, so the two differ by the mode alone. Host: what the mode adds to a
  dense layer pass, and what it adds to an MoE layer beyond that; GPU: the fill kernels
  PyTorch runs on every torch.empty (torch.utils.deterministic.fill_uninitialized_memory), as a
  multiple of the layer's stored activations written at HBM speed.
- Multi-latent attention's host factor: not timed; the ratio of the operators an MLA layer and
  the dense layer dispatch, counted on the CPU (bench/op_counts.py ->
  bench/results/megatron-op-counts.json).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from planner.cost import kernels
from planner.cost.compute import Gemm, memory_time_s, quantization_efficiency
from planner.gpus import GPU_CATALOG
from planner.memory import layer_activation_bytes
from planner.model import Activation, ModelSpec, Norm, PositionEmbedding
from planner.parallel import ParallelConfig, Recompute

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


def _gemms(gpu_id: str, min_flops: float) -> list[tuple[Gemm, str, float]]:
    """(shape, precision, measured seconds) of the timed GEMMs of at least min_flops."""
    out = []
    for g in load(gpu_id)["gemms"]:
        if "s" not in g or g.get("twin_of_fp8"):
            continue
        gemm = Gemm(m=g["m"], n=g["n"], k=g["k"], batch=g["batch"])
        if gemm.flops >= min_flops:
            out.append((gemm, g["precision"], g["s"]))
    return out


def matmul_fracs(gpu_id: str, k_overhead: float = kernels.GEMM_K_OVERHEAD
                 ) -> dict[str, float]:
    gpu = GPU_CATALOG[gpu_id]
    fracs: dict[str, list[float]] = {}
    for gemm, precision, seconds in _gemms(gpu_id, LARGE_GEMM_FLOPS):
        shape_rate = (gpu.peak(precision) * quantization_efficiency(gemm, gpu.num_sms)
                      * gemm.k / (gemm.k + k_overhead))
        fracs.setdefault(precision, []).append(gemm.flops / seconds / shape_rate)
    return {p: round(statistics.median(v), 3) for p, v in sorted(fracs.items())}


# GEMMs this long keep the GPU busy past the benchmark's launch interval: their timings are the
# GPU's, so the K-loop overhead is fitted on them.
FILLED_GEMM_FLOPS = 2e10


def gemm_k_overhead(gpu_ids: tuple[str, ...] = ("h100-sxm5-80gb", "h200-sxm-141gb")) -> int:
    """The K-loop overhead (elements of K, a multiple of 32 up to 512) that, with each GPU's
    fractions refit under it (matmul_fracs), minimises the median |error| of compute.py's
    roofline over the measured GEMMs of at least FILLED_GEMM_FLOPS; the smaller on a tie."""
    def error(k_overhead: int) -> float:
        errors = []
        for gpu_id in gpu_ids:
            gpu = GPU_CATALOG[gpu_id]
            fracs = matmul_fracs(gpu_id, k_overhead)
            for gemm, precision, seconds in _gemms(gpu_id, FILLED_GEMM_FLOPS):
                rate = (gpu.peak(precision) * fracs.get(precision, fracs["bf16"])
                        * min(quantization_efficiency(gemm, gpu.num_sms), gpu.power_scale)
                        * gemm.k / (gemm.k + k_overhead))
                one = 1 if precision == "fp8" else 2
                traffic = (one * (gemm.m * gemm.k + gemm.k * gemm.n)
                           + 2 * gemm.m * gemm.n) * gemm.batch
                modelled = max(gemm.flops / rate, memory_time_s(traffic, gpu))
                errors.append(abs(modelled / seconds - 1))
        return statistics.median(errors)
    return min(range(0, 513, 32), key=lambda k: (round(error(k), 6), k))


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
    """Megatron: the median over the dense runs (six runs on five machines of one kind: the
    host time varied by up to 1.7x between them, and by 1.5x between two runs of one machine);
    plain PyTorch: the eager toy layer."""
    dense = [per_layer(p) for p in _plain_runs() if _has_runs(p, None)]
    assert all(busy < forward + backward for forward, backward, busy in dense)  # host-bound
    forward = statistics.median(d[0] for d in dense)
    backward = statistics.median(d[1] for d in dense)
    toy = next(e for e in load("h100-sxm5-80gb")["layers"] if e["h"] == 512)
    assert toy["kernel_busy_s"] < toy["forward_backward_s"]
    plain = (round(toy["forward_s"], 5), round(toy["forward_backward_s"] - toy["forward_s"], 5))
    return {"megatron": (round(forward, 5), round(backward, 5)),
            "torchtitan": plain, "deepspeed": plain}


def _plain_runs() -> list[Path]:
    """The megatron_host.py runs without --deterministic."""
    return [p for p in sorted(RESULTS.glob("megatron-host-*.json")) if "-det-" not in p.name]


def _has_runs(path: Path, experts: int | None) -> bool:
    """Whether a megatron_host.py run timed h 512 layers with `experts` (None: dense)."""
    return any(r.get("experts") == experts and r["h"] == 512
               for r in json.loads(path.read_text())["runs"])


def _moe_runs() -> list[Path]:
    """The plain (not deterministic) runs that timed MoE layers."""
    return [p for p in _plain_runs() if _has_runs(p, 8)]


def host_expert_pass() -> dict[str, tuple[float, float]]:
    """Megatron: host seconds each further sequential expert adds to an MoE layer (forward,
    backward): the slope between the MoE layers with 2 and 8 experts (megatron_host.py's MoE
    shapes, SequentialMLP, top-2 routing), both host-bound; the median over the runs."""
    slopes = []
    for path in _moe_runs():
        (f2, b2, busy2), (f8, b8, busy8) = per_layer(path, 2), per_layer(path, 8)
        assert busy2 < f2 + b2 and busy8 < f8 + b8  # host-bound
        slopes.append(((f8 - f2) / 6, (b8 - b2) / 6))
    return {"megatron": (round(statistics.median(s[0] for s in slopes), 6),
                         round(statistics.median(s[1] for s in slopes), 6))}


def _deterministic_pairs() -> list[tuple[Path, Path]]:
    """(plain run, deterministic run) of one machine and one MoE router setting (aux-loss
    top-2 with the all-to-all dispatcher; sinkhorn top-1 with the all-gather dispatcher, as
    Megatron's local-spec MoE tests run). megatron-host-det-allgather-h100-4.json has no plain
    partner (MoE layers only) and is not used."""
    pairs = []
    for det in sorted(RESULTS.glob("megatron-host-det-*.json")):
        plain = RESULTS / det.name.replace("-det-", "-")
        assert json.loads(det.read_text())["deterministic"]
        if plain.exists():
            pairs.append((plain, det))
    assert len(pairs) == 3
    return pairs


def host_deterministic_pass() -> dict[str, tuple[tuple[float, float], tuple[float, float]]]:
    """Megatron: ((forward, backward) host seconds deterministic mode adds to a dense layer
    pass, (forward, backward) it adds to an MoE layer beyond that), the medians over the pairs
    (and, for MoE, over the layers with 2 and 8 experts)."""
    dense, moe = [], []
    for plain, det in _deterministic_pairs():
        f0, b0, _ = per_layer(plain)
        f1, b1, _ = per_layer(det)
        dense.append((f1 - f0, b1 - b0))
        for experts in (2, 8):
            mf0, mb0, _ = per_layer(plain, experts)
            mf1, mb1, _ = per_layer(det, experts)
            moe.append((mf1 - mf0 - (f1 - f0), mb1 - mb0 - (b1 - b0)))

    def med(rows: list[tuple[float, float]]) -> tuple[float, float]:
        return (round(statistics.median(r[0] for r in rows), 6),
                round(statistics.median(r[1] for r in rows), 6))
    return {"megatron": (med(dense), med(moe))}


def bench_layer(h: int) -> tuple[ModelSpec, ParallelConfig]:
    """megatron_host.py's dense model of hidden size h as the planner describes it: GPT layers
    (LayerNorm, GeLU, biases, learned positions, dropout 0.1), unfused attention (the local
    spec's DotProductAttention), micro-batch 4, sequence 1024.

    Not described: megatron_host.py runs masked_softmax_fusion=False (the fused kernel needs
    apex or TE), PyTorch's fp32 softmax path, 28 bytes per score forward where the planner
    prices the fused kernel's 4 at 1024 keys. The runs' GPU time per layer (1.93 ms at h 512,
    3.84 ms at h 1024) is 2.4-2.7x what this description prices (0.71, 1.61 ms); the unfused
    softmax's traffic accounts for about 0.9 and 1.7 ms of it. deterministic_fill_factor
    divides by this description's stored activations: a ratio to it, used with the same
    description of other layers."""
    heads = h // 64
    model = ModelSpec(name=f"megatron_host h{h}", num_layers=12, hidden_size=h,
                      num_attention_heads=heads, num_query_groups=heads, ffn_hidden_size=4 * h,
                      vocab_size=50304, activation=Activation.GELU, norm=Norm.LAYERNORM,
                      position_embedding=PositionEmbedding.LEARNED,
                      max_position_embeddings=1024, tie_embeddings=True, add_bias_linear=True,
                      head_dim=64, hidden_dropout=0.1, attention_dropout=0.1)
    return model, ParallelConfig(mbs=4, global_batch=4, seq_len=1024, flash_attention=False)


def deterministic_fill_factor() -> float:
    """GPU seconds deterministic mode adds to a layer's forward and backward (the fills of
    fill_uninitialized_memory), over the time to write the layer's stored activations
    (memory.layer_activation_bytes) once at HBM speed (compute.memory_time_s): the median over
    the pairs and the two dense widths (h 512 and 1024). The ratio held within 10% across both
    widths, whose activations differ by 2x, and across the three pairs."""
    gpu = GPU_CATALOG["h100-sxm5-80gb"]
    ratios = []
    for plain, det in _deterministic_pairs():
        for h in (512, 1024):
            model, cfg = bench_layer(h)
            written = memory_time_s(layer_activation_bytes(model, cfg, 0, Recompute.NONE), gpu)
            ratios.append((_busy(det, h) - _busy(plain, h)) / written)
    assert max(ratios) / min(ratios) < 1.1
    return round(statistics.median(ratios), 2)


def _busy(path: Path, h: int) -> float:
    """GPU-busy seconds per dense layer of width h (12 layers minus 1, over 11)."""
    by = {(r["layers"], r["h"], r.get("experts")): r
          for r in json.loads(path.read_text())["runs"]}
    return (by[(12, h, None)]["kernel_busy_s"] - by[(1, h, None)]["kernel_busy_s"]) / 11


OP_COUNTS = Path(__file__).resolve().parents[1] / "results" / "megatron-op-counts.json"


def host_mla_factor() -> dict[str, tuple[float, float]]:
    """(forward, backward) host-time factor of a Megatron-Core layer with multi-latent
    attention over the dense layer megatron_host.py timed: the ratio of the operators each
    dispatches per layer (bench/op_counts.py, counted on the CPU; not timed on a GPU)."""
    kinds = json.loads(OP_COUNTS.read_text())["kinds"]
    dense, mla = kinds["dense"], kinds["mla"]
    return {"megatron": tuple(  # type: ignore[dict-item]
        round(mla[f"{phase}_ops_per_layer"] / dense[f"{phase}_ops_per_layer"], 3)
        for phase in ("forward", "backward"))}


def main() -> None:
    gpus = sorted(p for p in RESULTS.glob("*.json") if p.stem in GPU_CATALOG)
    for path in _moe_runs():
        for experts in (2, 8):
            forward, backward, busy = per_layer(path, experts)
            print(f"# {path.name}: MoE layer, {experts} sequential experts: host "
                  f"{forward * 1e3:.2f} + {backward * 1e3:.2f} ms, GPU busy {busy * 1e3:.2f} ms")
    print(f"GEMM_K_OVERHEAD = {gemm_k_overhead()}")
    for path in gpus:
        gpu_id = path.stem
        for precision, frac in matmul_fracs(gpu_id, gemm_k_overhead()).items():
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
    for framework, (dense, moe) in host_deterministic_pass().items():
        print(f'    "{framework}": ({dense}, {moe}),  # deterministic: dense, MoE beyond')
    print(f"DETERMINISTIC_FILL_FACTOR = {deterministic_fill_factor()}")
    for framework, (forward, backward) in host_mla_factor().items():
        print(f'    "{framework}": ({forward}, {backward}),  # MLA host factor')


if __name__ == "__main__":
    main()
