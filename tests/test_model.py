"""Parameter counts: hand-checkable cases and published totals."""

from __future__ import annotations

import pytest

from planner.calibration import load_measurements
from planner.catalog import BUILTIN_MODELS
from planner.model import MoeSpec, make_model


def test_tiny_gpt_counts_by_hand() -> None:
    """h=4, 1 layer, V=10, s=8, GeLU, biases, LayerNorm, tied embeddings:
    layer = 12h^2 + 13h = 192 + 52 = 244; embedding V*h + s*h = 40 + 32 = 72;
    final LayerNorm 2h = 8; total 324."""
    m = make_model(name="tiny", num_layers=1, hidden_size=4, num_attention_heads=2,
                   vocab_size=10, max_position_embeddings=8)
    assert m.params.per_layer_dense == (244,)
    assert m.params.embedding == 72
    assert m.params.output_head == 0
    assert m.params.total == 324


def test_tiny_moe_counts_by_hand() -> None:
    """h=4, f_expert=2, 4 experts top-1, SwiGLU, RMSNorm, no bias, untied, V=10, rope:
    attention 4*(4+2*4) + 4*4 = 64; norms 2*4 = 8; router 4*4 = 16;
    expert 3*4*2 = 24, x4 = 96. layer dense 88, expert 96; embedding 40, head 40, final 4.
    total 88 + 96 + 84 = 268; active 88 + 24 + 84 = 196."""
    m = make_model(name="tiny-moe", num_layers=1, hidden_size=4, num_attention_heads=2,
                   vocab_size=10, activation="swiglu", ffn_hidden_size=8,
                   moe=MoeSpec(num_experts=4, top_k=1, ffn_hidden_size=2))
    assert m.params.per_layer_dense == (88,)
    assert m.params.per_layer_expert == (96,)
    assert m.params.total == 268
    assert m.params.active == 196


PTDP_NAMES = {
    "ptdp_t1_1p7B": "gpt-1.7b", "ptdp_t1_3p6B": "gpt-3.6b", "ptdp_t1_7p5B": "gpt-7.5b",
    "ptdp_t1_18p4B": "gpt-18.4b", "ptdp_t1_39p1B": "gpt-39.1b", "ptdp_t1_76p1B": "gpt-76.1b",
    "ptdp_t1_145p6B": "gpt-145.6b", "ptdp_t1_310p1B": "gpt-310.1b",
    "ptdp_t1_529p6B": "gpt-529.6b", "ptdp_t1_1008p0B": "gpt-1t",
}


@pytest.mark.parametrize("case_id", sorted(PTDP_NAMES))
def test_ptdp_table1_params_to_the_reported_digit(case_id: str) -> None:
    """Megatron-LM PTD-P Table 1 (calibration.yaml ptdp_t1_*): the shape and reported size.
    The paper's count omits the final LayerNorm (2h), which cannot change the digit."""
    case = next(c for c in load_measurements("calibration.yaml")["cases"] if c["id"] == case_id)
    model = BUILTIN_MODELS[PTDP_NAMES[case_id]]
    shape = case["model"]
    assert (model.num_layers, model.hidden_size, model.num_attention_heads) == (
        shape["layers"], shape["hidden"], shape["heads"])
    assert model.vocab_size == shape["vocab"]
    assert round(model.params.total / 1e9, 1) == pytest.approx(shape["params_billion"], abs=0.05)


@pytest.mark.parametrize(("name", "published", "active"), [
    ("llama3-8b", 8.03e9, None),  # Llama 3 paper Table 3 / model card
    ("llama3-70b", 70.6e9, None),
    ("llama3-405b", 405e9, None),
    ("mixtral-8x7b", 46.7e9, 12.9e9),  # Mixtral paper: 47B total, 13B active; model card 46.7B
    ("deepseek-v3", 671e9, 37e9),  # arXiv 2412.19437: 671B total, 37B activated
    ("qwen3-30b-a3b", 30.5e9, 3.3e9),  # Qwen3 technical report Table 2
    ("qwen3-235b-a22b", 235e9, 22e9),
    ("nemotron4-340b", 341e9, None),  # arXiv 2406.11704
    ("bloom-176b", 176.2e9, None),  # arXiv 2211.05100
    ("gpt3-175b", 174.6e9, None),  # PTD-P Table 2 count for GPT-3 with vocab 51200
])
def test_published_totals_within_half_a_percent(name: str, published: float,
                                                active: float | None) -> None:
    model = BUILTIN_MODELS[name]
    assert model.params.total == pytest.approx(published, rel=0.005)
    if active is not None:
        assert model.params.active == pytest.approx(active, rel=0.02)


def test_deepseek_mtp_is_counted_apart() -> None:
    """DeepSeek-V3 publishes 685B = 671B main model + 14B MTP module, whose checkpoint carries
    its own copies of the embedding and the head (2 x 129280 x 7168 = 1.85B). The planner
    counts the MTP module without those copies (they are shared in training)."""
    m = BUILTIN_MODELS["deepseek-v3"]
    copies = 2 * 129280 * 7168
    assert m.params.total + m.params.mtp + copies == pytest.approx(685e9, rel=0.005)
    assert m.num_moe_layers == 58


def test_moe_layer_pattern() -> None:
    moe = MoeSpec(num_experts=4, top_k=2, ffn_hidden_size=8, first_dense_layers=1, layer_freq=2)
    m = make_model(name="x", num_layers=6, hidden_size=8, num_attention_heads=2, vocab_size=16,
                   activation="swiglu", moe=moe)
    assert [m.is_moe_layer(i) for i in range(6)] == [False, False, True, False, True, False]


def test_padded_vocab_like_megatron() -> None:
    """Megatron pads 50257 to a multiple of 128 * tp: 50304 at tp 1, 50432 at tp 2."""
    m = make_model(name="x", num_layers=1, hidden_size=8, num_attention_heads=2,
                   vocab_size=50257)
    assert m.padded_vocab_size(1) == 50304
    assert m.padded_vocab_size(2) == 50432
    assert m.padded_vocab_size(4) == 50688
