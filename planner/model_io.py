"""Loading a model: a built-in name, a model YAML (DESIGN.md minimal form, or richer), or a
local Hugging Face `config.json`. No network, no remote code."""

from __future__ import annotations

from pathlib import Path

from planner.catalog import BUILTIN_MODELS
from planner.errors import InputError
from planner.model import (
    Activation,
    MlaSpec,
    ModelSpec,
    MoeSpec,
    Norm,
    PositionEmbedding,
    make_model,
)
from planner.schema import Reader, read_document

_MODEL_KEYS = (
    "name", "num_layers", "hidden_size", "num_attention_heads", "num_query_groups",
    "ffn_hidden_size", "vocab_size", "activation", "tie_embeddings", "moe", "mla", "head_dim",
    "norm", "position_embedding", "max_position_embeddings", "add_bias_linear", "qk_layernorm",
    "qkv_bias", "embedding_layernorm", "num_mtp_layers", "hidden_dropout", "attention_dropout",
    "source",
)
_MOE_KEYS = ("num_experts", "top_k", "ffn_hidden_size", "num_shared_experts",
             "shared_ffn_hidden_size", "first_dense_layers", "layer_freq", "capacity_factor")
_MLA_KEYS = ("q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")

HF_ARCHITECTURES = ("llama", "mistral", "mixtral", "qwen2", "qwen3", "qwen3_moe", "deepseek_v3")


def load_model(ref: str) -> ModelSpec:
    """Resolve `--model`: a built-in name, a .yaml/.yml model file, or a HF config.json.

    Raises:
        InputError: unknown name, unreadable file, or every schema problem of the file.
    """
    if ref in BUILTIN_MODELS:
        return BUILTIN_MODELS[ref]
    path = Path(ref)
    if not path.exists():
        names = ", ".join(sorted(BUILTIN_MODELS))
        raise InputError(
            f"--model {ref!r}: not a built-in model name and no such file",
            hint=f"built-in models: {names} (see `planner models`)",
        )
    data = read_document(path)
    if path.suffix == ".json":
        return model_from_hf_config(data, str(path))
    return model_from_dict(data, str(path))


def model_from_dict(data: object, source: str) -> ModelSpec:
    """Build a ModelSpec from the model YAML of DESIGN.md (all problems reported at once)."""
    r = Reader(source, data)
    name = r.string("name", default=Path(source).stem)
    num_layers = r.int("num_layers")
    hidden = r.int("hidden_size")
    heads = r.int("num_attention_heads")
    groups = r.int("num_query_groups", required=False)
    ffn = r.int("ffn_hidden_size", required=False)
    vocab = r.int("vocab_size")
    activation = r.choice("activation", [a.value for a in Activation], default="gelu")
    norm = r.choice("norm", [n.value for n in Norm], required=False)
    position = r.choice("position_embedding", [p.value for p in PositionEmbedding],
                        required=False)
    max_pos = r.int("max_position_embeddings", default=4096)
    tie = r.boolean("tie_embeddings", default=activation == "gelu") if r.has(
        "tie_embeddings") else None
    bias = r.boolean("add_bias_linear", default=False) if r.has("add_bias_linear") else None
    head_dim = r.int("head_dim", required=False)
    qk_norm = r.boolean("qk_layernorm", default=False)
    qkv_bias = r.boolean("qkv_bias", default=False)
    emb_norm = r.boolean("embedding_layernorm", default=False)
    mtp = r.int("num_mtp_layers", minimum=0, default=0)
    hidden_dropout = _probability(r, "hidden_dropout")
    attention_dropout = _probability(r, "attention_dropout")
    described_source = r.string("source", required=False)
    moe = _moe(r.child("moe"))
    mla = _mla(r.child("mla"))
    r.unknown_keys(_MODEL_KEYS)
    if heads and groups and heads % groups:
        r.fail("num_query_groups", f"must divide num_attention_heads({heads}), got {groups}")
    if hidden and heads and not head_dim and mla is None and hidden % heads:
        r.fail("num_attention_heads",
               f"must divide hidden_size({hidden}), got {heads}; or give head_dim")
    if moe and moe.top_k > moe.num_experts:
        r.fail("moe.top_k", f"must be <= moe.num_experts({moe.num_experts}), got {moe.top_k}")
    if moe and num_layers and moe.first_dense_layers >= num_layers:
        r.fail("moe.first_dense_layers", f"must be < num_layers({num_layers})")
    r.check("see the model YAML form in DESIGN.md / README")
    assert num_layers and hidden and heads and vocab and name and activation
    return make_model(
        name=name, num_layers=num_layers, hidden_size=hidden, num_attention_heads=heads,
        num_query_groups=groups, ffn_hidden_size=ffn, vocab_size=vocab, activation=activation,
        norm=norm, position_embedding=position, max_position_embeddings=max_pos or 4096,
        tie_embeddings=tie, add_bias_linear=bias, head_dim=head_dim, qk_layernorm=qk_norm,
        qkv_bias=qkv_bias, embedding_layernorm=emb_norm, mla=mla, moe=moe,
        num_mtp_layers=mtp or 0, hidden_dropout=hidden_dropout,
        attention_dropout=attention_dropout, source=described_source or source,
    )


