"""The measured kernel rates (cost/kernels.py) against the raw device measurements they come
from (bench/device/results/), and the step-time model's layer against whole layers timed on the
same GPUs, which were not used to derive anything."""

from __future__ import annotations

import importlib.util
import json
from types import ModuleType

import pytest

from planner.catalog import BUILTIN_MODELS
from planner.cost import kernels
from planner.cost.compute import (
    Gemm,
    attention_time_s,
    fused_attention_kernel,
    gemm_time_s,
    layer_time,
)
from planner.gpus import GPU_CATALOG
from planner.model import ModelSpec, make_model
from planner.parallel import AttentionKernel, ParallelConfig, Precision, Recompute
from tests.conftest import REPO

RESULTS = REPO / "bench" / "device" / "results"
MEASURED = ("h100-sxm5-80gb", "h200-sxm-141gb")


def _derive() -> ModuleType:
    spec = importlib.util.spec_from_file_location("derive", REPO / "bench/device/derive.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _results(gpu_id: str) -> dict:
    data = json.loads((RESULTS / f"{gpu_id}.json").read_text())
    assert isinstance(data, dict)
    return data


@pytest.mark.parametrize("gpu_id", MEASURED)
def test_tables_are_what_the_measurements_give(gpu_id: str) -> None:
    derive = _derive()
    for precision, frac in derive.matmul_fracs(gpu_id).items():
        assert kernels.MATMUL_FRAC[(gpu_id, precision)] == frac
    for kernel, rows in derive.attention_rates(gpu_id).items():
        assert kernels.ATTENTION_TFLOPS[(gpu_id, kernel)] == rows
    assert {k for k in kernels.MATMUL_FRAC if k[0] == gpu_id} == {
        (gpu_id, p) for p in derive.matmul_fracs(gpu_id)}
    assert derive.host_layer_pass() == kernels.HOST_LAYER_PASS_S
    assert derive.host_expert_pass() == kernels.HOST_EXPERT_PASS_S
    assert derive.host_deterministic_pass() == kernels.HOST_DETERMINISTIC_PASS_S
    assert derive.deterministic_fill_factor() == kernels.DETERMINISTIC_FILL_FACTOR
    assert derive.host_mla_factor() == kernels.HOST_MLA_FACTOR


def test_cpu_operator_counts_stand_for_gpu_kernels() -> None:
    """The MLA host factor is a ratio of operator counts taken on the CPU (bench/op_counts.py);
    the count is a fair proxy where the GPU also counted: the dense layer dispatches 88
    operators on the CPU where the H100 ran 75 kernels (12 layers minus 1, over 11), within
    20% (CPU dropout is three operators, CUDA's native_dropout one)."""
    counts = json.loads((REPO / "bench/results/megatron-op-counts.json").read_text())["kinds"]
    dense = counts["dense"]["forward_ops_per_layer"] + counts["dense"]["backward_ops_per_layer"]
    gpu = json.loads((RESULTS / "megatron-host-h100-4.json").read_text())["runs"]
    by = {(r["layers"], r["h"], r.get("experts")): r["kernels"] for r in gpu}
    kernels_per_layer = (by[(12, 512, None)] - by[(1, 512, None)]) / 11
    assert kernels_per_layer == 75
    assert abs(dense / kernels_per_layer - 1) < 0.2


@pytest.mark.parametrize("gpu_id", MEASURED)
def test_gemm_model_reproduces_the_measured_large_gemms(gpu_id: str) -> None:
    """The fraction is the median over these GEMMs, so the median ratio is 1 by construction;
    what can fail is the spread: over the large bf16 GEMMs (different shapes, tp splits,
    batched experts) the model's time is within 20% of the measurement for 9 in 10 shapes
    (97-99% today). On shapes this large the tile and wave model changes little: a flat rate
    does as well; it matters for small and skinny shapes."""
    gpu = GPU_CATALOG[gpu_id]
    ratios = []
    for g in _results(gpu_id)["gemms"]:
        gemm = Gemm(m=g["m"], n=g["n"], k=g["k"], batch=g["batch"])
        if g["precision"] != "bf16" or "s" not in g or gemm.flops < 1e11:
            continue
        ratios.append(gemm_time_s(gemm, gpu, Precision.BF16) / g["s"])
    assert len(ratios) > 50
    assert sum(abs(r - 1) <= 0.2 for r in ratios) >= 0.9 * len(ratios)


def test_attention_rate_is_interpolated_between_measured_calls() -> None:
    rows = kernels.ATTENTION_TFLOPS[("h100-sxm5-80gb", "fa2")]
    first, second = rows[0], rows[1]
    assert kernels.attention_rates("h100-sxm5-80gb", "fa2", first[0]) == pytest.approx(
        (first[1] * 1e12, first[2] * 1e12))
    middle = (first[0] * second[0]) ** 0.5  # halfway in log10
    forward, backward = kernels.attention_rates("h100-sxm5-80gb", "fa2", middle) or (0, 0)
    assert forward == pytest.approx((first[1] + second[1]) / 2 * 1e12)
    assert backward == pytest.approx((first[2] + second[2]) / 2 * 1e12)
    # held at the ends; no table, no rate
    assert kernels.attention_rates("h100-sxm5-80gb", "fa2", 1.0) == pytest.approx(
        (first[1] * 1e12, first[2] * 1e12))
    assert kernels.attention_rates("a100-sxm4-80gb", "fa2", 1e12) is None


def test_catalog_takes_the_measured_fractions() -> None:
    """H100 and H200 run GEMMs at their measured sustained fractions; the H800 (the H100 die)
    at the H100's, and it takes the H100's attention rates; A100 keeps its MAMF."""
    for gpu_id, measured in (("h100-sxm5-80gb", "h100-sxm5-80gb"),
                             ("h800-sxm5-80gb", "h100-sxm5-80gb"),
                             ("h200-sxm-141gb", "h200-sxm-141gb")):
        gpu = GPU_CATALOG[gpu_id]
        assert dict(gpu.matmul_frac) == kernels.matmul_fracs(measured)
        assert gpu.kernels_measured_on == measured
    assert GPU_CATALOG["a100-sxm4-80gb"].kernels_measured_on is None
    model, cfg = BUILTIN_MODELS["llama3-8b"], ParallelConfig(seq_len=8192)
    assert attention_time_s(model, cfg, GPU_CATALOG["h800-sxm5-80gb"]) == attention_time_s(
        model, cfg, GPU_CATALOG["h100-sxm5-80gb"])


def test_framework_default_kernel_follows_the_gpu_generation() -> None:
    cfg = ParallelConfig(seq_len=8192)
    assert fused_attention_kernel(cfg, GPU_CATALOG["h100-sxm5-80gb"]) is AttentionKernel.CUDNN
    assert fused_attention_kernel(cfg, GPU_CATALOG["a100-sxm4-80gb"]) is AttentionKernel.FA2
    pinned = ParallelConfig(seq_len=8192, attention_kernel=AttentionKernel.FA2)
    assert fused_attention_kernel(pinned, GPU_CATALOG["h100-sxm5-80gb"]) is AttentionKernel.FA2
    # FA2 on an H100 is about half as fast as cuDNN at this size (322 vs 629 TFLOP/s forward)
    model = BUILTIN_MODELS["llama3-8b"]
    h100 = GPU_CATALOG["h100-sxm5-80gb"]
    fa2 = attention_time_s(model, pinned, h100)
    cudnn = attention_time_s(model, cfg, h100)
    assert 1.8 < fa2[0] / cudnn[0] < 2.2


def _layer_model(entry: dict) -> ModelSpec:
    """The layer bench/device/kernels.py built (a GPT or a Llama layer), as a ModelSpec (one
    layer; the vocabulary does not enter layer_time)."""
    return make_model(name=entry["name"], num_layers=1, hidden_size=entry["h"],
                      num_attention_heads=entry["heads"], num_query_groups=entry["kv_heads"],
                      ffn_hidden_size=entry["ffn"], vocab_size=32000,
                      activation="swiglu" if entry["gated"] else "gelu",
                      max_position_embeddings=entry["seq"])


@pytest.mark.parametrize("gpu_id", MEASURED)
def test_layer_time_matches_whole_layers_timed_on_the_gpu(gpu_id: str) -> None:
    """Whole eager PyTorch layers (Llama 3 8B at micro-batch 1 and 2, a GPT 7B, a Llama 3 70B
    layer, sequence 8192), forward and backward, timed on the GPU with PyTorch 2.11's default
    attention (cuDNN on Hopper). The model's layer agrees within 8%, the issue's accuracy
    target (today 0-7% faster: the eager layer has copies a fused framework avoids, GQA's
    repeat_interleave and transposes; one 0.1% slower)."""
    gpu = GPU_CATALOG[gpu_id]
    checked = 0
    for entry in _results(gpu_id)["layers"]:
        if entry["h"] < 2048:
            continue  # the toy layer is host-bound: see test_small_layer_is_host_bound
        model = _layer_model(entry)
        cfg = ParallelConfig(mbs=entry["mbs"], global_batch=entry["mbs"], seq_len=entry["seq"])
        t = layer_time(model, cfg, gpu, 0, Recompute.NONE)
        ratio = (t.forward_s + t.backward_s) / entry["forward_backward_s"]
        assert abs(ratio - 1) <= 0.08, (entry["name"], ratio)
        checked += 1
    assert checked == 4


@pytest.mark.parametrize("gpu_id", MEASURED)
def test_small_layer_is_host_bound(gpu_id: str) -> None:
    """The Megatron CI's toy layer (h 512, micro-batch 4, sequence 1024) took 2.5-3.1 ms
    forward and backward in eager PyTorch but 0.46 ms replayed from a CUDA graph: the GPU
    waited on Python and kernel launches. The kernel-time model sees only the GPU's part."""
    toy = next(e for e in _results(gpu_id)["layers"] if e["h"] == 512)
    assert toy["forward_backward_s"] > 4 * toy["graphed_forward_backward_s"]
    model = _layer_model(toy)
    cfg = ParallelConfig(mbs=toy["mbs"], global_batch=toy["mbs"], seq_len=toy["seq"])
    t = layer_time(model, cfg, GPU_CATALOG[gpu_id], 0, Recompute.NONE)
    assert t.forward_s + t.backward_s < toy["graphed_forward_backward_s"]
