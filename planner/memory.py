"""Per-pipeline-stage memory of the busiest GPU, in bytes (pure functions, breakdowns).

Three levels, as DESIGN.md defines them:
- `allocated_bytes`: what `torch.cuda.max_memory_allocated()` reports: model states (weights,
  gradients, optimizer state), stored activations and the transient buffers alive at the peak;
- `reserved_bytes`: + the caching allocator's fragmentation (`max_memory_reserved()`);
- `peak_bytes`: + the CUDA context and NCCL communication buffers (what nvidia-smi shows),
  + an explicit uncertainty margin (ESTIMATE_MARGIN_FRAC of reserved), so that "fits" errs safe.

When a term is uncertain it errs high; each docstring says where from and by how much.
"""

from __future__ import annotations

import functools
import math
import operator
from dataclasses import dataclass

from planner.model import ModelSpec
from planner.parallel import (
    FUSED_SOFTMAX_MAX_KEYS,
    Framework,
    ParallelConfig,
    Precision,
    Recompute,
    VocabStrategy,
    attention_kv_width,
    cp_gathers_kv,
    dropout_masks,
    in_flight_microbatches,
    layer_reruns,
    live_chunk_passes,
    local_kv_elements,
    op_by_op_rms_norm,
    op_sac_saved_linears,
    stage_chunks,
    torchtitan_compiled_loss,
    torchtitan_linears,
    torchtitan_loss_parallel,
)
from planner.units import MiB

# ---- constants with their sources ------------------------------------------------------------

# CUDA context (driver, kernels of CUDA, cuBLAS, NCCL, PyTorch) outside the caching allocator.
# Reported 200-700 MB with lazy module loading (pytorch/pytorch#28113; ptrblck in #107667:
# ~300 MB since CUDA 11.7, >1000 MB before). We take 1 GiB: the upper report plus cuBLAS /
# cuDNN / Transformer Engine kernels a training step loads (conservative by ~0.3-0.7 GiB).
CUDA_CONTEXT_BYTES = 1024 * MiB

# NCCL buffers per communicator that a rank actually uses: NCCL allocates, per channel and
# connected peer, a 4 MiB buffer for the Simple protocol (NCCL src/init.cc DEFAULT_BUFFSIZE)
# plus LL and LL128 buffers of comparable total size; we take 8 MiB per (channel, peer). Ring
# collectives connect 2 peers per channel; 16 channels is NCCL's usual count on NVLink/IB
# systems (nccl-tests logs "16 coll channels"), up to 32. 16 * 2 * 8 MiB = 256 MiB.
NCCL_BYTES_PER_COMMUNICATOR = 16 * 2 * 8 * MiB

# Fixed allocations of a training process outside the model states, through the caching
# allocator: cuBLAS / cuBLASLt and Transformer Engine GEMM workspaces (TE keeps 32 MiB per
# stream on Hopper), RNG states, the token / label / mask batch. Measured: steady-state
# allocated memory minus model states in Megatron-LM's functional tests (measured.yaml
# `steady_alloc_bytes`) leaves 0.08-0.11 GiB on tp/pp/cp/ep variants of the same model; we
# take 128 MiB.
FRAMEWORK_BUFFERS_BYTES = 128 * MiB

# Caching-allocator fragmentation, as a fraction of the memory that is allocated and freed
# every step (activations and transients). Measured in pytorch/pytorch#40989: allocated
# 15006 -> reserved 16726 MB (+11.5%) and 17402 -> 19354 MB (+11.2%); we round up to 12%.
FRAGMENTATION_FRAC = 0.12


# DeepSpeed ZeRO-3's defaults (deepspeed/runtime/zero/config.py stage3_max_live_parameters and
# stage3_max_reuse_distance), elements.
DEEPSPEED_MAX_LIVE_PARAMETERS = 1_000_000_000


# Uncertainty margin added to `reserved` for the fit verdict (peak_bytes), not to the
# allocated / reserved estimates themselves. 10% is the smallest round fraction that covers
# every measured peak of `planner validate` whose features the estimator models; the ones it
# does not cover use features it does not model (README, Validation).
ESTIMATE_MARGIN_FRAC = 0.10


# The unsharded (compute) copy of a parameter and what a parameter gather moves: 16-bit, as
# torchtitan's FSDP mixed precision and Megatron's distributed optimizer hold it.
UNSHARDED_PARAM_BYTES = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class PrecisionPolicy:
    """Bytes per parameter for each model-state tensor.

    Attributes:
        weight_bytes: the weights the model computes with (kept whole unless ZeRO-3), for the
            parameters outside the GEMMs (embedding, LM head, norms).
        gemm_weight_bytes: the same for the GEMM weights of the transformer layers, with every
            copy fp8 training keeps of them: Transformer Engine holds an fp8 copy and its
            transpose (2 bytes) beside the 16-bit weight; with --fp8-param-gather the fp8
            weight and its transpose are all there is. Megatron's embedding and output layer
            are not Transformer Engine modules and torchtitan's Float8Linear conversion leaves
            the output layer out, so the vocabulary layers have no fp8 copy.
        gather_bytes: per GEMM weight in a parameter all-gather (distributed optimizer, FSDP):
            16-bit, or fp8 with --fp8-param-gather; other parameters gather in 16-bit.
        grad_bytes: the gradient buffer (Megatron accumulates bf16 models' gradients in fp32:
            `--accumulate-allreduce-grads-in-fp32` is forced on with bf16 unless
            --grad-reduce-in-bf16).
        master_bytes: fp32 master weights (0 when the weights are already fp32).
        optimizer_bytes: Adam first and second moments.
    """

    weight_bytes: int
    gemm_weight_bytes: int
    grad_bytes: int
    master_bytes: int
    optimizer_bytes: int = 8
    gather_bytes: int = 2

    def gathered_bytes(self, count: float, sixteen_bit: float = 0.0) -> float:
        """Bytes a parameter all-gather moves for `count` parameters of which `sixteen_bit`
        are gathered 16-bit whatever the recipe (UNSHARDED_PARAM_BYTES: the vocabulary
        layers' weights, the layers fp8 training keeps in bf16) and the rest are GEMM weights
        (gather_bytes)."""
        return (count - sixteen_bit) * self.gather_bytes + sixteen_bit * UNSHARDED_PARAM_BYTES


