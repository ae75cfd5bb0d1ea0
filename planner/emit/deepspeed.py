"""DeepSpeed's ds_config.json for a plan (deepspeed 0.19, `deepspeed/runtime/config.py`).

Plain DeepSpeed is ZeRO data parallelism: the plan must have tp = pp = cp = ep = 1 (tensor and
pipeline parallelism with DeepSpeed go through Megatron-DeepSpeed, which this target does not
write). Batch keys satisfy DeepSpeed's check train_batch_size = micro batch x gradient
accumulation x data-parallel size. DeepSpeed silently ignores misspelled top-level keys, so
the tests compare every value written with what DeepSpeedConfig parsed.
"""

from __future__ import annotations

import json
from typing import Any

from planner.errors import InputError
from planner.parallel import ParallelConfig, Precision, Recompute

DEEPSPEED_VERSION = "deepspeed 0.19.8"


def check_deepspeed(cfg: ParallelConfig) -> None:
    """InputError when plain DeepSpeed cannot run `cfg`."""
    other = [f"{name}={value}" for name, value in (("tp", cfg.tp), ("pp", cfg.pp),
                                                   ("cp", cfg.cp), ("ep", cfg.ep)) if value > 1]
    if other:
        raise InputError("the deepspeed target writes ZeRO data parallelism only; the plan has "
                         + ", ".join(other),
                         hint="emit --to megatron, or plan with --tp 1 --pp 1 --cp 1 --ep 1 "
                              "--framework deepspeed")
    if cfg.precision is Precision.FP8:
        raise InputError("precision fp8: ds_config.json has no FP8 training switch (FP8 GEMMs "
                         "come from Transformer Engine in the model code)",
                         hint="plan with --precision bf16")


def ds_config(cfg: ParallelConfig) -> dict[str, Any]:
    """The ds_config.json mapping. ZeRO stage = the plan's zero; overlap_comm follows
    overlap_grad_reduce (DeepSpeed overlaps the gradient reduction with backward)."""
    check_deepspeed(cfg)
    config: dict[str, Any] = {
        "train_batch_size": cfg.global_batch,
        "train_micro_batch_size_per_gpu": cfg.mbs,
        "gradient_accumulation_steps": cfg.num_microbatches,
        "bf16": {"enabled": cfg.precision is Precision.BF16},
        "zero_optimization": {"stage": cfg.zero, "overlap_comm": cfg.overlap_grad_reduce},
    }
    return config


def ds_config_text(cfg: ParallelConfig) -> str:
    return json.dumps(ds_config(cfg), indent=2) + "\n"


def deepspeed_notes(cfg: ParallelConfig) -> tuple[str, ...]:
    if cfg.recompute is not Recompute.NONE:
        return (f"recompute {cfg.recompute.value}: activation checkpointing is switched on in "
                "the training script (e.g. deepspeed.checkpointing or the model's "
                "gradient_checkpointing_enable()), not in ds_config.json",)
    return ()
