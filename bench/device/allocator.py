"""Measure PyTorch's caching-allocator fragmentation in training steps, with and without
expandable segments, to check memory.FRAGMENTATION_FRAC (12%, taken from a 2020 PyTorch issue
that predates expandable segments). Run on the GPU machine, one process per allocator setting
(PYTORCH_CUDA_ALLOC_CONF is read when CUDA initialises):

    python3 bench/device/allocator.py -o alloc-default.json
    PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True \\
        python3 bench/device/allocator.py -o alloc-expandable.json

Each configuration trains a stack of kernels.Layer (eager pre-norm transformer layers, bf16
weights and AdamW state) for a few steps with gradient accumulation over micro-batches, and
records, after warm-up: the model states allocated between steps, the peak allocated, and the
peak reserved (torch.cuda.max_memory_allocated / max_memory_reserved). The planner's
fragmentation is (peak reserved - peak allocated) / (peak allocated - model states): the
share of the memory allocated and freed every step (activations, transients) that the
allocator holds beyond it. `--quick` runs a tiny stack on the CPU to check the script runs
(no memory statistics there).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import torch
from kernels import BF16, CUDA, DEV, Layer


def train(layers: int, h: int, heads: int, kv_heads: int, ffn: int, seq: int, mbs: int,
          microbatches: int, steps: int) -> dict[str, Any]:
    """Train a fresh stack and report its memory (bytes; zeros on the CPU)."""
    model = torch.nn.Sequential(*(Layer(h, heads, kv_heads, ffn, gated=True, rms=True)
                                  for _ in range(layers))).to(DEV, BF16)
    # AdamW's moments in the weights' bf16: the model states only offset the measurement,
    # the fragmentation comes from what is allocated and freed every step
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    states = peak_allocated = peak_reserved = 0
    for step in range(steps):
        if CUDA and step == 1:  # the first step allocates the optimizer's buffers
            torch.cuda.synchronize()
            states = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        for _ in range(microbatches):
            x = torch.randn(mbs, seq, h, device=DEV, dtype=BF16, requires_grad=True)
            model(x).float().pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if CUDA:
        torch.cuda.synchronize()
        peak_allocated = torch.cuda.max_memory_allocated()
        peak_reserved = torch.cuda.max_memory_reserved()
    churn = max(1, peak_allocated - states)
    return {"layers": layers, "h": h, "heads": heads, "kv_heads": kv_heads, "ffn": ffn,
            "seq": seq, "mbs": mbs, "microbatches": microbatches, "steps": steps,
            "states_bytes": states, "peak_allocated_bytes": peak_allocated,
            "peak_reserved_bytes": peak_reserved,
            "fragmentation_of_churn": (peak_reserved - peak_allocated) / churn if CUDA else None}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--quick", action="store_true", help="a tiny CPU dry run")
    args = parser.parse_args()
    # (layers, h, heads, kv heads, ffn, seq, micro-batch, micro-batches): a Llama-3-8B-wide
    # stack at two sequence lengths and a narrower one with more micro-batches
    shapes = [(8, 4096, 32, 8, 14336, 4096, 1, 4), (8, 4096, 32, 8, 14336, 8192, 1, 2),
              (16, 2048, 16, 16, 8192, 4096, 2, 4)]
    if args.quick:
        shapes = [(2, 64, 4, 2, 128, 32, 1, 2)]
    results: dict[str, Any] = {"torch": torch.__version__,
                               "alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF", ""),
                               "runs": []}
    if CUDA:
        results["gpu"] = torch.cuda.get_device_name(0)
    for shape in shapes:
        entry = train(*shape, steps=2 if args.quick else 4)
        results["runs"].append(entry)
        print(entry, flush=True)
        args.output.write_text(json.dumps(results, indent=1))
        if CUDA:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()


if __name__ == "__main__":
    main()