@functools.lru_cache(maxsize=64)
def precision_policy(precision: Precision, framework: Framework, *,
                     fp8_param_gather: bool = False,
                     grad_reduce_in_bf16: bool = False) -> PrecisionPolicy:
    """Mixed-precision Adam as each framework runs it.

    Megatron bf16: 2 + 4 + 4 + 8 = 18 bytes/param (Megatron-LM theoretical_memory_usage.py:
    "18 bytes per parameter", 6 + 12/dp with the distributed optimizer); fp8 adds 2 per GEMM
    weight, --fp8-param-gather keeps the GEMM weights in fp8 only (1 + 1 transpose) and
    --grad-reduce-in-bf16 halves the gradient buffer (megatron/training/arguments.py
    validate_args; ParallelConfig).
    torchtitan FSDP2: the sharded parameters are fp32 (they are the master copy), fp32
    gradients and moments: 4 + 4 + 0 + 8 = 16 bytes/param, sharded; bf16 copies are transient.
    DeepSpeed bf16: as Megatron (fp32 gradient accumulation for bf16 in its BF16 optimizer).
    fp32: 4 + 4 + 0 + 8 = 16.
    """
    fp8 = precision is Precision.FP8
    if precision is Precision.FP32:
        return PrecisionPolicy(weight_bytes=4, gemm_weight_bytes=4, grad_bytes=4,
                               master_bytes=0)
    if framework is Framework.TORCHTITAN:
        return PrecisionPolicy(weight_bytes=4, gemm_weight_bytes=4 + (1 if fp8 else 0),
                               grad_bytes=4, master_bytes=0)
    if fp8 and fp8_param_gather:
        gemm, gather = 1 + 1, 1
    else:
        gemm, gather = 2 + (2 if fp8 else 0), 2
    return PrecisionPolicy(weight_bytes=2, gemm_weight_bytes=gemm, gather_bytes=gather,
                           grad_bytes=2 if grad_reduce_in_bf16 else 4, master_bytes=4)


def config_policy(cfg: ParallelConfig) -> PrecisionPolicy:
    """precision_policy for a configuration's precision, framework and dtype flags."""
    return precision_policy(cfg.precision, cfg.framework, fp8_param_gather=cfg.fp8_param_gather,
                            grad_reduce_in_bf16=cfg.grad_reduce_in_bf16)


