"""Pipeline schedules simulated on real per-stage times (event-driven critical path).

The order in which each rank runs its forward (F) and backward (B) passes is Megatron-Core's
(megatron/core/pipeline_parallel/schedules.py):
- 1F1B: rank i runs min(pp - i - 1, m) warm-up forwards, then alternates one forward and one
  backward, then drains the remaining backwards (Narayanan et al. 2021, Sec. 2.2.1);
- interleaved 1F1B with v model chunks per rank: the schedule table visits micro-batches in
  groups of pp, chunk 0..v-1 for forwards and v-1..0 for backwards; rank i runs
  (pp - i - 1) * 2 + (v - 1) * pp warm-up forwards (capped at m * v) (Sec. 2.2.2).
Each pass starts when its rank is free and its input has arrived: a forward of model chunk k
needs chunk k-1's forward of the same micro-batch plus the point-to-point transfer; a
backward needs chunk k+1's backward plus the transfer (the last chunk's backward needs its own
forward). Uneven stages, a heavy LM-head stage and p2p latency show up as idle time.

Closed forms for even stages and free communication (used as tests): 1F1B takes
(m + p - 1) * (t_f + t_b); interleaved (m + (p - 1) / v) * (t_f + t_b) with t_f, t_b the
whole stage's times, i.e. bubble fractions (p - 1) / m and (p - 1) / (v * m).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class ChunkTimes:
    """Times of one model chunk (a contiguous group of layers on one rank), per micro-batch.

    Attributes:
        forward_s: forward pass.
        backward_s: backward pass, including any recompute of the forward.
        send_s: point-to-point transfer of this chunk's output activation to the next chunk
            (and, in backward, of the input gradient to the previous one).
    """

    forward_s: float
    backward_s: float
    send_s: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class PipelineResult:
    """Makespan of the forward/backward passes of one step, and per-rank busy time."""

    makespan_s: float
    busy_s: tuple[float, ...]

    @property
    def bubble_s(self) -> float:
        """Idle time of the busiest rank: makespan minus its compute."""
        return self.makespan_s - max(self.busy_s)


def schedule_order(pp: int, vpp: int, m: int, rank: int,
                   group: int | None = None) -> list[tuple[str, int, int]]:
    """The (kind, micro-batch, local chunk) passes rank `rank` runs, in Megatron's order.
    `group` is the interleaved schedule's micro-batch group (default pp)."""
    group = group or pp
    if vpp == 1:
        warmup = min(pp - rank - 1, m)
        order = [("F", i, 0) for i in range(warmup)]
        for i in range(m - warmup):
            order += [("F", warmup + i, 0), ("B", i, 0)]
        order += [("B", i, 0) for i in range(m - warmup, m)]
        return order
    table: list[tuple[int, int]] = []  # (micro-batch, chunk) in forward order
    for start in range(0, m, group):
        members = range(start, min(start + group, m))
        table += [(mb, chunk) for chunk in range(vpp) for mb in members]
    backward = [(mb, vpp - 1 - chunk) for mb, chunk in table]
    total = len(table)
    warmup = min((pp - rank - 1) * 2 + (vpp - 1) * group, total)
    order = [("F", mb, c) for mb, c in table[:warmup]]
    for i in range(total - warmup):
        order += [("F", *table[warmup + i]), ("B", *backward[i])]
    order += [("B", *backward[i]) for i in range(total - warmup, total)]
    return order


def simulate(chunks: list[list[ChunkTimes]], m: int, group: int | None = None) -> PipelineResult:
    """Play the schedule. `chunks[rank][c]` are the times of local chunk c of `rank`; model
    chunk k = c * pp + rank (Megatron's interleaved placement). Returns the makespan."""
    pp = len(chunks)
    vpp = len(chunks[0])
    num_chunks = pp * vpp
    orders = [schedule_order(pp, vpp, m, r, group) for r in range(pp)]
    position = [0] * pp
    free_at = [0.0] * pp
    busy = [0.0] * pp
    done: dict[tuple[str, int, int], float] = {}  # (kind, micro-batch, model chunk) -> end

    def ready_time(kind: str, mb: int, k: int) -> float | None:
        if kind == "F":
            if k == 0:
                return 0.0
            end = done.get(("F", mb, k - 1))
            prev = chunks[(k - 1) % pp][(k - 1) // pp]
            return None if end is None else end + prev.send_s
        own = done.get(("F", mb, k))
        if own is None:
            return None
        if k == num_chunks - 1:
            return own
        end = done.get(("B", mb, k + 1))
        this = chunks[k % pp][k // pp]
        return None if end is None else max(own, end + this.send_s)

    remaining = sum(len(o) for o in orders)
    while remaining:
        progressed = False
        for rank in range(pp):
            while position[rank] < len(orders[rank]):
                kind, mb, local = orders[rank][position[rank]]
                k = local * pp + rank
                ready = ready_time(kind, mb, k)
                if ready is None:
                    break
                times = chunks[rank][local]
                duration = times.forward_s if kind == "F" else times.backward_s
                start = max(free_at[rank], ready)
                free_at[rank] = start + duration
                busy[rank] += duration
                done[(kind, mb, k)] = free_at[rank]
                position[rank] += 1
                remaining -= 1
                progressed = True
        if not progressed:
            raise ValueError(f"pipeline schedule deadlocked (pp={pp}, vpp={vpp}, m={m})")
    return PipelineResult(makespan_s=max(free_at), busy_s=tuple(busy))
