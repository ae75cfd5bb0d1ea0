"""The search loop: prune by memory, rank by step time, re-score the leaders exactly.

1. Every family of degrees (space.degree_families) that can run gets a lower bound on its
   step time (cost.step.step_lower_bound, valid for all its variants); families are taken in
   order of it, and once a bound exceeds the `rescore`-th best time found the rest are
   dropped. A family's lightest configurations (space.lightest_variants: micro-batch 1, full
   recompute, the most-sharding ZeRO stages) are estimated first; memory only grows with the
   micro-batch, less recompute and less sharding, so when none fits, no configuration of the
   family does. Both prunes are exact; --exhaustive skips them and gives the same answer.
2. Every configuration of a surviving family that fits is timed with the closed-form pipeline
   term (step.fast_makespan) on links resolved once per family, except those dominated: for
   one micro-batch size and ZeRO stage, more recompute only adds time (and the schedule's
   makespan is monotone in pass durations), so once a recompute level fits, the heavier ones
   are skipped (variants yields recompute none, selective, full in that order). And memory
   only grows with the micro-batch (stored activations scale with in-flight micro-batches x
   mbs, which never shrinks as mbs grows; transients grow with it), so once a (recompute,
   ZeRO) pair overflows, its larger micro-batches are skipped (variants yields mbs
   ascending).
3. For the best `rescore` of them, the layer split that minimises the slowest stage under
   each stage's memory (balanced_layout: the LM head makes the last stage heavy; with
   interleaving balanced_chunks) joins them when the vocabulary strategy is the search's to
   choose (a strategy given fixes the split);
   all are timed with the event-driven schedule simulation and sorted; ties break on the
   configuration's canonical key, so the answer is deterministic.
"""

from __future__ import annotations

import dataclasses
import heapq
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import accumulate

from planner.cost import comm
from planner.cost.comm import Axis, RingLink
from planner.cost.step import (
    StepLinks,
    StepTime,
    estimate_step,
    layer_costs,
    resolve_links,
    step_lower_bound,
)
from planner.hardware import Cluster
from planner.memory import MemoryEstimate, estimate_memory, memory_fits, stage_memory
from planner.model import ModelSpec
from planner.parallel import (
    Framework,
    ParallelConfig,
    Recompute,
    VocabStrategy,
    stage_chunks,
    stage_layers,
)
from planner.search.chunking import min_max_chunks
from planner.search.partition import min_max_partition
from planner.search.space import (
    Degrees,
    SearchSpec,
    degree_families,
    lightest,
    lightest_variants,
    variants,
)

# Interleaved leaders whose chunk sizes CP-SAT rebalances: a search budget (each is a solve of
# up to chunking.DETERMINISTIC_TIME_LIMIT), kept small so the bench cases stay in their time
# targets; the even split of every other leader is still simulated.
CHUNKED_LEADERS = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class Candidate:
    """A configuration with its estimates; `layout_solver` says where its layer split came
    from ("" = the vocabulary strategy's own split, else the solver and its status)."""

    config: ParallelConfig
    memory: MemoryEstimate
    step: StepTime | None
    layout_solver: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class SearchResult:
    """`plans`: the best configurations that fit, best first. `closest`: when none fits, the
    configurations with the smallest peak. `rejected`: why configurations could not run."""

    plans: tuple[Candidate, ...]
    closest: tuple[Candidate, ...]
    families: int
    families_pruned: int
    families_bounded: int
    candidates_evaluated: int
    candidates_fit: int
    rejected: tuple[tuple[str, int], ...]
    elapsed_s: float

    def stats(self) -> dict[str, object]:
        return {"elapsed_s": round(self.elapsed_s, 3), "families": self.families,
                "families_pruned_by_memory": self.families_pruned,
                "families_pruned_by_step_time": self.families_bounded,
                "candidates_evaluated": self.candidates_evaluated,
                "candidates_fit": self.candidates_fit, "rejected": dict(self.rejected)}