# ---- results ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class StageMemory:
    """One pipeline stage, busiest GPU. All values in bytes.

    `activations_bytes` are the activations stored for backward at the peak (all in-flight
    micro-batches); `transient_bytes` the largest set of short-lived buffers alive at the peak
    (loss / logits, a recomputed layer, backward workspace, ZeRO-3 gathers).
    """

    stage: int
    num_layers: int
    num_params: int
    weights_bytes: int
    gradients_bytes: int
    optimizer_bytes: int
    framework_buffers_bytes: int
    activations_bytes: int
    transient_bytes: int
    allocated_bytes: int
    fragmentation_bytes: int
    reserved_bytes: int
    margin_bytes: int
    cuda_context_bytes: int
    nccl_bytes: int
    userbuffers_bytes: int
    peak_bytes: int
    in_flight_microbatches: float

    def to_dict(self) -> dict[str, object]:
        return {
            "stage": self.stage, "num_layers": self.num_layers, "num_params": self.num_params,
            "weights_bytes": self.weights_bytes, "gradients_bytes": self.gradients_bytes,
            "optimizer_bytes": self.optimizer_bytes,
            "framework_buffers_bytes": self.framework_buffers_bytes,
            "activations_bytes": self.activations_bytes,
            "transient_bytes": self.transient_bytes, "allocated_bytes": self.allocated_bytes,
            "fragmentation_bytes": self.fragmentation_bytes,
            "reserved_bytes": self.reserved_bytes, "margin_bytes": self.margin_bytes,
            "cuda_context_bytes": self.cuda_context_bytes,
            "nccl_bytes": self.nccl_bytes, "userbuffers_bytes": self.userbuffers_bytes,
            "peak_bytes": self.peak_bytes,
            "in_flight_microbatches": round(self.in_flight_microbatches, 4),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class MemoryEstimate:
    stages: tuple[StageMemory, ...]
    capacity_bytes: int
    headroom_frac: float

    @property
    def worst(self) -> StageMemory:
        return max(self.stages, key=lambda s: (s.peak_bytes, -s.stage))

    @property
    def peak_bytes(self) -> int:
        return self.worst.peak_bytes

    @property
    def usable_bytes(self) -> int:
        return int(self.capacity_bytes * (1 - self.headroom_frac))

    @property
    def fits(self) -> bool:
        return self.peak_bytes <= self.usable_bytes

    def to_dict(self) -> dict[str, object]:
        return {
            "peak_bytes": self.peak_bytes, "capacity_bytes": self.capacity_bytes,
            "headroom_frac": self.headroom_frac, "usable_bytes": self.usable_bytes,
            "fits": self.fits, "worst_stage": self.worst.stage,
            "stages": [s.to_dict() for s in self.stages],
        }


# ---- model states ----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class StageParams:
    """Parameters one GPU of a stage holds, before ZeRO sharding.

    dense: sharded by tp only (replicated over dp*cp); expert: sharded by ep*etp (replicated
    over expert-dp); vocab: the part of dense in the embedding and LM head (no fp8 copies, see
    PrecisionPolicy); the rest is GEMM weights (norms, < 0.01% of a layer, counted with them).
    """

    dense: int
    expert: int
    largest_layer: int
    vocab: int = 0


def stage_params(model: ModelSpec, cfg: ParallelConfig, stage: int,
                 layers: tuple[int, ...]) -> StageParams:
    """Parameters on one GPU of `stage` (see _stage_params; memoised on the fields it reads,
    since the search asks the same question for every micro-batch, recompute and ZeRO
    variant of a configuration)."""
    return _stage_params(model, cfg.tp, cfg.ep, cfg.expert_tp, cfg.pp, cfg.vocab_strategy,
                         stage, tuple(layers))


def layer_params(model: ModelSpec, cfg: ParallelConfig, layer: int) -> tuple[float, float]:
    """(dense, routed-expert) parameters of one transformer layer on one GPU: dense / tp,
    experts / (ep * expert-tp), as _stage_params counts them."""
    return _layer_share(model, layer, cfg.tp, cfg.ep, cfg.expert_tp)


def _layer_share(model: ModelSpec, layer: int, t: int, ep: int, etp: int) -> tuple[float, float]:
    p = model.params
    return p.per_layer_dense[layer] / t, p.per_layer_expert[layer] / (ep * etp)


@functools.lru_cache(maxsize=1 << 16)
def _stage_params(model: ModelSpec, t: int, ep: int, etp: int, pp: int,
                  vocab_strategy: VocabStrategy, stage: int,
                  layers: tuple[int, ...]) -> StageParams:
    """Parameters on one GPU of `stage`.

    Transformer layers: dense parameters / tp (norms are replicated; counted / tp, an
    under-count of < 0.01% of a layer), routed experts / (ep * etp). Embedding and head per
    vocab strategy: baseline and redistribute put the embedding on the first stage and the
    LM head on the last (with tied embeddings and pp > 1 Megatron keeps a copy of the word
    embedding on the last stage as the head: `shared_embedding`); vocab-parallel shards both
    over all pp stages. The vocabulary is padded as Megatron pads it. MTP modules sit on the
    last stage (Megatron-Core places them after the decoder); their experts shard like the
    decoder's.
    """
    p = model.params
    shares = [_layer_share(model, i, t, ep, etp) for i in layers]
    dense = sum(d for d, _ in shares)
    expert = sum(e for _, e in shares)
    largest = max((d + e for d, e in shares), default=0.0)
    vocab_weights = model.padded_vocab_size(t) * model.hidden_size / t
    other_embedding = p.embedding - model.vocab_size * model.hidden_size  # positions, norm
    first, last = stage == 0, stage == pp - 1
    head = vocab_weights if (not model.tie_embeddings or pp > 1) else 0.0
    vocab = 0.0
    if vocab_strategy is VocabStrategy.VOCAB_PARALLEL and pp > 1:
        vocab += vocab_weights / pp + head / pp
        if first:
            vocab += other_embedding
    else:
        if first:
            vocab += vocab_weights + other_embedding
        if last:
            vocab += head
    dense += vocab
    if last:
        dense += p.final_norm
        dense += (p.mtp - p.mtp_expert) / t
        expert += p.mtp_expert / (ep * etp)
    return StageParams(dense=round(dense), expert=round(expert), largest_layer=round(largest),
                       vocab=round(vocab))


def model_state_bytes(params: StageParams, cfg: ParallelConfig,
                      policy: PrecisionPolicy) -> tuple[int, int, int]:
    """(weights, gradients, optimizer) bytes on one GPU after ZeRO sharding.

    ZeRO stages after Rajbhandari et al. 2020 (arXiv 1910.02054), Sec. 5 / Table 1:
    stage 1 shards optimizer state (master weights + moments), stage 2 also gradients, stage 3
    also weights, each over the data-parallel group. Dense parameters shard over dp*cp (Megatron
    `data_parallel_group_with_context_parallel`, torchtitan's dp_shard*cp mesh); experts over
    expert-dp. ZeRO-1 is Megatron's distributed optimizer: 6 + 12/dp bytes/param for bf16.
    torchtitan's FSDP shards parameters, gradients and optimizer state at ZeRO 2 as at 3; at 2
    (fsdp_reshard_after_forward never) it also keeps the unsharded 16-bit parameters from
    forward to backward, and under pipelining (ParallelConfig.fsdp_keeps_params) those and
    unsharded fp32 gradients for the whole step.
    """
    # torchtitan's FSDP shards all its state at ZeRO 2 too; 2 only keeps the unsharded copy
    titan_fsdp = cfg.framework is Framework.TORCHTITAN and cfg.zero >= 2
    zero = 3 if titan_fsdp else cfg.zero

    def sharded(count: int, group: int, vocab: int = 0) -> tuple[float, float, float]:
        w = float((count - vocab) * policy.gemm_weight_bytes + vocab * policy.weight_bytes)
        g = float(count * policy.grad_bytes)
        o = float(count * (policy.master_bytes + policy.optimizer_bytes))
        if zero >= 1:
            o /= group
        if zero >= 2:
            g /= group
        if zero >= 3:
            w /= group
        return w, g, o

    # with distributed-optimizer instances each copy shards over dp*cp / instances ranks
    # (experts likewise over expert-dp / instances, at least one)
    dw, dg, do = sharded(params.dense, cfg.optimizer_shards if zero == 1 else cfg.dp * cfg.cp,
                         params.vocab)
    ew, eg, eo = sharded(params.expert, max(1, cfg.expert_dp // cfg.dist_opt_instances)
                         if zero == 1 else cfg.expert_dp)
    count = params.dense + params.expert
    if titan_fsdp and (cfg.zero == 2 or cfg.fsdp_keeps_params):
        dw += count * UNSHARDED_PARAM_BYTES  # the 16-bit copy, kept from forward to backward
    if cfg.fsdp_keeps_params:  # torchtitan FSDP under pipelining (ParallelConfig)
        dg += count * policy.grad_bytes  # gradients accumulated unsharded (fp32 reduce dtype)
    return math.ceil(dw + ew), math.ceil(dg + eg), math.ceil(do + eo)


# ---- activations -----------------------------------------------------------------------------

def attention_score_bytes(model: ModelSpec, cfg: ParallelConfig) -> int:
    """Bytes per attention score (one head, one query, one key) that unfused attention keeps
    for backward.

    Transformer Engine's UnfusedDotProductAttention and Megatron-Core's DotProductAttention run
    scores = baddbmm(Q, K^T), probs = scale_mask_softmax(scores), probs = dropout(probs),
    context = bmm(probs, V). The scores are not kept (baddbmm's backward needs Q and K); the
    fused softmax kernel saves its 16-bit output, which bmm saves too (one tensor): 2 bytes.
    PyTorch's softmax path (keys beyond FUSED_SOFTMAX_MAX_KEYS, where Transformer Engine
    computes softmax in fp32) keeps the fp32 output for softmax's backward and its 16-bit copy
    for bmm: 6. Attention dropout adds its 1-byte mask and its 16-bit output, which bmm saves
    in place of the probabilities: 3 more (Korthikanti et al. 2022, Sec. 4.1: 5 bytes with
    dropout). With p = 0 dropout returns its input (dropout_masks): nothing more."""
    softmax = 2 if cfg.seq_len < FUSED_SOFTMAX_MAX_KEYS else 4 + 2
    return softmax + (3 if dropout_masks(model, cfg)[1] else 0)


def saved_linear_input_bytes(cfg: ParallelConfig) -> int:
    """Bytes per element of the input a dense linear keeps for its weight gradient: 16-bit,
    but 1 under Megatron's fp8 training, whose Transformer Engine linears save the fp8 tensor
    they quantized (TE module/linear.py and layernorm_linear.py: saved_inputmat / ln_out is
    the QuantizedTensor, with only the usage the backward needs; TE 1.x saved the fp8 cast or
    its transpose). torchtitan's float8 linears (torchao) save the high-precision input."""
    fp8_te = cfg.precision is Precision.FP8 and cfg.framework is Framework.MEGATRON
    return 1 if fp8_te else 2


@functools.lru_cache(maxsize=1 << 14)
def layer_activation_bytes(model: ModelSpec, cfg: ParallelConfig, layer: int,
                           recompute: Recompute) -> int:
    """Activations one transformer layer stores for backward, per micro-batch, one GPU
    (memoised: the search asks it of every stage of every configuration it weighs).

    Korthikanti et al. 2022 (arXiv 2205.05198) Sec. 4.1, generalized from their GPT (ffn = 4h,
    MHA) to the widths of this model; 16-bit activations, 1-byte dropout masks where the model
    has dropout (dropout_masks). For a GPT with t = tp, dropout and no sequence parallelism
    this is s*b*h*(10 + 24/t + 5*a*s/(h*t)) (their Eq. 2); with sequence parallelism
    s*b*h/t*(34 + 5*a*s/h) (Table 2). Terms, in bytes:
      attention: norm input 2sbh, QKV input 2sbh, Q/K/V 2sb(q + 2kv)/t (torchtitan's K and V
        repeated to every query head before 0.3.0: parallel.attention_kv_width; every rank's
        K and V under 0.3.0's FlexAttention CP: parallel.cp_gathers_kv), softmax and dropout
        5*a*s^2*b/t (attention_score_bytes: 2 without attention dropout; none with flash
        attention: its output and fp32 log-sum-exp 4*a*s*b/t), output projection input 2sb*o/t,
        dropout mask sbh (with residual dropout, as the MLP's and the embedding's); MLA adds its
        latent q and kv before and after their norms, 4sb(q_lora + kv_lora + rope);
      (eager torchtitan's op-by-op RMSNorm keeps 6sbh instead of the norm input: its fp32
        copy, saved by pow and the mul, and the normalized output, saved by * weight);
      MLP: norm input 2sbh, FC1 input 2sbh, FC1 output 2sbf/t (x2 when gated: gate and up),
        FC2 input 2sbf/t, dropout mask sbh; eager torchtitan (cfg.eager) also keeps silu's
        output for the product's backward, 2sbf/t more (compiled code recomputes it);
      with Megatron's fp8 the QKV, FC1 and FC2 inputs take 1 byte (saved_linear_input_bytes)
        and the projection's fp8 copy 1 byte more beside the 16-bit attention output;
      MoE MLP (Megatron-Core alltoall dispatcher): router logits and probabilities fp32 8*s*b*E,
        routed tokens R = s*b*top_k*imbalance (x etp when expert-TP gathers tokens): permuted
        input 2Rh, FC1 out 2R*f_e/etp (x2 gated), FC2 in 2R*f_e/etp, unpermute input 2Rh;
        shared experts as a dense MLP of their width.
    Selective recompute drops what its modules recompute (parallel.layer_reruns; Megatron-Core
    transformer_layer.py, attention.py, multi_latent_attention.py, moe/experts.py,
    moe/moe_layer.py): core_attn the s^2 terms; layernorm the outputs of the norms that are
    modules of their own (MLA's input norm, an MoE layer's pre-MLP norm; Transformer Engine
    fuses the others into the next linear), which the consumers' saved inputs were; mla_up_proj
    Q, K and V; moe_act the experts' FC2 input; shared_experts the shared experts' tensors
    (their input stays); mlp a dense MLP but its input; moe an MoE layer but the norm's input
    and output (the checkpoint's argument). With torchtitan it is op-level selective
    checkpointing (`op_sac_layer_bytes`). Full recompute
    keeps only the layer input 2sbh. Sequence parallelism divides the terms outside the
    tensor-parallel regions by t; context parallelism divides s by cp.
    """
    t = cfg.tp
    s = cfg.seq_len / cfg.cp
    b = cfg.mbs
    h = model.hidden_size
    sp = t if cfg.sequence_parallel else 1  # divisor of the terms outside TP regions
    sbh = s * b * h
    if recompute is Recompute.FULL:
        return math.ceil(2 * sbh / sp)
    if recompute is Recompute.SELECTIVE and cfg.framework is Framework.TORCHTITAN:
        return op_sac_layer_bytes(model, cfg, layer)

    heads = model.num_attention_heads
    hidden_mask, _ = dropout_masks(model, cfg)
    reruns = layer_reruns(model, cfg, layer, recompute)
    moe_layer = model.is_moe_layer(layer)
    # bytes per element of the inputs the dense linears save for their weight gradient
    linear_in = saved_linear_input_bytes(cfg)
    # norm input; eager torchtitan's op-by-op RMSNorm (ParallelConfig.fused_rms_norm false)
    # keeps its fp32 copy of it and the normalized 16-bit output instead: 4 bytes more
    norm = 2 + (4 if op_by_op_rms_norm(model, cfg) else 0)
    attention = norm * sbh / sp + linear_in * sbh / sp  # norm input, QKV input
    if reruns.input_norm:  # its own norm's output, discarded
        attention -= linear_in * sbh / sp
    if not reruns.up_projections:
        # FlexAttention CP (cp_gathers_kv) saves every rank's K and V, gathered
        gathered = cfg.cp if cp_gathers_kv(cfg) else 1
        attention += 2 * s * b * (model.q_width
                                  + 2 * attention_kv_width(model, cfg) * gathered) / t
    if model.mla is not None:
        latent = (model.mla.q_lora_rank or 0) + model.mla.kv_lora_rank + (
            model.mla.qk_rope_head_dim)
        attention += 2 * 2 * s * b * latent
    if cfg.flash_attention:
        attention += 4 * heads * s * b / t
    elif not reruns.attention_core:  # softmax output, dropout mask and output
        attention += attention_score_bytes(model, cfg) * heads * s * cfg.seq_len * b / t
    # the projection's input is the attention output, kept 16-bit for the attention's own
    # backward; fp8 adds the projection's own quantized copy (1 byte)
    projection_copy = 1 if linear_in == 1 else 0
    attention += (2 + projection_copy) * s * b * model.attn_out_width / t
    attention += hidden_mask * sbh / sp

    mlp = norm * sbh / sp + linear_in * sbh / sp + hidden_mask * sbh / sp  # norm, FC1 in, mask
    gate = 2 if model.activation.gated else 1
    # ffn-wide tensors kept from FC1's output: gate and up, and silu(gate) when eager
    # torchtitan's product saves it (experts and shared experts alike)
    eager_silu = model.activation.gated and cfg.eager and cfg.framework is Framework.TORCHTITAN
    fc1_kept = gate + (1 if eager_silu else 0)
    if not moe_layer:
        f = model.ffn_hidden_size
        if reruns.dense_mlp:  # checkpointed: its input (the norm input above) and the mask
            mlp = norm * sbh / sp + hidden_mask * sbh / sp
        else:
            mlp += 2 * s * b * f * fc1_kept / t + linear_in * s * b * f / t  # FC1 out, FC2 in
    elif reruns.moe_block:  # checkpointed: the norm's input and output (its argument), mask
        mlp = norm * sbh / sp + 2 * sbh / sp + hidden_mask * sbh / sp
    else:
        if reruns.pre_mlp_norm:  # the pre-MLP norm's output, discarded
            mlp -= linear_in * sbh / sp
        routed = routed_tokens(model, cfg)
        moe = model.moe
        assert moe is not None
        mlp += 8 * (s * b / sp) * moe.num_experts
        fe = moe.ffn_hidden_size / cfg.expert_tp
        mlp += 2 * routed * h + 2 * routed * fe * fc1_kept + 2 * routed * h
        if not reruns.expert_activation:  # the activation's output, FC2's input
            mlp += 2 * routed * fe
        if moe.shared_width and not reruns.shared_experts:
            fs = moe.shared_width
            mlp += 2 * s * b * fs * fc1_kept / t + 2 * s * b * fs / t
    return math.ceil(attention + mlp)


def routed_tokens(model: ModelSpec, cfg: ParallelConfig) -> float:
    """Token-expert pairs the busiest expert rank processes per micro-batch and MoE layer:
    s*b/sp local tokens x top_k, x the capacity factor (or the dropless imbalance assumption),
    x etp when expert tensor parallelism gathers the tokens of its group."""
    assert model.moe is not None
    sp = cfg.tp if cfg.sequence_parallel else 1
    tokens = cfg.seq_len / cfg.cp * cfg.mbs / sp
    factor = model.moe.capacity_factor or cfg.moe_token_imbalance
    return tokens * model.moe.top_k * factor * cfg.expert_tp


def op_sac_layer_bytes(model: ModelSpec, cfg: ParallelConfig, layer: int) -> int:
    """torchtitan's selective activation checkpointing, op mode (parallel.torchtitan_linears):
    the block input, the outputs of the linears it saves (Llama in 0.3.0: wqkv, w1 and w2, the
    1st, 3rd and 5th; before it wq, wv, w1 and w2, the 1st, 3rd, 5th and 7th), the attention
    output and its fp32 log-sum-exp; everything else is
    recomputed. MoE and MLA layers are counted as without checkpointing (upper bound).
    A row-parallel linear's output under tensor parallelism is a partial sum of the full width
    that a reduce-scatter (sequence parallel; in the save list) shards. Compiled, the graph
    keeps what backward needs: the attention block's reduce-scatter output (the MLP norm's
    input), which w2's sharded term stands for (the same size), not w2's own. Eager, the
    checkpoint caches every saved op's output whether backward needs it or not: w2's
    full-width partial sum and both reduce-scatter outputs."""
    linears = torchtitan_linears(model, cfg, layer)
    if linears is None:
        return layer_activation_bytes(model, cfg, layer, Recompute.NONE)
    t = cfg.tp
    s = cfg.seq_len / cfg.cp
    b = cfg.mbs
    h = model.hidden_size
    sp = t if cfg.sequence_parallel else 1
    saved = 2 * s * b * h / sp  # block input
    cached_partials = cfg.eager and t > 1
    for p in op_sac_saved_linears(linears):
        if p.split == "row" and cached_partials:
            saved += 2 * s * b * p.out_dim  # the local product before its reduction
        else:
            saved += 2 * s * b * p.out_dim / t
    if cached_partials and cfg.sequence_parallel:  # both blocks' reduce-scatter outputs
        saved += 2 * (2 * s * b * h / t)
    saved += 2 * s * b * model.attn_out_width / t + 4 * model.num_attention_heads * s * b / t
    return math.ceil(saved)


def pipeline_buffer_bytes(model: ModelSpec, cfg: ParallelConfig, stage: int,
                          live: tuple[int, ...]) -> float:
    """Bytes of torch.distributed.pipelining's receive buffers on one GPU of `stage` (torchtitan
    pipelines with it) that its stored activations do not already count, with `live[c]`
    micro-batches of local chunk c in flight (parallel.live_chunk_passes). The stage allocates,
    once and for every micro-batch of the step, an input buffer for each of its chunks that
    receives from a previous stage and an output-gradient buffer for each that sends to a next
    one (torch/distributed/pipelining/stage.py _setup_forward_recv_info and
    _create_grad_recv_info: _make_tensor_from_meta per micro-batch), each one boundary
    activation, s/cp x b x h 16-bit (sequence-sharded over tp with sequence parallelism). The
    inputs of the micro-batches in flight are the first layer's saved input, already counted;
    the other inputs and every gradient buffer are not. A chunk that sends also keeps each
    in-flight micro-batch's output for its backward (stage.py forward_one_chunk's fwd_cache,
    popped by backward_one_chunk; Megatron frees the data of a sent output, torch pipelining
    does not), one boundary activation each. Local chunk c of stage i is virtual stage
    i + c x pp: the first takes no input, the last sends nothing."""
    sp = cfg.tp if cfg.sequence_parallel else 1
    boundary = cfg.seq_len / cfg.cp * cfg.mbs * model.hidden_size * 2 / sp
    m = cfg.num_microbatches
    last = cfg.pp * cfg.vpp - 1
    total = 0.0
    for c in range(cfg.vpp):
        virtual = stage + c * cfg.pp
        in_flight = live[c]
        if virtual > 0:
            total += (m - in_flight) * boundary
        if virtual < last:
            total += (m + in_flight) * boundary
    return total


def ring_attention_buffer_bytes(model: ModelSpec, cfg: ParallelConfig) -> int:
    """Bytes the ring attention of one layer holds during its backward, one micro-batch, one
    GPU (0 without context parallelism), per element of the local query Q and keys-plus-values
    KV (widths / tp; parallel.attention_kv_width):
    - PyTorch's ring, torchtitan's before 0.3.0 (torch/distributed/tensor/experimental/
      _attention.py _templated_ring_attention_backward, with torchtitan's default allgather
      rotation): every rank's K and V gathered at once (2 cp per KV), the local ones made
      contiguous (2), fp32 accumulators for dq, dk and dv (4 per Q and KV), the round's
      16-bit gradients (2 each), and the fp32 send and receive buffers of the K/V gradients
      (8): 2 cp + 16 per KV and 6 per Q;
    - Transformer Engine's AttnFuncWithCPAndKVP2P (Megatron): two P2P buffers of K, V and
      their gradients (8 per KV), dq (2 per Q) and the step's stacked dk, dv (2 per KV);
    - torchtitan 0.3.0's FlexAttention CP (parallel.cp_gathers_kv): the gradients of every
      rank's K and V before their reduce-scatter (2 cp per KV), and under op-level SAC, which
      does not save the gather, the re-gathered K and V too (2 cp more; other recompute modes
      count the gathered K and V in the layer's activations)."""
    if cfg.cp <= 1:
        return 0
    tokens = cfg.seq_len / cfg.cp * cfg.mbs
    query = tokens * model.q_width / cfg.tp
    kv = local_kv_elements(model, cfg)
    if cp_gathers_kv(cfg):
        again = 2 * cfg.cp if cfg.recompute is Recompute.SELECTIVE else 0
        return math.ceil(kv * (2 * cfg.cp + again))
    if cfg.framework is Framework.TORCHTITAN:
        return math.ceil(kv * (2 * cfg.cp + 16) + 6 * query)
    return math.ceil(kv * 10 + 2 * query)


def loss_bytes_per_element(cfg: ParallelConfig) -> int:
    """Bytes per logit element alive at the loss's peak.

    Megatron (vocab-parallel cross entropy, megatron/core/tensor_parallel/cross_entropy.py):
    bf16 logits (2) + fp32 copy turned into the softmax saved for backward (4); backward
    computes the gradient in place and casts it to bf16 (2): peak 6. With
    --cross-entropy-loss-fusion, 10: Megatron's functional tests measure 0.38 GiB more on
    103M logit elements (gpt3_mcore_te_tp2_pp2 with and without the flag, measured.yaml),
    4 bytes per element: the fused path keeps a second fp32 buffer.
    torchtitan / DeepSpeed-with-HF (F.cross_entropy on logits upcast with .float()): forward
    holds bf16 logits (2), the fp32 copy (4) and the saved log-softmax (4); backward holds the
    saved output (4), its incoming gradient (4) and the input gradient (4): peak 12.
    torchtitan under tensor parallelism (parallel.torchtitan_loss_parallel: vocabulary-parallel
    cross entropy op by op, torch/distributed/tensor/parallel/loss.py, and torchtitan 0.3.0's
    _LossParallelCrossEntropy alike): forward holds the bf16 logits (2), the fp32 copy (4),
    x - max (4) and exp of it (4) at once, 14, then the log-probabilities (4) saved for
    backward; backward holds them (4), the zero-filled target gradient (4), exp of them (4)
    and their sum (4) at once: peak 16. Compiled, that function still saves its fp32
    log-probabilities for backward (ctx.save_for_backward in _LossParallelCrossEntropy: 4) beside
    the bf16 logits (2) in forward, and beside the fp32 logit gradient it returns (4) in
    backward: peak 8 counted (compile may fuse the cast back to bf16, 6; not measured).
    torchtitan with a compiled loss (parallel.torchtitan_compiled_loss): the upcast and the
    softmax fuse into the loss's kernels, which keep no logit-sized buffer in forward and
    write the bf16 gradient in backward (torch.compile's cross entropy costs "~0 for just fwd
    and ~d_input for fw+bw", a PyTorch compiler developer in Dao-AILab/quack#48; torchtitan
    PR #1033 measured the compiled loss below any chunking): peak 4.
    """
    if cfg.framework is Framework.MEGATRON:
        return 10 if cfg.cross_entropy_fusion else 6
    if torchtitan_compiled_loss(cfg):
        return 8 if torchtitan_loss_parallel(cfg) else 4
    return 16 if torchtitan_loss_parallel(cfg) else 12


def kind_activation_bytes(model: ModelSpec, cfg: ParallelConfig,
                          kind: tuple[bool, bool, Recompute]) -> int:
    """layer_activation_bytes of a layer of `kind` ((MoE or not, bf16 or not, recompute
    mode): ParallelConfig.chunk_layer_runs), under the configuration that layer runs under;
    its kind's first layer stands for all."""
    is_moe, bf16, mode = kind
    layer = cfg.kind_layers(model)[(is_moe, bf16)]
    return layer_activation_bytes(model, cfg.layer_config(model, layer), layer, mode)


@functools.lru_cache(maxsize=1 << 14)
def chunk_activation_bytes(model: ModelSpec, cfg: ParallelConfig,
                           runs: tuple[tuple[tuple[bool, bool, Recompute], int], ...]) -> float:
    """Activations one micro-batch leaves in a model chunk whose layers are `runs`
    (ParallelConfig.chunk_layer_runs), memoised: a pipeline's stages repeat their chunks."""
    return float(sum(kind_activation_bytes(model, cfg, kind) * count for kind, count in runs))


def stage_activation_bytes(model: ModelSpec, cfg: ParallelConfig, stage: int,
                           chunks: tuple[tuple[int, ...], ...]) -> tuple[int, int]:
    """(stored activations, transient peak) of one GPU of `stage`, bytes.

    Stored = the largest sum, over the moments of the pipeline schedule, of each virtual
    chunk's in-flight micro-batches (parallel.live_chunk_passes) x that chunk's per-micro-batch
    activations (and a layer's more with moe_a2a_overlap); the embedding's dropout mask belongs
    to the first chunk of the first stage (Korthikanti Sec. 4.3), each MTP module's layer to
    the last chunk of the last stage (DeepSeek-V3, arXiv 2412.19437 Sec. 2.2: one extra
    prediction depth each), which also keeps the final norm / LM-head inputs and each depth's
    loss. A single block standing for all of a stage's chunks (the partitioners' probes) is
    counted as even chunks: in_flight_microbatches x its activations.
    Transients are the larger of:
    - the loss phase: loss_bytes_per_element x s*b*V/t logits of one micro-batch (the last stage
      runs a micro-batch's backward right after its forward, in 1F1B and interleaved alike),
      plus, with ZeRO-3 / FSDP, the gathered LM head and its unsharded gradient;
    - the backward of one layer: with full recompute, that layer's activations rebuilt; the
      gradients of its largest activation and of that activation's input (autograd holds both);
      with context parallelism, the ring's buffers (ring_attention_buffer_bytes);
      with ZeRO-3 / FSDP, the gathered 16-bit weights of two layers (current and prefetched;
      DeepSpeed's up to its live-parameter limit, deepspeed_live_parameters, which the loss
      phase holds too) and one layer's unsharded fp32 gradient.
    """
    t = cfg.tp
    sp = t if cfg.sequence_parallel else 1
    s = cfg.seq_len / cfg.cp
    b = cfg.mbs
    h = model.hidden_size
    sbh = s * b * h
    # layers of one kind (ParallelConfig.layer_kind) and recompute mode store the same
    per_chunk = [cfg.chunk_layer_runs(model, chunk) for chunk in chunks]
    present = {kind for runs in per_chunk for kind, _ in runs}  # (MoE, bf16, recompute)
    by_runs = {runs: chunk_activation_bytes(model, cfg, runs) for runs in set(per_chunk)}
    chunk_bytes = [by_runs[runs] for runs in per_chunk]
    first, last = stage == 0, stage == cfg.pp - 1
    vocab_parallel = cfg.vocab_strategy is VocabStrategy.VOCAB_PARALLEL and cfg.pp > 1
    if first and chunk_bytes and dropout_masks(model, cfg)[0]:
        chunk_bytes[0] += sbh / sp  # embedding dropout mask (the first virtual stage)
    # each MTP module: its layer, the 2h->h projection input
    if last and chunk_bytes and model.num_mtp_layers:
        last_layer = model.num_layers - 1  # MTP layers take the last layer's precision
        mtp_layer = layer_activation_bytes(model, cfg.layer_config(model, last_layer),
                                           last_layer, cfg.recompute)
        chunk_bytes[-1] += model.num_mtp_layers * (mtp_layer + 4 * sbh / sp)  # the last chunk
    if len(chunks) == max(cfg.vpp, 1) and len(set(chunk_bytes)) > 1:
        # uneven chunks: per chunk, as the schedule holds them
        stored = max(sum(map(operator.mul, moment, chunk_bytes))
                     for moment in live_chunk_passes(cfg, stage))
    else:  # even chunks, or one block standing for them (the partitioners' probes)
        stored = sum(chunk_bytes) * in_flight_microbatches(cfg, stage)
    if cfg.moe_a2a_overlap and present:
        # Megatron's combined 1F1B (pipeline_parallel/combined_1f1b.py) runs a forward of one
        # micro-batch beside a backward of another, layer by layer, after one more warm-up
        # forward: beyond the 1F1B count, about the largest layer's activations
        stored += max(kind_activation_bytes(model, cfg, kind) for kind in present)
    if cfg.framework is Framework.TORCHTITAN and cfg.pp > 1:
        stored += max(pipeline_buffer_bytes(model, cfg, stage, moment)
                      for moment in live_chunk_passes(cfg, stage))
    vocab_shard = model.padded_vocab_size(t) / t
    if vocab_parallel:  # every stage computes its vocabulary shard of every micro-batch
        vocab_shard /= cfg.pp
    fsdp = cfg.zero >= 3 and not cfg.fsdp_keeps_params  # gathers per pass (layer transients)
    # FSDP that keeps its parameters gathered still reduce-scatters each block's gradient:
    # the block's bf16 gradient and its fp32 copy for the reduction are transient
    kept = cfg.framework is Framework.TORCHTITAN and cfg.zero >= 2 and not fsdp
    loss_phase = 0.0
    if last and cfg.deferred_head_microbatches:
        # Megatron's deferred LM-head wgrad keeps each deferred micro-batch's head input and
        # output gradient until the flush (tensor_parallel/layers.py embedding_activation_buffer
        # and grad_output_buffer; the logits gradient is s x b x V/tp, 16-bit)
        stored += cfg.deferred_head_microbatches * (2 * sbh / sp + 2 * s * b * vocab_shard)
    if last or vocab_parallel:
        heads = 1 + (model.num_mtp_layers if last else 0)  # each MTP depth has its own loss
        stored += heads * (2 * sbh / sp + 2 * sbh)  # final-norm input, LM-head input
        loss_phase = loss_bytes_per_element(cfg) * s * b * vocab_shard * heads
        if vocab_parallel:  # Yeung et al.: one micro-batch's forward overlaps another's backward
            loss_phase *= 2
        if fsdp:  # gathered bf16 head, its bf16 gradient and the fp32 copy reduce-scattered
            loss_phase += vocab_shard * h * (2 + 2 + 4)
        elif kept and not cfg.fsdp_keeps_params:  # the head's gradient and its fp32 copy
            loss_phase += vocab_shard * h * (2 + 4)

    widest = float(model.ffn_hidden_size * (2 if model.activation.gated else 1))
    if model.moe is not None:
        fe = model.moe.ffn_hidden_size / cfg.expert_tp
        widest = max(widest, routed_tokens(model, cfg) / (s * b) * fe * 2)
    largest_tensor = max(2 * s * b * widest / t, 2 * sbh)
    backward = 2 * largest_tensor + ring_attention_buffer_bytes(model, cfg)
    if present and cfg.recompute is Recompute.FULL:
        backward += max(kind_activation_bytes(model, cfg, (is_moe, bf16, Recompute.NONE))
                        for is_moe, bf16, _ in present)
    if (fsdp or kept) and present:
        params = stage_params(model, cfg, stage,
                              tuple(layer for chunk in chunks for layer in chunk))
        live = deepspeed_live_parameters(cfg, params)
        if live:  # kept from the forward's last layers into the backward's first ones
            loss_phase += 2 * live
        gathered = max(2 * params.largest_layer, live)
        backward += (2 * gathered + 4 * params.largest_layer if fsdp
                     else params.largest_layer * (2 + 4))
    transient = max(loss_phase, backward)
    return math.ceil(stored), math.ceil(transient)


def deepspeed_live_parameters(cfg: ParallelConfig, params: StageParams) -> float:
    """Gathered parameters DeepSpeed ZeRO-3 keeps on a GPU at once (0 for other frameworks):
    after a submodule it releases a fetched parameter only when its trace does not reuse it
    within stage3_max_reuse_distance parameters, and prefetches only while fewer than
    stage3_max_live_parameters are gathered (partitioned_param_coordinator.py:
    release_sub_module's reuse-distance check, the max_available_parameters_in_numel bound).
    Around the forward/backward turn the last layers are used again at once in reverse, so
    their parameters stay gathered: up to DEEPSPEED_MAX_LIVE_PARAMETERS of the stage's,
    16-bit."""
    if cfg.framework is not Framework.DEEPSPEED or cfg.zero < 3:
        return 0.0
    return float(min(DEEPSPEED_MAX_LIVE_PARAMETERS,
                     params.dense + params.expert - params.vocab))


# Transformer Engine's default userbuffers layers (module/base.py initialize_ub): the qkv,
# proj, fc1 and fc2 forward and data-gradient overlaps and the qkv and fc1 weight-gradient bulk
# overlaps, one registered buffer each.
USERBUFFERS_LAYERS = 10


def userbuffers_bytes(model: ModelSpec, cfg: ParallelConfig) -> int:
    """Device memory of Megatron's --tp-comm-overlap buffers: Megatron initialises Transformer
    Engine's userbuffers with one [seq * mbs / cp, hidden] activation per overlapped layer
    (megatron/training/initialize.py _initialize_tp_communicators), which userbuffers
    allocates and registers itself, outside PyTorch's caching allocator (in nvidia-smi's
    figure, not in max_memory_allocated): USERBUFFERS_LAYERS buffers, counted 16-bit (fp8 runs
    make the all-gather ones 1 byte; a conservative count)."""
    if not (cfg.tp_comm_overlap and cfg.tp > 1 and cfg.framework is Framework.MEGATRON):
        return 0
    rows = cfg.seq_len * cfg.mbs // cfg.cp
    return USERBUFFERS_LAYERS * rows * model.hidden_size * 2


def active_communicators(cfg: ParallelConfig, model: ModelSpec) -> int:
    """NCCL communicators a rank uses in a step: one per parallel group larger than one
    (tp, cp, dp*cp for gradients, pp send/recv, ep and expert-dp for MoE), plus the
    embedding-gradient group when tied embeddings span the first and last stages."""
    groups = [cfg.tp, cfg.cp, cfg.dp * cfg.cp, cfg.pp]
    if model.moe is not None:
        groups += [cfg.ep, cfg.expert_dp, cfg.expert_tp]
    count = sum(1 for g in groups if g > 1)
    if model.tie_embeddings and cfg.pp > 1:
        count += 1
    return count


def stage_memory(model: ModelSpec, cfg: ParallelConfig, stage: int,
                 chunks: tuple[tuple[int, ...], ...]) -> StageMemory:
    """Memory of one pipeline stage holding `chunks` (its virtual chunks' layer indices), on
    its busiest GPU. estimate_memory applies it to every stage; the layer partitioner asks it
    about candidate blocks."""
    policy = config_policy(cfg)
    nccl = active_communicators(cfg, model) * NCCL_BYTES_PER_COMMUNICATOR
    ub = userbuffers_bytes(model, cfg)
    layers = tuple(layer for chunk in chunks for layer in chunk)
    params = stage_params(model, cfg, stage, layers)
    weights, grads, optimizer = model_state_bytes(params, cfg, policy)
    activations, transient = stage_activation_bytes(model, cfg, stage, chunks)
    allocated = weights + grads + optimizer + FRAMEWORK_BUFFERS_BYTES + activations + transient
    fragmentation = math.ceil(FRAGMENTATION_FRAC * (activations + transient))
    reserved = allocated + fragmentation
    margin = math.ceil(ESTIMATE_MARGIN_FRAC * reserved)
    return StageMemory(
        stage=stage, num_layers=len(layers), num_params=params.dense + params.expert,
        weights_bytes=weights, gradients_bytes=grads, optimizer_bytes=optimizer,
        framework_buffers_bytes=FRAMEWORK_BUFFERS_BYTES, activations_bytes=activations,
        transient_bytes=transient, allocated_bytes=allocated, fragmentation_bytes=fragmentation,
        reserved_bytes=reserved, margin_bytes=margin, cuda_context_bytes=CUDA_CONTEXT_BYTES,
        nccl_bytes=nccl, userbuffers_bytes=ub,
        peak_bytes=reserved + margin + CUDA_CONTEXT_BYTES + nccl + ub,
        in_flight_microbatches=in_flight_microbatches(cfg, stage),
    )


def estimate_memory(model: ModelSpec, cfg: ParallelConfig, capacity_bytes: int,
                    headroom_frac: float = 0.0) -> MemoryEstimate:
    """Memory of every pipeline stage, busiest GPU of each. `capacity_bytes` is the device
    memory (nvidia-smi total); `fits` compares peak_bytes with capacity * (1 - headroom)."""
    stages = tuple(stage_memory(model, cfg, stage, chunks)
                   for stage, chunks in enumerate(stage_chunks(model, cfg)))
    return MemoryEstimate(stages=stages, capacity_bytes=capacity_bytes,
                          headroom_frac=headroom_frac)


def memory_fits(model: ModelSpec, cfg: ParallelConfig, capacity_bytes: int,
                headroom_frac: float = 0.0) -> bool:
    """estimate_memory(...).fits, answered at the first stage that does not fit: the first
    stage (it holds the most micro-batches) and the last (the loss) are asked first. For
    searches that only need the verdict."""
    usable = int(capacity_bytes * (1 - headroom_frac))
    chunks = stage_chunks(model, cfg)
    order = sorted(range(len(chunks)), key=lambda s: (s not in (0, len(chunks) - 1), s))
    return all(stage_memory(model, cfg, s, chunks[s]).peak_bytes <= usable for s in order)
