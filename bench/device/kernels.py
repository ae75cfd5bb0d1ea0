"""Time, on one real GPU, the kernels the step-time model prices: the GEMM shapes of the
validation cases (bench/device/shapes.json, written by shapes.py), causal flash attention per
SDPA backend, memory-bound element-wise kernels, and whole transformer layers (forward and
backward, eager PyTorch), with the GPU's clocks and power while it ran.

Needs only PyTorch (and pynvml where present). Run on the GPU machine:

    python3 bench/device/kernels.py --shapes bench/device/shapes.json -o results.json

(shapes.json is written on a machine with planner installed: `bench/device/shapes.py -o
bench/device/shapes.json`; git ignores it, so name it in the device call's carry.)

Times are medians of CUDA-event timings over back-to-back launches on rotating inputs (so small
GEMMs do not run from L2), after warm-up. `--quick` shrinks everything for a CPU dry run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

CUDA = torch.cuda.is_available()
DEV = "cuda" if CUDA else "cpu"
BF16 = torch.bfloat16


def _timed(fn: Callable[[int], Any], reps: int, warmup: int = 3) -> float:
    """Median seconds per call of fn(i) over 3 batches of `reps` back-to-back calls."""
    for i in range(warmup):
        fn(i)
    samples = []
    for _ in range(3):
        if CUDA:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            for i in range(reps):
                fn(i)
            end.record()
            torch.cuda.synchronize()
            samples.append(start.elapsed_time(end) / 1e3 / reps)
        else:
            t0 = time.perf_counter()
            for i in range(reps):
                fn(i)
            samples.append((time.perf_counter() - t0) / reps)
    return statistics.median(samples)


def _reps(flops: float, budget_s: float, rate: float = 6e14) -> int:
    """Enough calls for about budget_s of GPU time at `rate`, between 3 and 200."""
    return max(3, min(200, int(budget_s / max(flops / rate, 5e-6))))


def _copies(num_bytes: float) -> int:
    """Input sets to rotate through so that they exceed the L2 cache (50-60 MB on Hopper)."""
    return max(1, min(8, math.ceil(200e6 / max(num_bytes, 1.0))))


# ---- GEMMs --------------------------------------------------------------------------------

def time_gemm(m: int, n: int, k: int, batch: int, precision: str, budget_s: float) -> dict:
    flops = 2.0 * m * n * k * batch
    size = (m * k + k * n) * batch * 2
    copies = _copies(size)
    if precision == "fp8":
        if not CUDA or m % 16 or n % 16 or k % 16 or batch != 1:
            return {"skipped": "fp8 needs CUDA, dims divisible by 16 and batch 1"}
        a = [torch.randn(m, k, device=DEV).to(torch.float8_e4m3fn) for _ in range(copies)]
        b = [torch.randn(n, k, device=DEV).to(torch.float8_e4m3fn).t() for _ in range(copies)]
        one = torch.ones((), device=DEV)

        def run(i: int) -> Any:
            return torch._scaled_mm(a[i % copies], b[i % copies], scale_a=one, scale_b=one,
                                    out_dtype=BF16)
    else:
        shape_a = (batch, m, k) if batch > 1 else (m, k)
        shape_b = (batch, k, n) if batch > 1 else (k, n)
        a = [torch.randn(*shape_a, device=DEV, dtype=BF16) for _ in range(copies)]
        b = [torch.randn(*shape_b, device=DEV, dtype=BF16) for _ in range(copies)]

        def run(i: int) -> Any:
            return torch.matmul(a[i % copies], b[i % copies])
    seconds = _timed(run, _reps(flops, budget_s))
    return {"s": seconds, "tflops": flops / seconds / 1e12}


# ---- attention ----------------------------------------------------------------------------

def time_attention(b: int, heads: int, s: int, d: int, backend: str, budget_s: float) -> dict:
    """Causal self-attention, q/k/v [b, heads, s, d]; FLOPs counted causal (half the scores):
    forward 4*b*heads*s^2*d/2, backward 2.5x forward. Backend "default" is PyTorch's own pick."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    chosen = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
              "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}.get(backend)
    flops = 4.0 * b * heads * s * s * d * 0.5
    q, k, v = (torch.randn(b, heads, s, d, device=DEV, dtype=BF16, requires_grad=True)
               for _ in range(3))
    grad = torch.randn(b, heads, s, d, device=DEV, dtype=BF16)
    try:
        with sdpa_kernel([chosen]) if chosen is not None else contextlib.nullcontext():
            def fwd(_: int) -> Any:
                with torch.no_grad():
                    return F.scaled_dot_product_attention(q, k, v, is_causal=True)

            def fwd_bwd(_: int) -> Any:
                out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
                out.backward(grad)
            forward = _timed(fwd, _reps(flops, budget_s, 3e14))
            both = _timed(fwd_bwd, _reps(3.5 * flops, budget_s, 3e14))
    except RuntimeError as exc:
        return {"skipped": str(exc).splitlines()[0][:200]}
    backward = both - forward
    return {"forward_s": forward, "backward_s": backward,
            "forward_tflops": flops / forward / 1e12,
            "backward_tflops": 2.5 * flops / backward / 1e12 if backward > 0 else None}


