"""Rendering results as rich tables (stdout) and messages (stderr). Display units live here."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from planner.advice import Remedy
from planner.calibration import Report
from planner.cost.step import StepTime
from planner.gpus import GpuType
from planner.hardware import Cluster
from planner.memory import ESTIMATE_MARGIN_FRAC, MemoryEstimate
from planner.model import ModelSpec
from planner.parallel import DEFAULT_RECOMPUTE_MODULES, ParallelConfig
from planner.search.explain import Explanation
from planner.search.solver import SearchResult
from planner.units import GiB, format_count

# Tables are data: never squeeze them to a pipe's default 80 columns.
_WIDTH = max(shutil.get_terminal_size((140, 24)).columns, 120)
out = Console(highlight=False, soft_wrap=True, width=_WIDTH)
err = Console(stderr=True, highlight=False, soft_wrap=True, width=_WIDTH)


def _gib(num_bytes: float) -> str:
    return f"{num_bytes / GiB:.2f}"


def config_line(cfg: ParallelConfig) -> str:
    parts = [f"tp={cfg.tp}", f"pp={cfg.pp}", f"dp={cfg.dp}", f"cp={cfg.cp}"]
    if cfg.ep > 1 or cfg.etp is not None:
        parts += [f"ep={cfg.ep}", f"etp={cfg.expert_tp}"]
    if cfg.vpp > 1:
        parts.append(f"vpp={cfg.vpp}")
    parts += [f"mbs={cfg.mbs}", f"gbs={cfg.global_batch}", f"m={cfg.num_microbatches}",
              f"seq={cfg.seq_len}", f"recompute={cfg.recompute.value}"
              + (f"({cfg.recompute_num_layers} layers)" if cfg.recompute_num_layers else "")
              + (f"({','.join(cfg.recompute_modules)})"
                 if cfg.recompute_modules != DEFAULT_RECOMPUTE_MODULES else ""),
              f"zero={cfg.zero}", f"sp={'on' if cfg.sequence_parallel else 'off'}",
              cfg.precision.value, f"vocab={cfg.vocab_strategy.value}", cfg.framework.value]
    parts += [flag for flag, on in (
        ("tp-comm-overlap", cfg.tp_comm_overlap), ("fp8-param-gather", cfg.fp8_param_gather),
        ("grad-reduce-in-bf16", cfg.grad_reduce_in_bf16),
        ("moe-a2a-overlap", cfg.moe_a2a_overlap), ("deterministic", cfg.deterministic),
        ("eager", cfg.eager), ("unfused-rms-norm", not cfg.fused_rms_norm),
        ("no-gradient-accumulation-fusion", not cfg.gradient_accumulation_fusion),
        ("bf16-layers={},{}".format(*cfg.bf16_layers), cfg.bf16_layers != (0, 0))) if on]
    return " ".join(parts)


def memory_table(model: ModelSpec, cluster: Cluster, cfg: ParallelConfig,
                 estimate: MemoryEstimate, title: str) -> None:
    out.print(f"[bold]{title}[/bold]")
    out.print(f"model   {model.name}: {format_count(model.params.total)} params"
              + (f" ({format_count(model.params.active)} active)" if model.moe else ""))
    gpu = cluster.gpu_types[0]
    out.print(f"cluster {cluster.name}: {cluster.num_gpus} x {gpu.name}, "
              f"{_gib(estimate.capacity_bytes)} GiB each; job uses {cfg.world_size} GPUs")
    out.print(f"config  {config_line(cfg)}")
    table = Table(show_edge=False, header_style="bold")
    for column in ("stage", "layers", "params", "weights", "grads", "optim", "activ",
                   "transient", "allocated", "reserved", "peak", "free"):
        table.add_column(column, justify="right")
    worst = estimate.worst.stage
    for s in estimate.stages:
        free = estimate.usable_bytes - s.peak_bytes
        style = "bold red" if free < 0 else ("bold" if s.stage == worst else "")
        table.add_row(str(s.stage), str(s.num_layers), format_count(s.num_params),
                      _gib(s.weights_bytes), _gib(s.gradients_bytes), _gib(s.optimizer_bytes),
                      _gib(s.activations_bytes), _gib(s.transient_bytes),
                      _gib(s.allocated_bytes), _gib(s.reserved_bytes), _gib(s.peak_bytes),
                      _gib(free), style=style)
    out.print(table)
    first = estimate.stages[0]
    out.print(f"GiB per GPU. peak = reserved + {ESTIMATE_MARGIN_FRAC:.0%} estimate margin + CUDA "
              f"context {_gib(first.cuda_context_bytes)} + NCCL buffers "
              f"{_gib(first.nccl_bytes)}"
              + (f" + userbuffers {_gib(first.userbuffers_bytes)}"
                 if first.userbuffers_bytes else "")
              + "; reserved = allocated + fragmentation; allocated "
              f"includes {_gib(first.framework_buffers_bytes)} of framework workspaces.")
    usable = estimate.usable_bytes
    headroom = (f" (capacity {_gib(estimate.capacity_bytes)} GiB less "
                f"{estimate.headroom_frac:.0%} headroom)" if estimate.headroom_frac else "")
    worst_stage = estimate.worst
    if estimate.fits:
        out.print(f"[green]fits[/green]: worst stage {worst_stage.stage} peaks at "
                  f"{_gib(worst_stage.peak_bytes)} of {_gib(usable)} GiB usable{headroom}")
    else:
        over = [s for s in estimate.stages if s.peak_bytes > usable]
        stages = ", ".join(f"stage {s.stage} by {_gib(s.peak_bytes - usable)} GiB"
                           for s in over[:6])
        more = f" and {len(over) - 6} more" if len(over) > 6 else ""
        out.print(f"[red]does not fit[/red] in {_gib(usable)} GiB{headroom}: {stages}{more}")


@contextlib.contextmanager
def progress_bar(label: str) -> Iterator[Callable[[int, int], None]]:
    """A transient progress bar on stderr when it is a terminal; a no-op otherwise (logs and
    pipes stay clean). Yields `advance(done, total)`."""
    if not err.is_terminal:
        yield lambda done, total: None
        return
    with Progress(TextColumn(label), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=err, transient=True) as bar:
        task = bar.add_task(label, total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield advance


def power_line(gpus: tuple[GpuType, ...]) -> None:
    """Say when a power limit slows the GPUs' large GEMMs and attention (GpuType.power_scale)."""
    for gpu in gpus:
        if gpu.power_scale < 1.0:
            out.print(f"  {gpu.id} runs at {gpu.power_limit_w:g} W of its {gpu.tdp_w:g} W: "
                      f"large GEMMs and attention at {gpu.power_scale:.0%} of their rate")


