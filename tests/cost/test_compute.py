"""GEMM timing, layer GEMM shapes and attention by hand."""

from __future__ import annotations

import dataclasses

import pytest

from planner.catalog import BUILTIN_MODELS
from planner.cost.compute import (
    HBM_EFFICIENCY,
    Gemm,
    attention_time_s,
    fp8_cast_bytes,
    gemm_time_s,
    head_time,
    layer_gemms,
    layer_time,
    quantization_efficiency,
)
from planner.gpus import GPU_CATALOG
from planner.parallel import Framework, ParallelConfig, Precision, Recompute

A100 = GPU_CATALOG["a100-sxm4-80gb"]


def test_quantization_by_hand() -> None:
    """4096 x 4096 on 108 SMs: 128x128 tiles -> 32 x 32 = 1024 tiles = 9.48 waves -> 10 waves,
    1024 / 1080 = 0.948; 128x256 -> 512 tiles, 4.74 -> 5 waves, 0.948; 64x128 -> 2048 tiles,
    18.96 -> 19 waves, 0.998 (the best). A 100-row GEMM wastes 28 of 128 rows: <= 0.78."""
    assert quantization_efficiency(Gemm(m=4096, n=4096, k=4096), 108) == pytest.approx(
        2048 / (19 * 108))
    assert quantization_efficiency(Gemm(m=100, n=4096, k=4096), 108) <= 100 / 128
    # An unknown SM count leaves only the tile padding: 100 rows fill 128 of any tile height.
    assert quantization_efficiency(Gemm(m=100, n=4096, k=4096), 0) == pytest.approx(100 / 128)


def test_large_gemm_runs_at_the_measured_mamf_or_calibrated_fraction() -> None:
    """Large GEMMs run at peak x a fraction x the shape's quantization efficiency x its K
    loop's share (8192 / (8192 + 128)): H100 at the sustained fraction measured on it (72.8%,
    cost/kernels.py), a GPU never measured (B200) at its MAMF (77.6%), A100 at its
    in-framework calibration (74.8%)."""
    big = Gemm(m=8192, n=8640, k=8192)
    k_share = 8192 / (8192 + 128)
    h100 = GPU_CATALOG["h100-sxm5-80gb"]
    rate = big.flops / gemm_time_s(big, h100, Precision.BF16)
    assert rate == pytest.approx(989.4e12 * 0.728 * quantization_efficiency(big, 132) * k_share)
    b200 = GPU_CATALOG["b200"]
    rate = big.flops / gemm_time_s(big, b200, Precision.BF16)
    assert rate == pytest.approx(b200.peak("bf16") * 0.776
                                 * quantization_efficiency(big, b200.num_sms) * k_share)
    rate = big.flops / gemm_time_s(big, A100, Precision.BF16)
    assert rate == pytest.approx(312e12 * 0.748 * quantization_efficiency(big, 108) * k_share)


def test_short_k_loops_run_below_the_large_gemm_rate() -> None:
    """A GEMM's per-tile load and write-back cost as much as 128 more of K
    (kernels.GEMM_K_OVERHEAD): at k 512 a compute-bound GEMM takes 1.25x the time its FLOPs
    and tiles alone give, at k 8192 1.016x. The measured H100 GEMMs of at least 2e10 FLOPs
    bear it out by K: the model's median error per K stays within 8% at every K measured,
    where without the term it was 23% fast at k 512."""
    import json
    import statistics

    from planner.cost.compute import k_loop_efficiency
    from tests.conftest import REPO
    assert k_loop_efficiency(512) == pytest.approx(0.8)
    assert k_loop_efficiency(8192) == pytest.approx(8192 / 8320)
    h100 = GPU_CATALOG["h100-sxm5-80gb"]
    results = json.loads((REPO / "bench/device/results/h100-sxm5-80gb.json").read_text())
    errors: dict[int, list[float]] = {}
    for g in results["gemms"]:
        gemm = Gemm(m=g["m"], n=g["n"], k=g["k"], batch=g["batch"])
        if "s" not in g or g.get("twin_of_fp8") or gemm.flops < 2e10:
            continue
        modelled = gemm_time_s(gemm, h100, Precision(g["precision"]))
        errors.setdefault(min(int(g["k"]), 8192), []).append(modelled / g["s"] - 1)
    assert {512, 1024, 2048, 4096, 8192} <= set(errors)
    for k, errs in errors.items():
        assert abs(statistics.median(errs)) < 0.08, (k, statistics.median(errs))


def test_small_gemm_is_memory_bound() -> None:
    thin = Gemm(m=8, n=8192, k=8192)  # a decode-like GEMM: reads the 128 MiB weight
    expected = 2 * (8 * 8192 + 8192 * 8192 + 8 * 8192) / (2.039e12 * HBM_EFFICIENCY)
    assert gemm_time_s(thin, A100, Precision.BF16) == pytest.approx(expected)


