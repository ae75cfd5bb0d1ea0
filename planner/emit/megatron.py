"""Megatron-LM arguments for a plan (megatron-core 0.19, `megatron/training/arguments.py`).

`megatron_args` returns one flag per entry ("--flag value" or "--flag"), in a fixed order: model
shape, parallelism and layout, batch, precision, recompute, optimizer sharding, overlap. Flag
names and semantics are those of megatron-core 0.19.2's argument parser; the tests run every
emitted list through that parser and `validate_args()` (tests/frameworks).

What a plan cannot say (data, tokenizer, schedule length, rotary base, initialisation) is left to
the launch's TRAIN_ARGS; `megatron_notes` lists what of the model Megatron cannot express.
"""

from __future__ import annotations

from planner.errors import InputError
from planner.gpus import GpuType
from planner.model import Activation, ModelSpec, Norm, PositionEmbedding
from planner.parallel import (
    DEFAULT_RECOMPUTE_MODULES,
    AttentionKernel,
    ParallelConfig,
    Precision,
    Recompute,
    VocabStrategy,
    stage_chunks,
)

# --attention-backend for a pinned fused kernel (megatron/core/transformer/enums.py AttnBackend):
# "flash" is Transformer Engine's FlashAttention path, "fused" its cuDNN FusedAttention; AUTO
# writes nothing (Megatron's default, auto: TE picks cuDNN on Hopper and later). The importer
# reads this table back. "flash" runs FlashAttention-3 on Hopper where flash-attn 3 is
# installed (near cuDNN's rate); priced as FA2, it errs slow.
ATTENTION_BACKEND = {AttentionKernel.FA2: "flash", AttentionKernel.CUDNN: "fused"}

# (ParallelConfig field, Megatron switch, the field's value when the switch is given): the
# boolean settings that are one switch each. The emitter writes from this table and the
# importer reads it back.
MEGATRON_SWITCHES: tuple[tuple[str, str, bool], ...] = (
    ("tp_comm_overlap", "--tp-comm-overlap", True),
    ("moe_a2a_overlap", "--overlap-moe-expert-parallel-comm", True),
    ("deterministic", "--deterministic-mode", True),
    ("gradient_accumulation_fusion", "--no-gradient-accumulation-fusion", False),
    ("cross_entropy_fusion", "--cross-entropy-loss-fusion", True),
)

MEGATRON_VERSION = "megatron-core 0.19.2"

_POSITION = {PositionEmbedding.ROPE: "rope", PositionEmbedding.LEARNED: "learned_absolute",
             PositionEmbedding.NONE: "none"}


def megatron_args(model: ModelSpec, cfg: ParallelConfig) -> tuple[str, ...]:
    """The Megatron-LM flags that realise `cfg` for `model` (InputError if they cannot)."""
    return (*_model_args(model, cfg), *_parallel_args(model, cfg), *_batch_args(cfg),
            *_precision_args(cfg), *_recompute_args(cfg), *_optimizer_args(cfg))


def megatron_env(cfg: ParallelConfig, gpu: GpuType) -> tuple[tuple[str, str | None, str], ...]:
    """(name, value or None to unset, why) of the environment Megatron needs for `cfg` on `gpu`.

    validate_args() (megatron/training/arguments.py) requires CUDA_DEVICE_MAX_CONNECTIONS=1
    when tp > 1 or cp > 1 below compute capability 10 (one hardware queue keeps communication
    kernels ordered ahead of the GEMMs they overlap), and refuses it with Megatron FSDP
    ("FSDP requires CUDA_DEVICE_MAX_CONNECTIONS > 1 or unset"). An unknown architecture is
    treated as below 10.

    --deterministic-mode: the environment Megatron's determinism setup asks for
    (megatron/training/determinism.py: NCCL's ring algorithm, cuBLAS's deterministic
    workspace, Transformer Engine's deterministic kernels); older releases refuse the mode
    when NCCL_ALGO is unset.
    """
    env: list[tuple[str, str | None, str]] = []
    major = gpu.compute_capability[0] if gpu.compute_capability else 0
    if cfg.zero >= 2:
        env.append(("CUDA_DEVICE_MAX_CONNECTIONS", None,
                    "Megatron FSDP (zero 2/3) refuses CUDA_DEVICE_MAX_CONNECTIONS=1"))
    elif (cfg.tp > 1 or cfg.cp > 1) and major < 10:
        env.append(("CUDA_DEVICE_MAX_CONNECTIONS", "1",
                    "Megatron-LM: tp or cp > 1 below compute capability 10"))
    if cfg.deterministic:
        env += [("NCCL_ALGO", "Ring", "--deterministic-mode: a fixed reduction order"),
                ("CUBLAS_WORKSPACE_CONFIG", ":4096:8",
                 "--deterministic-mode: cuBLAS's deterministic workspace"),
                ("NVTE_ALLOW_NONDETERMINISTIC_ALGO", "0",
                 "--deterministic-mode: Transformer Engine's deterministic kernels")]
    return tuple(env)


