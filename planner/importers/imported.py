"""What an existing launch says, whichever framework it is for."""

from __future__ import annotations

from dataclasses import dataclass

from planner.model import ModelSpec
from planner.parallel import ParallelConfig


@dataclass(frozen=True, slots=True)
class ImportedLaunch:
    """What a launch says: the model (from the launch or --model), the configuration, the
    world size its launcher line names (None if none), and what the planner does not model:
    `unknown` flags (not modelled), `ignored` flags (recognised, no effect on memory or time)
    and `notes` (approximations made)."""

    model: ModelSpec
    config: ParallelConfig
    world_size: int | None
    unknown: tuple[str, ...]
    ignored: tuple[str, ...]
    notes: tuple[str, ...]


def launcher_world(words: list[str]) -> int | None:
    """--nnodes x --nproc-per-node of a torchrun command (the maximum of an elastic range),
    None when it does not say."""
    values: dict[str, str] = {}
    for i, w in enumerate(words):
        key, _, value = w.partition("=")
        key = key.replace("_", "-")
        if key in ("--nnodes", "--nproc-per-node"):
            values[key] = value or (words[i + 1] if i + 1 < len(words) else "")
    nodes = values.get("--nnodes", "1").split(":")[-1]
    procs = values.get("--nproc-per-node")
    if procs and procs.isdigit() and nodes.isdigit():
        return int(nodes) * int(procs)
    return None
