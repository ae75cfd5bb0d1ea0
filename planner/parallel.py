"""How the job is split: parallel degrees, micro-batching, recompute, ZeRO, precision, layout.

Terms follow Megatron-LM: tp, pp, dp, cp, ep and etp (expert tensor parallel); expert data
parallel edp = tp*cp*dp / (ep*etp) (Megatron `parallel_state`, expert groups fold into DP).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
from collections.abc import Sequence
from dataclasses import dataclass

from planner.gpus import GpuType
from planner.model import ModelSpec, Norm, Projection


class Recompute(enum.StrEnum):
    NONE = "none"
    SELECTIVE = "selective"  # core attention only (Korthikanti et al. 2022, Sec. 4.2)
    FULL = "full"  # only each layer's input is kept (Megatron --recompute-granularity full)


# Megatron-Core's rank orders (parallel_state.initialize_model_parallel: order "tp-cp-ep-dp-pp",
# or "tp-cp-ep-pp-dp" with --use-tp-pp-dp-mapping; expert parallelism folds into dp).
RANK_ORDERS = ("tp-cp-dp-pp", "tp-cp-pp-dp")


class VocabStrategy(enum.StrEnum):
    """Where the embedding and LM head live (Yeung et al., "Balancing Pipeline Parallelism with
    Vocabulary Parallelism", arXiv 2411.05288)."""

    BASELINE = "baseline"
    REDISTRIBUTE = "redistribute"
    VOCAB_PARALLEL = "vocab-parallel"


class Precision(enum.StrEnum):
    FP32 = "fp32"
    BF16 = "bf16"
    FP8 = "fp8"


# Megatron-Core's --recompute-modules choices the planner prices (transformer_config.py
# recompute_modules; gdn_norm_out belongs to a model kind the planner has not): core_attn,
# mlp, moe and shared_experts run a normal checkpoint of that submodule (its input kept);
# moe_act, layernorm and mla_up_proj discard their output and recompute it in backward
# (tensor_parallel.CheckpointWithoutOutput).
RECOMPUTE_MODULES = ("core_attn", "moe_act", "layernorm", "mla_up_proj", "mlp", "moe",
                     "shared_experts")
DEFAULT_RECOMPUTE_MODULES = ("core_attn",)  # Megatron-Core's default, TransformerConfig


class AttentionKernel(enum.StrEnum):
    """Which fused attention kernel runs (with flash_attention; the unfused path is separate).

    AUTO is what the framework picks on the GPU: Transformer Engine prefers cuDNN's fused
    attention on Hopper and later and Tri Dao's FlashAttention-2 on Ampere (NeMo docs,
    "Turn Flash Attention On and Off", NVIDIA/NeMo PR #9188); PyTorch's SDPA (torchtitan,
    DeepSpeed models) runs FlashAttention-2 first until cuDNN became the default on sm90/sm100
    (pytorch/pytorch PR #162073, in 2.9, gated on a cuDNN newer than 9.15, which PyTorch's
    wheels bundle from 2.11). FA2 or CUDNN pins one, e.g. for a job on an older PyTorch."""

    AUTO = "auto"
    FA2 = "fa2"
    CUDNN = "cudnn"


class Framework(enum.StrEnum):
    """The executor; it decides gradient dtypes, loss buffers and sharding details."""

    MEGATRON = "megatron"
    TORCHTITAN = "torchtitan"
    DEEPSPEED = "deepspeed"


@functools.lru_cache(maxsize=1 << 10)
def _kind_layers(model: ModelSpec, bf16_layers: tuple[int, int]) -> dict[tuple[bool, bool], int]:
    """ParallelConfig.kind_layers, memoised on what it reads (the search asks it of every
    configuration): the first layer of each (MoE, bf16) kind."""
    first_bf16, last_bf16 = bf16_layers
    first: dict[tuple[bool, bool], int] = {}
    for layer in range(model.num_layers):
        bf16 = layer < first_bf16 or layer >= model.num_layers - last_bf16
        first.setdefault((model.is_moe_layer(layer), bf16), layer)
    return first


def _position_recompute(recompute: Recompute, recompute_num_layers: int | None,
                        position: int) -> Recompute:
    """ParallelConfig.layer_recompute on the two fields it reads."""
    if recompute is Recompute.FULL and recompute_num_layers is not None:
        return Recompute.FULL if position < recompute_num_layers else Recompute.NONE
    return recompute


def _in_bf16(bf16_layers: tuple[int, int], num_layers: int, layer: int) -> bool:
    """Whether `layer` is among the first / last bf16_layers (fp8 training only)."""
    first, last = bf16_layers
    return layer < first or layer >= num_layers - last


@functools.lru_cache(maxsize=1 << 14)
def _chunk_layer_runs(model: ModelSpec, bf16_layers: tuple[int, int], recompute: Recompute,
                      recompute_num_layers: int | None, chunk: tuple[int, ...]
                      ) -> tuple[tuple[tuple[bool, bool, Recompute], int], ...]:
    """ParallelConfig.chunk_layer_runs, memoised on what it reads (the search asks it of
    every chunk of every configuration it weighs); bf16_layers (0, 0) outside fp8."""
    runs: list[tuple[tuple[bool, bool, Recompute], int]] = []
    for position, layer in enumerate(chunk):
        key = (model.is_moe_layer(layer), _in_bf16(bf16_layers, model.num_layers, layer),
               _position_recompute(recompute, recompute_num_layers, position))
        if runs and runs[-1][0] == key:
            runs[-1] = (key, runs[-1][1] + 1)
        else:
            runs.append((key, 1))
    return tuple(runs)


@dataclass(frozen=True, slots=True, kw_only=True)
class ParallelConfig:
    """One complete training configuration (strategy + job), validated by `problems()`.

    Attributes:
        layers_per_stage: transformer layers on each pipeline stage (uneven layouts); empty
            means the vocab strategy decides (even split for baseline).
        layers_per_chunk: transformer layers of each of the pp * vpp model chunks in layer
            order (chunk k runs on stage k % pp): interleaved layouts whose chunks differ
            (Megatron --pipeline-model-parallel-layout). Overrides layers_per_stage.
        recompute_num_layers: with full recompute, only this many layers of each stage
            (Megatron --recompute-method block --recompute-num-layers); None = all layers.
        recompute_modules: with Megatron's selective recompute, the submodules it recomputes
            (--recompute-modules, RECOMPUTE_MODULES; Megatron-Core's default core_attn);
            other recompute modes ignore them. torchtitan's selective recompute is its
            op-level policy and takes none.
        flash_attention: attention kernels that keep no s x s score matrix (FlashAttention /
            cuDNN fused attention), the default of Megatron-Core with Transformer Engine.
        attention_kernel: the fused attention kernel (AttentionKernel; AUTO = the framework's
            pick for the GPU).
        cross_entropy_fusion: Megatron's --cross-entropy-loss-fusion (its fused kernel keeps
            more fp32 logit buffers; memory.loss_bytes_per_element).
        overlap_grad_reduce: gradient reduction overlapped with the backward pass (Megatron
            --overlap-grad-reduce; DeepSpeed's overlap_comm).
        overlap_param_gather: Megatron --overlap-param-gather: the distributed optimizer's
            (zero 1) all-gather of the updated parameters runs bucket by bucket under the next
            step's forward (DistributedDataParallel's forward pre-hooks); without it Megatron
            gathers every bucket synchronously after the optimizer step
            (DistributedOptimizer.step_with_ready_grads) and the step waits for all of it.
            Megatron allows it only with --overlap-grad-reduce (validate_args). Megatron's
            setting: DeepSpeed's ZeRO-1/2 always gather after the step (stage_1_and_2.py
            step: all_gather_dp_groups) and FSDP gathers per block in the passes.
        tp_comm_overlap: tensor-parallel communication overlapped with GEMMs (Megatron
            --tp-comm-overlap, Transformer Engine userbuffers).
        microbatch_group_size: micro-batches the interleaved schedule runs through each virtual
            stage before moving on (Megatron --microbatch-group-size-per-virtual-pipeline-stage;
            default pp).
        rank_order: how global ranks map to the parallel axes, fastest first: Megatron's default
            "tp-cp-dp-pp", or "tp-cp-pp-dp" (--use-tp-pp-dp-mapping). With the default
            placement rank r runs on GPU r, so this decides which links each group crosses.
        moe_grouped_gemm: the local experts' GEMMs run as one grouped GEMM (Megatron
            --moe-grouped-gemm, TEGroupedMLP; what the planner's launches use); False runs them
            one expert after another (Megatron's default SequentialMLP), which costs host time
            per expert (cost/kernels.py HOST_EXPERT_PASS_S).
        embedding_wgrad_deferral: Megatron --defer-embedding-wgrad-compute: the LM head's
            weight gradient waits for the pipeline flush, its input and output gradient kept
            for that many micro-batches (0 = all, --wgrad-deferral-limit); None = not deferred.
        dist_opt_instances: Megatron --num-distributed-optimizer-instances: the distributed
            optimizer (zero 1) is replicated this many times over dp*cp, each copy sharded over
            dp*cp / instances ranks (parallel_state: intra-partial data-parallel groups), its
            gradient shards all-reduced across the copies.
        fp8_param_gather: Megatron --fp8-param-gather: the GEMM weights are kept only in fp8
            (Transformer Engine's fp8_model_init; no bf16 copy) and the distributed optimizer /
            FSDP gathers them in fp8. Needs fp8 and zero >= 1 (Megatron validate_args).
        grad_reduce_in_bf16: Megatron --grad-reduce-in-bf16: the gradient buffers accumulate
            and reduce in bf16 instead of the fp32 Megatron otherwise forces with bf16
            (validate_args turns accumulate_allreduce_grads_in_fp32 off); Megatron-Bridge's
            `ddp.grad_reduce_in_fp32=False`.
        moe_a2a_overlap: Megatron --overlap-moe-expert-parallel-comm (Megatron-Bridge's
            moe_a2a_overlap): the combined 1F1B schedule runs one micro-batch's forward beside
            another's backward, layer by layer, so each one's expert all-to-all hides behind
            the other's compute (pipeline_parallel/combined_1f1b.py); one more warm-up
            micro-batch is held. Needs experts over ep > 1, no full recompute, and vpp > 1
            with pp > 1 (TransformerConfig's checks).
        deterministic: Megatron --deterministic-mode: torch.use_deterministic_algorithms(True)
            (PyTorch fills every torch.empty and takes the deterministic, sorting scatter and
            index-add kernels); Megatron refuses it with the fused cross entropy or
            --tp-comm-overlap and runs it with NCCL_ALGO=Ring, CUBLAS_WORKSPACE_CONFIG=:4096:8
            and NVTE_ALLOW_NONDETERMINISTIC_ALGO=0 (Transformer Engine's deterministic
            kernels): megatron/training/determinism.py. Slower: step.layer_passes prices
            the host work and the fills as measured (kernels.HOST_DETERMINISTIC_PASS_S,
            DETERMINISTIC_FILL_FACTOR).
        gradient_accumulation_fusion: Megatron's default (off with
            --no-gradient-accumulation-fusion, as its functional tests run): the weight-gradient
            GEMM accumulates into the fp32 main_grad in its epilogue. Off, it writes a bf16
            .grad that the DDP hook adds into main_grad (distributed_data_parallel.py
            _make_backward_post_hook): one memory-bound add per weight and micro-batch
            (step.wgrad_accumulation_bytes). Megatron's setting only.
        eager: torchtitan without torch.compile (no --compile.enable): PyTorch runs each
            element-wise op of the model's Python as its own kernel through HBM
            (compute.elementwise_bytes prices torchtitan's eager RoPE and SwiGLU, and the
            memory count the silu output the eager product keeps);
            async TP needs compile (torchtitan refuses it eager). Megatron and DeepSpeed run
            their own fused kernels: the setting is torchtitan's only.
        fused_rms_norm: eager RMSNorm runs as one kernel, as PyTorch's fused CUDA rms_norm
            (pytorch/pytorch PR #153666, in 2.8) runs nn.RMSNorm. False for PyTorch before
            2.8, where nn.RMSNorm decomposes into separate kernels, and torchtitan's own
            RMSNorm class of 2024 (models/norms.py: x.float(), pow, mean, rsqrt, mul,
            type_as, * weight) always did: compute.EAGER_RMS_NORM_BYTES, and the memory
            counts the fp32 copy those kernels keep. Matters only with `eager` (compiled code
            fuses the norm either way).
        compiled_loss: torchtitan with torch.compile compiles its cross entropy too (the loss
            builder of pytorch/torchtitan PR #1033, April 2025): the fp32 upcast and softmax
            fuse into the loss, which keeps the bf16 logits and their bf16 gradient only
            (memory.loss_bytes_per_element, compute.loss_pass_bytes). False for earlier
            releases, which compiled the model's blocks only. Ignored when `eager` (nothing is
            compiled) and outside torchtitan.
        legacy_attention: torchtitan's attention block before 0.3.0 (models/llama3/model/
            model.py Attention): separate wq, wk and wv linears, and each key/value head
            repeated to the query heads it serves before the kernel (repeat_kv, unsqueeze +
            expand + reshape, materialised), so that the kernel read, saved and under context
            parallelism exchanged q_width-wide K and V (attention_kv_width). 0.3.0's
            GQAttention (models/common/attention.py, built with fuse_qkv=True by its Llama 3
            and Qwen3 presets) runs one fused wqkv linear and passes enable_gqa, widening
            nothing: False, the default (torchtitan_linears). torchtitan's setting only.
        document_tokens: the token-weighted mean length of the documents packed into each
            sequence (sum of d^2 over sum of d, documents cut at the sequence's end), for
            torchtitan 0.3.0, whose language models always mask attention block-causally by
            document (models/common/config_utils.py get_attention_config: its data loaders
            emit per-document positions; FlexAttention skips the 128 x 128 blocks no query
            of the block may attend to: compute.document_block_fraction). None: one document
            fills each sequence, plain causal attention (the most work such a run can do).
            Megatron and DeepSpeed attend causally across documents, and so did torchtitan
            before 0.3.0 by default (legacy_attention): the setting is torchtitan 0.3.0's.
        bf16_layers: (first, last) transformer layers kept in bf16 under fp8 training
            (Megatron --first-last-layers-bf16 with --num-layers-at-start-in-bf16 and
            --num-layers-at-end-in-bf16, fp8_utils.is_first_last_bf16_layer: global layer
            indices, so they sit on the first and last pipeline stages). Their GEMMs run in
            bf16 and save 2-byte inputs (layer_config), and their parameters gather 16-bit;
            their weights are counted as fp8 GEMM weights (2 bytes more than bf16 alone
            without --fp8-param-gather, the same with it: conservative). TransformerConfig
            refuses it with delayed scaling (the emitter writes --fp8-recipe tensorwise) and
            allows at most num_layers / pp at each end.
        moe_token_imbalance: for dropless MoE, the busiest expert rank's tokens over the mean;
            an assumption (Megatron's aux-loss load balancing keeps routing near uniform; 1.5
            leaves room for early-training imbalance), used only when capacity_factor is unset.
    """

    tp: int = 1
    pp: int = 1
    dp: int = 1
    cp: int = 1
    ep: int = 1
    etp: int | None = None
    vpp: int = 1
    mbs: int = 1
    global_batch: int = 1
    seq_len: int = 2048
    recompute: Recompute = Recompute.NONE
    recompute_num_layers: int | None = None
    recompute_modules: tuple[str, ...] = DEFAULT_RECOMPUTE_MODULES
    zero: int = 0
    sequence_parallel: bool = False
    precision: Precision = Precision.BF16
    vocab_strategy: VocabStrategy = VocabStrategy.BASELINE
    layers_per_stage: tuple[int, ...] = ()
    layers_per_chunk: tuple[int, ...] = ()
    framework: Framework = Framework.MEGATRON
    flash_attention: bool = True
    attention_kernel: AttentionKernel = AttentionKernel.AUTO
    cross_entropy_fusion: bool = False
    moe_token_imbalance: float = 1.5
    moe_grouped_gemm: bool = True
    embedding_wgrad_deferral: int | None = None
    dist_opt_instances: int = 1
    overlap_grad_reduce: bool = True
    overlap_param_gather: bool = True
    tp_comm_overlap: bool = False
    fp8_param_gather: bool = False
    grad_reduce_in_bf16: bool = False
    moe_a2a_overlap: bool = False
    deterministic: bool = False
    gradient_accumulation_fusion: bool = True
    eager: bool = False
    fused_rms_norm: bool = True
    compiled_loss: bool = True
    legacy_attention: bool = False
    document_tokens: int | None = None
    bf16_layers: tuple[int, int] = (0, 0)
    microbatch_group_size: int | None = None
    rank_order: str = "tp-cp-dp-pp"

    @property
    def world_size(self) -> int:
        return self.tp * self.pp * self.cp * self.dp

    def local_experts(self, model: ModelSpec) -> float:
        """Routed experts each expert-parallel rank holds: num_experts / ep (0 without MoE)."""
        return model.moe.num_experts / self.ep if model.moe is not None else 0.0

    @property
    def expert_tp(self) -> int:
        return self.tp if self.etp is None else self.etp

    @property
    def expert_dp(self) -> int:
        """Replicas of each expert shard: tp*cp*dp / (ep*etp), at least 1."""
        return max(1, (self.tp * self.cp * self.dp) // (self.ep * self.expert_tp))

    def layer_recompute(self, position: int) -> Recompute:
        """Recompute mode of the `position`-th layer of a model chunk: with
        recompute_num_layers, Megatron's block method recomputes the first N layers of each
        chunk (each chunk is its own TransformerBlock) and none of the rest."""
        return _position_recompute(self.recompute, self.recompute_num_layers, position)

    @property
    def _custom_recompute_modules(self) -> bool:
        """Whether recompute_modules matter: set apart from the default under selective
        recompute (other recompute modes ignore them)."""
        return (self.recompute_modules != DEFAULT_RECOMPUTE_MODULES
                and self.recompute is Recompute.SELECTIVE)

    def _recompute_module_recipe_problems(self) -> list[str]:
        """What Megatron-Core's TransformerConfig refuses about recompute_modules whatever the
        model (transformer_config.py __post_init__; part of recipe_problems)."""
        if not self._custom_recompute_modules:
            return []
        modules = self.recompute_modules
        out = []
        unknown = sorted(set(modules) - set(RECOMPUTE_MODULES))
        if unknown:
            out.append(f"recompute_modules {unknown}: unknown (choose from "
                       f"{', '.join(RECOMPUTE_MODULES)})")
        if len(set(modules)) != len(modules):
            out.append(f"recompute_modules {list(modules)}: a module is named twice")
        if self.framework is not Framework.MEGATRON:
            out.append("recompute_modules are Megatron's (--recompute-modules); torchtitan's "
                       "selective recompute is its op-level policy")
        if "moe" in modules and self.moe_a2a_overlap:
            out.append("recompute_modules moe with moe_a2a_overlap: Megatron refuses it (disable "
                       "moe in recompute_modules when enabling overlap_moe_expert_parallel_comm)")
        return out

    def _recompute_module_problems(self, model: ModelSpec) -> list[str]:
        """The recompute_modules this model cannot run (Megatron-Core's TransformerConfig and
        what this planner cannot honour); the model-free rules are recipe_problems'."""
        if not self._custom_recompute_modules:
            return []
        modules = self.recompute_modules
        out = []
        if "moe_act" in modules and not (model.moe is not None and self.moe_grouped_gemm):
            out.append("recompute_modules moe_act needs an MoE model with the grouped GEMM "
                       "(Megatron: only supported with --moe-grouped-gemm)")
        if "mla_up_proj" in modules and model.mla is None:
            out.append("recompute_modules mla_up_proj needs multi-latent attention")
        if {"moe", "shared_experts"} & set(modules) and model.moe is None:
            out.append("recompute_modules moe / shared_experts need an MoE model")
        return out

    def layer_in_bf16(self, model: ModelSpec, layer: int) -> bool:
        """Whether fp8 training keeps this transformer layer in bf16 (bf16_layers)."""
        return self.precision is Precision.FP8 and _in_bf16(self.bf16_layers, model.num_layers,
                                                            layer)

    def layer_kind(self, model: ModelSpec, layer: int) -> tuple[bool, bool]:
        """(MoE or not, kept in bf16 or not): layers of one kind have the same shapes and
        precision, so one stands for all of its kind in time and memory counts."""
        if self.bf16_layers == (0, 0):
            return model.is_moe_layer(layer), False
        return model.is_moe_layer(layer), self.layer_in_bf16(model, layer)

    def layer_config(self, model: ModelSpec, layer: int) -> ParallelConfig:
        """The configuration one layer runs under: bf16 for the layers fp8 training keeps in
        bf16 (bf16_layers: no fp8 GEMMs, casts or 1-byte saved inputs; Megatron builds them
        outside fp8_model_init, so no fp8 parameters either), else this one."""
        if not self.layer_in_bf16(model, layer):
            return self
        return dataclasses.replace(self, precision=Precision.BF16, fp8_param_gather=False,
                                   bf16_layers=(0, 0))

    def kind_layers(self, model: ModelSpec) -> dict[tuple[bool, bool], int]:
        """The first layer of each layer_kind in the model (one stands for all of its kind)."""
        return _kind_layers(model,
                            self.bf16_layers if self.precision is Precision.FP8 else (0, 0))

    def chunk_layer_runs(self, model: ModelSpec, chunk: Sequence[int]
                         ) -> tuple[tuple[tuple[bool, bool, Recompute], int], ...]:
        """A model chunk's layers in order as runs of one kind: ((MoE or not, bf16 or not,
        recompute mode), how many in a row). Layers of one kind cost the same time and
        memory, so costs count kinds, not layers."""
        bf16_layers = self.bf16_layers if self.precision is Precision.FP8 else (0, 0)
        return _chunk_layer_runs(model, bf16_layers, self.recompute, self.recompute_num_layers,
                                 tuple(chunk))

    def chunk_layer_kinds(self, model: ModelSpec, chunk: Sequence[int]
                          ) -> dict[tuple[bool, bool, Recompute], int]:
        """How many layers of a model chunk are of each kind (chunk_layer_runs summed)."""
        kinds: dict[tuple[bool, bool, Recompute], int] = {}
        for key, count in self.chunk_layer_runs(model, chunk):
            kinds[key] = kinds.get(key, 0) + count
        return kinds

    @property
    def fsdp_keeps_params(self) -> bool:
        """torchtitan's FSDP under pipelining: parameters are gathered once and kept unsharded,
        and gradients accumulate unsharded across the micro-batches until the last one's
        backward reduce-scatters them (torch.distributed.pipelining's stage turns off
        resharding after backward and gradient sync for all but the last micro-batch,
        stage.backward_maybe_with_nosync; torchtitan's default reshard policy is not to reshard
        after forward when pipelining). ZeRO 2 and 3 are then the same."""
        return self.framework is Framework.TORCHTITAN and self.pp > 1 and self.zero >= 2

    @property
    def grad_reduce_hidden(self) -> bool:
        """Whether the gradient reduction runs bucket by bucket under the backward pass:
        overlap_grad_reduce, except for DeepSpeed without ZeRO, whose engine all-reduces the
        gradients after the backward (engine.allreduce_gradients: buffered_allreduce_fallback
        at the accumulation boundary; overlap_comm is a ZeRO setting)."""
        return self.overlap_grad_reduce and not (self.framework is Framework.DEEPSPEED
                                                 and self.zero == 0)

    @property
    def param_gather_hidden(self) -> bool:
        """Whether the all-gather of the updated parameters (zero 1-2; ZeRO-3 gathers in the
        passes) runs under the next step's forward: Megatron's with overlap_grad_reduce and
        overlap_param_gather, FSDP's (torchtitan) with its overlapped reduction; DeepSpeed's
        ZeRO-1/2 never (stage_1_and_2.py step(): all_gather_dp_groups after the update)."""
        if self.framework is Framework.DEEPSPEED:
            return False
        if self.framework is Framework.MEGATRON:
            return self.overlap_grad_reduce and self.overlap_param_gather
        return self.overlap_grad_reduce

    @property
    def optimizer_shards(self) -> int:
        """Ranks one copy of the dense optimizer state is sharded over (zero >= 1): dp*cp, or
        dp*cp / dist_opt_instances."""
        return max(1, self.dp * self.cp // self.dist_opt_instances)

    @property
    def deferred_head_microbatches(self) -> int:
        """Micro-batches whose LM-head input and output gradient wait for the flush."""
        if self.embedding_wgrad_deferral is None:
            return 0
        m = self.num_microbatches
        return m if self.embedding_wgrad_deferral == 0 else min(self.embedding_wgrad_deferral, m)

    @property
    def group_size(self) -> int:
        """The interleaved schedule's micro-batch group (default pp)."""
        return self.microbatch_group_size or self.pp

    @property
    def num_microbatches(self) -> int:
        return max(1, self.global_batch // (self.mbs * self.dp))

    def to_dict(self) -> dict[str, object]:
        return {
            "tp": self.tp, "pp": self.pp, "dp": self.dp, "cp": self.cp, "ep": self.ep,
            "etp": self.etp, "vpp": self.vpp, "mbs": self.mbs,
            "global_batch": self.global_batch, "seq_len": self.seq_len,
            "num_microbatches": self.num_microbatches, "recompute": self.recompute.value,
            "recompute_num_layers": self.recompute_num_layers,
            "recompute_modules": list(self.recompute_modules), "zero": self.zero,
            "sequence_parallel": self.sequence_parallel, "precision": self.precision.value,
            "vocab_strategy": self.vocab_strategy.value,
            "layers_per_stage": list(self.layers_per_stage),
            "layers_per_chunk": list(self.layers_per_chunk), "framework": self.framework.value,
            "flash_attention": self.flash_attention,
            "attention_kernel": self.attention_kernel.value,
            "cross_entropy_fusion": self.cross_entropy_fusion,
            "moe_token_imbalance": self.moe_token_imbalance,
            "moe_grouped_gemm": self.moe_grouped_gemm,
            "embedding_wgrad_deferral": self.embedding_wgrad_deferral,
            "dist_opt_instances": self.dist_opt_instances,
            "overlap_grad_reduce": self.overlap_grad_reduce,
            "overlap_param_gather": self.overlap_param_gather,
            "tp_comm_overlap": self.tp_comm_overlap,
            "fp8_param_gather": self.fp8_param_gather,
            "grad_reduce_in_bf16": self.grad_reduce_in_bf16,
            "moe_a2a_overlap": self.moe_a2a_overlap,
            "deterministic": self.deterministic,
            "gradient_accumulation_fusion": self.gradient_accumulation_fusion,
            "eager": self.eager,
            "fused_rms_norm": self.fused_rms_norm,
            "compiled_loss": self.compiled_loss,
            "legacy_attention": self.legacy_attention,
            "document_tokens": self.document_tokens,
            "bf16_layers": list(self.bf16_layers),
            "microbatch_group_size": self.microbatch_group_size,
            "rank_order": self.rank_order,
        }

    def problems(self, model: ModelSpec, gpu: GpuType | None = None,
                 world_size: int | None = None) -> tuple[str, ...]:
        """Every reason this configuration cannot run `model` (empty when it can).

        Each message names the values involved, e.g. `tp(3) must divide num_attention_heads(32)`.
        """
        out: list[str] = []
        for key in ("tp", "pp", "dp", "cp", "ep", "vpp", "mbs", "global_batch", "seq_len"):
            if getattr(self, key) < 1:
                out.append(f"{key}({getattr(self, key)}) must be >= 1")
        if out:
            return tuple(out)
        heads, groups = model.num_attention_heads, model.num_query_groups
        if heads % self.tp:
            out.append(f"tp({self.tp}) must divide num_attention_heads({heads})")
        elif model.mla is None and groups % self.tp:
            out.append(f"tp({self.tp}) must divide num_query_groups({groups})")
        if world_size is not None and self.world_size != world_size:
            out.append(f"tp({self.tp}) * pp({self.pp}) * cp({self.cp}) * dp({self.dp}) = "
                       f"{self.world_size} != world_size({world_size})")
        if self.global_batch % (self.mbs * self.dp):
            out.append(f"global_batch({self.global_batch}) must be a multiple of "
                       f"mbs({self.mbs}) * dp({self.dp}) = {self.mbs * self.dp}")
        if self.cp > 1 and self.seq_len % (2 * self.cp):
            out.append(f"seq_len({self.seq_len}) must be a multiple of 2 * cp({self.cp}) "
                       "(Megatron's load-balanced context parallelism)")
        if self.cp > 1 and not self.flash_attention:
            out.append("cp > 1 needs fused (flash) attention")
        if self.seq_len > model.max_position_embeddings and (
                model.position_embedding.value == "learned"):
            out.append(f"seq_len({self.seq_len}) exceeds the learned position table "
                       f"(max_position_embeddings={model.max_position_embeddings})")
        if self.sequence_parallel and self.tp == 1:
            out.append("sequence_parallel needs tp > 1")
        if self.embedding_wgrad_deferral is not None and (
                self.pp == 1 or self.framework is not Framework.MEGATRON
                or self.embedding_wgrad_deferral < 0):
            out.append("embedding_wgrad_deferral needs Megatron with pp > 1 and a limit >= 0 "
                       "(ModelParallelConfig: deferred to the pipeline flush)")
        if self.dist_opt_instances != 1 and (
                self.zero != 1 or self.dist_opt_instances < 1
                or (self.dp * self.cp) % self.dist_opt_instances):
            out.append(f"dist_opt_instances({self.dist_opt_instances}) needs zero 1 (the "
                       f"distributed optimizer) and must divide dp*cp({self.dp * self.cp})")
        if self.tp_comm_overlap and not self.sequence_parallel:
            out.append("tp_comm_overlap needs sequence_parallel (Megatron validate_args; "
                       "torchtitan's async TP overlaps the sequence-parallel collectives)")
        out.extend(self.recipe_problems())
        if not 0 <= self.zero <= 3:
            out.append(f"zero({self.zero}) must be 0, 1, 2 or 3")
        if self.zero >= 2 and self.pp > 1 and self.framework is not Framework.TORCHTITAN:
            out.append(f"zero({self.zero}) with pp({self.pp}) > 1: ZeRO-2/3 shard gradients "
                       "that pipeline micro-batches accumulate; use zero 1 (distributed "
                       "optimizer) with pipelining (torchtitan's FSDP does pipeline: it keeps "
                       "the stage's parameters and gradients unsharded during the step)")
        out.extend(self._moe_problems(model))
        out.extend(self._layout_problems(model))
        if self.bf16_layers != (0, 0):
            most = model.num_layers // self.pp
            if not all(0 <= n <= most for n in self.bf16_layers):
                out.append(f"bf16_layers{tuple(self.bf16_layers)}: each end keeps 0 to "
                           f"num_layers / pp = {most} layers in bf16 (TransformerConfig)")
        if self.recompute_num_layers is not None and self.recompute is not Recompute.FULL:
            out.append("recompute_num_layers applies only with recompute full")
        out += self._recompute_module_problems(model)
        if gpu is not None and self.precision is Precision.FP8 and "fp8" not in dict(
                gpu.peak_flops_per_s):
            out.append(f"precision fp8 needs FP8 tensor cores; {gpu.name} has none")
        if self.moe_token_imbalance < 1:
            out.append(f"moe_token_imbalance({self.moe_token_imbalance}) must be >= 1")
        return tuple(out)

    def recipe_problems(self) -> list[str]:
        """The rules of the Megatron recipe flags that depend on no degree or model (the
        search checks them once, on its fixed settings): Megatron's validate_args and
        TransformerConfig checks."""
        out = []
        megatron = self.framework is Framework.MEGATRON
        if self.fp8_param_gather and (self.precision is not Precision.FP8 or self.zero < 1
                                      or not megatron):
            out.append("fp8_param_gather needs Megatron with fp8 and zero >= 1 (Megatron "
                       "validate_args: distributed optimizer or Megatron FSDP)")
        if self.grad_reduce_in_bf16 and (self.precision is Precision.FP32 or not megatron):
            out.append("grad_reduce_in_bf16 needs Megatron with bf16 or fp8 training")
        if (self.overlap_param_gather and not self.overlap_grad_reduce and megatron
                and self.zero >= 1):
            out.append("overlap_param_gather needs overlap_grad_reduce (Megatron validate_args: "
                       "--overlap-param-gather only with --overlap-grad-reduce); set "
                       "overlap_param_gather false or overlap_grad_reduce true")
        if self.moe_a2a_overlap and not megatron:
            out.append("moe_a2a_overlap needs Megatron")
        if self.moe_a2a_overlap and self.recompute is Recompute.FULL:
            out.append("moe_a2a_overlap needs no full recompute (Megatron's TransformerConfig "
                       "refuses it)")
        if self.bf16_layers != (0, 0) and (self.precision is not Precision.FP8
                                           or not megatron):
            out.append("bf16_layers needs Megatron with fp8 (--first-last-layers-bf16)")
        if not self.gradient_accumulation_fusion and not megatron:
            out.append("gradient_accumulation_fusion off is Megatron's "
                       "--no-gradient-accumulation-fusion")
        if self.eager and self.framework is not Framework.TORCHTITAN:
            out.append("eager is torchtitan's setting (run without torch.compile); Megatron "
                       "and DeepSpeed run their own fused kernels")
        if not self.fused_rms_norm and not self.eager:
            out.append("fused_rms_norm false without eager: compiled code fuses the norm "
                       "(set eager, or leave fused_rms_norm true)")
        if self.legacy_attention and self.framework is not Framework.TORCHTITAN:
            out.append("legacy_attention is torchtitan's setting (its attention block before "
                       "0.3.0); Megatron and DeepSpeed run their own")
        if self.document_tokens is not None:
            if self.document_tokens < 1:
                out.append(f"document_tokens({self.document_tokens}) must be >= 1")
            elif (self.framework is not Framework.TORCHTITAN or self.legacy_attention
                  or not self.flash_attention):
                out.append("document_tokens prices torchtitan 0.3.0's block-causal attention "
                           "(framework torchtitan, flash attention, no legacy_attention); "
                           "Megatron-LM, DeepSpeed and torchtitan before 0.3.0 attend "
                           "causally across documents")
        if self.eager and self.tp_comm_overlap:
            out.append("eager with tp_comm_overlap: torchtitan's async TP needs torch.compile")
        if self.deterministic and not megatron:
            out.append("deterministic is Megatron's --deterministic-mode (torchtitan's "
                       "debug.deterministic turns PyTorch's memory fill off and is not priced)")
        if self.deterministic and (self.cross_entropy_fusion or self.tp_comm_overlap):
            out.append("deterministic needs cross_entropy_fusion and tp_comm_overlap off "
                       "(Megatron's --deterministic-mode refuses both: megatron/training/"
                       "determinism.py)")
        out += self._recompute_module_recipe_problems()
        return out

    def _moe_problems(self, model: ModelSpec) -> list[str]:
        out = []
        if model.moe is None:
            if self.ep > 1:
                out.append(f"ep({self.ep}) > 1 but {model.name} has no experts")
            if self.moe_a2a_overlap:
                out.append(f"moe_a2a_overlap but {model.name} has no experts")
            return out
        experts = model.moe.num_experts
        if experts % self.ep:
            out.append(f"ep({self.ep}) must divide num_experts({experts})")
        if (self.tp * self.cp * self.dp) % (self.ep * self.expert_tp):
            out.append(f"ep({self.ep}) * etp({self.expert_tp}) must divide "
                       f"tp({self.tp}) * cp({self.cp}) * dp({self.dp}) = "
                       f"{self.tp * self.cp * self.dp}")
        if self.ep > 1 and self.tp > 1 and not self.sequence_parallel:
            out.append("expert parallelism with tp > 1 needs sequence_parallel (Megatron-Core)")
        if self.moe_a2a_overlap:
            if self.ep == 1:
                out.append("moe_a2a_overlap needs ep > 1")
            if self.pp > 1 and self.vpp == 1:
                out.append("moe_a2a_overlap with pp > 1 needs vpp > 1 (Megatron's "
                           "TransformerConfig)")
            if model.num_mtp_layers > 1:
                out.append("moe_a2a_overlap supports at most one MTP layer")
        if model.moe.ffn_hidden_size % self.expert_tp:
            out.append(f"etp({self.expert_tp}) must divide the expert ffn_hidden_size"
                       f"({model.moe.ffn_hidden_size})")
        return out

    def _layout_problems(self, model: ModelSpec) -> list[str]:
        out = []
        layers = model.num_layers
        if self.vpp > 1 and self.pp == 1:
            out.append(f"vpp({self.vpp}) > 1 needs pp > 1")
        if self.vpp > 1 and self.num_microbatches < self.pp:
            out.append(f"vpp({self.vpp}) > 1 needs num_microbatches({self.num_microbatches}) "
                       f">= pp({self.pp}): Megatron's interleaved schedule groups pp "
                       "micro-batches per virtual stage")
        elif self.vpp > 1 and self.num_microbatches % self.group_size:
            out.append(f"vpp({self.vpp}) > 1 needs num_microbatches({self.num_microbatches}) "
                       f"divisible by the micro-batch group ({self.group_size}; Megatron "
                       "--microbatch-group-size-per-virtual-pipeline-stage, default pp)")
        if self.rank_order not in RANK_ORDERS:
            out.append(f"rank_order({self.rank_order!r}) must be one of "
                       + ", ".join(RANK_ORDERS))
        if self.microbatch_group_size is not None and self.microbatch_group_size < self.pp:
            out.append(f"microbatch_group_size({self.microbatch_group_size}) must be >= "
                       f"pp({self.pp})")
        if self.layers_per_chunk:
            chunks = self.pp * self.vpp
            if len(self.layers_per_chunk) != chunks:
                out.append(f"layers_per_chunk has {len(self.layers_per_chunk)} entries, "
                           f"expected pp({self.pp}) * vpp({self.vpp}) = {chunks}")
            elif sum(self.layers_per_chunk) != layers:
                out.append(f"layers_per_chunk sums to {sum(self.layers_per_chunk)}, expected "
                           f"num_layers({layers})")
            elif min(self.layers_per_chunk) < 0:
                out.append("layers_per_chunk entries must be >= 0")
            elif any(sum(self.layers_per_chunk[s::self.pp]) == 0 for s in range(self.pp)):
                out.append("layers_per_chunk leaves a pipeline stage without layers")
            return out
        if self.layers_per_stage:
            if len(self.layers_per_stage) != self.pp:
                out.append(f"layers_per_stage has {len(self.layers_per_stage)} entries, "
                           f"expected pp({self.pp})")
            elif sum(self.layers_per_stage) != layers:
                out.append(f"layers_per_stage sums to {sum(self.layers_per_stage)}, expected "
                           f"num_layers({layers})")
            elif any(n < 0 for n in self.layers_per_stage):
                out.append("layers_per_stage entries must be >= 0")
            elif self.vpp > 1 and min(self.layers_per_stage) < self.vpp:
                out.append(f"each layers_per_stage entry must be >= vpp({self.vpp}): every "
                           "virtual chunk needs a layer")
            return out
        if layers < self.pp:
            out.append(f"num_layers({layers}) < pp({self.pp}): a stage would have no layers")
        elif self.vocab_strategy is VocabStrategy.REDISTRIBUTE:
            if layers + 2 < self.pp * self.vpp:
                out.append(f"num_layers({layers}) + 2 < pp({self.pp}) * vpp({self.vpp})")
        elif layers % (self.pp * self.vpp):
            what = f"pp({self.pp})" if self.vpp == 1 else f"pp({self.pp}) * vpp({self.vpp})"
            out.append(f"num_layers({layers}) must be divisible by {what}; give "
                       "layers_per_stage for an uneven split, or --vocab-strategy redistribute")
        return out


def even_split(total: int, parts: int) -> tuple[int, ...]:
    """Split `total` into `parts` contiguous counts differing by at most one (larger first)."""
    base, extra = divmod(total, parts)
    return tuple(base + (1 if i < extra else 0) for i in range(parts))


def stage_chunks(model: ModelSpec, cfg: ParallelConfig) -> tuple[tuple[tuple[int, ...], ...], ...]:
    """Transformer layer indices of each virtual chunk of each pipeline stage:
    result[stage][chunk] (chunk c of stage s is model chunk c * pp + s, Megatron's order).

    - explicit `layers_per_chunk`: those counts, chunk k on stage k % pp;
    - explicit `layers_per_stage`: contiguous blocks in stage order, each stage's count split
      evenly over its chunks;
    - baseline / vocab-parallel: L / (pp * vpp) layers per chunk;
    - redistribute: the embedding and the loss each count as one layer when splitting, as
      Megatron's --account-for-embedding-in-pipeline-split / --account-for-loss-in-pipeline-split
      do, so the first and last chunks get one transformer layer fewer.
    """
    return _stage_chunks(model.num_layers, cfg.pp, cfg.vpp, cfg.layers_per_chunk,
                         cfg.layers_per_stage, cfg.vocab_strategy is VocabStrategy.REDISTRIBUTE)


@functools.lru_cache(maxsize=1 << 12)
def _stage_chunks(num_layers: int, pp: int, vpp: int, layers_per_chunk: tuple[int, ...],
                  layers_per_stage: tuple[int, ...], redistribute: bool
                  ) -> tuple[tuple[tuple[int, ...], ...], ...]:
    """stage_chunks, memoised on what it reads (every cost and memory question asks it)."""
    if layers_per_chunk:
        counts = list(layers_per_chunk)
    elif layers_per_stage:
        per_chunk = [even_split(n, vpp) for n in layers_per_stage]
        counts = [per_chunk[s][c] for c in range(vpp) for s in range(pp)]
    elif redistribute and pp > 1:
        counts = list(even_split(num_layers + 2, pp * vpp))
        counts[0] -= 1  # the embedding's share
        counts[-1] -= 1  # the loss's share
        if min(counts) < 0:
            counts = list(even_split(num_layers, pp * vpp))
    else:
        counts = list(even_split(num_layers, pp * vpp))
    chunks: list[list[tuple[int, ...]]] = [[] for _ in range(pp)]
    start = 0
    for k, n in enumerate(counts):  # model chunk k lives on stage k % pp
        chunks[k % pp].append(tuple(range(start, start + n)))
        start += n
    return tuple(tuple(stage) for stage in chunks)


def stage_layers(model: ModelSpec, cfg: ParallelConfig) -> tuple[tuple[int, ...], ...]:
    """Transformer layer indices held by each pipeline stage (all its virtual chunks)."""
    return tuple(tuple(layer for chunk in stage for layer in chunk)
                 for stage in stage_chunks(model, cfg))


def in_flight_microbatches(cfg: ParallelConfig, stage: int) -> float:
    """Micro-batches whose activations stage `stage` holds at its peak, in layers-of-the-stage
    equivalents (so memory = this * per-micro-batch activations of the whole stage).

    1F1B: stage i holds min(pp - i, m) (Narayanan et al. 2021, Sec. 2.2.1). Interleaved with v
    chunks: Megatron runs (pp - i - 1) * 2 + (v - 1) * g warm-up chunk forwards on rank i, g the
    micro-batch group (default pp) (schedules.py, forward_backward_pipelining_with_interleaving),
    plus the one in flight, capped at m*v chunks; each chunk is 1/v of the stage's layers. For
    stage 0 this is the (1 + (p-1)/(p*v)) factor of Korthikanti et al. 2022, Sec. 4.2.3.
    moe_a2a_overlap holds about one layer more (memory.stage_activation_bytes): its warm-up
    runs one more chunk forward, and its combined steps run a forward beside a backward layer
    by layer instead of the 1F1B step's forward then backward.
    """
    m = cfg.num_microbatches
    if cfg.pp == 1:
        return 1.0
    if cfg.vpp == 1:
        return float(min(cfg.pp - stage, m))
    chunks = _warmup_forwards(cfg.pp, cfg.vpp, cfg.group_size, stage) + 1
    return min(chunks, m * cfg.vpp) / cfg.vpp


def live_chunk_passes(cfg: ParallelConfig, stage: int) -> tuple[tuple[int, ...], ...]:
    """The micro-batches of each virtual chunk whose activations stage `stage` holds, at each
    moment of its schedule where that sum can peak (after a forward, before the backward that
    follows it): one tuple of per-chunk counts per distinct moment, chunk 0 first.

    Megatron's interleaved 1F1B (schedules.py forward_backward_pipelining_with_interleaving,
    get_model_chunk_id): rank i runs w = (pp - i - 1) * 2 + (v - 1) * g warm-up forwards, then
    forward w + k and backward k alternately; forward k is of chunk (k // g) mod v, backward k
    of chunk v - 1 - (k // g) mod v, g the micro-batch group. The sum is always w + 1 (the
    in_flight_microbatches count), but which chunks hold it changes, which matters when chunks
    hold unequal layers (uneven splits, the embedding or loss counted as a layer, MTP on the
    last chunk). The pattern repeats every g * v steps. 1F1B without interleaving:
    min(pp - i, m) micro-batches of the one chunk."""
    m = cfg.num_microbatches
    if cfg.pp == 1:
        return ((1,),)
    if cfg.vpp == 1:
        return ((min(cfg.pp - stage, m),),)
    return _live_chunk_passes(cfg.pp, cfg.vpp, cfg.group_size, m, stage)


@functools.lru_cache(maxsize=4096)
def _live_chunk_passes(pp: int, vpp: int, group: int, m: int,
                       stage: int) -> tuple[tuple[int, ...], ...]:
    total = m * vpp

    def chunk_of(k: int) -> int:  # forward k's chunk; backward k's is vpp - 1 - this
        return (k // group) % vpp

    warmup = min(_warmup_forwards(pp, vpp, group, stage), total)
    live = [0] * vpp
    for k in range(warmup):
        live[chunk_of(k)] += 1
    if warmup == total:  # every forward runs before the first backward
        return (tuple(live),)
    moments = set()
    for k in range(min(total - warmup, group * vpp)):  # the pattern repeats every g * v
        live[chunk_of(warmup + k)] += 1
        moments.add(tuple(live))
        live[vpp - 1 - chunk_of(k)] -= 1
    return tuple(sorted(moments))


def _warmup_forwards(pp: int, vpp: int, group: int, stage: int) -> int:
    """Chunk forwards rank `stage` runs before its first backward in Megatron's interleaved
    schedule: (pp - i - 1) * 2 + (v - 1) * g (schedules.py get_pp_rank_microbatches)."""
    return (pp - stage - 1) * 2 + (vpp - 1) * group


def interleaved_warmup(cfg: ParallelConfig, stage: int) -> int:
    """Chunk forwards stage `stage` runs before its first backward in Megatron's interleaved
    schedule (_warmup_forwards), one more with moe_a2a_overlap so that forward and backward
    steps stay independent."""
    warmup = _warmup_forwards(cfg.pp, cfg.vpp, cfg.group_size, stage)
    return warmup + (1 if cfg.moe_a2a_overlap else 0)


def torchtitan_layers_per_stage(effective_layers: int, stages: int) -> int | None:
    """torchtitan 0.3.0 derives its virtual stage count from pipeline_parallel_layers_per_stage
    as ceil(effective layers / per stage) (torchtitan/distributed/pipeline_parallel.py): the
    per-stage value that gives exactly `stages`, or None when none does."""
    per_stage = -(-effective_layers // stages)
    return per_stage if -(-effective_layers // per_stage) == stages else None


def dropout_masks(model: ModelSpec, cfg: ParallelConfig) -> tuple[bool, bool]:
    """(residual, attention-probability) dropout masks stored for backward: only where the
    probability is above 0 (PyTorch's dropout returns its input unchanged for p = 0, ATen
    native/Dropout.cpp, so nothing is saved), and never with torchtitan, whose models have no
    dropout layers (torchtitan models/llama3/model.py)."""
    if cfg.framework is Framework.TORCHTITAN:
        return False, False
    return model.hidden_dropout > 0, model.attention_dropout > 0


def tp_gathers_in_fp8(cfg: ParallelConfig) -> bool:
    """Whether the sequence-parallel all-gathers move fp8 (the reduce-scatters stay 16-bit):
    fp8 training with tensor and sequence parallelism gathers the linears' quantized inputs.
    - Megatron's Transformer Engine linears (module/linear.py and layernorm_linear.py: with
      sequence parallelism the input, or the norm's output, is quantized before
      gather_along_first_dim; the backward's gathers take the gradient's and the input's
      quantizers alike; per-tensor scaling, the recipe this planner prices: block scaling
      gathers in high precision).
    - torchtitan's tensor-wise Float8 linears run torchao's float8 TP (torchtitan
      docs/float8.md: float8 all-gather for TP by default with Float8Linear; torchao
      float8/float8_tensor_parallel.py: Float8ColwiseParallel casts its input to float8 before
      the all-gather, Float8RowwiseParallel casts the output's gradient to float8 before the
      backward's). Tensor-wise scaling, the fp8 this planner prices for torchtitan, is the
      releases before 0.3.0: 0.3.0's Float8LinearConverter offers row-wise recipes only
      (components/quantization/float8.py), whose TP gathers bf16, and its emitter writes no
      fp8.
    Layers fp8 training keeps in bf16 gather 16-bit (ParallelConfig.layer_config); MoE
    dispatchers move 16-bit tokens."""
    return (cfg.framework in (Framework.MEGATRON, Framework.TORCHTITAN) and cfg.tp > 1
            and cfg.sequence_parallel and cfg.precision is Precision.FP8)


def torchtitan_loss_parallel(cfg: ParallelConfig) -> bool:
    """Whether torchtitan's loss runs vocabulary-parallel: with tensor parallelism its LM head
    leaves the logits sharded over the vocabulary and the cross entropy reduces across the TP
    ranks (torchtitan's default, parallelism.disable_loss_parallel false: PyTorch's
    loss_parallel before 0.3.0, its own _LossParallelCrossEntropy in components/loss.py)."""
    return cfg.framework is Framework.TORCHTITAN and cfg.tp > 1


def torchtitan_compiled_loss(cfg: ParallelConfig) -> bool:
    """Whether the job's loss runs compiled: torchtitan with torch.compile and a release
    that compiles the loss (ParallelConfig.compiled_loss)."""
    return cfg.framework is Framework.TORCHTITAN and not cfg.eager and cfg.compiled_loss


def recomputed_modules(cfg: ParallelConfig, recompute: Recompute) -> frozenset[str]:
    """The submodules a layer under `recompute` recomputes: Megatron's selective recompute
    its recompute_modules (parallel.RECOMPUTE_MODULES), other frameworks' core attention
    (torchtitan's op-level checkpointing is priced apart), none otherwise."""
    if recompute is not Recompute.SELECTIVE:
        return frozenset()
    if cfg.framework is Framework.MEGATRON:
        return frozenset(cfg.recompute_modules)
    return frozenset({"core_attn"})


@dataclass(frozen=True, slots=True, kw_only=True)
class LayerReruns:
    """What selective recompute reruns of one layer (recomputed_modules mapped onto the
    layer's kind: dense or MoE, with or without multi-latent attention), the one description
    that memory (what it drops), compute (the forward work it repeats), FLOPs and the step
    (the collectives a checkpointed block runs again) read.
    Megatron-Core: transformer_layer.py, attention.py, multi_latent_attention.py,
    moe/experts.py, moe/moe_layer.py.

    Attributes:
        attention_core: core_attn, the attention core (its s x s part).
        input_norm: layernorm on an MLA layer, whose input norm is a module of its own.
        pre_mlp_norm: layernorm on an MoE layer, whose pre-MLP norm is a module of its own.
        up_projections: mla_up_proj, the query and key/value up-projections of MLA.
        dense_mlp: mlp on a dense layer, the whole MLP but its input.
        moe_block: moe on an MoE layer: router, routed and shared experts, permutes (its
            argument, the pre-MLP norm's output, stays).
        shared_experts: shared_experts on an MoE layer whose block is not checkpointed.
        expert_activation: moe_act on an MoE layer whose block is not checkpointed.
    """

    attention_core: bool = False
    input_norm: bool = False
    pre_mlp_norm: bool = False
    up_projections: bool = False
    dense_mlp: bool = False
    moe_block: bool = False
    shared_experts: bool = False
    expert_activation: bool = False


def layer_reruns(model: ModelSpec, cfg: ParallelConfig, layer: int,
                 recompute: Recompute = Recompute.SELECTIVE) -> LayerReruns:
    """LayerReruns of `layer` under `recompute` (nothing outside selective recompute)."""
    modules = recomputed_modules(cfg, recompute)
    if not modules:
        return LayerReruns()
    moe_layer = model.is_moe_layer(layer)
    mla = model.mla is not None
    moe_block = moe_layer and "moe" in modules
    return LayerReruns(
        attention_core="core_attn" in modules,
        input_norm="layernorm" in modules and mla,
        pre_mlp_norm="layernorm" in modules and moe_layer,
        up_projections="mla_up_proj" in modules and mla,
        dense_mlp="mlp" in modules and not moe_layer,
        moe_block=moe_block,
        shared_experts="shared_experts" in modules and moe_layer and not moe_block,
        expert_activation="moe_act" in modules and moe_layer and not moe_block)


def op_by_op_rms_norm(model: ModelSpec, cfg: ParallelConfig) -> bool:
    """Whether the model's RMSNorms run as separate kernels: eager torchtitan without a fused
    rms_norm (ParallelConfig.fused_rms_norm). LayerNorm is one kernel everywhere."""
    return (cfg.eager and not cfg.fused_rms_norm and cfg.framework is Framework.TORCHTITAN
            and model.norm is Norm.RMSNORM)


def torchtitan_linears(model: ModelSpec, cfg: ParallelConfig,
                       layer: int) -> tuple[Projection, ...] | None:
    """The linears of one torchtitan dense block in call order: 0.3.0's wqkv, wo, w1, w3, w2
    (models/common GQAttention with fuse_qkv, as its Llama 3 presets build it), or before it
    (ParallelConfig.legacy_attention) wq, wk, wv, wo, w1, w3, w2 (models/llama3/model.py); w1,
    w2 without a gate; the gated FC1 stays two modules where Megatron fuses it. None for MoE
    and multi-latent attention layers (their GEMMs are ModelSpec's projections, and op-level
    SAC is priced as not checkpointing them, in memory and time alike).

    For op-level selective activation checkpointing, torchtitan's policy
    (distributed/activation_checkpoint.py `_custom_policy`, the mm-count policy of its
    2024-2025 releases and of 0.3.0) saves the outputs of the ops in its save list (aten.mm,
    the attention kernels, reduce_scatter, max) except every second aten.mm, counted per
    block (0.3.0: wqkv, w1 and w2 saved, wo and w3 rerun), and
    recomputes everything else in backward. Each of the linears is one aten.mm (torchao's
    float8 linears too: the policy's dispatch mode sees aten.mm on the Float8 tensors before
    they run _scaled_mm, which is why the 2412 benchmark's fp8 run keeps the bf16 run's
    memory, 76.8 vs 77.0 GiB); op_sac_saved_linears and op_sac_recomputed_linears split
    them."""
    if model.is_moe_layer(layer) or model.mla is not None:
        return None
    h = model.hidden_size
    f = model.ffn_hidden_size
    up = (Projection(h, f, "column"),) * (2 if model.activation.gated else 1)
    if cfg.legacy_attention:
        qkv: tuple[Projection, ...] = (Projection(h, model.q_width, "column"),
                                       Projection(h, model.kv_width, "column"),
                                       Projection(h, model.kv_width, "column"))
    else:
        qkv = (Projection(h, model.q_width + 2 * model.kv_width, "column"),)
    return (*qkv, Projection(model.attn_out_width, h, "row"), *up, Projection(f, h, "row"))


def cp_gathers_kv(cfg: ParallelConfig) -> bool:
    """Whether context parallelism all-gathers K and V rather than passing them round a ring:
    torchtitan 0.3.0's FlexAttention CP (not legacy_attention: torch/distributed/tensor/
    experimental/_context_parallel/_cp_custom_ops.py flex_cp_allgather gathers every rank's K
    and V before one attention call over the local queries, which saves them for its
    backward; the K/V gradients are reduce-scattered back). Transformer Engine's ring and
    torchtitan's SDPA ring before 0.3.0 pass K and V round instead."""
    return cfg.cp > 1 and cfg.framework is Framework.TORCHTITAN and not cfg.legacy_attention


def local_kv_elements(model: ModelSpec, cfg: ParallelConfig) -> float:
    """Elements of K plus V one GPU's attention holds for its micro-batch: s/cp x b tokens x
    2 x attention_kv_width / tp (what context parallelism exchanges and buffers)."""
    return cfg.seq_len / cfg.cp * cfg.mbs * 2 * attention_kv_width(model, cfg) / cfg.tp


def attention_kv_width(model: ModelSpec, cfg: ParallelConfig) -> int:
    """Width of K (and of V) as the attention kernel receives them, all heads (/ tp per GPU):
    q_width where torchtitan before 0.3.0 repeated the key/value heads to every query head
    (ParallelConfig.legacy_attention), so that under GQA its kernel read and saved the widened K
    and V and context parallelism exchanged them; kv_width otherwise (Megatron-Core /
    Transformer Engine and torchtitan 0.3.0 hand the kernel the groups as they are, as does
    multi-latent attention)."""
    if cfg.legacy_attention and cfg.framework is Framework.TORCHTITAN and model.mla is None:
        return model.q_width
    return model.kv_width


def op_sac_saved_linears(linears: tuple[Projection, ...]) -> tuple[Projection, ...]:
    """The linears whose outputs op-level SAC keeps: the 1st, 3rd, 5th, ... (torchtitan_linears)."""
    return linears[0::2]


def op_sac_recomputed_linears(linears: tuple[Projection, ...]) -> tuple[Projection, ...]:
    """The linears op-level SAC runs again in backward: the 2nd, 4th, ... but not the last
    (torchtitan_linears). The block's output is not needed by its own backward, and PyTorch's
    non-reentrant checkpoint stops recomputing once every tensor backward needs exists
    (torch.utils.checkpoint, early stop on by default), before the last linear. What else
    the recompute reruns: the block's element-wise work (norms, RoPE, the gate product) and
    its un-saved collectives (tensor-parallel all-gathers); the attention kernel is saved."""
    return tuple(p for i, p in enumerate(linears[:-1]) if i % 2 == 1)


# Key lengths the fused scale-mask-softmax kernel of Transformer Engine's unfused attention
# takes (FusedScaleMaskSoftmax.is_kernel_available, attention/dot_product_attention/
# softmax.py: 16 < sk < 16384, sk % 8 == 0); longer keys run PyTorch's softmax. The planner's
# unfused attention is Transformer Engine's (the Megatron launch it writes says
# --attention-backend unfused); Megatron-Core's own local-spec softmax
# (megatron/core/fusions/fused_softmax.py, 0.19.2) fuses only up to 4096 keys, which no
# validation case of the local spec exceeds.
FUSED_SOFTMAX_MAX_KEYS = 16384