def megatron_notes(model: ModelSpec) -> tuple[str, ...]:
    """Parts of the model the emitted flags do not reproduce."""
    notes = []
    if model.embedding_layernorm:
        notes.append("the model's embedding LayerNorm (BLOOM) has no Megatron-Core flag; the "
                     "launch trains without it (h*2 parameters, no effect on the plan)")
    return tuple(notes)


def _model_args(model: ModelSpec, cfg: ParallelConfig) -> list[str]:
    if model.position_embedding is PositionEmbedding.ALIBI:
        raise InputError(f"model {model.name}: ALiBi position embeddings have no Megatron-Core "
                         "implementation", hint="emit for another framework")
    args = [f"--num-layers {model.num_layers}", f"--hidden-size {model.hidden_size}",
            f"--ffn-hidden-size {model.ffn_hidden_size}",
            f"--num-attention-heads {model.num_attention_heads}"]
    if model.mla is not None:
        mla = model.mla
        args.append("--multi-latent-attention")
        if mla.q_lora_rank is not None:
            args.append(f"--q-lora-rank {mla.q_lora_rank}")
        args += [f"--kv-lora-rank {mla.kv_lora_rank}", f"--qk-head-dim {mla.qk_nope_head_dim}",
                 f"--qk-pos-emb-head-dim {mla.qk_rope_head_dim}",
                 f"--v-head-dim {mla.v_head_dim}"]
    else:
        if model.num_query_groups != model.num_attention_heads:
            args += ["--group-query-attention", f"--num-query-groups {model.num_query_groups}"]
        if model.head_dim * model.num_attention_heads != model.hidden_size:
            args.append(f"--kv-channels {model.head_dim}")
    args.append(f"--position-embedding-type {_POSITION[model.position_embedding]}")
    args.append("--max-position-embeddings "
                f"{max(model.max_position_embeddings, cfg.seq_len)}")
    args.append("--normalization " + ("RMSNorm" if model.norm is Norm.RMSNORM else "LayerNorm"))
    if model.activation is Activation.SWIGLU:
        args.append("--swiglu")
    elif model.activation is Activation.SQUARED_RELU:
        args.append("--squared-relu")
    if not model.add_bias_linear:
        args.append("--disable-bias-linear")
    if model.qkv_bias:
        args.append("--add-qkv-bias")
    if model.qk_layernorm:
        args.append("--qk-layernorm")
    if not model.tie_embeddings:
        args.append("--untie-embeddings-and-output-weights")
    # always spelled: Megatron's default is 0.1 each, Llama-style models train without
    args += [f"--hidden-dropout {model.hidden_dropout:g}",
             f"--attention-dropout {model.attention_dropout:g}"]
    if model.moe is not None:
        moe = model.moe
        args += [f"--num-experts {moe.num_experts}", f"--moe-router-topk {moe.top_k}",
                 f"--moe-ffn-hidden-size {moe.ffn_hidden_size}"]
        if moe.shared_width:
            args.append(f"--moe-shared-expert-intermediate-size {moe.shared_width}")
        if moe.first_dense_layers or moe.layer_freq > 1:
            pattern = ",".join("1" if model.is_moe_layer(i) else "0"
                               for i in range(model.num_layers))
            args.append(f"--moe-layer-freq [{pattern}]")
        if moe.capacity_factor is not None:
            args.append(f"--moe-expert-capacity-factor {moe.capacity_factor:g}")
        if cfg.moe_grouped_gemm:
            args.append("--moe-grouped-gemm")
        args.append("--moe-token-dispatcher-type alltoall")
    if model.num_mtp_layers:
        args.append(f"--mtp-num-layers {model.num_mtp_layers}")
    return args