def time_lines(step: StepTime) -> None:
    b = dict(step.breakdown)
    calibrated = "" if step.calibrated else " (uncalibrated GPU: see the warning)"
    out.print(f"step time {step.iteration_s:.3f} s{calibrated}: {step.tokens_per_s:,.0f} "
              f"tokens/s, {step.model_tflops_per_gpu:.0f} model TFLOP/s per GPU, MFU "
              f"{step.mfu:.1%}, HFU {step.hfu:.1%}")
    out.print(f"  pipeline {b['pipeline_s']:.3f} s (bubble {b['bubble_s']:.3f}); exposed: "
              f"data-parallel {b['dp_exposed_s']:.3f} s of {b['dp_comm_s']:.3f}, tensor-"
              f"parallel {b['tp_exposed_s']:.3f} s of {b['tp_comm_s']:.3f}, context-parallel "
              f"{b['cp_exposed_s']:.3f} s"
              + (f", expert-parallel {b['ep_exposed_s']:.3f} s of {b['ep_comm_s']:.3f}"
                 if b["ep_comm_s"] > 0 else "")
              + f"; optimizer {b['optimizer_s']:.3f} s")
    if len(step.stages) > 1:
        stage_lines(step)
    if b.get("host_wait_s", 0.0) > 0:
        out.print(f"  layers wait {b['host_wait_s']:.3f} s per GPU on the host (Python and "
                  "kernel launches outlast their GPU work: larger micro-batches, fewer "
                  "tensor-parallel ranks or CUDA graphs would hide it)")


def document_line(document_tokens: int, share: float) -> None:
    """What MFU counts when block-causal masks skip attention work (ParallelConfig
    .document_tokens): DESIGN's model FLOPs keep the full s^2 attention."""
    out.print(f"  MFU and HFU count the full s^2 attention (the convention, so here they can "
              f"pass 100%); the block-causal attention over documents of {document_tokens} "
              f"tokens computes {share:.0%} of causal attention's blocks")


def stage_lines(step: StepTime) -> None:
    """The busiest and the idlest pipeline stage: what each pass of one micro-batch takes
    there and how much of the pipeline's time it works."""
    pipeline = dict(step.breakdown)["pipeline_s"]
    busiest = max(step.stages, key=lambda s: (s.busy_s, -s.stage))
    idlest = min(step.stages, key=lambda s: (s.busy_s, s.stage))
    for label, s in (("busiest", busiest), ("idlest", idlest)):
        out.print(f"  {label} stage {s.stage}: forward {s.forward_s * 1e3:.1f} ms + backward "
                  f"{s.backward_s * 1e3:.1f} ms per micro-batch, busy {s.busy_s:.3f} s of "
                  f"{pipeline:.3f}")


