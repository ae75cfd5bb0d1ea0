"""torchtitan command-line arguments for a plan (torchtitan 0.3.0, `torchtitan/config/`).

torchtitan 0.3.0 takes `--module M --config F` (a `config_registry` function returning the
trainer's configuration, model included) plus `--section.field value` overrides; its TOML files
ended with 0.2.2. A preset sets some degrees itself (llama3_70b presets tp 8), so every degree
is written explicitly. Data parallelism: zero 3 is FSDP (`data_parallel_shard_degree`), zero 2
FSDP with parameters kept after forward (`fsdp_reshard_after_forward never`), zero 0 plain
replication (`data_parallel_replicate_degree`); torchtitan has no optimizer-only sharding
(zero 1). Expert parallelism borrows ranks from dp_shard x cp x tp and experts are not
tensor-parallel (etp 1).
"""

from __future__ import annotations

from planner.catalog import BUILTIN_MODELS
from planner.errors import InputError
from planner.model import ModelSpec
from planner.parallel import (
    AttentionKernel,
    ParallelConfig,
    Precision,
    Recompute,
    VocabStrategy,
    even_split,
    stage_chunks,
    torchtitan_layers_per_stage,
)

TORCHTITAN_VERSION = "torchtitan 0.3.0"

# Built-in models with a bf16 torchtitan 0.3.0 preset: (module, config function). The tests
# check each preset's shape against ours with torchtitan's own registry (tests/frameworks).
# llama3_405b is left out: that preset converts the model to float8 (needs torchao).
PRESETS: dict[str, tuple[str, str]] = {
    "llama3-8b": ("llama3", "llama3_8b"),
    "llama3-70b": ("llama3", "llama3_70b"),
    "qwen3-30b-a3b": ("qwen3", "qwen3_30b_a3b"),
    "deepseek-v3": ("deepseek_v3", "deepseek_v3_671b"),
}


def _shape(model: ModelSpec) -> tuple[object, ...]:
    moe = model.moe
    return (model.num_layers, model.hidden_size, model.num_attention_heads,
            model.num_query_groups, model.ffn_hidden_size, model.vocab_size,
            (moe.num_experts, moe.top_k, moe.ffn_hidden_size) if moe else None)


def preset_for(model: ModelSpec) -> tuple[str, str]:
    """The torchtitan preset with exactly this model's shape."""
    for name, preset in PRESETS.items():
        if _shape(BUILTIN_MODELS[name]) == _shape(model):
            return preset
    raise InputError(f"model {model.name}: torchtitan {TORCHTITAN_VERSION.split()[1]} has no "
                     "preset of this shape (presets: " + ", ".join(PRESETS) + ")",
                     hint="torchtitan launches name a config_registry preset: add one for "
                          "this model to torchtitan, or emit --to megatron")


def torchtitan_notes(model: ModelSpec, cfg: ParallelConfig) -> tuple[str, ...]:
    """What the preset builds, or torchtitan 0.3.0 runs, differently from the plan."""
    notes = []
    if cfg.flash_attention:
        priced = ("FlexAttention at FlashAttention-2's rates"
                  if cfg.attention_kernel is AttentionKernel.AUTO and not cfg.legacy_attention
                  else f"SDPA's fused kernels (attention_kernel {cfg.attention_kernel.value})")
        if cfg.document_tokens is None:
            over = ("over whole causal sequences: where documents are shorter than the "
                    "sequence the masks skip work the plan counts (plan with document_tokens)")
        else:
            over = (f"over documents of {cfg.document_tokens} tokens (document_tokens): "
                    "shorter ones take less attention time, longer ones more")
        notes.append("torchtitan 0.3.0's models attend through FlexAttention with block-causal "
                     "masks over each sequence's documents (models/common/config_utils."
                     f"get_attention_config refuses SDPA for language models); the plan priced "
                     f"{priced} {over}")
    if model.num_mtp_layers:
        notes.append(f"the preset builds no multi-token-prediction module (the plan counted "
                     f"{model.num_mtp_layers}: its memory and time are over-estimated, not "
                     "under)")
    if not cfg.compiled_loss and not cfg.eager:
        notes.append("the plan prices a torchtitan that compiles the model only; 0.3.0 "
                     "compiles the loss too (less memory than planned, not more)")
    if cfg.legacy_attention:
        notes.append("the plan prices torchtitan's attention block before 0.3.0 (separate wq, "
                     "wk and wv; key/value heads repeated to every query head); 0.3.0 fuses "
                     "wqkv and passes enable_gqa")
    if not cfg.fused_rms_norm and cfg.eager:
        notes.append("the plan prices RMSNorm op by op (PyTorch before 2.8); with PyTorch's "
                     "fused kernel it runs faster and keeps less than planned")
    return tuple(notes)


