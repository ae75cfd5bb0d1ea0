"""The published measurements shipped in planner/data, turned into model + configuration, and the
memory estimator compared with each (pure functions; `load_measurements` reads the files).

A measured peak is compared with the level it measured: Megatron-LM's functional tests log
`max_memory_allocated` on the last global rank only (last pipeline stage); torchtitan's tables
report `max_memory_reserved`, the maximum over all GPUs.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import statistics
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

from planner.cost.flops import hardware_flops_per_step
from planner.cost.step import estimate_step
from planner.hardware import Cluster
from planner.importers.megatron import (
    MEGATRON_DROPOUT,
    config_from_flags,
    parse_flags,
)
from planner.memory import ESTIMATE_MARGIN_FRAC, MemoryEstimate, estimate_memory
from planner.model import MlaSpec, ModelSpec, MoeSpec, make_model
from planner.parallel import AttentionKernel, Framework, ParallelConfig, Precision, Recompute
from planner.units import GiB

# Cases whose configuration cannot be reproduced from what the source states.
_SKIP_STATUSES = ("suspect", "measured_world_size_unknown", "measured_incomplete_config",
                  "measured_low_confidence")


def load_measurements(name: str = "measured.yaml") -> dict[str, Any]:
    """Read one of the shipped data files (measured.yaml, calibration.yaml, ...)."""
    text = (resources.files("planner") / "data" / name).read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    assert isinstance(data, dict)
    return data


@functools.cache
def _restored_args() -> dict[str, dict[str, Any]]:
    """Case id -> the Megatron arguments measured.yaml left out (data/megatron_ci_args.yaml,
    read from each test's model_config.yaml)."""
    return {c["id"]: dict(c["args"]) for c in load_measurements("megatron_ci_args.yaml")["cases"]}


def megatron_case_args(case: dict[str, Any]) -> dict[str, Any]:
    """A Megatron case's arguments: those measured.yaml transcribes, over the ones it left out
    (dropout, --deterministic-mode, ...) as its model_config.yaml sets them."""
    return {**_restored_args().get(str(case.get("id")), {}),
            **(case["config"].get("megatron_args") or {})}


@dataclass(frozen=True, slots=True, kw_only=True)
class Comparison:
    """One measurement and what the planner predicts for it, in the same unit.

    `kind` says what was measured (allocated / reserved memory, step time); `note` what the
    comparison had to assume or which rank it covers."""

    id: str
    measured: float
    predicted: float
    kind: str = ""
    note: str = ""
    group: str = ""  # framework, model size class and GPU: errors are summarised per group

    @property
    def error_frac(self) -> float:
        """(predicted - measured) / measured: > 0 over-estimates, < 0 under-estimates."""
        return (self.predicted - self.measured) / self.measured


@dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    """Comparisons of one estimator with measurements; `unit` suffixes the JSON keys."""

    cases: tuple[Comparison, ...]
    skipped: tuple[tuple[str, str], ...]  # (case id, reason)
    unit: str

    @property
    def mean_abs_error_frac(self) -> float:
        return statistics.fmean(abs(c.error_frac) for c in self.cases) if self.cases else 0.0

    @property
    def median_abs_error_frac(self) -> float:
        return statistics.median(abs(c.error_frac) for c in self.cases) if self.cases else 0.0

    @property
    def max_abs_error_frac(self) -> float:
        return max((abs(c.error_frac) for c in self.cases), default=0.0)

    def groups(self) -> dict[str, tuple[int, float, float]]:
        """Per comparison group: (cases, median |error|, max |error|), groups sorted."""
        out: dict[str, list[float]] = {}
        for c in self.cases:
            out.setdefault(c.group, []).append(abs(c.error_frac))
        return {g: (len(v), statistics.median(v), max(v)) for g, v in sorted(out.items())}

    def real_size(self) -> tuple[int, float, float]:
        """(cases, median |error|, max |error|) over the real-size groups: the toy models'
        steps are host-bound and noisy (identical configurations differ by +-30%)."""
        errors = [abs(c.error_frac) for c in self.cases if REAL_SIZE in c.group]
        if not errors:
            return 0, 0.0, 0.0
        return len(errors), statistics.median(errors), max(errors)

    def repeatability(self) -> tuple[int, int, float, float]:
        """(groups, cases, median and max deviation) of the cases the estimator cannot tell
        apart: those of one comparison group with the same prediction (the same job as the
        planner reads it; they differ in flags it does not price, such as a checkpoint
        resume or a data loader). Deviation: |measured / the group's median - 1|, how far
        such cases' own measurements spread; (0, 0, 0.0, 0.0) when there are none."""
        same: dict[tuple[str, float], list[float]] = {}
        for c in self.cases:
            same.setdefault((c.group, float(f"{c.predicted:.9g}")), []).append(c.measured)
        sets = [v for v in same.values() if len(v) > 1]
        deviations = [abs(m / statistics.median(v) - 1) for v in sets for m in v]
        if not deviations:
            return 0, 0, 0.0, 0.0
        return len(sets), len(deviations), statistics.median(deviations), max(deviations)

    @property
    def under_estimates(self) -> tuple[Comparison, ...]:
        return tuple(c for c in self.cases if c.error_frac < 0)

    @property
    def under_margin(self) -> tuple[Comparison, ...]:
        """Cases whose measurement exceeds the estimate even with the fit verdict's margin."""
        return tuple(c for c in self.cases
                     if c.predicted * (1 + ESTIMATE_MARGIN_FRAC) < c.measured)

    def to_dict(self) -> dict[str, object]:
        grouped = any(c.group for c in self.cases)
        return {
            "num_cases": len(self.cases),
            "mean_abs_error_frac": round(self.mean_abs_error_frac, 4),
            "median_abs_error_frac": round(self.median_abs_error_frac, 4),
            "max_abs_error_frac": round(self.max_abs_error_frac, 4),
            "num_under_estimates": len(self.under_estimates),
            "margin_frac": ESTIMATE_MARGIN_FRAC,
            "num_under_margin": len(self.under_margin),
            "cases": [{"id": c.id, "kind": c.kind, f"measured_{self.unit}": c.measured,
                       f"predicted_{self.unit}": c.predicted,
                       "error_frac": round(c.error_frac, 4), "note": c.note,
                       "group": c.group}
                      for c in self.cases],
            "skipped": [{"id": i, "reason": r} for i, r in self.skipped],
            "groups": [{"group": g, "num_cases": n, "median_abs_error_frac": round(med, 4),
                        "max_abs_error_frac": round(top, 4)}
                       for g, (n, med, top) in self.groups().items() if g],
            **({"real_size": dict(zip(("num_cases", "median_abs_error_frac",
                                       "max_abs_error_frac"),
                                      (round(x, 4) for x in self.real_size()), strict=True))}
               if grouped else {}),
            "repeatability": dict(zip(("num_groups", "num_cases", "median_deviation_frac",
                                       "max_deviation_frac"),
                                      (round(x, 4) for x in self.repeatability()), strict=True)),
        }


def _model(case: dict[str, Any]) -> ModelSpec:
    m = case["model"]
    act = {"gelu": "gelu", "swiglu": "swiglu", "squared_relu": "squared_relu"}[m["activation"]]
    position = "learned" if str(m.get("position_embedding", "")).startswith("learned") else "rope"
    norm = "rmsnorm" if "rms" in str(m.get("norm", "")).lower() else "layernorm"
    moe = None
    if m.get("moe"):
        mm = m["moe"]
        freq, first_dense = moe_layer_freq(mm.get("layer_freq", 1))
        moe = MoeSpec(num_experts=mm["num_experts"], top_k=mm["topk"],
                      ffn_hidden_size=mm["moe_ffn"],
                      shared_ffn_hidden_size=mm.get("shared_expert_ffn"),
                      layer_freq=freq, first_dense_layers=first_dense)
    mla = None
    if m.get("mla"):
        ma = m["mla"]
        mla = MlaSpec(q_lora_rank=ma.get("q_lora_rank"), kv_lora_rank=ma["kv_lora_rank"],
                      qk_nope_head_dim=ma["qk_head_dim"],
                      qk_rope_head_dim=ma["qk_pos_emb_head_dim"], v_head_dim=ma["v_head_dim"])
    vocab = m.get("vocab_padded") or m.get("vocab")
    # Megatron's functional tests run Megatron's dropout defaults unless their arguments say
    # otherwise (megatron_case_args); torchtitan's models have no dropout
    args = megatron_case_args(case)
    titan = "torchtitan" in str(case["config"].get("framework"))
    hidden_dropout, attention_dropout = (
        0.0 if titan else float(args.get(flag, MEGATRON_DROPOUT))
        for flag in ("--hidden-dropout", "--attention-dropout"))
    return make_model(
        name=str(m.get("name", case["id"])), num_layers=m["layers"], hidden_size=m["hidden"],
        num_attention_heads=m["heads"], num_query_groups=m.get("kv_heads"),
        ffn_hidden_size=m["ffn"], vocab_size=int(vocab), activation=act, norm=norm,
        position_embedding=position,
        max_position_embeddings=max(leading_int(case["config"]["seq"]), 4096),
        tie_embeddings=bool(m.get("tied_embeddings")),
        add_bias_linear=bool(m.get("bias_linear")) if m.get("bias_linear") is not None else (
            act == "gelu"),
        qk_layernorm="qk-norm" in str(m.get("norm", "")), mla=mla, moe=moe,
        num_mtp_layers=int(m.get("mtp_layers") or 0), hidden_dropout=hidden_dropout,
        attention_dropout=attention_dropout,
    )


def moe_layer_freq(value: object) -> tuple[int, int]:
    """Megatron's --moe-layer-freq: an int N (every N-th layer) or a pattern such as
    `([0]*3+[1]*13)`; returns (frequency, leading dense layers)."""
    if isinstance(value, int):
        return value, 0
    match = re.fullmatch(r"\(?\[0\]\*(\d+)\+\[1\]\*(\d+)\)?", str(value).replace(" ", ""))
    if not match:
        raise ValueError(f"unsupported moe layer pattern {value!r}")
    return 1, int(match.group(1))


def _recompute(value: object) -> tuple[Recompute, int | None]:
    text = str(value).lower()
    if isinstance(value, dict):
        if value.get("granularity") == "full":
            # uniform: every layer recomputed (in groups of num_layers); block: only the first
            # num_layers of each chunk (Megatron --recompute-method)
            if value.get("method") == "uniform":
                return Recompute.FULL, None
            return Recompute.FULL, value.get("num_layers")
        # Megatron's selective recompute, of the modules the importer reads from the case's
        # --recompute-modules (ParallelConfig.recompute_modules)
        return Recompute.SELECTIVE, None
    if text.startswith("full"):
        return Recompute.FULL, None
    if text.startswith("selective"):
        return Recompute.SELECTIVE, None
    return Recompute.NONE, None


# PyTorch prefers cuDNN's SDPA kernel on sm90/sm100 from pytorch/pytorch PR #162073 (merged
# 2025-09-04, for 2.9), only where the cuDNN it loads is newer than 9.15, which its wheels
# bundle from 2.11 (parallel.AttentionKernel). A release before 2.11, or a nightly built before
# the PR, ran FlashAttention-2.
_SDPA_CUDNN_RELEASE = (2, 11)
_SDPA_CUDNN_PR_MERGED = "2025-09-04"


def _sdpa_kernel(case: dict[str, Any]) -> AttentionKernel:
    """The attention kernel a PyTorch-SDPA (torchtitan) case ran, from the versions its source
    states: FA2 on a release before 2.11 or a nightly dated before PR #162073, else the
    framework default. FlexAttention (a Triton kernel, ~90% of FA2's forward and ~85% of its
    backward rate by PyTorch's FlexAttention blog, 2024-08) is priced as FA2."""
    if "flex" in str(case["config"].get("attention", "")):
        return AttentionKernel.FA2
    release, nightly = _torch_version(case)
    if release is not None and release < _SDPA_CUDNN_RELEASE:
        return AttentionKernel.FA2
    if nightly is not None and nightly < _SDPA_CUDNN_PR_MERGED:
        return AttentionKernel.FA2
    return AttentionKernel.AUTO


# PyTorch's fused CUDA rms_norm (pytorch/pytorch PR #153666, under review on 2025-05-21,
# first released in 2.8): a release before 2.8, or a nightly built before that review, ran
# RMSNorm op by op in eager mode (ParallelConfig.fused_rms_norm).
_FUSED_RMS_NORM_RELEASE = (2, 8)
_FUSED_RMS_NORM_PR_OPEN = "2025-05-21"


def _torch_version(case: dict[str, Any]) -> tuple[tuple[int, int] | None, str | None]:
    """(release, nightly date) of the PyTorch a case states in source.versions, as
    "torch 2.5 ..." or "torch <commit> (YYYY-MM-DD)"; None where not stated."""
    versions = str(case.get("source", {}).get("versions", ""))
    release = re.search(r"torch (\d+)\.(\d+)", versions)
    nightly = re.search(r"torch \w+ \((\d{4}-\d{2}-\d{2})\)", versions)
    return ((int(release.group(1)), int(release.group(2))) if release else None,
            nightly.group(1) if nightly else None)


def _fused_rms_norm(case: dict[str, Any]) -> bool:
    """Whether a torchtitan case's eager RMSNorm ran as one kernel: not on a PyTorch older
    than the fused kernel (_FUSED_RMS_NORM_RELEASE, _FUSED_RMS_NORM_PR_OPEN); a case that
    states no version is taken as recent."""
    release, nightly = _torch_version(case)
    if release is not None:
        return release >= _FUSED_RMS_NORM_RELEASE
    return nightly is None or nightly >= _FUSED_RMS_NORM_PR_OPEN


# torchtitan compiles its loss with the model from pytorch/torchtitan PR #1033 (merged
# 2025-04-01); PyTorch 2.7, the first release after it, came out on 2025-04-23.
_COMPILED_LOSS_SINCE = "2025-04-01"
_COMPILED_LOSS_TORCH_RELEASE = (2, 7)


def _compiled_loss(case: dict[str, Any]) -> bool:
    """Whether a compiled torchtitan case compiled its loss too (ParallelConfig.compiled_loss):
    by the torchtitan commit's date where the case states it, else by the PyTorch it ran (a
    nightly's date, or a release from 2.7); a case that states neither is taken as recent."""
    versions = str(case.get("source", {}).get("versions", ""))
    titan = re.search(r"torchtitan \w+ \((\d{4}-\d{2}-\d{2})\)", versions)
    if titan:
        return titan.group(1) >= _COMPILED_LOSS_SINCE
    release, nightly = _torch_version(case)
    if release is not None:
        return release >= _COMPILED_LOSS_TORCH_RELEASE
    return nightly is None or nightly >= _COMPILED_LOSS_SINCE


def leading_int(value: object) -> int:
    """An integer field that a case may annotate: 8192, or "8192 (toml default; not restated)"."""
    if isinstance(value, int):
        return value
    match = re.match(r"\s*(\d+)\b", str(value))
    if match is None:
        raise ValueError(f"expected an integer, got {value!r}")
    return int(match.group(1))


def _float8_precision(value: object) -> Precision:
    """torchtitan cases state float8 as a flag or as the recipe run, Megatron cases as
    --fp8-recipe: "bf16" is no float8; "fp8_tensorwise", "tensorwise", "delayed" (and the
    flag) are tensor-wise scaled fp8 linears, which the model prices. Row-wise and block-wise
    scaling are other recipes with their own kernels; the planner does not offer them, so such
    a case is not reproduced."""
    if value is None or value is False or str(value).lower() in ("false", "bf16", "none"):
        return Precision.BF16
    for recipe in ("rowwise", "blockwise", "mxfp8"):
        if recipe in str(value).lower():
            raise ValueError(f"fp8 {recipe} scaling (the planner prices tensor-wise fp8 only)")
    return Precision.FP8


def _flag_words(case: dict[str, Any]) -> list[str]:
    """A Megatron case's arguments (megatron_case_args) as the command-line words Megatron
    parsed."""
    words: list[str] = []
    for flag, value in megatron_case_args(case).items():
        if value is False or value is None:
            continue
        words += [flag] if value is True else [flag, str(value)]
    return words


def case_config(case: dict[str, Any], model: ModelSpec) -> ParallelConfig:
    """The ParallelConfig a measured case ran with, as far as its source states it. A Megatron
    case's arguments go through the Megatron importer (importers.megatron.config_from_flags,
    what `estimate --from megatron` reads); the case's own fields then state what its source
    records outside the arguments (degrees, batch, recompute, optimizer, precision recipe,
    attention backend)."""
    cfg = _case_fields_config(case, model)
    if cfg.framework is not Framework.MEGATRON:
        return cfg
    flags, _, _ = parse_flags(_flag_words(case), str(case.get("id")))
    imported, _ = config_from_flags(flags, model.num_layers, cfg.dp, str(case.get("id")))
    stated = {f: getattr(cfg, f) for f in _CASE_FIELDS}
    return dataclasses.replace(imported, **stated)


# What a Megatron case states in its own fields, over what its (filtered) arguments say.
_CASE_FIELDS = ("tp", "pp", "dp", "cp", "ep", "etp", "mbs", "global_batch", "seq_len",
                "recompute", "recompute_num_layers", "zero", "sequence_parallel", "precision",
                "flash_attention", "moe_grouped_gemm", "deterministic")


def _case_fields_config(case: dict[str, Any], model: ModelSpec) -> ParallelConfig:
    """The ParallelConfig from a case's own fields (torchtitan cases: all there is)."""
    c = case["config"]
    framework = Framework.TORCHTITAN if "torchtitan" in str(c.get("framework")) else (
        Framework.MEGATRON)
    optimizer = str(c.get("optimizer", ""))
    if framework is Framework.TORCHTITAN or c.get("fsdp"):
        zero = 3
    else:
        zero = 1 if "distributed_optimizer=True" in optimizer else 0
    recompute, recompute_layers = _recompute(c.get("recompute"))
    if recompute is Recompute.FULL and recompute_layers == model.num_layers // c["pp"]:
        recompute_layers = None
    args = c.get("megatron_args") or {}
    flash = c.get("transformer_impl") != "local" and c.get("attention_backend") != "unfused"
    precision = _float8_precision(c.get("float8") if "--fp8-format" not in args
                                  else args.get("--fp8-recipe", "delayed"))
    eager = framework is Framework.TORCHTITAN and c.get("compile") is False
    return ParallelConfig(
        tp=c["tp"], pp=c["pp"], dp=c["dp"], cp=c["cp"], ep=c["ep"], etp=c.get("etp"),
        vpp=int(c.get("vpp") or 1), mbs=c["mbs"],
        global_batch=c.get("gbs") or c["mbs"] * c["dp"], seq_len=leading_int(c["seq"]),
        recompute=recompute, recompute_num_layers=recompute_layers,
        # torchtitan's parallelism.enable_sequence_parallel defaults to true
        zero=zero, sequence_parallel=bool(c.get("sequence_parallel",
                                                framework is Framework.TORCHTITAN))
        and c["tp"] > 1,
        precision=precision, framework=framework, flash_attention=flash,
        attention_kernel=(_sdpa_kernel(case) if framework is Framework.TORCHTITAN
                          else AttentionKernel.AUTO),
        tp_comm_overlap=bool(c.get("async_tp")),
        moe_grouped_gemm=bool((case["model"].get("moe") or {}).get("grouped_gemm", True)),
        deterministic=framework is Framework.MEGATRON and deterministic_mode(case),
        eager=eager, fused_rms_norm=not eager or _fused_rms_norm(case),
        compiled_loss=framework is not Framework.TORCHTITAN or eager or _compiled_loss(case),
        # the torchtitan cases (2024-12 to PR #1884's dev log) predate 0.3.0's common
        # attention: their Llama repeated the key/value heads (models/llama3 repeat_kv)
        legacy_attention=framework is Framework.TORCHTITAN,
    )


def reserved_comparison(case_id: str, estimate: MemoryEstimate, measured_bytes: float, *,
                        note_suffix: str = "", group: str = "") -> Comparison:
    """A measured max_memory_reserved over all GPUs against the estimate's fullest stage."""
    return Comparison(id=case_id, kind="reserved", note="max over stages" + note_suffix,
                      measured=measured_bytes,
                      predicted=float(max(s.reserved_bytes for s in estimate.stages)),
                      group=group)


def memory_report(data: dict[str, Any], capacity_bytes: int = 80 * GiB) -> Report:
    """Compare the estimator with every measured peak it can reproduce (the others are listed
    in `skipped` with the reason)."""
    cases: list[Comparison] = []
    skipped: list[tuple[str, str]] = []
    for case in data["cases"]:
        measured = case.get("measured") or {}
        kind_text = str(measured.get("peak_mem_kind", ""))
        if "peak_mem_GiB" not in measured:
            skipped.append((case["id"], "no peak memory reported"))
            continue
        reproduced = reproduce_case(case)
        if isinstance(reproduced, str):
            skipped.append((case["id"], reproduced))
            continue
        model, cfg = reproduced
        estimate: MemoryEstimate = estimate_memory(model, cfg, capacity_bytes)
        flags = unmodelled_flags(case)
        unmodelled = "; not modelled: " + " ".join(flags) if flags else ""
        measured_bytes = float(measured.get("peak_mem_bytes") or measured["peak_mem_GiB"] * GiB)
        if "allocated" in kind_text:
            last = estimate.stages[-1]
            cases.append(Comparison(id=case["id"], kind="allocated",
                                    note="last stage" + unmodelled,
                                    measured=measured_bytes, predicted=last.allocated_bytes))
        elif "reserved" in kind_text:
            cases.append(reserved_comparison(case["id"], estimate, measured_bytes,
                                             note_suffix=unmodelled))
        else:
            skipped.append((case["id"], f"unknown memory kind: {kind_text[:40]}"))
    return Report(cases=tuple(cases), skipped=tuple(skipped), unit="bytes")


# ---- step time -----------------------------------------------------------------------------

# The shipped profiles the timed cases ran on, by what the case's `cluster.gpu` says: the
# first entry whose GPU name it contains, with one of the qualifiers where there are some.
# torchtitan's H100s are a custom 96 GB HBM2e part run at 500 W (profiles/
# grand-teton-h100-500w.yaml), not DGX H100s; a case that only reports the 95 GiB capacity
# is on that part too (no standard H100 has it).
VALIDATION_PROFILES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("H200", (), "hgx-h200"),
    ("H100", ("HBM2E", "500 W", "95 GIB"), "grand-teton-h100-500w"),
    ("H100", (), "dgx-h100"),
    ("A100", (), "selene"),
)