def test_backward_is_two_gemms_of_the_forward_size() -> None:
    g = Gemm(m=10, n=20, k=30)
    dgrad, wgrad = g.backward()
    assert dgrad.flops == wgrad.flops == g.flops
    assert (dgrad.m, dgrad.n, dgrad.k) == (10, 30, 20)
    assert (wgrad.m, wgrad.n, wgrad.k) == (30, 20, 10)


def test_layer_gemms_are_sharded() -> None:
    """Llama 3 8B, tp=2, cp=2, mbs=1, s=8192: 4096 tokens per GPU; QKV width (4096 + 2048)/2,
    output projection 4096/2 -> 4096, SwiGLU FC1 2*14336/2, FC2 14336/2 -> 4096."""
    cfg = ParallelConfig(tp=2, cp=2, global_batch=1, seq_len=8192)
    shapes = [(g.m, g.k, g.n, g.role) for g in layer_gemms(BUILTIN_MODELS["llama3-8b"], cfg, 0)]
    assert shapes == [(4096, 4096, 3072, "column"), (4096, 2048, 4096, "row"),
                      (4096, 4096, 14336, "column"), (4096, 7168, 4096, "row")]


def test_expert_gemms_follow_ep() -> None:
    """Mixtral, ep=8, etp=1, tp=1: one local expert; balanced routing sends it
    tokens * top_k * ep / E = 4096 * 2 * 8 / 8 = 8192 tokens."""
    cfg = ParallelConfig(dp=8, ep=8, etp=1, global_batch=8, seq_len=4096)
    experts = [g for g in layer_gemms(BUILTIN_MODELS["mixtral-8x7b"], cfg, 0)
               if g.role == "expert"]
    assert [(g.m, g.batch) for g in experts] == [(8192, 1), (8192, 1)]


def test_fp8_training_runs_attention_in_bf16() -> None:
    """Only the linear layers run in fp8: attention costs the same as in bf16, on a GPU with
    measured rates (H100) and on one priced from its datasheet (B200), fused or not."""
    model = BUILTIN_MODELS["llama3-8b"]
    for gpu_id in ("h100-sxm5-80gb", "b200"):
        gpu = GPU_CATALOG[gpu_id]
        for flash in (True, False):
            bf16 = ParallelConfig(seq_len=4096, flash_attention=flash)
            fp8 = ParallelConfig(seq_len=4096, flash_attention=flash, precision=Precision.FP8)
            assert attention_time_s(model, fp8, gpu) == attention_time_s(model, bf16, gpu)


def test_fp8_pays_for_casting_its_operands_and_keeps_the_head_in_bf16() -> None:
    """fp8 layer time = bf16-shaped elementwise work + 4 bytes per GEMM input element forward
    (cast and transpose) and per output-gradient element backward; the LM head runs in bf16."""
    model = BUILTIN_MODELS["llama3-8b"]
    gpu = GPU_CATALOG["h100-sxm5-80gb"]
    fp8 = ParallelConfig(seq_len=8192, precision=Precision.FP8)
    gemms = layer_gemms(model, fp8, 0)
    forward, backward = fp8_cast_bytes(gemms)
    tokens, h = 8192, model.hidden_size
    qkv = next(g for g in gemms if g.role == "column")
    assert (qkv.m, qkv.k) == (tokens, h)
    assert forward == 4 * sum(g.m * g.k + g.k * g.n for g in gemms)
    assert backward == 4 * sum(g.m * g.n for g in gemms)
    with_cast = layer_time(model, fp8, gpu, 0, Recompute.NONE)
    cast_s = (forward + backward) / (gpu.memory_bandwidth_bytes_per_s * HBM_EFFICIENCY)
    gemm_s = sum(gemm_time_s(g, gpu, Precision.FP8) for g in gemms)
    assert with_cast.elementwise_s > cast_s > 0.1 * gemm_s  # not negligible next to the GEMMs
    bf16 = ParallelConfig(seq_len=8192)
    assert head_time(model, fp8, gpu) == head_time(model, bf16, gpu)


