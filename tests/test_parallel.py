"""Parallel configurations: validation messages, layer layouts, in-flight micro-batches."""

from __future__ import annotations

import dataclasses

import pytest

from planner.catalog import BUILTIN_MODELS
from planner.model import make_model
from planner.parallel import (
    ParallelConfig,
    Precision,
    Recompute,
    VocabStrategy,
    even_split,
    in_flight_microbatches,
    live_chunk_passes,
    stage_chunks,
    stage_layers,
)

LLAMA8B = BUILTIN_MODELS["llama3-8b"]
TOY = make_model(name="toy", num_layers=8, hidden_size=64, num_attention_heads=4,
                 vocab_size=1000)


def test_even_split() -> None:
    assert even_split(10, 4) == (3, 3, 2, 2)
    assert even_split(8, 4) == (2, 2, 2, 2)


def test_interleaved_layout_follows_megatron_chunk_order() -> None:
    """pp=2, vpp=2, 8 layers: model chunks of 2 layers; chunk k on stage k % pp."""
    cfg = ParallelConfig(pp=2, vpp=2, global_batch=8)
    assert stage_layers(TOY, cfg) == ((0, 1, 4, 5), (2, 3, 6, 7))


def test_redistribute_counts_embedding_and_loss_as_layers() -> None:
    """30 layers + 2 = 32 units over pp=4: 8 each, the end stages give one to the embedding /
    the loss (Megatron --account-for-embedding/loss-in-pipeline-split)."""
    model = make_model(name="x", num_layers=30, hidden_size=64, num_attention_heads=4,
                       vocab_size=1000)
    cfg = ParallelConfig(pp=4, global_batch=8, vocab_strategy=VocabStrategy.REDISTRIBUTE)
    assert [len(s) for s in stage_layers(model, cfg)] == [7, 8, 8, 7]


def test_redistribute_with_interleaving_shortens_the_end_chunks() -> None:
    """8 layers + 2 over pp=2, vpp=2: chunks of 3, 3, 2, 2 units; the first chunk gives one
    to the embedding, the last one to the loss: 2, 3, 2, 1 layers."""
    cfg = ParallelConfig(pp=2, vpp=2, global_batch=8, vocab_strategy=VocabStrategy.REDISTRIBUTE)
    assert stage_chunks(TOY, cfg) == (((0, 1), (5, 6)), ((2, 3, 4), (7,)))
    assert stage_layers(TOY, cfg) == ((0, 1, 5, 6), (2, 3, 4, 7))


def test_block_recompute_counts_within_each_chunk() -> None:
    cfg = ParallelConfig(pp=2, vpp=2, global_batch=8, recompute=Recompute.FULL,
                         recompute_num_layers=1)
    assert [cfg.layer_recompute(i) for i in range(2)] == [Recompute.FULL, Recompute.NONE]


def test_explicit_uneven_layout() -> None:
    cfg = ParallelConfig(pp=4, global_batch=8, layers_per_stage=(1, 2, 2, 3))
    assert [len(s) for s in stage_layers(TOY, cfg)] == [1, 2, 2, 3]
    assert stage_layers(TOY, cfg)[3] == (5, 6, 7)


def _simulate_1f1b_outstanding(pp: int, m: int, rank: int) -> int:
    """Megatron's non-interleaved 1F1B on one rank: warm-up forwards, then one forward and one
    backward alternately, then cool-down backwards; returns the most forwards whose backward
    has not run yet."""
    warmup = min(pp - rank - 1, m)
    outstanding = most = 0
    schedule = ["F"] * warmup
    for _ in range(m - warmup):
        schedule += ["F", "B"]
    schedule += ["B"] * warmup
    for op in schedule:
        outstanding += 1 if op == "F" else -1
        most = max(most, outstanding)
    return most