# ---- element-wise -------------------------------------------------------------------------

def time_elementwise(tokens: int, h: int, f: int, budget_s: float) -> dict:
    """Achieved HBM bandwidth of memory-bound kernels, counting bytes read + written once."""
    out: dict[str, Any] = {}
    x = torch.randn(tokens, h, device=DEV, dtype=BF16)
    w = torch.ones(h, device=DEV, dtype=BF16)
    big = torch.randn(tokens, 2 * f, device=DEV, dtype=BF16)
    g = torch.randn(tokens, f, device=DEV, dtype=BF16)
    cases: dict[str, tuple[Callable[[int], Any], float]] = {
        "copy": (lambda _: big.clone(), 2 * big.numel() * 2),
        "layer_norm": (lambda _: F.layer_norm(x, (h,), w, w), 2 * x.numel() * 2),
        "rms_norm": (lambda _: F.rms_norm(x, (h,), w), 2 * x.numel() * 2),
        "gelu": (lambda _: F.gelu(g, approximate="tanh"), 2 * g.numel() * 2),
        "swiglu": (lambda _: F.silu(big[:, :f]) * big[:, f:], 3 * g.numel() * 2),
        "add": (lambda _: x + x, 3 * x.numel() * 2),
    }
    for name, (fn, num_bytes) in cases.items():
        reps = max(3, min(200, int(budget_s / max(num_bytes / 2.5e12, 5e-6))))
        seconds = _timed(fn, reps)
        out[name] = {"s": seconds, "bytes": num_bytes, "gb_per_s": num_bytes / seconds / 1e9}
    return out


# ---- whole layers -------------------------------------------------------------------------

