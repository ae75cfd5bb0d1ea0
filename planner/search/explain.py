"""Why the best plan beat the runner-up, in numbers (pure)."""

from __future__ import annotations

from dataclasses import dataclass

from planner.search.solver import Candidate

# The step-time parts compared, with their display names.
PARTS = (
    ("iteration_s", "step time"),
    ("compute_s", "compute (forward + backward, per GPU)"),
    ("recompute_s", "of which recompute"),
    ("bubble_s", "pipeline bubble"),
    ("tp_comm_s", "tensor-parallel communication (busy)"),
    ("tp_exposed_s", "of which exposed"),
    ("cp_exposed_s", "context-parallel communication (exposed)"),
    ("ep_comm_s", "expert-parallel all-to-all (busy)"),
    ("ep_exposed_s", "of which exposed"),
    ("dp_exposed_s", "data-parallel gradient sync (exposed)"),
    ("optimizer_s", "optimizer step"),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Explanation:
    """The settings that differ and each part's value in the best and the runner-up plan."""

    differences: tuple[tuple[str, object, object], ...]
    parts: tuple[tuple[str, float, float], ...]
    peak_bytes: tuple[int, int]

    def to_dict(self) -> dict[str, object]:
        return {
            "differences": [{"setting": k, "best": a, "runner_up": b}
                            for k, a, b in self.differences],
            "parts_s": [{"part": k, "best": round(a, 6), "runner_up": round(b, 6),
                         "delta": round(b - a, 6)} for k, a, b in self.parts],
            "peak_bytes": {"best": self.peak_bytes[0], "runner_up": self.peak_bytes[1]},
        }


def explain(best: Candidate, runner_up: Candidate) -> Explanation:
    assert best.step is not None and runner_up.step is not None
    a_cfg, b_cfg = best.config.to_dict(), runner_up.config.to_dict()
    differences = tuple((key, a_cfg[key], b_cfg[key]) for key in a_cfg
                        if a_cfg[key] != b_cfg[key])
    a_parts = {"iteration_s": best.step.iteration_s, **dict(best.step.breakdown)}
    b_parts = {"iteration_s": runner_up.step.iteration_s, **dict(runner_up.step.breakdown)}
    parts = tuple((name, a_parts.get(key, 0.0), b_parts.get(key, 0.0)) for key, name in PARTS)
    return Explanation(differences=differences, parts=parts,
                       peak_bytes=(best.memory.peak_bytes, runner_up.memory.peak_bytes))