def test_a_power_limit_caps_power_bound_kernels_only() -> None:
    """At 500 W of the H100's 700 W a large GEMM (it holds the GPU at the limit) runs at
    500/700 of its rate; a GEMM whose tiles already leave SMs idle below that keeps its rate;
    HBM-bound work is untouched; large attention calls slow as large GEMMs do, small ones
    (far below the kernel's best rate) keep theirs."""
    import dataclasses
    h100 = GPU_CATALOG["h100-sxm5-80gb"]
    capped = dataclasses.replace(h100, power_limit_w=500)
    assert (h100.power_scale, capped.power_scale) == (1.0, pytest.approx(5 / 7))
    big = Gemm(m=8192, n=8640, k=8192)
    assert gemm_time_s(big, capped, Precision.BF16) == pytest.approx(
        gemm_time_s(big, h100, Precision.BF16) * quantization_efficiency(big, 132) / (5 / 7))
    # 1024 x 2176 leaves SMs idle: quantization 0.687, already below 5/7, so the limit does
    # not bind; 1280 x 1920 reaches 0.758 at the TDP and is held to 5/7 of the large rate
    idle = Gemm(m=1024, n=2176, k=16384)
    assert quantization_efficiency(idle, 132) < 5 / 7
    assert gemm_time_s(idle, capped, Precision.BF16) == gemm_time_s(idle, h100, Precision.BF16)
    busy = Gemm(m=1280, n=1920, k=16384)
    assert gemm_time_s(busy, capped, Precision.BF16) == pytest.approx(
        gemm_time_s(busy, h100, Precision.BF16) * quantization_efficiency(busy, 132) / (5 / 7))
    thin = Gemm(m=8, n=8192, k=8192)
    assert gemm_time_s(thin, capped, Precision.BF16) == gemm_time_s(thin, h100, Precision.BF16)
    model = BUILTIN_MODELS["llama3-8b"]
    long = ParallelConfig(mbs=2, global_batch=16, seq_len=8192)
    full, limited = attention_time_s(model, long, h100), attention_time_s(model, long, capped)
    # cuDNN at this size: forward 628.7 TFLOP/s (its best), backward 497.1 (best 553.4)
    assert limited[0] == pytest.approx(full[0] * 7 / 5, rel=1e-3)
    assert limited[1] == pytest.approx(full[1] * 497.1 / (553.4 * 5 / 7), rel=1e-3)
    short = ParallelConfig(mbs=1, global_batch=16, seq_len=512, tp=8)
    assert attention_time_s(model, short, capped) == attention_time_s(model, short, h100)


def test_torchtitan_sequence_parallel_collectives_copy_along_dim_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """torchtitan shards the sequence on dim 1: PyTorch's functional collectives copy the
    reduce-scatter's input and the all-gather's output (chunk + cat), each a read and a write
    of the block's full activation, two blocks a layer; with batch 1 the gathered chunks are a
    view. Megatron (sequence on dim 0), async TP and TP without SP copy nothing."""
    from planner.cost.compute import tp_layout_copy_bytes
    model = BUILTIN_MODELS["llama3-8b"]
    cfg = ParallelConfig(tp=8, dp=8, mbs=12, global_batch=96, seq_len=8192,
                         sequence_parallel=True, zero=3, framework=Framework.TORCHTITAN)
    full = 8192 * 12 * model.hidden_size * 2
    assert tp_layout_copy_bytes(model, cfg, 0) == 2 * 2 * 2 * full
    one = dataclasses.replace(cfg, mbs=1, global_batch=8)
    assert tp_layout_copy_bytes(model, one, 0) == 2 * 1 * 2 * (full / 12)
    for other in (dataclasses.replace(cfg, framework=Framework.MEGATRON, zero=1),
                  dataclasses.replace(cfg, tp_comm_overlap=True)):
        assert tp_layout_copy_bytes(model, other, 0) == 0.0
    import planner.cost.compute as compute
    h100 = GPU_CATALOG["h100-sxm5-80gb"]
    with_copies = layer_time(model, cfg, h100, 0, Recompute.NONE)
    copies_s = compute.memory_time_s(tp_layout_copy_bytes(model, cfg, 0), h100)
    assert copies_s > 0
    monkeypatch.setattr(compute, "tp_layout_copy_bytes", lambda *_: 0.0)
    without = layer_time(model, cfg, h100, 0, Recompute.NONE)
    assert with_copies.forward_s == pytest.approx(without.forward_s + copies_s)
    assert with_copies.backward_s == pytest.approx(without.backward_s + copies_s)