@pytest.mark.parametrize(("pp", "m"), [(1, 4), (2, 1), (4, 8), (4, 2), (8, 3), (16, 64)])
def test_in_flight_matches_1f1b_schedule(pp: int, m: int) -> None:
    cfg = ParallelConfig(pp=pp, global_batch=m)
    for rank in range(pp):
        assert in_flight_microbatches(cfg, rank) == _simulate_1f1b_outstanding(pp, m, rank)


def _simulate_interleaved_live(pp: int, vpp: int, group: int, m: int,
                               rank: int) -> set[tuple[int, ...]]:
    """Oracle: Megatron's interleaved order on one rank, run pass by pass with the set of
    (chunk, micro-batch) activations alive; the per-chunk counts after every steady-state
    forward (before its backward), or after the last forward when warm-up runs them all."""
    def order(k: int, forward: bool) -> tuple[int, int]:
        chunk = (k // group) % vpp
        micro = (k // (group * vpp)) * group + k % group
        return (chunk if forward else vpp - 1 - chunk), micro

    total = m * vpp
    warmup = min((pp - rank - 1) * 2 + (vpp - 1) * group, total)
    alive: set[tuple[int, int]] = {order(k, True) for k in range(warmup)}
    moments = set()
    if warmup == total:
        moments.add(tuple(sum(1 for c, _ in alive if c == chunk) for chunk in range(vpp)))
    for k in range(total - warmup):
        alive.add(order(warmup + k, True))
        moments.add(tuple(sum(1 for c, _ in alive if c == chunk) for chunk in range(vpp)))
        alive.remove(order(k, False))  # a backward frees what its forward kept
    return moments


@pytest.mark.parametrize(("pp", "vpp", "m", "group"), [
    (2, 4, 4, None), (4, 2, 4, None), (4, 2, 8, None), (4, 3, 12, 6), (8, 2, 16, None),
    (3, 2, 6, None)])
def test_live_chunk_passes_match_the_interleaved_schedule(pp: int, vpp: int, m: int,
                                                          group: int | None) -> None:
    cfg = ParallelConfig(tp=1, pp=pp, vpp=vpp, dp=1, mbs=1, global_batch=m,
                         microbatch_group_size=group)
    for rank in range(pp):
        moments = live_chunk_passes(cfg, rank)
        assert set(moments) == _simulate_interleaved_live(pp, vpp, cfg.group_size, m, rank)
        # whichever chunks hold them, as many micro-batches as in_flight_microbatches counts
        assert {sum(moment) for moment in moments} == {in_flight_microbatches(cfg, rank) * vpp}


def test_live_chunk_passes_of_an_uneven_last_rank() -> None:
    """Megatron's gpt3_mcore_te_tp1_pp4_vp2_account_for_embedding_loss_in_pipeline_split (pp 4,
    2 chunks, 4 micro-batches): the last rank runs 4 forwards of its first chunk (a layer),
    then the loss chunk of micro-batch 0, and from then on each backward frees a loss chunk:
    4 micro-batches of the first chunk and one of the second, where an even count would say
    2.5 of each."""
    cfg = ParallelConfig(tp=1, pp=4, vpp=2, dp=2, mbs=4, global_batch=32)
    assert live_chunk_passes(cfg, 3) == ((4, 1),)
    assert in_flight_microbatches(cfg, 3) == 2.5
    assert live_chunk_passes(cfg, 0) == ((4, 4),)  # warm-up runs every forward first
    assert live_chunk_passes(dataclasses.replace(cfg, vpp=1), 1) == ((3,),)


def test_interleaved_first_stage_factor() -> None:
    """Korthikanti et al. 2022 Sec. 4.2.3: with interleaving the first stage holds
    L * (1 + (p - 1) / (p * v)) layers' activations: in stage-equivalents p * (that) / L."""
    cfg = ParallelConfig(pp=8, vpp=3, global_batch=64)
    assert in_flight_microbatches(cfg, 0) == pytest.approx(8 * (1 + 7 / 24))


@pytest.mark.parametrize(("cfg", "message"), [
    (ParallelConfig(tp=3, global_batch=8), "tp(3) must divide num_attention_heads(32)"),
    (ParallelConfig(tp=16, global_batch=8), "tp(16) must divide num_query_groups(8)"),
    (ParallelConfig(dp=4, mbs=3, global_batch=8), "global_batch(8) must be a multiple of"),
    (ParallelConfig(pp=64, global_batch=8), "num_layers(32) < pp(64)"),
    (ParallelConfig(pp=5, global_batch=8), "must be divisible by pp(5)"),
    (ParallelConfig(ep=2, global_batch=8), "has no experts"),
    (ParallelConfig(cp=3, global_batch=8, seq_len=8192), "multiple of 2 * cp(3)"),
    (ParallelConfig(zero=3, pp=2, global_batch=8), "zero(3) with pp(2)"),
    (ParallelConfig(vpp=2, global_batch=8), "vpp(2) > 1 needs pp > 1"),
    (ParallelConfig(pp=4, vpp=2, global_batch=2), "needs num_microbatches(2) >= pp(4)"),
    (ParallelConfig(pp=2, global_batch=8, layers_per_stage=(16, 15)), "sums to 31"),
    (ParallelConfig(global_batch=8, sequence_parallel=True), "sequence_parallel needs tp > 1"),
    (ParallelConfig(dp=2, global_batch=8, zero=1, overlap_grad_reduce=False),
     "overlap_param_gather needs overlap_grad_reduce"),
])
def test_problems_name_the_values(cfg: ParallelConfig, message: str) -> None:
    problems = cfg.problems(LLAMA8B)
    assert any(message in p for p in problems), problems


def test_world_size_message() -> None:
    cfg = ParallelConfig(tp=8, pp=4, dp=3, global_batch=96)
    assert "tp(8) * pp(4) * cp(1) * dp(3) = 96 != world_size(64)" in cfg.problems(
        LLAMA8B, world_size=64)


def test_moe_problems() -> None:
    mixtral = BUILTIN_MODELS["mixtral-8x7b"]
    assert not ParallelConfig(tp=2, dp=4, ep=8, etp=1, global_batch=8,
                              sequence_parallel=True).problems(mixtral)
    bad = ParallelConfig(tp=2, dp=2, ep=8, global_batch=8, sequence_parallel=True)
    assert any("must divide tp(2) * cp(1) * dp(2)" in p for p in bad.problems(mixtral))
    assert any("ep(3) must divide num_experts(8)" in p for p in ParallelConfig(
        ep=3, dp=3, global_batch=9).problems(mixtral))


@pytest.mark.parametrize("model_name", ["gpt3-175b", "mixtral-8x7b", "deepseek-v3"])
@pytest.mark.parametrize(("recompute", "num_layers"), [
    (Recompute.NONE, None), (Recompute.SELECTIVE, None), (Recompute.FULL, None),
    (Recompute.FULL, 0), (Recompute.FULL, 2), (Recompute.FULL, 99)])
def test_chunk_layer_kinds_count_every_layer_once(model_name: str, recompute: Recompute,
                                                  num_layers: int | None) -> None:
    """The shortcut for dense models gives what counting layer by layer gives; with fp8's
    first and last layers in bf16 those two layers are a kind of their own."""
    model = BUILTIN_MODELS[model_name]
    plain = ParallelConfig(recompute=recompute, recompute_num_layers=num_layers)
    edges = dataclasses.replace(plain, precision=Precision.FP8, bf16_layers=(1, 2))
    last = model.num_layers - 1
    for cfg in (plain, edges):
        for chunk in ((), (0,), tuple(range(5)), tuple(range(3, model.num_layers))):
            expected: dict[tuple[bool, bool, Recompute], int] = {}
            for position, layer in enumerate(chunk):
                bf16 = cfg is edges and (layer == 0 or layer >= last - 1)
                key = (model.is_moe_layer(layer), bf16, cfg.layer_recompute(position))
                expected[key] = expected.get(key, 0) + 1
            assert cfg.chunk_layer_kinds(model, chunk) == expected
