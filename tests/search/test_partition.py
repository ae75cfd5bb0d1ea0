"""The min-max partition against brute force, with stage extras and memory limits."""

from __future__ import annotations

import itertools
import random

import pytest

from planner.search.partition import min_max_partition


def _brute_force(costs, stages, extra, fits, min_layers):  # type: ignore[no-untyped-def]
    n = len(costs)
    best = None
    for cuts in itertools.combinations(range(1, n), stages - 1):
        bounds = (0, *cuts, n)
        sizes = [b - a for a, b in itertools.pairwise(bounds)]
        if min(sizes) < min_layers:
            continue
        if not all(fits(s, a, b) for s, (a, b) in enumerate(itertools.pairwise(bounds))):
            continue
        value = max(sum(costs[a:b]) + extra[s]
                    for s, (a, b) in enumerate(itertools.pairwise(bounds)))
        if best is None or value < best:
            best = value
    return best


@pytest.mark.parametrize("seed", range(40))
def test_matches_brute_force(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(3, 9)
    stages = rng.randint(1, min(4, n))
    costs = [rng.choice([1.0, 1.5, 2.0, 3.0]) for _ in range(n)]
    extra = [rng.choice([0.0, 0.5, 2.0]) for _ in range(stages)]
    limit = rng.randint(2, n)

    def fits(stage: int, a: int, b: int) -> bool:  # later stages hold fewer micro-batches
        return (b - a) <= limit + stage

    got = min_max_partition(costs, stages, stage_extra=extra, fits=fits)
    expected = _brute_force(costs, stages, extra, fits, 1)
    if expected is None:
        assert got is None
    else:
        assert got is not None and got.max_cost == pytest.approx(expected)
        assert sum(got.layers_per_stage) == n and len(got.layers_per_stage) == stages


def test_heavy_last_stage_gets_fewer_layers() -> None:
    """8 equal layers on 4 stages, the LM head worth 2 layers on the last: an even split peaks
    at 2 + 2 = 4; 10 units over 4 stages need a max of at least 3, reached with one layer on
    the last stage; among those, the most balanced (sum of squares 26) with earlier stages
    fuller: 3, 2, 2, 1."""
    got = min_max_partition([1.0] * 8, 4, stage_extra=[0, 0, 0, 2])
    assert got is not None and got.max_cost == 3.0
    assert got.layers_per_stage == (3, 2, 2, 1)


def test_infeasible_and_deterministic() -> None:
    assert min_max_partition([1.0] * 3, 4) is None
    assert min_max_partition([1.0] * 4, 2, fits=lambda s, a, b: b - a <= 1) is None
    first = min_max_partition([1.0] * 7, 3)
    assert first == min_max_partition([1.0] * 7, 3)
    assert first is not None and first.layers_per_stage == (3, 2, 2)
