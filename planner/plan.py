"""The plan file: a configuration with its inputs, layout and predictions, as YAML.

`schema_version` comes first. The model is embedded (so `planner check` works where the model
file is not), the cluster is named by reference with the hash of its content. The same inputs
give a byte-identical file: keys are written in a fixed order and floats are rounded.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from planner import __version__
from planner.errors import InputError
from planner.model import ModelSpec
from planner.model_io import model_from_dict, model_to_dict
from planner.parallel import (
    RANK_ORDERS,
    AttentionKernel,
    Framework,
    ParallelConfig,
    Precision,
    Recompute,
    VocabStrategy,
    stage_chunks,
)
from planner.schema import Reader, read_document, write_new_file

SCHEMA_VERSION = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """A configuration to run, with where it came from and what was predicted."""

    model: ModelSpec
    model_ref: str
    cluster_ref: str
    cluster_sha256: str
    config: ParallelConfig
    headroom_frac: float = 0.0
    predictions: tuple[tuple[str, Any], ...] = ()  # ("memory", {...}), ("time", {...})
    planner_version: str = __version__

    def to_dict(self) -> dict[str, Any]:
        model = model_to_dict(self.model)
        layout = [{"stage": stage, "chunks": [[c[0], c[-1]] if c else [] for c in chunks],
                   "num_layers": sum(len(c) for c in chunks)}
                  for stage, chunks in enumerate(stage_chunks(self.model, self.config))]
        return {
            "schema_version": SCHEMA_VERSION,
            "planner_version": self.planner_version,
            "inputs": {
                "model": {"ref": self.model_ref, "name": self.model.name,
                          "sha256": content_hash(model)},
                "cluster": {"ref": self.cluster_ref, "sha256": self.cluster_sha256},
            },
            "model": model,
            "config": self.config.to_dict(),
            # derived from model + config: each stage's virtual chunks as [first, last] layer
            "layout": {"stages": layout},
            "headroom_frac": self.headroom_frac,
            **dict(self.predictions),
        }


def content_hash(data: object) -> str:
    """sha256 of the canonical JSON of `data` (sorted keys, no whitespace)."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def dump_plan(plan: Plan) -> str:
    """YAML text of a plan, byte-stable for the same plan."""
    return yaml.safe_dump(_round_floats(plan.to_dict()), sort_keys=False, width=100,
                          default_flow_style=False)


