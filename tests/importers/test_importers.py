"""Existing launches read back: emit -> import round trips, hand-written scripts, refusals."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from planner.catalog import BUILTIN_MODELS
from planner.emit.deepspeed import ds_config
from planner.emit.megatron import megatron_args
from planner.emit.torchtitan import torchtitan_args
from planner.errors import InputError
from planner.importers.deepspeed import import_deepspeed
from planner.importers.megatron import import_megatron
from planner.importers.shell import script_words
from planner.importers.torchtitan import import_torchtitan
from planner.model_io import model_to_dict
from planner.parallel import (
    Framework,
    ParallelConfig,
    Recompute,
    VocabStrategy,
    stage_layers,
)
from tests.frameworks.test_frameworks import MEGATRON_CASES, TORCHTITAN_CASES

# What the import cannot tell apart from the plan: the split of a stage's layers over its
# virtual chunks is kept, the strategy name may become an explicit layout of the same split.
_SAME_SPLIT = {"vocab_strategy", "layers_per_stage", "layers_per_chunk"}


def _shape(model: Any) -> dict[str, Any]:
    data = model_to_dict(model)
    return {k: v for k, v in data.items() if k not in ("name", "source")}


@pytest.mark.parametrize("case", sorted(MEGATRON_CASES))
def test_megatron_round_trip(case: str) -> None:
    model_name, kw = MEGATRON_CASES[case]
    model, cfg = BUILTIN_MODELS[model_name], ParallelConfig(**kw)
    text = "\n".join(megatron_args(model, cfg)) + f"\n--vocab-size {model.vocab_size}\n"
    got = import_megatron(text, "launch.args", dp=cfg.dp, world_size=None, model=None)
    expected_moe = _shape(model).get("moe")
    if expected_moe and expected_moe.get("num_shared_experts"):  # Megatron states the width
        expected_moe["shared_ffn_hidden_size"] = model.moe.shared_width  # type: ignore[union-attr]
    assert _shape(got.model) == {**_shape(model), **({"moe": expected_moe} if expected_moe
                                                     else {})}
    want = {**cfg.to_dict(), "etp": cfg.expert_tp}  # Megatron always states etp for MoE
    have = {**got.config.to_dict(), "etp": got.config.expert_tp}
    diff = {k for k in want if want[k] != have[k]}
    assert diff <= _SAME_SPLIT, {k: (want[k], have[k]) for k in diff}
    if diff:
        assert [len(s) for s in stage_layers(model, cfg)] == [
            len(s) for s in stage_layers(got.model, got.config)]
    assert got.unknown == ()
    assert set(got.ignored) <= {"--ckpt-format"} and got.notes == ()


GPT3_SCRIPT = """#!/bin/bash
# the shape of Megatron-LM's examples/gpt3 launch script
export CUDA_DEVICE_MAX_CONNECTIONS=1
GPUS_PER_NODE=8
NUM_NODES=${NUM_NODES:-128}
DISTRIBUTED_ARGS=(
    --nproc_per_node $GPUS_PER_NODE
    --nnodes $NUM_NODES   # nodes
    --master_addr $MASTER_ADDR
)
GPT_MODEL_ARGS="--num-layers 96 --hidden-size 12288 \\
    --num-attention-heads 96 --seq-length 2048 --max-position-embeddings 2048"
TRAINING_ARGS=(
    --micro-batch-size 1 --global-batch-size 1536 --train-iters 500000
    --lr 6.0e-5 --bf16 --use-distributed-optimizer --recompute-activations
)
torchrun ${DISTRIBUTED_ARGS[@]} pretrain_gpt.py $GPT_MODEL_ARGS "${TRAINING_ARGS[@]}" \\
    --tensor-model-parallel-size 8 --pipeline-model-parallel-size 16 --sequence-parallel \\
    --data-path $DATA_PATH --vocab-size 51200 --use-magic-kernels --expert-model-parallel=2