def test_torchtitan_op_sac_recomputes_the_unsaved_linears_and_the_elementwise_work() -> None:
    """torchtitan's op-level SAC saves every second aten.mm of a block: 0.3.0's wqkv, wo, w1,
    w3, w2 rerun wo and w3; before it (legacy_attention) Llama's wq, wk, wv, wo, w1, w3, w2
    keep wq, wv, w1 and w2, and backward reruns wk, wo and w3 (not w2, the
    last: early stop) with the block's element-wise work; the attention kernel's output is
    saved. Megatron's selective recompute reruns the attention core instead. MoE layers,
    counted as not checkpointed in memory, recompute nothing."""
    from planner.cost.compute import (
        elementwise_bytes,
        linear_gemm_times,
        memory_time_s,
        op_sac_recomputed_gemms,
    )
    from planner.cost.flops import op_sac_recompute_flops
    h100 = GPU_CATALOG["h100-sxm5-80gb"]
    model = BUILTIN_MODELS["llama3-8b"]
    current = ParallelConfig(tp=2, dp=4, mbs=1, global_batch=4, seq_len=8192, zero=3,
                             framework=Framework.TORCHTITAN, sequence_parallel=True,
                             recompute=Recompute.SELECTIVE)
    # 0.3.0's block: wqkv, wo, w1, w3, w2; the 2nd and 4th rerun
    assert [(g.k, g.n) for g in op_sac_recomputed_gemms(model, current, 0)] == [
        (4096 / 2, 4096), (4096, 14336 / 2)]
    assert op_sac_recompute_flops(model, current, 0, 1.0) == 2 * 4096 * (4096 + 14336)
    cfg = dataclasses.replace(current, legacy_attention=True)  # wq, wk, wv, wo, w1, w3, w2
    gemms = op_sac_recomputed_gemms(model, cfg, 0)
    assert [(g.k, g.n) for g in gemms] == [(4096, 1024 / 2), (4096 / 2, 4096), (4096, 14336 / 2)]
    lt = layer_time(model, cfg, h100, 0, Recompute.SELECTIVE)
    expected = (sum(linear_gemm_times(g, cfg, h100, Precision.BF16)[0] for g in gemms)
                + memory_time_s(elementwise_bytes(model, cfg, 0), h100))
    assert lt.recompute_s == pytest.approx(expected)
    attention_fwd = attention_time_s(model, cfg, h100)[0]
    assert lt.recompute_s > attention_fwd  # what the Megatron rule would have charged
    megatron = dataclasses.replace(cfg, framework=Framework.MEGATRON)
    assert layer_time(model, megatron, h100, 0, Recompute.SELECTIVE).recompute_s == (
        pytest.approx(attention_fwd))
    # the hardware FLOPs count the same linears: 2 per weight per token
    assert op_sac_recompute_flops(model, cfg, 0, 1.0) == 2 * 4096 * (1024 + 4096 + 14336)
    qwen = BUILTIN_MODELS["qwen3-30b-a3b"]
    moe_cfg = ParallelConfig(dp=8, ep=8, etp=1, global_batch=8, seq_len=4096, zero=3,
                             framework=Framework.TORCHTITAN, recompute=Recompute.SELECTIVE)
    layer = next(i for i in range(qwen.num_layers) if qwen.is_moe_layer(i))
    assert op_sac_recomputed_gemms(qwen, moe_cfg, layer) == ()
    assert layer_time(qwen, moe_cfg, h100, layer, Recompute.SELECTIVE).recompute_s == 0.0


def test_eager_rms_norm_op_by_op_on_old_pytorch() -> None:
    """Before PyTorch 2.8 (no fused rms_norm kernel) eager RMSNorm runs as separate kernels:
    .float(), pow, mean, x * rsqrt, type_as, * weight move 36 bytes per element where one
    kernel moves 4, and it keeps its fp32 copy and the normalized output (6 bytes per element
    where the fused norm keeps its 2-byte input). Two norms per layer (and the final one).
    Compiled code fuses the norm either way; LayerNorm is one kernel everywhere."""
    from planner.cost.compute import elementwise_bytes
    from planner.memory import layer_activation_bytes
    model = BUILTIN_MODELS["llama3-8b"]
    fused = ParallelConfig(tp=2, dp=4, mbs=1, global_batch=4, seq_len=8192, zero=3,
                           framework=Framework.TORCHTITAN, sequence_parallel=True, eager=True)
    unfused = dataclasses.replace(fused, fused_rms_norm=False)
    per_norm = 8192 * 4096 / 2  # sequence parallel: norms see s/tp tokens
    assert (elementwise_bytes(model, unfused, 0) - elementwise_bytes(model, fused, 0)
            == pytest.approx(2 * (36 - 4) * per_norm))
    assert (layer_activation_bytes(model, unfused, 0, Recompute.NONE)
            - layer_activation_bytes(model, fused, 0, Recompute.NONE)
            == pytest.approx(2 * 4 * per_norm, abs=1))
    h100 = GPU_CATALOG["h100-sxm5-80gb"]
    assert head_time(model, unfused, h100)[0] > head_time(model, fused, h100)[0]
    compiled = dataclasses.replace(unfused, eager=False)
    assert elementwise_bytes(model, compiled, 0) == elementwise_bytes(
        model, dataclasses.replace(fused, eager=False), 0)
    assert any("fused_rms_norm" in p for p in compiled.problems(model))
    gpt = BUILTIN_MODELS["gpt3-175b"]  # LayerNorm
    assert elementwise_bytes(gpt, unfused, 0) == elementwise_bytes(gpt, fused, 0)