def torchtitan_args(model: ModelSpec, cfg: ParallelConfig) -> tuple[str, ...]:
    """One `--flag value` per entry; the activation-checkpoint subcommand comes last."""
    module, config = preset_for(model)
    if cfg.zero == 1:
        raise InputError("zero 1: torchtitan has no optimizer-only sharding",
                         hint="plan with --zero 3 (FSDP), 2 or 0 for torchtitan")
    if cfg.ep > 1 and cfg.expert_tp != 1:
        raise InputError(f"etp {cfg.expert_tp}: torchtitan 0.3.0 does not shard experts with "
                         "tensor parallelism", hint="plan with --etp 1")
    if cfg.precision is not Precision.BF16:
        raise InputError(f"precision {cfg.precision.value}: the torchtitan target writes bf16 "
                         "training (FP8 is a model converter of the preset)",
                         hint="plan with --precision bf16")
    if cfg.vpp > 1 and cfg.layers_per_stage:
        raise InputError("uneven stages with interleaving: torchtitan splits by "
                         "pipeline_parallel_layers_per_stage", hint="plan an even split")
    shard = cfg.dp if cfg.zero >= 2 else 1
    replicate = 1 if cfg.zero >= 2 else cfg.dp
    args = [f"--module {module}", f"--config {config}",
            f"--parallelism.data_parallel_replicate_degree {replicate}",
            f"--parallelism.data_parallel_shard_degree {shard}",
            f"--parallelism.tensor_parallel_degree {cfg.tp}",
            f"--parallelism.context_parallel_degree {cfg.cp}",
            f"--parallelism.pipeline_parallel_degree {cfg.pp}",
            f"--parallelism.expert_parallel_degree {cfg.ep}"]
    if cfg.zero == 2:
        args.append("--parallelism.fsdp_reshard_after_forward never")
    args.append("--parallelism.enable_sequence_parallel" if cfg.sequence_parallel
                else "--parallelism.no_enable_sequence_parallel")
    if cfg.pp > 1:
        args += _pipeline_args(model, cfg)
    # torch.compile (model and loss) unless the plan is eager: the step-time model prices
    # element-wise work fused, as compiled code runs it, or op by op (ParallelConfig.eager);
    # async TP is torchtitan's TP overlap and needs compile
    if not cfg.eager:
        args.append("--compile.enable")
    if cfg.tp_comm_overlap and cfg.tp > 1:
        args.append("--compile.enable_async_tensor_parallel")
    # CUDA graphs (on by default in 0.3.0) keep private memory pools the memory model has no
    # term for; torchtitan also refuses them with pipelining and with all-to-all expert dispatch
    args.append("--training.disable_cuda_graphs")
    # with pipelining the local batch is split into pipeline micro-batches; without, the
    # trainer accumulates gradients over global / (local x dp) steps
    local = cfg.global_batch // cfg.dp if cfg.pp > 1 else cfg.mbs
    args += [f"--training.local_batch_size {local}",
             f"--training.global_batch_size {cfg.global_batch}",
             f"--training.seq_len {cfg.seq_len}"]
    mode = {Recompute.NONE: "none", Recompute.SELECTIVE: "selective",
            Recompute.FULL: "full"}[cfg.recompute]
    if cfg.recompute_num_layers is not None:
        raise InputError("recompute_num_layers: torchtitan recomputes all layers or none",
                         hint="plan without --recompute-num-layers")
    args.append(f"activation-checkpoint:{mode}")
    return tuple(args)


def _pipeline_args(model: ModelSpec, cfg: ParallelConfig) -> list[str]:
    """Schedule and split. torchtitan (distributed/pipeline_parallel.py) splits L +
    first_stage_less_layers + last_stage_less_layers "effective layers" evenly over the virtual
    stages (extra layers to the first ones) and takes the weights off the end stages: with 0/0
    that is our baseline split, with 1/1 our redistribute split. Stages: 1 per rank for 1F1B, 2
    for Interleaved1F1B, else ceil(effective / pipeline_parallel_layers_per_stage)."""
    if cfg.vocab_strategy is VocabStrategy.VOCAB_PARALLEL:
        raise InputError("vocab_strategy vocab-parallel: torchtitan has no vocabulary "
                         "parallelism across pipeline stages (pytorch/torchtitan#680)",
                         hint="re-plan with --vocab-strategy redistribute or baseline")
    less = 1 if cfg.vocab_strategy is VocabStrategy.REDISTRIBUTE else 0
    stages = cfg.pp * cfg.vpp
    effective = model.num_layers + 2 * less
    counts = list(even_split(effective, stages))
    counts[0] -= less
    counts[-1] -= less
    chunks = stage_chunks(model, cfg)
    planned = [len(chunks[k % cfg.pp][k // cfg.pp]) for k in range(stages)]
    if counts != planned:
        raise InputError("the plan's layers per stage (" + ",".join(map(str, planned)) + ") "
                         "are not a split torchtitan makes (" + ",".join(map(str, counts))
                         + ")", hint="plan with --vocab-strategy baseline or redistribute "
                                     "and no --layers-per-stage")
    args = ["--parallelism.pipeline_parallel_schedule "
            + ("Interleaved1F1B" if cfg.vpp > 1 else "1F1B"),
            f"--parallelism.pipeline_parallel_first_stage_less_layers {less}",
            f"--parallelism.pipeline_parallel_last_stage_less_layers {less}"]
    if cfg.vpp > 2:
        per_stage = torchtitan_layers_per_stage(effective, stages)
        if per_stage is None:
            raise InputError(f"vpp {cfg.vpp}: no pipeline_parallel_layers_per_stage gives "
                             f"{stages} stages for {effective} effective layers",
                             hint="plan with another --vpp")
        args.append(f"--parallelism.pipeline_parallel_layers_per_stage {per_stage}")
    args.append(f"--parallelism.pipeline_parallel_microbatch_size {cfg.mbs}")
    return args