"""


def test_megatron_launch_script_is_read_like_a_shell_would() -> None:
    got = import_megatron(GPT3_SCRIPT, "train.sh", dp=None, world_size=None, model=None)
    assert got.world_size == 1024
    cfg = got.config
    assert (cfg.tp, cfg.pp, cfg.dp, cfg.global_batch, cfg.seq_len) == (8, 16, 8, 1536, 2048)
    assert cfg.recompute is Recompute.SELECTIVE and cfg.zero == 1 and cfg.sequence_parallel
    assert got.model.params.total == pytest.approx(174.6e9, rel=0.01)
    assert got.unknown == ("--use-magic-kernels", "--expert-model-parallel")
    assert set(got.ignored) == {"--train-iters", "--lr", "--data-path"}


def test_environment_prefixed_launch_line_is_a_command() -> None:
    """`CUDA_DEVICE_MAX_CONNECTIONS=1 torchrun ...` on one line is the launch, not only an
    assignment."""
    script = ('CUDA_DEVICE_MAX_CONNECTIONS=1 NCCL_DEBUG="WARN" torchrun --nnodes 2 '
              "--nproc_per_node 8 pretrain_gpt.py --num-layers 2 --hidden-size 64 "
              "--num-attention-heads 4 --vocab-size 100 --global-batch-size 32 "
              "--seq-length 128 --tensor-model-parallel-size 2\n")
    got = import_megatron(script, "train.sh", dp=None, world_size=None, model=None)
    assert got.world_size == 16 and got.config.tp == 2 and got.config.dp == 8
    commands, variables = script_words(script)
    assert commands[0][0] == "torchrun" and variables["NCCL_DEBUG"] == "WARN"


def test_shell_words_expand_arrays_strings_and_defaults() -> None:
    commands, variables = script_words(GPT3_SCRIPT)
    assert variables["NUM_NODES"] == "128"
    (torchrun,) = [c for c in commands if c and c[0] == "torchrun"]
    assert torchrun[:5] == ["torchrun", "--nproc_per_node", "8", "--nnodes", "128"]
    assert "--num-attention-heads" in torchrun and "--use-distributed-optimizer" in torchrun


def test_megatron_import_refusals() -> None:
    with pytest.raises(InputError, match="no vocabulary size"):
        import_megatron("--num-layers 2 --hidden-size 64 --num-attention-heads 4",
                        "a.args", dp=1, world_size=None, model=None)
    with pytest.raises(InputError, match="another model"):
        import_megatron("--num-layers 2 --hidden-size 64 --num-attention-heads 4 "
                        "--global-batch-size 8 --seq-length 128", "a.args", dp=1,
                        world_size=None, model=BUILTIN_MODELS["llama3-8b"])
    with pytest.raises(InputError, match="expected an integer"):
        import_megatron("--num-layers two --hidden-size 64 --num-attention-heads 4 "
                        "--vocab-size 100", "a.args", dp=1, world_size=None, model=None)
    with pytest.raises(InputError, match="layout"):
        import_megatron("--num-layers 4 --hidden-size 64 --num-attention-heads 4 "
                        "--vocab-size 100 --pipeline-model-parallel-size 2 "
                        "--pipeline-model-parallel-layout Ett|tx|tL --global-batch-size 8 "
                        "--seq-length 128", "a.args", dp=1, world_size=None, model=None)


def test_megatron_layout_with_repeats() -> None:
    text = ("--pipeline-model-parallel-size 4 --pipeline-model-parallel-layout "
            "E|(t|)*3,(tt|)*3,tmL --global-batch-size 64 --seq-length 4096 "
            "--vocab-size 129280")
    model = BUILTIN_MODELS["llama2-7b"]  # only the layer count matters here: 32
    shape = (f"--num-layers 10 --hidden-size {model.hidden_size} "
             f"--num-attention-heads {model.num_attention_heads} ")
    got = import_megatron(shape + text, "a.args", dp=1, world_size=None, model=None)
    # virtual stages E | t | t | t | tt | tt | tt | tmL; stage k on rank k % 4
    assert got.config.vpp == 2
    assert got.config.layers_per_chunk == (0, 1, 1, 1, 2, 2, 2, 1)
    assert got.config.problems(got.model) == ()
    layers = stage_layers(got.model, got.config)
    assert [len(s) for s in layers] == [2, 3, 3, 2]


@pytest.mark.parametrize("case", sorted(TORCHTITAN_CASES))
def test_torchtitan_round_trip(case: str) -> None:
    model_name, kw = TORCHTITAN_CASES[case]
    model = BUILTIN_MODELS[model_name]
    cfg = ParallelConfig(framework=Framework.TORCHTITAN, **kw)
    text = "\n".join(torchtitan_args(model, cfg))
    got = import_torchtitan(text, "tt.args", dp=None, world_size=cfg.world_size, model=None)
    assert got.model is model
    want, have = cfg.to_dict(), got.config.to_dict()
    diff = {k: (want[k], have[k]) for k in want if want[k] != have[k]}
    assert set(diff) <= {"etp"}, diff  # torchtitan's experts are never tensor-parallel
    assert got.unknown == ()


def test_deepspeed_round_trip_and_misspelled_keys() -> None:
    cfg = ParallelConfig(dp=64, mbs=2, global_batch=1024, zero=2, seq_len=4096,
                         framework=Framework.DEEPSPEED)
    model = BUILTIN_MODELS["llama2-7b"]
    got = import_deepspeed(ds_config(cfg), "ds.json", 64, model, 4096)
    want, have = cfg.to_dict(), got.config.to_dict()
    assert {k for k in want if want[k] != have[k]} == set()
    data = {**ds_config(cfg), "zero_optimisation": {"stage": 3}, "optimizer": {"type": "Adam"}}
    got = import_deepspeed(data, "ds.json", 64, model, 4096)
    assert got.unknown == ("zero_optimisation (did you mean zero_optimization?)",)
    assert got.ignored == ("optimizer",)
    with pytest.raises(InputError, match="1000 != micro batch 2"):
        import_deepspeed({**data, "train_batch_size": 1000}, "ds.json", 64, model, 4096)


def test_cli_check_from_launches(run_cli: Callable[..., tuple[int, str, str]],
                                 tmp_path: Path) -> None:
    script = tmp_path / "train.sh"
    script.write_text(GPT3_SCRIPT)
    code, out, err = run_cli("check", "--from", "megatron", str(script), "--cluster", "selene",
                             "--format", "json")
    assert code == 0, err
    assert json.loads(out)["config"]["pp"] == 16
    assert "--use-magic-kernels: not modelled" in err
    code, out, _ = run_cli("check", "--from", "megatron", str(script), "--cluster", "selene",
                           "--dp", "2", "--format", "json")
    assert code == 0 and json.loads(out)["config"]["dp"] == 2  # --dp beats the script
    small = tmp_path / "small.sh"
    small.write_text(GPT3_SCRIPT.replace("--recompute-activations", "")
                     .replace("--pipeline-model-parallel-size 16",
                              "--pipeline-model-parallel-size 1")
                     .replace("NUM_NODES:-128", "NUM_NODES:-8"))
    code, _, err = run_cli("check", "--from", "megatron", str(small), "--cluster", "selene")
    assert code == 1
    ds = tmp_path / "ds_config.json"
    ds.write_text(json.dumps(ds_config(ParallelConfig(dp=8, mbs=1, global_batch=64, zero=3))))
    code, _, err = run_cli("check", "--from", "deepspeed", str(ds), "--cluster",
                           "rtx4090-8x-pcie", "--model", "llama2-7b", "--seq-len", "4096")
    # 7B on 24 GiB cards without recompute: over by ~17 GiB (the launch has no checkpointing)
    assert code == 1 and "error:" not in err
    code, _, err = run_cli("check", "--from", "deepspeed", str(ds), "--cluster",
                           "rtx4090-8x-pcie")
    assert code == 2 and "--model" in err
    code, _, err = run_cli("estimate", "--from", "megatron", str(script), "--cluster",
                           "selene", "--tp", "4")
    assert code == 2 and "drop --tp" in err


def test_vocab_strategy_is_kept_through_account_flags() -> None:
    model, cfg = BUILTIN_MODELS["llama2-13b"], ParallelConfig(
        tp=4, pp=6, dp=2, global_batch=64, seq_len=4096,
        vocab_strategy=VocabStrategy.REDISTRIBUTE)
    text = "\n".join(megatron_args(model, cfg)) + "\n--vocab-size 32000"
    got = import_megatron(text, "a", dp=2, world_size=None, model=None)
    assert got.config.vocab_strategy is VocabStrategy.REDISTRIBUTE


def test_an_emitted_launch_script_checks_back_to_its_plan(
        run_cli: Callable[..., tuple[int, str, str]], tmp_path: Path) -> None:
    """launch_torchrun.sh reads its flags with $(cat megatron.args): the importer follows it,
    and the torchrun line gives the world size."""
    plan = tmp_path / "plan.yaml"
    run_cli("estimate", "--model", "llama3-70b", "--cluster", "dgx-h100", "--global-batch",
            "512", "--seq-len", "8192", "--tp", "8", "--pp", "4", "--dp", "4", "--vpp", "5",
            "--zero", "1", "--format", "json", "-o", str(plan))
    assert run_cli("emit", str(plan), "--to", "megatron", "-o", str(tmp_path / "l"))[0] == 0
    code, out, err = run_cli("check", "--from", "megatron", str(tmp_path / "l" /
                                                                "launch_torchrun.sh"),
                             "--cluster", "dgx-h100", "--model", "llama3-70b", "--format",
                             "json")
    assert code == 0, err
    assert "not modelled" not in err and "assumed all" not in err
    _, planned, _ = run_cli("estimate", str(plan), "--format", "json")
    assert json.loads(out)["config"] == json.loads(planned)["config"]


def test_flags_that_change_memory_or_time_are_never_called_irrelevant() -> None:
    """Only data, optimizer, logging and checkpoint flags count as having no effect; kernel
    and numerics choices the planner does not model are reported as such, and MoE kernel
    choices other than the modelled ones leave a note."""
    shape = ("--num-layers 4 --hidden-size 64 --num-attention-heads 4 --vocab-size 100 "
             "--global-batch-size 8 --seq-length 128 --num-experts 4 ")
    got = import_megatron(shape + "--no-gradient-accumulation-fusion --no-bias-gelu-fusion "
                          "--moe-token-dispatcher-type allgather --lr 1e-4 --data-path /d",
                          "a.args", dp=1, world_size=None, model=None)
    assert got.unknown == ("--no-bias-gelu-fusion",)  # the wgrad accumulation is modelled
    assert not got.config.gradient_accumulation_fusion
    assert got.ignored == ("--lr", "--data-path")
    assert any("allgather: modelled as alltoall" in n for n in got.notes)
    # without --moe-grouped-gemm the experts run one by one (Megatron's SequentialMLP)
    assert not got.config.moe_grouped_gemm
    grouped = import_megatron(shape + "--moe-grouped-gemm", "a.args", dp=1, world_size=None,
                              model=None)
    assert grouped.config.moe_grouped_gemm
    # no dispatcher flag: Megatron's default, allgather, which the planner prices as alltoall
    assert any("allgather (Megatron's default): modelled as alltoall" in n
               for n in grouped.notes)


def test_megatron_weight_and_gradient_dtype_flags() -> None:
    """--fp8-param-gather (with fp8 and the distributed optimizer) and --grad-reduce-in-bf16
    are read into the configuration; --fp8-param-gather without fp8 has nothing to keep in
    fp8 and says so; the fp32 accumulation flag is Megatron's bf16 default."""
    shape = ("--num-layers 4 --hidden-size 64 --num-attention-heads 4 --vocab-size 100 "
             "--global-batch-size 8 --seq-length 128 --use-distributed-optimizer --bf16 ")
    got = import_megatron(shape + "--fp8-format hybrid --fp8-param-gather --grad-reduce-in-bf16",
                          "a.args", dp=1, world_size=None, model=None)
    assert got.config.fp8_param_gather and got.config.grad_reduce_in_bf16 and not got.unknown
    plain = import_megatron(shape + "--fp8-param-gather --accumulate-allreduce-grads-in-fp32",
                            "a.args", dp=1, world_size=None, model=None)
    assert not plain.config.fp8_param_gather and not plain.config.grad_reduce_in_bf16
    assert not plain.unknown and any("--fp8-param-gather without" in n for n in plain.notes)