def test_torchtitan_runs_its_linears_one_by_one_and_async_tp_shard_by_shard() -> None:
    """torchtitan's Llama block before 0.3.0 had separate wq, wk, wv, w1 and w3 (Megatron fuses
    QKV and the gated FC1), 0.3.0's a fused wqkv but separate w1 and w3: the same FLOPs in
    more, narrower GEMMs. Its async TP (PyTorch's fused
    all-gather + matmul and matmul + reduce-scatter) consumes the gathered or scattered
    operand shard by shard: the forward and data-gradient GEMMs of a TP linear run as tp GEMMs
    of m/tp rows; the weight gradient as one."""
    from planner.cost.compute import linear_gemm_times
    h100 = GPU_CATALOG["h100-sxm5-80gb"]
    model = BUILTIN_MODELS["llama3-8b"]
    cfg = ParallelConfig(tp=8, dp=1, mbs=1, global_batch=1, seq_len=2048, zero=3,
                         framework=Framework.TORCHTITAN, sequence_parallel=True,
                         legacy_attention=True)
    titan = layer_gemms(model, cfg, 0)
    assert [(g.k, g.n) for g in titan] == [
        (4096, 512), (4096, 128), (4096, 128), (512, 4096), (4096, 1792), (4096, 1792),
        (1792, 4096)]
    current = layer_gemms(model, dataclasses.replace(cfg, legacy_attention=False), 0)
    assert [(g.k, g.n) for g in current] == [
        (4096, 768), (512, 4096), (4096, 1792), (4096, 1792), (1792, 4096)]
    fused = layer_gemms(model, dataclasses.replace(cfg, framework=Framework.MEGATRON), 0)
    assert len(fused) == 4
    for gemms in (current, fused):
        assert sum(g.flops for g in gemms) == pytest.approx(sum(g.flops for g in titan))
    overlapped = dataclasses.replace(cfg, tp_comm_overlap=True)
    wq = titan[0]
    dgrad, wgrad = wq.backward()
    forward, data, weight = linear_gemm_times(wq, overlapped, h100, Precision.BF16)
    shard = Gemm(m=wq.m / 8, n=wq.n, k=wq.k, role=wq.role)
    assert forward == pytest.approx(8 * gemm_time_s(shard, h100, Precision.BF16))
    assert data == pytest.approx(8 * gemm_time_s(Gemm(m=dgrad.m / 8, n=dgrad.n, k=dgrad.k),
                                                 h100, Precision.BF16))
    assert weight == pytest.approx(gemm_time_s(wgrad, h100, Precision.BF16))
    assert forward > gemm_time_s(wq, h100, Precision.BF16)  # 256-row shards fill fewer tiles


def test_megatron_cross_entropy_bytes_match_the_measured_non_layer_gpu_time() -> None:
    """Megatron's vocab-parallel cross entropy, kernel by kernel: .float(), max, subtract,
    exp, sum and division move 38 bytes per logit forward, the gradient's multiply and cast 14
    backward (compute.MEGATRON_LOSS_BYTES). bench/device/megatron_host.py's 1-layer and
    12-layer models (vocab 50304, sequence 1024, micro-batch 4: 206M logits) put the GPU
    time outside the layers (embedding, final norm, LM head, loss) at 5.55 ms (h 512) and 6.4 ms
    (h 1024) in every run; the head and loss as priced take 86-89% of it (at 12 bytes per logit
    each way they took 49-57%), with the embedding's passes (step.embedding_passes, priced
    since) 88-93%."""
    import json
    import statistics
    from pathlib import Path

    from planner.cost.step import embedding_passes, resolve_links
    from planner.hardware_io import cluster_from_dict
    from planner.model import make_model
    root = Path(__file__).resolve().parents[2] / "bench" / "device" / "results"
    h100 = GPU_CATALOG["h100-sxm5-80gb"]
    for h in (512, 1024):
        busy = []
        for path in sorted(root.glob("megatron-host-h100-*.json")):
            runs = {(r["layers"], r["h"]): r for r in json.loads(path.read_text())["runs"]
                    if r.get("experts") is None}
            if (1, h) not in runs or (12, h) not in runs:
                continue
            one, many = runs[(1, h)], runs[(12, h)]
            busy.append(one["kernel_busy_s"] - (many["kernel_busy_s"] - one["kernel_busy_s"]) / 11)
        r = one
        model = make_model(name="host", num_layers=1, hidden_size=h, num_attention_heads=r["heads"],
                           vocab_size=r["vocab"], max_position_embeddings=r["seq"])
        cfg = ParallelConfig(global_batch=r["mbs"], mbs=r["mbs"], seq_len=r["seq"])
        priced = sum(head_time(model, cfg, h100))
        one_gpu = cluster_from_dict({"gpu": "h100-sxm5-80gb", "num_nodes": 1,
                                     "gpus_per_node": 1}, "one")
        embedding = sum(embedding_passes(model, cfg, h100, resolve_links(one_gpu, cfg)))
        measured = statistics.median(busy)
        assert len(busy) >= 5 and 0.8 * measured < priced < measured, (h, priced, measured)
        assert priced < priced + embedding < measured


