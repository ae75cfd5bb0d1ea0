"""The `planner` command line: parse, load, call the library, render.

stdout carries data (tables, JSON, YAML); errors and hints go to stderr. Exit codes: 0 ok,
1 the answer is no (does not fit), 2 bad usage or input, 3 internal error (--debug shows it).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import re
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from planner import __version__, topo
from planner.advice import remedies
from planner.calibration import (
    VALIDATION_PROFILES,
    load_measurements,
    memory_report,
    time_report,
)
from planner.catalog import BUILTIN_MODELS
from planner.cli import render
from planner.cost.compute import document_block_fraction
from planner.cost.step import StepTime, estimate_step
from planner.emit import emit, write_emitted
from planner.errors import DoesNotFitError, InputError, PlannerError
from planner.hardware import Cluster
from planner.hardware_io import (
    builtin_profiles,
    import_nccl_tests,
    load_cluster,
    profile_from_topology,
)
from planner.heldout import heldout_memory_report, heldout_report, heldout_sources
from planner.importers import import_launch
from planner.memory import MemoryEstimate, estimate_memory
from planner.model import ModelSpec
from planner.model_io import load_model
from planner.parallel import (
    DEFAULT_RECOMPUTE_MODULES,
    AttentionKernel,
    Framework,
    ParallelConfig,
    Precision,
    Recompute,
    VocabStrategy,
)
from planner.plan import Plan, content_hash, file_hash, load_plan, write_plan
from planner.schema import read_text, refuse_overwrite, write_new_file
from planner.search.explain import explain
from planner.search.solver import SearchResult
from planner.search.solver import search as run_search
from planner.search.space import SearchSpec

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    help="Plan how to split a large-model training job across a GPU cluster.",
)

_state = {"debug": False}


class Format(enum.StrEnum):
    table = "table"
    json = "json"
    yaml = "yaml"


class VocabChoice(enum.StrEnum):
    baseline = "baseline"
    redistribute = "redistribute"
    vocab_parallel = "vocab-parallel"
    auto = "auto"


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of internal errors.")]
    = False,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")]
    = False,
) -> None:
    _state["debug"] = debug
    if version:
        typer.echo(__version__)
        raise typer.Exit(0)


def _emit(data: Any, fmt: Format) -> None:
    if fmt is Format.yaml:
        sys.stdout.write(yaml.safe_dump(data, sort_keys=False, width=100))
    else:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")


def _cluster_source(ref: str) -> Path:
    profiles = builtin_profiles()
    return profiles[ref] if ref in profiles else Path(ref)


def _check_degrees(**degrees: int | None) -> None:
    """A degree given on the command line must be >= 1 (0 is not "unset")."""
    bad = [f"--{name.replace('_', '-')} {value}" for name, value in degrees.items()
           if value is not None and value < 1]
    if bad:
        raise InputError(", ".join(bad) + ": expected integers >= 1")


def _world_size_problem(cluster: Cluster, cfg: ParallelConfig, dp_given: bool) -> str | None:
    """The world-size problem of a configuration on a cluster, if any. --dp may name a part of
    the cluster; without it the job uses every GPU."""
    model_parallel = cfg.tp * cfg.pp * cfg.cp
    if dp_given and cfg.world_size > cluster.num_gpus:
        return (f"tp({cfg.tp}) * pp({cfg.pp}) * cp({cfg.cp}) * dp({cfg.dp}) = "
                f"{cfg.world_size} GPUs, but cluster {cluster.name} has {cluster.num_gpus}")
    if not dp_given and cluster.num_gpus % model_parallel:
        return (f"world_size({cluster.num_gpus}) of cluster {cluster.name} is not divisible by "
                f"tp({cfg.tp}) * pp({cfg.pp}) * cp({cfg.cp}) = {model_parallel}; give --dp to "
                "use a part of the cluster")
    return None


def _check_config(cfg: ParallelConfig, model: ModelSpec, cluster: Cluster, where: str,
                  dp_given: bool = True) -> None:
    gpu = cluster.gpu_types[0]
    world = _world_size_problem(cluster, cfg, dp_given)
    problems = ((world,) if world else ()) + cfg.problems(model, gpu)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise InputError(f"{where}: {problems[0]}{more}",
                         problems=tuple(f"{where}: {p}" for p in problems))


# Recipe flags `estimate` and `search` share (ParallelConfig documents each; the search keeps
# them in every plan rather than searching them).
TpCommOverlap = Annotated[bool, typer.Option(
    "--tp-comm-overlap", help="TP collectives pipelined with their GEMMs (Megatron "
    "--tp-comm-overlap, torchtitan async TP); needs sequence parallelism (search: plans with "
    "tp > 1).")]
Fp8ParamGather = Annotated[bool, typer.Option(
    "--fp8-param-gather", help="Megatron, fp8, zero >= 1: GEMM weights kept in fp8 only and "
    "gathered in fp8 (Megatron --fp8-param-gather).")]
GradReduceInBf16 = Annotated[bool, typer.Option(
    "--grad-reduce-in-bf16", help="Megatron: gradient buffers accumulated and reduced in bf16, "
    "not fp32 (Megatron --grad-reduce-in-bf16).")]
MoeA2aOverlap = Annotated[bool, typer.Option(
    "--moe-a2a-overlap", help="Megatron MoE: expert all-to-alls hidden behind another "
    "micro-batch's compute (Megatron --overlap-moe-expert-parallel-comm; no full recompute).")]
GradientAccumulationFusion = Annotated[bool, typer.Option(
    "--gradient-accumulation-fusion/--no-gradient-accumulation-fusion", help="Megatron: "
    "weight gradients accumulated in the GEMM (default) or added into main_grad after it, "
    "as Megatron's --no-gradient-accumulation-fusion runs.")]
Eager = Annotated[bool, typer.Option(
    "--eager", help="torchtitan without torch.compile: element-wise ops (RoPE, SwiGLU) run "
    "one kernel each, priced so; async TP needs compile.")]
RecomputeModules = Annotated[str | None, typer.Option(
    "--recompute-modules", help="Megatron's selective recompute of these modules, comma-"
    "separated: core_attn (the default), moe_act, layernorm, mla_up_proj, mlp, moe, "
    "shared_experts (Megatron --recompute-modules).")]
UnfusedRmsNorm = Annotated[bool, typer.Option(
    "--unfused-rms-norm", help="With --eager: RMSNorm runs op by op, as on PyTorch before 2.8 "
    "(no fused rms_norm kernel) or with torchtitan's 2024 RMSNorm class.")]
Bf16Layers = Annotated[str | None, typer.Option(
    "--bf16-layers", help="fp8 with the first and last layers in bf16, FIRST,LAST layers "
    "(Megatron --first-last-layers-bf16; NVIDIA's fp8 current-scaling recipes keep 1,1).")]
DocumentTokens = Annotated[int | None, typer.Option(
    "--document-tokens", min=1, help="torchtitan 0.3.0: the documents packed into each "
    "sequence, token-weighted mean length (sum of d^2 / sum of d); its block-causal attention "
    "skips the blocks across documents. Default: one document per sequence (plain causal).")]
Deterministic = Annotated[bool, typer.Option(
    "--deterministic", help="Megatron --deterministic-mode: bitwise-reproducible runs, priced "
    "as measured (slower host work and memory fills); the launch sets NCCL_ALGO=Ring.")]


# What `planner validate` measured for the step-time model (README, Validation: Step time);
# tests/test_cli.py::test_validate recomputes each figure from the report, so they cannot
# drift from it.
VALIDATED = {
    "real_size_h100_h200_cases": 19, "real_size_h100_h200_too_fast": 15,
    "real_size_h100_h200_worst_fast": 0.22, "real_size_h100_h200_median": 0.08,
    "toy_max": 0.65, "a100_median": 0.048,
    # the held-out MoE runs (planner/data/heldout.yaml, models with experts)
    "heldout_moe_cases": 4, "heldout_moe_worst_fast": 0.54, "heldout_moe_worst_slow": 0.11,
    # the held-out torchtitan pipeline runs' reserved memory (heldout_memory, pp > 1)
    "heldout_titan_pp_cases": 6, "heldout_titan_pp_worst_under": 0.108,
    "heldout_titan_pp_beyond_margin": 1,
}
TORCHTITAN_PP_MEMORY_WARNING = (
    "warning: torchtitan pipelining's memory is the estimator's least certain: of torchtitan's "
    f"published 405B pipeline runs held out from its calibration "
    f"({VALIDATED['heldout_titan_pp_cases']} runs) some reserved up to "
    f"{VALIDATED['heldout_titan_pp_worst_under']:.1%} more than estimated, "
    f"{VALIDATED['heldout_titan_pp_beyond_margin']} beyond the fit verdict's 10% margin "
    "(`planner validate`); keep headroom (--headroom)")
MOE_WARNING = (
    "warning: step times of MoE models are the model's weakest: on NVIDIA's published H100 MoE "
    f"runs held out from its calibration ({VALIDATED['heldout_moe_cases']} runs) it was up to "
    f"{VALIDATED['heldout_moe_worst_fast']:.0%} too fast and "
    f"{VALIDATED['heldout_moe_worst_slow']:.0%} too slow (`planner validate`); host time of "
    "Transformer Engine's MoE layer is not priced")
UNCALIBRATED_WARNING = (
    "warning: the step time on {gpu} is not validated: against published runs the model "
    "predicts real-size H100 and H200 steps up to "
    f"{VALIDATED['real_size_h100_h200_worst_fast']:.0%} too fast "
    f"({VALIDATED['real_size_h100_h200_too_fast']} of {VALIDATED['real_size_h100_h200_cases']},"
    f" median error {VALIDATED['real_size_h100_h200_median']:.0%}; "
    "their kernel rates are measured, framework overheads are not all modelled), small test "
    f"models off by up to {VALIDATED['toy_max']:.0%}, and GPUs never measured are priced from "
    "datasheets; use it to compare configurations, not as a promise "
    f"(validated: Megatron-LM on A100, median error {VALIDATED['a100_median']:.1%})")


def _recompute_modules(text: str | None) -> tuple[str, ...]:
    """--recompute-modules a,b as a tuple (Megatron's default core_attn when not given); the
    names are checked with the configuration (ParallelConfig.problems)."""
    if text is None:
        return DEFAULT_RECOMPUTE_MODULES
    names = tuple(n for n in re.split(r"[\s,]+", text) if n)
    if not names:
        raise InputError(f"--recompute-modules {text!r}: no module named",
                         hint="e.g. --recompute-modules moe_act,layernorm")
    return names


def _bf16_layers(text: str | None) -> tuple[int, int]:
    """--bf16-layers FIRST,LAST as a pair of layer counts ((0, 0) when not given)."""
    if text is None:
        return 0, 0
    try:
        first, last = (int(x) for x in text.split(","))
    except ValueError:
        raise InputError(f"--bf16-layers {text!r}: expected two comma-separated layer counts "
                         "such as 1,1 (first and last layers kept in bf16)") from None
    if first < 0 or last < 0:
        raise InputError(f"--bf16-layers {text!r}: layer counts must be >= 0")
    return first, last


def _result(model: ModelSpec, cluster: Cluster, cfg: ParallelConfig,
            estimate: MemoryEstimate, step: StepTime) -> dict[str, Any]:
    """The estimate JSON of DESIGN.md."""
    return {
        "config": cfg.to_dict(),
        "model": {"name": model.name, "num_params": model.params.total,
                  "num_active_params": model.params.active},
        "cluster": {"name": cluster.name, "num_gpus": cluster.num_gpus,
                    "gpu": cluster.gpu_types[0].id},
        "memory": estimate.to_dict(),
        "time": step.to_dict(),
    }


def _report(model: ModelSpec, cluster: Cluster, cfg: ParallelConfig, estimate: MemoryEstimate,
            fmt: Format, title: str, headroom: float, step: StepTime | None = None) -> None:
    step = step or estimate_step(model, cfg, cluster)
    if not step.calibrated:
        render.err.print(UNCALIBRATED_WARNING.format(gpu=cluster.gpu_types[0].id), markup=False)
    if model.moe is not None:
        render.err.print(MOE_WARNING, markup=False)
    if cfg.framework is Framework.TORCHTITAN and cfg.pp > 1:
        render.err.print(TORCHTITAN_PP_MEMORY_WARNING, markup=False)
    if fmt is not Format.table:
        _emit(_result(model, cluster, cfg, estimate, step), fmt)
        return
    render.memory_table(model, cluster, cfg, estimate, title)
    render.time_lines(step)
    if cfg.document_tokens is not None:
        render.document_line(cfg.document_tokens,
                             document_block_fraction(cfg.seq_len, cfg.document_tokens))
    render.power_line(cluster.gpu_types)
    if not estimate.fits:
        render.remedy_lines(remedies(model, cfg, estimate.capacity_bytes, headroom,
                                     cluster.gpus_per_node))


@app.command()
def estimate(
    plan_file: Annotated[Path | None, typer.Argument(
        metavar="[PLAN.yaml]", help="A plan file to re-estimate (instead of the options).")]
    = None,
    model: Annotated[str | None, typer.Option(
        "--model", help="Built-in name (`planner models`), model YAML or HF config.json.")]
    = None,
    cluster: Annotated[str | None, typer.Option(
        "--cluster", help="Built-in profile (`planner profiles`) or cluster YAML.")] = None,
    global_batch: Annotated[int | None, typer.Option("--global-batch", help="Sequences per step.")]
    = None,
    seq_len: Annotated[int | None, typer.Option("--seq-len", help="Tokens per sequence.")] = None,
    tp: Annotated[int | None, typer.Option("--tp", help="Tensor parallel degree.")] = None,
    pp: Annotated[int | None, typer.Option("--pp", help="Pipeline parallel degree.")] = None,
    dp: Annotated[int | None, typer.Option(
        "--dp", help="Data parallel degree [default: GPUs / (tp*pp*cp)].")] = None,
    cp: Annotated[int | None, typer.Option("--cp", help="Context parallel degree.")] = None,
    ep: Annotated[int | None, typer.Option("--ep", help="Expert parallel degree.")] = None,
    etp: Annotated[int | None, typer.Option(
        "--etp", help="Expert tensor parallel degree [default: tp].")] = None,
    vpp: Annotated[int | None, typer.Option(
        "--vpp", help="Virtual pipeline chunks per stage (interleaved 1F1B).")] = None,
    mbs: Annotated[int | None, typer.Option("--mbs", help="Micro-batch size.")] = None,
    recompute: Annotated[Recompute | None, typer.Option("--recompute")] = None,
    recompute_modules: RecomputeModules = None,
    recompute_num_layers: Annotated[int | None, typer.Option(
        "--recompute-num-layers", help="With full recompute: only the first N layers of each "
        "stage (Megatron block method).")] = None,
    zero: Annotated[int | None, typer.Option(
        "--zero", help="0 none, 1 distributed optimizer, 2 + gradients, 3 + weights.")] = None,
    sequence_parallel: Annotated[bool | None, typer.Option(
        "--sequence-parallel/--no-sequence-parallel", help="[default: on when tp > 1]")] = None,
    vocab_strategy: Annotated[VocabChoice | None, typer.Option("--vocab-strategy")] = None,
    layers_per_stage: Annotated[str | None, typer.Option(
        "--layers-per-stage", help="Uneven split, comma-separated: 15,17,17,15.")] = None,
    precision: Annotated[Precision | None, typer.Option("--precision")] = None,
    framework: Annotated[Framework | None, typer.Option(
        "--framework", help="Executor whose memory behaviour to model.")] = None,
    flash_attention: Annotated[bool | None, typer.Option(
        "--flash-attention/--no-flash-attention", help="[default: on]")] = None,
    attention_kernel: Annotated[AttentionKernel, typer.Option(
        "--attention-kernel", help="Fused attention kernel to price: auto (the framework's "
        "pick: cuDNN on Hopper and later, FlashAttention-2 before), fa2 or cudnn.")]
    = AttentionKernel.AUTO,
    use_tp_pp_dp_mapping: Annotated[bool, typer.Option(
        "--use-tp-pp-dp-mapping", help="Megatron's rank order tp-cp-pp-dp instead of "
        "tp-cp-dp-pp.")] = False,
    moe_grouped_gemm: Annotated[bool, typer.Option(
        "--moe-grouped-gemm/--no-moe-grouped-gemm", help="MoE: local experts as one grouped "
        "GEMM, or one by one (Megatron without --moe-grouped-gemm).")] = True,
    tp_comm_overlap: TpCommOverlap = False,
    fp8_param_gather: Fp8ParamGather = False,
    grad_reduce_in_bf16: GradReduceInBf16 = False,
    moe_a2a_overlap: MoeA2aOverlap = False,
    deterministic: Deterministic = False,
    bf16_layers: Bf16Layers = None,
    eager: Eager = False,
    unfused_rms_norm: UnfusedRmsNorm = False,
    document_tokens: DocumentTokens = None,
    gradient_accumulation_fusion: GradientAccumulationFusion = True,
    headroom: Annotated[float | None, typer.Option(
        "--headroom", help="Fraction of device memory to keep free, 0-1.")] = None,
    fmt: Annotated[Format, typer.Option("--format", help="table, json or yaml.")] = Format.table,
    output: Annotated[Path | None, typer.Option(
        "-o", "--output", help="Write the configuration as a plan file.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite the -o file.")] = False,
    from_: Annotated[str | None, typer.Option(
        "--from", help="Read an existing launch instead: megatron (arguments file or launch "
        "script), torchtitan (arguments or script) or deepspeed (ds_config.json).")] = None,
) -> None:
    """Estimate per-stage memory and the step time of one configuration.

    Example: `planner estimate --model llama3-70b --cluster dgx-h100 --global-batch 512
    --seq-len 8192 --tp 8 --pp 4 --dp 4 --vpp 5 --zero 1`

    Or re-estimate a plan file: `planner estimate plan.yaml --cluster my-cluster.yaml`

    Or an existing launch: `planner estimate --from megatron train.sh --cluster dgx-h100`
    """
    if headroom is not None and not 0 <= headroom < 1:
        raise InputError(f"--headroom {headroom}: expected a fraction in [0, 1)")
    _check_degrees(tp=tp, pp=pp, dp=dp, cp=cp, ep=ep, etp=etp, vpp=vpp, mbs=mbs,
                   global_batch=global_batch, seq_len=seq_len,
                   recompute_num_layers=recompute_num_layers)
    if from_ is not None:
        given = [name for name, value in (
            ("--global-batch", global_batch), ("--tp", tp), ("--pp", pp), ("--cp", cp),
            ("--ep", ep), ("--vpp", vpp), ("--mbs", mbs), ("--recompute", recompute),
            ("--zero", zero)) if value is not None]
        if given:
            raise InputError(f"--from {from_}: the launch fixes the configuration; drop "
                             + ", ".join(given), hint="edit the launch instead")
        launch = _require_launch(plan_file, from_)
        spec_in, cl, cfg, result, room = _judge_launch(from_, launch, model, cluster, dp,
                                                       seq_len, headroom, document_tokens)
        _report(spec_in, cl, cfg, result, fmt, f"estimate of {launch}", room)
        return
    if plan_file is not None:
        given = [name for name, value in (
            ("--model", model), ("--global-batch", global_batch), ("--seq-len", seq_len),
            ("--tp", tp), ("--pp", pp), ("--dp", dp), ("--cp", cp), ("--ep", ep),
            ("--vpp", vpp), ("--mbs", mbs), ("--recompute", recompute), ("--zero", zero),
            ("--document-tokens", document_tokens)) if value is not None]
        if given:
            raise InputError(f"{plan_file}: a plan file fixes the configuration; drop "
                             + ", ".join(given), hint="edit the plan, or estimate without it")
        plan = load_plan(plan_file)
        cluster_ref = cluster or plan.cluster_ref
        cl = load_cluster(cluster_ref)
        room = plan.headroom_frac if headroom is None else headroom
        _check_config(plan.config, plan.model, cl, str(plan_file))
        result = estimate_memory(plan.model, plan.config, cl.min_gpu_memory_bytes, room)
        _report(plan.model, cl, plan.config, result, fmt, f"estimate of {plan_file}", room)
        return
    missing = [flag for flag, value in (("--model", model), ("--cluster", cluster),
                                        ("--global-batch", global_batch),
                                        ("--seq-len", seq_len)) if value is None]
    if missing:
        raise InputError("missing " + ", ".join(missing),
                         hint="example: planner estimate --model llama3-8b --cluster dgx-h100 "
                              "--global-batch 256 --seq-len 8192 --tp 2 --dp 8")
    assert model and cluster and global_batch is not None and seq_len is not None
    spec = load_model(model)
    cl = load_cluster(cluster)
    if vocab_strategy is VocabChoice.auto:
        raise InputError("--vocab-strategy auto chooses among strategies, which is the job "
                         "of `planner search`", hint="give baseline, redistribute or "
                         "vocab-parallel to estimate one configuration")
    layout: tuple[int, ...] = ()
    if layers_per_stage:
        try:
            layout = tuple(int(x) for x in layers_per_stage.split(","))
        except ValueError:
            raise InputError(f"--layers-per-stage {layers_per_stage!r}: expected "
                             "comma-separated integers such as 15,17,17,15") from None
    tp_, pp_, cp_ = tp or 1, pp or 1, cp or 1
    cfg = ParallelConfig(
        tp=tp_, pp=pp_, cp=cp_, dp=dp or max(1, cl.num_gpus // (tp_ * pp_ * cp_)), ep=ep or 1,
        etp=etp,
        vpp=vpp or 1, mbs=mbs or 1, global_batch=global_batch, seq_len=seq_len,
        recompute=recompute or Recompute.NONE, recompute_num_layers=recompute_num_layers,
        zero=0 if zero is None else zero,
        sequence_parallel=(tp_ > 1) if sequence_parallel is None else sequence_parallel,
        precision=precision or Precision.BF16,
        vocab_strategy=VocabStrategy((vocab_strategy or VocabChoice.baseline).value),
        layers_per_stage=layout, framework=framework or Framework.MEGATRON,
        flash_attention=True if flash_attention is None else flash_attention,
        attention_kernel=attention_kernel, moe_grouped_gemm=moe_grouped_gemm,
        tp_comm_overlap=tp_comm_overlap, fp8_param_gather=fp8_param_gather,
        grad_reduce_in_bf16=grad_reduce_in_bf16, moe_a2a_overlap=moe_a2a_overlap,
        deterministic=deterministic, bf16_layers=_bf16_layers(bf16_layers), eager=eager,
        fused_rms_norm=not unfused_rms_norm, document_tokens=document_tokens,
        recompute_modules=_recompute_modules(recompute_modules),
        gradient_accumulation_fusion=gradient_accumulation_fusion,
        rank_order="tp-cp-pp-dp" if use_tp_pp_dp_mapping else "tp-cp-dp-pp",
    )
    _check_config(cfg, spec, cl, "configuration", dp_given=dp is not None)
    room = headroom or 0.0
    result = estimate_memory(spec, cfg, cl.min_gpu_memory_bytes, room)
    step = estimate_step(spec, cfg, cl)
    if output is not None:
        plan = Plan(model=spec, model_ref=model, cluster_ref=cluster,
                    cluster_sha256=file_hash(_cluster_source(cluster)), config=cfg,
                    headroom_frac=room,
                    predictions=(("memory", result.to_dict()), ("time", step.to_dict())))
        write_plan(plan, output, force=force)
        render.err.print(f"wrote {output}")
    _report(spec, cl, cfg, result, fmt, "estimate", room, step)


@app.command()
def search(
    model: Annotated[str, typer.Option(
        "--model", help="Built-in name (`planner models`), model YAML or HF config.json.")],
    cluster: Annotated[str, typer.Option(
        "--cluster", help="Built-in profile (`planner profiles`) or cluster YAML.")],
    global_batch: Annotated[int, typer.Option("--global-batch", help="Sequences per step.")],
    seq_len: Annotated[int, typer.Option("--seq-len", help="Tokens per sequence.")],
    precision: Annotated[Precision, typer.Option("--precision")] = Precision.BF16,
    tp: Annotated[int | None, typer.Option("--tp", help="Fix tensor parallelism.")] = None,
    pp: Annotated[int | None, typer.Option("--pp", help="Fix pipeline parallelism.")] = None,
    dp: Annotated[int | None, typer.Option(
        "--dp", help="Fix data parallelism (with the others, sets the GPUs used).")] = None,
    cp: Annotated[int | None, typer.Option("--cp", help="Fix context parallelism.")] = None,
    ep: Annotated[int | None, typer.Option("--ep", help="Fix expert parallelism.")] = None,
    vpp: Annotated[int | None, typer.Option("--vpp", help="Fix interleaving.")] = None,
    mbs: Annotated[int | None, typer.Option("--mbs", help="Fix the micro-batch size.")] = None,
    recompute: Annotated[Recompute | None, typer.Option("--recompute")] = None,
    recompute_modules: RecomputeModules = None,
    zero: Annotated[int | None, typer.Option("--zero", help="Fix the ZeRO stage.")] = None,
    vocab_strategy: Annotated[VocabChoice, typer.Option("--vocab-strategy")]
    = VocabChoice.auto,
    framework: Annotated[Framework, typer.Option("--framework")] = Framework.MEGATRON,
    attention_kernel: Annotated[AttentionKernel, typer.Option(
        "--attention-kernel", help="Fused attention kernel to price: auto (the framework's "
        "pick: cuDNN on Hopper and later, FlashAttention-2 before), fa2 or cudnn.")]
    = AttentionKernel.AUTO,
    tp_comm_overlap: TpCommOverlap = False,
    fp8_param_gather: Fp8ParamGather = False,
    grad_reduce_in_bf16: GradReduceInBf16 = False,
    moe_a2a_overlap: MoeA2aOverlap = False,
    deterministic: Deterministic = False,
    bf16_layers: Bf16Layers = None,
    eager: Eager = False,
    unfused_rms_norm: UnfusedRmsNorm = False,
    document_tokens: DocumentTokens = None,
    gradient_accumulation_fusion: GradientAccumulationFusion = True,
    headroom: Annotated[float, typer.Option(
        "--headroom", help="Fraction of device memory to keep free, 0-1.")] = 0.0,
    exhaustive: Annotated[bool, typer.Option(
        "--exhaustive", help="Evaluate every configuration, without memory pruning.")] = False,
    explain_best: Annotated[bool, typer.Option(
        "--explain", help="Why the best plan beat the runner-up, in numbers.")] = False,
    top: Annotated[int, typer.Option("--top", help="How many plans to show.")] = 5,
    fmt: Annotated[Format, typer.Option("--format", help="table, json or yaml.")] = Format.table,
    output: Annotated[Path | None, typer.Option(
        "-o", "--output", help="Write the best plan.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite the -o file.")] = False,
) -> None:
    """Find the fastest configurations that fit: parallel degrees, micro-batch, recompute,
    ZeRO, interleaving and vocabulary placement. Degrees given are fixed.

    Example: `planner search --model gpt3-175b --cluster selene --global-batch 1536
    --seq-len 2048 --dp 16 --top 5 -o plan.yaml`
    """
    if not 0 <= headroom < 1:
        raise InputError(f"--headroom {headroom}: expected a fraction in [0, 1)")
    if top < 1:
        raise InputError(f"--top {top}: expected an integer >= 1")
    _check_degrees(tp=tp, pp=pp, dp=dp, cp=cp, ep=ep, vpp=vpp, mbs=mbs,
                   global_batch=global_batch, seq_len=seq_len)
    spec_model = load_model(model)
    cl = load_cluster(cluster)
    world = cl.num_gpus
    if dp is not None:
        fixed = (tp or 1) * (pp or 1) * (cp or 1) * dp
        if tp is None or pp is None or cp is None:
            raise InputError("--dp fixes the GPU count only together with --tp, --pp and --cp",
                             hint="give all four, or leave --dp out to use the whole cluster")
        if fixed > world:
            raise InputError(f"tp({tp}) * pp({pp}) * cp({cp}) * dp({dp}) = {fixed} GPUs, but "
                             f"cluster {cl.name} has {world}")
        world = fixed
    spec = SearchSpec(
        world_size=world, global_batch=global_batch, seq_len=seq_len, precision=precision,
        framework=framework, attention_kernel=attention_kernel, tp=tp, pp=pp, dp=dp, cp=cp,
        ep=ep, vpp=vpp, mbs=mbs, recompute=recompute, zero=zero,
        vocab_strategy=None if vocab_strategy is VocabChoice.auto
        else VocabStrategy(vocab_strategy.value), fp8_param_gather=fp8_param_gather,
        grad_reduce_in_bf16=grad_reduce_in_bf16, moe_a2a_overlap=moe_a2a_overlap,
        deterministic=deterministic, bf16_layers=_bf16_layers(bf16_layers), eager=eager,
        fused_rms_norm=not unfused_rms_norm, document_tokens=document_tokens,
        recompute_modules=_recompute_modules(recompute_modules),
        gradient_accumulation_fusion=gradient_accumulation_fusion,
        tp_comm_overlap=tp_comm_overlap)
    if problem := spec.problem():
        raise InputError(f"search options: {problem}",
                         hint="drop the flag or change --precision / --framework / --zero / "
                              "--recompute")
    if moe_a2a_overlap and spec_model.moe is None:
        raise InputError(f"--moe-a2a-overlap: {spec_model.name} has no experts")
    with render.progress_bar("searching") as advance:
        result = run_search(spec_model, spec, cl, top_k=top, headroom_frac=headroom,
                            exhaustive=exhaustive, progress=advance)
    if result.families == 0:
        fixed_text = ", ".join(f"{k}={v}" for k, v in (("tp", tp), ("pp", pp), ("cp", cp),
                                                       ("dp", dp), ("ep", ep), ("vpp", vpp))
                               if v is not None) or "none"
        raise InputError(
            f"no parallel layout of {spec_model.name} on {world} GPUs satisfies the fixed "
            f"degrees ({fixed_text}) and global_batch({global_batch})",
            hint=f"tp must divide the attention heads ({spec_model.num_attention_heads}) and "
                 f"query groups ({spec_model.num_query_groups}), pp * vpp the layers "
                 f"({spec_model.num_layers}), tp * pp * cp the GPU count, 2 * cp the sequence, "
                 "and dp the global batch")
    if not result.plans:
        _no_plan(spec_model, cl, result, fmt, headroom)
        raise typer.Exit(1)
    best = result.plans[0]
    assert best.step is not None
    if not best.step.calibrated:
        render.err.print(UNCALIBRATED_WARNING.format(gpu=cl.gpu_types[0].id), markup=False)
    if spec_model.moe is not None:
        render.err.print(MOE_WARNING, markup=False)
    if best.config.framework is Framework.TORCHTITAN and best.config.pp > 1:
        render.err.print(TORCHTITAN_PP_MEMORY_WARNING, markup=False)
    if best.config.vocab_strategy is VocabStrategy.VOCAB_PARALLEL and best.config.pp > 1:
        stock = next((rank for rank, c in enumerate(result.plans, start=1)
                      if c.config.vocab_strategy is not VocabStrategy.VOCAB_PARALLEL), None)
        render.err.print(
            "note: plan #1 splits the vocabulary over the pipeline stages (Yeung et al.); stock "
            "Megatron-LM and torchtitan do not implement it (`planner emit` refuses it)"
            + (f"; #{stock} is the best plan they run" if stock else "")
            + "; --vocab-strategy redistribute or baseline keeps to layouts they run",
            markup=False)
    if output is not None:
        plan = Plan(model=spec_model, model_ref=model, cluster_ref=cluster,
                    cluster_sha256=file_hash(_cluster_source(cluster)), config=best.config,
                    headroom_frac=headroom,
                    predictions=(("memory", best.memory.to_dict()),
                                 ("time", best.step.to_dict()),
                                 ("search", {"exhaustive": exhaustive, "top": top,
                                             "candidates_evaluated":
                                                 result.candidates_evaluated,
                                             "layout_solver": best.layout_solver or None})))
        write_plan(plan, output, force=force)
        render.err.print(f"wrote {output}")
    why = explain(result.plans[0], result.plans[1]) if (
        explain_best and len(result.plans) > 1) else None
    if fmt is Format.table:
        render.search_table(spec_model, cl, result)
        if document_tokens is not None:
            render.document_line(document_tokens,
                                 document_block_fraction(seq_len, document_tokens))
        if why is not None:
            render.explanation(why)
        return
    data: dict[str, Any] = {"plans": [{**_result(spec_model, cl, c.config, c.memory, c.step),
                                       "layout_solver": c.layout_solver or None}
                                      for c in result.plans if c.step is not None],
                            "search": result.stats()}
    if why is not None:
        data["explain"] = why.to_dict()
    _emit(data, fmt)


def _no_plan(model: ModelSpec, cluster: Cluster, result: SearchResult, fmt: Format,
             headroom: float) -> None:
    """Nothing fits: the closest candidates, which stage overflows by how much, what helps."""
    if fmt is not Format.table:
        _emit({"plans": [], "closest": [
            {"config": c.config.to_dict(), "memory": c.memory.to_dict()} for c in result.closest],
            "search": result.stats()}, fmt)
        return
    render.err.print(f"no configuration fits: {result.candidates_evaluated} evaluated, "
                     f"{result.families_pruned} families too large even with full recompute, "
                     "micro-batch 1 and the distributed optimizer", markup=False)
    if result.closest:
        nearest = result.closest[0]
        render.memory_table(model, cluster, nearest.config, nearest.memory,
                            "closest candidate")
        render.remedy_lines(remedies(model, nearest.config, nearest.memory.capacity_bytes,
                                     headroom, cluster.gpus_per_node))
    render.err.print("hint: more GPUs, GPUs with more memory, a shorter sequence or a smaller "
                     "global batch per replica", markup=False)


def _require_launch(path: Path | None, framework: str) -> Path:
    if path is None:
        raise InputError(f"--from {framework}: give the launch file",
                         hint=f"planner check --from {framework} FILE --cluster C")
    return path


def _require_cluster(cluster: str | None, framework: str) -> str:
    if cluster is None:
        raise InputError(f"--from {framework}: give --cluster (a launch does not name its "
                         "hardware)")
    return cluster


def _judge_launch(framework: str, path: Path, model: str | None, cluster: str | None,
                  dp: int | None, seq_len: int | None, headroom: float | None,
                  document_tokens: int | None = None
                  ) -> tuple[ModelSpec, Cluster, ParallelConfig, MemoryEstimate, float]:
    """An existing launch's model, cluster, configuration and memory estimate;
    `document_tokens` (the data's, which no launch states) joins the configuration."""
    cl = load_cluster(_require_cluster(cluster, framework))
    spec, cfg = _from_launch(framework, path, model, cl, dp, seq_len)
    if document_tokens is not None:
        cfg = dataclasses.replace(cfg, document_tokens=document_tokens)
        _check_config(cfg, spec, cl, f"{path} with --document-tokens")
    room = headroom or 0.0
    return spec, cl, cfg, estimate_memory(spec, cfg, cl.min_gpu_memory_bytes, room), room


def _from_launch(framework: str, path: Path, model: str | None, cl: Cluster, dp: int | None,
                 seq_len: int | None) -> tuple[ModelSpec, ParallelConfig]:
    """The model and configuration of an existing launch; what it does not model is listed on
    stderr (never dropped silently)."""
    imported = import_launch(framework, path, model=load_model(model) if model else None,
                             dp=dp, world_size=cl.num_gpus, seq_len=seq_len)
    for flag in imported.unknown:
        render.err.print(f"warning: {path}: {flag}: not modelled; the estimate ignores it",
                         markup=False)
    if imported.ignored:
        render.err.print(f"note: {path}: no effect on memory or time: "
                         + ", ".join(imported.ignored), markup=False)
    for note in imported.notes:
        render.err.print(f"note: {path}: {note}", markup=False)
    if imported.world_size is None and dp is None and framework != "deepspeed":
        render.err.print(f"note: {path}: no launcher line gives the world size; assumed all "
                         f"{cl.num_gpus} GPUs of {cl.name} (give --dp to say otherwise)",
                         markup=False)
    _check_config(imported.config, imported.model, cl, str(path))
    return imported.model, imported.config


@app.command()
def check(
    plan_file: Annotated[Path, typer.Argument(
        metavar="PLAN.yaml", help="The plan to check (or the launch file with --from).")],
    cluster: Annotated[str | None, typer.Option(
        "--cluster", help="Check against this cluster instead of the plan's.")] = None,
    headroom: Annotated[float | None, typer.Option(
        "--headroom", help="Fraction of device memory to keep free [default: the plan's].")]
    = None,
    fmt: Annotated[Format, typer.Option("--format", help="table, json or yaml.")] = Format.table,
    from_: Annotated[str | None, typer.Option(
        "--from", help="Check an existing launch: megatron, torchtitan or deepspeed.")] = None,
    model: Annotated[str | None, typer.Option(
        "--model", help="With --from: the model, when the launch does not describe it.")]
    = None,
    dp: Annotated[int | None, typer.Option(
        "--dp", help="With --from: data-parallel degree, when the launch does not say.")]
    = None,
    seq_len: Annotated[int | None, typer.Option(
        "--seq-len", help="With --from deepspeed: tokens per sequence.")] = None,
) -> None:
    """CI gate: exit 0 when the plan fits on every stage, 1 when it does not, 2 on bad input.

    Example: `planner check plan.yaml --cluster dgx-h100 --headroom 0.05 --format json`

    Hand-written launches: `planner check --from megatron train.sh --cluster dgx-h100`
    """
    if headroom is not None and not 0 <= headroom < 1:
        raise InputError(f"--headroom {headroom}: expected a fraction in [0, 1)")
    _check_degrees(dp=dp, seq_len=seq_len)
    if from_ is not None:
        spec, cl, cfg, result, room = _judge_launch(from_, plan_file, model, cluster, dp,
                                                    seq_len, headroom)
        _check_report(spec, cl, cfg, result, fmt, f"check {plan_file}", room)
        return
    plan = load_plan(plan_file)
    cluster_ref = cluster or plan.cluster_ref
    cl = load_cluster(cluster_ref)
    if cluster is None and plan.cluster_sha256:
        source = _cluster_source(cluster_ref)
        if source.exists() and file_hash(source) != plan.cluster_sha256:
            render.err.print(f"warning: cluster {cluster_ref} changed since the plan was "
                             "written; checking against its current content")
    room = plan.headroom_frac if headroom is None else headroom
    _check_config(plan.config, plan.model, cl, str(plan_file))
    result = estimate_memory(plan.model, plan.config, cl.min_gpu_memory_bytes, room)
    _check_report(plan.model, cl, plan.config, result, fmt, f"check {plan_file}", room)


def _check_report(spec: ModelSpec, cl: Cluster, cfg: ParallelConfig, result: MemoryEstimate,
                  fmt: Format, title: str, room: float) -> None:
    """The verdict of `check`: a report, then exit 1 when it does not fit."""
    if fmt is Format.table:
        _report(spec, cl, cfg, result, fmt, title, room)
    else:
        data = _result(spec, cl, cfg, result, estimate_step(spec, cfg, cl))
        data["remedies"] = [
            {"change": r.change, "peak_bytes": r.peak_bytes, "fits": r.fits}
            for r in (() if result.fits else remedies(spec, cfg, result.capacity_bytes, room,
                                                      cl.gpus_per_node))]
        _emit(data, fmt)
    if not result.fits:
        raise typer.Exit(1)


@app.command("emit")
def emit_command(
    plan_file: Annotated[Path, typer.Argument(metavar="PLAN.yaml", help="The plan to launch.")],
    to: Annotated[str, typer.Option(
        "--to", help="megatron, torchtitan, deepspeed, torchrun or slurm.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Directory for the files.")],
    cluster: Annotated[str | None, typer.Option(
        "--cluster", help="Cluster to launch on [default: the plan's].")] = None,
    hosts: Annotated[str | None, typer.Option(
        "--hosts", help="Host names in node-rank order: a file (one per line) or a "
        "comma-separated list [default: the profile's node names, when it has them].")] = None,
    skip_memory_check: Annotated[bool, typer.Option(
        "--skip-memory-check", help="Write the launch even when the plan does not fit.")]
    = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite files in the directory.")]
    = False,
) -> None:
    """Write the launch configuration of a plan for a framework and launcher.

    Example: `planner emit plan.yaml --to megatron -o launch/`
    """
    plan = load_plan(plan_file)
    cl = load_cluster(cluster or plan.cluster_ref)
    _check_config(plan.config, plan.model, cl, str(plan_file))
    result = estimate_memory(plan.model, plan.config, cl.min_gpu_memory_bytes,
                             plan.headroom_frac)
    if not result.fits and not skip_memory_check:
        worst = result.worst
        raise DoesNotFitError(
            f"{plan_file}: does not fit on {cl.name}: stage {worst.stage} needs "
            f"{worst.peak_bytes / 2**30:.1f} GiB of {result.usable_bytes / 2**30:.1f} GiB",
            hint="`planner check` shows remedies; --skip-memory-check writes it anyway")
    emitted = emit(plan, cl, to, _host_list(hosts))
    for path in write_emitted(emitted, output, force=force):
        render.err.print(f"wrote {path}", markup=False)
    for note in emitted.notes:
        render.err.print(f"note: {note}", markup=False)


def _host_list(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    if "," in value or ("/" not in value and not Path(value).is_file()):
        text = value.replace(",", "\n")  # host1,host2,... (or a single host)
    else:
        text = read_text(Path(value))  # one host per line; a missing file is an error
    names = tuple(line.split()[0] for line in text.splitlines()
                  if line.strip() and not line.lstrip().startswith("#"))
    if not names:
        raise InputError(f"--hosts {value}: no host names")
    return names


@app.command()
def models(
    fmt: Annotated[Format, typer.Option("--format", help="table, json or yaml.")] = Format.table,
) -> None:
    """List the built-in models. Example: `planner models --format json`"""
    specs = list(BUILTIN_MODELS.values())
    if fmt is Format.table:
        render.models_table(specs)
        return
    _emit([{"name": m.name, "num_params": m.params.total, "num_active_params": m.params.active,
            "num_layers": m.num_layers, "hidden_size": m.hidden_size,
            "num_attention_heads": m.num_attention_heads,
            "num_query_groups": m.num_query_groups, "ffn_hidden_size": m.ffn_hidden_size,
            "vocab_size": m.vocab_size, "activation": m.activation.value,
            "num_experts": m.moe.num_experts if m.moe else 0,
            "top_k": m.moe.top_k if m.moe else 0, "mla": m.mla is not None,
            "num_mtp_params": m.params.mtp, "source": m.source} for m in specs], fmt)


@app.command()
def profiles(
    fmt: Annotated[Format, typer.Option("--format", help="table, json or yaml.")] = Format.table,
) -> None:
    """List the built-in cluster profiles. Example: `planner profiles`"""
    rows = [(name, load_cluster(name)) for name in builtin_profiles()]
    if fmt is Format.table:
        render.profiles_table(rows)
        return
    _emit([{"name": name, "num_gpus": c.num_gpus, "num_nodes": c.num_nodes,
            "gpus": [g.id for g in c.gpu_types], "islands": [i.name for i in c.islands],
            "path": str(builtin_profiles()[name]),
            "sha256": content_hash(str(builtin_profiles()[name].read_text()))}
           for name, c in rows], fmt)


profile_app = typer.Typer(no_args_is_help=True, help="Build cluster profiles from measurements.")
app.add_typer(profile_app, name="profile")


@profile_app.command("import-nccl-tests")
def import_nccl_tests_command(
    logs: Annotated[list[Path], typer.Argument(metavar="LOG...", help="nccl-tests text output.")],
    base: Annotated[Path, typer.Option(
        "--base", help="The rich profile to add the measured curves to.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="The new profile.")],
    op: Annotated[str | None, typer.Option(
        "--op", help="The collective, for logs that do not name it (old nccl-tests).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite the -o file.")] = False,
) -> None:
    """Add nccl-tests measurements (bus bandwidth vs message size) to a profile; collectives on
    groups of the same shape then use them instead of the ring model.

    Example: `planner profile import-nccl-tests ar_2x8.log a2a_2x8.log --base profiles/dgx-h100.yaml
    -o my-cluster.yaml`
    """
    refuse_overwrite(output, force=force)  # before the work, not after it
    write_new_file(output, import_nccl_tests(base, logs, op), force=force)
    render.err.print(f"wrote {output}")


@profile_app.command("import-topo")
def import_topo_command(
    topo_file: Annotated[Path, typer.Argument(metavar="TOPO.txt",
                                              help="Output of `nvidia-smi topo -m`.")],
    gpu: Annotated[str, typer.Option("--gpu", help="GPU catalog id of the machines.")],
    nodes: Annotated[str, typer.Option(
        "--nodes", help="The nodes, a name or a range: 'gpu[001-016]'.")],
    nic_rate: Annotated[float, typer.Option(
        "--nic-rate-gbps", help="NIC line rate in Gb/s (topo -m does not show it).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="The new profile.")],
    name: Annotated[str, typer.Option("--name", help="Profile name.")] = "imported",
    force: Annotated[bool, typer.Option("--force", help="Overwrite the -o file.")] = False,
) -> None:
    """Build a rich profile from `nvidia-smi topo -m` of one node: NVLink bonds and PCIe
    classes become the intra-node fabric, PIX/PXB affinity says which NIC serves which GPU.

    Example: `nvidia-smi topo -m > topo.txt; planner profile import-topo topo.txt --gpu
    h100-sxm5-80gb --nodes 'h100-[01-16]' --nic-rate-gbps 400 -o my-cluster.yaml`
    """
    refuse_overwrite(output, force=force)  # before the work, not after it
    try:
        topology = topo.parse(read_text(topo_file), str(topo_file))
    except ValueError as exc:
        raise InputError(str(exc), hint="pass the output of `nvidia-smi topo -m`") from None
    if nic_rate <= 0:
        raise InputError(f"--nic-rate-gbps {nic_rate}: expected a rate > 0")
    write_new_file(output, profile_from_topology(topology, gpu_id=gpu, nodes=nodes,
                                                 nic_rate_gbps=nic_rate, name=name,
                                                 source=str(topo_file)), force=force)
    render.err.print(f"wrote {output}")


@app.command()
def validate(
    fmt: Annotated[Format, typer.Option("--format", help="table, json or yaml.")] = Format.table,
) -> None:
    """Compare the estimators with the published measurements shipped in planner/data.

    The memory estimator is validated; the step-time model is in development and its
    current error is shown so that its progress can be followed.

    Example: `planner validate --format json`
    """
    measured = load_measurements()
    report = memory_report(measured)
    clusters = {name: load_cluster(name) for _, _, name in VALIDATION_PROFILES}
    timing = time_report(load_measurements("calibration.yaml"), measured, clusters)
    heldout_data = load_measurements("heldout.yaml")
    heldout_clusters = {name: load_cluster(name)
                        for name in sorted({c["cluster"] for c in heldout_data["cases"]})}
    heldout = heldout_report(heldout_data, heldout_clusters)
    heldout_memory = heldout_memory_report(heldout_data, heldout_clusters)
    if fmt is Format.table:
        render.validation_table(report)
        render.timing_table(timing)
        render.heldout_table(heldout, heldout_memory, "; ".join(heldout_sources(heldout_data)))
    else:
        _emit({"memory": report.to_dict(), "time": timing.to_dict(),
               "heldout": heldout.to_dict(), "heldout_memory": heldout_memory.to_dict()}, fmt)


def _print_error(exc: PlannerError) -> None:
    problems = getattr(exc, "problems", ())
    if problems and len(problems) > 1:
        render.err.print(f"error: {len(problems)} problems", markup=False)
        for p in problems:
            render.err.print(f"error: {p}", markup=False)
    else:
        render.err.print(f"error: {exc.message}", markup=False)
    if exc.hint:
        render.err.print(f"hint: {exc.hint}", markup=False)


def main() -> None:
    """Console entry point: maps exceptions to exit codes (DESIGN.md). Typer handles usage
    errors itself (exit 2) in standalone mode."""
    try:
        app()
    except PlannerError as exc:
        _print_error(exc)
        sys.exit(exc.exit_code)
    except Exception as exc:
        render.err.print(f"internal error: {type(exc).__name__}: {exc}", markup=False)
        if _state["debug"]:
            traceback.print_exc()
        else:
            render.err.print("hint: rerun with --debug for the traceback, and report it",
                             markup=False)
        sys.exit(3)


__all__ = ["app", "main"]
