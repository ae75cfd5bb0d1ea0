"""Loading models: the minimal YAML, the rich YAML, Hugging Face config.json files."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from planner.catalog import BUILTIN_MODELS
from planner.errors import InputError
from planner.model_io import load_model, model_from_dict, model_to_dict
from tests.conftest import REPO

MINIMAL = """\
name: gpt3-175b
num_layers: 96
hidden_size: 12288
num_attention_heads: 96
vocab_size: 51200
activation: gelu
"""


def test_minimal_yaml_is_a_gpt(write: Callable[[str, str], Path]) -> None:
    """The DESIGN.md minimal form with GeLU defaults to a GPT: ffn 4h, tied, learned positions.
    With max_position_embeddings 4096 (default) the count is 174.6B + 2048*12288 more."""
    model = load_model(str(write("gpt.yaml", MINIMAL)))
    assert model.ffn_hidden_size == 4 * 12288
    assert model.tie_embeddings
    builtin = BUILTIN_MODELS["gpt3-175b"]  # max_position_embeddings 2048
    assert model.params.total - builtin.params.total == 2048 * 12288


def test_design_example_with_moe(write: Callable[[str, str], Path]) -> None:
    text = MINIMAL + """\
num_query_groups: 96
ffn_hidden_size: 49152
tie_embeddings: false
moe:
  num_experts: 256
  top_k: 8
  ffn_hidden_size: 2048
  num_shared_experts: 1
  first_dense_layers: 3
