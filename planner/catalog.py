"""Built-in model catalog (`planner models`). Pure data; each entry names its source.

Shapes come from the papers and the models' published `config.json` files. Megatron-era GPTs use
vocab 51200 (GPT-2's 50257 padded, as in Narayanan et al. 2021) and tied embeddings.
"""

from __future__ import annotations

from planner.model import MlaSpec, ModelSpec, MoeSpec, make_model

_PTDP = "Narayanan et al. 2021 (arXiv 2104.04473) Table 1"

# (name, layers, hidden, heads) of Megatron-LM PTD-P Table 1; ffn = 4h, vocab 51200, seq 2048.
_PTDP_SHAPES = (
    ("gpt-1.7b", 24, 2304, 24),
    ("gpt-3.6b", 30, 3072, 32),
    ("gpt-7.5b", 36, 4096, 32),
    ("gpt-18.4b", 40, 6144, 48),
    ("gpt-39.1b", 48, 8192, 64),
    ("gpt-76.1b", 60, 10240, 80),
    ("gpt-145.6b", 80, 12288, 96),
    ("gpt-310.1b", 96, 16384, 128),
    ("gpt-529.6b", 105, 20480, 128),
    ("gpt-1t", 128, 25600, 160),
)


def _builtin() -> dict[str, ModelSpec]:
    models: list[ModelSpec] = [
        make_model(name=name, num_layers=layers, hidden_size=hidden, num_attention_heads=heads,
                   vocab_size=51200, max_position_embeddings=2048, source=_PTDP)
        for name, layers, hidden, heads in _PTDP_SHAPES
    ]
    models += [
        make_model(name="gpt3-175b", num_layers=96, hidden_size=12288, num_attention_heads=96,
                   vocab_size=51200, max_position_embeddings=2048,
                   source="Brown et al. 2020 (arXiv 2005.14165) Table 2.1; Megatron vocab padding"),
        make_model(name="llama2-7b", num_layers=32, hidden_size=4096, num_attention_heads=32,
                   ffn_hidden_size=11008, vocab_size=32000, activation="swiglu",
                   source="meta-llama/Llama-2-7b-hf config.json"),
        make_model(name="llama2-13b", num_layers=40, hidden_size=5120, num_attention_heads=40,
                   ffn_hidden_size=13824, vocab_size=32000, activation="swiglu",
                   source="meta-llama/Llama-2-13b-hf config.json"),
        make_model(name="llama2-70b", num_layers=80, hidden_size=8192, num_attention_heads=64,
                   num_query_groups=8, ffn_hidden_size=28672, vocab_size=32000,
                   activation="swiglu", source="meta-llama/Llama-2-70b-hf config.json"),
        make_model(name="llama3-8b", num_layers=32, hidden_size=4096, num_attention_heads=32,
                   num_query_groups=8, ffn_hidden_size=14336, vocab_size=128256,
                   activation="swiglu", max_position_embeddings=8192,
                   source="meta-llama/Meta-Llama-3-8B config.json; Llama 3 paper Table 3"),
        make_model(name="llama3-70b", num_layers=80, hidden_size=8192, num_attention_heads=64,
                   num_query_groups=8, ffn_hidden_size=28672, vocab_size=128256,
                   activation="swiglu", max_position_embeddings=8192,
                   source="meta-llama/Meta-Llama-3-70B config.json; Llama 3 paper Table 3"),
        make_model(name="llama3-405b", num_layers=126, hidden_size=16384, num_attention_heads=128,
                   num_query_groups=8, ffn_hidden_size=53248, vocab_size=128256,
                   activation="swiglu", max_position_embeddings=8192,
                   source="meta-llama/Llama-3.1-405B config.json; Llama 3 paper Table 3"),
        make_model(name="mixtral-8x7b", num_layers=32, hidden_size=4096, num_attention_heads=32,
                   num_query_groups=8, ffn_hidden_size=14336, vocab_size=32000,
                   activation="swiglu", max_position_embeddings=32768,
                   moe=MoeSpec(num_experts=8, top_k=2, ffn_hidden_size=14336),
                   source="mistralai/Mixtral-8x7B-v0.1 config.json"),
        make_model(name="mixtral-8x22b", num_layers=56, hidden_size=6144, num_attention_heads=48,
                   num_query_groups=8, ffn_hidden_size=16384, vocab_size=32768,
                   activation="swiglu", max_position_embeddings=65536,
                   moe=MoeSpec(num_experts=8, top_k=2, ffn_hidden_size=16384),
                   source="mistralai/Mixtral-8x22B-v0.1 config.json"),
        make_model(name="qwen3-30b-a3b", num_layers=48, hidden_size=2048, num_attention_heads=32,
                   num_query_groups=4, head_dim=128, ffn_hidden_size=6144, vocab_size=151936,
                   activation="swiglu", qk_layernorm=True, max_position_embeddings=40960,
                   moe=MoeSpec(num_experts=128, top_k=8, ffn_hidden_size=768),
                   source="Qwen/Qwen3-30B-A3B config.json"),
        make_model(name="qwen3-235b-a22b", num_layers=94, hidden_size=4096,
                   num_attention_heads=64, num_query_groups=4, head_dim=128,
                   ffn_hidden_size=12288, vocab_size=151936, activation="swiglu",
                   qk_layernorm=True, max_position_embeddings=40960,
                   moe=MoeSpec(num_experts=128, top_k=8, ffn_hidden_size=1536),
                   source="Qwen/Qwen3-235B-A22B config.json"),
        make_model(name="deepseek-v3", num_layers=61, hidden_size=7168, num_attention_heads=128,
                   ffn_hidden_size=18432, vocab_size=129280, activation="swiglu",
                   max_position_embeddings=4096,
                   mla=MlaSpec(q_lora_rank=1536, kv_lora_rank=512, qk_nope_head_dim=128,
                               qk_rope_head_dim=64, v_head_dim=128),
                   moe=MoeSpec(num_experts=256, top_k=8, ffn_hidden_size=2048,
                               num_shared_experts=1, first_dense_layers=3),
                   num_mtp_layers=1,
                   source="deepseek-ai/DeepSeek-V3 config.json; arXiv 2412.19437 (671B main "
                          "model + 14B MTP module)"),
        make_model(name="nemotron4-340b", num_layers=96, hidden_size=18432,
                   num_attention_heads=96, num_query_groups=8, ffn_hidden_size=73728,
                   vocab_size=256000, activation="squared_relu",
                   source="Nemotron-4 340B technical report (arXiv 2406.11704) Table 1"),
        make_model(name="bloom-176b", num_layers=70, hidden_size=14336, num_attention_heads=112,
                   vocab_size=250880, position_embedding="alibi", embedding_layernorm=True,
                   max_position_embeddings=2048, hidden_dropout=0.0, attention_dropout=0.0,
                   source="BigScience BLOOM (arXiv 2211.05100) Table 3; bigscience/bloom "
                          "config.json (hidden_dropout, attention_dropout 0.0)"),
    ]
    return {model.name: model for model in models}


BUILTIN_MODELS: dict[str, ModelSpec] = _builtin()
