"""Kernel rates and host time measured for this project on real GPUs (pure data).

bench/device/kernels.py timed, on one lent GPU of each type (2026-11-27; the machine, its 700 W
power limit and clocks are in each file), the validation cases' own GEMM shapes in bf16 and fp8
and causal attention per PyTorch SDPA backend; the raw timings are in bench/device/results/,
and bench/device/derive.py turns them into the tables below (tests/cost/test_kernels.py
re-derives them, so the two cannot drift apart).

What the measurements showed that datasheet and microbenchmark figures miss:
- Sustained clocks. A bf16 8192^3 GEMM run back to back for 6 s held the H100 at its 700 W
  limit with the SM clock at 1372 MHz (1980 maximum), 663 TFLOP/s; short bursts run near 800
  (the MAMF figure in gpus.py). On the validation cases' large GEMMs the H100 sustained 0.71 of
  peak after tile and wave quantization, not 0.80. Training runs for hours: the sustained rate
  is the one to price GEMMs at.
- Attention kernels differ by 2x. At sequence 8192, 32 heads of 128, causal, PyTorch's
  FlashAttention-2 backend ran at 322 TFLOP/s forward and 284 backward on the H100; cuDNN's
  fused attention (what Transformer Engine and recent PyTorch pick on Hopper) at 629 and 497.
  Small calls run far below large ones (too few query tiles to fill 132 SMs, short key loops).
- Host time. Megatron-Core's GPT model (local layer spec, h 512, micro-batch 4, sequence 1024)
  took 4.5-5.6 ms per layer for forward and backward while its kernels kept the GPU busy for
  1.9 ms: the GPU waited on Python, autograd and kernel launches (75 kernels per layer). A layer
  pass never takes less than its host time, however little GPU work it has.
"""

from __future__ import annotations

import bisect
import functools
import math

# (GPU id, precision) -> sustained fraction of dense peak on large GEMMs (>= 1e11 FLOPs),
# with compute.py's quantization efficiency applied on top. gpus.py's catalog takes these as
# the matmul fractions of the GPUs measured (and of the H800, the H100's die).
MATMUL_FRAC: dict[tuple[str, str], float] = {
    ("h100-sxm5-80gb", "bf16"): 0.728,
    ("h100-sxm5-80gb", "fp8"): 0.648,
    ("h200-sxm-141gb", "bf16"): 0.72,
    ("h200-sxm-141gb", "fp8"): 0.659,
}

# Elements of K that a GEMM's fixed per-tile work costs on top of its K loop: a GEMM runs at
# k / (k + GEMM_K_OVERHEAD) of the rate its tiles allow (compute.k_loop_efficiency). Each
# output tile loads its pipeline before the loop and converts and writes its result after it;
# with a short K that is a large share. The measured GEMMs show it on both GPUs: over calls of
# at least 2e10 FLOPs (launch overhead out of the way), measured / modelled time was 1.30 at
# k 512, 1.09 at 1024, 1.05 at 2048, 1.02 at 4096 and 0.98 at 8192 and above before the term
# (medians, H100; the H200 alike). derive.py's gemm_k_overhead picks the value, in steps of
# 32, with the fractions above refit under it, that minimises the median |error| over those
# calls: 3.3% (4.1% without). Measured down to k 512; shorter K loops (attention's head-width
# GEMMs) are extrapolated.
GEMM_K_OVERHEAD = 128