def test_megatron_dropout_is_the_launch_s() -> None:
    """Megatron runs the launch's dropout (0.1 each by default) whatever the model says: a
    Llama launch without the flags trains with dropout; the flags set it; nonsense is refused."""
    shape = ("--num-layers 4 --hidden-size 64 --num-attention-heads 4 --vocab-size 100 "
             "--global-batch-size 8 --seq-length 128 --swiglu ")
    got = import_megatron(shape, "a.args", dp=1, world_size=None, model=None)
    assert (got.model.hidden_dropout, got.model.attention_dropout) == (0.1, 0.1)
    got = import_megatron(shape + "--hidden-dropout 0 --attention-dropout 0.0", "a.args", dp=1,
                          world_size=None, model=None)
    assert (got.model.hidden_dropout, got.model.attention_dropout) == (0.0, 0.0)
    with pytest.raises(InputError, match="--hidden-dropout"):
        import_megatron(shape + "--hidden-dropout 2", "a.args", dp=1, world_size=None,
                        model=None)


def test_torchtitan_option_values_may_contain_colons() -> None:
    text = ("--module llama3 --config llama3_8b --job.dump_folder /runs/a:b "
            "--training.local_batch_size 1 --training.seq_len 8192 activation-checkpoint:full")
    got = import_torchtitan(text, "tt.args", dp=8, world_size=None, model=None)
    assert got.config.recompute is Recompute.FULL and got.ignored == ("--job.dump_folder",)
    assert got.unknown == ()


