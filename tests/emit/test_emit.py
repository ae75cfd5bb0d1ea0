"""planner emit without the frameworks: flags, layouts, placement, scripts, refusals.

The frameworks' own parsers check the same files in tests/frameworks.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from planner.catalog import BUILTIN_MODELS
from planner.emit import emit, write_emitted
from planner.emit.deepspeed import ds_config
from planner.emit.launch import default_placement
from planner.emit.megatron import layout_args, megatron_args, megatron_env
from planner.emit.torchtitan import torchtitan_args
from planner.errors import InputError
from planner.gpus import GPU_CATALOG
from planner.hardware_io import load_cluster
from planner.parallel import AttentionKernel, Framework, ParallelConfig, Recompute, VocabStrategy
from planner.search.space import SearchSpec, degree_families
from tests.emit.launching import plan_of, run_launch, stub_torchrun

LLAMA70 = BUILTIN_MODELS["llama3-70b"]
LLAMA8B = BUILTIN_MODELS["llama3-8b"]
DSV3 = BUILTIN_MODELS["deepseek-v3"]


def flags(args: tuple[str, ...]) -> dict[str, str]:
    return {a.split(" ", 1)[0]: (a.split(" ", 1)[1] if " " in a else "") for a in args}


def test_megatron_flags_realise_the_configuration() -> None:
    cfg = ParallelConfig(tp=8, pp=4, dp=4, vpp=5, global_batch=512, seq_len=8192,
                         sequence_parallel=True, zero=1, recompute=Recompute.SELECTIVE)
    f = flags(megatron_args(LLAMA70, cfg))
    assert f["--tensor-model-parallel-size"] == "8"
    assert f["--pipeline-model-parallel-size"] == "4"
    assert f["--num-layers-per-virtual-pipeline-stage"] == "4"  # 80 / (4 * 5)
    assert f["--num-query-groups"] == "8" and "--group-query-attention" in f
    assert f["--recompute-granularity"] == "selective"
    assert "--use-distributed-optimizer" in f and "--sequence-parallel" in f
    assert f["--global-batch-size"] == "512" and f["--seq-length"] == "8192"


def test_megatron_moe_and_mla_flags() -> None:
    cfg = ParallelConfig(tp=2, pp=8, dp=8, ep=8, etp=1, global_batch=64, seq_len=4096,
                         sequence_parallel=True, zero=1)
    f = flags(megatron_args(DSV3, cfg))
    assert f["--num-experts"] == "256" and f["--moe-router-topk"] == "8"
    assert f["--expert-model-parallel-size"] == "8"
    assert f["--expert-tensor-parallel-size"] == "1"
    assert f["--moe-layer-freq"] == "[" + ",".join(["0"] * 3 + ["1"] * 58) + "]"
    assert "--multi-latent-attention" in f and f["--kv-lora-rank"] == "512"
    assert f["--mtp-num-layers"] == "1"


@pytest.mark.parametrize(("kw", "expected"), [
    ({"pp": 4}, []),
    ({"pp": 4, "vpp": 2}, ["--num-layers-per-virtual-pipeline-stage 5"]),  # 40 / 8
    ({"pp": 6, "vocab_strategy": VocabStrategy.REDISTRIBUTE},
     ["--account-for-embedding-in-pipeline-split", "--account-for-loss-in-pipeline-split"]),
    ({"pp": 4, "layers_per_stage": (9, 11, 11, 9)},
     ["--decoder-first-pipeline-num-layers 9", "--decoder-last-pipeline-num-layers 9"]),
    ({"pp": 2, "layers_per_stage": (19, 21)},
     ["--pipeline-model-parallel-layout E" + "t" * 19 + "|" + "t" * 21 + "L"]),
])
def test_layout_flags_reproduce_the_planned_split(kw: dict[str, object],
                                                  expected: list[str]) -> None:
    model = BUILTIN_MODELS["llama2-13b"]  # 40 layers
    cfg = ParallelConfig(dp=1, global_batch=64, seq_len=4096, **kw)  # type: ignore[arg-type]
    assert cfg.problems(model) == ()
    assert layout_args(model, cfg) == expected


def test_layout_string_puts_mtp_and_loss_on_the_last_virtual_stage() -> None:
    cfg = ParallelConfig(tp=2, pp=8, dp=8, ep=8, etp=1, vpp=2, global_batch=64, seq_len=4096,
                         sequence_parallel=True, vocab_strategy=VocabStrategy.REDISTRIBUTE)
    (flag,) = layout_args(DSV3, cfg)
    stages = flag.split(" ", 1)[1].split("|")
    assert len(stages) == 16 and stages[0].startswith("E") and stages[-1].endswith("mL")
    assert sum(s.count("t") for s in stages) == DSV3.num_layers


def test_vocab_parallel_and_alibi_have_no_megatron_flags() -> None:
    cfg = ParallelConfig(pp=4, global_batch=64, seq_len=2048,
                         vocab_strategy=VocabStrategy.VOCAB_PARALLEL)
    with pytest.raises(InputError, match="vocab-parallel"):
        megatron_args(LLAMA70, cfg)
    with pytest.raises(InputError, match="ALiBi"):
        megatron_args(BUILTIN_MODELS["bloom-176b"], ParallelConfig(global_batch=8))


def test_cuda_device_max_connections_follows_megatron_rules() -> None:
    h100, b200 = GPU_CATALOG["h100-sxm5-80gb"], GPU_CATALOG["b200"]
    tp8 = ParallelConfig(tp=8, global_batch=8)
    assert megatron_env(tp8, h100)[0][:2] == ("CUDA_DEVICE_MAX_CONNECTIONS", "1")
    assert megatron_env(tp8, b200) == ()
    assert megatron_env(ParallelConfig(global_batch=8), h100) == ()
    fsdp = ParallelConfig(tp=8, dp=2, zero=3, global_batch=8)
    assert megatron_env(fsdp, h100)[0][:2] == ("CUDA_DEVICE_MAX_CONNECTIONS", None)


def test_deterministic_mode_sets_megatron_s_environment() -> None:
    """--deterministic-mode with the environment megatron/training/determinism.py asks for."""
    h100 = GPU_CATALOG["h100-sxm5-80gb"]
    det = ParallelConfig(tp=8, global_batch=8, sequence_parallel=True, deterministic=True)
    assert "--deterministic-mode" in megatron_args(LLAMA70, det)
    assert "--deterministic-mode" not in megatron_args(LLAMA70, ParallelConfig(global_batch=8))
    env = {name: value for name, value, _ in megatron_env(det, h100)}
    assert env == {"CUDA_DEVICE_MAX_CONNECTIONS": "1", "NCCL_ALGO": "Ring",
                   "CUBLAS_WORKSPACE_CONFIG": ":4096:8", "NVTE_ALLOW_NONDETERMINISTIC_ALGO": "0"}


def test_torchtitan_args_and_refusals() -> None:
    cfg = ParallelConfig(tp=8, pp=4, dp=2, vpp=2, global_batch=64, seq_len=8192,
                         sequence_parallel=True, framework=Framework.TORCHTITAN)
    args = torchtitan_args(LLAMA70, cfg)
    assert args[:2] == ("--module llama3", "--config llama3_70b")
    f = flags(args)
    assert f["--parallelism.pipeline_parallel_schedule"] == "Interleaved1F1B"
    assert f["--parallelism.data_parallel_replicate_degree"] == "2"
    assert f["--training.local_batch_size"] == "32"
    assert args[-1] == "activation-checkpoint:none"
    with pytest.raises(InputError, match="optimizer-only"):
        torchtitan_args(LLAMA70, ParallelConfig(tp=8, dp=2, zero=1, global_batch=8))
    with pytest.raises(InputError, match="no preset"):
        torchtitan_args(BUILTIN_MODELS["gpt3-175b"], ParallelConfig(global_batch=8))


def test_deepspeed_config_batch_identity_and_refusals() -> None:
    cfg = ParallelConfig(dp=64, mbs=2, global_batch=1024, zero=3, framework=Framework.DEEPSPEED)
    c = ds_config(cfg)
    assert c["train_batch_size"] == c["train_micro_batch_size_per_gpu"] * c[
        "gradient_accumulation_steps"] * cfg.dp
    assert c["zero_optimization"]["stage"] == 3
    with pytest.raises(InputError, match="tp=2"):
        ds_config(ParallelConfig(tp=2, dp=4, global_batch=8))


def test_placement_of_partial_and_odd_jobs() -> None:
    cluster = load_cluster("dgx-h100")
    four = default_placement(cluster, 4)
    assert (four.num_nodes, four.procs_per_node, four.visible_devices) == (1, 4, (0, 1, 2, 3))
    assert default_placement(cluster, 16).hosts == tuple(n.name for n in cluster.nodes[:2])
    with pytest.raises(InputError, match="whole 8-GPU nodes"):
        default_placement(cluster, 12)
    with pytest.raises(InputError, match="names 1 hosts"):
        default_placement(cluster, 16, ("a",))


def test_emit_is_byte_stable_and_refuses_a_framework_mismatch() -> None:
    cluster = load_cluster("dgx-h100")
    plan = plan_of(LLAMA70, tp=8, pp=4, dp=4, vpp=5, global_batch=512, seq_len=8192,
                   sequence_parallel=True, zero=1)
    assert emit(plan, cluster, "megatron") == emit(plan, cluster, "megatron")
    names = [n for n, _ in emit(plan, cluster, "megatron").files]
    assert names == ["megatron.args", "env.sh", "launch_torchrun.sh", "launch_slurm.sbatch",
                     "hostfile", "README.md"]
    assert [n for n, _ in emit(plan, cluster, "slurm").files] == [
        "megatron.args", "env.sh", "launch_torchrun.sh", "launch_slurm.sbatch", "hostfile",
        "README.md"]
    with pytest.raises(InputError, match="estimated for megatron"):
        emit(plan, cluster, "torchtitan")


def test_launch_script_takes_node_rank_from_the_hostfile(tmp_path: Path) -> None:
    cluster = load_cluster("dgx-h100")
    plan = plan_of(LLAMA70, tp=8, pp=4, dp=4, vpp=5, global_batch=512, seq_len=8192,
                   sequence_parallel=True, zero=1)
    hosts = tuple(f"host{i}" for i in range(15)) + (os.uname().nodename.split(".")[0],)
    out = tmp_path / "launch"
    write_emitted(emit(plan, cluster, "megatron", hosts), out, force=False)
    for script in ("launch_torchrun.sh", "launch_slurm.sbatch", "env.sh"):
        subprocess.run(["bash", "-n", str(out / script)], check=True)
    got = run_launch(out, tmp_path, MEGATRON_LM="/opt/megatron", TRAIN_ARGS="--mock-data")
    argv = got["argv"]
    assert isinstance(argv, list)
    assert argv[:12] == ["--nnodes", "16", "--nproc-per-node", "8", "--node-rank", "15",
                         "--master-addr", "host0", "--master-port", "29500",
                         "--rdzv-backend", "static"]
    # the user's TRAIN_ARGS first, the plan's flags last (they win over a repeated flag)
    assert argv[12:14] == ["/opt/megatron/pretrain_gpt.py", "--mock-data"]
    written = (out / "megatron.args").read_text().split()
    assert argv[14:] == written
    assert got["env"] == {"CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7",
                          "CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_DEVICE_MAX_CONNECTIONS": "1"}


def test_launch_script_without_hosts_needs_node_rank(tmp_path: Path) -> None:
    cluster = load_cluster("selene")
    assert not cluster.named_nodes
    plan = plan_of(LLAMA70, cluster="selene", tp=8, pp=2, global_batch=64, seq_len=4096,
                   sequence_parallel=True)
    out = tmp_path / "launch"
    write_emitted(emit(plan, cluster, "torchrun"), out, force=False)
    assert not (out / "hostfile").exists() and not (out / "launch_slurm.sbatch").exists()
    env = {**os.environ, **stub_torchrun(tmp_path), "MEGATRON_LM": "/m", "TRAIN_ARGS": "-x"}
    env.pop("NODE_RANK", None)
    failed = subprocess.run(["bash", str(out / "launch_torchrun.sh")], env=env,
                            capture_output=True, text=True)
    assert failed.returncode != 0 and "NODE_RANK" in failed.stderr
    got = run_launch(out, tmp_path, MEGATRON_LM="/m", TRAIN_ARGS="-x", NODE_RANK="1",
                     MASTER_ADDR="n0")
    argv = got["argv"]
    assert isinstance(argv, list) and argv[:6] == ["--nnodes", "2", "--nproc-per-node", "8",
                                                   "--node-rank", "1"]


def test_cli_emit_writes_refuses_overwrite_and_unfit_plans(
        run_cli: Callable[..., tuple[int, str, str]], tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    code, _, _ = run_cli("estimate", "--model", "llama3-8b", "--cluster", "dgx-h100",
                         "--global-batch", "64", "--seq-len", "8192", "--tp", "2", "--dp", "4",
                         "--recompute", "full", "--zero", "1",
                         "-o", str(plan))
    assert code == 0
    out = tmp_path / "launch"
    code, _, err = run_cli("emit", str(plan), "--to", "megatron", "-o", str(out))
    assert code == 0, err
    assert (out / "megatron.args").read_text().startswith("--num-layers 32\n")
    code, _, err = run_cli("emit", str(plan), "--to", "megatron", "-o", str(out))
    assert code == 2 and "exists" in err
    code, _, err = run_cli("emit", str(plan), "--to", "nccl", "-o", str(tmp_path / "x"))
    assert code == 2 and "expected one of" in err
    big = tmp_path / "big.yaml"
    run_cli("estimate", "--model", "llama3-70b", "--cluster", "dgx-h100", "--global-batch",
            "64", "--seq-len", "8192", "--dp", "8", "-o", str(big))
    code, _, err = run_cli("emit", str(big), "--to", "megatron", "-o", str(tmp_path / "y"))
    assert code == 1 and "does not fit" in err
    assert not (tmp_path / "y").exists()


def test_cli_hosts_from_a_list_or_a_file(run_cli: Callable[..., tuple[int, str, str]],
                                         tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    run_cli("estimate", "--model", "llama3-8b", "--cluster", "selene", "--global-batch", "64",
            "--seq-len", "4096", "--tp", "8", "--dp", "2", "--zero", "1", "-o", str(plan))
    listed = ",".join(f"gpu{i:02d}.cluster.local" for i in range(40))  # longer than a path
    code, _, err = run_cli("emit", str(plan), "--to", "megatron", "-o", str(tmp_path / "a"),
                           "--hosts", listed)
    assert code == 0, err
    assert (tmp_path / "a" / "hostfile").read_text() == (
        "gpu00.cluster.local slots=8\ngpu01.cluster.local slots=8\n")
    hosts = tmp_path / "hosts.txt"
    hosts.write_text("# rack 1\nn1\nn2 slots=8\n")
    code, _, err = run_cli("emit", str(plan), "--to", "deepspeed", "-o", str(tmp_path / "b"),
                           "--hosts", str(hosts))
    assert code == 2 and "estimated for megatron" in err  # the plan is Megatron's
    code, _, err = run_cli("emit", str(plan), "--to", "slurm", "-o", str(tmp_path / "b"),
                           "--hosts", str(hosts))
    assert code == 0, err
    assert "#SBATCH --nodelist=n1,n2" in (tmp_path / "b" / "launch_slurm.sbatch").read_text()
    code, _, err = run_cli("emit", str(plan), "--to", "megatron", "-o", str(tmp_path / "c"),
                           "--hosts", str(tmp_path / "missing" / "hosts"))
    assert code == 2 and "no such file" in err


def _stub(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(0o755)


@pytest.mark.parametrize("with_hosts", [False, True])
def test_slurm_script_gives_each_node_its_rank(tmp_path: Path, with_hosts: bool) -> None:
    """launch_slurm.sbatch under a fake srun (one task, the allocation's second node) and
    scontrol: the node rank comes from the hostfile when there is one, else SLURM_NODEID."""
    cluster = load_cluster("selene")
    plan = plan_of(LLAMA70, cluster="selene", tp=8, pp=2, global_batch=64, seq_len=4096,
                   sequence_parallel=True)
    out = tmp_path / "launch"
    hosts = ("n7", os.uname().nodename.split(".")[0]) if with_hosts else None
    write_emitted(emit(plan, cluster, "slurm", hosts), out, force=False)
    env = {**os.environ, **stub_torchrun(tmp_path), "MEGATRON_LM": "/m", "TRAIN_ARGS": "-x",
           "SLURM_JOB_NODELIST": "n[0-1]", "SLURM_SUBMIT_DIR": str(out)}
    env.pop("NODE_RANK", None)
    env.pop("MASTER_ADDR", None)
    bin_dir = tmp_path / "bin"
    # a large allocation's host list: a reader that stops at the first line (head -n 1)
    # would kill scontrol with SIGPIPE, which `set -o pipefail` turns into a failed launch
    _stub(bin_dir, "scontrol", 'printf "n0\\nn1\\n"; seq -f "n%g" 2 200000\n')
    _stub(bin_dir, "srun", 'shift; SLURM_NODEID=1 exec "$@"\n')  # drop --kill-on-bad-exit
    done = subprocess.run(["bash", str(out / "launch_slurm.sbatch")], env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    argv = json.loads(Path(env["STUB_OUT"]).read_text())["argv"]
    assert argv[4:8] == ["--node-rank", "1", "--master-addr", "n7" if with_hosts else "n0"]


@pytest.mark.parametrize(("framework", "target", "model", "tp", "pp", "dp"), [
    ("megatron", "megatron", "llama3-8b", "2", "1", "8"),
    ("torchtitan", "torchtitan", "llama3-8b", "2", "1", "8"),
    ("torchtitan", "torchtitan", "llama3-70b", "8", "4", "2"),
    ("deepspeed", "deepspeed", "llama2-7b", "1", "1", "8")])
def test_searched_plans_can_be_emitted(run_cli: Callable[..., tuple[int, str, str]],
                                       tmp_path: Path, framework: str, target: str,
                                       model: str, tp: str, pp: str, dp: str) -> None:
    """What `search --framework F -o` writes, `emit --to F` can launch: the search keeps to
    what each executor runs (stock layouts, ZeRO stages it has, data parallelism only for
    plain DeepSpeed)."""
    plan = tmp_path / "plan.yaml"
    code, _, err = run_cli("search", "--model", model, "--cluster", "selene", "--global-batch",
                           "128", "--seq-len", "4096", "--tp", tp, "--pp", pp, "--cp", "1",
                           "--dp", dp, "--framework", framework, "-o", str(plan))
    assert code == 0, err
    # where the layer split came from, as search --format json says it: null = the strategy's
    solver = yaml.safe_load(plan.read_text())["search"]["layout_solver"]
    assert solver is None or solver == "min-max DP" or solver.startswith("CP-SAT")
    code, _, err = run_cli("emit", str(plan), "--to", target, "-o", str(tmp_path / "out"))
    assert code == 0, err


def test_deepspeed_search_is_data_parallel() -> None:
    spec = SearchSpec(world_size=32, global_batch=256, seq_len=4096,
                      framework=Framework.DEEPSPEED)
    families = list(degree_families(BUILTIN_MODELS["llama3-8b"], spec))
    assert families and {(f.tp, f.pp, f.cp, f.ep) for f in families} == {(1, 1, 1, 1)}
    fixed = SearchSpec(world_size=32, global_batch=256, seq_len=4096, tp=2,
                       framework=Framework.DEEPSPEED)
    assert {f.tp for f in degree_families(BUILTIN_MODELS["llama3-8b"], fixed)} == {2}


def test_every_torchtitan_family_the_search_makes_can_be_emitted() -> None:
    """The search offers torchtitan only interleaving degrees it can split the layers into."""
    model = BUILTIN_MODELS["llama3-70b"]
    spec = SearchSpec(world_size=64, global_batch=128, seq_len=4096, tp=8, pp=4,
                      framework=Framework.TORCHTITAN)
    families = list(degree_families(model, spec))
    assert len({f.vpp for f in families}) > 2  # beyond Interleaved1F1B's default of 2
    for family in families:
        cfg = ParallelConfig(tp=family.tp, pp=family.pp, dp=family.dp, vpp=family.vpp,
                             global_batch=128, seq_len=4096, sequence_parallel=True,
                             vocab_strategy=family.vocab_strategy,
                             framework=Framework.TORCHTITAN)
        assert torchtitan_args(model, cfg)[-1].startswith("activation-checkpoint:")


def test_launches_say_which_attention_the_plan_priced() -> None:
    """torchtitan 0.3.0 attends through FlexAttention, not SDPA: every torchtitan launch says
    what the plan priced instead, once. DeepSpeed's models run SDPA, which picks its kernel
    itself: a plan priced with FA2 says so; the default adds nothing. Megatron pins the
    kernel with a flag instead."""
    cluster = load_cluster("dgx-h100")
    for kernel in (AttentionKernel.FA2, AttentionKernel.AUTO):
        plan = plan_of(LLAMA70, cluster="dgx-h100", tp=8, dp=2, zero=3, global_batch=8,
                       seq_len=8192, sequence_parallel=True, framework=Framework.TORCHTITAN,
                       attention_kernel=kernel)
        notes = emit(plan, cluster, "torchtitan", None).notes
        priced = ("at FlashAttention-2's rates" if kernel is AttentionKernel.AUTO
                  else f"attention_kernel {kernel.value}")
        assert sum("FlexAttention" in n and priced in n for n in notes) == 1
        assert sum("over whole causal sequences" in n and "document_tokens" in n
                   for n in notes) == 1
        assert not any("priced as" in n for n in notes)
    plan = plan_of(LLAMA70, cluster="dgx-h100", tp=8, dp=2, zero=3, global_batch=8,
                   seq_len=8192, sequence_parallel=True, framework=Framework.TORCHTITAN,
                   document_tokens=1200)
    notes = emit(plan, cluster, "torchtitan", None).notes
    assert sum("over documents of 1200 tokens" in n for n in notes) == 1
    assert not any("whole causal" in n for n in notes)
    for kernel, expected in ((AttentionKernel.FA2, 1), (AttentionKernel.AUTO, 0)):
        plan = plan_of(LLAMA8B, cluster="dgx-h100", dp=16, zero=3, global_batch=16,
                       seq_len=4096, framework=Framework.DEEPSPEED, attention_kernel=kernel)
        notes = emit(plan, cluster, "deepspeed", None).notes
        assert sum("priced as fa2" in n for n in notes) == expected
    plan = plan_of(LLAMA70, cluster="dgx-h100", tp=8, dp=2, zero=1, global_batch=8,
                   seq_len=8192, sequence_parallel=True, attention_kernel=AttentionKernel.FA2)
    emitted = emit(plan, cluster, "megatron", None)
    assert "--attention-backend flash" in dict(emitted.files)["megatron.args"]
    assert not any("priced as" in n for n in emitted.notes)


def test_torchtitan_launches_say_when_the_plan_priced_an_older_release() -> None:
    """torchtitan 0.3.0 compiles the loss and runs PyTorch's fused RMSNorm where the PyTorch
    has it: a plan priced for a release that compiled the model only, or for eager RMSNorm op
    by op, says so in the launch notes (each errs toward more memory, not less)."""
    cluster = load_cluster("dgx-h100")
    base = dict(cluster="dgx-h100", tp=8, dp=2, zero=3, global_batch=8, seq_len=8192,
                sequence_parallel=True, framework=Framework.TORCHTITAN)
    current = emit(plan_of(LLAMA70, **base), cluster, "torchtitan", None).notes
    assert not any("compiles the loss" in n or "op by op" in n for n in current)
    older = emit(plan_of(LLAMA70, compiled_loss=False, **base), cluster, "torchtitan",
                 None).notes
    assert sum("compiles the loss" in n for n in older) == 1
    eager = emit(plan_of(LLAMA70, eager=True, fused_rms_norm=False, **base), cluster,
                 "torchtitan", None).notes
    assert sum("RMSNorm op by op" in n for n in eager) == 1
    assert not any("enable_gqa" in n for n in current)
    repeating = emit(plan_of(LLAMA70, legacy_attention=True, **base), cluster, "torchtitan",
                     None).notes
    assert sum("enable_gqa" in n for n in repeating) == 1


def test_fp8_launches_with_moe_act_or_layernorm_recompute_use_tensorwise_scaling() -> None:
    """Megatron refuses moe_act and layernorm recompute under fp8's default delayed scaling:
    the launch then asks for tensor-wise current scaling (the recipe the planner prices)."""
    from planner.parallel import Precision
    model = BUILTIN_MODELS["qwen3-30b-a3b"]
    cfg = ParallelConfig(dp=8, ep=8, etp=1, global_batch=64, seq_len=4096, zero=1,
                         precision=Precision.FP8, recompute=Recompute.SELECTIVE,
                         recompute_modules=("core_attn", "moe_act"))
    args = " ".join(megatron_args(model, cfg))
    assert "--fp8-recipe tensorwise" in args and "--recompute-modules core_attn moe_act" in args
    plain = " ".join(megatron_args(model, ParallelConfig(
        dp=8, ep=8, etp=1, global_batch=64, seq_len=4096, zero=1, precision=Precision.FP8,
        recompute=Recompute.SELECTIVE)))
    assert "--fp8-recipe" not in plain and "--recompute-modules" not in plain