# (GPU id, attention kernel) -> measured causal calls in order of size:
# (forward FLOPs counting half the scores, forward TFLOP/s, backward TFLOP/s with backward
# FLOPs = 2.5 x forward).
ATTENTION_TFLOPS: dict[tuple[str, str], tuple[tuple[float, float, float], ...]] = {
    ("h100-sxm5-80gb", "cudnn"): (
        (4295000000.0, 179.7, 52.7),
        (12880000000.0, 286.1, 153.7),
        (68720000000.0, 448.5, 338.7),
        (137400000000.0, 406.5, 323.6),
        (1100000000000.0, 628.7, 497.1),
        (8796000000000.0, 560.7, 553.4),
        (35180000000000.0, 612.7, 520.1),
    ),
    ("h100-sxm5-80gb", "fa2"): (
        (4295000000.0, 93.6, 68.4),
        (12880000000.0, 128.7, 118.9),
        (68720000000.0, 221.6, 191.8),
        (137400000000.0, 264.6, 209.7),
        (1100000000000.0, 321.8, 284.2),
        (8796000000000.0, 344.3, 305.6),
        (35180000000000.0, 333.6, 315.0),
    ),
    ("h200-sxm-141gb", "cudnn"): (
        (4295000000.0, 138.8, 58.2),
        (12880000000.0, 280.2, 154.0),
        (68720000000.0, 449.2, 361.4),
        (137400000000.0, 413.9, 326.7),
        (1100000000000.0, 625.2, 456.9),
        (8796000000000.0, 573.3, 521.9),
        (35180000000000.0, 587.9, 532.6),
    ),
    ("h200-sxm-141gb", "fa2"): (
        (4295000000.0, 127.1, 53.7),
        (12880000000.0, 127.2, 122.4),
        (68720000000.0, 214.0, 201.9),
        (137400000000.0, 260.3, 212.9),
        (1100000000000.0, 324.4, 279.0),
        (8796000000000.0, 326.9, 323.7),
        (35180000000000.0, 339.1, 320.5),
    ),
}


# Framework -> host seconds per layer and micro-batch (forward, backward) when the GPU work is
# smaller: Megatron-Core's own layer (bench/device/megatron_host.py, 12 layers minus 1 over
# 11; the median of six runs on five machines, which differed by up to 1.7x, two runs of one
# machine by 1.5x), plain PyTorch modules for torchtitan and DeepSpeed models
# (bench/device/kernels.py's eager layer). Measured on the lent H100 machines' CPUs (VMs of 16
# Xeon cores); a faster host CPU, torch.compile or CUDA graphs take less, Transformer Engine's
# modules were not measured. MoE layers were measured too (2 and 8 sequential experts, four
# runs): brought down to one expert call, as a grouped GEMM makes it, an MoE layer's host time
# is about a dense layer's, so it takes the same floor; HOST_EXPERT_PASS_S is what each
# further expert adds when they run one by one.
HOST_LAYER_PASS_S: dict[str, tuple[float, float]] = {
    "megatron": (0.002, 0.00269),
    "torchtitan": (0.00097, 0.00217),
    "deepspeed": (0.00097, 0.00217),
}

# Framework -> (forward, backward) factor on HOST_LAYER_PASS_S for a layer with multi-latent
# attention. Not timed on a GPU: bench/op_counts.py counted, on the CPU, the operators
# Megatron-Core 0.19.2's local layers dispatch per layer and micro-batch (views, detaches and
# allocations left out), for the dense layer megatron_host.py timed and for the MLA attention
# of Megatron's gpt3_mcore_te_tp2_pp2_mla test (q and kv down/up projections, RoPE on the
# positional parts, the q and k concatenations): 38 / 50 forward / backward dense, 68 / 79 MLA
# (bench/results/megatron-op-counts.json; derive.py: host_mla_factor). Host time follows the
# kernel count: deterministic mode's 75 -> 96 kernels (1.28x) took 1.3x the host time, and the
# CPU count of the dense layer (88) is within 17% of the 75 kernels the GPU ran (CPU dropout is
# three operators, CUDA's one). Timed on the CPU at h 64, where dispatch dominates
# (megatron_host.py --quick, with and without --mla), the MLA layer took 2.0x the dense one
# forward and 1.5x forward and backward. A GPU timing (megatron_host.py --mla) would replace it.
HOST_MLA_FACTOR: dict[str, tuple[float, float]] = {
    "megatron": (1.789, 1.58),
}

