"""Interleaved chunk sizes by CP-SAT, proved against brute force on small cases."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Sequence

import pytest

from planner.catalog import BUILTIN_MODELS
from planner.cost.step import estimate_step
from planner.hardware_io import load_cluster
from planner.memory import estimate_memory
from planner.parallel import ParallelConfig, stage_chunks
from planner.search.chunking import COST_SCALE, min_max_chunks
from planner.search.solver import balanced_chunks


def brute_force(costs: Sequence[float], moe: Sequence[bool], pp: int, vpp: int,
                extra: Sequence[float], fits: Callable[[int, int, int], bool]) -> int | None:
    """The smallest round sum (scaled to integers) over every chunk layout: each round r
    takes its slowest chunk r * pp + s, a stage's extra in its last chunk."""
    n, k_total = len(costs), pp * vpp
    best = None
    for cuts in itertools.combinations(range(1, n), k_total - 1):
        bounds = [0, *cuts, n]
        ok = True
        for s in range(pp):
            dense = experts = 0
            for k in range(s, k_total, pp):
                for layer in range(bounds[k], bounds[k + 1]):
                    experts += moe[layer]
                    dense += not moe[layer]
            if not fits(s, dense, experts):
                ok = False
                break
        if not ok:
            continue
        total = 0
        for r in range(vpp):
            slowest = 0
            for s in range(pp):
                k = r * pp + s
                cost = sum(round(costs[i] * COST_SCALE) for i in range(bounds[k], bounds[k + 1]))
                if k + pp >= k_total:
                    cost += round(extra[s] * COST_SCALE)
                slowest = max(slowest, cost)
            total += slowest
        if best is None or total < best:
            best = total
    return best


# costs and extras in whole microseconds (3 decimals of a second x COST_SCALE), so that the
# solver's integer costs equal these exactly
CASES = []
_rng = random.Random(7)
while len(CASES) < 24:
    n, pp, vpp = _rng.randint(6, 11), _rng.choice([2, 3]), _rng.choice([2, 3])
    if n < pp * vpp:
        continue
    uniform = len(CASES) % 2 == 0  # half with one cost per kind (the linear model)
    dense_cost, moe_cost = _rng.uniform(0.5, 2.0), _rng.uniform(0.5, 2.0)
    moe = [i >= 2 and _rng.random() < 0.7 for i in range(n)]
    costs = [round(moe_cost if m else dense_cost, 3) if uniform
             else round(_rng.uniform(0.5, 2.0), 3) for m in moe]
    extra = [round(_rng.uniform(0, 1.5), 3) for _ in range(pp)]
    caps = [_rng.randint(n // pp, n) for _ in range(pp)]
    CASES.append((costs, moe, pp, vpp, extra, caps))


@pytest.mark.parametrize("case", range(len(CASES)))
def test_cp_sat_matches_brute_force(case: int) -> None:
    costs, moe, pp, vpp, extra, caps = CASES[case]

    def fits(stage: int, dense: int, experts: int) -> bool:
        return dense + 2 * experts <= caps[stage] + 3  # memory grows with both counts

    got = min_max_chunks(costs, moe, pp, vpp, stage_extra=extra, fits=fits)
    want = brute_force(costs, moe, pp, vpp, extra, fits)
    if want is None:
        assert got is None
        return
    assert got is not None and got.status == "OPTIMAL"
    # costs in whole microseconds: the solver's integer objective is exact
    assert round(got.max_cost * COST_SCALE) == want
    assert sum(got.layers_per_chunk) == len(costs) and min(got.layers_per_chunk) >= 1


def test_balanced_chunks_plan_is_deterministic_valid_and_faster() -> None:
    cluster = load_cluster("dgx-h100")
    # Llama 3 8B at tp 2: the LM head (vocabulary 128256) costs about two layers
    model = BUILTIN_MODELS["llama3-8b"]
    cfg = ParallelConfig(tp=2, pp=4, dp=4, vpp=2, global_batch=512, seq_len=8192,
                         sequence_parallel=True, zero=1)
    solved = balanced_chunks(model, cfg, cluster, cluster.min_gpu_memory_bytes, 0.0)
    assert solved is not None and solved == balanced_chunks(
        model, cfg, cluster, cluster.min_gpu_memory_bytes, 0.0)
    first, status = solved
    assert status in ("CP-SAT OPTIMAL", "CP-SAT FEASIBLE")
    assert first.problems(model) == ()
    assert estimate_memory(model, first, cluster.min_gpu_memory_bytes).fits
    # the last stage carries the LM head: the layout gives it fewer layers
    per_stage = [sum(len(c) for c in stage) for stage in stage_chunks(model, first)]
    assert per_stage[-1] < max(per_stage)
    assert (estimate_step(model, first, cluster).iteration_s
            < estimate_step(model, cfg, cluster).iteration_s)