def _profile_for(gpu_text: str, clusters: dict[str, Cluster]) -> Cluster | None:
    """The shipped profile of the GPU a case ran on (VALIDATION_PROFILES); None for others."""
    text = gpu_text.upper()
    if "GB200" in text:
        return None
    for name_part, qualifiers, profile in VALIDATION_PROFILES:
        if name_part in text and (not qualifiers or any(q in text for q in qualifiers)):
            return clusters.get(profile)
    return None


def _calibration_time_case(case: dict[str, Any], cluster: Cluster) -> Comparison | str:
    """A calibration.yaml case (Megatron-LM PTD-P, Korthikanti et al.) as a step-time
    Comparison, or why it cannot be one."""
    m = case["model"]
    model = make_model(name=m["name"], num_layers=m["layers"], hidden_size=m["hidden"],
                       num_attention_heads=m["heads"], vocab_size=m["vocab"],
                       max_position_embeddings=m["seq"])
    c = case["config"]
    assumed = []
    mbs = c.get("micro_batch")
    if mbs is None:
        mbs = 1
        assumed.append("mbs=1")
    vpp = c.get("vpp")
    if not isinstance(vpp, int):
        # Interleaving reported without its degree: 2 chunks per rank where the layers split.
        vpp = 2 if c["pp"] > 1 and vpp and model.num_layers % (c["pp"] * 2) == 0 else 1
        if vpp > 1:
            assumed.append("vpp=2 (interleaved, degree not reported)")
        elif c["pp"] > 1 and c.get("vpp"):
            assumed.append("vpp=1 (interleaved, degree not reported; layers do not split in 2)")
    recompute = Recompute.FULL if str(c["recompute"]).startswith("full") else (
        Recompute.SELECTIVE)
    zero = c.get("zero") or 0
    cfg = ParallelConfig(
        tp=c["tp"], pp=c["pp"], dp=c["dp"], vpp=vpp, mbs=mbs, global_batch=c["global_batch"],
        seq_len=m["seq"], recompute=recompute,
        sequence_parallel=bool(c.get("sequence_parallel")), zero=zero,
        flash_attention=False,  # Megatron-LM of 2021-22: fused scale-mask-softmax
        overlap_grad_reduce=False, overlap_param_gather=False,
        # PTD-P Table 2's ZeRO-3 rows ran DeepSpeed (its host time, not Megatron's)
        framework=Framework.DEEPSPEED if zero >= 3 else Framework.MEGATRON)
    problems = cfg.problems(model)
    if problems:
        return "configuration rejected: " + problems[0]
    if cfg.world_size > cluster.num_gpus:
        return f"needs {cfg.world_size} GPUs, profile has {cluster.num_gpus}"
    measured = case["measured"]
    if "iteration_time_s" in measured:
        measured_s = float(measured["iteration_time_s"])
    elif "tflops_per_gpu" in measured:
        # PTD-P reports TFLOP/s counting the recompute forward (96BsLh^2(...), = hardware
        # FLOPs with full recompute); their step time is those FLOPs / (TFLOP/s x GPUs).
        full = dataclasses.replace(cfg, recompute=Recompute.FULL)
        measured_s = hardware_flops_per_step(model, full) / (
            measured["tflops_per_gpu"] * 1e12 * cfg.world_size)
    else:
        return "no step time or throughput reported"
    predicted = estimate_step(model, cfg, cluster).iteration_s
    framework = "DeepSpeed ZeRO-3" if cfg.framework is Framework.DEEPSPEED else "Megatron-LM"
    return Comparison(id=case["id"], kind="step time", measured=measured_s,
                      predicted=predicted, note="assumed " + ", ".join(assumed) if assumed else "",
                      group=_group(framework + " (papers)", model, cluster))


