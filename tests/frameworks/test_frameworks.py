"""Emitted launches through the frameworks' own parsers (megatron-core 0.19.2, torchtitan 0.3.0,
deepspeed 0.19.8, torch 2.13's torchrun), on CPU.

Each launch is emitted into a directory and its launch_torchrun.sh run with a torchrun that
records its arguments; the recorded words go to torchrun's parser and the framework's words to
the framework's parser, so the scripts are tested as well as the flags. Plans the planner
rejects are shown to be rejected by the framework too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from planner.catalog import BUILTIN_MODELS
from planner.emit import emit, write_emitted
from planner.emit.deepspeed import ds_config
from planner.emit.megatron import megatron_args, megatron_env
from planner.emit.torchtitan import PRESETS, torchtitan_args, torchtitan_notes
from planner.gpus import GPU_CATALOG
from planner.hardware_io import load_cluster
from planner.parallel import (
    AttentionKernel,
    Framework,
    ParallelConfig,
    Precision,
    Recompute,
    VocabStrategy,
    stage_chunks,
)
from planner.plan import Plan
from tests.emit.launching import plan_of, run_launch
from tests.frameworks.conftest import Check

H100 = GPU_CATALOG["h100-sxm5-80gb"]

# (model, configuration) pairs covering what the issue lists: dense and MoE, TP+SP, CP, EP with
# expert-TP, uneven stages (three spellings), VPP, every ZeRO stage, recompute variants, fp8,
# the tp-pp-dp rank order.
MEGATRON_CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "dense-tp-sp-vpp-zero1": ("llama3-70b", dict(
        tp=8, pp=4, dp=4, vpp=5, global_batch=512, seq_len=8192, sequence_parallel=True,
        zero=1, recompute=Recompute.SELECTIVE)),
    "cp-zero3-fsdp": ("llama3-8b", dict(
        tp=2, cp=2, dp=4, global_batch=64, seq_len=8192, sequence_parallel=True, zero=3)),
    "zero2-fsdp-flash": ("llama2-7b", dict(dp=16, global_batch=64, seq_len=4096, zero=2,
                                          attention_kernel=AttentionKernel.FA2)),
    "zero0-full-recompute": ("gpt3-175b", dict(
        tp=8, pp=8, dp=2, global_batch=64, seq_len=2048, sequence_parallel=True,
        recompute=Recompute.FULL)),
    "moe-ep-etp": ("mixtral-8x7b", dict(
        tp=2, pp=2, dp=16, ep=8, etp=2, global_batch=256, seq_len=4096,
        sequence_parallel=True, zero=1)),
    "moe-mla-mtp-layout-vpp": ("deepseek-v3", dict(
        tp=2, pp=8, dp=16, ep=8, etp=1, vpp=2, global_batch=256, seq_len=4096,
        sequence_parallel=True, zero=1, vocab_strategy=VocabStrategy.REDISTRIBUTE,
        recompute=Recompute.SELECTIVE, recompute_modules=("moe_act", "layernorm",
                                                          "mla_up_proj"))),
    "redistribute-account-flags": ("llama2-13b", dict(
        tp=4, pp=6, dp=2, global_batch=64, seq_len=4096, sequence_parallel=True, zero=1,
        vocab_strategy=VocabStrategy.REDISTRIBUTE)),
    "uneven-first-last-block-recompute": ("llama3-405b", dict(
        tp=8, pp=16, dp=2, global_batch=64, seq_len=8192, sequence_parallel=True, zero=1,
        layers_per_stage=(7,) + (8,) * 14 + (7,), recompute=Recompute.FULL,
        recompute_num_layers=2)),
    "fp8-tp-pp-dp-order-group": ("nemotron4-340b", dict(
        tp=8, pp=12, dp=2, vpp=2, global_batch=96, seq_len=4096, sequence_parallel=True,
        zero=1, precision=Precision.FP8, rank_order="tp-cp-pp-dp",
        microbatch_group_size=12, fp8_param_gather=True, grad_reduce_in_bf16=True,
        bf16_layers=(1, 2))),
    "uneven-interleaved-chunks": ("llama3-70b", dict(
        tp=8, pp=4, dp=4, vpp=5, global_batch=512, seq_len=8192, sequence_parallel=True,
        zero=1, layers_per_chunk=(4, 4, 4, 2, 4, 3, 4, 4, 4, 4, 4, 5, 4, 5, 4, 5, 3, 5, 5,
                                  3))),
    "qwen-moe-ep-only-cudnn": ("qwen3-30b-a3b", dict(
        pp=4, dp=8, ep=8, global_batch=64, seq_len=4096, zero=1,
        attention_kernel=AttentionKernel.CUDNN)),
    "deferred-embedding-wgrad": ("llama3-8b", dict(
        tp=2, pp=4, dp=4, global_batch=64, seq_len=8192, sequence_parallel=True, zero=1,
        embedding_wgrad_deferral=4, dist_opt_instances=2)),
    "moe-a2a-overlap-vpp": ("qwen3-30b-a3b", dict(
        pp=2, vpp=2, dp=8, ep=8, global_batch=64, seq_len=4096, zero=1,
        moe_a2a_overlap=True)),
    "moe-sequential-experts-deterministic": ("mixtral-8x7b", dict(
        tp=2, pp=1, dp=16, ep=4, global_batch=64, seq_len=4096, sequence_parallel=True,
        zero=1, moe_grouped_gemm=False, deterministic=True,
        gradient_accumulation_fusion=False)),
}


def _launch(plan: Plan, target: str, tmp_path: Path, **env: str) -> tuple[Path, list[str]]:
    """Emit into tmp_path/target, run its torchrun script; (directory, torchrun's words)."""
    cluster = load_cluster(plan.cluster_ref)
    hosts = tuple(f"node{i:03d}" for i in range(cluster.num_nodes))
    out = tmp_path / target
    write_emitted(emit(plan, cluster, target, hosts), out, force=False)
    got = run_launch(out, tmp_path, NODE_RANK="0", MASTER_ADDR="node000", **env)
    argv = got["argv"]
    assert isinstance(argv, list)
    return out, argv


def test_megatron_accepts_every_emitted_launch(framework_check: Check, tmp_path: Path) -> None:
    cases, plans = [], []
    for name, (model, kw) in MEGATRON_CASES.items():
        plan = plan_of(BUILTIN_MODELS[model], **kw)
        _, argv = _launch(plan, "megatron", tmp_path / name, MEGATRON_LM="/megatron",
                          TRAIN_ARGS=f"--mock-data --tokenizer-type NullTokenizer "
                                     f"--vocab-size {plan.model.vocab_size}")
        script = argv.index("/megatron/pretrain_gpt.py")
        env = {n: v for n, v, _ in megatron_env(plan.config, H100) if v is not None}
        cases.append({"argv": argv[script + 1:], "world_size": plan.config.world_size,
                      "env": env, "gpu_arch": [9, 0], "name": name, "torchrun": argv})
        plans.append(plan)
    results = framework_check("megatron", cases)
    for case, plan, result in zip(cases, plans, results, strict=True):
        assert result["ok"], f"{case['name']}: {result['error']}"
        cfg, args = plan.config, result["args"]
        assert args["data_parallel_size"] == cfg.dp, case["name"]
        assert args["tensor_model_parallel_size"] == cfg.tp
        assert args["pipeline_model_parallel_size"] == cfg.pp
        assert args["context_parallel_size"] == cfg.cp
        assert args["expert_model_parallel_size"] == cfg.ep
        assert (args["virtual_pipeline_model_parallel_size"] or 1) == cfg.vpp, case["name"]
        assert args["global_batch_size"] == cfg.global_batch
        assert args["micro_batch_size"] == cfg.mbs
        assert args["sequence_parallel"] == cfg.sequence_parallel
        if plan.model.moe is not None:
            assert args["moe_grouped_gemm"] == cfg.moe_grouped_gemm, case["name"]
        assert args["defer_embedding_wgrad_compute"] == (cfg.embedding_wgrad_deferral is not None)
        if cfg.embedding_wgrad_deferral is not None:
            assert args["wgrad_deferral_limit"] == cfg.embedding_wgrad_deferral
        assert args["num_distributed_optimizer_instances"] == cfg.dist_opt_instances
        assert args["fp8_param_gather"] == cfg.fp8_param_gather, case["name"]
        assert args["hidden_dropout"] == plan.model.hidden_dropout, case["name"]
        assert args["overlap_moe_expert_parallel_comm"] == cfg.moe_a2a_overlap
        assert args["deterministic_mode"] == cfg.deterministic, case["name"]
        if cfg.recompute is Recompute.SELECTIVE:  # Megatron's default is core_attn alone
            assert list(args["recompute_modules"] or ["core_attn"]) == list(
                cfg.recompute_modules), case["name"]
        assert args["gradient_accumulation_fusion"] == cfg.gradient_accumulation_fusion
        assert args["first_last_layers_bf16"] == (cfg.bf16_layers != (0, 0))
        if cfg.bf16_layers != (0, 0):
            assert (args["num_layers_at_start_in_bf16"],
                    args["num_layers_at_end_in_bf16"]) == cfg.bf16_layers
        assert args["attention_dropout"] == plan.model.attention_dropout
        assert args["accumulate_allreduce_grads_in_fp32"] == (not cfg.grad_reduce_in_bf16)
        # Megatron FSDP turns the distributed optimizer on itself (validate_args)
        assert args["use_distributed_optimizer"] == (cfg.zero >= 1)
        assert args["use_megatron_fsdp"] == (cfg.zero >= 2)
        # the layer split Megatron builds is the plan's, virtual stage by virtual stage
        chunks = stage_chunks(plan.model, cfg)
        assert result["layers"] == [len(chunks[k % cfg.pp][k // cfg.pp])
                                    for k in range(cfg.pp * cfg.vpp)], case["name"]
    launches = framework_check("torchrun", [{"argv": c["torchrun"]} for c in cases])
    for case, plan, launch in zip(cases, plans, launches, strict=True):
        assert launch["ok"], launch["error"]
        nodes = plan.config.world_size // launch["launch"]["nproc_per_node"]
        assert launch["launch"]["min_nodes"] == launch["launch"]["max_nodes"] == nodes
        assert launch["launch"]["rdzv_backend"] == "static"
        assert launch["launch"]["node_rank"] == 0
        assert launch["launch"]["cmd_args"][1] == "/megatron/pretrain_gpt.py", case["name"]


# Configurations the planner refuses, emitted anyway: Megatron must refuse them too.
BROKEN = {
    "heads-not-divisible-by-tp": ("llama3-70b", dict(tp=6, dp=1, global_batch=8,
                                                     seq_len=4096)),
    "layers-not-divisible-by-pp": ("llama3-70b", dict(tp=8, pp=3, dp=1, global_batch=8,
                                                      seq_len=4096)),
    "experts-not-divisible-by-ep": ("mixtral-8x7b", dict(tp=1, dp=6, ep=3, global_batch=12,
                                                         seq_len=4096)),
    "batch-not-divisible-by-dp": ("llama2-7b", dict(dp=16, global_batch=1000, seq_len=4096)),
    "vpp-layers-not-divisible": ("llama3-70b", dict(tp=8, pp=4, dp=1, vpp=3,
                                                    global_batch=8, seq_len=4096)),
    "tp-overlap-without-sp": ("llama3-8b", dict(tp=8, dp=1, global_batch=8, seq_len=4096,
                                                tp_comm_overlap=True)),
    "moe-a2a-overlap-with-full-recompute": ("qwen3-30b-a3b", dict(
        pp=2, vpp=2, dp=8, ep=8, global_batch=64, seq_len=4096, zero=1,
        moe_a2a_overlap=True, recompute=Recompute.FULL)),
    "fp8-param-gather-without-distributed-optimizer": ("llama3-8b", dict(
        dp=8, global_batch=8, seq_len=4096, precision=Precision.FP8, fp8_param_gather=True)),
    "deterministic-with-fused-cross-entropy": ("llama3-8b", dict(
        dp=8, global_batch=8, seq_len=4096, deterministic=True, cross_entropy_fusion=True)),
    "deterministic-with-tp-comm-overlap": ("llama3-8b", dict(
        tp=8, dp=1, global_batch=8, seq_len=4096, sequence_parallel=True,
        deterministic=True, tp_comm_overlap=True)),
}


def _force_args(model: str, kw: dict[str, Any]) -> list[str]:
    cfg = ParallelConfig(**kw)
    spec = BUILTIN_MODELS[model]
    assert cfg.problems(spec), f"the planner accepts {kw}"
    if cfg.vpp > 1:  # layout_args would refuse the uneven split itself; spell Megatron's flag
        kw = {**kw, "vpp": 1}
        words = [w for a in megatron_args(spec, ParallelConfig(**kw)) for w in a.split(" ", 1)]
        return [*words, "--num-layers-per-virtual-pipeline-stage",
                str(spec.num_layers // (cfg.pp * cfg.vpp))]
    # a hand-written launch says only --pipeline-model-parallel-size; drop the layout the
    # emitter would spell for the uneven split
    return [w for a in megatron_args(spec, cfg)
            if not a.startswith(("--pipeline-model-parallel-layout", "--decoder-"))
            for w in a.split(" ", 1)]


def test_megatron_rejects_what_the_planner_rejects(framework_check: Check) -> None:
    cases = []
    for name, (model, kw) in BROKEN.items():
        cfg = ParallelConfig(**kw)
        cases.append({"argv": [*_force_args(model, kw), "--mock-data", "--tokenizer-type",
                               "NullTokenizer", "--vocab-size", "32000"],
                      "world_size": cfg.world_size,
                      "env": {"CUDA_DEVICE_MAX_CONNECTIONS": "1",
                              **{n: v for n, v, _ in megatron_env(cfg, H100) if v is not None}},
                      "name": name})
    for case, result in zip(cases, framework_check("megatron", cases), strict=True):
        assert not result["ok"], f"Megatron accepted {case['name']}"


TORCHTITAN_CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "fsdp-tp-cp-full-ac": ("llama3-8b", dict(
        tp=2, cp=2, dp=4, global_batch=64, seq_len=8192, sequence_parallel=True, zero=3,
        recompute=Recompute.FULL)),
    "hsdp-pp-interleaved": ("llama3-70b", dict(
        tp=8, pp=4, dp=2, vpp=2, global_batch=64, seq_len=8192, sequence_parallel=True,
        recompute=Recompute.SELECTIVE)),
    "pp-vpp4-layers-per-stage": ("llama3-70b", dict(
        tp=4, pp=4, dp=2, vpp=4, global_batch=64, seq_len=8192, sequence_parallel=True)),
    "pp-redistribute-eager": ("llama3-8b", dict(
        pp=4, dp=2, mbs=2, global_batch=64, seq_len=8192,
        vocab_strategy=VocabStrategy.REDISTRIBUTE, eager=True)),
    "zero2-no-reshard": ("llama3-8b", dict(tp=2, dp=8, global_batch=64, seq_len=8192,
                                           sequence_parallel=True, zero=2)),
    "fsdp-async-tp": ("llama3-8b", dict(tp=8, dp=8, global_batch=64, seq_len=8192,
                                        sequence_parallel=True, zero=3, tp_comm_overlap=True)),
    "fsdp-tp-pp": ("llama3-70b", dict(tp=8, pp=4, dp=4, global_batch=64, seq_len=8192,
                                      sequence_parallel=True, zero=3,
                                      recompute=Recompute.SELECTIVE)),
    "moe-ep": ("qwen3-30b-a3b", dict(dp=16, ep=8, etp=1, global_batch=64, seq_len=4096,
                                     zero=3)),
    "deepseek-ep": ("deepseek-v3", dict(dp=64, ep=32, etp=1, global_batch=256, seq_len=4096,
                                        zero=3)),
}


def test_torchtitan_accepts_every_emitted_launch(framework_check: Check,
                                                 tmp_path: Path) -> None:
    cases, plans = [], []
    for name, (model, kw) in TORCHTITAN_CASES.items():
        plan = plan_of(BUILTIN_MODELS[model], framework=Framework.TORCHTITAN, **kw)
        # the user's overrides go before the plan's flags (tyro takes none after the
        # activation-checkpoint subcommand that ends them)
        _, argv = _launch(plan, "torchtitan", tmp_path / name,
                          TRAIN_ARGS="--training.steps 10 --metrics.log_freq 5")
        entry = argv.index("torchtitan.train")
        cases.append({"argv": argv[entry + 1:], "world_size": plan.config.world_size,
                      "name": name})
        plans.append(plan)
    for case, plan, result in zip(cases, plans, framework_check("torchtitan", cases),
                                  strict=True):
        assert result["ok"], f"{case['name']}: {result['error']}"
        cfg, par, shape = plan.config, result["parallel"], result["model"]
        assert par["dp_replicate"] * par["dp_shard"] == cfg.dp
        assert (par["dp_shard"] > 1) == (cfg.zero >= 2 and cfg.dp > 1)
        assert (par["tp"], par["cp"], par["pp"], par["ep"]) == (cfg.tp, cfg.cp, cfg.pp,
                                                                cfg.ep)
        assert par["global_batch"] == cfg.global_batch and par["seq_len"] == cfg.seq_len
        # compiled unless the plan is eager, as the step time prices element-wise work;
        # async TP is the TP overlap
        assert par["compile"] == (not cfg.eager), case["name"]
        assert par["async_tp"] == (cfg.tp_comm_overlap and cfg.tp > 1)
        model = plan.model
        assert shape["num_layers"] == model.num_layers, case["name"]
        assert shape["dim"] == model.hidden_size
        assert shape["vocab_size"] == model.vocab_size
        assert shape["n_heads"] == model.num_attention_heads
        if "n_kv_heads" in shape and shape["n_kv_heads"] is not None:
            assert shape["n_kv_heads"] == model.num_query_groups
        # presets build no MTP module; the emitter says so where the model has one
        assert shape["mtp_layers"] == 0
        notes = torchtitan_notes(model, cfg)
        assert any("multi-token" in n for n in notes) == bool(model.num_mtp_layers)
        # the launch says the model attends through FlexAttention: the preset's own config
        assert shape["inner_attention"].startswith("FlexAttention"), shape
        assert sum("FlexAttention" in n for n in notes) == 1


def test_every_torchtitan_preset_is_listed_in_a_case() -> None:
    covered = {model for model, _ in TORCHTITAN_CASES.values()}
    assert covered == set(PRESETS)


def test_torchtitan_rejects_a_product_mismatch(framework_check: Check) -> None:
    plan = plan_of(BUILTIN_MODELS["llama3-8b"], framework=Framework.TORCHTITAN, tp=2, dp=4,
                   global_batch=64, seq_len=8192, sequence_parallel=True, zero=3)
    argv = [w for a in torchtitan_args(plan.model, plan.config) for w in a.split(" ", 1)]
    (result,) = framework_check("torchtitan", [{"argv": argv, "world_size": 12}])
    assert not result["ok"] and "WORLD_SIZE" in result["error"]


@pytest.mark.parametrize("zero", [0, 1, 2, 3])
def test_deepspeed_accepts_every_zero_stage(framework_check: Check, tmp_path: Path,
                                            zero: int) -> None:
    plan = plan_of(BUILTIN_MODELS["llama2-7b"], framework=Framework.DEEPSPEED, dp=64, mbs=2,
                   global_batch=1024, zero=zero, recompute=Recompute.FULL)
    out, argv = _launch(plan, "deepspeed", tmp_path, TRAIN_SCRIPT="/train.py",
                        TRAIN_ARGS="--epochs 1")
    assert argv[12:15] == ["/train.py", "--deepspeed", "--deepspeed_config"]
    assert argv[-2:] == ["--epochs", "1"]  # no args file: the script's own flags last
    written = ds_config(plan.config)
    launcher = run_launch(out, tmp_path, script="launch_deepspeed.sh", program="deepspeed",
                          TRAIN_SCRIPT="/train.py")["argv"]
    (result,) = framework_check("deepspeed", [{
        "config": written, "dp": plan.config.dp,
        "hostfile": (out / "hostfile").read_text(), "launcher_argv": launcher}])
    assert result["ok"], result["error"]
    parsed = result["parsed"]
    # DeepSpeed ignores a misspelled top-level key: every value written must come back parsed
    assert {"train_batch_size": parsed["train_batch_size"],
            "train_micro_batch_size_per_gpu": parsed["micro_batch"],
            "gradient_accumulation_steps": parsed["gradient_accumulation_steps"],
            "bf16": {"enabled": parsed["bf16"]},
            "zero_optimization": {"stage": parsed["zero_stage"],
                                  "overlap_comm": parsed["overlap_comm"]}} == written
    assert parsed["zero_stage"] == zero and parsed["train_batch_size"] == 1024
    assert list(parsed["hosts"].values()) == [8] * 8
    ds = parsed["launcher"]
    assert (ds["num_nodes"], ds["num_gpus"], ds["master_addr"]) == (8, 8, "node000")
    assert ds["user_script"] == "/train.py" and ds["hosts"] == parsed["hosts"]
    assert ds["user_args"][:2] == ["--deepspeed", "--deepspeed_config"]


def test_deepspeed_rejects_a_batch_the_planner_rejects(framework_check: Check) -> None:
    cfg = ParallelConfig(dp=64, mbs=2, global_batch=1000, framework=Framework.DEEPSPEED)
    assert cfg.problems(BUILTIN_MODELS["llama2-7b"])
    config = {**ds_config(ParallelConfig(dp=64, mbs=2, global_batch=1024)),
              "train_batch_size": 1000}
    (result,) = framework_check("deepspeed", [{"config": config, "dp": 64}])
    assert not result["ok"] and "train_batch_size" in result["error"]
