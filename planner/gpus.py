"""GPU catalog: dense peak FLOP/s per precision, memory, memory bandwidth, scale-up link.

Peaks are dense (no 2:4 sparsity). Where a datasheet's headline is the sparse figure, half of it
is used. GeForce cards use the FP32-accumulate tensor rate, which is what BF16 training gets.
`memory_bytes` is the capacity `nvidia-smi` reports as total (MiB), which is what a process can
see: for H100 81559 MiB, not 80 GiB; the CUDA context comes out of it (see memory.py).
`tdp_w` is each datasheet's maximum board power (the default power limit).
"""

from __future__ import annotations

from dataclasses import dataclass

import planner.cost.kernels as kernels
from planner.units import GB, TB, TFLOPS, MiB


@dataclass(frozen=True, slots=True, kw_only=True)
class GpuType:
    """One GPU model.

    Attributes:
        id: catalog id (`h100-sxm5-80gb`).
        name: marketing name.
        memory_bytes: device memory visible to processes.
        memory_bandwidth_bytes_per_s: HBM/GDDR bandwidth.
        peak_flops_per_s: dense peak per precision, as sorted (precision, FLOP/s) pairs.
        scaleup_bytes_per_s: NVLink/xGMI bandwidth per GPU per direction (0 = PCIe only).
        scaleup_kind: nvlink, xgmi, nvlink-bridge or pcie.
        pcie_bytes_per_s: host link per direction.
        num_sms: streaming multiprocessors (compute units on AMD), for wave quantization;
            0 when unknown (a custom GPU without `num_sms`), which leaves waves out.
        matmul_frac: best achievable fraction of peak for large GEMMs, per precision
            (maximum achievable matmul FLOPS, "MAMF", measured with stas00/ml-engineering's
            mamf-finder; shared/reference/hardware.md Sec. 4.2).
        source: datasheet(s) the numbers come from.
        kernels_measured_on: the catalog GPU whose kernels were timed for this project
            (cost/kernels.py: attention rates per kernel); None where none was. A GPU built
            on a catalog one inherits it.
        tdp_w: the board's default power limit (datasheet "max thermal design power"), at
            which matmul_frac and the measured attention rates hold; 0 when unknown.
        power_limit_w: the limit the cluster runs its GPUs at when below the TDP (a profile's
            `power_limit_W`, set with `nvidia-smi -pl`); 0 = the TDP. See power_scale.
        compute_capability: CUDA (major, minor) from NVIDIA's CUDA GPUs table
            (developer.nvidia.com/cuda-gpus); None for non-CUDA or unknown GPUs. Launchers need
            it: Megatron-LM requires CUDA_DEVICE_MAX_CONNECTIONS=1 with tp or cp > 1 below
            major 10 (megatron/training/arguments.py, validate_args).
    """

    id: str
    name: str
    memory_bytes: int
    memory_bandwidth_bytes_per_s: float
    peak_flops_per_s: tuple[tuple[str, float], ...]
    scaleup_bytes_per_s: float
    scaleup_kind: str
    pcie_bytes_per_s: float
    num_sms: int
    matmul_frac: tuple[tuple[str, float], ...]
    source: str
    compute_capability: tuple[int, int] | None = None
    kernels_measured_on: str | None = None
    tdp_w: float = 0.0
    power_limit_w: float = 0.0

    @property
    def power_scale(self) -> float:
        """The ceiling a power limit below the TDP puts on power-bound kernels (large GEMMs,
        fused attention), as a fraction of their rate at the TDP: limit / TDP, 1 without a
        limit. A kernel already slower than that (a small GEMM, a short attention call) does
        not draw the limit and keeps its rate.

        A kernel that holds the GPU at its power limit runs at a rate of P / E, E the energy
        per operation (P = E x rate; Horowitz, "Computing's energy problem", ISSCC 2014), so
        at a lower limit with E unchanged the rate falls in proportion. The measurement behind
        it: under a sustained bf16 GEMM this project's H100 sat at its 700 W limit, clocked
        down to 1372 of 1980 MHz (cost/kernels.py). Two second-order effects pull opposite
        ways and are left out: a lower clock runs at a lower voltage (E falls with V^2: the
        GPU does better than the ratio), while idle / leakage power does not scale (worse).
        Memory-bound kernels keep their speed: they draw less than the limit."""
        if self.power_limit_w <= 0 or self.tdp_w <= 0:
            return 1.0
        return min(1.0, self.power_limit_w / self.tdp_w)

    def peak(self, precision: str) -> float:
        """Dense peak FLOP/s for `precision`; fp8 falls back to bf16 where there is no fp8."""
        table = dict(self.peak_flops_per_s)
        if precision in table:
            return table[precision]
        if precision == "fp8" and "bf16" in table:
            return table["bf16"]
        raise KeyError(f"{self.id} has no {precision} peak")

    def achievable_matmul_flops_per_s(self, precision: str) -> float:
        """Peak x the measured fraction (bf16's when the precision has none), at the TDP."""
        fractions = dict(self.matmul_frac)
        return self.peak(precision) * fractions.get(precision, fractions["bf16"])