def remedy_lines(remedies: tuple[Remedy, ...]) -> None:
    if not remedies:
        out.print("no single change of recompute, micro-batch, ZeRO, tp, pp or vocabulary "
                  "placement makes it fit: use more GPUs or a larger memory GPU")
        return
    out.print("what would help (one change each, re-estimated):")
    for r in remedies:
        verdict = "fits" if r.fits else "still over"
        out.print(f"  {r.change:38s} peak {_gib(r.peak_bytes)} GiB "
                  f"(-{_gib(r.saves_bytes)} GiB, {verdict})")


def models_table(models: list[ModelSpec]) -> None:
    table = Table(show_edge=False, header_style="bold")
    for column in ("name", "params", "active", "layers", "hidden", "heads/groups", "ffn",
                   "vocab", "kind"):
        table.add_column(column, justify="left" if column in ("name", "kind") else "right")
    for m in models:
        kind = [m.activation.value]
        if m.moe:
            kind.append(f"MoE {m.moe.num_experts}x top-{m.moe.top_k}")
        if m.mla:
            kind.append("MLA")
        if m.num_mtp_layers:
            kind.append(f"MTP {m.num_mtp_layers}")
        table.add_row(m.name, format_count(m.params.total), format_count(m.params.active),
                      str(m.num_layers), str(m.hidden_size),
                      f"{m.num_attention_heads}/{m.num_query_groups}", str(m.ffn_hidden_size),
                      str(m.vocab_size), ", ".join(kind))
    out.print(table)


def profiles_table(rows: list[tuple[str, Cluster]]) -> None:
    table = Table(show_edge=False, header_style="bold")
    for column in ("name", "gpus", "nodes", "gpu", "intra GB/s", "NIC GB/s per GPU", "islands"):
        table.add_column(column, justify="left" if column in ("name", "gpu") else "right")
    for name, c in rows:
        node = c.nodes[0]
        nic = min((n.bandwidth_bytes_per_s / len(n.gpus) for n in node.nics), default=0.0)
        table.add_row(name, str(c.num_gpus), str(c.num_nodes),
                      ", ".join(g.id for g in c.gpu_types),
                      f"{node.node_type.intra.bandwidth_bytes_per_s / 1e9:.0f}",
                      f"{nic / 1e9:.1f}" if nic else "-", str(len(c.islands)))
    out.print(table)


def validation_table(report: Report) -> None:
    table = Table(show_edge=False, header_style="bold", title="memory: estimate vs measured peak")
    for column in ("case", "kind", "measured GiB", "predicted GiB", "error"):
        table.add_column(column, justify="left" if column in ("case", "kind") else "right")
    for c in sorted(report.cases, key=lambda c: c.id):
        error = f"{c.error_frac:+.1%}"
        table.add_row(c.id, c.kind, _gib(c.measured), _gib(c.predicted),
                      f"[red]{error}[/red]" if c.error_frac < 0 else error)
    out.print(table)
    out.print(f"{len(report.cases)} cases: mean |error| {report.mean_abs_error_frac:.1%}, "
              f"median {report.median_abs_error_frac:.1%}; under-estimated "
              f"{len(report.under_estimates)} (worst "
              f"{min((c.error_frac for c in report.cases), default=0.0):+.1%}), "
              f"{len(report.under_margin)} beyond the {ESTIMATE_MARGIN_FRAC:.0%} margin of the "
              f"fit verdict; {len(report.skipped)} cases skipped (--format json says why)")


def _step_table(report: Report, title: str, notes: str) -> None:
    """One row per step-time comparison: case, measured, predicted, error, notes."""
    table = Table(show_edge=False, header_style="bold", title=title)
    for column in ("case", "measured s", "predicted s", "error", notes):
        table.add_column(column, justify="left" if column in ("case", notes) else "right")
    for c in report.cases:
        table.add_row(c.id, f"{c.measured:.3f}", f"{c.predicted:.3f}",
                      f"{c.error_frac:+.1%}", c.note)
    out.print(table)


def timing_table(report: Report) -> None:
    _step_table(report, "step time (model in development): estimate vs measured", "assumed")
    out.print(f"{len(report.cases)} cases: median |error| {report.median_abs_error_frac:.1%}, "
              f"max {report.max_abs_error_frac:.1%}; {len(report.skipped)} skipped. The "
              "step-time model is validated on A100 only; `estimate` warns elsewhere.")
    for group, (count, median, worst) in report.groups().items():
        out.print(f"  {group}: {count} cases, median |error| {median:.1%}, max {worst:.1%}",
                  markup=False)
    count, median, worst = report.real_size()
    if count:
        out.print(f"Real-size cases (hidden >= 2048): {count}, median |error| {median:.1%}, "
                  f"max {worst:.1%}.")
    sets, cases, spread, widest = report.repeatability()
    if sets:
        out.print(f"Priced alike: {cases} cases in {sets} sets that the planner reads as the "
                  "same job (they differ in flags it does not price); their measurements lie "
                  f"a median {spread:.1%} (max {widest:.1%}) from their set's median.")


