"""Search speed on the cases issue 4 names (a benchmark, not a test): run
`.venv/bin/python bench/search_speed.py [--only NAME]` and compare with README, Speed.

Targets on a 2-core CPU: GPT-3 175B on 1,024 A100 < 2 s; Llama 3 405B on 16,384 H100 and
DeepSeek-V3 on 2,048 H800 < 10 s each.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

from planner.catalog import BUILTIN_MODELS
from planner.hardware_io import cluster_from_dict, load_cluster
from planner.search.solver import search
from planner.search.space import SearchSpec

# DeepSeek-V3 report (arXiv 2412.19437, Sec. 3.1): H800 nodes of 8 GPUs, NVLink ~160 GB/s and
# InfiniBand ~50 GB/s achievable per GPU.
H800_CLUSTER = {"name": "h800-2048", "gpu": "h800-sxm5-80gb", "num_nodes": 256,
                "gpus_per_node": 8, "intra_node": {"bandwidth_GBps": 160, "latency_us": 3.4},
                "inter_node": {"bandwidth_GBps": 50, "latency_us": 14}}


def cases() -> dict[str, tuple[str, object, SearchSpec]]:
    selene = load_cluster("selene")
    a100 = dataclasses.replace(selene, nodes=selene.nodes[:128])
    return {
        "gpt3-175b-1024xa100": ("gpt3-175b", a100,
                                SearchSpec(world_size=1024, global_batch=1536, seq_len=2048)),
        "llama3-405b-16384xh100": ("llama3-405b", load_cluster("dgx-h100"),
                                   SearchSpec(world_size=16384, global_batch=2048,
                                              seq_len=8192)),
        "deepseek-v3-2048xh800": ("deepseek-v3", cluster_from_dict(H800_CLUSTER, "bench"),
                                  SearchSpec(world_size=2048, global_batch=4096,
                                             seq_len=4096)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", help="run one case")
    args = parser.parse_args()
    for name, (model, cluster, spec) in cases().items():
        if args.only and name != args.only:
            continue
        started, cpu_started = time.perf_counter(), time.process_time()
        result = search(BUILTIN_MODELS[model], spec, cluster)  # type: ignore[arg-type]
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_started  # less disturbed by a busy (virtual) machine
        best = result.plans[0].config if result.plans else None
        layout = (f"tp{best.tp} pp{best.pp} dp{best.dp} cp{best.cp} ep{best.ep} vpp{best.vpp} "
                  f"mbs{best.mbs} {best.recompute.value}") if best else "nothing fits"
        print(f"{name:26s} {elapsed:7.1f} s ({cpu:.1f} s CPU)  "
              f"{result.candidates_evaluated:6d} evaluated  best: {layout}", flush=True)


if __name__ == "__main__":
    main()
