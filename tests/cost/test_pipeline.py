"""The event-driven pipeline simulator against the closed forms and hand-worked cases."""

from __future__ import annotations

import pytest

from planner.cost.pipeline import ChunkTimes, schedule_order, simulate


def _even(pp: int, vpp: int, forward: float, backward: float,
          send: float = 0.0) -> list[list[ChunkTimes]]:
    chunk = ChunkTimes(forward_s=forward / vpp, backward_s=backward / vpp, send_s=send)
    return [[chunk] * vpp for _ in range(pp)]


@pytest.mark.parametrize(("pp", "m"), [(1, 4), (2, 2), (4, 8), (8, 16), (4, 3)])
def test_1f1b_closed_form(pp: int, m: int) -> None:
    """(m + p - 1) * (t_f + t_b): bubble fraction (p - 1) / m (Narayanan et al. 2021)."""
    result = simulate(_even(pp, 1, 1.0, 2.0), m)
    assert result.makespan_s == pytest.approx((m + pp - 1) * 3.0)
    assert result.bubble_s == pytest.approx((pp - 1) * 3.0)


@pytest.mark.parametrize(("pp", "vpp", "m"), [(2, 2, 4), (4, 2, 8), (4, 4, 16), (8, 3, 16)])
def test_interleaved_closed_form(pp: int, vpp: int, m: int) -> None:
    """(m + (p - 1) / v) * (t_f + t_b) with t_f, t_b per whole stage, when m % p == 0."""
    result = simulate(_even(pp, vpp, 1.0, 2.0), m)
    assert result.makespan_s == pytest.approx((m + (pp - 1) / vpp) * 3.0)


def test_every_pass_runs_once() -> None:
    for pp, vpp, m in ((4, 1, 6), (4, 2, 8), (4, 3, 6), (3, 2, 5)):
        for rank in range(pp):
            order = schedule_order(pp, vpp, m, rank)
            assert sorted(order) == sorted(
                [(kind, mb, c) for kind in "FB" for mb in range(m) for c in range(vpp)])


def test_uneven_last_stage_lengthens_the_step() -> None:
    """A last stage twice as slow (LM head) bounds the steady state: with pp=2, m=4 the slow
    stage runs 4 * (2 + 4) = 24 of work after the first forward of stage 0 (1)."""
    fast = ChunkTimes(forward_s=1.0, backward_s=2.0)
    slow = ChunkTimes(forward_s=2.0, backward_s=4.0)
    result = simulate([[fast], [slow]], 4)
    assert result.makespan_s == pytest.approx(1.0 + 24.0 + 2.0)
    assert result.busy_s == (12.0, 24.0)


def test_p2p_time_delays_dependent_passes() -> None:
    """pp=2, m=1: F0 (1) -> send (0.5) -> F1 (1) -> B1 (2) -> send (0.5) -> B0 (2) = 7."""
    result = simulate(_even(2, 1, 1.0, 2.0, send=0.5), 1)
    assert result.makespan_s == pytest.approx(7.0)


@pytest.mark.parametrize(("pp", "vpp", "m"), [(1, 1, 4), (4, 1, 8), (4, 2, 8), (8, 3, 16)])
def test_fast_form_equals_simulation_on_even_stages(pp: int, vpp: int, m: int) -> None:
    from planner.cost.step import fast_makespan

    chunks = _even(pp, vpp, 1.0, 2.0)
    assert fast_makespan(chunks, m) == pytest.approx(simulate(chunks, m).makespan_s)


def test_fast_form_is_close_on_uneven_stages() -> None:
    """A slow last stage: the closed form bounds the steady state by it, as the simulation."""
    from planner.cost.step import fast_makespan

    fast = ChunkTimes(forward_s=1.0, backward_s=2.0)
    slow = ChunkTimes(forward_s=2.0, backward_s=4.0)
    chunks = [[fast], [fast], [fast], [slow]]
    exact = simulate(chunks, 16).makespan_s
    assert fast_makespan(chunks, 16) == pytest.approx(exact, rel=0.05)