class Layer(torch.nn.Module):
    """A pre-norm transformer layer as Megatron-LM / torchtitan build it (unfused eager ops):
    norm, fused QKV, causal SDPA, output projection, residual, norm, MLP, residual."""

    def __init__(self, h: int, heads: int, kv_heads: int, ffn: int, gated: bool,
                 rms: bool) -> None:
        super().__init__()
        self.h, self.heads, self.kv_heads = h, heads, kv_heads
        self.d = h // heads
        self.gated, self.rms = gated, rms
        self.qkv = torch.nn.Linear(h, (heads + 2 * kv_heads) * self.d, bias=not rms)
        self.proj = torch.nn.Linear(h, h, bias=not rms)
        self.fc1 = torch.nn.Linear(h, ffn * (2 if gated else 1), bias=not rms)
        self.fc2 = torch.nn.Linear(ffn, h, bias=not rms)
        self.n1 = torch.nn.RMSNorm(h) if rms else torch.nn.LayerNorm(h)
        self.n2 = torch.nn.RMSNorm(h) if rms else torch.nn.LayerNorm(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        qkv = self.qkv(self.n1(x)).view(b, s, self.heads + 2 * self.kv_heads, self.d)
        q, k, v = qkv.split([self.heads, self.kv_heads, self.kv_heads], dim=2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        if self.kv_heads != self.heads:
            rep = self.heads // self.kv_heads
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(a.transpose(1, 2).reshape(b, s, self.h))
        y = self.fc1(self.n2(x))
        if self.gated:
            gate, up = y.chunk(2, dim=-1)
            y = F.silu(gate) * up
        else:
            y = F.gelu(y, approximate="tanh")
        return x + self.fc2(y)


def time_layer(name: str, h: int, heads: int, kv_heads: int, ffn: int, gated: bool, rms: bool,
               mbs: int, seq: int, reps: int) -> dict:
    layer = Layer(h, heads, kv_heads, ffn, gated, rms).to(DEV, BF16)
    x = torch.randn(mbs, seq, h, device=DEV, dtype=BF16, requires_grad=True)
    grad = torch.randn(mbs, seq, h, device=DEV, dtype=BF16)

    def fwd(_: int) -> Any:
        with torch.no_grad():
            return layer(x)

    def fwd_bwd(_: int) -> Any:
        layer(x).backward(grad)
    result: dict[str, Any] = {"name": name, "h": h, "heads": heads, "kv_heads": kv_heads,
                              "ffn": ffn, "gated": gated, "rms": rms, "mbs": mbs, "seq": seq}
    result["forward_s"] = _timed(fwd, reps)
    result["forward_backward_s"] = _timed(fwd_bwd, reps)
    if CUDA:
        # GPU-busy time of one forward+backward (sum of kernel durations) vs its wall time:
        # their difference is host (launch and Python) time the GPU waited for.
        from torch.profiler import ProfilerActivity, profile
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fwd_bwd(0)
            torch.cuda.synchronize()
        kernels = [e for e in prof.events() if e.device_type.name == "CUDA"]
        result["kernels"] = len(kernels)
        result["kernel_busy_s"] = sum(e.device_time for e in kernels) / 1e6
        # The same forward+backward replayed from a CUDA graph: no host overhead.
        try:
            static_x = x.detach().clone().requires_grad_(True)
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(3):
                    layer(static_x).backward(grad)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                layer(static_x).backward(grad)
            result["graphed_forward_backward_s"] = _timed(lambda _: graph.replay(), reps)
        except RuntimeError as exc:
            result["graphed_skipped"] = str(exc).splitlines()[0][:200]
    return result


# ---- clocks and power ---------------------------------------------------------------------

def sample_power(seconds: float) -> dict:
    """Clock, power and temperature every 0.1 s while a large GEMM runs back to back."""
    try:
        import pynvml
        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    except Exception as exc:  # noqa: BLE001 - report and go on without power numbers
        return {"skipped": f"pynvml: {exc}"}
    samples: list[tuple[float, float, float]] = []
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            samples.append((pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM),
                            pynvml.nvmlDeviceGetPowerUsage(handle) / 1e3,
                            pynvml.nvmlDeviceGetTemperature(handle, 0)))
            time.sleep(0.1)
    a = torch.randn(8192, 8192, device=DEV, dtype=BF16)
    b = torch.randn(8192, 8192, device=DEV, dtype=BF16)
    thread = threading.Thread(target=poll)
    thread.start()
    t0 = time.perf_counter()
    count = 0
    while time.perf_counter() - t0 < seconds:
        for _ in range(20):
            torch.matmul(a, b)
        torch.cuda.synchronize()
        count += 20
    elapsed = time.perf_counter() - t0
    done.set()
    thread.join()
    steady = samples[len(samples) // 3:] or samples
    return {
        "power_limit_w": pynvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1e3,
        "max_sm_clock_mhz": pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_SM),
        "sm_clock_mhz": statistics.median(s[0] for s in steady),
        "power_w": statistics.median(s[1] for s in steady),
        "temperature_c": statistics.median(s[2] for s in steady),
        "gemm_8192_tflops": count * 2 * 8192**3 / elapsed / 1e12,
        "samples": len(samples),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shapes", type=Path, required=True)
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a CPU dry run")
    args = parser.parse_args()
    shapes = json.loads(args.shapes.read_text())
    budget = 0.02 if CUDA else 0.0
    results: dict[str, Any] = {"torch": torch.__version__}
    if CUDA:
        props = torch.cuda.get_device_properties(0)
        results["gpu"] = {"name": props.name, "sms": props.multi_processor_count,
                          "memory_bytes": props.total_memory}
    out = args.output

    def save() -> None:
        out.write_text(json.dumps(results, indent=1))

    t0 = time.perf_counter()
    if CUDA:
        results["power"] = sample_power(6.0)
        save()
        print("power", {k: v for k, v in results["power"].items()}, flush=True)
    gemms = shapes["gemms"][:6] if args.quick else shapes["gemms"]
    results["gemms"] = []
    for m, n, k, batch, precision in gemms:
        if args.quick:
            m, n, k = min(m, 64), min(n, 64), min(k, 64)
        entry = {"m": m, "n": n, "k": k, "batch": batch, "precision": precision}
        entry.update(time_gemm(m, n, k, batch, precision, budget))
        results["gemms"].append(entry)
    save()
    print(f"gemms done {time.perf_counter() - t0:.0f} s", flush=True)
    # fp8 shapes also in bf16, to compare like with like
    for entry in [e for e in results["gemms"] if e["precision"] == "fp8"]:
        twin = {"m": entry["m"], "n": entry["n"], "k": entry["k"], "batch": entry["batch"],
                "precision": "bf16", "twin_of_fp8": True}
        twin.update(time_gemm(entry["m"], entry["n"], entry["k"], entry["batch"], "bf16",
                              budget))
        results["gemms"].append(twin)
    save()
    attention = [(2, 32, 8192, 128), (1, 32, 32768, 128), (1, 16, 4096, 128), (1, 12, 2048, 128),
                 (4, 8, 1024, 64), (1, 32, 65536, 128), (4, 16, 4096, 64)]
    if args.quick:
        attention = [(1, 2, 64, 64)]
    results["attention"] = []
    for b, heads, s, d in attention:
        for backend in ("default", "flash", "cudnn", "efficient") if CUDA else ("math", "default"):
            entry = {"b": b, "heads": heads, "s": s, "d": d, "backend": backend}
            entry.update(time_attention(b, heads, s, d, backend, budget))
            results["attention"].append(entry)
            print(entry, flush=True)
    save()
    tokens = 64 if args.quick else 16384
    results["elementwise"] = time_elementwise(tokens, 4096 if not args.quick else 64,
                                              14336 if not args.quick else 128, budget)
    print(results["elementwise"], flush=True)
    save()
    layers = [
        ("llama3-8b mbs2 s8192", 4096, 32, 8, 14336, True, True, 2, 8192, 10),
        ("llama3-8b mbs1 s8192", 4096, 32, 8, 14336, True, True, 1, 8192, 10),
        ("gpt 7b (megatron ci) mbs1 s8192", 4096, 32, 8, 16384, False, False, 1, 8192, 10),
        ("llama3-70b unsharded mbs1 s8192", 8192, 64, 8, 28672, True, True, 1, 8192, 10),
        ("toy gpt h512 mbs4 s1024", 512, 8, 8, 2048, False, False, 4, 1024, 30),
    ]
    if args.quick:
        layers = [("tiny", 64, 2, 2, 128, True, True, 1, 32, 2),
                  ("tiny gelu", 64, 2, 1, 128, False, False, 1, 32, 2)]
    results["layers"] = []
    for spec in layers:
        try:
            entry = time_layer(*spec)
        except RuntimeError as exc:
            entry = {"name": spec[0], "skipped": str(exc).splitlines()[0][:200]}
        results["layers"].append(entry)
        print(entry, flush=True)
        save()
        if CUDA:
            torch.cuda.empty_cache()
    results["elapsed_s"] = time.perf_counter() - t0
    save()
    print(f"done in {results['elapsed_s']:.0f} s")


if __name__ == "__main__":
    main()