# Below this hidden size a step is dominated by what the model does not time (kernel launches,
# logging, per-step framework work): Megatron's CI runs its functional tests at h = 512-1024.
TOY_HIDDEN_SIZE = 2048


REAL_SIZE = "real size"


def _group(framework: str, model: ModelSpec, cluster: Cluster) -> str:
    size = "toy" if model.hidden_size < TOY_HIDDEN_SIZE else REAL_SIZE
    return f"{framework}, {size}, {cluster.gpu_types[0].id}"


def time_report(calibration: dict[str, Any], measured: dict[str, Any],
                clusters: dict[str, Cluster]) -> Report:
    """Predicted vs measured step time for every case with a measured time or throughput
    whose configuration can be reproduced (the rest in `skipped`, with the reason)."""
    cases: list[Comparison] = []
    skipped: list[tuple[str, str]] = []
    for case in calibration["cases"]:
        have = case.get("measured") or {}
        if not ({"iteration_time_s", "tflops_per_gpu"} & set(have)):
            continue
        cluster = _profile_for(str(case.get("cluster", {}).get("gpu", "")), clusters)
        if cluster is None:
            skipped.append((case["id"], "no shipped profile for its GPU"))
            continue
        result = _calibration_time_case(case, cluster)
        if isinstance(result, str):
            skipped.append((case["id"], result))
        else:
            cases.append(result)
    for case in measured["cases"]:
        have = case.get("measured") or {}
        if "iter_time_s" not in have and not _torchtitan_tps(have):
            continue
        cluster = _profile_for(str(case.get("cluster", {}).get("gpu", "")), clusters)
        reproduced = (reproduce_case(case) if cluster is not None
                      else "no shipped profile for its GPU")
        if isinstance(reproduced, str):
            skipped.append((case["id"], reproduced))
            continue
        assert cluster is not None
        model, cfg = reproduced
        predicted = estimate_step(model, cfg, cluster).iteration_s
        framework = str(case["config"].get("framework") or "megatron")
        notes = []
        if "iter_time_s" in have:
            measured_s = float(have["iter_time_s"])
        else:  # torchtitan's tps: tokens of its data-parallel shard / (time x tp x cp x pp)
            measured_s = cfg.global_batch * cfg.seq_len / (
                float(have["tokens_per_s_per_gpu"]) * cfg.world_size)
            notes.append("from tokens/s per GPU")
        if not isinstance(case["config"].get("seq"), int):
            notes.append(f"seq {case['config'].get('seq')}")
        if deterministic := deterministic_note(case):
            notes.append(deterministic)
        if flags := unmodelled_flags(case):
            notes.append("not modelled: " + " ".join(flags))
        cases.append(Comparison(id=case["id"], kind="step time", measured=measured_s,
                                predicted=predicted, note="; ".join(notes),
                                group=_group(framework, model, cluster)))
    return Report(cases=tuple(cases), skipped=tuple(skipped), unit="s")



