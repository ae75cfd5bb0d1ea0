"""Runs Megatron-LM's own argument checks on emitted launches; executed by the frameworks'
environment (tests/frameworks/setup.sh), never imported by the planner.

stdin: {"cases": [{"argv": [...], "world_size": N, "env": {...}, "gpu_arch": [9, 0]}, ...]}
stdout: one JSON list, per case {"ok": bool, "error": str, "args": {dest: value, ...},
"layers": [decoder layers per virtual stage, model order]}.

Each case goes through parse_args() + validate_args() + core_transformer_config_from_args(),
then Megatron's initialize_model_parallel() on a fake process group (its world-size and
expert-grid checks live there), and get_num_layers_to_build() for every pipeline rank and
virtual stage, so the tests can compare Megatron's layer split with the plan's. The two CUDA
queries validate_args makes are answered with the target GPU's architecture, which is a
property of the planned cluster (launchers.md Sec. 1).
"""

import contextlib
import io
import json
import os
import sys
import traceback
import typing
import warnings

warnings.filterwarnings("ignore")
import typing_extensions  # noqa: E402

if not hasattr(typing, "override"):  # megatron-core >= 0.17 targets Python 3.12
    typing.override = typing_extensions.override

import megatron.training.arguments as A  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from megatron.core import parallel_state as ps  # noqa: E402
from protocol import serve  # noqa: E402  (tests/frameworks, beside this script)
from torch.testing._internal.distributed.fake_pg import FakeStore  # noqa: E402

KEEP = ("tensor_model_parallel_size", "pipeline_model_parallel_size", "context_parallel_size",
        "expert_model_parallel_size", "expert_tensor_parallel_size", "data_parallel_size",
        "virtual_pipeline_model_parallel_size", "micro_batch_size", "global_batch_size",
        "seq_length", "num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads",
        "num_query_groups", "kv_channels", "num_experts", "moe_router_topk",
        "moe_ffn_hidden_size", "moe_shared_expert_intermediate_size", "moe_layer_freq",
        "moe_grouped_gemm", "defer_embedding_wgrad_compute", "wgrad_deferral_limit",
        "num_distributed_optimizer_instances", "fp8_param_gather",
        "accumulate_allreduce_grads_in_fp32", "hidden_dropout", "attention_dropout",
        "deterministic_mode", "gradient_accumulation_fusion", "first_last_layers_bf16",
        "num_layers_at_start_in_bf16", "num_layers_at_end_in_bf16",
        "overlap_moe_expert_parallel_comm",
        "recompute_granularity", "recompute_method", "recompute_num_layers", "recompute_modules",
        "use_distributed_optimizer", "use_megatron_fsdp", "data_parallel_sharding_strategy",
        "sequence_parallel", "bf16", "fp8", "untie_embeddings_and_output_weights",
        "normalization", "swiglu", "squared_relu", "position_embedding_type", "add_bias_linear",
        "multi_latent_attention", "mtp_num_layers", "use_tp_pp_dp_mapping",
        "decoder_first_pipeline_num_layers", "decoder_last_pipeline_num_layers",
        "pipeline_model_parallel_layout", "padded_vocab_size", "vocab_size")


def check(case):
    arch = tuple(case.get("gpu_arch", (9, 0)))
    torch.cuda.get_device_capability = lambda *a, **k: arch  # read for --moe-grouped-gemm
    A.get_device_arch_version = lambda: arch[0]  # read when tp > 1 or cp > 1
    saved_argv, saved_env = sys.argv, dict(os.environ)
    os.environ.update({"WORLD_SIZE": str(case["world_size"]), "RANK": "0", **case.get("env", {})})
    sys.argv = ["pretrain_gpt.py", *case["argv"]]
    err = io.StringIO()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            args = A.parse_args()
            A.validate_args(args, {})
            # kernel fusions that need Transformer Engine, absent on a CPU machine; they
            # choose kernels, not the parallel layout (launchers.md Sec. 1, "one more trap")
            args.apply_rope_fusion = False
            args.moe_permute_fusion = False
            config = A.core_transformer_config_from_args(args)
            if dist.is_initialized():
                ps.destroy_model_parallel()
                dist.destroy_process_group()
            dist.init_process_group("fake", store=FakeStore(), rank=0,
                                    world_size=case["world_size"])
            ps.initialize_model_parallel(
                tensor_model_parallel_size=args.tensor_model_parallel_size,
                pipeline_model_parallel_size=args.pipeline_model_parallel_size,
                context_parallel_size=args.context_parallel_size,
                expert_model_parallel_size=args.expert_model_parallel_size,
                expert_tensor_parallel_size=args.expert_tensor_parallel_size,
                virtual_pipeline_model_parallel_size=args.virtual_pipeline_model_parallel_size,
                order="tp-cp-ep-pp-dp" if args.use_tp_pp_dp_mapping else "tp-cp-ep-dp-pp",
                create_gloo_process_groups=False)
            layers = _layers_per_virtual_stage(config, args)
    except SystemExit as exc:
        return {"ok": False, "error": f"SystemExit({exc.code}): {err.getvalue().strip()[-600:]}"}
    except Exception as exc:  # the framework's own rejection, reported as data
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                "trace": traceback.format_exc()[-1500:]}
    finally:
        sys.argv = saved_argv
        os.environ.clear()
        os.environ.update(saved_env)
        torch.use_deterministic_algorithms(False)  # --deterministic-mode turns it on
    out = {k: getattr(args, k, None) for k in KEEP}
    return {"ok": True, "error": "", "args": json.loads(json.dumps(out, default=str)),
            "layers": layers}


def _layers_per_virtual_stage(config, args):
    """Decoder layers Megatron builds on each virtual stage, in model order (virtual stage
    k = chunk k // pp of pipeline rank k % pp): get_num_layers_to_build, per rank and chunk."""
    from megatron.core.transformer.transformer_block import get_num_layers_to_build

    pp = args.pipeline_model_parallel_size
    vpp = args.virtual_pipeline_model_parallel_size or 1
    counts = []
    for chunk in range(vpp):
        for rank in range(pp):
            ps.set_pipeline_model_parallel_rank(rank)
            counts.append(get_num_layers_to_build(
                config, vp_stage=chunk if vpp > 1 else None, pp_rank=rank))
    ps.set_pipeline_model_parallel_rank(0)
    return counts


if __name__ == "__main__":
    serve(check)