def _probability(r: Reader, key: str) -> float | None:
    """An optional dropout probability in [0, 1); None (the family default) when absent."""
    if not r.has(key):
        return None
    value = r.number(key, positive=False)
    if value is not None and not 0 <= value < 1:
        r.fail(key, f"expected a probability in [0, 1), got {value}")
        return None
    return value


def _moe(r: Reader | None) -> MoeSpec | None:
    if r is None:
        return None
    num_experts = r.int("num_experts")
    top_k = r.int("top_k")
    ffn = r.int("ffn_hidden_size")
    shared = r.int("num_shared_experts", minimum=0, default=0)
    shared_ffn = r.int("shared_ffn_hidden_size", required=False)
    first_dense = r.int("first_dense_layers", minimum=0, default=0)
    freq = r.int("layer_freq", default=1)
    capacity = r.number("capacity_factor", required=False)
    r.unknown_keys(_MOE_KEYS)
    if not (num_experts and top_k and ffn):
        return None
    return MoeSpec(num_experts=num_experts, top_k=top_k, ffn_hidden_size=ffn,
                   num_shared_experts=shared or 0, shared_ffn_hidden_size=shared_ffn,
                   first_dense_layers=first_dense or 0, layer_freq=freq or 1,
                   capacity_factor=capacity)


def _mla(r: Reader | None) -> MlaSpec | None:
    if r is None:
        return None
    q_lora = r.int("q_lora_rank", required=False)
    kv_lora = r.int("kv_lora_rank")
    nope = r.int("qk_nope_head_dim")
    rope = r.int("qk_rope_head_dim")
    v = r.int("v_head_dim")
    r.unknown_keys(_MLA_KEYS)
    if not (kv_lora and nope and rope and v):
        return None
    return MlaSpec(q_lora_rank=q_lora, kv_lora_rank=kv_lora, qk_nope_head_dim=nope,
                   qk_rope_head_dim=rope, v_head_dim=v)


