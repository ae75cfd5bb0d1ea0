"""Achieved compute time of a transformer layer, per micro-batch and pass, on one GPU.

GEMMs: the shapes each GPU runs after tensor, context and expert parallel sharding, timed as
max(FLOPs / achieved rate, bytes / HBM bandwidth). The achieved rate is the GPU's measured
best-case matmul fraction of peak (MAMF, gpus.py) times the tile and wave quantization
efficiency of the shape (NVIDIA, "Matrix Multiplication Background User's Guide": a GEMM is
cut into output tiles spread over the SMs in waves; partial tiles and a partial last wave idle
hardware), taking the best of the tile shapes cuBLAS chooses among. Small and skinny GEMMs
therefore run far below peak.

GPUs measured for this project (GpuType.kernels_measured_on, cost/kernels.py: H100, H800 by
its H100 die, H200): GEMMs at the sustained fraction of peak measured on the validation
cases' own shapes (their catalog matmul fraction), attention at the measured rate of the
kernel the framework runs, for the size of the call. Others: the published figures below.

Attention: fused kernels compute only the causal lower triangle (about s^2/2 scores), at the
measured rate where there is one, else at FLASH_ATTENTION_FRAC of peak; the unfused path
(Megatron "local" / unfused backends) computes the full s x s scores with batched GEMMs (then
masks) and moves the scores through HBM for scale-mask-softmax and dropout.

Element-wise work (norms, bias-dropout-add, activation functions, rotary embeddings, the loss)
is memory-bound: bytes moved / (HBM bandwidth x HBM_EFFICIENCY). Backward moves about twice
the bytes of forward (it reads the saved input and the incoming gradient, writes the
gradient), and runs two GEMMs per forward GEMM (data and weight gradients).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import planner.cost.kernels as kernels
from planner.gpus import GpuType
from planner.model import ModelSpec, Projection
from planner.parallel import (
    FUSED_SOFTMAX_MAX_KEYS,
    AttentionKernel,
    Framework,
    ParallelConfig,
    Precision,
    Recompute,
    attention_kv_width,
    dropout_masks,
    layer_reruns,
    local_kv_elements,
    op_by_op_rms_norm,
    op_sac_recomputed_linears,
    torchtitan_compiled_loss,
    torchtitan_linears,
    torchtitan_loss_parallel,
    tp_gathers_in_fp8,
)

# Output tile shapes (M x N) of cuBLAS / CUTLASS bf16 kernels on Ampere and Hopper.
TILE_SHAPES = ((128, 128), (128, 256), (256, 128), (64, 128))

# GPUs without a measured attention rate: FlashAttention-2 reaches 50-73% of peak on A100 (Dao
# 2023, arXiv 2307.08691, Sec. 4.1); the backward pass is the slower one: 60% of peak over
# forward and backward. (On the H100 it measured far lower: cost/kernels.py.)
FLASH_ATTENTION_FRAC = 0.6

# GPUs on which the step-time model has been validated against published runs (README,
# Validation): A100, whose catalog matmul fraction is itself an in-framework calibration
# (gpus.A100_IN_FRAMEWORK_MATMUL_FRAC). Elsewhere `estimate` warns.
STEP_TIME_VALIDATED_GPUS = frozenset({"a100-sxm4-80gb", "a100-sxm4-40gb"})

# Streaming (coalesced) kernels reach ~84% of HBM peak on H100 (measured with Nsight Compute,
# mikamirai.com/blog/gpu-memory-bandwidth: 2.8 of 3.35 TB/s); an assumption for other GPUs.
HBM_EFFICIENCY = 0.84


@dataclass(frozen=True, slots=True, kw_only=True)
class Gemm:
    """C[m, n] = A[m, k] @ B[k, n], `batch` times (grouped or batched GEMMs).

    `role` is the layer's parallel kind: "column" (output split by tp), "row" (input split
    by tp), "replicated", "router", "expert", or "" (attention's batched GEMMs)."""

    m: float
    n: float
    k: float
    batch: float = 1.0
    role: str = ""

    @property
    def flops(self) -> float:
        return 2.0 * self.m * self.n * self.k * self.batch

    def backward(self) -> tuple[Gemm, Gemm]:
        """Data gradient dA = dC @ B^T (m x k, inner n) and weight gradient dB = A^T @ dC
        (k x n, inner m)."""
        return (Gemm(m=self.m, n=self.k, k=self.n, batch=self.batch, role=self.role),
                Gemm(m=self.k, n=self.n, k=self.m, batch=self.batch, role=self.role))


def quantization_efficiency(gemm: Gemm, num_sms: int) -> float:
    """Best tile x wave quantization efficiency over TILE_SHAPES (1.0 = no idle hardware).
    With num_sms 0 (not known) only the tile padding counts. Depends on the shape only, so it
    is memoised (a search asks about the same shapes many times)."""
    return _quantization_efficiency(gemm.m, gemm.n, gemm.batch, num_sms)


@functools.lru_cache(maxsize=1 << 16)
def _quantization_efficiency(m: float, n: float, batch: float, num_sms: int) -> float:
    best = 0.0
    for tile_m, tile_n in TILE_SHAPES:
        tiles_m = math.ceil(m / tile_m)
        tiles_n = math.ceil(n / tile_n)
        tile_eff = (m * n) / (tiles_m * tile_m * tiles_n * tile_n)
        tiles = tiles_m * tiles_n * math.ceil(batch)
        wave_eff = tiles / (math.ceil(tiles / num_sms) * num_sms) if num_sms > 0 else 1.0
        best = max(best, tile_eff * wave_eff)
    return best


def _bytes_per_element(precision: Precision) -> int:
    return 4 if precision is Precision.FP32 else 2


def _outside_fp8_linears(precision: Precision) -> Precision:
    """Precision of work that fp8 training leaves in bf16: everything that is not a Transformer
    Engine linear (Megatron's core attention, TopKRouter and output layer) or a float8-converted
    nn.Linear (torchtitan skips `output` by default); other precisions are unchanged."""
    return Precision.BF16 if precision is Precision.FP8 else precision


def k_loop_efficiency(k: float) -> float:
    """Share of a GEMM's time in its K loop, k / (k + kernels.GEMM_K_OVERHEAD): the per-tile
    load and write-back around the loop cost as much as GEMM_K_OVERHEAD more of K (measured,
    cost/kernels.py)."""
    return k / (k + kernels.GEMM_K_OVERHEAD)


def gemm_time_s(gemm: Gemm, gpu: GpuType, precision: Precision) -> float:
    """Roofline of one GEMM: compute at the shape's achieved rate, or HBM traffic of reading
    A and B and writing C, whichever is longer. fp8 GEMMs read 1-byte inputs. The achieved
    rate is the large-GEMM rate x the tile / wave quantization efficiency (or the power limit's
    share, whichever is lower) x the K loop's share (k_loop_efficiency)."""
    if gemm.flops == 0:
        return 0.0
    # tile / wave quantization and a power limit each cap the large-GEMM rate at the TDP
    rate = gpu.achievable_matmul_flops_per_s(precision.value) * min(
        quantization_efficiency(gemm, gpu.num_sms), gpu.power_scale) * k_loop_efficiency(gemm.k)
    compute_s = gemm.flops / rate
    input_bytes = 1 if precision is Precision.FP8 else _bytes_per_element(precision)
    traffic = (input_bytes * (gemm.m * gemm.k + gemm.k * gemm.n)
               + _bytes_per_element(precision) * gemm.m * gemm.n) * gemm.batch
    memory_s = traffic / (gpu.memory_bandwidth_bytes_per_s * HBM_EFFICIENCY)
    return max(compute_s, memory_s)


def matmul_rate(gpu: GpuType, precision: Precision) -> float:
    """Best-case GEMM FLOP/s: peak x the GPU's matmul fraction (gpus.py: in-framework on
    A100, sustained and measured for this project on H100 and H200, MAMF elsewhere; a profile
    may override it) x its power_scale under a power limit."""
    return gpu.achievable_matmul_flops_per_s(precision.value) * gpu.power_scale


def memory_time_s(num_bytes: float, gpu: GpuType) -> float:
    return num_bytes / (gpu.memory_bandwidth_bytes_per_s * HBM_EFFICIENCY)


# ---- the GEMMs of a layer ---------------------------------------------------------------------

def layer_gemms(model: ModelSpec, cfg: ParallelConfig, layer: int) -> tuple[Gemm, ...]:
    """Forward GEMMs of one layer for one micro-batch on one GPU.

    Tokens: s/cp * b per GPU (context parallelism splits the sequence). Column-parallel
    layers split their output width by tp, row-parallel ones their input width. MLA's down-
    projections are replicated over tp. Experts: each EP rank holds E/ep experts, each expert
    receives (balanced routing) tokens * top_k * ep / E tokens of its EP group, gathered over
    expert-TP, which splits the expert width. torchtitan's dense blocks run their linears
    one by one (parallel.torchtitan_linears): Q, K, V and the gate and up projections are
    separate GEMMs.
    """
    t = cfg.tp
    tokens = cfg.seq_len / cfg.cp * cfg.mbs
    titan = torchtitan_linears(model, cfg, layer) if cfg.framework is Framework.TORCHTITAN else None
    if titan is not None:
        return tuple(_sharded(p, tokens, t) for p in titan)
    gemms = [_sharded(p, tokens, t) for p in model.attention_projections()]
    if not model.is_moe_layer(layer):
        gemms += [_sharded(p, tokens, t) for p in model.mlp_projections(model.ffn_hidden_size)]
        return tuple(gemms)
    moe = model.moe
    assert moe is not None
    sp = t if cfg.sequence_parallel else 1
    gemms.append(Gemm(m=tokens / sp, k=model.hidden_size, n=moe.num_experts, role="router"))
    per_expert = (tokens / sp) * cfg.ep * moe.top_k / moe.num_experts * cfg.expert_tp
    for p in model.mlp_projections(moe.ffn_hidden_size):  # split by expert-TP, grouped
        shard = _sharded(p, per_expert, cfg.expert_tp)
        gemms.append(Gemm(m=shard.m, k=shard.k, n=shard.n, batch=cfg.local_experts(model),
                          role="expert"))
    if moe.shared_width:
        gemms += [_sharded(p, tokens, t) for p in model.mlp_projections(moe.shared_width)]
    return tuple(gemms)


def _sharded(p: Projection, tokens: float, tp: int) -> Gemm:
    """The GEMM one GPU runs for projection `p` under `tp`-way tensor parallelism."""
    if p.split == "column":
        return Gemm(m=tokens, k=p.in_dim, n=p.out_dim / tp, role="column")
    if p.split == "row":
        return Gemm(m=tokens, k=p.in_dim / tp, n=p.out_dim, role="row")
    return Gemm(m=tokens, k=p.in_dim, n=p.out_dim, role="replicated")


# ---- attention and element-wise work ------------------------------------------------------

# FlexAttention's sparse block, query and key tokens (torch.nn.attention.flex_attention
# _DEFAULT_SPARSE_BLOCK_SIZE; torchtitan 0.3.0's FlexAttention.Config keeps it).
FLEX_BLOCK_TOKENS = 128


@functools.lru_cache(maxsize=1024)
def document_block_fraction(seq_len: int, document_tokens: int | None,
                            block: int = FLEX_BLOCK_TOKENS) -> float:
    """Share of causal attention's blocks that block-causal attention computes over a
    sequence packed with documents of `document_tokens` tokens each (1.0 for None or documents
    at least as long as the sequence).

    FlexAttention's block mask (torch.nn.attention.flex_attention.create_block_mask, as
    torchtitan 0.3.0 builds it from per-document positions: models/common/attention.py
    get_document_mask_mod with causal) skips a (query block, key block) pair only when no
    query of the block may attend to any key of the other; a partial block costs a full one.
    With documents laid end to end from the sequence's start, query block i reaches back to
    the key block holding the start of the document its first query is in, so it computes
    i - (that block) + 1 blocks; causal attention computes i + 1. Equal documents of the
    token-weighted mean length stand for the real mix (attention work grows with d^2, so it
    is the d^2-weighted, not the plain, mean that counts)."""
    if document_tokens is None or document_tokens >= seq_len:
        return 1.0
    n = math.ceil(seq_len / block)
    computed = 0
    for i in range(n):
        start = (i * block) // document_tokens * document_tokens  # its first query's document
        computed += i - start // block + 1
    return computed / (n * (n + 1) / 2)


def attention_time_s(model: ModelSpec, cfg: ParallelConfig, gpu: GpuType, *,
                     best_rate: bool = False) -> tuple[float, float]:
    """(forward, backward) of the attention core for one micro-batch on one GPU.

    Fused (flash_attention): causal FLOPs (half the s x s scores; with context parallelism each
    rank holds s/cp queries against all keys, causal overall), backward 2.5x forward's FLOPs
    (it recomputes the scores: Dao 2023 Sec. 3.2), at the measured rates of the kernel
    (fused_attention_kernel) for a call of this size where the GPU was measured
    (kernels.attention_rates; with best_rate, the fastest rate of any size: a lower bound),
    else at FLASH_ATTENTION_FRAC of peak; under a power limit no faster than the fastest
    measured rate x the GPU's power_scale. Unfused: QK^T and PV as
    batched GEMMs over the full s x s, plus scale-mask-softmax and dropout through HBM
    (softmax_pass_bytes per score forward, twice in backward).
    With context parallelism the ring's merges and gradient accumulations (cp_ring_bytes)
    run beside the kernel calls, on the same stream. torchtitan 0.3.0's block-causal
    attention over packed documents (ParallelConfig.document_tokens) does the
    document_block_fraction of the causal work, at the rate of a call of that size; under
    context parallelism each rank alike (torchtitan's default head-tail sharding, 2 of the
    sequence's 2 cp chunks a rank, balances causal work, and documents shorter than a chunk
    give every query block about the same work).
    fp8 training runs attention in bf16 (Transformer Engine keeps dot-product attention in
    bf16 unless --fp8-dot-product-attention; torchao's float8 converts linear layers only);
    the measured rates are bf16 ones and do not apply to fp32.
    """
    t = cfg.tp
    heads = model.num_attention_heads / t
    queries = cfg.seq_len / cfg.cp
    b = cfg.mbs
    if model.mla is not None:
        d_qk, d_v = model.mla.qk_head_dim, model.mla.v_head_dim
    else:
        d_qk = d_v = model.head_dim
    precision = _outside_fp8_linears(cfg.precision)
    if cfg.flash_attention:
        flops = (2.0 * b * heads * queries * cfg.seq_len * (d_qk + d_v) * 0.5
                 * document_block_fraction(cfg.seq_len, cfg.document_tokens))
        kernel = fused_attention_kernel(cfg, gpu).value
        rates = ceiling = None
        measured = gpu.kernels_measured_on
        if precision is Precision.BF16 and measured is not None:
            ceiling = kernels.best_attention_rates(measured, kernel)
            rates = ceiling if best_rate else kernels.attention_rates(measured, kernel, flops)
        if rates is None or ceiling is None:
            rate = gpu.peak(precision.value) * FLASH_ATTENTION_FRAC
            rates = ceiling = (rate, rate)
        scale = gpu.power_scale  # power-bound like large GEMMs: a ceiling, see power_scale
        forward = min(rates[0], ceiling[0] * scale)
        backward = min(rates[1], ceiling[1] * scale)
        ring_fwd, ring_bwd = (memory_time_s(n, gpu) for n in cp_ring_bytes(model, cfg))
        return flops / forward + ring_fwd, 2.5 * flops / backward + ring_bwd
    scores = Gemm(m=queries, n=cfg.seq_len, k=d_qk, batch=b * heads)
    context = Gemm(m=queries, n=d_v, k=cfg.seq_len, batch=b * heads)
    forward = gemm_time_s(scores, gpu, precision) + gemm_time_s(context, gpu, precision)
    backward = sum(gemm_time_s(g, gpu, precision)
                   for gemm in (scores, context) for g in gemm.backward())
    softmax_bytes = softmax_pass_bytes(model, cfg) * b * heads * queries * cfg.seq_len
    return (forward + memory_time_s(softmax_bytes, gpu),
            backward + memory_time_s(2 * softmax_bytes, gpu))


def cp_ring_bytes(model: ModelSpec, cfg: ParallelConfig) -> tuple[float, float]:
    """HBM bytes of ring attention's own element-wise work around the kernel calls of one
    layer, (forward, backward), one micro-batch, one GPU: Transformer Engine's
    AttnFuncWithCPAndKVP2P, Megatron-Core's ring (attention/dot_product_attention/
    context_parallel.py), for the busiest rank of the load-balanced ring. Per element of the
    local attention output O, query Q and keys-plus-values KV (widths / tp): K and V stacked
    into the P2P buffer once (4 per KV); forward, the fused output correction of each step
    (flash_attn_fwd_out_correction: reads the step's output and the running one, writes it:
    6; the first step 4): 6 cp - 2 per O; backward, dq copied then added per step
    (6 cp - 2 per Q), dk and dv stacked per step (4) and added into the received dkv (6, the
    first a copy): 10 cp - 2 per KV. The log-sum-exp updates (b x heads x s/cp floats) are
    left out. 0 without context parallelism, and for torchtitan, whose PyTorch ring merges
    eagerly in fp32 (torch/distributed/tensor/experimental/_attention.py _SDPAMerger: about
    38 bytes per O a round) but is traced into the compiled block under torch.compile, and
    whose FlexAttention path gathers K and V instead of merging: not priced (README)."""
    if cfg.cp <= 1 or cfg.framework is Framework.TORCHTITAN:
        return 0.0, 0.0
    cp = cfg.cp
    tokens = cfg.seq_len / cp * cfg.mbs
    out = tokens * model.attn_out_width / cfg.tp
    query = tokens * model.q_width / cfg.tp
    kv = local_kv_elements(model, cfg)
    return out * (6 * cp - 2) + kv * 4, query * (6 * cp - 2) + kv * (10 * cp - 2)


def softmax_pass_bytes(model: ModelSpec, cfg: ParallelConfig) -> int:
    """HBM bytes per attention score of unfused attention's forward element-wise work: the
    fused scale-mask-softmax kernel reads the 16-bit scores and writes the probabilities (4);
    beyond its key limit (parallel.FUSED_SOFTMAX_MAX_KEYS) PyTorch's path casts to fp32 (read 2,
    write 4), masks (4, 4), runs softmax (4, 4) and casts back (4, 2): 28. Attention dropout
    reads and writes them again and writes its 1-byte mask (5); with p = 0 it is not run
    (parallel.dropout_masks). Kernel sources as in memory.attention_score_bytes."""
    softmax = 4 if cfg.seq_len < FUSED_SOFTMAX_MAX_KEYS else 28
    return softmax + (5 if dropout_masks(model, cfg)[1] else 0)


def fused_attention_kernel(cfg: ParallelConfig, gpu: GpuType) -> AttentionKernel:
    """The fused attention kernel whose rates the job's attention takes: cfg.attention_kernel,
    or for AUTO what the frameworks pick today (parallel.AttentionKernel): cuDNN on compute
    capability 9.0 and later, FlashAttention-2 before; torchtitan 0.3.0 (not
    legacy_attention) runs FlexAttention's Triton kernel (models/common/config_utils
    get_attention_config; SDPA is refused for language models), priced at FlashAttention-2's
    measured rates, of which PyTorch's FlexAttention blog (2024-08) puts it at about 90%
    forward and 85% backward (no faster kernel than FA2 is assumed for it)."""
    if cfg.attention_kernel is not AttentionKernel.AUTO:
        return cfg.attention_kernel
    if cfg.framework is Framework.TORCHTITAN and not cfg.legacy_attention:
        return AttentionKernel.FA2
    capability = gpu.compute_capability
    return AttentionKernel.CUDNN if capability and capability >= (9, 0) else AttentionKernel.FA2


# HBM bytes per element of the element-wise ops eager torchtitan runs as separate kernels,
# forward, bf16 activations (torchtitan 0.3.0, models/common: rope.py, feed_forward.py,
# attention.py), where compiled code fuses them:
# - RoPE on q and k in complex arithmetic: .float() (read 2, write 4), the complex multiply
#   (4, 4), type_as (4, 2): 20 per element, fused 4;
# - SwiGLU: silu (2, 2), then the product (4, 2): 10 per ffn element, fused 6.
# The attention output needs no copy: SDPA's fused kernels write it in the query's
# [batch, seq, heads, dim] layout, so transposing it back and reshaping are views.
# - RMSNorm, fused (PyTorch >= 2.8 dispatches nn.RMSNorm to its _fused_rms_norm kernel, eager
#   too; compiled code; Megatron's and Transformer Engine's kernels): read 2, write 2 per
#   element (RMS_NORM_BYTES). Op by op (ParallelConfig.fused_rms_norm false: PyTorch before
#   2.8, torchtitan's 2024 RMSNorm class): .float() (2, 4), pow (4, 4), mean (4), x * rsqrt
#   (4, 4), type_as (4, 2), * weight (2, 2): 36 (EAGER_RMS_NORM_BYTES). Its autograd backward
#   moves about twice that (72 by the same count), as the model's 2x backward rule assumes.
EAGER_ROPE_BYTES = 20
EAGER_SWIGLU_BYTES = 10
RMS_NORM_BYTES = 4
EAGER_RMS_NORM_BYTES = 36


def norm_bytes_per_element(model: ModelSpec, cfg: ParallelConfig) -> int:
    """HBM bytes per element of one forward normalization: RMS_NORM_BYTES, or
    EAGER_RMS_NORM_BYTES for eager torchtitan's op-by-op RMSNorm (parallel.op_by_op_rms_norm)."""
    return EAGER_RMS_NORM_BYTES if op_by_op_rms_norm(model, cfg) else RMS_NORM_BYTES


def elementwise_bytes(model: ModelSpec, cfg: ParallelConfig, layer: int) -> float:
    """HBM bytes of one layer's forward element-wise kernels, one micro-batch, one GPU: two
    norms (norm_bytes_per_element per element of h each), two bias-dropout-adds (two inputs,
    one output, a mask: 7h; 6h without residual dropout, parallel.dropout_masks), the
    activation (fused bias-GeLU / squared ReLU: read and write f; SwiGLU: read 2f, write f,
    all / tp), rotary embeddings on q and k (read and write), MoE permute and unpermute of
    routed tokens (read and write h each; twice each with more than one local expert:
    mlp_elementwise_bytes). Norms and residuals are split by tp only with
    sequence parallelism. Eager torchtitan (cfg.eager) runs RoPE and SwiGLU op by op (the
    EAGER_* bytes above), and RMSNorm too on PyTorch before 2.8 (norm_bytes_per_element);
    residual adds and MoE permutes move the same bytes either way. torchtitan's GQA models
    before 0.3.0 (legacy_attention) copied K and V to every query head before attention
    (parallel.attention_kv_width), compiled or not: the kernel's input is the widened tensor."""
    t = cfg.tp
    sp = t if cfg.sequence_parallel else 1
    tokens = cfg.seq_len / cfg.cp * cfg.mbs
    h = model.hidden_size
    eager = cfg.eager and cfg.framework is Framework.TORCHTITAN
    residual = 7 if dropout_masks(model, cfg)[0] else 6  # the masks only where dropout runs
    per_token = (2 * norm_bytes_per_element(model, cfg) * h + 2 * residual * h) / sp
    if model.position_embedding.value == "rope":
        per_token += (EAGER_ROPE_BYTES if eager else 4) * (model.q_width + model.kv_width) / t
    repeated = attention_kv_width(model, cfg)
    if repeated != model.kv_width:  # torchtitan's repeat_kv: read K and V, write them widened
        per_token += 2 * 2 * (model.kv_width + repeated) / t
    return per_token * tokens + sum(mlp_elementwise_bytes(model, cfg, layer).values())


def mlp_elementwise_bytes(model: ModelSpec, cfg: ParallelConfig, layer: int) -> dict[str, float]:
    """The MLP block's part of elementwise_bytes, one micro-batch: "activation" (a dense
    MLP's, or the routed experts'), "permute" (MoE permute and unpermute, each a read and a
    write of the routed tokens; Megatron-Core's all-to-all dispatcher, the one this planner
    prices, sorts them by local expert after the exchange and back before it when a rank holds
    more than one expert: token_dispatcher.py dispatch_postprocess and combine_preprocess,
    sort_chunks_by_idxs, a copy of the tokens each way; other frameworks' MoE are priced
    alike), "shared" (the
    shared experts' activation)."""
    t = cfg.tp
    sp = t if cfg.sequence_parallel else 1
    tokens = cfg.seq_len / cfg.cp * cfg.mbs
    eager = cfg.eager and cfg.framework is Framework.TORCHTITAN
    gate = 2 if model.activation.gated else 1
    activation = EAGER_SWIGLU_BYTES if eager and model.activation.gated else 2 * (gate + 1)
    if not model.is_moe_layer(layer):
        return {"activation": activation * model.ffn_hidden_size / t * tokens}
    moe = model.moe
    assert moe is not None
    routed = moe.top_k * cfg.expert_tp  # routed copies per local token (gathered over etp)
    f = moe.ffn_hidden_size / cfg.expert_tp
    parts = {"activation": activation * f * routed / sp * tokens,
             "permute": 2 * 2 * 2 * model.hidden_size * routed / sp * tokens
             * (2 if cfg.local_experts(model) > 1 else 1)}
    if moe.shared_width:
        parts["shared"] = activation * moe.shared_width / t * tokens
    return parts


def tp_layout_copy_bytes(model: ModelSpec, cfg: ParallelConfig, layer: int) -> float:
    """HBM bytes of the copies torchtitan's sequence-parallel collectives add to one layer's
    forward (its backward moves as many). torchtitan shards the sequence on dim 1 of
    [batch, sequence, hidden] (SequenceParallel / PrepareModuleInput with Shard(1)); NCCL
    gathers and scatters along dim 0, so PyTorch's functional collectives reorder with
    torch.cat(torch.chunk(...)) (torch/distributed/_functional_collectives.py
    all_gather_tensor, reduce_scatter_tensor): the reduce-scatter's input is copied before the
    collective, the all-gather's output after it, unless the batch is 1 (then the gathered
    chunks are a view: _maybe_view_chunk_cat). Each copy reads and writes the block's full
    activation, 2 * s * b * h * 2 bytes (the all-gather's half that where it gathers fp8:
    parallel.tp_gathers_in_fp8). The backward of an all-gather is a reduce-scatter
    and vice versa: the same copies. Async TP (tp_comm_overlap) pipelines its own chunks and
    is not charged; Megatron's sequence dimension is dim 0 (no copies)."""
    if (cfg.framework is not Framework.TORCHTITAN or cfg.tp == 1
            or not cfg.sequence_parallel or cfg.tp_comm_overlap):
        return 0.0
    blocks = 1 if model.is_moe_layer(layer) else 2  # torchtitan's MoE: tokens gathered once
    full = cfg.seq_len / cfg.cp * cfg.mbs * model.hidden_size * 2
    scattered = full  # the reduce-scatter's input, 16-bit
    gathered = 0.0  # the all-gather's output (a view at batch 1), 1-byte where it gathers fp8
    if cfg.mbs > 1:
        gathered = full / 2 if tp_gathers_in_fp8(cfg) else full
    return blocks * 2 * (scattered + gathered)


def async_tp_reduction_bytes(model: ModelSpec, cfg: ParallelConfig, layer: int) -> float:
    """HBM bytes of the reductions torchtitan's async TP adds to one layer's forward (its
    backward moves as many). PyTorch's fused matmul + reduce-scatter
    (torch/distributed/_symmetric_memory/__init__.py, _fused_matmul_reduce_scatter_impl)
    computes the partial output for every rank, exchanges the partials with copy-engine
    copies into a stacked [tp, s/tp, h] buffer (_pipelined_produce_and_all2all) and then sums
    it in one reduction kernel: it reads the whole unreduced output (2 * s * b * h bytes) and
    writes its 1/tp share, after the exchange, on the compute stream. One per block forward
    (the output projection and the MLP's down projection) and one per block backward (the
    input gradient of the gathered input); torchtitan's MoE block gathers its tokens once."""
    if cfg.framework is not Framework.TORCHTITAN or cfg.tp == 1 or not cfg.tp_comm_overlap:
        return 0.0
    blocks = 1 if model.is_moe_layer(layer) else 2
    full = cfg.seq_len / cfg.cp * cfg.mbs * model.hidden_size * 2
    return blocks * full * (1 + 1 / cfg.tp)


@dataclass(frozen=True, slots=True, kw_only=True)
class LayerTime:
    """One layer, one micro-batch, one GPU. Seconds.

    `backward_s` includes what recompute runs again (`recompute_s` of it)."""

    forward_s: float
    backward_s: float
    recompute_s: float
    gemm_s: float
    attention_s: float
    attention_forward_s: float
    elementwise_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class TpBlockGemms:
    """Seconds of the GEMMs beside one block's tensor-parallel collectives (one micro-batch):
    `input_*` are the linears reading the block's gathered input (QKV; MLA's replicated down-
    projections; FC1), `output_*` the one whose output is reduced (the attention output
    projection; FC2). Forward, data-gradient and weight-gradient GEMMs."""

    input_fwd: float
    input_dgrad: float
    input_wgrad: float
    output_fwd: float
    output_dgrad: float


def tp_block_gemms(model: ModelSpec, cfg: ParallelConfig, gpu: GpuType,
                   layer: int) -> tuple[TpBlockGemms, ...]:
    """The blocks of a layer whose TP collectives sit beside their own linears: attention, and
    a dense MLP. An MoE block's TP traffic runs in the token dispatcher, outside the expert
    GEMMs, and has no entry (step.layer_passes exposes it). A collective overlaps only the
    GEMM beside it: Megatron launches a linear's input-gradient all-reduce / reduce-scatter
    asynchronously, runs that linear's weight-gradient GEMM and waits (and with sequence
    parallelism re-gathers the input for it during the data-gradient GEMM), megatron/core/
    tensor_parallel/layers.py LinearWithGradAccumulationAndAsyncCommunication; userbuffers
    (--tp-comm-overlap) and torchtitan's async TP pipeline each collective with its GEMM."""
    gemms = layer_gemms(model, cfg, layer)
    titan = torchtitan_linears(model, cfg, layer) if cfg.framework is Framework.TORCHTITAN else None
    n_attn = 4 if titan is not None else len(model.attention_projections())  # wq, wk, wv, wo

    def block(gs: tuple[Gemm, ...], input_role: str) -> TpBlockGemms:
        inputs = [g for g in gs if g.role == input_role]
        outputs = [g for g in gs if g.role == "row"]

        def t(items: list[Gemm], which: int) -> float:  # 0 forward, 1 dgrad, 2 wgrad
            return sum(linear_gemm_times(g, cfg, gpu, cfg.precision)[which] for g in items)
        return TpBlockGemms(input_fwd=t(inputs, 0), input_dgrad=t(inputs, 1),
                            input_wgrad=t(inputs, 2), output_fwd=t(outputs, 0),
                            output_dgrad=t(outputs, 1))
    blocks = [block(gemms[:n_attn], "replicated" if model.mla is not None else "column")]
    if not model.is_moe_layer(layer):
        blocks.append(block(gemms[n_attn:], "column"))
    return tuple(blocks)


# fp8 GEMMs take fp8 inputs that cast kernels make from bf16, and Hopper's fp8 tensor cores
# take only the "TN" layout, so each cast also writes the transpose the other pass needs
# (Transformer Engine's fused cast_transpose, transformer_engine/common/transpose/; torchao's
# float8 training casts input, weight and output gradient per linear call likewise): read 2
# bytes, write 1 byte twice, per element of each GEMM input in forward and of the output
# gradient in backward. Weights are counted every micro-batch (torchao recasts them; Transformer
# Engine caches them across a step's micro-batches, where this errs slow).
FP8_CAST_BYTES_PER_ELEMENT = 4.0


def fp8_cast_bytes(gemms: tuple[Gemm, ...]) -> tuple[float, float]:
    """(forward, backward) HBM bytes of casting the fp8 GEMMs' operands: both inputs forward,
    the output gradient backward (FP8_CAST_BYTES_PER_ELEMENT)."""
    forward = sum((g.m * g.k + g.k * g.n) * g.batch for g in gemms)
    backward = sum(g.m * g.n * g.batch for g in gemms)
    return FP8_CAST_BYTES_PER_ELEMENT * forward, FP8_CAST_BYTES_PER_ELEMENT * backward


# Transformer Engine's default userbuffers overlap, what Megatron's --tp-comm-overlap runs
# without --tp-comm-overlap-cfg (TE >= 2.0 module/base.py initialize_ub, get_default_config):
# "pipeline" (proj_fprop, fc2_fprop) splits the GEMM in 4 and "bulk" (qkv/fc1 dgrad and wgrad)
# runs beside its collective, both leaving UB_COMM_SMS SMs to the communication kernels
# (set_sm_margin); "ring_exchange" (qkv_fprop, fc1_fprop, proj_dgrad, fc2_dgrad) splits the
# GEMM in tp chunks and moves data with the copy engines (no SMs taken).
UB_COMM_SMS = 16
UB_PIPELINE_SPLITS = 4


def _ub_gemm_s(gemm: Gemm, gpu: GpuType, precision: Precision, *, splits: int,
               comm_sms: int) -> float:
    """One userbuffers-overlapped GEMM: `splits` GEMMs of 1/splits of the rows, on the SMs the
    communication leaves (their share of the GPU)."""
    part = Gemm(m=gemm.m / splits, n=gemm.n, k=gemm.k, batch=gemm.batch, role=gemm.role)
    seconds = splits * gemm_time_s(part, gpu, precision)
    if comm_sms and gpu.num_sms > comm_sms:
        seconds *= gpu.num_sms / (gpu.num_sms - comm_sms)
    return seconds


def linear_gemm_times(gemm: Gemm, cfg: ParallelConfig, gpu: GpuType,
                      precision: Precision) -> tuple[float, float, float]:
    """(forward, data-gradient, weight-gradient) seconds of one linear's GEMMs. With Megatron's
    --tp-comm-overlap the tensor-parallel linears run as Transformer Engine's default
    userbuffers overlap does (UB_COMM_SMS): the input linears (QKV, FC1; "column") forward as
    ring exchange, split in tp; their data and weight gradients beside bulk collectives on
    the SMs left; the output linears (projection, FC2; "row") forward pipelined, split in 4
    on the SMs left; their data gradient as ring exchange; their weight gradient alone.
    torchtitan's async TP runs every tensor-parallel linear's forward and data-gradient GEMM
    as tp GEMMs of 1/tp of the rows (one per gathered or scattered shard)."""
    dgrad, wgrad = gemm.backward()
    plain = tuple(gemm_time_s(g, gpu, precision) for g in (gemm, dgrad, wgrad))
    if not (cfg.tp_comm_overlap and cfg.tp > 1):
        return plain[0], plain[1], plain[2]
    if cfg.framework is Framework.TORCHTITAN:
        if gemm.role not in ("column", "row"):
            return plain[0], plain[1], plain[2]
        # PyTorch's micro-pipelined async TP (torch/distributed/_symmetric_memory/__init__.py
        # _fused_all_gather_matmul_impl, _fused_matmul_reduce_scatter_impl): the gathered or
        # scattered operand is consumed shard by shard, one GEMM of m/tp rows per rank, data
        # moved by the copy engines; the weight gradient reads the whole gathered tensor.
        return (_ub_gemm_s(gemm, gpu, precision, splits=cfg.tp, comm_sms=0),
                _ub_gemm_s(dgrad, gpu, precision, splits=cfg.tp, comm_sms=0), plain[2])
    if cfg.framework is not Framework.MEGATRON:
        return plain[0], plain[1], plain[2]
    if gemm.role == "column":
        return (_ub_gemm_s(gemm, gpu, precision, splits=cfg.tp, comm_sms=0),
                _ub_gemm_s(dgrad, gpu, precision, splits=1, comm_sms=UB_COMM_SMS),
                _ub_gemm_s(wgrad, gpu, precision, splits=1, comm_sms=UB_COMM_SMS))
    if gemm.role == "row":
        return (_ub_gemm_s(gemm, gpu, precision, splits=UB_PIPELINE_SPLITS,
                           comm_sms=UB_COMM_SMS),
                _ub_gemm_s(dgrad, gpu, precision, splits=cfg.tp, comm_sms=0), plain[2])
    return plain[0], plain[1], plain[2]


def op_sac_recomputed_gemms(model: ModelSpec, cfg: ParallelConfig,
                            layer: int) -> tuple[Gemm, ...]:
    """The GEMMs torchtitan's op-level selective checkpointing runs again in one layer's
    backward (parallel.op_sac_recomputed_linears; Llama: wk, wo, w3), as one GPU runs them;
    none where op SAC is not modelled."""
    linears = torchtitan_linears(model, cfg, layer)
    if linears is None:
        return ()
    tokens = cfg.seq_len / cfg.cp * cfg.mbs
    return tuple(_sharded(p, tokens, cfg.tp) for p in op_sac_recomputed_linears(linears))


def op_sac_recompute_s(model: ModelSpec, cfg: ParallelConfig, gpu: GpuType, layer: int,
                       elementwise_forward_s: float) -> float:
    """What torchtitan's op-level selective checkpointing recomputes in one layer's backward
    (parallel.op_sac_recomputed_linears): the un-saved GEMMs (op_sac_recomputed_gemms) with
    their fp8 input casts, and the layer's forward element-wise work (`elementwise_forward_s`:
    norms, RoPE, the gate product; the residual add after the last linear, which early stop
    skips, is counted too); the attention kernel's output is saved. MoE and MLA layers,
    which memory counts as not checkpointed, recompute nothing."""
    gemms = op_sac_recomputed_gemms(model, cfg, layer)
    if not gemms:
        return 0.0
    seconds = sum(linear_gemm_times(g, cfg, gpu, cfg.precision)[0] for g in gemms)
    if cfg.precision is Precision.FP8:
        seconds += memory_time_s(fp8_cast_bytes(gemms)[0], gpu)
    return seconds + elementwise_forward_s


def module_recompute_s(model: ModelSpec, cfg: ParallelConfig, gpu: GpuType, layer: int,
                       gemms: tuple[Gemm, ...], gemm_forward_s: list[float],
                       attention_forward_s: float) -> float:
    """Forward work Megatron's selective recompute runs again in one layer's backward, by
    what its modules rerun (parallel.layer_reruns; `gemm_forward_s` are the forward seconds
    of `gemms`, layer_gemms' order, with their fp8 casts): the attention core; the norms that
    are modules of their own (MLA's input norm, an MoE layer's pre-MLP norm); the query and
    key/value up-projections (the column-parallel attention GEMMs of an MLA layer); a dense
    MLP's GEMMs and activation; an MoE block's router, experts, shared experts, activations
    and permutes (its all-to-alls: step.layer_passes); or the shared experts and the expert
    activation alone. RoPE on the recomputed query and key is not counted (a few bytes per
    element)."""
    reruns = layer_reruns(model, cfg, layer)
    n_attn = len(model.attention_projections())
    parts = mlp_elementwise_bytes(model, cfg, layer)
    tokens = cfg.seq_len / cfg.cp * cfg.mbs
    sp = cfg.tp if cfg.sequence_parallel else 1
    mlp_gemms = list(zip(gemms[n_attn:], gemm_forward_s[n_attn:], strict=True))
    seconds = attention_forward_s if reruns.attention_core else 0.0
    own_norms = reruns.input_norm + reruns.pre_mlp_norm
    if own_norms:
        seconds += memory_time_s(own_norms * norm_bytes_per_element(model, cfg)
                                 * model.hidden_size * tokens / sp, gpu)
    if reruns.up_projections:
        seconds += sum(f for g, f in zip(gemms[:n_attn], gemm_forward_s[:n_attn], strict=True)
                       if g.role == "column")
    if reruns.dense_mlp:
        seconds += sum(f for _, f in mlp_gemms) + memory_time_s(parts["activation"], gpu)
    if reruns.moe_block:
        seconds += sum(f for _, f in mlp_gemms) + memory_time_s(sum(parts.values()), gpu)
    if reruns.shared_experts:
        seconds += sum(f for g, f in mlp_gemms if g.role in ("column", "row"))
        seconds += memory_time_s(parts.get("shared", 0.0), gpu)
    if reruns.expert_activation:
        seconds += memory_time_s(parts["activation"], gpu)
    return seconds


def layer_time(model: ModelSpec, cfg: ParallelConfig, gpu: GpuType, layer: int,
               recompute: Recompute) -> LayerTime:
    """Compute time of one transformer layer (communication is added by step.py). With fp8,
    the linear layers' GEMMs run in fp8 and their operands' casts (fp8_cast_bytes) are
    memory-bound work; the MoE router's GEMM stays in bf16 (Megatron's TopKRouter is not a
    Transformer Engine linear and runs in the parameter or router dtype). Recompute reruns
    the whole forward (full), the attention core (Megatron's selective) or what torchtitan's
    op-level checkpointing does not save (op_sac_recompute_s)."""
    gemms = layer_gemms(model, cfg, layer)
    fp8 = cfg.precision is Precision.FP8

    def precision(g: Gemm) -> Precision:
        return _outside_fp8_linears(cfg.precision) if g.role == "router" else cfg.precision
    times = [linear_gemm_times(g, cfg, gpu, precision(g)) for g in gemms]
    gemm_fwd = sum(f for f, _, _ in times)
    gemm_bwd = sum(d + w for _, d, w in times)
    attn_fwd, attn_bwd = attention_time_s(model, cfg, gpu)
    elem_fwd = memory_time_s(elementwise_bytes(model, cfg, layer), gpu)
    cast_fwd = cast_bwd = 0.0
    if fp8:
        cast_fwd, cast_bwd = (memory_time_s(b, gpu) for b in fp8_cast_bytes(
            tuple(g for g in gemms if g.role != "router")))
    copies = memory_time_s(tp_layout_copy_bytes(model, cfg, layer)
                           + async_tp_reduction_bytes(model, cfg, layer), gpu)
    forward = gemm_fwd + attn_fwd + elem_fwd + cast_fwd + copies
    if recompute is Recompute.FULL:
        redo = forward
    elif recompute is Recompute.SELECTIVE and cfg.framework is Framework.TORCHTITAN:
        redo = op_sac_recompute_s(model, cfg, gpu, layer, elem_fwd)
    elif recompute is Recompute.SELECTIVE:
        forwards = [f for f, _, _ in times]
        casts = [memory_time_s(fp8_cast_bytes((g,))[0], gpu) if fp8 and g.role != "router"
                 else 0.0 for g in gemms]
        redo = module_recompute_s(model, cfg, gpu, layer, gemms,
                                  [f + c for f, c in zip(forwards, casts, strict=True)],
                                  attn_fwd)
    else:
        redo = 0.0
    backward = gemm_bwd + attn_bwd + 2 * elem_fwd + cast_bwd + copies + redo
    return LayerTime(forward_s=forward, backward_s=backward, recompute_s=redo,
                     gemm_s=gemm_fwd + gemm_bwd, attention_s=attn_fwd + attn_bwd,
                     attention_forward_s=attn_fwd,
                     elementwise_s=3 * elem_fwd + cast_fwd + cast_bwd + 2 * copies)


# HBM bytes per logit of the cross entropy, (forward, backward), counted from each kernel's
# reads and writes:
# - Megatron's vocab-parallel cross entropy (megatron/core/tensor_parallel/cross_entropy.py),
#   eager: .float() (read 2, write 4), max (4), in-place subtract of the max (4, 4), in-place
#   exp (4, 4), sum (4), in-place division by the sum (4, 4): 38; backward the in-place
#   multiply by the incoming gradient (4, 4) and the cast back for .float()'s backward (4, 2):
#   14 (the target updates touch one logit per row).
# - Its --cross-entropy-loss-fusion (megatron/core/fusions/fused_cross_entropy.py, three
#   jit_fuser = torch.compile regions): cast and max (2, 4), subtract + exp + sum (4, 4),
#   division (4, 4): 22; backward, functionalised, a copy for the target update (4, 4) and
#   the fused multiply and cast (4, 2): 14.
# - PyTorch's F.cross_entropy on .float() logits (torchtitan eager, DeepSpeed with HF models):
#   .float() (2, 4), log_softmax, whose rows of a large vocabulary are read three times (max,
#   exp-sum, output: 12, write 4); backward nll_loss's zero-filled gradient (write 4),
#   log_softmax's backward (reads the gradient twice and the output once, 12, writes 4) and
#   the cast back (4, 2): 22 and 26.
# - torchtitan's loss under tensor parallelism (vocabulary-sharded logits), uncompiled:
#   PyTorch's loss_parallel (torch/distributed/tensor/parallel/loss.py _log_softmax and
#   _nll_loss_and_log_softmax_backward; torchtitan 0.3.0's _LossParallelCrossEntropy in
#   components/loss.py is the same arithmetic) runs the softmax op by op: .float() (2, 4), the
#   max (4), x - max (4, 4), exp (4, 4) and its sum (4), log-probabilities (4, 4): 38; backward
#   zeros_like (write 4), exp (4, 4), their sum (8, 4), times the gradient (4, 4), the cast
#   back (4, 2): 38.
# - torchtitan's compiled loss (parallel.torchtitan_compiled_loss): the bf16 logits read for
#   the max and the exp-sum (2 + 2); backward read again and the bf16 gradient written (2, 2).
MEGATRON_LOSS_BYTES = (38.0, 14.0)
MEGATRON_FUSED_LOSS_BYTES = (22.0, 14.0)
PYTORCH_LOSS_BYTES = (22.0, 26.0)
LOSS_PARALLEL_BYTES = (38.0, 38.0)
COMPILED_LOSS_BYTES = (4.0, 4.0)


def loss_pass_bytes(cfg: ParallelConfig) -> tuple[float, float]:
    """HBM bytes per logit of the loss's (forward, backward) passes, by the cross entropy the
    framework runs (the tables above)."""
    if torchtitan_compiled_loss(cfg):
        return COMPILED_LOSS_BYTES
    if cfg.framework is Framework.MEGATRON:
        return MEGATRON_FUSED_LOSS_BYTES if cfg.cross_entropy_fusion else MEGATRON_LOSS_BYTES
    if torchtitan_loss_parallel(cfg):
        return LOSS_PARALLEL_BYTES
    return PYTORCH_LOSS_BYTES


def head_gemm(model: ModelSpec, cfg: ParallelConfig) -> Gemm:
    """The LM head's logits GEMM on one GPU: the micro-batch's tokens x the padded vocabulary
    / tp."""
    tokens = cfg.seq_len / cfg.cp * cfg.mbs
    return Gemm(m=tokens, k=model.hidden_size, n=model.padded_vocab_size(cfg.tp) / cfg.tp)


def mtp_projection_gemm(model: ModelSpec, cfg: ParallelConfig) -> Gemm:
    """An MTP module's 2h -> h projection of the normed hidden state and embedding
    (Megatron-Core multi_token_prediction.py eh_proj, column-parallel), one micro-batch."""
    tokens = cfg.seq_len / cfg.cp * cfg.mbs
    h = model.hidden_size
    return Gemm(m=tokens, k=2 * h, n=h / cfg.tp, role="column")


def head_time(model: ModelSpec, cfg: ParallelConfig, gpu: GpuType) -> tuple[float, float]:
    """(forward, backward) of the final norm, LM head and cross entropy on the last stage: the
    logits GEMM (head_gemm), and the loss's passes over the logits (loss_pass_bytes).
    fp8 training keeps the LM head in bf16 (Megatron's output layer is not a Transformer
    Engine module; torchtitan's float8 skips the `output` linear by default)."""
    logits = head_gemm(model, cfg)
    tokens = logits.m
    precision = _outside_fp8_linears(cfg.precision)
    forward = gemm_time_s(logits, gpu, precision)
    backward = sum(gemm_time_s(g, gpu, precision) for g in logits.backward())
    loss_forward, loss_backward = (memory_time_s(b * tokens * logits.n, gpu)
                                   for b in loss_pass_bytes(cfg))
    norm = memory_time_s(norm_bytes_per_element(model, cfg) * model.hidden_size * tokens, gpu)
    return forward + loss_forward + norm, backward + loss_backward + 2 * norm
