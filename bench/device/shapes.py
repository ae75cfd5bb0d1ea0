"""Write the GEMM and attention shapes the validation cases run (one GPU's share, forward and
both backward GEMMs) to a JSON file for bench/device/kernels.py to time on a real GPU.

    .venv/bin/python bench/device/shapes.py -o bench/device/shapes.json
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from planner.calibration import load_measurements, reproduce_case
from planner.catalog import BUILTIN_MODELS
from planner.cost.compute import head_gemm, layer_gemms
from planner.model import ModelSpec
from planner.parallel import ParallelConfig

# (catalog model, configuration): real-size layers not among the measured cases.
EXTRA = (
    ("gpt3-175b", dict(tp=8, pp=8, dp=1, mbs=1, global_batch=8, seq_len=2048,
                       sequence_parallel=True)),
    ("llama3-70b", dict(tp=8, pp=4, dp=1, mbs=1, global_batch=8, seq_len=8192,
                        sequence_parallel=True)),
    ("llama3-70b", dict(tp=4, pp=8, dp=1, mbs=1, global_batch=8, seq_len=8192,
                        sequence_parallel=True)),
    ("llama3-405b", dict(tp=8, pp=16, dp=1, mbs=1, global_batch=16, seq_len=8192,
                         sequence_parallel=True)),
    ("mixtral-8x7b", dict(tp=2, pp=1, ep=8, dp=8, mbs=1, global_batch=8, seq_len=4096,
                          sequence_parallel=True)),
)


def _case_shapes(model: ModelSpec, cfg: ParallelConfig) -> tuple[set, set]:
    gemms: set[tuple[int, int, int, int, str]] = set()
    kinds = {model.is_moe_layer(i): i for i in range(model.num_layers)}
    for layer in kinds.values():
        for g in (*layer_gemms(model, cfg, layer), head_gemm(model, cfg)):
            for x in (g, *g.backward()):
                gemms.add((math.ceil(x.m), math.ceil(x.n), math.ceil(x.k), math.ceil(x.batch),
                           cfg.precision.value))
    if model.mla is not None:
        d_qk, d_v = model.mla.qk_head_dim, model.mla.v_head_dim
    else:
        d_qk = d_v = model.head_dim
    heads = model.num_attention_heads // cfg.tp
    attention = {(cfg.mbs, heads, cfg.seq_len // cfg.cp, cfg.seq_len, d_qk, d_v,
                  bool(cfg.flash_attention))}
    return gemms, attention


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()
    gemms: set = set()
    attention: set = set()
    cases = []
    for case in load_measurements()["cases"]:
        if "iter_time_s" not in (case.get("measured") or {}):
            continue
        reproduced = reproduce_case(case)
        if isinstance(reproduced, str):
            continue
        g, a = _case_shapes(*reproduced)
        gemms |= g
        attention |= a
        cases.append(case["id"])
    # Real-size layers outside the files, to see the model on large sharded shapes too.
    for name, kwargs in EXTRA:
        g, a = _case_shapes(BUILTIN_MODELS[name], ParallelConfig(**kwargs))
        gemms |= g
        attention |= a
    out = {"cases": cases,
           "gemms": sorted(gemms), "attention": sorted(attention)}
    args.output.write_text(json.dumps(out, indent=0))
    print(f"{len(cases)} cases, {len(gemms)} GEMM shapes, {len(attention)} attention shapes")


if __name__ == "__main__":
    main()
