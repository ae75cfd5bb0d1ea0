"""Launch configurations for a plan: the files `planner emit` writes.

`emit()` is pure: plan + cluster + target -> file names and contents (byte-stable) plus notes on
what the launch leaves to the user. The file names are public contract (scripts consume them):
megatron.args, torchtitan.args, ds_config.json, env.sh, launch_torchrun.sh, launch_slurm.sbatch,
launch_deepspeed.sh, hostfile, README.md.

Targets: `megatron`, `torchtitan`, `deepspeed` write the framework's configuration with both
launchers; `torchrun` and `slurm` write the plan's framework's configuration with that launcher
only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from planner import __version__
from planner.emit.deepspeed import DEEPSPEED_VERSION, deepspeed_notes, ds_config_text
from planner.emit.launch import (
    TORCHRUN_VERSION,
    Placement,
    deepspeed_script,
    default_placement,
    env_script,
    hostfile,
    slurm_script,
    torchrun_script,
)
from planner.emit.megatron import (
    MEGATRON_VERSION,
    megatron_args,
    megatron_env,
    megatron_notes,
)
from planner.emit.torchtitan import TORCHTITAN_VERSION, torchtitan_args, torchtitan_notes
from planner.errors import InputError
from planner.hardware import Cluster
from planner.parallel import AttentionKernel, Framework, ParallelConfig
from planner.plan import Plan, content_hash
from planner.schema import refuse_overwrite

TARGETS = ("megatron", "torchtitan", "deepspeed", "torchrun", "slurm")
FRAMEWORK_OF_TARGET = {"megatron": Framework.MEGATRON, "torchtitan": Framework.TORCHTITAN,
                       "deepspeed": Framework.DEEPSPEED}


@dataclass(frozen=True, slots=True)
class Emitted:
    """Files to write, in order, and what the user must know about them."""

    files: tuple[tuple[str, str], ...]
    notes: tuple[str, ...]
    framework: Framework


def emit(plan: Plan, cluster: Cluster, target: str,
         hosts: tuple[str, ...] | None = None) -> Emitted:
    """The launch files realising `plan` on `cluster` for `target`."""
    if target not in TARGETS:
        raise InputError(f"--to {target}: expected one of " + ", ".join(TARGETS))
    cfg = plan.config
    framework = FRAMEWORK_OF_TARGET.get(target, cfg.framework)
    if framework is not cfg.framework:
        raise InputError(f"the plan was estimated for {cfg.framework.value}, whose memory "
                         f"behaviour differs from {framework.value}'s",
                         hint=f"re-plan with --framework {framework.value}, or emit "
                              f"--to {cfg.framework.value}")
    placement = default_placement(cluster, cfg.world_size, hosts)
    launchers = {"torchrun": ("torchrun",), "slurm": ("slurm",)}.get(
        target, ("torchrun", "slurm"))
    plan_id = content_hash(plan.to_dict())[:12]
    header = (f"{plan.model.name}: tp{cfg.tp} pp{cfg.pp} cp{cfg.cp} ep{cfg.ep} dp{cfg.dp}, "
              f"{cfg.world_size} GPUs; planner {__version__}, plan {plan_id}")
    gpu = cluster.gpu_types[0]
    files: list[tuple[str, str]] = []
    if framework is Framework.MEGATRON:
        args = megatron_args(plan.model, cfg)
        files.append(("megatron.args", "\n".join(args) + "\n"))
        env = megatron_env(cfg, gpu)
        notes = megatron_notes(plan.model)
        version = MEGATRON_VERSION
        entry = '"$MEGATRON_LM/pretrain_gpt.py"'
        args_file = "megatron.args"
        required: tuple[tuple[str, str], ...] = (
            ("MEGATRON_LM", "set MEGATRON_LM to a Megatron-LM checkout"),
            ("TRAIN_ARGS", "set TRAIN_ARGS: data, tokenizer and schedule flags (README.md)"))
    elif framework is Framework.TORCHTITAN:
        args = torchtitan_args(plan.model, cfg)
        files.append(("torchtitan.args", "\n".join(args) + "\n"))
        env, notes = (), torchtitan_notes(plan.model, cfg)
        version = TORCHTITAN_VERSION
        entry, args_file = "-m torchtitan.train", "torchtitan.args"
        required = ()
    else:
        files.append(("ds_config.json", ds_config_text(cfg)))
        env, notes = (), deepspeed_notes(cfg)
        version = DEEPSPEED_VERSION
        entry = '"$TRAIN_SCRIPT" --deepspeed --deepspeed_config "$here/ds_config.json"'
        args_file = ""
        required = (("TRAIN_SCRIPT", "set TRAIN_SCRIPT to your DeepSpeed training script"),)
    if framework is Framework.DEEPSPEED:
        notes += _sdpa_note(cfg)
    header = f"{header}; for {version}, {TORCHRUN_VERSION}"
    files.append(("env.sh", env_script(placement, env, header)))
    if "torchrun" in launchers or "slurm" in launchers:
        files.append(("launch_torchrun.sh",
                      torchrun_script(placement, entry, args_file, header, required)))
    if "slurm" in launchers:
        files.append(("launch_slurm.sbatch",
                      slurm_script(placement, f"{plan.model.name}-{framework.value}", header)))
    if placement.hosts:
        files.append(("hostfile", hostfile(placement)))
        if framework is Framework.DEEPSPEED and target == "deepspeed":
            files.append(("launch_deepspeed.sh", deepspeed_script(placement, header)))
    files.append(("README.md", _readme(plan, framework, placement, version, notes,
                                       [name for name, _ in files])))
    return Emitted(files=tuple(files), notes=notes, framework=framework)


def write_emitted(emitted: Emitted, directory: Path, *, force: bool) -> list[Path]:
    """Write the files into `directory`; existing files are replaced only with `force`
    (every file is checked before any is written)."""
    paths = [directory / name for name, _ in emitted.files]
    for path in paths:
        refuse_overwrite(path, force=force)
    directory.mkdir(parents=True, exist_ok=True)
    for path, (_, text) in zip(paths, emitted.files, strict=True):
        path.write_text(text, encoding="utf-8")
        if path.suffix in (".sh", ".sbatch"):
            path.chmod(0o755)
    return paths


def _sdpa_note(cfg: ParallelConfig) -> tuple[str, ...]:
    """PyTorch SDPA (DeepSpeed's models) picks its attention kernel itself; a plan priced with
    a pinned kernel holds only where PyTorch picks that one. (torchtitan 0.3.0 does not run
    SDPA: emit.torchtitan.torchtitan_notes.)"""
    if not cfg.flash_attention or cfg.attention_kernel is AttentionKernel.AUTO:
        return ()
    return (f"attention was priced as {cfg.attention_kernel.value}; PyTorch's SDPA picks its "
            "kernel itself (cuDNN on Hopper and later from PyTorch 2.11's wheels, "
            "FlashAttention-2 before), so the step time holds only where "
            "it picks that one",)


def _readme(plan: Plan, framework: Framework, placement: Placement, version: str,
            notes: tuple[str, ...], names: list[str]) -> str:
    cfg = plan.config
    lines = [f"# Launch for {plan.model.name} ({framework.value})", "",
             f"Planned by planner {__version__} for cluster `{plan.cluster_ref}`: "
             f"tp {cfg.tp}, pp {cfg.pp}, cp {cfg.cp}, ep {cfg.ep}, dp {cfg.dp}, vpp {cfg.vpp}, "
             f"micro-batch {cfg.mbs}, global batch {cfg.global_batch}, sequence {cfg.seq_len}, "
             f"recompute {cfg.recompute.value}, zero {cfg.zero}. Targets {version}.", "",
             f"{placement.num_nodes} node(s) x {placement.procs_per_node} GPUs; global rank r "
             f"runs on GPU r % {placement.procs_per_node} of node rank "
             f"r // {placement.procs_per_node} (the placement the plan's costs assume).", "",
             "## Files", ""]
    what = {
        "megatron.args": "Megatron-LM flags, one per line: `$(cat megatron.args)` (with `set -f`)",
        "torchtitan.args": "torchtitan flags, one per line; the last is the "
                           "activation-checkpoint subcommand",
        "ds_config.json": "DeepSpeed configuration (`--deepspeed_config ds_config.json`)",
        "env.sh": "environment every process needs (device order, framework variables)",
        "launch_torchrun.sh": "run on every node; static rendezvous, node rank fixed",
        "launch_slurm.sbatch": "`sbatch launch_slurm.sbatch`; one task per node runs "
                               "launch_torchrun.sh",
        "hostfile": "hosts in node-rank order (`host slots=N`)",
        "launch_deepspeed.sh": "DeepSpeed's own launcher on the hostfile; run once, on the "
                               "first host",
    }
    lines += [f"- `{name}`: {what[name]}" for name in names if name in what]
    lines += ["", "## Launch", ""]
    if framework is Framework.MEGATRON:
        lines += ["The plan fixes the model shape, parallelism, batch and precision. Data, "
                  "tokenizer, schedule length, learning rate and the model's remaining "
                  "hyperparameters (rotary base, norm epsilon, initialisation) are yours: put "
                  "them in `TRAIN_ARGS`. A smoke test with synthetic data:", "",
                  "```bash",
                  "export MEGATRON_LM=/path/to/Megatron-LM",
                  f'export TRAIN_ARGS="--mock-data --tokenizer-type NullTokenizer '
                  f'--vocab-size {plan.model.vocab_size} --train-iters 20"',
                  "bash launch_torchrun.sh        # on every node, or: sbatch "
                  "launch_slurm.sbatch", "```"]
    elif framework is Framework.TORCHTITAN:
        lines += ["The preset supplies data, tokenizer, optimizer and schedule; more "
                  "`--section.field` overrides go in `TRAIN_ARGS`.", "",
                  "```bash", "bash launch_torchrun.sh        # on every node, or: sbatch "
                  "launch_slurm.sbatch", "```"]
    else:
        lines += ["```bash", "export TRAIN_SCRIPT=/path/to/train.py   # calls "
                  "deepspeed.initialize(config=...)",
                  "bash launch_torchrun.sh        # on every node, or: sbatch "
                  "launch_slurm.sbatch", "```"]
    if not placement.hosts:
        lines += ["", "The cluster profile names no hosts: each node's rank comes from "
                  "`NODE_RANK` (or Slurm's node id) and the master from `MASTER_ADDR`; "
                  "`planner emit --hosts` writes a hostfile instead."]
    if notes:
        lines += ["", "## Not expressed by this launch", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"
