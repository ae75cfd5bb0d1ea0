"""Contiguous min-max layer partition across pipeline stages (a dynamic program).

Layers 0..L-1 go to pp stages in order, each stage a contiguous block; stage s also carries
`stage_extra[s]` (the embedding on the first stage, the LM head and loss on the last). Minimise
the slowest stage subject to `fits(stage, start, end)`, which says whether layers
[start, end) fit in that stage's memory (stages hold different numbers of micro-batches in
flight, so the same block can fit on the last stage and not on the first).

best[s][j] = min over i of max(best[s-1][i], cost(i, j) + extra[s]), over blocks that fit:
O(pp * L^2) time, exact for the max (proved against brute force in the tests). Among splits
with the same max, the DP prefers a smaller sum of squared stage costs (more balanced stages:
less variance for the schedule; a heuristic, since that secondary objective has no optimal
substructure), then earlier stages holding more layers, so the result is deterministic.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import accumulate


@dataclass(frozen=True, slots=True, kw_only=True)
class Partition:
    """Layers per stage and the slowest stage's cost (same unit as the inputs)."""

    layers_per_stage: tuple[int, ...]
    max_cost: float


def min_max_partition(costs: Sequence[float], num_stages: int, *,
                      stage_extra: Sequence[float] | None = None,
                      fits: Callable[[int, int, int], bool] | None = None,
                      min_layers: int = 1,
                      block_cost: Callable[[int, int], float] | None = None
                      ) -> Partition | None:
    """The contiguous split of `costs` into `num_stages` blocks of at least `min_layers`
    minimising the largest block cost (+ its stage's extra), among splits where every block
    `fits`; None when no split fits. `block_cost(start, end)` replaces the sum of `costs` when
    a block's cost is not the sum of its layers' (recomputing the first N layers of a stage:
    which layers those are depends on where the block starts)."""
    n = len(costs)
    extra = list(stage_extra) if stage_extra is not None else [0.0] * num_stages
    if len(extra) != num_stages:
        raise ValueError(f"stage_extra has {len(extra)} entries, expected {num_stages}")
    if num_stages < 1 or n < num_stages * min_layers:
        return None
    prefix = [0.0, *accumulate(costs)]

    def cost_of(i: int, j: int) -> float:
        return block_cost(i, j) if block_cost is not None else prefix[j] - prefix[i]

    inf = float("inf")
    # best[s][j]: the smallest max-cost of stages 0..s holding layers [0, j)
    best = [[(inf, inf)] * (n + 1) for _ in range(num_stages)]  # (max cost, sum of squares)
    # start[s][j]: where stage s's block begins in that optimum
    start = [[-1] * (n + 1) for _ in range(num_stages)]
    for j in range(min_layers, n + 1):
        if fits is None or fits(0, 0, j):
            cost = cost_of(0, j) + extra[0]
            best[0][j] = (cost, cost * cost)
            start[0][j] = 0
    for s in range(1, num_stages):
        lowest = (s + 1) * min_layers
        for j in range(lowest, n + 1):
            # iterate i descending so that, on ties, the earlier stages keep more layers
            for i in range(j - min_layers, s * min_layers - 1, -1):
                previous_max, previous_sq = best[s - 1][i]
                if previous_max == inf:
                    continue
                if fits is not None and not fits(s, i, j):
                    continue
                cost = cost_of(i, j) + extra[s]
                value = (max(previous_max, cost), previous_sq + cost * cost)
                if value < best[s][j]:
                    best[s][j], start[s][j] = value, i
    if best[-1][n][0] == inf:
        return None
    sizes = []
    j = n
    for s in range(num_stages - 1, -1, -1):
        i = start[s][j]
        sizes.append(j - i)
        j = i
    return Partition(layers_per_stage=tuple(reversed(sizes)), max_cost=best[-1][n][0])
