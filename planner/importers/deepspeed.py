"""An existing DeepSpeed ds_config.json as a configuration, for `planner estimate/check --from
deepspeed` (the model is given with --model: a DeepSpeed config does not describe one).

Batch rules as DeepSpeedConfig applies them (deepspeed/runtime/config.py,
_configure_train_batch_size): any two of train_batch_size, train_micro_batch_size_per_gpu and
gradient_accumulation_steps determine the third over the data-parallel size. DeepSpeed ignores
unknown top-level keys; here they are reported, with the closest known key.
"""

from __future__ import annotations

import difflib
from typing import Any

from planner.errors import InputError
from planner.importers.imported import ImportedLaunch
from planner.model import ModelSpec
from planner.parallel import Framework, ParallelConfig, Precision, Recompute

# DeepSpeed's documented top-level keys (deepspeed.ai/docs/config-json) that do not change
# memory or time as the planner models them.
KNOWN_IGNORED = (
    "optimizer", "scheduler", "gradient_clipping", "steps_per_print", "wall_clock_breakdown",
    "flops_profiler", "tensorboard", "wandb", "csv_monitor", "comms_logger",
    "communication_data_type", "prescale_gradients", "gradient_predivide_factor",
    "sparse_gradients", "zero_allow_untested_optimizer", "zero_force_ds_cpu_optimizer",
    "dump_state", "memory_breakdown", "checkpoint", "load_universal_checkpoint",
    "data_types", "aio", "elasticity", "autotuning", "compression_training",
    "data_efficiency", "curriculum_learning", "progressive_layer_drop", "eigenvalue",
    "quantize_training", "weight_quantization", "nebula", "use_node_local_storage",
    "hybrid_engine", "compile", "torch_autocast", "seq_parallel_communication_data_type",
    "amp", "pipeline", "tensor_parallel", "disable_allgather", "dataloader_drop_last",
)
MAPPED = ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
          "zero_optimization", "bf16", "bfloat16", "fp16", "activation_checkpointing")


def import_deepspeed(data: Any, source: str, dp: int, model: ModelSpec,
                     seq_len: int) -> ImportedLaunch:
    """`dp` is the world size (plain DeepSpeed is data parallel only)."""
    if not isinstance(data, dict):
        raise InputError(f"{source}: expected a JSON object (ds_config.json)")
    unknown, ignored, notes = [], [], []
    for key in data:
        if key in MAPPED:
            continue
        if key in KNOWN_IGNORED:
            ignored.append(key)
            continue
        close = difflib.get_close_matches(key, MAPPED + KNOWN_IGNORED, n=1)
        unknown.append(f"{key} (did you mean {close[0]}?)" if close else key)

    def num(key: str) -> int | None:
        value = data.get(key)
        if value is None or value == "auto":
            return None
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InputError(f"{source}: {key}: expected an integer >= 1, got {value!r}")
        return value

    batch, micro, accum = (num("train_batch_size"), num("train_micro_batch_size_per_gpu"),
                           num("gradient_accumulation_steps"))
    if batch is None and micro is None:
        auto = [k for k in ("train_batch_size", "train_micro_batch_size_per_gpu")
                if data.get(k) == "auto"]
        raise InputError(f"{source}: needs train_batch_size or train_micro_batch_size_per_gpu"
                         + (f" as numbers ({', '.join(auto)}: \"auto\" is filled in by the "
                            "Hugging Face Trainer at launch)" if auto else ""),
                         hint="write the values the launch will use")
    if micro is None:
        assert batch is not None
        micro = batch // (dp * (accum or 1))
    accum = accum or (batch // (micro * dp) if batch else 1)
    batch = batch or micro * accum * dp
    if batch != micro * accum * dp:
        raise InputError(f"{source}: train_batch_size {batch} != micro batch {micro} x "
                         f"gradient accumulation {accum} x data parallel {dp} (DeepSpeed "
                         "rejects this too)")
    zero_section = data.get("zero_optimization") or {}
    stage = zero_section.get("stage", 0) if isinstance(zero_section, dict) else 0
    if stage not in (0, 1, 2, 3):
        raise InputError(f"{source}: zero_optimization.stage {stage!r}: expected 0, 1, 2 or 3")
    if isinstance(zero_section, dict) and (zero_section.get("offload_optimizer")
                                           or zero_section.get("offload_param")):
        notes.append("CPU/NVMe offload is not modelled: device memory is over-estimated")

    def enabled(key: str) -> bool:
        section = data.get(key)
        return isinstance(section, dict) and section.get("enabled") in (True, "auto")

    precision = (Precision.BF16 if enabled("bf16") or enabled("bfloat16") or enabled("fp16")
                 else Precision.FP32)
    recompute = Recompute.NONE
    if "activation_checkpointing" in data:
        notes.append("activation_checkpointing configures DeepSpeed's checkpointing API; "
                     "whether the model uses it is up to the training script: modelled as "
                     "no recompute (the most memory)")
    config = ParallelConfig(dp=dp, mbs=micro, global_batch=batch, seq_len=seq_len,
                            zero=stage, precision=precision, recompute=recompute,
                            framework=Framework.DEEPSPEED,
                            overlap_grad_reduce=bool(isinstance(zero_section, dict)
                                                     and zero_section.get("overlap_comm")))
    return ImportedLaunch(model=model, config=config, world_size=None, unknown=tuple(unknown),
                          ignored=tuple(ignored), notes=tuple(notes))