def test_megatron_recompute_modules_rerun_their_forward_work() -> None:
    """Each recomputed module reruns its forward in backward: core_attn the attention core;
    mla_up_proj the query and key/value up-projections; mlp a dense MLP's GEMMs and
    activation; moe_act the experts' activation (memory-bound); moe the MoE layer's GEMMs and
    element-wise work, whose all-to-alls also run again (more expert traffic, busy and
    exposed). The hardware FLOPs count the same GEMMs."""
    from planner.cost.compute import linear_gemm_times, memory_time_s, mlp_elementwise_bytes
    from planner.cost.flops import module_recompute_flops
    from planner.cost.step import layer_passes, resolve_links
    from planner.hardware_io import load_cluster
    h100 = GPU_CATALOG["h100-sxm5-80gb"]
    model = BUILTIN_MODELS["deepseek-v3"]
    base = ParallelConfig(tp=2, dp=4, ep=8, etp=1, mbs=1, global_batch=4, seq_len=4096,
                          sequence_parallel=True, recompute=Recompute.SELECTIVE)

    def redo(layer: int, *modules: str) -> float:
        cfg = dataclasses.replace(base, recompute_modules=modules)
        return layer_time(model, cfg, h100, layer, Recompute.SELECTIVE).recompute_s

    dense, moe_layer = 0, 3
    attention_fwd = attention_time_s(model, base, h100)[0]
    assert redo(dense, "core_attn") == pytest.approx(attention_fwd)
    gemms = layer_gemms(model, base, dense)
    up = [g for g in gemms[:5] if g.role == "column"]
    assert len(up) == 2  # q_up, kv_up
    assert redo(dense, "mla_up_proj") == pytest.approx(
        sum(linear_gemm_times(g, base, h100, Precision.BF16)[0] for g in up))
    mlp = gemms[5:]
    assert redo(dense, "mlp") == pytest.approx(
        sum(linear_gemm_times(g, base, h100, Precision.BF16)[0] for g in mlp)
        + memory_time_s(mlp_elementwise_bytes(model, base, dense)["activation"], h100))
    assert redo(moe_layer, "moe_act") == pytest.approx(
        memory_time_s(mlp_elementwise_bytes(model, base, moe_layer)["activation"], h100))
    assert redo(moe_layer, "moe") > redo(moe_layer, "moe_act") + redo(moe_layer, "shared_experts")
    cluster = load_cluster("dgx-h100")
    links = resolve_links(cluster, base)
    gpu = cluster.gpu_types[0]
    whole = dataclasses.replace(base, recompute_modules=("moe",))
    plain = layer_passes(model, base, gpu, links, moe_layer, Recompute.SELECTIVE)
    rerun = layer_passes(model, whole, gpu, links, moe_layer, Recompute.SELECTIVE)
    assert rerun.ep_busy_s == pytest.approx(plain.ep_busy_s * 4 / 3)
    assert rerun.ep_exposed_s > plain.ep_exposed_s
    tokens = 4 * 4096.0
    assert module_recompute_flops(model, whole, moe_layer, tokens) > module_recompute_flops(
        model, base, moe_layer, tokens) > 0
    assert module_recompute_flops(model, dataclasses.replace(base, recompute_modules=(
        "moe_act", "layernorm")), moe_layer, tokens) == 0.0


def test_what_a_recompute_module_drops_is_what_it_reruns() -> None:
    """Memory, compute and FLOPs read one description of selective recompute
    (parallel.layer_reruns): on DeepSeek-V3's dense and MoE layers (MLA, shared experts),
    each module alone frees activations exactly where it reruns forward work, and runs
    GEMMs again exactly where it adds FLOPs (moe_act and layernorm are element-wise)."""
    from planner.cost.compute import layer_gemms, linear_gemm_times, module_recompute_s
    from planner.cost.flops import module_recompute_flops
    from planner.memory import layer_activation_bytes
    from planner.parallel import RECOMPUTE_MODULES, layer_reruns
    model = BUILTIN_MODELS["deepseek-v3"]
    gpu = GPU_CATALOG["h100-sxm5-80gb"]
    base = ParallelConfig(tp=2, ep=8, dp=8, global_batch=64, seq_len=4096,
                          recompute=Recompute.SELECTIVE, flash_attention=False)
    dense, moe = 0, model.moe.first_dense_layers
    seen = set()
    for module in RECOMPUTE_MODULES:
        cfg = dataclasses.replace(base, recompute_modules=(module,))
        for layer in (dense, moe):
            kept = layer_activation_bytes(model, cfg, layer, Recompute.SELECTIVE)
            plain = layer_activation_bytes(model, cfg, layer, Recompute.NONE)
            gemms = layer_gemms(model, cfg, layer)
            forwards = [linear_gemm_times(g, cfg, gpu, cfg.precision)[0] for g in gemms]
            attention = 1e-3  # stands for the attention core's forward
            rerun = module_recompute_s(model, cfg, gpu, layer, gemms, forwards, attention)
            flops = module_recompute_flops(model, cfg, layer, 4096.0)
            applies = any(dataclasses.astuple(layer_reruns(model, cfg, layer)))
            assert (kept < plain) is applies is (rerun > 0), (module, layer)
            assert (flops > 0) is (applies and module not in ("moe_act", "layernorm")), (
                module, layer)
            seen.add((module, layer, applies))
    # every module applies to one layer kind at least; mlp only to the dense, moe to the MoE
    assert {m for m, _, a in seen if a} == set(RECOMPUTE_MODULES)
    assert ("mlp", moe, False) in seen and ("moe", dense, False) in seen


