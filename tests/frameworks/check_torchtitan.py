"""Runs torchtitan's own configuration checks on emitted arguments; executed by the
frameworks' environment (tests/frameworks/setup.sh), never imported by the planner.

stdin: {"cases": [{"argv": [...], "world_size": N}, ...]}
stdout: one JSON list, per case {"ok", "error", "parallel": {...}, "model": {...}}.

ConfigManager().parse_args() (tyro; unknown keys, bad values), ParallelDims.from_config() and
build_mesh() on a fake process group (degrees multiply to the world size, EP fits), the schedule
name, and the two checks torchtitan makes only inside Trainer.__init__ (launchers.md Sec. 2).
The preset's model shape is returned so the tests can compare it with the plan's.
"""

import contextlib
import io
import json
import logging

logging.disable(logging.WARNING)

import torch.distributed as dist  # noqa: E402
from protocol import serve  # noqa: E402  (tests/frameworks, beside this script)
from torch.distributed.pipelining.schedules import get_schedule_class  # noqa: E402
from torch.testing._internal.distributed.fake_pg import FakeStore  # noqa: E402
from torchtitan.config.manager import ConfigManager  # noqa: E402
from torchtitan.distributed.parallel_dims import ParallelDims  # noqa: E402


def _model_shape(cfg):
    model = cfg.model_spec.model
    layers = model.layers
    first = layers[0]
    out = {"num_layers": len(layers), "mtp_layers": len(getattr(model, "mtp_layers", None) or [])}
    for name in ("dim", "vocab_size"):
        if hasattr(model, name):
            out[name] = getattr(model, name)
    attn = getattr(first, "attention", None)
    for name in ("n_heads", "n_kv_heads", "head_dim"):
        if attn is not None and hasattr(attn, name):
            out[name] = getattr(attn, name)
    inner = getattr(attn, "inner_attention", None)
    if inner is not None:  # the attention kernel's config class (FlexAttention.Config, ...)
        out["inner_attention"] = type(inner).__qualname__
    return json.loads(json.dumps(out, default=str))


def check(case):
    world = case["world_size"]
    err = io.StringIO()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            cfg = ConfigManager().parse_args(case["argv"])
        p, t = cfg.parallelism, cfg.training
        dims = ParallelDims.from_config(p, world)
        if p.pipeline_parallel_degree > 1:
            get_schedule_class(p.pipeline_parallel_schedule)
        if dist.is_initialized():
            dist.destroy_process_group()
        dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=world)
        dims.build_mesh()
        dp = dims.dp_replicate * dims.dp_shard
        # Trainer.__init__ checks, mirrored
        assert t.global_batch_size % (t.local_batch_size * dp) == 0, (
            f"global batch {t.global_batch_size} not divisible by local batch "
            f"{t.local_batch_size} x dp {dp}")
        sp = p.tensor_parallel_degree if p.enable_sequence_parallel else 1
        cp = 2 * p.context_parallel_degree if p.context_parallel_degree > 1 else 1
        assert t.seq_len % (sp * cp) == 0, f"seq_len {t.seq_len} not divisible by {sp * cp}"
        if p.pipeline_parallel_degree > 1:
            assert t.local_batch_size % p.pipeline_parallel_microbatch_size == 0
    except SystemExit as exc:
        return {"ok": False, "error": f"SystemExit({exc.code}): {err.getvalue()[-800:]}"}
    except Exception as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    return {"ok": True, "error": "",
            "parallel": {"dp_replicate": dims.dp_replicate, "dp_shard": dims.dp_shard,
                         "tp": dims.tp, "cp": dims.cp, "pp": dims.pp, "ep": dims.ep,
                         "sp": bool(p.enable_sequence_parallel),
                         "schedule": p.pipeline_parallel_schedule,
                         "microbatch": p.pipeline_parallel_microbatch_size,
                         "local_batch": t.local_batch_size, "global_batch": t.global_batch_size,
                         "seq_len": t.seq_len,
                         "ac": type(cfg.activation_checkpoint).__qualname__,
                         "compile": bool(cfg.compile.enable),
                         "async_tp": bool(cfg.compile.enable_async_tensor_parallel)},
            "model": _model_shape(cfg)}


if __name__ == "__main__":
    serve(check)