def balanced_layout(model: ModelSpec, cfg: ParallelConfig, cluster: Cluster,
                    capacity_bytes: int, headroom_frac: float) -> ParallelConfig | None:
    """`cfg` with the layer split that minimises its slowest stage (search.partition) where
    every stage fits, when that differs from its own split; None otherwise. Applies to
    non-interleaved pipelines with the embedding and LM head on the end stages.

    With recompute of the first N layers of each stage (Megatron's block method: one N for
    every stage), the split and N are chosen together: for each N up to cfg's, the DP runs
    with block costs where a stage's first N layers pay the recompute, and the fastest split
    over all N wins (a lighter first stage may need a smaller N)."""
    if cfg.pp == 1 or cfg.vpp > 1 or cfg.layers_per_stage or cfg.layers_per_chunk:
        return None
    if cfg.vocab_strategy is VocabStrategy.VOCAB_PARALLEL:
        return None
    usable = capacity_bytes * (1 - headroom_frac)
    probe = dataclasses.replace(cfg, vocab_strategy=VocabStrategy.BASELINE)
    extra = [0.0] * cfg.pp
    if cfg.recompute_num_layers is None:
        costs, head = layer_costs(model, cfg, cluster)
        extra[-1] = head
        options: list[tuple[int | None, Callable[[int, int], float] | None]] = [(None, None)]
    else:
        full, head = layer_costs(model, cfg, cluster)
        costs, _ = layer_costs(model, dataclasses.replace(
            cfg, recompute=Recompute.NONE, recompute_num_layers=None), cluster)
        extra[-1] = head
        options = [(n, _first_n_cost(full, costs, n))
                   for n in range(1, cfg.recompute_num_layers + 1)]
    best: tuple[float, tuple[int, ...], int | None] | None = None
    for n, block_cost in options:
        trial = dataclasses.replace(probe, recompute_num_layers=n)
        memo: dict[tuple[int, int, int], bool] = {}

        def fits(stage: int, start: int, end: int, trial: ParallelConfig = trial,
                 memo: dict[tuple[int, int, int], bool] = memo) -> bool:
            moe = sum(model.is_moe_layer(i) for i in range(start, end))
            key = (stage, end - start, moe)  # a block's memory depends on these only
            if key not in memo:
                chunk = (tuple(range(start, end)),)
                memo[key] = stage_memory(model, trial, stage, chunk).peak_bytes <= usable
            return memo[key]

        partition = min_max_partition(costs, cfg.pp, stage_extra=extra, fits=fits,
                                      block_cost=block_cost)
        if partition is not None and (best is None or partition.max_cost < best[0]):
            best = (partition.max_cost, partition.layers_per_stage, n)
    if best is None:
        return None
    _, layout, n = best
    current = tuple(len(layers) for layers in stage_layers(model, cfg))
    if layout == current and n == cfg.recompute_num_layers:
        return None
    return dataclasses.replace(probe, layers_per_stage=layout, recompute_num_layers=n)


def _first_n_cost(full: Sequence[float], plain: Sequence[float],
                  n: int) -> Callable[[int, int], float]:
    """Cost of layers [i, j) as one stage whose first n layers are recomputed."""
    full_prefix = [0.0, *accumulate(full)]
    plain_prefix = [0.0, *accumulate(plain)]

    def cost(i: int, j: int) -> float:
        k = min(j, i + n)
        return full_prefix[k] - full_prefix[i] + plain_prefix[j] - plain_prefix[k]

    return cost