def test_more_than_one_local_expert_sorts_the_received_tokens() -> None:
    """Megatron's all-to-all dispatcher permutes the routed tokens before the exchange and
    back after the combine, and with more than one expert per rank also sorts them by local
    expert after the exchange and back (sort_chunks_by_idxs): twice the copies."""
    from planner.cost.compute import mlp_elementwise_bytes
    model = BUILTIN_MODELS["mixtral-8x7b"]
    one = ParallelConfig(ep=8, dp=8, global_batch=64, seq_len=4096)  # one expert per rank
    two = dataclasses.replace(one, ep=4, dp=4)  # two per rank
    per_token = 2 * 2 * 2 * model.hidden_size * model.moe.top_k * 4096
    assert mlp_elementwise_bytes(model, one, 0)["permute"] == per_token
    assert mlp_elementwise_bytes(model, two, 0)["permute"] == 2 * per_token


def test_torchtitan_before_0_3_copies_keys_and_values_to_every_query_head() -> None:
    """repeat_kv (torchtitan before 0.3.0, legacy_attention) materialises the widened K and V: one
    more read of the groups and write of q_width-wide K and V per token, which torchtitan
    0.3.0 (enable_gqa) and Megatron (Transformer Engine takes the groups) do not pay; MLA
    models have nothing to repeat, and the setting is torchtitan's only."""
    from planner.cost.compute import elementwise_bytes
    from planner.parallel import attention_kv_width
    model = BUILTIN_MODELS["llama3-8b"]
    cfg = ParallelConfig(tp=2, dp=4, global_batch=8, seq_len=4096, sequence_parallel=True,
                         framework=Framework.TORCHTITAN)
    older = dataclasses.replace(cfg, legacy_attention=True)
    assert attention_kv_width(model, older) == model.q_width == 4 * model.kv_width
    assert attention_kv_width(model, cfg) == model.kv_width
    extra = elementwise_bytes(model, older, 0) - elementwise_bytes(model, cfg, 0)
    assert extra == pytest.approx(4096 * 2 * 2 * (model.kv_width + model.q_width) / 2)
    mla = BUILTIN_MODELS["deepseek-v3"]
    assert attention_kv_width(mla, dataclasses.replace(older, tp=1)) == mla.kv_width
    megatron = dataclasses.replace(older, framework=Framework.MEGATRON)
    assert any("legacy_attention is torchtitan's" in p for p in megatron.problems(model))


def test_transformer_engine_ring_corrections_by_hand() -> None:
    """Transformer Engine's ring at cp 4, one token per rank of a 2-head, 4-wide-head MHA
    model (O, Q = 8 elements, KV = 16): forward 8 x (6 x 4 - 2) + 16 x 4 = 240 bytes,
    backward 8 x 22 + 16 x 38 = 784; nothing at cp 1 nor for torchtitan (not priced); the
    attention passes grow by exactly their HBM time."""
    from planner.cost.compute import cp_ring_bytes, memory_time_s
    from planner.model import make_model
    tiny = make_model(name="tiny", num_layers=2, hidden_size=8, num_attention_heads=2,
                      vocab_size=64, max_position_embeddings=64)
    cfg = ParallelConfig(cp=4, dp=1, global_batch=1, seq_len=4, mbs=1)
    assert cp_ring_bytes(tiny, cfg) == (240, 784)
    assert cp_ring_bytes(tiny, dataclasses.replace(cfg, cp=1)) == (0, 0)
    assert cp_ring_bytes(tiny, dataclasses.replace(cfg, framework=Framework.TORCHTITAN)) == (0, 0)
    model = BUILTIN_MODELS["llama3-70b"]
    h100 = GPU_CATALOG["h100-sxm5-80gb"]
    ring = ParallelConfig(tp=8, cp=2, dp=4, global_batch=8, seq_len=16384,
                          sequence_parallel=True)
    fwd, bwd = attention_time_s(model, ring, h100)
    bytes_fwd, bytes_bwd = cp_ring_bytes(model, ring)
    titan_fwd, titan_bwd = attention_time_s(  # the same cuDNN kernel, no ring priced
        model, dataclasses.replace(ring, framework=Framework.TORCHTITAN, legacy_attention=True),
        h100)
    assert fwd - titan_fwd == pytest.approx(memory_time_s(bytes_fwd, h100))
    assert bwd - titan_bwd == pytest.approx(memory_time_s(bytes_bwd, h100))


