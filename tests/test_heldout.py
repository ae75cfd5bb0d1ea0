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


def test_every_case_reproduces(data: dict) -> None:
    report = heldout_report(data, {"dgx-h100": load_cluster("dgx-h100")})
    assert not report.skipped
    assert [c.id for c in report.cases] == [c["id"] for c in data["cases"]]
    assert all(c.predicted > 0 and "memory: planner allocated" in c.note for c in report.cases)


def test_measured_step_from_tokens_per_gpu(data: dict) -> None:
    """Llama 3 8B row: 128 sequences of 8192 at 14451 tokens/s on each of 8 GPUs."""
    report = heldout_report(data, {"dgx-h100": load_cluster("dgx-h100")})
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