def _round_floats(value: Any) -> Any:
    if isinstance(value, float):
        return float(f"{value:.6g}")
    if isinstance(value, dict):
        return {k: _round_floats(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_round_floats(v) for v in value]
    return value


def write_plan(plan: Plan, path: Path, *, force: bool) -> None:
    """Write `plan` to `path`; an existing file is replaced only with `force`."""
    write_new_file(path, dump_plan(plan), force=force)


# What a plan file may leave out means what ParallelConfig means by it.
_DEFAULT = ParallelConfig()

_CONFIG_KEYS = ("tp", "pp", "dp", "cp", "ep", "etp", "vpp", "mbs", "global_batch", "seq_len",
                "num_microbatches", "recompute", "recompute_num_layers", "recompute_modules",
                "zero",
                "sequence_parallel", "precision", "vocab_strategy", "layers_per_stage",
                "layers_per_chunk", "framework", "flash_attention", "attention_kernel",
                "cross_entropy_fusion",
                "moe_token_imbalance", "moe_grouped_gemm", "embedding_wgrad_deferral",
                "dist_opt_instances",
                "overlap_grad_reduce", "overlap_param_gather",
                "tp_comm_overlap", "fp8_param_gather", "grad_reduce_in_bf16", "moe_a2a_overlap",
                "deterministic", "gradient_accumulation_fusion", "eager", "fused_rms_norm",
                "compiled_loss", "legacy_attention", "document_tokens", "bf16_layers",
                "microbatch_group_size", "rank_order")


def config_from_reader(r: Reader) -> ParallelConfig | None:
    """A ParallelConfig from the `config` mapping of a plan (problems collected in `r`)."""
    values = {key: r.int(key, default=1) for key in ("tp", "pp", "dp", "cp", "ep", "vpp", "mbs")}
    etp = r.int("etp", required=False)
    global_batch = r.int("global_batch")
    seq_len = r.int("seq_len")
    r.int("num_microbatches", required=False)  # derived; written for readers
    recompute = r.choice("recompute", [m.value for m in Recompute],
                         default=_DEFAULT.recompute.value)
    recompute_layers = r.int("recompute_num_layers", required=False)
    modules = _str_list(r, "recompute_modules") or list(_DEFAULT.recompute_modules)
    zero = r.int("zero", minimum=0, default=_DEFAULT.zero)
    sp = r.boolean("sequence_parallel", default=_DEFAULT.sequence_parallel)
    precision = r.choice("precision", [p.value for p in Precision],
                         default=_DEFAULT.precision.value)
    vocab = r.choice("vocab_strategy", [v.value for v in VocabStrategy],
                     default=_DEFAULT.vocab_strategy.value)
    framework = r.choice("framework", [f.value for f in Framework],
                         default=_DEFAULT.framework.value)
    flash = r.boolean("flash_attention", default=_DEFAULT.flash_attention)
    kernel = r.choice("attention_kernel", [k.value for k in AttentionKernel],
                      default=_DEFAULT.attention_kernel.value) or _DEFAULT.attention_kernel.value
    ce_fusion = r.boolean("cross_entropy_fusion", default=_DEFAULT.cross_entropy_fusion)
    imbalance = r.number("moe_token_imbalance", default=_DEFAULT.moe_token_imbalance)
    grouped = r.boolean("moe_grouped_gemm", default=_DEFAULT.moe_grouped_gemm)
    deferral = r.int("embedding_wgrad_deferral", minimum=0, required=False)
    instances = r.int("dist_opt_instances", default=_DEFAULT.dist_opt_instances)
    overlap_grad = r.boolean("overlap_grad_reduce", default=_DEFAULT.overlap_grad_reduce)
    # left out, it follows overlap_grad_reduce (Megatron overlaps the gather only with it)
    overlap_gather = r.boolean("overlap_param_gather", default=overlap_grad)
    tp_overlap = r.boolean("tp_comm_overlap", default=_DEFAULT.tp_comm_overlap)
    fp8_gather = r.boolean("fp8_param_gather", default=_DEFAULT.fp8_param_gather)
    bf16_grads = r.boolean("grad_reduce_in_bf16", default=_DEFAULT.grad_reduce_in_bf16)
    a2a_overlap = r.boolean("moe_a2a_overlap", default=_DEFAULT.moe_a2a_overlap)
    deterministic = r.boolean("deterministic", default=_DEFAULT.deterministic)
    eager = r.boolean("eager", default=_DEFAULT.eager)
    fused_norm = r.boolean("fused_rms_norm", default=_DEFAULT.fused_rms_norm)
    compiled_loss = r.boolean("compiled_loss", default=_DEFAULT.compiled_loss)
    legacy_attention = r.boolean("legacy_attention", default=_DEFAULT.legacy_attention)
    document_tokens = r.int("document_tokens", minimum=1, required=False)
    wgrad_fusion = r.boolean("gradient_accumulation_fusion",
                             default=_DEFAULT.gradient_accumulation_fusion)
    bf16_layers = _int_list(r, "bf16_layers") or list(_DEFAULT.bf16_layers)
    if len(bf16_layers) != 2:
        r.fail("bf16_layers", f"expected [first, last] layer counts, got {bf16_layers}")
    group = r.int("microbatch_group_size", required=False)
    order = r.choice("rank_order", RANK_ORDERS, default=_DEFAULT.rank_order) or _DEFAULT.rank_order
    layout = _int_list(r, "layers_per_stage")
    chunk_layout = _int_list(r, "layers_per_chunk")
    r.unknown_keys(_CONFIG_KEYS)
    if (global_batch is None or seq_len is None or recompute is None or precision is None
            or vocab is None or framework is None):
        return None
    return ParallelConfig(
        tp=values["tp"] or 1, pp=values["pp"] or 1, dp=values["dp"] or 1,
        cp=values["cp"] or 1, ep=values["ep"] or 1, etp=etp, vpp=values["vpp"] or 1,
        mbs=values["mbs"] or 1, global_batch=global_batch, seq_len=seq_len,
        recompute=Recompute(recompute), recompute_num_layers=recompute_layers,
        recompute_modules=tuple(modules), zero=zero or 0,
        sequence_parallel=sp, precision=Precision(precision), vocab_strategy=VocabStrategy(vocab),
        layers_per_stage=tuple(layout), layers_per_chunk=tuple(chunk_layout),
        framework=Framework(framework), flash_attention=flash,
        attention_kernel=AttentionKernel(kernel), cross_entropy_fusion=ce_fusion,
        moe_token_imbalance=imbalance or _DEFAULT.moe_token_imbalance,
        moe_grouped_gemm=grouped, embedding_wgrad_deferral=deferral,
        dist_opt_instances=instances or _DEFAULT.dist_opt_instances,
        overlap_grad_reduce=overlap_grad, overlap_param_gather=overlap_gather,
        tp_comm_overlap=tp_overlap,
        fp8_param_gather=fp8_gather, grad_reduce_in_bf16=bf16_grads,
        moe_a2a_overlap=a2a_overlap, deterministic=deterministic, eager=eager,
        fused_rms_norm=fused_norm, compiled_loss=compiled_loss, legacy_attention=legacy_attention,
        document_tokens=document_tokens, gradient_accumulation_fusion=wgrad_fusion,
        bf16_layers=(bf16_layers[0], bf16_layers[1]) if len(bf16_layers) == 2 else (0, 0),
        microbatch_group_size=group, rank_order=order,
    )


def _int_list(r: Reader, key: str) -> list[int]:
    values = r.raw(key) or []
    if not isinstance(values, list) or not all(
            isinstance(n, int) and not isinstance(n, bool) for n in values):
        r.fail(key, f"expected a list of integers, got {values!r}")
        return []
    return values


def _str_list(r: Reader, key: str) -> list[str]:
    values = r.raw(key) or []
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        r.fail(key, f"expected a list of names, got {values!r}")
        return []
    return values


def load_plan(path: Path) -> Plan:
    """Read a plan file written by `planner estimate -o` or `planner search -o`."""
    data = read_document(path)
    r = Reader(str(path), data)
    version = r.int("schema_version")
    if version is not None and version > SCHEMA_VERSION:
        r.fail("schema_version", f"{version} is newer than this planner understands "
               f"({SCHEMA_VERSION}); upgrade planner")
    r.check()
    inputs = r.child("inputs", required=True)
    model_ref, cluster_ref, cluster_sha = "", "", ""
    if inputs is not None:
        model_in = inputs.child("model", required=True)
        cluster_in = inputs.child("cluster", required=True)
        if model_in is not None:
            model_ref = model_in.string("ref") or ""
            model_in.string("name", required=False)
            model_in.string("sha256", required=False)
        if cluster_in is not None:
            cluster_ref = cluster_in.string("ref") or ""
            cluster_sha = cluster_in.string("sha256", required=False) or ""
    r.string("planner_version", required=False)
    headroom = r.fraction("headroom_frac", default=0.0)
    config_r = r.child("config", required=True)
    config = config_from_reader(config_r) if config_r is not None else None
    for key in ("memory", "time", "layout", "search", "explain"):
        r.raw(key)
    model_data = r.raw("model")
    r.unknown_keys(("schema_version", "planner_version", "inputs", "model", "config",
                    "headroom_frac"))
    r.check("a plan file written by `planner estimate -o` or `planner search -o`")
    if model_data is None:
        raise InputError(f"{path}: model: missing; expected the embedded model description")
    model = model_from_dict(model_data, f"{path}: model")
    assert config is not None
    return Plan(model=model, model_ref=model_ref, cluster_ref=cluster_ref,
                cluster_sha256=cluster_sha, config=config, headroom_frac=headroom)
