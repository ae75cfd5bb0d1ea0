"""What is trained: the model description and its exact parameter counts.

One `ModelSpec` covers GPT (GeLU, LayerNorm, learned positions), Llama-style (SwiGLU, RMSNorm,
GQA, untied embeddings), squared-ReLU MLPs (Nemotron-4), MoE (routed + shared experts, top-k,
first-k dense layers, layer frequency), DeepSeek MLA attention and multi-token-prediction layers.

Parameter counts follow the module structure of Megatron-Core's `GPTModel` (and the Hugging Face
implementations for the same architectures); for a GPT they reduce to the closed form of
Narayanan et al. 2021 (arXiv 2104.04473), Sec. 5.1: P = 12*l*h^2*(1 + 13/(12h) + (V+s)/(12lh)),
plus the 2h of the final LayerNorm.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from planner.units import ceil_div


class Activation(enum.StrEnum):
    """MLP activation; the value is the YAML spelling."""

    GELU = "gelu"
    SWIGLU = "swiglu"
    SQUARED_RELU = "squared_relu"

    @property
    def gated(self) -> bool:
        """Gated MLPs (SwiGLU) have two input projections of width ffn."""
        return self is Activation.SWIGLU


class Norm(enum.StrEnum):
    """Normalization layer; LayerNorm has weight and bias, RMSNorm only a weight."""

    LAYERNORM = "layernorm"
    RMSNORM = "rmsnorm"


class PositionEmbedding(enum.StrEnum):
    """Learned absolute positions add s*h parameters; the others add none."""

    LEARNED = "learned"
    ROPE = "rope"
    ALIBI = "alibi"
    NONE = "none"


@dataclass(frozen=True, slots=True, kw_only=True)
class MlaSpec:
    """DeepSeek multi-head latent attention (DeepSeek-V2 paper, arXiv 2405.04434, Sec. 2.1).

    Attributes:
        q_lora_rank: rank of the query compression; None means queries are not compressed.
        kv_lora_rank: rank of the joint key/value compression (d_c).
        qk_nope_head_dim: per-head query/key width without rotary embedding.
        qk_rope_head_dim: per-head width of the decoupled rotary part (shared key).
        v_head_dim: per-head value width.
    """

    q_lora_rank: int | None
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim


@dataclass(frozen=True, slots=True, kw_only=True)
class MoeSpec:
    """Mixture of experts in the MLP of some layers.

    Attributes:
        num_experts: routed experts per MoE layer.
        top_k: routed experts each token visits.
        ffn_hidden_size: hidden width of one routed expert.
        num_shared_experts: always-active experts (DeepSeek); 0 for Mixtral / Qwen3-MoE.
        shared_ffn_hidden_size: total hidden width of the shared experts; default
            num_shared_experts * ffn_hidden_size (DeepSeek's convention).
        first_dense_layers: the first k layers keep a dense MLP (DeepSeek `first_k_dense_replace`).
        layer_freq: every layer_freq-th layer is MoE (Megatron `--moe-layer-freq`).
        capacity_factor: token capacity per expert (None = dropless, Megatron's default).
    """

    num_experts: int
    top_k: int
    ffn_hidden_size: int
    num_shared_experts: int = 0
    shared_ffn_hidden_size: int | None = None
    first_dense_layers: int = 0
    layer_freq: int = 1
    capacity_factor: float | None = None

    @property
    def shared_width(self) -> int:
        if self.shared_ffn_hidden_size is not None:
            return self.shared_ffn_hidden_size
        return self.num_shared_experts * self.ffn_hidden_size


@dataclass(frozen=True, slots=True)
class Projection:
    """One weight matrix of a layer, in_dim x out_dim, and how tensor parallelism splits it
    (Megatron-LM): "column" divides out_dim, "row" divides in_dim, "replicated" neither.
    Parameter counts, FLOPs and the sharded GEMMs of the cost model all derive from these."""

    in_dim: int
    out_dim: int
    split: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ParamCounts:
    """Parameter counts of one model, split the way the memory estimator needs them.

    Attributes:
        total: every parameter of the main model (MTP modules excluded, as authors publish).
        active: parameters a token passes through (top_k of the routed experts).
        embedding: input embedding (+ learned positions, + embedding norm).
        output_head: LM head; 0 when tied to the embedding.
        final_norm: final normalization before the LM head.
        per_layer_dense: per layer, parameters replicated over expert-parallel ranks.
        per_layer_expert: per layer, routed-expert parameters (sharded over EP x expert-TP).
        mtp: all multi-token-prediction modules together (embedding and head shared).
        mtp_expert: the routed-expert part of `mtp` (sharded like other expert weights).
    """

    total: int
    active: int
    embedding: int
    output_head: int
    final_norm: int
    per_layer_dense: tuple[int, ...]
    per_layer_expert: tuple[int, ...]
    mtp: int
    mtp_expert: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelSpec:
    """A decoder-only transformer.

    Attributes follow Megatron-LM's argument names (`--num-query-groups`, `--kv-channels`, ...).
    `head_dim` defaults to hidden_size / num_attention_heads (Megatron `--kv-channels`).
    """

    name: str
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_query_groups: int
    ffn_hidden_size: int
    vocab_size: int
    activation: Activation
    norm: Norm
    position_embedding: PositionEmbedding
    max_position_embeddings: int
    tie_embeddings: bool
    add_bias_linear: bool
    head_dim: int
    qk_layernorm: bool = False
    qkv_bias: bool = False
    embedding_layernorm: bool = False
    mla: MlaSpec | None = None
    moe: MoeSpec | None = None
    num_mtp_layers: int = 0
    hidden_dropout: float = 0.0
    attention_dropout: float = 0.0
    source: str = ""
    params: ParamCounts = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        problems = []
        for key in ("num_layers", "hidden_size", "num_attention_heads", "num_query_groups",
                    "ffn_hidden_size", "vocab_size", "head_dim", "max_position_embeddings"):
            if getattr(self, key) < 1:
                problems.append(f"{key}: expected an integer >= 1, got {getattr(self, key)}")
        if self.num_query_groups >= 1 and self.num_attention_heads % self.num_query_groups:
            problems.append(
                f"num_query_groups({self.num_query_groups}) must divide "
                f"num_attention_heads({self.num_attention_heads})"
            )
        for key in ("hidden_dropout", "attention_dropout"):
            if not 0 <= getattr(self, key) < 1:
                problems.append(f"{key}: expected a probability in [0, 1), got "
                                f"{getattr(self, key)}")
        if self.moe is not None and not 1 <= self.moe.top_k <= self.moe.num_experts:
            problems.append(
                f"moe.top_k({self.moe.top_k}) must be between 1 and "
                f"moe.num_experts({self.moe.num_experts})"
            )
        if problems:
            raise ValueError("; ".join(problems))
        object.__setattr__(self, "params", _count_params(self))

    # ---- layer structure -------------------------------------------------------------------

    def is_moe_layer(self, index: int) -> bool:
        """Whether transformer layer `index` (0-based) has an MoE MLP (Megatron moe_layer_freq)."""
        if self.moe is None or index < self.moe.first_dense_layers:
            return False
        return index % self.moe.layer_freq == 0

    def first_layer_of_kind(self) -> dict[bool, int]:
        """The first dense (False) and MoE (True) layer: layers of one kind have the same
        shapes, so one stands for all of its kind in FLOP, time and memory counts."""
        if self.moe is None:
            return {False: 0}
        first: dict[bool, int] = {}
        for i in range(self.num_layers):
            first.setdefault(self.is_moe_layer(i), i)
        return first

    @property
    def num_moe_layers(self) -> int:
        return sum(self.is_moe_layer(i) for i in range(self.num_layers))

    @property
    def q_width(self) -> int:
        """Width of the query projection output (all heads)."""
        if self.mla is not None:
            return self.num_attention_heads * self.mla.qk_head_dim
        return self.num_attention_heads * self.head_dim

    @property
    def kv_width(self) -> int:
        """Width of the key (= value) projection output for GQA; for MLA the per-token K+V width
        after up-projection, halved so that K and V each count kv_width."""
        if self.mla is not None:
            per_head = self.mla.qk_head_dim + self.mla.v_head_dim
            return self.num_attention_heads * per_head // 2
        return self.num_query_groups * self.head_dim

    @property
    def attn_out_width(self) -> int:
        """Input width of the attention output projection."""
        if self.mla is not None:
            return self.num_attention_heads * self.mla.v_head_dim
        return self.num_attention_heads * self.head_dim

    def padded_vocab_size(self, tp: int, divisible_by: int = 128) -> int:
        """Vocabulary padded as Megatron pads it: to a multiple of divisible_by * tp
        (megatron/training/tokenizer `_vocab_size_with_padding`)."""
        multiple = divisible_by * tp
        return ceil_div(self.vocab_size, multiple) * multiple

    # ---- parameter counts per module (pure) ------------------------------------------------

    def norm_params(self, width: int | None = None) -> int:
        w = self.hidden_size if width is None else width
        return 2 * w if self.norm is Norm.LAYERNORM else w

    def attention_projections(self) -> tuple[Projection, ...]:
        """The attention block's weight matrices. MHA/GQA: fused QKV (column) and the output
        projection (row). MLA (DeepSeek-V2, arXiv 2405.04434, Eq. 9-14): the query down-
        projection W_DQ (replicated) and up-projection W_UQ (column) when queries are
        compressed, the joint KV down-projection with the decoupled rotary key W_DKV
        (replicated), the K/V up-projection W_UK|W_UV (column), and the output (row)."""
        h = self.hidden_size
        if self.mla is None:
            return (Projection(h, self.q_width + 2 * self.kv_width, "column"),
                    Projection(self.attn_out_width, h, "row"))
        m = self.mla
        n = self.num_attention_heads
        query: tuple[Projection, ...]
        if m.q_lora_rank is None:
            query = (Projection(h, n * m.qk_head_dim, "column"),)
        else:
            query = (Projection(h, m.q_lora_rank, "replicated"),
                     Projection(m.q_lora_rank, n * m.qk_head_dim, "column"))
        return (*query,
                Projection(h, m.kv_lora_rank + m.qk_rope_head_dim, "replicated"),
                Projection(m.kv_lora_rank, n * (m.qk_nope_head_dim + m.v_head_dim), "column"),
                Projection(n * m.v_head_dim, h, "row"))

    def mlp_projections(self, ffn_hidden_size: int) -> tuple[Projection, ...]:
        """One MLP (or expert): FC1 of width f, 2f when gated (gate and up), column-parallel;
        FC2 back to h, row-parallel."""
        gate = 2 if self.activation.gated else 1
        return (Projection(self.hidden_size, gate * ffn_hidden_size, "column"),
                Projection(ffn_hidden_size, self.hidden_size, "row"))

    def attention_params(self) -> int:
        """Attention block parameters without its input norm: the projections, their biases
        (Qwen2 biases q, k and v only), q/k norms, and MLA's q and kv latent norms."""
        weights = sum(p.in_dim * p.out_dim for p in self.attention_projections())
        if self.mla is not None:
            return weights + (self.mla.q_lora_rank or 0) + self.mla.kv_lora_rank
        bias = self.hidden_size if self.add_bias_linear else 0
        if self.add_bias_linear or self.qkv_bias:
            bias += self.q_width + 2 * self.kv_width
        qk_norm = 2 * self.norm_params(self.head_dim) if self.qk_layernorm else 0
        return weights + bias + qk_norm

    def mlp_params(self, ffn_hidden_size: int) -> int:
        """One MLP (or one expert) of hidden width `ffn_hidden_size`, with biases if any."""
        projections = self.mlp_projections(ffn_hidden_size)
        weights = sum(p.in_dim * p.out_dim for p in projections)
        bias = sum(p.out_dim for p in projections) if self.add_bias_linear else 0
        return weights + bias

    def router_params(self) -> int:
        assert self.moe is not None
        return self.hidden_size * self.moe.num_experts

    def layer_params(self, index: int) -> tuple[int, int]:
        """(dense, routed-expert) parameters of transformer layer `index`."""
        dense = self.attention_params() + 2 * self.norm_params()
        if not self.is_moe_layer(index):
            return dense + self.mlp_params(self.ffn_hidden_size), 0
        assert self.moe is not None
        dense += self.router_params()
        if self.moe.shared_width:
            dense += self.mlp_params(self.moe.shared_width)
        return dense, self.moe.num_experts * self.mlp_params(self.moe.ffn_hidden_size)

    def embedding_params(self) -> int:
        h = self.hidden_size
        params = self.vocab_size * h
        if self.position_embedding is PositionEmbedding.LEARNED:
            params += self.max_position_embeddings * h
        if self.embedding_layernorm:
            params += self.norm_params()
        return params

    def mtp_module_params(self) -> int:
        """One DeepSeek-V3 MTP module (arXiv 2412.19437, Sec. 2.2): two RMSNorms on the inputs,
        the 2h -> h projection, one transformer layer (MoE when the model is) and the output norm;
        the embedding and the output head are shared with the main model."""
        h = self.hidden_size
        last = self.num_layers - 1
        dense, expert = self.layer_params(last)
        return 3 * self.norm_params() + 2 * h * h + dense + expert


def _count_params(spec: ModelSpec) -> ParamCounts:
    dense_layers = []
    expert_layers = []
    active = 0
    for i in range(spec.num_layers):
        dense, expert = spec.layer_params(i)
        dense_layers.append(dense)
        expert_layers.append(expert)
        active += dense
        if expert:
            assert spec.moe is not None
            active += spec.moe.top_k * spec.mlp_params(spec.moe.ffn_hidden_size)
    embedding = spec.embedding_params()
    head = 0 if spec.tie_embeddings else spec.vocab_size * spec.hidden_size
    final_norm = spec.norm_params()
    total = sum(dense_layers) + sum(expert_layers) + embedding + head + final_norm
    active += embedding + head + final_norm
    return ParamCounts(
        total=total,
        active=active,
        embedding=embedding,
        output_head=head,
        final_norm=final_norm,
        per_layer_dense=tuple(dense_layers),
        per_layer_expert=tuple(expert_layers),
        mtp=spec.num_mtp_layers * spec.mtp_module_params(),
        mtp_expert=spec.num_mtp_layers * spec.layer_params(spec.num_layers - 1)[1],
    )


def make_model(
    *,
    name: str,
    num_layers: int,
    hidden_size: int,
    num_attention_heads: int,
    vocab_size: int,
    activation: Activation | str = Activation.GELU,
    num_query_groups: int | None = None,
    ffn_hidden_size: int | None = None,
    norm: Norm | str | None = None,
    position_embedding: PositionEmbedding | str | None = None,
    max_position_embeddings: int = 4096,
    tie_embeddings: bool | None = None,
    add_bias_linear: bool | None = None,
    head_dim: int | None = None,
    qk_layernorm: bool = False,
    qkv_bias: bool = False,
    embedding_layernorm: bool = False,
    mla: MlaSpec | None = None,
    moe: MoeSpec | None = None,
    num_mtp_layers: int = 0,
    hidden_dropout: float | None = None,
    attention_dropout: float | None = None,
    source: str = "",
) -> ModelSpec:
    """Build a ModelSpec with the defaults of the minimal YAML form (DESIGN.md).

    Defaults by family: a GeLU model is a GPT (LayerNorm, learned positions, biases, tied
    embeddings, ffn = 4h, dropout 0.1 on the residual branches and the attention
    probabilities: Megatron-LM's --hidden-dropout / --attention-dropout defaults and GPT-2's
    resid_pdrop / attn_pdrop); SwiGLU and squared-ReLU models are Llama/Nemotron-style (RoPE,
    no biases, untied embeddings, no dropout: Llama, Mistral, Qwen and DeepSeek config.json
    files set attention_dropout 0.0 and have no residual dropout; Nemotron-4 trains with a
    dropout rate of zero, arXiv 2402.16819 Sec. 2). SwiGLU uses RMSNorm, squared-ReLU
    LayerNorm (Nemotron-4).
    """
    act = Activation(activation)
    gpt = act is Activation.GELU
    if norm is None:
        norm = Norm.RMSNORM if act is Activation.SWIGLU else Norm.LAYERNORM
    if position_embedding is None:
        position_embedding = PositionEmbedding.LEARNED if gpt else PositionEmbedding.ROPE
    return ModelSpec(
        name=name,
        num_layers=num_layers,
        hidden_size=hidden_size,
        num_attention_heads=num_attention_heads,
        num_query_groups=num_query_groups or num_attention_heads,
        ffn_hidden_size=ffn_hidden_size or 4 * hidden_size,
        vocab_size=vocab_size,
        activation=act,
        norm=Norm(norm),
        position_embedding=PositionEmbedding(position_embedding),
        max_position_embeddings=max_position_embeddings,
        tie_embeddings=gpt if tie_embeddings is None else tie_embeddings,
        add_bias_linear=gpt if add_bias_linear is None else add_bias_linear,
        head_dim=head_dim or hidden_size // num_attention_heads,
        qk_layernorm=qk_layernorm,
        qkv_bias=qkv_bias,
        embedding_layernorm=embedding_layernorm,
        mla=mla,
        moe=moe,
        num_mtp_layers=num_mtp_layers,
        hidden_dropout=(0.1 if gpt else 0.0) if hidden_dropout is None else hidden_dropout,
        attention_dropout=((0.1 if gpt else 0.0) if attention_dropout is None
                           else attention_dropout),
        source=source,
    )