def test_torchtitan_0_3_attention_takes_flashattention_2_rates() -> None:
    """torchtitan 0.3.0 runs FlexAttention (Triton): its AUTO attention takes FA2's measured
    rates on the H100, where Megatron's and torchtitan's older SDPA runs take cuDNN's; a
    pinned kernel is the kernel pinned."""
    from planner.cost.compute import fused_attention_kernel
    from planner.parallel import AttentionKernel
    h100 = GPU_CATALOG["h100-sxm5-80gb"]
    model = BUILTIN_MODELS["llama3-8b"]
    cfg = ParallelConfig(dp=8, global_batch=8, seq_len=8192, zero=3,
                         framework=Framework.TORCHTITAN)
    legacy = dataclasses.replace(cfg, legacy_attention=True)
    megatron = dataclasses.replace(cfg, framework=Framework.MEGATRON, zero=1)
    assert fused_attention_kernel(cfg, h100) is AttentionKernel.FA2
    assert fused_attention_kernel(legacy, h100) is AttentionKernel.CUDNN
    assert fused_attention_kernel(megatron, h100) is AttentionKernel.CUDNN
    pinned = dataclasses.replace(cfg, attention_kernel=AttentionKernel.CUDNN)
    assert fused_attention_kernel(pinned, h100) is AttentionKernel.CUDNN
    fa2 = dataclasses.replace(legacy, attention_kernel=AttentionKernel.FA2)
    assert attention_time_s(model, cfg, h100) == attention_time_s(model, fa2, h100)
    flex, cudnn = attention_time_s(model, cfg, h100), attention_time_s(model, legacy, h100)
    assert flex[0] > cudnn[0] and flex[1] > cudnn[1]  # measured: 334/315 vs 613/520 TFLOP/s


def test_document_block_fraction_counts_flex_blocks() -> None:
    """Block-causal attention over packed documents computes, per 128-token query block, the
    key blocks from the one holding its first query's document start to the diagonal. A
    1024-token sequence is 8 blocks, 36 causal: documents of 256 compute 1, 2 per block pair
    (12, 1/3, not the ideal 1/4), documents of 300 start in blocks 0, 2, 4 (20 of 36);
    documents as long as the sequence, or none given, are plain causal."""
    from planner.cost.compute import document_block_fraction
    assert document_block_fraction(1024, 256) == pytest.approx(12 / 36)
    assert document_block_fraction(1024, 300) == pytest.approx(20 / 36)
    assert document_block_fraction(1024, 128) == pytest.approx(8 / 36)
    for whole in (None, 1024, 4096):
        assert document_block_fraction(1024, whole) == 1.0
    # shorter documents, less work; never below one block per query block
    fractions = [document_block_fraction(8192, d) for d in (8192, 4096, 2048, 512, 64)]
    assert fractions == sorted(fractions, reverse=True)
    assert fractions[-1] == pytest.approx(64 / (64 * 65 / 2))


def test_document_masks_scale_torchtitan_attention_work() -> None:
    """torchtitan 0.3.0's attention over documents of d tokens does document_block_fraction
    of the causal work: at a fixed rate (a GPU with no measured kernels) its time scales by
    exactly that share, with context parallelism too; on the H100 the smaller call also runs
    at the measured rate of its size. Other frameworks refuse the setting."""
    from planner.cost.compute import document_block_fraction
    model = BUILTIN_MODELS["llama3-8b"]
    a100 = GPU_CATALOG["a100-sxm4-80gb"]
    h100 = GPU_CATALOG["h100-sxm5-80gb"]
    for cp in (1, 4):
        cfg = ParallelConfig(dp=8, cp=cp, global_batch=8, seq_len=32768, zero=3,
                             framework=Framework.TORCHTITAN)
        docs = dataclasses.replace(cfg, document_tokens=2000)
        share = document_block_fraction(32768, 2000)
        assert 2000 / 32768 < share < 0.1
        whole, masked = attention_time_s(model, cfg, a100), attention_time_s(model, docs, a100)
        assert masked[0] == pytest.approx(whole[0] * share)
        assert masked[1] == pytest.approx(whole[1] * share)
        h_whole, h_masked = attention_time_s(model, cfg, h100), attention_time_s(model, docs, h100)
        assert h_whole[0] * share < h_masked[0] < h_whole[0]
        assert not docs.problems(model)
    base = ParallelConfig(dp=8, global_batch=8, seq_len=8192, document_tokens=1000)
    for other in (base, dataclasses.replace(base, framework=Framework.DEEPSPEED),
                  dataclasses.replace(base, framework=Framework.TORCHTITAN, zero=3,
                                      legacy_attention=True)):
        assert any("document_tokens prices torchtitan 0.3.0" in p for p in other.problems(model))
    zero = dataclasses.replace(base, framework=Framework.TORCHTITAN, zero=3, document_tokens=0)
    assert any("document_tokens(0) must be >= 1" in p for p in zero.problems(model))