def heldout_table(report: Report, memory: Report, source: str) -> None:
    _step_table(report, f"held out (no constant set from these): {source}", "notes")
    out.print(f"{len(report.cases)} held-out cases: median |error| "
              f"{report.median_abs_error_frac:.1%}, max {report.max_abs_error_frac:.1%}; "
              f"{len(report.skipped)} skipped.")
    table = Table(show_edge=False, header_style="bold",
                  title="held out, memory: the planner's reserved vs the runs' max reserved")
    for column in ("case", "measured GiB", "predicted GiB", "error"):
        table.add_column(column, justify="left" if column == "case" else "right")
    for c in memory.cases:
        error = f"{c.error_frac:+.1%}"
        table.add_row(c.id, _gib(c.measured), _gib(c.predicted),
                      f"[red]{error}[/red]" if c.error_frac < 0 else error)
    out.print(table)
    out.print(f"{len(memory.cases)} held-out memory cases: median |error| "
              f"{memory.median_abs_error_frac:.1%}, under-estimated "
              f"{len(memory.under_estimates)} (worst "
              f"{min((c.error_frac for c in memory.cases), default=0.0):+.1%}), "
              f"{len(memory.under_margin)} beyond the {ESTIMATE_MARGIN_FRAC:.0%} margin of the "
              "fit verdict.")


def layout_text(counts: tuple[int, ...]) -> str:
    """Layers per stage, runs compressed: (7, 6, 6, 6, 5) -> "7,6x3,5"."""
    parts = []
    i = 0
    while i < len(counts):
        j = i
        while j < len(counts) and counts[j] == counts[i]:
            j += 1
        parts.append(f"{counts[i]}x{j - i}" if j - i > 1 else str(counts[i]))
        i = j
    return ",".join(parts)


def search_table(model: ModelSpec, cluster: Cluster, result: SearchResult) -> None:
    gpu = cluster.gpu_types[0]
    out.print(f"[bold]search[/bold]: {model.name} on {cluster.name} ({cluster.num_gpus} x "
              f"{gpu.name}); {result.candidates_evaluated} configurations evaluated, "
              f"{result.candidates_fit} fit, in {result.elapsed_s:.1f} s")
    table = Table(show_edge=False, header_style="bold")
    for column in ("#", "tp", "pp", "dp", "cp", "ep", "vpp", "mbs", "recompute", "zero",
                   "vocab", "layers/stage", "tokens/s", "MFU", "peak GiB", "free GiB"):
        table.add_column(column, justify="left" if column in ("recompute", "vocab",
                                                               "layers/stage") else "right")
    for rank, c in enumerate(result.plans, start=1):
        cfg, step = c.config, c.step
        assert step is not None
        layers = layout_text(tuple(s.num_layers for s in c.memory.stages))
        table.add_row(str(rank), str(cfg.tp), str(cfg.pp), str(cfg.dp), str(cfg.cp),
                      str(cfg.ep), str(cfg.vpp), str(cfg.mbs),
                      cfg.recompute.value + (f" ({cfg.recompute_num_layers}/chunk)"
                                             if cfg.recompute_num_layers else ""),
                      str(cfg.zero), cfg.vocab_strategy.value,
                      layers, f"{step.tokens_per_s:,.0f}",
                      f"{step.mfu:.1%}", _gib(c.memory.peak_bytes),
                      _gib(c.memory.usable_bytes - c.memory.peak_bytes))
    out.print(table)
    power_line(cluster.gpu_types)


def explanation(why: Explanation) -> None:
    out.print("[bold]why #1 beats #2[/bold]: "
              + "; ".join(f"{k} {a} vs {b}" for k, a, b in why.differences))
    table = Table(show_edge=False, header_style="bold")
    for column in ("seconds per step", "#1", "#2", "#2 - #1"):
        table.add_column(column, justify="left" if column == "seconds per step" else "right")
    for name, a, b in why.parts:
        table.add_row(name, f"{a:.3f}", f"{b:.3f}", f"{b - a:+.3f}")
    out.print(table)
    a, b = why.peak_bytes
    out.print(f"peak memory {_gib(a)} vs {_gib(b)} GiB ({_gib(b - a)} GiB)")
