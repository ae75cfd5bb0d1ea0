"""Time Megatron-Core's own GPT model (the "local" layer spec the Megatron functional tests'
toy models run, no Transformer Engine) forward and backward on one GPU, with 1 and with N
layers, to measure the host (Python, autograd, kernel launch) time per layer pass next to the
GPU's busy time. Needs PyTorch and megatron-core on PYTHONPATH.

    PYTHONPATH=mcore python3 bench/device/megatron_host.py -o megatron_host.json
    PYTHONPATH=mcore python3 bench/device/megatron_host.py --deterministic -o det.json

--deterministic runs as Megatron's --deterministic-mode does (megatron/training/arguments.py,
initialize.py): torch.use_deterministic_algorithms(True), which also fills every new
allocation (torch.utils.deterministic.fill_uninitialized_memory), CUBLAS_WORKSPACE_CONFIG
:4096:8, and the TransformerConfig's deterministic_mode. Megatron's functional tests that set
NCCL_ALGO run this way; the host floor the planner prices was measured without it.

Each configuration: median wall time of synchronised forward+backward iterations (and of
forward alone) after warm-up, and the summed kernel time of one iteration (torch.profiler).

--mla times the h 512 dense shapes with Megatron-Core's multi-latent attention (the dimensions
of Megatron's gpt3_mcore_te_tp2_pp2_mla test): the planner's MLA host factor
(cost/kernels.py HOST_MLA_FACTOR) was counted on the CPU (bench/op_counts.py), not timed.

--dispatcher, --router and --topk set the MoE layers' token dispatcher, load balancing and
experts per token (the local-spec MoE tests run sinkhorn top-1 with the all-gather
dispatcher). bench/device/derive.py pairs results/megatron-host-det-NAME.json with the plain
run results/megatron-host-NAME.json of the same machine: save a deterministic run under that
name beside its plain partner, run minutes apart on one machine, so the two differ by the
mode alone (hosts differ by up to 1.7x between machines).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import typing
from pathlib import Path
from typing import Any

import torch

if not hasattr(typing, "override"):  # megatron-core 0.19 uses typing.override (Python 3.12)
    import typing_extensions
    typing.override = typing_extensions.override  # type: ignore[attr-defined]

CUDA = torch.cuda.is_available()


def _setup(port: int = 29511) -> None:
    if not CUDA:  # Megatron-Core's attention takes its score buffer on the current CUDA device
        torch.cuda.current_device = lambda: "cpu"  # type: ignore[assignment]
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(port))
    torch.distributed.init_process_group("nccl" if CUDA else "gloo", world_size=1, rank=0)
    from megatron.core import parallel_state
    parallel_state.initialize_model_parallel(1, 1)
    if CUDA:
        from megatron.core.tensor_parallel.random import model_parallel_cuda_manual_seed
        model_parallel_cuda_manual_seed(1234)
    else:  # dropout's RNG fork swaps CUDA generator states: there are none
        import contextlib

        from megatron.core.tensor_parallel import random
        random.get_cuda_rng_tracker()
        random.CudaRNGStatesTracker.fork = (  # type: ignore[method-assign]
            lambda self, name="model-parallel-rng": contextlib.nullcontext())


def _same_width_attention() -> type:
    """Megatron-Core's local attention accepting MLA's k/v channel arguments: it takes one
    head width for q, k and v, so the MLA layers here give v the q/k width."""
    from megatron.core.transformer.dot_product_attention import DotProductAttention

    class SameWidthAttention(DotProductAttention):
        def __init__(self, *args: Any, k_channels: int | None = None,
                     v_channels: int | None = None, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)

    return SameWidthAttention


DETERMINISTIC = False  # set by --deterministic before CUDA is initialised
DISPATCHER = "alltoall"  # --dispatcher: Megatron's MoE token dispatcher for the MoE layers
ROUTER = "aux_loss"  # --router: the MoE router's load balancing (TransformerConfig's default)


def _model(layers: int, h: int, heads: int, ffn: int, seq: int, vocab: int,
           experts: int | None = None, topk: int = 2, mla: bool = False) -> Any:
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
    from megatron.core.models.gpt.gpt_model import GPTModel
    from megatron.core.transformer.transformer_config import (
        MLATransformerConfig,
        TransformerConfig,
    )
    moe: dict[str, Any] = {}
    if experts:  # Megatron's defaults: a sequential loop over the local experts, dropless
        moe = dict(num_moe_experts=experts, moe_router_topk=topk,
                   moe_token_dispatcher_type=DISPATCHER, moe_grouped_gemm=False,
                   moe_router_load_balancing_type=ROUTER,
                   bias_activation_fusion=False, add_bias_linear=False)  # as the MoE tests run
    common: dict[str, Any] = dict(
        num_layers=layers, hidden_size=h, num_attention_heads=heads, ffn_hidden_size=ffn,
        bf16=True, params_dtype=torch.bfloat16, pipeline_dtype=torch.bfloat16,
        use_cpu_initialization=not CUDA, hidden_dropout=0.1, attention_dropout=0.1,
        bias_activation_fusion=True,
        masked_softmax_fusion=False,  # the fused softmax needs apex / TE
        bias_dropout_fusion=True, gradient_accumulation_fusion=False,
        deterministic_mode=DETERMINISTIC)
    common.update(moe)  # the MoE tests' settings win (no bias, no fused bias activation)
    spec = get_gpt_layer_local_spec(num_experts=experts, moe_grouped_gemm=False,
                                    multi_latent_attention=mla)
    if mla:  # gpt3_mcore_te_tp2_pp2_mla's attention at h 512, 8 heads (v at the q/k width)
        config: Any = MLATransformerConfig(
            q_lora_rank=192, kv_lora_rank=64, qk_head_dim=16, qk_pos_emb_head_dim=8,
            v_head_dim=24, kv_channels=24, normalization="LayerNorm", rope_type="rope",
            apply_rope_fusion=False, **common)
        spec.submodules.self_attention.submodules.core_attention = _same_width_attention()
    else:
        config = TransformerConfig(apply_query_key_layer_scaling=True, **common)
    model = GPTModel(config=config, transformer_layer_spec=spec,
                     vocab_size=vocab, max_sequence_length=seq,
                     position_embedding_type="rope" if mla else "learned_absolute",
                     share_embeddings_and_output_weights=True)
    # as megatron.training wraps a bf16 model: parameters and activations in bf16
    from megatron.core.transformer.module import Float16Module
    return Float16Module(config, model.to("cuda" if CUDA else "cpu"))


def _time(fn: Any, reps: int) -> float:
    samples = []
    for i in range(reps + 3):
        if CUDA:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if CUDA:
            torch.cuda.synchronize()
        if i >= 3:
            samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def measure(layers: int, h: int, heads: int, ffn: int, seq: int, mbs: int, vocab: int,
            reps: int, experts: int | None = None, topk: int = 2,
            mla: bool = False) -> dict[str, Any]:
    device = "cuda" if CUDA else "cpu"
    model = _model(layers, h, heads, ffn, seq, vocab, experts, topk, mla)
    tokens = torch.randint(0, vocab, (mbs, seq), device=device)
    positions = torch.arange(seq, device=device).unsqueeze(0).expand(mbs, seq)
    mask = torch.triu(torch.ones(1, 1, seq, seq, device=device, dtype=torch.bool), diagonal=1)

    def forward() -> Any:
        return model(tokens, positions, mask, labels=tokens)

    def step() -> None:
        forward().float().mean().backward()

    def forward_only() -> None:
        with torch.no_grad():
            forward()
    out: dict[str, Any] = {"layers": layers, "h": h, "heads": heads, "ffn": ffn, "seq": seq,
                           "mbs": mbs, "vocab": vocab, "experts": experts, "topk": topk,
                           "mla": mla}
    out["forward_backward_s"] = _time(step, reps)
    out["forward_s"] = _time(forward_only, reps)
    if CUDA:
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            step()
            torch.cuda.synchronize()
        kernels = [e for e in prof.events() if e.device_type.name == "CUDA"]
        out["kernels"] = len(kernels)
        out["kernel_busy_s"] = sum(e.device_time for e in kernels) / 1e6
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only-moe", action="store_true", help="only the MoE configurations")
    parser.add_argument("--deterministic", action="store_true",
                        help="as Megatron's --deterministic-mode runs (module docstring)")
    parser.add_argument("--dispatcher", choices=("alltoall", "allgather"), default="alltoall",
                        help="MoE token dispatcher (Megatron's default is allgather)")
    parser.add_argument("--router", choices=("aux_loss", "sinkhorn", "none"), default="aux_loss",
                        help="MoE router load balancing")
    parser.add_argument("--topk", type=int, default=2, help="experts per token")
    parser.add_argument("--mla", action="store_true",
                        help="the dense shapes with multi-latent attention instead")
    args = parser.parse_args()
    global DETERMINISTIC, DISPATCHER, ROUTER
    DISPATCHER, ROUTER = args.dispatcher, args.router
    if args.deterministic:
        DETERMINISTIC = True
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    _setup()
    results: dict[str, Any] = {"torch": torch.__version__, "runs": [],
                               "deterministic": args.deterministic,
                               "dispatcher": args.dispatcher, "router": args.router,
                               "topk": args.topk, "mla": args.mla}
    if args.deterministic:
        results["fill_uninitialized_memory"] = bool(
            torch.utils.deterministic.fill_uninitialized_memory)  # type: ignore[attr-defined]
    if CUDA:
        results["gpu"] = torch.cuda.get_device_name(0)
    cpu = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
           if line.startswith("model name")]
    results["cpu"] = {"model": cpu[0] if cpu else "unknown", "logical_cpus": len(cpu)}
    reps = 2 if args.quick else 20
    # (layers, h, heads, ffn, seq, micro-batch, experts): the dense pairs, then MoE layers
    shapes: list[tuple[int, int, int, int, int, int, int | None]] = [
        (1, 512, 8, 2048, 1024, 4, None), (12, 512, 8, 2048, 1024, 4, None),
        (1, 1024, 16, 4096, 1024, 4, None), (12, 1024, 16, 4096, 1024, 4, None),
        (1, 512, 8, 2048, 1024, 4, 8), (12, 512, 8, 2048, 1024, 4, 8),
        (1, 512, 8, 2048, 1024, 4, 2), (12, 512, 8, 2048, 1024, 4, 2)]
    if args.only_moe:
        shapes = [s for s in shapes if s[-1]]
    if args.mla:  # the MLA layer's dimensions are the h 512 test's
        shapes = [s for s in shapes if s[1] == 512 and not s[-1]]
    if args.quick:  # MLA's fixed widths need 8 heads
        shapes = [(1, 64, 8, 128, 64, 1, None), (3, 64, 8, 128, 64, 1, None)]
    for layers, h, heads, ffn, seq, mbs, experts in shapes:
        try:
            entry = measure(layers, h, heads, ffn, seq, mbs, 50304 if not args.quick else 512,
                            reps, experts, args.topk, args.mla)
        except RuntimeError as exc:  # an op deterministic mode refuses: recorded, not fatal
            entry = {"layers": layers, "h": h, "experts": experts, "error": str(exc)[:500]}
        results["runs"].append(entry)
        print(entry, flush=True)
        args.output.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