def test_torchtitan_compile_and_async_tp() -> None:
    """A launch without --compile.enable runs eager (priced op by op: ParallelConfig.eager);
    with it, compiled. Async TP (a compile option in torchtitan) is the TP overlap."""
    base = ("--module llama3 --config llama3_8b --parallelism.tensor_parallel_degree 8 "
            "--training.local_batch_size 1 --training.seq_len 8192 ")
    eager = import_torchtitan(base + "activation-checkpoint:full", "tt.args", dp=8,
                              world_size=None, model=None)
    assert eager.config.eager and not eager.config.tp_comm_overlap
    compiled = import_torchtitan(base + "--compile.enable --compile.enable_async_tensor_parallel"
                                 " activation-checkpoint:full", "tt.args", dp=8,
                                 world_size=None, model=None)
    assert not compiled.config.eager
    assert compiled.config.tp_comm_overlap and compiled.unknown == ()


def test_megatron_fp8_recipe_is_read() -> None:
    """Tensor-wise recipes (delayed, Megatron's default, and current scaling) are what the cost
    model prices: no warning; block-wise and MX recipes are priced as tensor-wise, and say so."""
    shape = ("--num-layers 4 --hidden-size 64 --num-attention-heads 4 --vocab-size 100 "
             "--global-batch-size 8 --seq-length 128 --bf16 --fp8-format hybrid ")
    for recipe in ("delayed", "tensorwise"):
        got = import_megatron(shape + f"--fp8-recipe {recipe}", "a.args", dp=1,
                              world_size=None, model=None)
        assert not got.unknown and not any("fp8-recipe" in n for n in got.notes)
    got = import_megatron(shape + "--fp8-recipe blockwise", "a.args", dp=1, world_size=None,
                          model=None)
    assert any("--fp8-recipe blockwise: priced as tensor-wise" in n for n in got.notes)