def _fracs(**fractions: float) -> tuple[tuple[str, float], ...]:
    return tuple(sorted(fractions.items()))


def _peaks(**tflops: float) -> tuple[tuple[str, float], ...]:
    return tuple(sorted((k, v * TFLOPS) for k, v in tflops.items()))


PCIE4_BYTES_PER_S = 32 * GB  # PCIe Gen4 x16, 16 GT/s x 16 lanes, per direction (PCI-SIG)
_PCIE4 = PCIE4_BYTES_PER_S
_PCIE5 = 64 * GB  # PCIe Gen5 x16, per direction

# hardware.md Sec. 4.2: the planner's matmul fraction for a GPU with no MAMF measurement.
UNMEASURED_MATMUL_FRAC = 0.70

# A100 (bf16): the fraction transformer-layer GEMMs reach inside Megatron-LM, derived from
# Korthikanti et al. 2022 Table 4 (calibration.yaml korthikanti_t4_22b_layer_baseline_no_recompute:
# a 22B layer, tp 8, micro-batch 4, 7.7 ms forward + 11.9 ms backward on Selene): 0.748 makes
# the step-time model's layer take 19.6 ms (with the K-loop overhead measured on Hopper,
# kernels.GEMM_K_OVERHEAD, which the layer's short-K GEMMs feel: 0.716 without it), and it
# then gives 7.65 / 11.95 ms for the two passes. tests/cost/test_calibration.py re-derives it
# and checks Table 4's other rows, which were not used. (The A100's MAMF burst figure is 86.9%.)
A100_IN_FRAMEWORK_MATMUL_FRAC = 0.748