def _parallel_args(model: ModelSpec, cfg: ParallelConfig) -> list[str]:
    args = [f"--tensor-model-parallel-size {cfg.tp}", f"--pipeline-model-parallel-size {cfg.pp}"]
    if cfg.cp > 1:
        args.append(f"--context-parallel-size {cfg.cp}")
    if model.moe is not None:
        args += [f"--expert-model-parallel-size {cfg.ep}",
                 f"--expert-tensor-parallel-size {cfg.expert_tp}"]
    if cfg.sequence_parallel:
        args.append("--sequence-parallel")
    args += layout_args(model, cfg)
    if cfg.microbatch_group_size is not None and cfg.vpp > 1:
        args.append("--microbatch-group-size-per-virtual-pipeline-stage "
                    f"{cfg.microbatch_group_size}")
    if cfg.rank_order == "tp-cp-pp-dp":
        args.append("--use-tp-pp-dp-mapping")
    return args


def layout_args(model: ModelSpec, cfg: ParallelConfig) -> list[str]:
    """The simplest Megatron flags that give exactly the plan's layers per virtual stage.

    Megatron splits L layers evenly over pp * vpp virtual stages (virtual stage k on rank
    k % pp); --account-for-embedding/loss-in-pipeline-split count the embedding and the loss as
    one layer each (our `redistribute`); --decoder-first/last-pipeline-num-layers set the end
    stages without interleaving; anything else is spelled out with
    --pipeline-model-parallel-layout ("E" embedding, "t" a decoder layer, "m" an MTP layer, "L"
    the loss, "|" between virtual stages; megatron/core/transformer/
    pipeline_parallel_layer_layout.py).
    """
    if cfg.vocab_strategy is VocabStrategy.VOCAB_PARALLEL and cfg.pp > 1:
        raise InputError("vocab_strategy vocab-parallel: stock Megatron-LM has no vocabulary "
                         "parallelism across pipeline stages (Yeung et al. ship it as a fork, "
                         "sail-sg/VocabularyParallelism)",
                         hint="re-plan with --vocab-strategy redistribute or baseline")
    if cfg.pp == 1:
        return []
    pp, vpp, layers = cfg.pp, cfg.vpp, model.num_layers
    chunks = stage_chunks(model, cfg)
    counts = [len(chunks[k % pp][k // pp]) for k in range(pp * vpp)]  # virtual stage order
    if len(set(counts)) == 1:
        return [f"--num-layers-per-virtual-pipeline-stage {counts[0]}"] if vpp > 1 else []
    if (cfg.vocab_strategy is VocabStrategy.REDISTRIBUTE and not cfg.layers_per_stage
            and (layers + 2) % (pp * vpp) == 0):
        flags = ["--account-for-embedding-in-pipeline-split",
                 "--account-for-loss-in-pipeline-split"]
        if vpp > 1:
            flags.append(f"--num-layers-per-virtual-pipeline-stage {(layers + 2) // (pp * vpp)}")
        return flags
    middle = set(counts[1:-1])
    if vpp == 1 and pp > 2 and len(middle) == 1:
        return [f"--decoder-first-pipeline-num-layers {counts[0]}",
                f"--decoder-last-pipeline-num-layers {counts[-1]}"]
    parts = []
    for k, n in enumerate(counts):
        part = ("E" if k == 0 else "") + "t" * n
        if k == len(counts) - 1:
            part += "m" * model.num_mtp_layers + "L"
        parts.append(part)
    return ["--pipeline-model-parallel-layout " + "|".join(parts)]


def _batch_args(cfg: ParallelConfig) -> list[str]:
    return [f"--micro-batch-size {cfg.mbs}", f"--global-batch-size {cfg.global_batch}",
            f"--seq-length {cfg.seq_len}"]


def _precision_args(cfg: ParallelConfig) -> list[str]:
    """bf16 master-weight training; fp8 = Transformer Engine's hybrid recipe (E4M3 forward,
    E5M2 gradients) on the GEMMs, bf16 elsewhere, which is what cost/compute.py assumes; the
    weight and gradient dtype flags as the configuration has them. Layers kept in bf16
    (bf16_layers) need a recipe other than Megatron's default delayed scaling
    (TransformerConfig refuses the pair): tensor-wise current scaling, priced the same; so do
    moe_act and layernorm in recompute_modules (TransformerConfig: "Delayed scaling does not
    support moe_act and layernorm recompute for fp8")."""
    if cfg.precision is Precision.BF16:
        return ["--bf16"] + (["--grad-reduce-in-bf16"] if cfg.grad_reduce_in_bf16 else [])
    if cfg.precision is Precision.FP8:
        first, last = cfg.bf16_layers
        edges = ["--fp8-recipe tensorwise", "--first-last-layers-bf16",
                 f"--num-layers-at-start-in-bf16 {first}",
                 f"--num-layers-at-end-in-bf16 {last}"] if (first, last) != (0, 0) else []
        if not edges and cfg.recompute is Recompute.SELECTIVE and (
                {"moe_act", "layernorm"} & set(cfg.recompute_modules)):
            edges = ["--fp8-recipe tensorwise"]
        return ["--bf16", "--fp8-format hybrid", *edges] + (
            ["--fp8-param-gather"] if cfg.fp8_param_gather else []) + (
            ["--grad-reduce-in-bf16"] if cfg.grad_reduce_in_bf16 else [])
    return []


def _recompute_args(cfg: ParallelConfig) -> list[str]:
    """selective = the plan's recompute_modules (core attention alone is Megatron's default
    --recompute-modules); full = every layer's input kept (uniform, one layer per
    checkpoint), or with recompute_num_layers the first N layers of each chunk (block
    method)."""
    if cfg.recompute is Recompute.SELECTIVE:
        if cfg.recompute_modules == DEFAULT_RECOMPUTE_MODULES:
            return ["--recompute-granularity selective"]
        return ["--recompute-granularity selective",
                "--recompute-modules " + " ".join(cfg.recompute_modules)]
    if cfg.recompute is Recompute.FULL:
        if cfg.recompute_num_layers is None:
            return ["--recompute-granularity full", "--recompute-method uniform",
                    "--recompute-num-layers 1"]
        return ["--recompute-granularity full", "--recompute-method block",
                f"--recompute-num-layers {cfg.recompute_num_layers}"]
    return []


def _optimizer_args(cfg: ParallelConfig) -> list[str]:
    """ZeRO 1 = the distributed optimizer; 2 and 3 = Megatron FSDP with gradients (and
    parameters) sharded over data parallelism, which validate_args() allows only with the
    fsdp_dtensor checkpoint format."""
    args = []
    if cfg.zero == 1:
        args.append("--use-distributed-optimizer")
        if cfg.dist_opt_instances > 1:
            args.append(f"--num-distributed-optimizer-instances {cfg.dist_opt_instances}")
    elif cfg.zero >= 2:
        strategy = "optim_grads" if cfg.zero == 2 else "optim_grads_params"
        args += ["--use-megatron-fsdp", f"--data-parallel-sharding-strategy {strategy}",
                 "--ckpt-format fsdp_dtensor"]
    if cfg.overlap_grad_reduce:
        args.append("--overlap-grad-reduce")
        if cfg.zero >= 1 and cfg.overlap_param_gather:  # distributed optimizer, Megatron FSDP
            args.append("--overlap-param-gather")
    args += [switch for field, switch, given in MEGATRON_SWITCHES
             if getattr(cfg, field) == given]
    if not cfg.flash_attention:
        args.append("--attention-backend unfused")
    elif cfg.attention_kernel in ATTENTION_BACKEND:
        args.append(f"--attention-backend {ATTENTION_BACKEND[cfg.attention_kernel]}")
    if cfg.embedding_wgrad_deferral is not None:
        args.append("--defer-embedding-wgrad-compute")
        if cfg.embedding_wgrad_deferral:
            args.append(f"--wgrad-deferral-limit {cfg.embedding_wgrad_deferral}")
    return args
