"""An existing torchtitan 0.3.0 launch (arguments file or launch script) as a model and a
configuration, for `planner estimate/check --from torchtitan`.

Field names: torchtitan 0.3.0 `torchtitan/config` (ParallelismConfig, TrainingConfig; tyro
accepts dashes or underscores). The model comes from the `--module/--config` preset when the
planner knows its shape (planner.emit.torchtitan.PRESETS), else from --model.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from planner.catalog import BUILTIN_MODELS
from planner.emit.torchtitan import PRESETS
from planner.errors import InputError
from planner.importers.imported import ImportedLaunch, launcher_world
from planner.importers.shell import script_words
from planner.model import ModelSpec
from planner.parallel import Framework, ParallelConfig, Recompute, VocabStrategy

_MAPPED = {
    "parallelism.data_parallel_replicate_degree", "parallelism.data_parallel_shard_degree",
    "parallelism.tensor_parallel_degree", "parallelism.context_parallel_degree",
    "parallelism.pipeline_parallel_degree", "parallelism.expert_parallel_degree",
    "parallelism.pipeline_parallel_schedule", "parallelism.pipeline_parallel_layers_per_stage",
    "parallelism.pipeline_parallel_microbatch_size",
    "parallelism.pipeline_parallel_first_stage_less_layers",
    "parallelism.pipeline_parallel_last_stage_less_layers",
    "parallelism.fsdp_reshard_after_forward", "training.local_batch_size",
    "training.global_batch_size", "training.seq_len", "module", "config",
}
_SUBCOMMAND = re.compile(r"activation[-_]checkpoint:")  # tyro's subcommand, ends the options
_SWITCHES = {"parallelism.enable_sequence_parallel": ("sp", True),
             "parallelism.no_enable_sequence_parallel": ("sp", False),
             "compile.enable": ("compile", True), "compile.no_enable": ("compile", False),
             "compile.enable_async_tensor_parallel": ("async_tp", True),
             "compile.no_enable_async_tensor_parallel": ("async_tp", False)}
_IGNORED_SECTIONS = ("job.", "metrics.", "checkpoint.", "profiler.", "optimizer.",
                     "lr_scheduler.", "dataloader.", "validator.", "comm.", "debug.",
                     "hf_assets_path", "dump_folder", "fault_tolerance.")
_IGNORED = {"training.steps", "training.disable_cuda_graphs", "training.max_norm",
            "training.gc_freq", "training.seed", "training.deterministic"}


def _words(text: str, read: Callable[[str], str | None]) -> tuple[list[str], int | None]:
    commands, _ = script_words(text, read)
    for words in commands:
        if "torchtitan.train" in words:
            at = words.index("torchtitan.train")
            return words[at + 1:], launcher_world(words[:at])
    return [w for words in commands for w in words], None


def import_torchtitan(text: str, source: str, dp: int | None, world_size: int | None,
                      model: ModelSpec | None,
                      read: Callable[[str], str | None] = lambda name: None) -> ImportedLaunch:
    words, launcher_world = _words(text, read)
    values: dict[str, str] = {}
    switches: dict[str, bool] = {}
    unknown: list[str] = []
    ignored: list[str] = []
    recompute: Recompute | None = None
    notes: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        if _SUBCOMMAND.match(word):
            mode = word.split(":", 1)[1]
            recompute = {"none": Recompute.NONE, "selective": Recompute.SELECTIVE,
                         "full": Recompute.FULL}.get(mode)
            if recompute is None:
                notes.append(f"{word}: modelled as full recompute")
                recompute = Recompute.FULL
            i += 1
            continue
        if not word.startswith("--"):
            unknown.append(word)
            i += 1
            continue
        key, eq, inline = word[2:].partition("=")
        key = key.replace("-", "_")
        if key in _SWITCHES:
            switch, on = _SWITCHES[key]
            switches[switch] = on
            i += 1
            continue
        takes_value = bool(eq) or (i + 1 < len(words) and not words[i + 1].startswith("--")
                                   and not _SUBCOMMAND.match(words[i + 1]))
        value = inline if eq else (words[i + 1] if takes_value else "")
        if key in _MAPPED:
            values[key] = value
        elif key in _IGNORED or key.startswith(_IGNORED_SECTIONS):
            ignored.append("--" + key)
        else:
            unknown.append("--" + key)
        i += 1 if eq or not takes_value else 2
    if model is None:
        preset = (values.get("module"), values.get("config"))
        name = next((n for n, p in PRESETS.items() if p == preset), None)
        if name is None:
            raise InputError(f"{source}: --module {preset[0]} --config {preset[1]}: the planner "
                             "does not know this preset's model", hint="give --model")
        model = BUILTIN_MODELS[name]

    def num(key: str, default: int | None = None) -> int:
        if key not in values:
            if default is None:
                raise InputError(f"{source}: --{key} missing; the preset's value is not known "
                                 "to the planner", hint=f"add --{key} to the arguments")
            return default
        try:
            return int(values[key])
        except ValueError:
            raise InputError(f"{source}: --{key} {values[key]!r}: expected an integer") from None

    tp = num("parallelism.tensor_parallel_degree", 1)
    cp = num("parallelism.context_parallel_degree", 1)
    pp = num("parallelism.pipeline_parallel_degree", 1)
    replicate = num("parallelism.data_parallel_replicate_degree", 1)
    shard = num("parallelism.data_parallel_shard_degree", -1)
    world = launcher_world or world_size
    if dp is None:
        if shard > 0:
            dp = replicate * shard
        elif world is not None:
            dp = world // (tp * cp * pp)
        else:
            raise InputError(f"{source}: data_parallel_shard_degree -1 and no world size",
                             hint="give --dp or --cluster")
    shard = dp // replicate if shard < 0 else shard
    schedule = values.get("parallelism.pipeline_parallel_schedule", "1F1B")
    less_first = num("parallelism.pipeline_parallel_first_stage_less_layers", 1)
    less_last = num("parallelism.pipeline_parallel_last_stage_less_layers", 1)
    vpp = 1
    if pp > 1 and schedule not in ("1F1B", "GPipe"):
        per_stage = values.get("parallelism.pipeline_parallel_layers_per_stage")
        effective = model.num_layers + less_first + less_last
        stages = -(-effective // int(per_stage)) if per_stage else 2 * pp
        vpp = stages // pp
    strategy = VocabStrategy.BASELINE
    if pp > 1 and (less_first, less_last) == (1, 1):
        strategy = VocabStrategy.REDISTRIBUTE
    elif pp > 1 and (less_first, less_last) != (0, 0):
        notes.append(f"first/last stage less layers {less_first}/{less_last}: modelled as "
                     "redistribute (one each)")
        strategy = VocabStrategy.REDISTRIBUTE
    local = num("training.local_batch_size")
    mbs = num("parallelism.pipeline_parallel_microbatch_size", 1) if pp > 1 else local
    global_batch = num("training.global_batch_size", -1)
    if global_batch < 0:
        global_batch = local * dp
    if recompute is None:
        notes.append("no activation-checkpoint subcommand: the preset's choice is unknown to "
                     "the planner; modelled as none (the most memory)")
        recompute = Recompute.NONE
    if {"--debug.deterministic", "--training.deterministic"} & set(ignored):
        notes.append("deterministic: not priced for torchtitan (it turns PyTorch's memory fill "
                     "off; its deterministic kernels were not measured)")
    zero = 0 if shard <= 1 else (
        2 if values.get("parallelism.fsdp_reshard_after_forward") == "never" else 3)
    config = ParallelConfig(
        tp=tp, pp=pp, cp=cp, dp=dp, ep=num("parallelism.expert_parallel_degree", 1), etp=1,
        vpp=vpp, mbs=mbs, global_batch=global_batch, seq_len=num("training.seq_len"),
        recompute=recompute, zero=zero, sequence_parallel=switches.get("sp", True) and tp > 1,
        vocab_strategy=strategy, framework=Framework.TORCHTITAN,
        tp_comm_overlap=switches.get("async_tp", False) and tp > 1,
        eager=not switches.get("compile", False))
    return ImportedLaunch(model=model, config=config, world_size=launcher_world,
                          unknown=tuple(unknown), ignored=tuple(ignored), notes=tuple(notes))