def model_from_hf_config(data: object, source: str) -> ModelSpec:
    """Translate a Hugging Face `config.json` (transformers' own key names) into a ModelSpec.

    Supported `model_type`s: llama, mistral, mixtral, qwen2, qwen3, qwen3_moe, deepseek_v3.
    Key meanings follow the transformers configuration classes of those architectures.
    """
    r = Reader(source, data)
    model_type = r.string("model_type")
    if model_type is not None and model_type not in HF_ARCHITECTURES:
        r.fail("model_type", f"{model_type!r} is not supported; expected one of "
               + ", ".join(HF_ARCHITECTURES))
        r.check()
    r.check()
    hidden_act = r.string("hidden_act", default="silu")
    if hidden_act not in ("silu", "swish"):
        r.fail("hidden_act", f"expected silu (SwiGLU) for {model_type}, got {hidden_act!r}")
    layers = r.int("num_hidden_layers")
    hidden = r.int("hidden_size")
    heads = r.int("num_attention_heads")
    kv_heads = r.int("num_key_value_heads", default=heads, required=False)
    ffn = r.int("intermediate_size")
    vocab = r.int("vocab_size")
    tie = r.boolean("tie_word_embeddings", default=False)
    # these architectures have dropout on the attention probabilities only (their modeling
    # files apply attention_dropout; no residual dropout)
    attention_dropout = r.number("attention_dropout", positive=False, default=0.0)
    max_pos = r.int("max_position_embeddings", default=4096)
    head_dim = r.int("head_dim", required=False)
    moe: MoeSpec | None = None
    mla: MlaSpec | None = None
    mtp = 0
    if model_type == "mixtral":
        experts, top_k = r.int("num_local_experts"), r.int("num_experts_per_tok")
        if experts and top_k and ffn:
            moe = MoeSpec(num_experts=experts, top_k=top_k, ffn_hidden_size=ffn)
    elif model_type == "qwen3_moe":
        experts, top_k = r.int("num_experts"), r.int("num_experts_per_tok")
        moe_ffn = r.int("moe_intermediate_size")
        step = r.int("decoder_sparse_step", default=1)
        only_dense = r.raw("mlp_only_layers") or []
        if only_dense:
            r.fail("mlp_only_layers", "non-empty mlp_only_layers is not supported yet; "
                   "describe the model in a model YAML instead")
        if experts and top_k and moe_ffn:
            moe = MoeSpec(num_experts=experts, top_k=top_k, ffn_hidden_size=moe_ffn,
                          layer_freq=step or 1)
    elif model_type == "deepseek_v3":
        experts, top_k = r.int("n_routed_experts"), r.int("num_experts_per_tok")
        moe_ffn = r.int("moe_intermediate_size")
        shared = r.int("n_shared_experts", minimum=0, default=0)
        first_dense = r.int("first_k_dense_replace", minimum=0, default=0)
        freq = r.int("moe_layer_freq", default=1)
        q_lora = r.int("q_lora_rank", required=False)
        kv_lora, nope = r.int("kv_lora_rank"), r.int("qk_nope_head_dim")
        rope, v = r.int("qk_rope_head_dim"), r.int("v_head_dim")
        mtp = r.int("num_nextn_predict_layers", minimum=0, default=0) or 0
        if experts and top_k and moe_ffn:
            moe = MoeSpec(num_experts=experts, top_k=top_k, ffn_hidden_size=moe_ffn,
                          num_shared_experts=shared or 0, first_dense_layers=first_dense or 0,
                          layer_freq=freq or 1)
        if kv_lora and nope and rope and v:
            mla = MlaSpec(q_lora_rank=q_lora, kv_lora_rank=kv_lora, qk_nope_head_dim=nope,
                          qk_rope_head_dim=rope, v_head_dim=v)
    r.check("a Hugging Face config.json of a supported architecture")
    assert layers and hidden and heads and ffn and vocab and model_type
    return make_model(
        name=str(r.data.get("_name_or_path") or Path(source).parent.name or model_type),
        num_layers=layers, hidden_size=hidden, num_attention_heads=heads,
        num_query_groups=kv_heads, ffn_hidden_size=ffn, vocab_size=vocab,
        activation=Activation.SWIGLU, norm=Norm.RMSNORM,
        position_embedding=PositionEmbedding.ROPE, max_position_embeddings=max_pos or 4096,
        tie_embeddings=tie, add_bias_linear=False, head_dim=head_dim,
        qk_layernorm=model_type in ("qwen3", "qwen3_moe"), qkv_bias=model_type == "qwen2",
        mla=mla, moe=moe, num_mtp_layers=mtp, hidden_dropout=0.0,
        attention_dropout=attention_dropout or 0.0,
        source=f"{source} (Hugging Face {model_type})",
    )


def model_to_dict(spec: ModelSpec) -> dict[str, object]:
    """The model YAML (rich form) of `spec`; `model_from_dict` reads it back unchanged."""
    data: dict[str, object] = {
        "name": spec.name,
        "num_layers": spec.num_layers,
        "hidden_size": spec.hidden_size,
        "num_attention_heads": spec.num_attention_heads,
        "num_query_groups": spec.num_query_groups,
        "head_dim": spec.head_dim,
        "ffn_hidden_size": spec.ffn_hidden_size,
        "vocab_size": spec.vocab_size,
        "activation": spec.activation.value,
        "norm": spec.norm.value,
        "position_embedding": spec.position_embedding.value,
        "max_position_embeddings": spec.max_position_embeddings,
        "tie_embeddings": spec.tie_embeddings,
        "add_bias_linear": spec.add_bias_linear,
        "qk_layernorm": spec.qk_layernorm,
        "qkv_bias": spec.qkv_bias,
        "embedding_layernorm": spec.embedding_layernorm,
        "num_mtp_layers": spec.num_mtp_layers,
        "hidden_dropout": spec.hidden_dropout,
        "attention_dropout": spec.attention_dropout,
    }
    if spec.moe is not None:
        m = spec.moe
        moe: dict[str, object] = {
            "num_experts": m.num_experts, "top_k": m.top_k, "ffn_hidden_size": m.ffn_hidden_size,
            "num_shared_experts": m.num_shared_experts, "first_dense_layers": m.first_dense_layers,
            "layer_freq": m.layer_freq,
        }
        if m.shared_ffn_hidden_size is not None:
            moe["shared_ffn_hidden_size"] = m.shared_ffn_hidden_size
        if m.capacity_factor is not None:
            moe["capacity_factor"] = m.capacity_factor
        data["moe"] = moe
    if spec.mla is not None:
        a = spec.mla
        mla: dict[str, object] = {
            "kv_lora_rank": a.kv_lora_rank, "qk_nope_head_dim": a.qk_nope_head_dim,
            "qk_rope_head_dim": a.qk_rope_head_dim, "v_head_dim": a.v_head_dim,
        }
        if a.q_lora_rank is not None:
            mla["q_lora_rank"] = a.q_lora_rank
        data["mla"] = mla
    if spec.source:
        data["source"] = spec.source
    return data