"""
    model = load_model(str(write("moe.yaml", text)))
    assert model.moe is not None and model.num_moe_layers == 93
    assert not model.tie_embeddings


def test_example_files_load() -> None:
    assert load_model(str(REPO / "examples/llama3-70b.yaml")).params.total == (
        BUILTIN_MODELS["llama3-70b"].params.total)
    assert load_model(str(REPO / "examples/moe-16x1b.yaml")).mla is not None


def test_round_trip_of_every_builtin() -> None:
    for name, spec in BUILTIN_MODELS.items():
        assert model_from_dict(model_to_dict(spec), name) == spec


def _hf(write: Callable[[str, str], Path], data: dict[str, object]) -> Path:
    return write("hf/config.json", json.dumps(data))


LLAMA3_8B_HF = {
    "model_type": "llama", "hidden_act": "silu", "hidden_size": 4096,
    "intermediate_size": 14336, "num_attention_heads": 32, "num_hidden_layers": 32,
    "num_key_value_heads": 8, "vocab_size": 128256, "tie_word_embeddings": False,
    "max_position_embeddings": 8192, "rope_theta": 500000.0,
}


def test_hf_llama_matches_builtin(write: Callable[[str, str], Path]) -> None:
    model = load_model(str(_hf(write, LLAMA3_8B_HF)))
    assert model.params.total == BUILTIN_MODELS["llama3-8b"].params.total


def test_hf_mistral_and_mixtral(write: Callable[[str, str], Path]) -> None:
    mistral = dict(LLAMA3_8B_HF, model_type="mistral", vocab_size=32000)
    assert load_model(str(_hf(write, mistral))).moe is None
    mixtral = dict(mistral, model_type="mixtral", num_local_experts=8, num_experts_per_tok=2,
                   max_position_embeddings=32768)
    model = load_model(str(_hf(write, mixtral)))
    assert model.params.total == BUILTIN_MODELS["mixtral-8x7b"].params.total


def test_hf_qwen3_moe_example_matches_builtin() -> None:
    model = load_model(str(REPO / "examples/hf/qwen3-30b-a3b/config.json"))
    assert model.params.total == BUILTIN_MODELS["qwen3-30b-a3b"].params.total
    assert model.params.active == BUILTIN_MODELS["qwen3-30b-a3b"].params.active


def test_hf_qwen2_has_qkv_bias(write: Callable[[str, str], Path]) -> None:
    """Qwen2 biases q, k, v only: per layer q + 2kv = 3584 + 2*512 extra parameters
    (Qwen2-7B shape)."""
    base = {"hidden_act": "silu", "hidden_size": 3584, "intermediate_size": 18944,
            "num_attention_heads": 28, "num_hidden_layers": 28, "num_key_value_heads": 4,
            "vocab_size": 152064, "tie_word_embeddings": False}
    qwen2 = load_model(str(_hf(write, dict(base, model_type="qwen2"))))
    llama = load_model(str(_hf(write, dict(base, model_type="llama"))))
    assert qwen2.params.total - llama.params.total == 28 * (3584 + 2 * 512)
    assert qwen2.params.total == pytest.approx(7.62e9, rel=0.005)  # Qwen2-7B model card


def test_hf_deepseek_v3(write: Callable[[str, str], Path]) -> None:
    config = {
        "model_type": "deepseek_v3", "hidden_act": "silu", "hidden_size": 7168,
        "intermediate_size": 18432, "moe_intermediate_size": 2048, "num_attention_heads": 128,
        "num_key_value_heads": 128, "num_hidden_layers": 61, "n_routed_experts": 256,
        "n_shared_experts": 1, "num_experts_per_tok": 8, "first_k_dense_replace": 3,
        "moe_layer_freq": 1, "q_lora_rank": 1536, "kv_lora_rank": 512,
        "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
        "vocab_size": 129280, "num_nextn_predict_layers": 1, "tie_word_embeddings": False,
        "max_position_embeddings": 163840,
    }
    model = load_model(str(_hf(write, config)))
    assert model.params.total == BUILTIN_MODELS["deepseek-v3"].params.total
    assert model.params.mtp == BUILTIN_MODELS["deepseek-v3"].params.mtp


@pytest.mark.parametrize(("text", "field"), [
    ("num_layers: 2\nhidden_size: 8\nnum_attention_heads: 2\n", "vocab_size"),
    (MINIMAL.replace("12288", "'12288x'"), "hidden_size"),
    (MINIMAL.replace("activation: gelu", "activation: relu"), "activation"),
    (MINIMAL + "num_query_groups: 7\n", "num_query_groups"),
    (MINIMAL + "num_layer: 3\n", "num_layer"),
    (MINIMAL + "moe: {num_experts: 4, top_k: 8, ffn_hidden_size: 16}\n", "moe.top_k"),
    (MINIMAL + "hidden_dropout: 1.5\n", "hidden_dropout"),
])
def test_model_yaml_errors_name_the_field(write: Callable[[str, str], Path], text: str,
                                          field: str) -> None:
    with pytest.raises(InputError) as info:
        load_model(str(write("bad.yaml", text)))
    assert field in str(info.value)
    assert "bad.yaml" in str(info.value)


def test_all_problems_reported_at_once(write: Callable[[str, str], Path]) -> None:
    path = write("bad.yaml", "num_layers: zero\nhidden_size: -1\nnum_attention_heads: 2\n")
    with pytest.raises(InputError) as info:
        load_model(str(path))
    fields = " ".join(info.value.problems)
    for field in ("num_layers", "hidden_size", "vocab_size"):
        assert field in fields


def test_unknown_name_lists_builtins() -> None:
    with pytest.raises(InputError) as info:
        load_model("llama-9000")
    assert "llama3-8b" in (info.value.hint or "")


def test_hf_qwen3_dense_has_qk_norm(write: Callable[[str, str], Path]) -> None:
    """Qwen3-8B config: 36 layers, h 4096, 32/8 heads of 128, ffn 12288, vocab 151936,
    untied; q/k RMSNorm of head_dim each per layer. Model card: 8.2B parameters."""
    config = {"model_type": "qwen3", "hidden_act": "silu", "hidden_size": 4096,
              "intermediate_size": 12288, "num_attention_heads": 32, "num_hidden_layers": 36,
              "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936,
              "tie_word_embeddings": False, "max_position_embeddings": 40960}
    model = load_model(str(_hf(write, config)))
    assert model.qk_layernorm
    assert model.params.total == pytest.approx(8.19e9, rel=0.005)


def test_dropout_by_family_and_as_stated(write: Callable[[str, str], Path]) -> None:
    """GPTs default to Megatron's and GPT-2's dropout 0.1, Llama-style models to none; a
    model file may state either probability; a HF config gives its attention_dropout (these
    architectures have no residual dropout)."""
    assert load_model(str(write("gpt.yaml", MINIMAL))).hidden_dropout == 0.1
    llama = BUILTIN_MODELS["llama3-70b"]
    assert (llama.hidden_dropout, llama.attention_dropout) == (0.0, 0.0)
    stated = load_model(str(write("g.yaml", MINIMAL + "hidden_dropout: 0\n"
                                                      "attention_dropout: 0.05\n")))
    assert (stated.hidden_dropout, stated.attention_dropout) == (0.0, 0.05)
    config = {"model_type": "llama", "num_hidden_layers": 2, "hidden_size": 64,
              "num_attention_heads": 4, "intermediate_size": 128, "vocab_size": 100,
              "attention_dropout": 0.1}
    model = load_model(str(_hf(write, config)))
    assert (model.hidden_dropout, model.attention_dropout) == (0.0, 0.1)
