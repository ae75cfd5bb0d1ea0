"""The held-out cases (planner/data/heldout.yaml) reproduce and convert as their source states.

No test bounds their error: they are the check on the calibration, not a target for it."""

from __future__ import annotations

import pytest

from planner.calibration import load_measurements
from planner.hardware_io import load_cluster
from planner.heldout import heldout_config, heldout_report
from planner.parallel import Recompute, VocabStrategy


@pytest.fixture(scope="module")
def data() -> dict:
    return load_measurements("heldout.yaml")


CLUSTERS = ("dgx-h100", "grand-teton-h100-500w")


def test_every_case_reproduces(data: dict) -> None:
    report = heldout_report(data, {name: load_cluster(name) for name in CLUSTERS})
    assert not report.skipped
    assert [c.id for c in report.cases] == [c["id"] for c in data["cases"]]
    assert all(c.predicted > 0 and "memory: planner allocated" in c.note for c in report.cases)


def test_measured_step_from_tokens_per_gpu(data: dict) -> None:
    """Llama 3 8B row: 128 sequences of 8192 at 14451 tokens/s on each of 8 GPUs."""
    report = heldout_report(data, {name: load_cluster(name) for name in CLUSTERS})
    case = next(c for c in report.cases if "llama3_8b" in c.id)
    assert case.measured == pytest.approx(128 * 8192 / (14451 * 8))


def test_config_as_the_table_states(data: dict) -> None:
    """405B: 1024 GPUs at TP 8, PP 8, CP 2 leave DP 8; the recipe counts the embedding and the
    loss as layers in the pipeline split (redistribute), 64 micro-batches of 1."""
    case = next(c for c in data["cases"] if "405b" in c["id"])
    cfg = heldout_config(case)
    assert (cfg.dp, cfg.num_microbatches, cfg.world_size) == (8, 64, 1024)
    assert cfg.vocab_strategy is VocabStrategy.REDISTRIBUTE and cfg.recompute is Recompute.NONE
    moe = heldout_config(next(c for c in data["cases"] if "qwen3" in c["id"]))
    assert moe.moe_token_imbalance == 1.0  # the page: routing force-balanced


def test_torchtitan_rows_as_the_benchmark_ran(data: dict) -> None:
    """torchtitan's 405B rows (Dec 2024): 512 GPUs at TP 8, PP 8 leave FSDP 8; its pipelining
    then made as many micro-batches as pipeline ranks (8 of the local 32 sequences, the
    interleaved schedule too) and split 126 layers with generate_split_points (first and last
    stage one layer fewer); the context-parallel rows share each sequence over cp ranks. They
    price torchtitan of then: SDPA's FlashAttention-2, the block before 0.3.0, the loss not
    compiled. The report groups them apart from the Megatron-Bridge rows."""
    from planner.parallel import AttentionKernel, Framework
    cases = {c["id"]: heldout_config(c) for c in data["cases"]}
    looped = cases["torchtitan_2412_l31_405b_512gpu_fsdp8_tp8_pp8_interleaved"]
    plain = cases["torchtitan_2412_l31_405b_512gpu_fsdp8_tp8_pp8_1f1b"]
    for cfg in (looped, plain):
        assert (cfg.dp, cfg.num_microbatches, cfg.world_size) == (8, 8, 512)
        assert cfg.framework is Framework.TORCHTITAN and cfg.legacy_attention
        assert cfg.attention_kernel is AttentionKernel.FA2 and not cfg.compiled_loss
    assert plain.layers_per_stage == (15, 16, 16, 16, 16, 16, 16, 15)
    assert looped.layers_per_chunk == (7,) + (8,) * 14 + (7,) and looped.vpp == 2
    cp8 = cases["torchtitan_2412_l31_405b_512gpu_fsdp1_tp8_pp8_cp8_s262144"]
    assert (cp8.dp, cp8.cp, cp8.global_batch, cp8.num_microbatches) == (1, 8, 8, 8)
    report = heldout_report(data, {name: load_cluster(name) for name in CLUSTERS})
    groups = {c.group for c in report.cases}
    assert groups == {"Megatron-Bridge (held out), real size, h100-sxm5-80gb",
                      "torchtitan (held out), real size, h100-96gb-hbm2e-500w"}


def test_memory_rows_compare_reserved_memory(data: dict) -> None:
    """The torchtitan rows give each run's max reserved memory over its GPUs: the held-out
    memory report sets it against the planner's reserved memory of its fullest stage, and
    leaves out the rows without one (Megatron-Bridge's tables give none)."""
    from planner.catalog import BUILTIN_MODELS
    from planner.heldout import heldout_memory_report, heldout_sources
    from planner.memory import estimate_memory
    from planner.units import GiB
    clusters = {name: load_cluster(name) for name in CLUSTERS}
    report = heldout_memory_report(data, clusters)
    stated = [c for c in data["cases"] if "reserved_GiB" in c["measured"]]
    assert len(report.cases) == len(stated) == 8
    case = next(c for c in stated if c["id"].endswith("_tp8_fp8"))
    row = next(c for c in report.cases if c.id == case["id"])
    assert row.measured == pytest.approx(71.9 * GiB)
    estimate = estimate_memory(BUILTIN_MODELS[case["model"]], heldout_config(case),
                               clusters[case["cluster"]].min_gpu_memory_bytes)
    assert row.predicted == max(s.reserved_bytes for s in estimate.stages)
    assert heldout_sources(data) == (
        "Megatron-Bridge performance summary (25.11 and 26.02 NeMo containers), DGX-H100",
        "torchtitan's Llama 3.1 benchmark on Grand Teton H100s (December 2024)")
