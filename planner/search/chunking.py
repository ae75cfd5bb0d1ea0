"""Layer counts of the virtual chunks of an interleaved pipeline (OR-Tools CP-SAT).

With interleaving, model chunk k (chunk k of pp * vpp, in layer order) runs on stage k % pp:
each stage holds vpp blocks spread over the model, so the contiguous dynamic program of
search.partition does not apply. Choose chunk sizes n_k >= 1 with sum L to minimise the time a
micro-batch takes through the interleaved schedule, subject to every stage's memory. The
schedule runs the chunks round by round: in round r every stage runs its chunk r * pp + s, the
stages in lockstep (each step waits on its neighbours' sends; Narayanan et al. 2021 Sec. 2.2.2,
Megatron's forward_backward_pipelining_with_interleaving), so a round takes as long as its
slowest chunk and a micro-batch the sum of the rounds: sum over r of max over s of the chunk's
layer costs (plus the stage's extra, the LM head and loss, in the last stage's last chunk).
Without interleaving (one round) that is the slowest stage. Balancing the stages' totals alone
is not enough: a stage with a 1-layer and a 7-layer chunk stalls its neighbours in both rounds
(the schedule simulation gave such a layout a 14x larger bubble than the even split). Among
layouts with the best round sum, the slowest stage total breaks ties, then the largest chunk:
the pipeline fills and drains one chunk per stage at a time, so its bubble is (p - 1) chunk
passes ((p - 1)(t_f + t_b)/v for equal chunks, Narayanan et al. 2021 Sec. 2.2.2) and the
largest chunk bounds it; rounds of 1 + 8 layers tie with rounds of 4 + 5 on both earlier
criteria and the simulation gave the former a 29x larger bubble (Llama 3 8B, pp 4 x vpp 2).
Megatron-LM runs such layouts with --pipeline-model-parallel-layout (the motivation of its
flexible-VPP change: DeepSeek-V3's 61 layers + MTP on PP16 x VPP2).

CP-SAT model: prefix variables P_0 = 0 <= P_1 <= ... <= P_K = L; the MoE layers before P_k
come from an element constraint on their prefix count. When every layer of a kind costs the
same (the cost model under a uniform recompute mode) a chunk's cost is linear in its dense and
MoE counts; otherwise it is cum[P_{k+1}] - cum[P_k] with `cum` the integer prefix sums of the
layer costs (element constraints, slower to solve).
Memory is exact for the cost model used: a stage's peak depends on its stage index and how many
dense and MoE layers it holds (uniform recompute), so `fits(stage, dense, moe)` is tabulated as
the largest MoE count allowed for each dense count and imposed with an element constraint.
Costs are scaled to integers (COST_SCALE per unit) and the solve is bounded by CP-SAT's
deterministic time, with one worker, so the same inputs give the same layout on any machine.
The heuristic even split seeds the search (a hint); callers re-score the result with the
exact schedule simulation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import accumulate

from ortools.sat.python import cp_model

COST_SCALE = 1e6  # seconds -> microseconds
# Effort per solve, in CP-SAT's deterministic time units (machine-independent, so the layout is
# reproducible): a search budget, not a model parameter. At 1.0 the 24 brute-force cases prove
# optimality and a 70B pp4 x vpp5 layout solves in under 0.1 s; raising it only matters for
# layouts reported FEASIBLE (the plan records the status).
DETERMINISTIC_TIME_LIMIT = 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ChunkLayout:
    """Layers of each virtual chunk (model order), the schedule's round sum (input units; the
    slowest stage's cost without interleaving) and the solver's status ("OPTIMAL" or
    "FEASIBLE")."""

    layers_per_chunk: tuple[int, ...]
    max_cost: float
    status: str


def min_max_chunks(costs: Sequence[float], moe: Sequence[bool], pp: int, vpp: int, *,
                   stage_extra: Sequence[float] | None = None,
                   fits: Callable[[int, int, int], bool] | None = None,
                   hint: Sequence[int] | None = None) -> ChunkLayout | None:
    """Chunk sizes minimising the interleaved schedule's round sum (module docstring) where
    every stage `fits(stage, dense_layers, moe_layers)`; `stage_extra[s]` runs in stage s's
    last chunk. None when no layout fits (or none is found in the limit)."""
    n, chunks = len(costs), pp * vpp
    if n < chunks:
        return None
    extra = list(stage_extra) if stage_extra is not None else [0.0] * pp
    cum = [round(c * COST_SCALE) for c in [0.0, *accumulate(costs)]]
    cum_moe = [0, *accumulate(int(m) for m in moe)]
    total_moe = cum_moe[-1]
    model = cp_model.CpModel()
    prefix = [model.new_constant(0)] + [model.new_int_var(k + 1, n - (chunks - k - 1), f"p{k + 1}")
                                       for k in range(chunks - 1)] + [model.new_constant(n)]
    for k in range(chunks):
        model.add(prefix[k + 1] >= prefix[k] + 1)
    moe_at = [model.new_int_var(0, total_moe, f"moe{k}") for k in range(chunks + 1)]
    for k in range(chunks + 1):
        model.add_element(prefix[k], cum_moe, moe_at[k])
    per_kind = _cost_per_kind(costs, moe)
    if per_kind is not None:  # layers of a kind cost the same: chunk costs are linear
        dense_cost, moe_cost = (round(c * COST_SCALE) for c in per_kind)
        at = [dense_cost * (prefix[k] - moe_at[k]) + moe_cost * moe_at[k]
              for k in range(chunks + 1)]
    else:
        at = [model.new_int_var(0, cum[-1], f"cum{k}") for k in range(chunks + 1)]
        for k in range(chunks + 1):
            model.add_element(prefix[k], cum, at[k])
    top = 2 * cum[-1] + round(max(extra) * COST_SCALE)
    worst = model.new_int_var(0, top, "worst")
    rounds = [model.new_int_var(0, top, f"round{r}") for r in range(vpp)]
    largest = model.new_int_var(0, top, "largest")
    for k in range(chunks):
        last_of_stage = k + pp >= chunks
        chunk_cost = at[k + 1] - at[k] + (round(extra[k % pp] * COST_SCALE) if last_of_stage
                                          else 0)
        model.add(rounds[k // pp] >= chunk_cost)
        model.add(largest >= chunk_cost)
    for s in range(pp):
        mine = range(s, chunks, pp)
        stage_cost = sum(at[k + 1] - at[k] for k in mine) + round(extra[s] * COST_SCALE)
        model.add(worst >= stage_cost)
        if fits is None:
            continue
        layers = sum(prefix[k + 1] - prefix[k] for k in mine)
        moe_layers = sum(moe_at[k + 1] - moe_at[k] for k in mine)
        dense = model.new_int_var(0, n - total_moe, f"dense{s}")
        model.add(dense == layers - moe_layers)
        allowed: list[int] = []  # the largest MoE count that fits with d dense layers (-1: none)
        for d in range(n - total_moe + 1):
            best = -1
            # memory grows with either count: scan down from the previous row's limit
            start = allowed[-1] if allowed else total_moe
            for m in range(start, -1, -1):
                if fits(s, d, m):
                    best = m
                    break
            allowed.append(best)
        cap = model.new_int_var(-1, total_moe, f"cap{s}")
        model.add_element(dense, allowed, cap)
        model.add(moe_layers <= cap)
    schedule = model.new_int_var(0, vpp * top, "schedule")
    model.add(schedule == sum(rounds))
    model.minimize(schedule)
    if hint is not None and len(hint) == chunks:
        for k, value in enumerate(accumulate(hint)):
            if k < chunks - 1:
                model.add_hint(prefix[k + 1], value)
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = 1
    solver.parameters.random_seed = 0
    solver.parameters.max_deterministic_time = DETERMINISTIC_TIME_LIMIT
    status = solver.solve(model)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None
    first_status = status
    # second pass: among layouts with that round sum, the smallest slowest-stage total, then
    # the smallest largest chunk (lexicographic: worst weighs more than any chunk can)
    model.add(schedule <= solver.value(schedule))
    model.clear_hints()
    for k in range(1, chunks):
        model.add_hint(prefix[k], solver.value(prefix[k]))
    model.minimize(worst * (top + 1) + largest)
    status = solver.solve(model)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None
    if first_status != cp_model.OPTIMAL:
        status = cp_model.FEASIBLE
    bounds = [solver.value(p) for p in prefix]
    sizes = tuple(b - a for a, b in zip(bounds, bounds[1:], strict=False))
    return ChunkLayout(layers_per_chunk=sizes, max_cost=solver.value(schedule) / COST_SCALE,
                       status="OPTIMAL" if status == cp_model.OPTIMAL else "FEASIBLE")


def _cost_per_kind(costs: Sequence[float], moe: Sequence[bool]) -> tuple[float, float] | None:
    """(dense layer cost, MoE layer cost) when every layer of a kind costs the same (what the
    cost model gives under a uniform recompute mode), else None."""
    kinds: dict[bool, float] = {}
    for cost, is_moe in zip(costs, moe, strict=True):
        if kinds.setdefault(is_moe, cost) != cost:
            return None
    return kinds.get(False, 0.0), kinds.get(True, 0.0)