def test_megatron_deterministic_mode_is_read() -> None:
    """--deterministic-mode is priced (ParallelConfig.deterministic), not reported unknown;
    without it the run is not deterministic."""
    shape = ("--num-layers 4 --hidden-size 64 --num-attention-heads 4 --vocab-size 100 "
             "--global-batch-size 8 --seq-length 128 --bf16 ")
    got = import_megatron(shape + "--deterministic-mode", "a.args", dp=1, world_size=None,
                          model=None)
    assert got.config.deterministic and not got.unknown
    assert got.config.gradient_accumulation_fusion
    unfused = import_megatron(shape + "--no-gradient-accumulation-fusion", "a.args", dp=1,
                              world_size=None, model=None)
    assert not unfused.config.gradient_accumulation_fusion and not unfused.unknown
    assert not import_megatron(shape, "a.args", dp=1, world_size=None,
                               model=None).config.deterministic


def test_megatron_first_last_layers_bf16_is_read() -> None:
    """--first-last-layers-bf16 keeps --num-layers-at-start/end-in-bf16 layers (default 1
    each) in bf16 under fp8; without fp8 every layer is bf16 already, and the note says so."""
    shape = ("--num-layers 4 --hidden-size 64 --num-attention-heads 4 --vocab-size 100 "
             "--global-batch-size 8 --seq-length 128 --bf16 ")
    fp8 = import_megatron(shape + "--fp8-format hybrid --fp8-recipe tensorwise "
                          "--first-last-layers-bf16 --num-layers-at-end-in-bf16 2", "a.args",
                          dp=1, world_size=None, model=None)
    assert fp8.config.bf16_layers == (1, 2) and not fp8.unknown
    plain = import_megatron(shape + "--first-last-layers-bf16", "a.args", dp=1,
                            world_size=None, model=None)
    assert plain.config.bf16_layers == (0, 0)
    assert any("every layer is bf16" in n for n in plain.notes)