# MAMF fractions (hardware.md Sec. 4.2, from stas00/ml-engineering's table): B200 77.6%,
# MI300X 51-60% by ROCm version (midpoint 55%); FP8 B200 76.3%. No measurement for
# L40S and GeForce cards: they take UNMEASURED_MATMUL_FRAC. H100 and H200 take the sustained
# fractions measured for this project on the validation cases' GEMMs (cost/kernels.py: H100
# 72.8% bf16, 64.8% fp8; H200 72.0%, 65.9%, beside the K-loop overhead fitted with them), not
# their MAMF burst figures (80.3% / 70.9%,
# 83.8% / 73.4%): under a sustained GEMM the H100 held its 700 W limit at 1372 MHz. The H800 is
# the H100 die (same SMs, clocks and 700 W) and takes the H100's.
_H100 = "h100-sxm5-80gb"
_H200 = "h200-sxm-141gb"
GPU_CATALOG: dict[str, GpuType] = {
    g.id: g
    for g in (
        GpuType(
            id="a100-sxm4-40gb", name="NVIDIA A100-SXM4-40GB", memory_bytes=40960 * MiB,
            memory_bandwidth_bytes_per_s=1.555 * TB,
            peak_flops_per_s=_peaks(bf16=312, fp16=312, tf32=156, fp32=19.5),
            scaleup_bytes_per_s=300 * GB, scaleup_kind="nvlink", pcie_bytes_per_s=_PCIE4,
            num_sms=108, matmul_frac=_fracs(bf16=A100_IN_FRAMEWORK_MATMUL_FRAC),
            source="NVIDIA A100 Tensor Core GPU datasheet (dense; NVLink3 600 GB/s bidirectional)",
            compute_capability=(8, 0),
            tdp_w=400,
        ),
        GpuType(
            id="a100-sxm4-80gb", name="NVIDIA A100-SXM4-80GB", memory_bytes=81920 * MiB,
            memory_bandwidth_bytes_per_s=2.039 * TB,
            peak_flops_per_s=_peaks(bf16=312, fp16=312, tf32=156, fp32=19.5),
            scaleup_bytes_per_s=300 * GB, scaleup_kind="nvlink", pcie_bytes_per_s=_PCIE4,
            num_sms=108, matmul_frac=_fracs(bf16=A100_IN_FRAMEWORK_MATMUL_FRAC),
            source="NVIDIA A100 Tensor Core GPU datasheet (dense; NVLink3 600 GB/s bidirectional)",
            compute_capability=(8, 0),
            tdp_w=400,
        ),
        GpuType(
            id="h100-sxm5-80gb", name="NVIDIA H100 80GB HBM3", memory_bytes=81559 * MiB,
            memory_bandwidth_bytes_per_s=3.35 * TB,
            peak_flops_per_s=_peaks(bf16=989.4, fp16=989.4, fp8=1978.9, tf32=494.7, fp32=66.9),
            scaleup_bytes_per_s=450 * GB, scaleup_kind="nvlink", pcie_bytes_per_s=_PCIE5,
            num_sms=132, matmul_frac=_fracs(**kernels.matmul_fracs(_H100)),
            source="NVIDIA H100 Tensor Core GPU datasheet, SXM5 (sparse headline halved; "
                   "NVLink4 900 GB/s bidirectional)",
            compute_capability=(9, 0), kernels_measured_on=_H100,
            tdp_w=700,
        ),
        GpuType(
            id="h800-sxm5-80gb", name="NVIDIA H800 80GB HBM3", memory_bytes=81559 * MiB,
            memory_bandwidth_bytes_per_s=3.35 * TB,
            peak_flops_per_s=_peaks(bf16=989.4, fp16=989.4, fp8=1978.9, tf32=494.7, fp32=66.9),
            scaleup_bytes_per_s=200 * GB, scaleup_kind="nvlink", pcie_bytes_per_s=_PCIE5,
            num_sms=132, matmul_frac=_fracs(**kernels.matmul_fracs(_H100)),
            source="NVIDIA H800 SXM5 (export variant of H100: same compute, NVLink 400 GB/s "
                   "bidirectional); DeepSeek-V3 report arXiv 2412.19437 Sec. 3.1",
            compute_capability=(9, 0), kernels_measured_on=_H100,
            tdp_w=700,
        ),
        GpuType(
            id="h200-sxm-141gb", name="NVIDIA H200", memory_bytes=143771 * MiB,
            memory_bandwidth_bytes_per_s=4.8 * TB,
            peak_flops_per_s=_peaks(bf16=989.4, fp16=989.4, fp8=1978.9, tf32=494.7, fp32=66.9),
            scaleup_bytes_per_s=450 * GB, scaleup_kind="nvlink", pcie_bytes_per_s=_PCIE5,
            num_sms=132, matmul_frac=_fracs(**kernels.matmul_fracs(_H200)),
            source="NVIDIA H200 Tensor Core GPU datasheet, SXM (141 GB HBM3e, 4.8 TB/s; "
                   "compute as H100 SXM5)",
            compute_capability=(9, 0), kernels_measured_on=_H200,
            tdp_w=700,
        ),
        GpuType(
            id="b200", name="NVIDIA B200", memory_bytes=183359 * MiB,
            memory_bandwidth_bytes_per_s=7.7 * TB,
            peak_flops_per_s=_peaks(bf16=2250, fp16=2250, fp8=4500, fp4=9000, tf32=1100,
                                    fp32=75),
            scaleup_bytes_per_s=900 * GB, scaleup_kind="nvlink", pcie_bytes_per_s=_PCIE5,
            num_sms=148, matmul_frac=_fracs(bf16=0.776, fp8=0.763),
            source="NVIDIA HGX B200 per-GPU table (sparse halved); NVLink5 1.8 TB/s "
                   "bidirectional",
            compute_capability=(10, 0),
            tdp_w=1000,
        ),
        GpuType(
            id="mi300x", name="AMD Instinct MI300X", memory_bytes=196592 * MiB,
            memory_bandwidth_bytes_per_s=5.3 * TB,
            peak_flops_per_s=_peaks(bf16=1307.4, fp16=1307.4, fp8=2614.9, tf32=653.7,
                                    fp32=163.4),
            scaleup_bytes_per_s=64 * GB, scaleup_kind="xgmi", pcie_bytes_per_s=_PCIE5,
            num_sms=304, matmul_frac=_fracs(bf16=0.55),
            source="AMD Instinct MI300X datasheet (dense; 192 GB HBM3); xGMI 64 GB/s per peer "
                   "per direction, fully connected 8-GPU node",
            tdp_w=750,
        ),
        GpuType(
            id="l40s", name="NVIDIA L40S", memory_bytes=46068 * MiB,
            memory_bandwidth_bytes_per_s=0.864 * TB,
            peak_flops_per_s=_peaks(bf16=362.05, fp16=362.05, fp8=733, tf32=183, fp32=91.6),
            scaleup_bytes_per_s=0.0, scaleup_kind="pcie", pcie_bytes_per_s=_PCIE4,
            num_sms=142, matmul_frac=_fracs(bf16=UNMEASURED_MATMUL_FRAC),
            source="NVIDIA L40S datasheet (sparse headline halved; 48 GB GDDR6, no NVLink)",
            compute_capability=(8, 9),
            tdp_w=350,
        ),
        GpuType(
            id="rtx-4090", name="NVIDIA GeForce RTX 4090", memory_bytes=24564 * MiB,
            memory_bandwidth_bytes_per_s=1.008 * TB,
            peak_flops_per_s=_peaks(bf16=165.2, fp16=165.2, fp8=330.3, fp32=82.6),
            scaleup_bytes_per_s=0.0, scaleup_kind="pcie", pcie_bytes_per_s=_PCIE4,
            num_sms=128, matmul_frac=_fracs(bf16=UNMEASURED_MATMUL_FRAC),
            source="NVIDIA Ada Lovelace architecture whitepaper (FP32-accumulate tensor rates; "
                   "no NVLink, P2P disabled on GeForce)",
            compute_capability=(8, 9),
            tdp_w=450,
        ),
        GpuType(
            id="rtx-3090", name="NVIDIA GeForce RTX 3090", memory_bytes=24576 * MiB,
            memory_bandwidth_bytes_per_s=0.936 * TB,
            peak_flops_per_s=_peaks(bf16=71, fp16=71, fp32=35.6),
            scaleup_bytes_per_s=56 * GB, scaleup_kind="nvlink-bridge", pcie_bytes_per_s=_PCIE4,
            num_sms=82, matmul_frac=_fracs(bf16=UNMEASURED_MATMUL_FRAC),
            source="NVIDIA Ampere GA102 whitepaper (FP32-accumulate tensor rate); NVLink bridge "
                   "for one pair, 112.5 GB/s bidirectional",
            compute_capability=(8, 6),
            tdp_w=350,
        ),
    )
}
