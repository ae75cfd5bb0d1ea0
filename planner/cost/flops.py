"""FLOPs per transformer layer and per pass, and the model FLOPs of a training step.

Convention (DESIGN.md): 2 FLOPs per multiply-add; model FLOPs count forward + backward (the
backward of a matmul is two matmuls of the forward's size: 3 passes), full s^2 attention (no
causal halving), logits included, no recompute. For a GPT this is Narayanan et al. 2021
(arXiv 2104.04473) Sec. 5.1 without the recompute pass, = Korthikanti et al. 2022 Sec. 6.1:
72*B*L*s*h^2*(1 + s/(6h) + V/(12hL)). Hardware FLOPs (HFU) add what recompute runs again.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from planner.model import ModelSpec
from planner.parallel import (
    Framework,
    ParallelConfig,
    Recompute,
    layer_reruns,
    op_sac_recomputed_linears,
    stage_chunks,
    torchtitan_linears,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class LayerFlops:
    """Forward FLOPs of one transformer layer for `tokens` tokens of sequences of length s.

    Attributes:
        gemm: the projections and MLP / expert matmuls.
        attention: the score (Q K^T) and context (P V) matmuls over the full s x s.
        router: the MoE gate matmul.
    """

    gemm: float
    attention: float
    router: float

    @property
    def total(self) -> float:
        return self.gemm + self.attention + self.router


def attention_projection_flops(model: ModelSpec, tokens: float) -> float:
    """Q, K, V and output projections (MLA: down- and up-projections): 2 FLOPs per weight per
    token (ModelSpec.attention_projections)."""
    return 2.0 * tokens * sum(p.in_dim * p.out_dim for p in model.attention_projections())


def attention_core_flops(model: ModelSpec, tokens: float, seq_len: int) -> float:
    """Q K^T and P V over the full s x s score matrix: 2 * tokens * s * heads * (d_qk + d_v).
    GQA does not change it (every query head attends)."""
    heads = model.num_attention_heads
    if model.mla is not None:
        per_head = model.mla.qk_head_dim + model.mla.v_head_dim
    else:
        per_head = 2 * model.head_dim
    return 2.0 * tokens * seq_len * heads * per_head


def mlp_flops(model: ModelSpec, tokens: float, ffn_hidden_size: int) -> float:
    """One MLP (or expert) on `tokens` tokens (ModelSpec.mlp_projections)."""
    return 2.0 * tokens * sum(p.in_dim * p.out_dim
                              for p in model.mlp_projections(ffn_hidden_size))


def layer_flops(model: ModelSpec, layer: int, tokens: float, seq_len: int) -> LayerFlops:
    """Forward FLOPs of transformer layer `layer` for `tokens` tokens (each token routed to
    top_k experts in MoE layers, plus the shared experts)."""
    gemm = attention_projection_flops(model, tokens)
    router = 0.0
    if model.is_moe_layer(layer):
        moe = model.moe
        assert moe is not None
        gemm += moe.top_k * mlp_flops(model, tokens, moe.ffn_hidden_size)
        if moe.shared_width:
            gemm += mlp_flops(model, tokens, moe.shared_width)
        router = 2.0 * tokens * model.hidden_size * moe.num_experts
    else:
        gemm += mlp_flops(model, tokens, model.ffn_hidden_size)
    return LayerFlops(gemm=gemm, attention=attention_core_flops(model, tokens, seq_len),
                      router=router)


def logits_flops(model: ModelSpec, tokens: float) -> float:
    """The LM head: 2 * tokens * h * V (per MTP depth once more)."""
    return 2.0 * tokens * model.hidden_size * model.vocab_size


def model_flops_per_step(model: ModelSpec, cfg: ParallelConfig) -> float:
    """Model FLOPs of one optimizer step over the whole job (DESIGN.md convention): 3 x the
    forward of every layer and of the LM head, for global_batch * seq_len tokens. MTP modules
    are not counted, as authors report the main model."""
    tokens = float(cfg.global_batch * cfg.seq_len)
    moe_layers = model.num_moe_layers
    forward = 0.0
    first = model.first_layer_of_kind()
    for is_moe, count in ((True, moe_layers), (False, model.num_layers - moe_layers)):
        if count:  # layers of one kind have the same FLOPs
            forward += count * layer_flops(model, first[is_moe], tokens, cfg.seq_len).total
    forward += logits_flops(model, tokens)
    return 3.0 * forward


def op_sac_recompute_flops(model: ModelSpec, cfg: ParallelConfig, layer: int,
                           tokens: float) -> float:
    """Forward FLOPs torchtitan's op-level selective checkpointing runs again in one layer
    for `tokens` tokens: 2 per weight per token of each linear it recomputes
    (parallel.op_sac_recomputed_linears; none where op SAC is not modelled)."""
    linears = torchtitan_linears(model, cfg, layer)
    if linears is None:
        return 0.0
    return 2.0 * tokens * sum(p.in_dim * p.out_dim for p in op_sac_recomputed_linears(linears))


def module_recompute_flops(model: ModelSpec, cfg: ParallelConfig, layer: int,
                           tokens: float) -> float:
    """Forward FLOPs Megatron's selective recompute runs again in one layer for `tokens`
    tokens, by what its modules rerun (parallel.layer_reruns; other frameworks: core
    attention): the attention core; MLA's query and key/value up-projections; a dense MLP;
    an MoE block's router, routed and shared experts; or the shared experts alone. The
    expert activation and the norms are element-wise work only."""
    reruns = layer_reruns(model, cfg, layer)
    lf = layer_flops(model, layer, tokens, cfg.seq_len)
    flops = lf.attention if reruns.attention_core else 0.0
    if reruns.up_projections:
        flops += 2.0 * tokens * sum(p.in_dim * p.out_dim for p in model.attention_projections()
                                    if p.split == "column")
    mlp = lf.gemm - attention_projection_flops(model, tokens)
    moe = model.moe
    if reruns.dense_mlp:
        flops += mlp
    elif reruns.moe_block:
        flops += mlp + lf.router
    elif reruns.shared_experts and moe is not None and moe.shared_width:
        flops += mlp_flops(model, tokens, moe.shared_width)
    return flops


def hardware_flops_per_step(model: ModelSpec, cfg: ParallelConfig) -> float:
    """Model FLOPs plus what recompute runs again: full recompute repeats each recomputed
    layer's forward, Megatron's selective recompute its modules' (module_recompute_flops:
    by default the attention core's), torchtitan's op-level one the linears it does not save
    (op_sac_recompute_flops). (Korthikanti et
    al. 2022 Sec. 6.1 write 72BLsh^2(1 + s/(3h) + V/(12hL)) for selective recompute, which
    counts the attention term three times over; their HFU figures use that formula.)"""
    tokens = float(cfg.global_batch * cfg.seq_len)
    flops = model_flops_per_step(model, cfg)
    if cfg.recompute is Recompute.NONE:
        return flops
    # layers of one kind (dense or MoE) under one recompute mode repeat the same FLOPs
    first_of_kind = model.first_layer_of_kind()
    kinds: Counter[tuple[int, Recompute]] = Counter()
    for stage in stage_chunks(model, cfg):
        for chunk in stage:
            for (is_moe, _, mode), count in cfg.chunk_layer_runs(model, chunk):
                kinds[(first_of_kind[is_moe], mode)] += count
    for (layer, mode), count in sorted(kinds.items()):
        lf = layer_flops(model, layer, tokens, cfg.seq_len)
        if mode is Recompute.SELECTIVE and cfg.framework is Framework.TORCHTITAN:
            flops += op_sac_recompute_flops(model, cfg, layer, tokens) * count
        elif mode is Recompute.SELECTIVE:
            flops += module_recompute_flops(model, cfg, layer, tokens) * count
        elif mode is Recompute.FULL:
            flops += lf.total * count
    return flops