def test_torchtitan_deterministic_is_noted() -> None:
    """torchtitan's debug.deterministic is not priced (Megatron's mode is): the import says so
    rather than dropping it silently."""
    base = ("--module llama3 --config llama3_8b --training.local_batch_size 1 "
            "--training.seq_len 8192 --compile.enable activation-checkpoint:full")
    got = import_torchtitan(base.replace("--compile.enable", "--compile.enable "
                                         "--debug.deterministic"), "tt.args", dp=8,
                            world_size=None, model=None)
    assert any("deterministic: not priced" in n for n in got.notes)
    plain = import_torchtitan(base, "tt.args", dp=8, world_size=None, model=None)
    assert not any("deterministic" in n for n in plain.notes)


def test_megatron_recompute_modules_are_read() -> None:
    """Megatron's selective recompute checkpoints the modules --recompute-modules names
    (core attention by default, in either list form launch files write); each is priced
    (ParallelConfig.recompute_modules). A name the planner does not know is left out with a
    note (its activations counted as kept); with none left the launch is priced as no
    recompute."""
    shape = ("--num-layers 4 --hidden-size 64 --num-attention-heads 4 --vocab-size 100 "
             "--global-batch-size 8 --seq-length 128 --recompute-granularity selective ")
    default = import_megatron(shape, "a.args", dp=1, world_size=None, model=None)
    assert default.config.recompute is Recompute.SELECTIVE and not default.unknown
    assert default.config.recompute_modules == ("core_attn",)
    moe_only = import_megatron(shape + "--recompute-modules moe_act layernorm --lr 1e-4",
                               "a.args", dp=1, world_size=None, model=None)
    assert moe_only.config.recompute is Recompute.SELECTIVE
    assert moe_only.config.recompute_modules == ("moe_act", "layernorm")
    assert moe_only.ignored == ("--lr",) and not moe_only.unknown and not moe_only.notes
    both = import_megatron(shape + "--recompute-modules [core_attn mlp gdn_norm_out]",
                           "a.args", dp=1, world_size=None, model=None)
    assert both.config.recompute_modules == ("core_attn", "mlp")
    assert any("--recompute-modules gdn_norm_out: not modelled" in n for n in both.notes)
    # nothing the planner knows left to recompute: priced as no recompute (not core_attn)
    only = import_megatron(shape + "--recompute-modules gdn_norm_out", "a.args", dp=1,
                           world_size=None, model=None)
    assert only.config.recompute is Recompute.NONE



def test_the_parameter_gather_overlap_is_read_apart() -> None:
    """Megatron overlaps the distributed optimizer's parameter all-gather only with
    --overlap-param-gather: a launch that overlaps only the gradient reduction imports with
    the gather exposed, one with both with it hidden."""
    shape = ("--num-layers 4 --hidden-size 64 --num-attention-heads 4 --vocab-size 100 "
             "--global-batch-size 8 --seq-length 128 --use-distributed-optimizer ")
    only_grads = import_megatron(shape + "--overlap-grad-reduce", "a.args", dp=2,
                                 world_size=None, model=None)
    assert only_grads.config.overlap_grad_reduce
    assert not only_grads.config.param_gather_hidden
    both = import_megatron(shape + "--overlap-grad-reduce --overlap-param-gather", "a.args",
                           dp=2, world_size=None, model=None)
    assert both.config.param_gather_hidden
