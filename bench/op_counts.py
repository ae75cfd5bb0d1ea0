"""Count the PyTorch operators one Megatron-Core layer dispatches per micro-batch, forward and
backward, on the CPU: a proxy for its host time, to compare layer kinds the GPU machines did
not time (a benchmark, not a test; it needs PyTorch and megatron-core, as the frameworks'
parser environment has them).

    PYTHONPATH=.venv-frameworks/mcore .venv-frameworks/bin/python bench/op_counts.py \
        -o bench/results/megatron-op-counts.json

Why a count: the host floor per layer pass (planner/cost/kernels.py HOST_LAYER_PASS_S) is
Python, autograd and one launch per kernel. On the lent H100s Megatron-Core's dense local layer
ran 75 kernels per forward and backward; deterministic mode added 21 (96) and its host time
rose 1.3x, in proportion. This script counts, per layer, the operators that launch work (views,
detaches and allocations left out) as half the difference between a 3-layer and a 1-layer
model, for the dense layer bench/device/megatron_host.py timed and for the same layer with
multi-latent attention (its --mla), built by that script's own code. The ratio of two kinds'
counts estimates the ratio of their host times (bench/device/derive.py host_mla_factor).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parent / "device"))
import megatron_host  # noqa: E402  (the timed layers, built the same way)

# operators that launch no kernel: metadata, allocations, autograd bookkeeping (views too)
NO_KERNEL = {"detach", "empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided",
             "_unsafe_view", "alias", "lift_fresh", "_local_scalar_dense", "is_same_size",
             "set_", "resize_", "_has_compatible_shallow_copy_type", "item", "size", "stride",
             "sym_size", "sym_stride", "sym_numel", "dim", "numel", "is_nonzero"}
# the shapes of megatron_host.py's h 512 layer, small enough for a CPU (counts do not depend
# on the sizes)
SHAPE = {"h": 512, "heads": 8, "ffn": 2048, "seq": 128, "vocab": 1024}


class CountOps(TorchDispatchMode):
    """Counts the aten operators that run, by name."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (),
                           kwargs: Any = None) -> Any:
        name = func.__name__.split(".")[0]
        if not func.is_view and name not in NO_KERNEL:
            self.ops[name] += 1
        return func(*args, **(kwargs or {}))


def count(mla: bool, layers: int, mbs: int = 2) -> tuple[Counter[str], Counter[str]]:
    """(forward, backward) operator counts of one training micro-batch."""
    s = SHAPE
    model = megatron_host._model(layers, s["h"], s["heads"], s["ffn"], s["seq"], s["vocab"],
                                 mla=mla)
    tokens = torch.randint(0, s["vocab"], (mbs, s["seq"]))
    positions = torch.arange(s["seq"]).unsqueeze(0).expand(mbs, s["seq"])
    mask = torch.triu(torch.ones(1, 1, s["seq"], s["seq"], dtype=torch.bool), diagonal=1)
    model(tokens, positions, mask, labels=tokens).float().mean().backward()  # warm-up
    model.zero_grad(set_to_none=True)
    forward, backward = CountOps(), CountOps()
    with forward:
        loss = model(tokens, positions, mask, labels=tokens).float().mean()
    with backward:
        loss.backward()
    return forward.ops, backward.ops


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()
    megatron_host._setup(port=29513)
    import megatron.core
    # megatron.core appends the git hash of the working directory, not its own: the release
    release = str(getattr(megatron.core, "__version__", "unknown")).split("+")[0]
    out: dict[str, Any] = {"torch": torch.__version__, "shape": SHAPE, "kinds": {},
                           "megatron_core": release}
    for kind, mla in (("dense", False), ("mla", True)):
        entry: dict[str, Any] = {}
        for phase, one, three in zip(("forward", "backward"), count(mla, 1), count(mla, 3),
                                     strict=True):
            per_layer = {op: (three[op] - one[op]) / 2 for op in sorted(set(one) | set(three))
                         if three[op] != one[op]}
            entry[f"{phase}_ops_per_layer"] = sum(per_layer.values())
            entry[f"{phase}_by_op"] = per_layer
        out["kinds"][kind] = entry
        print(kind, {k: v for k, v in entry.items() if k.endswith("per_layer")}, flush=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