# Framework -> host seconds (forward, backward) each further local expert adds to an MoE layer
# whose experts run one after another (Megatron-Core's SequentialMLP: no --moe-grouped-gemm):
# the median slope between the measured MoE layers with 2 and 8 sequential experts. Only
# Megatron's was measured; other frameworks' sequential experts add nothing here.
HOST_EXPERT_PASS_S: dict[str, tuple[float, float]] = {
    "megatron": (0.00045, 0.000729),
}

# Framework -> ((forward, backward) host seconds that deterministic mode adds to a layer pass,
# (forward, backward) it adds to an MoE layer beyond that). Megatron's --deterministic-mode
# runs torch.use_deterministic_algorithms(True) (megatron/training/arguments.py): PyTorch then
# fills every torch.empty (fill_uninitialized_memory) and routes index_put/index_add through
# their deterministic, sorting implementations (Megatron-Core's router and unpermute switch
# to them under the mode: moe_utils.py). megatron_host.py --deterministic beside a plain run
# on the same machine, three pairs (two with top-2 aux-loss routing and the all-to-all
# dispatcher, one with sinkhorn top-1 and the all-gather dispatcher), medians: 21 more kernels
# per dense layer (75 -> 96), 100-220 more per MoE layer; 1.3x the dense layer's host time,
# 1.3-2x an MoE layer's (the six MoE extras ranged 1.3-5.9 ms per forward and backward).
# Megatron-Core 0.19.2's local layer spec; Transformer Engine's modules, whose C++
# allocations are filled too, were not measured.
HOST_DETERMINISTIC_PASS_S: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "megatron": ((0.000382, 0.000761), (0.002145, 0.002459)),
}

# GPU time of deterministic mode's fills, as a multiple of writing the layer's stored
# activations (memory.layer_activation_bytes) once at HBM speed: the fills of one forward and
# backward measured on the dense h 512 and h 1024 layers (GPU busy +12% on both; the ratio
# within 10% across widths and the three pairs). bench/device/derive.py: deterministic_fill_factor.
DETERMINISTIC_FILL_FACTOR = 2.77


def matmul_fracs(gpu_id: str) -> dict[str, float]:
    """precision -> sustained large-GEMM fraction measured on `gpu_id` (empty if none)."""
    return {p: frac for (g, p), frac in MATMUL_FRAC.items() if g == gpu_id}


@functools.lru_cache(maxsize=1 << 14)
def attention_rates(gpu_id: str, kernel: str, forward_flops: float) -> tuple[float, float] | None:
    """Measured (forward, backward) FLOP/s of causal fused attention `kernel` ("fa2",
    "cudnn") on the measured GPU `gpu_id` for a call of `forward_flops`, or None where not
    measured: interpolated linearly in log10(FLOPs) between the measured calls, held at the
    end points outside them (below the smallest call measured, 4.3 GFLOP, that errs fast)."""
    rows = ATTENTION_TFLOPS.get((gpu_id, kernel))
    if not rows:
        return None
    xs = [math.log10(r[0]) for r in rows]
    x = math.log10(max(forward_flops, 1.0))
    if x <= xs[0]:
        return rows[0][1] * 1e12, rows[0][2] * 1e12
    if x >= xs[-1]:
        return rows[-1][1] * 1e12, rows[-1][2] * 1e12
    i = bisect.bisect_right(xs, x)
    w = (x - xs[i - 1]) / (xs[i] - xs[i - 1])
    lo, hi = rows[i - 1], rows[i]
    return (lo[1] + w * (hi[1] - lo[1])) * 1e12, (lo[2] + w * (hi[2] - lo[2])) * 1e12


def best_attention_rates(gpu_id: str, kernel: str) -> tuple[float, float] | None:
    """The fastest measured (forward, backward) FLOP/s of `kernel` over all call sizes: no call
    runs faster (a bound for step.step_lower_bound)."""
    rows = ATTENTION_TFLOPS.get((gpu_id, kernel))
    if not rows:
        return None
    return max(r[1] for r in rows) * 1e12, max(r[2] for r in rows) * 1e12