def balanced_chunks(model: ModelSpec, cfg: ParallelConfig, cluster: Cluster,
                    capacity_bytes: int, headroom_frac: float
                    ) -> tuple[ParallelConfig, str] | None:
    """`cfg` with the interleaved chunk sizes that minimise the slowest stage where every stage
    fits (search.chunking, CP-SAT), and the solver's status, when they differ from its own;
    None otherwise. Applies to interleaved pipelines with the embedding and LM head on the end
    stages and a uniform recompute mode."""
    if cfg.pp == 1 or cfg.vpp == 1 or cfg.layers_per_stage or cfg.layers_per_chunk:
        return None
    if cfg.recompute_num_layers or cfg.vocab_strategy is VocabStrategy.VOCAB_PARALLEL:
        return None
    costs, head = layer_costs(model, cfg, cluster)
    usable = capacity_bytes * (1 - headroom_frac)
    probe = dataclasses.replace(cfg, vocab_strategy=VocabStrategy.BASELINE)
    dense_layers = [i for i in range(model.num_layers) if not model.is_moe_layer(i)]
    moe_layers = [i for i in range(model.num_layers) if model.is_moe_layer(i)]

    def fits(stage: int, dense: int, moe: int) -> bool:
        if dense > len(dense_layers) or moe > len(moe_layers):
            return False
        if dense + moe == 0:
            return True
        chunk = (tuple(sorted(dense_layers[:dense] + moe_layers[:moe])),)
        return stage_memory(model, probe, stage, chunk).peak_bytes <= usable

    extra = [0.0] * cfg.pp
    extra[-1] = head
    current = [len(chunk) for k in range(cfg.pp * cfg.vpp)
               for chunk in (stage_chunks(model, cfg)[k % cfg.pp][k // cfg.pp],)]
    layout = min_max_chunks(costs, [model.is_moe_layer(i) for i in range(model.num_layers)],
                            cfg.pp, cfg.vpp, stage_extra=extra, fits=fits, hint=current)
    if layout is None or list(layout.layers_per_chunk) == current:
        return None
    return (dataclasses.replace(probe, layers_per_chunk=layout.layers_per_chunk),
            f"CP-SAT {layout.status}")


def canonical_key(cfg: ParallelConfig) -> tuple[object, ...]:
    """A total order on configurations for tie-breaking (fewer model-parallel GPUs first)."""
    return (cfg.tp * cfg.pp * cfg.cp, cfg.tp, cfg.pp, cfg.cp, cfg.ep, cfg.expert_tp, cfg.vpp,
            cfg.mbs, list(type(cfg.recompute)).index(cfg.recompute), len(cfg.recompute_modules),
            cfg.recompute_modules, cfg.recompute_num_layers or 0, cfg.zero,
            cfg.vocab_strategy.value, cfg.layers_per_stage, cfg.layers_per_chunk)


def search(model: ModelSpec, spec: SearchSpec, cluster: Cluster, *, top_k: int = 5,
           headroom_frac: float = 0.0, exhaustive: bool = False, rescore: int = 20,
           clock: Callable[[], float] = time.perf_counter,
           progress: Callable[[int, int], None] | None = None) -> SearchResult:
    """The fastest configurations of `model` for the job `spec` that fit on `cluster`.
    `progress(done, total)` is called as families of degrees are settled (a progress bar)."""
    started = clock()
    capacity = cluster.min_gpu_memory_bytes
    gpu = cluster.gpu_types[0]
    rejected: Counter[str] = Counter()
    pruned = bounded = evaluated = fit = 0
    best_times: list[float] = []  # the `rescore` fastest so far, negated (a max-heap)
    links_by_degrees: dict[tuple[object, ...], StepLinks] = {}
    ranked: list[tuple[float, tuple[object, ...], Candidate]] = []
    closest: list[tuple[int, tuple[object, ...], Candidate]] = []
    all_families = list(degree_families(model, spec))
    total = len(all_families)
    families = total
    # pass 1: drop families that cannot run and bound the step time of the rest (cheap: their
    # TP and EP rings only)
    screened: list[tuple[float, int, Degrees, ParallelConfig]] = []
    tp_rings: dict[tuple[object, ...], RingLink] = {}
    ep_rings: dict[tuple[object, ...], RingLink] = {}
    for index, family in enumerate(all_families):
        light = lightest(family, spec)
        problems = light.problems(model, gpu)
        if problems:
            rejected[_reason(problems[0])] += 1
            continue
        bound = 0.0
        if not exhaustive:
            ring_key = (light.tp, light.cp, light.dp, light.pp, light.rank_order)
            if ring_key not in tp_rings:
                tp_rings[ring_key] = comm.slowest_ring(cluster, light, Axis.TP)
            ep_ring = None
            if light.ep > 1:
                ep_key = (*ring_key, light.ep, light.expert_tp)
                if ep_key not in ep_rings:
                    ep_rings[ep_key] = comm.slowest_ring(cluster, light, Axis.EP)
                ep_ring = ep_rings[ep_key]
            bound = step_lower_bound(model, light, cluster, tp_rings[ring_key], ep_ring)
        screened.append((bound, index, family, light))
    done = total - len(screened)
    if progress is not None:
        progress(done, total)
    # pass 2: the most promising families first, so that the leaders' threshold tightens
    # early; once a family's bound exceeds the `rescore`-th best time, so do all after it.
    # A family whose lightest configuration does not fit has no configuration that does.
    screened.sort(key=lambda e: (e[0], e[1]))
    for position, (bound, _, family, light) in enumerate(screened):
        if not exhaustive and len(best_times) >= rescore and bound > -best_times[0]:
            bounded = len(screened) - position  # no variant of these can join the leaders
            break
        done += 1
        if progress is not None:
            progress(done, total)
        if not exhaustive:
            lightest_memory = [(estimate_memory(model, cfg, capacity, headroom_frac), cfg)
                               for cfg in lightest_variants(family, spec)]
            if not any(memory.fits for memory, _ in lightest_memory):
                pruned += 1
                memory, cfg = min(lightest_memory, key=lambda e: e[0].peak_bytes)
                closest.append((memory.peak_bytes, canonical_key(cfg),
                                Candidate(config=cfg, memory=memory, step=None)))
                continue
        degrees = _link_key(light)
        if degrees not in links_by_degrees:  # links depend on the degrees only
            links_by_degrees[degrees] = resolve_links(cluster, light)
        links = links_by_degrees[degrees]
        none_fits: set[tuple[int, int]] = set()  # (mbs, zero) that fit without recompute
        recompute_fits: set[tuple[int, int]] = set()  # (mbs, zero) that fit with some
        dominated: set[tuple[int, int]] = set()  # (mbs, zero) already fitted at less recompute
        # (recompute, modules, zero) that overflowed at a smaller mbs
        too_big: set[tuple[Recompute, tuple[str, ...], int]] = set()
        # (mbs, zero) -> the full-recompute variant, where some recompute fits and none does
        # not: recomputing only some layers may fit too (tried below)
        partial_from: dict[tuple[int, int], ParallelConfig] = {}
        for cfg in variants(family, spec, model):
            if (cfg.recompute is Recompute.FULL and spec.recompute is None
                    and spec.framework is Framework.MEGATRON):  # the block method is Megatron's
                partial_from[(cfg.mbs, cfg.zero)] = cfg
            level = (cfg.recompute, cfg.recompute_modules, cfg.zero)
            if (cfg.mbs, cfg.zero) in dominated or level in too_big:
                continue
            problems = cfg.problems(model, gpu)
            if problems:
                rejected[_reason(problems[0])] += 1
                continue
            evaluated += 1
            memory = estimate_memory(model, cfg, capacity, headroom_frac)
            if not memory.fits:
                closest.append((memory.peak_bytes, canonical_key(cfg),
                                Candidate(config=cfg, memory=memory, step=None)))
                if not exhaustive:
                    too_big.add(level)
                continue
            fit += 1
            if cfg.recompute is Recompute.NONE:
                none_fits.add((cfg.mbs, cfg.zero))
            else:
                recompute_fits.add((cfg.mbs, cfg.zero))
            if not exhaustive:
                dominated.add((cfg.mbs, cfg.zero))
            step = estimate_step(model, cfg, cluster, links=links, exact=False)
            ranked.append((step.iteration_s, canonical_key(cfg),
                           Candidate(config=cfg, memory=memory, step=step)))
            _keep_best(best_times, step.iteration_s, rescore)
        for key, cfg in partial_from.items():  # recompute the first N layers of each chunk
            if key in none_fits or key not in recompute_fits:
                continue
            for partial, memory in _partial_recompute(model, cfg, capacity, headroom_frac,
                                                      exhaustive):
                evaluated += 1
                fit += 1
                step = estimate_step(model, partial, cluster, links=links, exact=False)
                ranked.append((step.iteration_s, canonical_key(partial),
                               Candidate(config=partial, memory=memory, step=step)))
                _keep_best(best_times, step.iteration_s, rescore)
    if progress is not None:
        progress(total, total)
    by_key = lambda e: (e[0], e[1])  # noqa: E731
    leaders = [e[2] for e in heapq.nsmallest(max(rescore, top_k), ranked, key=by_key)]
    seen = {c.config for c in leaders}
    interleaved = 0
    # custom layer splits are Megatron's (decoder-first/last, the pipeline layout string);
    # torchtitan takes only its own even or first/last-lighter splits; a vocabulary strategy
    # the user fixed fixes the split too (baseline even, redistribute Megatron's accounting)
    custom = spec.framework is Framework.MEGATRON and spec.vocab_strategy is None
    for candidate in list(leaders) if custom else []:
        balanced = balanced_layout(model, candidate.config, cluster, capacity, headroom_frac)
        solver = "min-max DP"
        if balanced is None and candidate.config.vpp > 1 and interleaved < CHUNKED_LEADERS:
            interleaved += 1  # a CP-SAT solve each: the few best interleaved leaders only
            chunked = balanced_chunks(model, candidate.config, cluster, capacity,
                                      headroom_frac)
            if chunked is not None:
                balanced, solver = chunked
        if balanced is not None and balanced not in seen:
            seen.add(balanced)
            memory = estimate_memory(model, balanced, capacity, headroom_frac)
            if memory.fits:
                leaders.append(Candidate(config=balanced, memory=memory, step=None,
                                         layout_solver=solver))
    exact = []
    for candidate in leaders:
        step = estimate_step(model, candidate.config, cluster,
                             links=links_by_degrees.get(_link_key(candidate.config)))
        exact.append((step.iteration_s, canonical_key(candidate.config),
                      dataclasses.replace(candidate, step=step)))
    exact.sort(key=lambda e: (e[0], e[1]))
    return SearchResult(
        plans=tuple(e[2] for e in exact[:top_k]),
        closest=tuple(e[2] for e in heapq.nsmallest(top_k, closest, key=by_key)),
        families=families, families_pruned=pruned, families_bounded=bounded,
        candidates_evaluated=evaluated,
        candidates_fit=fit, rejected=tuple(sorted(rejected.items())),
        elapsed_s=clock() - started,
    )


def _partial_recompute(model: ModelSpec, full: ParallelConfig, capacity: int,
                       headroom_frac: float, exhaustive: bool
                       ) -> list[tuple[ParallelConfig, MemoryEstimate]]:
    """Configurations that fully recompute only the first N layers of each chunk (Megatron
    --recompute-method block --recompute-num-layers N) and fit, for a configuration `full`
    whose no-recompute variant does not fit.

    Memory falls and time rises as N grows (each recomputed layer keeps only its input and
    runs its forward again), so the fastest that fits is the smallest fitting N: found by
    bisection. `exhaustive` returns every fitting N instead."""
    largest = max(len(chunk) for stage in stage_chunks(model, full) for chunk in stage)
    options = range(1, largest)
    if not options:
        return []

    def at(n: int) -> tuple[ParallelConfig, MemoryEstimate]:
        cfg = dataclasses.replace(full, recompute_num_layers=n)
        return cfg, estimate_memory(model, cfg, capacity, headroom_frac)

    if exhaustive:
        return [(cfg, memory) for cfg, memory in map(at, options) if memory.fits]
    low, high = 1, largest - 1
    best: int | None = None
    while low <= high:
        middle = (low + high) // 2
        if memory_fits(model, dataclasses.replace(full, recompute_num_layers=middle),
                       capacity, headroom_frac):
            best, high = middle, middle - 1
        else:
            low = middle + 1
    return [at(best)] if best is not None else []


def _link_key(cfg: ParallelConfig) -> tuple[object, ...]:
    """What resolve_links reads of a configuration: its degrees, rank order and whether
    deterministic mode pins NCCL's ring."""
    return (cfg.tp, cfg.cp, cfg.dp, cfg.pp, cfg.ep, cfg.expert_tp, cfg.rank_order,
            cfg.deterministic)


def _keep_best(heap: list[float], seconds: float, size: int) -> None:
    """Keep the `size` smallest times in `heap` (negated, so heap[0] is minus the largest)."""
    if len(heap) < size:
        heapq.heappush(heap, -seconds)
    elif seconds < -heap[0]:
        heapq.heapreplace(heap, -seconds)


def _reason(problem: str) -> str:
    """The kind of a configuration problem, for counting: its leading field name."""
    return problem.split("(")[0].split(" ")[0]