def unmodelled_flags(case: dict[str, Any]) -> tuple[str, ...]:
    """The case's Megatron flags the planner does not model (what `estimate --from megatron`
    would warn about), for the comparison's note: kernel fusions switched off, fp8 parameter
    gathering, deferred weight gradients, ..."""
    _, unknown, _ = parse_flags(_flag_words(case), str(case.get("id")))
    return tuple(w for w in unknown if w.startswith("--"))


def deterministic_mode(case: dict[str, Any]) -> bool:
    """Whether a Megatron test ran with --deterministic-mode, as its model_config.yaml sets it
    (megatron_case_args: measured.yaml leaves the flag out). Its environment does not tell:
    gpt3_weekly_mcore_tp2_pp2_current_scaling_native_fp8_tp_pp_sp_tp_overlap sets NCCL_ALGO and
    NVTE_ALLOW_NONDETERMINISTIC_ALGO=0 and runs --tp-comm-overlap without the mode."""
    return "--deterministic-mode" in megatron_case_args(case)


def deterministic_note(case: dict[str, Any]) -> str:
    """What of a Megatron test's deterministic execution the step model does not price.
    --deterministic-mode (deterministic_mode) is priced as measured on Megatron-Core's own
    layers (ParallelConfig.deterministic); Transformer Engine's deterministic kernels
    (NVTE_ALLOW_NONDETERMINISTIC_ALGO=0: deterministic attention backward, its own filled
    allocations) were not measured."""
    env = case["config"].get("deterministic_env") or {}
    if str(env.get("NVTE_ALLOW_NONDETERMINISTIC_ALGO")) != "0":
        return ""
    if deterministic_mode(case):
        algo = env.get("NCCL_ALGO", "not set")
        return (f"deterministic mode (NCCL_ALGO={algo}): priced as measured on "
                "Megatron-Core's own layers; Transformer Engine's deterministic kernels not")
    return "deterministic attention backward (NVTE_ALLOW_NONDETERMINISTIC_ALGO=0): not priced"


def _torchtitan_tps(measured: dict[str, Any]) -> bool:
    """A throughput in torchtitan's tokens per second per device, convertible to a step."""
    return ("tokens_per_s_per_gpu" in measured
            and "torchtitan" in str(measured.get("tokens_per_s_kind", "")))


def reproduce_case(case: dict[str, Any]) -> tuple[ModelSpec, ParallelConfig] | str:
    """The model and configuration a measured.yaml case ran, or why it cannot be reproduced."""
    if case.get("status") in _SKIP_STATUSES:
        return f"status {case['status']}"
    if case["config"].get("dp") is None:
        return "data-parallel size not stated"
    if str(case["config"].get("recompute")) == "not stated":
        return "recompute setting not stated by the source"
    if "offloading" in case["id"]:
        return "activations offloaded to host memory (the test's setting; not modelled)"
    if "muon" in str(case["config"].get("optimizer", "")):
        return "Muon optimizer (the estimator models Adam)"
    try:
        model = _model(case)
        cfg = case_config(case, model)
    except (KeyError, ValueError, TypeError) as exc:
        return f"configuration not reproducible: {exc}"
    problems = cfg.problems(model)
    if problems:
        return "configuration rejected: " + problems[0]
    return model, cfg
