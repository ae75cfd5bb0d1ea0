"""Held-out step-time cases (planner/data/heldout.yaml): published runs transcribed after the
step-time model was calibrated, that no constant was set from. `planner validate` reports them
apart, as the check that the calibration holds for runs it was not fitted on.

Each case names a built-in model and profile and states its configuration in planner terms
(Megatron-Core unless its `framework` says otherwise); the measured step is the source's
tokens/s per GPU turned into seconds per optimizer step: global batch x sequence / (tokens/s
per GPU x GPUs).
"""

from __future__ import annotations

from typing import Any

from planner.calibration import REAL_SIZE, Comparison, Report, reserved_comparison
from planner.catalog import BUILTIN_MODELS
from planner.cost.step import estimate_step
from planner.hardware import Cluster
from planner.memory import estimate_memory
from planner.parallel import (
    AttentionKernel,
    Framework,
    ParallelConfig,
    Precision,
    Recompute,
    VocabStrategy,
)
from planner.units import GiB


def heldout_sources(data: dict[str, Any]) -> tuple[str, ...]:
    """The titles of the sources the held-out cases come from: the file's, then each case's
    own, in order of first appearance."""
    titles = [str(data["source"]["title"])]
    for case in data["cases"]:
        title = (case.get("source") or {}).get("title")
        if title and title not in titles:
            titles.append(str(title))
    return tuple(titles)


# framework -> the source its held-out rows come from, as validate names their group
HELDOUT_SOURCES = {Framework.MEGATRON: "Megatron-Bridge", Framework.TORCHTITAN: "torchtitan"}


def heldout_group(cfg: ParallelConfig, cluster: Cluster) -> str:
    """The comparison group of a held-out case: its source, size class and GPU."""
    return (f"{HELDOUT_SOURCES[cfg.framework]} (held out), {REAL_SIZE}, "
            f"{cluster.gpu_types[0].id}")


def heldout_config(case: dict[str, Any]) -> ParallelConfig:
    """The ParallelConfig of one held-out case (its `config` mapping; Megatron-Core unless it
    names another framework)."""
    c = case["config"]
    world = int(case["gpus"])
    dp = world // (c["tp"] * c["pp"] * c["cp"])
    bf16_first, bf16_last = c.get("bf16_layers", (0, 0))
    return ParallelConfig(
        tp=c["tp"], pp=c["pp"], dp=dp, cp=c["cp"], ep=c.get("ep", 1), etp=c.get("etp"),
        vpp=c.get("vpp", 1),
        mbs=c["mbs"], global_batch=c["global_batch"], seq_len=c["seq_len"],
        precision=Precision(c["precision"]), zero=c["zero"],
        recompute=Recompute(c["recompute"]),
        recompute_num_layers=c.get("recompute_num_layers"),
        sequence_parallel=bool(c["sequence_parallel"]),
        tp_comm_overlap=bool(c["tp_comm_overlap"]),
        fp8_param_gather=bool(c.get("fp8_param_gather", False)),
        grad_reduce_in_bf16=bool(c.get("grad_reduce_in_bf16", False)),
        moe_a2a_overlap=bool(c.get("moe_a2a_overlap", False)),
        bf16_layers=(int(bf16_first), int(bf16_last)),
        vocab_strategy=VocabStrategy(c["vocab_strategy"]),
        moe_token_imbalance=float(c.get("moe_token_imbalance", 1.5)),
        layers_per_stage=tuple(c.get("layers_per_stage", ())),
        layers_per_chunk=tuple(c.get("layers_per_chunk", ())),
        attention_kernel=AttentionKernel(c.get("attention_kernel", "auto")),
        legacy_attention=bool(c.get("legacy_attention", False)),
        compiled_loss=bool(c.get("compiled_loss", True)),
        framework=Framework(c.get("framework", "megatron")))


def heldout_report(data: dict[str, Any], clusters: dict[str, Cluster]) -> Report:
    """Predicted vs published step time of every held-out case. The note of each comparison
    gives the memory verdict next to the fact that the run ran, and what had to be assumed."""
    cases: list[Comparison] = []
    skipped: list[tuple[str, str]] = []
    for case in data["cases"]:
        model = BUILTIN_MODELS[case["model"]]
        cluster = clusters[case["cluster"]]
        cfg = heldout_config(case)
        problems = cfg.problems(model)
        if problems:
            skipped.append((case["id"], "configuration rejected: " + problems[0]))
            continue
        tokens_per_s = float(case["measured"]["tokens_per_s_per_gpu"])
        measured_s = cfg.global_batch * cfg.seq_len / (tokens_per_s * cfg.world_size)
        predicted_s = estimate_step(model, cfg, cluster).iteration_s
        memory = estimate_memory(model, cfg, cluster.min_gpu_memory_bytes)
        verdict = "fits" if memory.fits else "does not fit"
        worst = memory.worst
        notes = [f"memory: planner allocated {worst.allocated_bytes / GiB:.1f} GiB, peak "
                 f"{memory.peak_bytes / GiB:.1f} GiB (with fragmentation, margin, context and "
                 f"communication buffers), {verdict} (the run ran)"]
        if case.get("assumed"):
            notes.append("assumed " + " ".join(str(case["assumed"]).split()))
        cases.append(Comparison(id=case["id"], kind="step time", measured=measured_s,
                                predicted=predicted_s, note="; ".join(notes),
                                group=heldout_group(cfg, cluster)))
    return Report(cases=tuple(cases), skipped=tuple(skipped), unit="s")


def heldout_memory_report(data: dict[str, Any], clusters: dict[str, Cluster]) -> Report:
    """The planner's reserved memory of the fullest stage against every held-out case that
    states the run's max reserved memory over its GPUs (`measured.reserved_GiB`)."""
    cases: list[Comparison] = []
    for case in data["cases"]:
        reserved = case["measured"].get("reserved_GiB")
        if reserved is None:
            continue
        model = BUILTIN_MODELS[case["model"]]
        cluster = clusters[case["cluster"]]
        cfg = heldout_config(case)
        estimate = estimate_memory(model, cfg, cluster.min_gpu_memory_bytes)
        cases.append(reserved_comparison(case["id"], estimate, float(reserved) * GiB,
                                         group=heldout_group(cfg, cluster)))
    return Report(cases=tuple(cases), skipped=(), unit="bytes")
