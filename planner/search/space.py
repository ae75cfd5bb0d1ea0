"""The search space: every parallel configuration worth scoring for a job on a cluster.

A degree given on the command line is fixed; the others range over the values that can run:
tp divides the attention heads and query groups (no fixed cap: the cost model judges how far
TP spreads beyond a node), pp leaves at least one layer per virtual chunk, cp splits the
sequence in 2*cp chunks, dp is what the world size leaves, ep divides the experts and fits in
tp*cp*dp, and the micro-batch divides the global batch per data-parallel replica. Recompute,
ZeRO (zero_stages: per framework), interleaving and the vocabulary placement complete it.
Sequence parallelism is on whenever tp > 1: it moves the same bytes as TP's all-reduce (as a
reduce-scatter plus an all-gather) and divides the norm and dropout activations by tp, so the
cost model never prefers it off.
Enumeration is in a fixed order, so ties break the same way on every run.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from planner.model import ModelSpec
from planner.parallel import (
    DEFAULT_RECOMPUTE_MODULES,
    AttentionKernel,
    Framework,
    ParallelConfig,
    Precision,
    Recompute,
    VocabStrategy,
    torchtitan_layers_per_stage,
)

# Megatron selective recompute the search adds for MoE models: core attention, the experts'
# activation and the norms that are modules of their own, as Megatron-Bridge's MoE recipes
# recompute (discarding outputs: the least recompute time for the memory they free).
MOE_RECOMPUTE_MODULES = ("core_attn", "moe_act", "layernorm")

# The settings a search keeps in every candidate as the user gave them (not searched): names
# of SearchSpec fields that are ParallelConfig fields of the same meaning.
FIXED_SETTINGS = ("precision", "framework", "attention_kernel", "fp8_param_gather",
                  "grad_reduce_in_bf16", "moe_a2a_overlap", "deterministic", "bf16_layers",
                  "eager", "fused_rms_norm", "compiled_loss", "legacy_attention",
                  "document_tokens", "gradient_accumulation_fusion", "recompute_modules")


@dataclass(frozen=True, slots=True, kw_only=True)
class SearchSpec:
    """What the user fixed (None = search it) and the job."""

    world_size: int
    global_batch: int
    seq_len: int
    precision: Precision = Precision.BF16
    framework: Framework = Framework.MEGATRON
    attention_kernel: AttentionKernel = AttentionKernel.AUTO
    tp: int | None = None
    pp: int | None = None
    dp: int | None = None
    cp: int | None = None
    ep: int | None = None
    vpp: int | None = None
    mbs: int | None = None
    recompute: Recompute | None = None
    zero: int | None = None
    vocab_strategy: VocabStrategy | None = None  # None = auto: every placement
    fp8_param_gather: bool = False  # kept in every candidate (ParallelConfig), not searched
    grad_reduce_in_bf16: bool = False
    moe_a2a_overlap: bool = False
    deterministic: bool = False
    bf16_layers: tuple[int, int] = (0, 0)
    eager: bool = False
    fused_rms_norm: bool = True
    compiled_loss: bool = True
    legacy_attention: bool = False
    document_tokens: int | None = None
    recompute_modules: tuple[str, ...] = DEFAULT_RECOMPUTE_MODULES  # Megatron's, selective
    gradient_accumulation_fusion: bool = True
    tp_comm_overlap: bool = False  # in every candidate with tp > 1 (it needs sequence parallel)
    max_mbs: int = 8
    max_vpp: int = 8

    def fixed(self) -> dict[str, Any]:
        """The FIXED_SETTINGS as ParallelConfig keyword arguments."""
        return {name: getattr(self, name) for name in FIXED_SETTINGS}

    def problem(self) -> str:
        """Why no candidate could take the fixed recipe flags ('' if they can): the
        degree-independent rules (ParallelConfig.recipe_problems) on the fixed settings."""
        modules = self.recompute_modules != DEFAULT_RECOMPUTE_MODULES
        if modules and self.recompute not in (None, Recompute.SELECTIVE):
            # a ParallelConfig ignores them under other modes; asked for both, say so
            return ("recompute_modules need Megatron's selective recompute (leave --recompute "
                    "unset or selective)")
        probe = ParallelConfig(
            zero=1 if self.zero is None else self.zero,
            # the candidates that would run the modules: selective ones
            recompute=Recompute.SELECTIVE if modules else self.recompute or Recompute.NONE,
            tp_comm_overlap=self.tp_comm_overlap, **self.fixed())
        problems = probe.recipe_problems()
        return problems[0] if problems else ""

    def recompute_modes(self) -> list[Recompute]:
        """The recompute modes to try, lightest compute first: the fixed one, or all of them
        (without full recompute under --moe-a2a-overlap, which Megatron refuses)."""
        if self.recompute is not None:
            return [self.recompute]
        return [r for r in Recompute if not (self.moe_a2a_overlap and r is Recompute.FULL)]

    def recompute_levels(self, model: ModelSpec) -> list[tuple[Recompute, tuple[str, ...]]]:
        """(mode, recompute_modules) to try, least recompute first: each mode with the given
        modules, and for a Megatron MoE model (grouped GEMM experts, bf16) without modules
        given, selective recompute of the expert activation and the norms as well
        (MOE_RECOMPUTE_MODULES; with MLA its up-projections too), which keeps less than core
        attention alone and recomputes less than the full layer."""
        levels = [(mode, self.recompute_modules) for mode in self.recompute_modes()]
        if (self.framework is Framework.MEGATRON and model.moe is not None
                and self.precision is Precision.BF16 and Recompute.SELECTIVE in
                self.recompute_modes() and self.recompute_modules == DEFAULT_RECOMPUTE_MODULES):
            extra = MOE_RECOMPUTE_MODULES + (("mla_up_proj",) if model.mla is not None else ())
            at = levels.index((Recompute.SELECTIVE, DEFAULT_RECOMPUTE_MODULES)) + 1
            levels.insert(at, (Recompute.SELECTIVE, extra))
        return levels


@dataclass(frozen=True, slots=True, kw_only=True)
class Degrees:
    """The parallel degrees and layout of one family of candidates: configurations that
    share them share their process groups and links."""

    tp: int
    pp: int
    cp: int
    dp: int
    ep: int
    etp: int | None
    vpp: int
    vocab_strategy: VocabStrategy


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _choose(fixed: int | None, values: list[int]) -> list[int]:
    return [fixed] if fixed is not None else values


def degree_families(model: ModelSpec, spec: SearchSpec) -> Iterator[Degrees]:
    """Every (tp, pp, cp, dp, ep, etp, vpp, vocab strategy) that can run the model."""
    world = spec.world_size
    heads = model.num_attention_heads
    groups = model.num_query_groups if model.mla is None else heads
    tp_values = [t for t in divisors(world) if heads % t == 0 and groups % t == 0]
    # plain DeepSpeed is ZeRO data parallelism (what the deepspeed launch target writes):
    # model-parallel degrees only when the user fixes them
    data_parallel_only = spec.framework is Framework.DEEPSPEED
    if data_parallel_only:
        tp_values = [1]
    for tp in _choose(spec.tp, tp_values):
        pp_values = [p for p in divisors(world // tp) if p <= model.num_layers]
        for pp in _choose(spec.pp, [1] if data_parallel_only else pp_values):
            rest = world // (tp * pp)
            cp_values = [c for c in divisors(rest) if spec.seq_len % (2 * c) == 0
                         and (c == 1 or spec.seq_len // c >= 1024)]
            if data_parallel_only:
                cp_values = [1]
            for cp in _choose(spec.cp, cp_values):
                if world % (tp * pp * cp):
                    continue
                dp = world // (tp * pp * cp)
                if spec.dp is not None and spec.dp != dp:
                    continue
                if spec.global_batch % dp:
                    continue
                yield from _expert_and_layout(model, spec, tp, pp, cp, dp)


def _expert_and_layout(model: ModelSpec, spec: SearchSpec, tp: int, pp: int, cp: int,
                       dp: int) -> Iterator[Degrees]:
    expert_options: list[tuple[int, int | None]] = [(1, None)]
    if model.moe is not None and spec.framework is Framework.DEEPSPEED and spec.ep is None:
        expert_options = [(1, None)]
    elif model.moe is not None:
        expert_options = []
        for ep in _choose(spec.ep, divisors(model.moe.num_experts)):
            for etp in sorted({1, tp}):
                if (tp * cp * dp) % (ep * etp) == 0 and model.moe.ffn_hidden_size % etp == 0:
                    expert_options.append((ep, None if etp == tp else etp))
    strategies = ([spec.vocab_strategy] if spec.vocab_strategy is not None
                  else list(VocabStrategy) if pp > 1 else [VocabStrategy.BASELINE])
    if spec.framework is Framework.TORCHTITAN and spec.vocab_strategy is None:
        # torchtitan splits by first/last-stage weights only: no vocabulary parallelism
        strategies = [v for v in strategies if v is not VocabStrategy.VOCAB_PARALLEL]
    for (expert_parallel, expert_tp), strategy in itertools.product(expert_options,
                                                                     strategies):
        vpp_values = [v for v in range(1, spec.max_vpp + 1) if pp > 1 or v == 1]
        for vpp in _choose(spec.vpp, vpp_values):
            units = model.num_layers + (2 if strategy is VocabStrategy.REDISTRIBUTE else 0)
            if strategy is not VocabStrategy.REDISTRIBUTE and model.num_layers % (pp * vpp):
                continue
            if strategy is VocabStrategy.REDISTRIBUTE and units < pp * vpp + 2:
                continue
            if (spec.framework is Framework.TORCHTITAN and vpp > 2
                    and torchtitan_layers_per_stage(units, pp * vpp) is None):
                continue  # torchtitan cannot make this many virtual stages of these layers
            yield Degrees(tp=tp, pp=pp, cp=cp, dp=dp, ep=expert_parallel, etp=expert_tp,
                          vpp=vpp, vocab_strategy=strategy)


def variants(family: Degrees, spec: SearchSpec, model: ModelSpec) -> Iterator[ParallelConfig]:
    """The configurations of one family: micro-batch, recompute (SearchSpec.recompute_levels
    for `model`) and ZeRO."""
    per_replica = spec.global_batch // family.dp
    mbs_values = [b for b in divisors(per_replica) if b <= spec.max_mbs]
    zero_values = zero_stages(family, spec)
    levels = spec.recompute_levels(model)
    fixed = {k: v for k, v in spec.fixed().items() if k != "recompute_modules"}
    for mbs in _choose(spec.mbs, mbs_values):  # recompute from lightest compute to heaviest:
        for recompute, modules in levels:  # the solver relies on this order
            for zero in _choose(spec.zero, zero_values):
                yield ParallelConfig(
                    tp=family.tp, pp=family.pp, dp=family.dp, cp=family.cp, ep=family.ep,
                    etp=family.etp, vpp=family.vpp, mbs=mbs, global_batch=spec.global_batch,
                    seq_len=spec.seq_len, recompute=recompute, recompute_modules=modules,
                    zero=zero, sequence_parallel=family.tp > 1,
                    vocab_strategy=family.vocab_strategy,
                    tp_comm_overlap=spec.tp_comm_overlap and family.tp > 1, **fixed)


def zero_stages(family: Degrees, spec: SearchSpec) -> list[int]:
    """ZeRO stages worth trying: none without data parallelism; with it 0 and 1 (Megatron's
    distributed optimizer) for Megatron-LM; 0, 2 and 3 for torchtitan (FSDP; it has no
    optimizer-only sharding; with a pipeline 0 and 3, as its FSDP then keeps the stage's
    parameters unsharded: ParallelConfig.fsdp_keeps_params) and 0-3 for DeepSpeed, 2 and 3
    only without a pipeline (sharded gradients and the micro-batches a pipeline accumulates do
    not mix: ParallelConfig.problems). With --fp8-param-gather only the distributed optimizer
    (Megatron keeps fp8 parameters only with it or FSDP, and FSDP is not proposed unasked).

    Megatron FSDP (2/3) is not proposed unasked: the ZeRO-3 step-time model is its least
    accurate part (`planner validate`: DeepSpeed ZeRO-3 runs predicted about 56% too fast), so
    letting it win the search would trust the weakest estimate; `--zero 3` still plans it."""
    if spec.fp8_param_gather:  # Megatron keeps fp8 parameters only with its optimizer
        return [1]
    if family.dp * family.cp == 1:
        return [0]
    if spec.framework is Framework.MEGATRON:
        return [0, 1]
    if spec.framework is Framework.TORCHTITAN:  # with a pipeline FSDP keeps parameters: 2 = 3
        return [0, 2, 3] if family.pp == 1 else [0, 3]
    return [0, 1, 2, 3] if family.pp == 1 else [0, 1]


def lightest_variants(family: Degrees, spec: SearchSpec) -> list[ParallelConfig]:
    """The family's lightest configurations: micro-batch 1 (or the fixed one), full recompute
    unless fixed, and each ZeRO stage that shards the most (1 and, without a pipeline, 3:
    ZeRO-3's gathered-layer buffers make it not always lighter than 1 for tiny models). If
    none fits, no configuration of the family does."""
    if spec.zero is not None:
        return [lightest(family, spec)]
    sharded = [z for z in zero_stages(family, spec) if z in (1, 3)] or [0]
    return [dataclasses.replace(lightest(family, spec), zero=z) for z in sharded]


def lightest(family: Degrees, spec: SearchSpec) -> ParallelConfig:
    """The family's configuration with the least memory: micro-batch 1 (or the fixed one),
    the heaviest recompute allowed unless fixed (full; selective under --moe-a2a-overlap), and
    the distributed optimizer when there is data parallelism. If it does not fit, no
    configuration of the family does."""
    return ParallelConfig(
        tp=family.tp, pp=family.pp, dp=family.dp, cp=family.cp, ep=family.ep, etp=family.etp,
        vpp=family.vpp, mbs=spec.mbs or 1, global_batch=spec.global_batch,
        seq_len=spec.seq_len, recompute=spec.recompute or spec.recompute_modes()[-1],
        zero=spec.zero if spec.zero is not None else (
            1 if family.dp * family.cp > 1 or spec.fp8_param_gather else 0),
        sequence_parallel=family.tp > 1, vocab_strategy=family.vocab_strategy,
        tp_comm_overlap=spec.tp_comm_overlap and family.tp > 1, **spec.fixed())
