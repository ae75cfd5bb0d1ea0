"""What would help when a configuration does not fit: single changes, re-estimated.

Each remedy changes one knob (keeping the world size), is re-estimated with the same memory
model, and is reported with the worst-stage peak it gives. Pure functions.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from planner.memory import estimate_memory
from planner.model import ModelSpec
from planner.parallel import Framework, ParallelConfig, Recompute, VocabStrategy


@dataclass(frozen=True, slots=True, kw_only=True)
class Remedy:
    change: str  # the flags to change, as a user would type them
    peak_bytes: int
    fits: bool
    saves_bytes: int


def _candidates(model: ModelSpec, cfg: ParallelConfig,
                gpus_per_node: int) -> list[tuple[str, ParallelConfig]]:
    out: list[tuple[str, ParallelConfig]] = []
    replace = dataclasses.replace
    if cfg.recompute is Recompute.NONE:
        out.append(("--recompute selective", replace(cfg, recompute=Recompute.SELECTIVE)))
    if cfg.recompute is not Recompute.FULL or cfg.recompute_num_layers is not None:
        out.append(("--recompute full", replace(cfg, recompute=Recompute.FULL,
                                                recompute_num_layers=None)))
    if cfg.mbs > 1:
        mbs = cfg.mbs // 2
        out.append((f"--mbs {mbs}", replace(cfg, mbs=mbs)))
    if cfg.zero == 0 and cfg.dp * cfg.cp > 1:
        # torchtitan has no optimizer-only sharding: its step is FSDP (zero 3)
        stage = 3 if cfg.framework is Framework.TORCHTITAN else 1
        out.append((f"--zero {stage}", replace(cfg, zero=stage)))
    if cfg.tp > 1 and not cfg.sequence_parallel:
        out.append(("--sequence-parallel", replace(cfg, sequence_parallel=True)))
    if cfg.dp % 2 == 0:
        if cfg.tp * 2 <= gpus_per_node:
            out.append((f"--tp {cfg.tp * 2} (dp {cfg.dp // 2})",
                        replace(cfg, tp=cfg.tp * 2, dp=cfg.dp // 2, sequence_parallel=True)))
        out.append((f"--pp {cfg.pp * 2} (dp {cfg.dp // 2})",
                    replace(cfg, pp=cfg.pp * 2, dp=cfg.dp // 2, layers_per_stage=())))
    if cfg.pp > 1 and cfg.vocab_strategy is VocabStrategy.BASELINE and not cfg.layers_per_stage:
        out.append(("--vocab-strategy redistribute",
                     replace(cfg, vocab_strategy=VocabStrategy.REDISTRIBUTE)))
        out.append(("--vocab-strategy vocab-parallel",
                     replace(cfg, vocab_strategy=VocabStrategy.VOCAB_PARALLEL)))
    return [(c, k) for c, k in out if not k.problems(model)]


def remedies(model: ModelSpec, cfg: ParallelConfig, capacity_bytes: int, headroom_frac: float,
             gpus_per_node: int, limit: int = 4) -> tuple[Remedy, ...]:
    """The single changes that lower the worst-stage peak most, those that fit first."""
    base = estimate_memory(model, cfg, capacity_bytes, headroom_frac).peak_bytes
    found = []
    for change, candidate in _candidates(model, cfg, gpus_per_node):
        estimate = estimate_memory(model, candidate, capacity_bytes, headroom_frac)
        if estimate.peak_bytes < base:
            found.append(Remedy(change=change, peak_bytes=estimate.peak_bytes,
                                fits=estimate.fits, saves_bytes=base - estimate.peak_bytes))
    found.sort(key=lambda r: (not r.fits, r.peak_bytes, r.change))
    return tuple(found[:limit])
