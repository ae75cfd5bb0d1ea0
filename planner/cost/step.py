"""One training step: per-stage compute and exposed communication, the pipeline schedule,
gradient reduction and the optimizer step; throughput, MFU and HFU (DESIGN.md conventions).

Communication per micro-batch and layer (Megatron-LM; Korthikanti et al. 2022 Sec. 4.2.2):
- TP: two all-reduces of the s*b*h activations forward (with sequence parallelism an
  all-gather and a reduce-scatter each, the same volume) and their gradients' backward; a
  full recompute repeats the forward's. Backward, Megatron overlaps each linear's input-
  gradient collective with that linear's weight-gradient GEMM (and with sequence parallelism
  re-gathers the input during the data-gradient GEMM); torchtitan's DTensor TP runs its
  collectives after the linear's backward (torch/distributed/tensor/parallel/style.py), so
  nothing hides them; with --tp-comm-overlap / async TP each collective hides behind the
  GEMM beside it (tp_exposure).
- CP (ring attention): cp - 1 exchanges of the local K and V forward, twice that backward
  (PyTorch's ring sends its fp32 key/value gradients every round: cp_exposure),
  overlapped with the attention computation; only the excess is exposed.
- EP: an all-to-all dispatch and one combine of the routed tokens forward, two backward;
  with --overlap-moe-expert-parallel-comm each hides behind a paired pass of another
  micro-batch (ep_exposure).
- PP: each micro-batch's activation to the next stage, and its gradient back, on the
  stage-to-stage links: s/cp x b x h from every TP rank, / tp with sequence parallelism
  (Megatron-Core schedules.get_tensor_shapes; the scatter/gather of Narayanan et al. 2021
  Sec. 4.1 is not in Megatron-Core).
- ZeRO-3 / FSDP: parameters all-gathered per pass and gradients reduce-scattered per
  micro-batch, overlapped with compute by prefetching (a pass takes the longer of the two).
- Vocabulary parallelism (Yeung et al., arXiv 2411.05288): each stage computes 1/pp of the
  LM head and loss per micro-batch; the last hidden states are broadcast over the pipeline
  group and their gradient all-reduced back, charged in full (the paper's schedule hides part
  of it, so this errs slow).
- DP: gradients (fp32 with bf16 training, Megatron's default; bf16 with
  --grad-reduce-in-bf16) reduce-scattered (distributed optimizer, then the bf16 parameters
  all-gathered, fp8 GEMM weights with --fp8-param-gather) or all-reduced over dp*cp; expert
  gradients over expert-dp. With --overlap-grad-reduce only the last bucket is exposed
  (Megatron buckets of max(40M, 1M * dp) parameters, `--ddp-bucket-size`).
Busy time and exposed time are kept apart in the breakdown.

Megatron's --deterministic-mode (ParallelConfig.deterministic) costs as measured on
Megatron-Core's own layers: more host time per layer pass, more on MoE layers
(kernels.HOST_DETERMINISTIC_PASS_S), and the fills of new allocations on the GPU
(deterministic_fill_bytes).

Each layer pass has a GPU time and a host time (the framework's floor); a model chunk's pass
is the flow shop of its layers' (host, GPU) times in order (host_gpu_flow_s), so a GPU-heavy
op, the loss, runs under the host's launches of what follows it.
"""

from __future__ import annotations

import dataclasses
import functools
from collections import Counter
from dataclasses import dataclass

from planner.cost import comm, kernels
from planner.cost.comm import Axis
from planner.cost.compute import (
    STEP_TIME_VALIDATED_GPUS,
    Gemm,
    LayerTime,
    attention_time_s,
    elementwise_bytes,
    head_gemm,
    head_time,
    k_loop_efficiency,
    layer_gemms,
    layer_time,
    linear_gemm_times,
    loss_pass_bytes,
    matmul_rate,
    memory_time_s,
    mtp_projection_gemm,
    op_sac_recomputed_gemms,
    tp_block_gemms,
)
from planner.cost.flops import hardware_flops_per_step, model_flops_per_step
from planner.cost.pipeline import ChunkTimes, PipelineResult, simulate
from planner.gpus import GpuType
from planner.hardware import Cluster
from planner.memory import config_policy, layer_activation_bytes, layer_params, stage_params
from planner.model import ModelSpec, PositionEmbedding
from planner.parallel import (
    Framework,
    ParallelConfig,
    Precision,
    Recompute,
    VocabStrategy,
    cp_gathers_kv,
    dropout_masks,
    interleaved_warmup,
    layer_reruns,
    local_kv_elements,
    stage_chunks,
    stage_layers,
    torchtitan_linears,
    tp_gathers_in_fp8,
)

# Megatron's DDP bucket: max(40M, 1M x dp) parameters (distributed_data_parallel_config.py).
BUCKET_PARAMS = 40_000_000
# DeepSpeed's ZeRO-1/2 gradient bucket: reduce_bucket_size, 5e8 elements by default
# (deepspeed/runtime/zero/config.py); the emitted ds_config.json does not change it.
DEEPSPEED_BUCKET_PARAMS = 500_000_000

# Bytes the optimizer step moves per locally-updated parameter: read the fp32 gradient (4),
# read and write the fp32 master weight (8) and both Adam moments (16), write the bf16 weight.
OPTIMIZER_BYTES_PER_PARAM = 30


@dataclass(frozen=True, slots=True, kw_only=True)
class StepLinks:
    """The links a configuration's groups use: the slowest ring of every axis and the
    slowest stage-to-stage hop. Depends only on the cluster and the parallel degrees, so a
    search resolves it once per degree tuple."""

    rings: tuple[tuple[Axis, comm.RingLink], ...]
    pipeline: comm.RingLink

    def ring(self, axis: Axis) -> comm.RingLink:
        return dict(self.rings)[axis]


def resolve_links(cluster: Cluster, cfg: ParallelConfig) -> StepLinks:
    """The links of cfg's groups; under Megatron's --deterministic-mode, whose launch sets
    NCCL_ALGO=Ring (megatron/training/determinism.py; emit.megatron adds it), all-reduces
    take the ring only (comm.RingLink.ring_only)."""
    rings = tuple((axis, comm.slowest_ring(cluster, cfg, axis)) for axis in Axis)
    if cfg.deterministic:
        rings = tuple((axis, dataclasses.replace(ring, ring_only=True)) for axis, ring in rings)
    return StepLinks(rings=rings, pipeline=comm.pipeline_link(cluster, cfg))


def fast_makespan(chunks: list[list[ChunkTimes]], m: int) -> float:
    """Closed-form pipeline time: m x the slowest stage + the other stages' time / v (the
    fill and drain) + the p2p hops. Exact for even stages and free communication ((m + p - 1)
    t for 1F1B, (m + (p - 1) / v) t interleaved, Narayanan et al. 2021); used to rank many
    candidates before the exact simulation."""
    vpp = len(chunks[0])
    stage = [sum(c.forward_s + c.backward_s for c in row) for row in chunks]
    hops = 2 * (len(chunks) - 1) * max((c.send_s for row in chunks for c in row), default=0.0)
    return m * max(stage) + (sum(stage) - max(stage)) / vpp + hops


@dataclass(frozen=True, slots=True, kw_only=True)
class LayerPasses:
    """One layer, one micro-batch, one GPU: forward and backward on the critical path
    (compute + exposed communication) and what each part keeps busy. Seconds. `forward_s` is
    the larger of the pass's GPU time (`gpu_forward_s`: compute and exposed communication) and
    its host time (`host_forward_s`: the framework's floor); likewise backward."""

    forward_s: float
    backward_s: float
    gpu_forward_s: float
    gpu_backward_s: float
    host_forward_s: float
    host_backward_s: float
    compute_s: float
    recompute_s: float
    tp_busy_s: float
    tp_exposed_s: float
    cp_busy_s: float
    cp_exposed_s: float
    ep_busy_s: float
    ep_exposed_s: float = 0.0
    host_wait_s: float = 0.0


def tp_bytes(model: ModelSpec, cfg: ParallelConfig) -> float:
    """Bytes of one tensor-parallel all-reduce of a micro-batch's 16-bit activations (two in
    each layer's forward: after attention and after the MLP; Megatron-LM)."""
    return cfg.seq_len / cfg.cp * cfg.mbs * model.hidden_size * 2


def routed_bytes(model: ModelSpec, cfg: ParallelConfig) -> float:
    """Bytes each rank sends in one MoE dispatch (or combine) all-to-all: its tokens (split
    by tp with sequence parallelism) x top_k copies of h 16-bit values."""
    assert model.moe is not None
    sp = cfg.tp if cfg.sequence_parallel else 1
    tokens = cfg.seq_len / cfg.cp * cfg.mbs
    return tokens / sp * model.moe.top_k * model.hidden_size * 2


def tp_never_hidden(cfg: ParallelConfig, c: float, linear_blocks: int,
                    gather: float | None = None) -> tuple[float, float]:
    """(forward, backward) seconds of a layer's TP collectives that no GEMM hides without
    --tp-comm-overlap, for c as in tp_exposure and a layer with `linear_blocks` blocks of
    linears (2; 1 for an MoE layer, whose dispatcher moves c each way, exposed): all of forward
    (2c); backward, torchtitan's all (2c), Megatron's dispatcher traffic and, with sequence
    parallelism, each block's output-gradient all-gather (c/2). `gather` is one
    sequence-parallel all-gather's seconds (c/2 unless it moves fp8: tp_gathers_in_fp8); a
    block's forward is a gather and a reduce-scatter (c/2). tp_exposure adds what outlasts the
    GEMMs beside the rest; step_lower_bound counts this part alone."""
    g = c / 2 if gather is None else gather
    sp = cfg.sequence_parallel
    block = g + c / 2 if sp else c
    if cfg.framework is not Framework.MEGATRON:
        return 2 * block, 2 * block
    dispatcher = (2 - linear_blocks) * c
    backward = dispatcher + (linear_blocks * g if sp else 0.0)
    return linear_blocks * block + dispatcher, backward


def tp_exposure(model: ModelSpec, cfg: ParallelConfig, gpu: GpuType, links: StepLinks,
                layer: int) -> tuple[float, float, float, float]:
    """(forward exposed, backward exposed, forward busy, backward busy) seconds of one layer's
    tensor-parallel collectives for one micro-batch (a full recompute's are added by the
    caller). Per block, c is the time of one all-reduce of the block's activations, an
    all-gather or a reduce-scatter half of it (comm.all_reduce_s; an all-gather of fp8
    elements the ring's time for them, tp_gather_s). Forward: an all-reduce
    (sequence parallel: all-gather in, reduce-scatter out) per block. Backward, per
    compute.tp_block_gemms (each collective hides behind its own GEMM only):
    - Megatron: the input-gradient all-reduce overlaps the input linear's weight-gradient GEMM;
      with sequence parallelism the output gradient is all-gathered first (exposed), the input
      re-gathered for the weight gradient during the data-gradient GEMM and the input
      gradient reduce-scattered during the weight gradient: 3 collectives, 1.5 c (two of
      them gathers).
    - torchtitan (DTensor TP): the backward of each forward collective, after the linear's
      backward has run: c, exposed.
    - With --tp-comm-overlap (userbuffers) or torchtitan's async TP, every collective hides
      behind the GEMM beside it, forward and backward; what it outlasts stays exposed.
    An MoE block's TP traffic (in the token dispatcher) is c each way, exposed."""
    c = comm.all_reduce_s(tp_bytes(model, cfg), links.ring(Axis.TP))
    if cfg.tp == 1 or c == 0.0:
        return 0.0, 0.0, 0.0, 0.0
    half = c / 2
    gather = tp_gather_s(model, cfg, links, half)
    blocks = tp_block_gemms(model, cfg, gpu, layer)
    dispatcher = (2 - len(blocks)) * c
    megatron = cfg.framework is Framework.MEGATRON
    sp = cfg.sequence_parallel
    # per block: forward a gather and a reduce-scatter (an all-reduce without sequence
    # parallelism); backward Megatron's output-gradient gather, input re-gather and
    # reduce-scatter, torchtitan's gather and reduce-scatter
    fwd_block = gather + half if sp else c
    bwd_block = (2 * gather + half if megatron else gather + half) if sp else c
    fwd_busy = len(blocks) * fwd_block + dispatcher
    bwd_busy = len(blocks) * bwd_block + dispatcher
    if cfg.tp_comm_overlap:
        fwd = sum(max(0.0, gather - b.input_fwd) + max(0.0, half - b.output_fwd)
                  for b in blocks)
        if megatron:
            bwd = sum(max(0.0, gather - b.output_dgrad) + max(0.0, gather - b.input_dgrad)
                      + max(0.0, half - b.input_wgrad) for b in blocks)
        else:
            bwd = sum(max(0.0, gather - b.output_dgrad) + max(0.0, half - b.input_dgrad)
                      for b in blocks)
        return fwd + dispatcher, bwd + dispatcher, fwd_busy, bwd_busy
    fwd, bwd = tp_never_hidden(cfg, c, len(blocks), gather)
    if megatron and sp:
        bwd += sum(max(0.0, gather - b.input_dgrad) + max(0.0, half - b.input_wgrad)
                   for b in blocks)
    elif megatron:
        bwd += sum(max(0.0, c - b.input_wgrad) for b in blocks)
    return fwd, bwd, fwd_busy, bwd_busy


def tp_gather_s(model: ModelSpec, cfg: ParallelConfig, links: StepLinks, half: float) -> float:
    """Seconds of one sequence-parallel all-gather of a block's activations, given `half`,
    half of the block's all-reduce (tp_exposure's c / 2): that, unless the gather moves fp8
    (parallel.tp_gathers_in_fp8), then the ring's all-gather of 1-byte elements in the same
    proportion to its 2-byte one."""
    if not tp_gathers_in_fp8(cfg):
        return half
    ring = links.ring(Axis.TP)
    full = comm.all_gather_s(tp_bytes(model, cfg), ring)
    return half * comm.all_gather_s(tp_bytes(model, cfg) / 2, ring) / full if full else half


def op_sac_tp_recompute(model: ModelSpec, cfg: ParallelConfig, gpu: GpuType, links: StepLinks,
                        layer: int) -> tuple[float, float]:
    """(exposed, busy) seconds of the tensor-parallel collectives torchtitan's op-level
    selective checkpointing runs again in one layer's backward, one micro-batch. Its save list
    keeps reduce_scatter outputs only (parallel.torchtitan_linears), so with sequence parallelism
    each block's input all-gather reruns (the gathered norm output feeds the recomputed
    linears and the saved ones' weight gradients): c/2 per block, c as in tp_exposure; without
    it the attention block's output all-reduce reruns (the MLP norm's input): c. Async TP
    fuses each re-gather with the recomputed linear that reads it (the column-parallel ones of
    compute.op_sac_recomputed_gemms: Llama's w3, and wk before 0.3.0 fused wqkv): what
    outlasts that GEMM is exposed, and a block with none exposes its re-gather whole."""
    if cfg.tp == 1 or torchtitan_linears(model, cfg, layer) is None:
        return 0.0, 0.0
    c = comm.all_reduce_s(tp_bytes(model, cfg), links.ring(Axis.TP))
    if not cfg.sequence_parallel:
        return c, c
    gather = tp_gather_s(model, cfg, links, c / 2)  # fp8 gathers rerun in fp8
    if not cfg.tp_comm_overlap:
        return 2 * gather, 2 * gather
    readers = [g for g in op_sac_recomputed_gemms(model, cfg, layer) if g.role == "column"]
    exposed = sum(max(0.0, gather - linear_gemm_times(g, cfg, gpu, cfg.precision)[0])
                  for g in readers)
    return exposed + gather * max(0, 2 - len(readers)), 2 * gather


def layer_passes(model: ModelSpec, cfg: ParallelConfig, gpu: GpuType, links: StepLinks,
                 layer: int, mode: Recompute, a2a_paired: float | None = None) -> LayerPasses:
    """Compute (compute.layer_time) plus the communication of the module docstring: TP as
    tp_exposure, a full recompute repeating the forward's; CP beyond the attention it
    overlaps; EP dispatch + combine, twice in backward. A pass takes at least the framework's
    host time per layer pass (kernels.HOST_LAYER_PASS_S, x kernels.HOST_MLA_FACTOR with
    multi-latent attention; a full recompute runs the forward's host work again in backward;
    experts run one by one add kernels.HOST_EXPERT_PASS_S each
    after the first; Megatron's --deterministic-mode adds kernels.HOST_DETERMINISTIC_PASS_S,
    more on MoE layers): small layers wait on the CPU, not the GPU. `a2a_paired` is the share of
    passes whose expert all-to-alls a partner pass hides (a2a_paired_fraction of cfg unless
    given: the pass cache times layers under a configuration stripped of the schedule). A
    layer fp8 training keeps in bf16 is timed under its own configuration (layer_config)."""
    cfg = cfg.layer_config(model, layer)
    lt = layer_time(model, cfg, gpu, layer, mode)
    full = mode is Recompute.FULL
    tp_fwd_exposed, tp_bwd_exposed, tp_fwd_busy, tp_bwd_busy = tp_exposure(
        model, cfg, gpu, links, layer)
    if full:  # the recompute runs the forward's collectives again
        tp_bwd_exposed += tp_fwd_exposed
        tp_bwd_busy += tp_fwd_busy
    elif mode is Recompute.SELECTIVE and cfg.framework is Framework.TORCHTITAN:
        regather_exposed, regather_busy = op_sac_tp_recompute(model, cfg, gpu, links, layer)
        tp_bwd_exposed += regather_exposed
        tp_bwd_busy += regather_busy
    reruns = layer_reruns(model, cfg, layer, mode)
    # a checkpointed MLP or MoE block runs its forward's collectives again: the block's half
    # of the layer's tensor-parallel traffic (a dense layer's two blocks, an MoE layer's
    # attention and dispatcher alike), and an MoE block its expert all-to-alls (below)
    rerun_mlp_block = reruns.dense_mlp or reruns.moe_block
    if rerun_mlp_block:
        tp_bwd_exposed += tp_fwd_exposed / 2
        tp_bwd_busy += tp_fwd_busy / 2
    cp_fwd, cp_bwd, cp_busy = cp_exposure(model, cfg, links, lt, mode)
    ep_fwd = ep_fwd_exposed = ep_bwd_exposed = 0.0
    if model.is_moe_layer(layer) and cfg.ep > 1:
        ep_fwd = 2 * comm.all_to_all_s(routed_bytes(model, cfg), links.ring(Axis.EP))
        paired = a2a_paired_fraction(cfg) if a2a_paired is None else a2a_paired
        ep_fwd_exposed, ep_bwd_exposed = ep_exposure(ep_fwd, lt.forward_s, lt.backward_s,
                                                     paired)
        if rerun_mlp_block:  # the recomputed MoE forward dispatches and combines again
            ep_bwd_exposed += ep_fwd_exposed
    # memory-bound work outside compute.layer_time: deterministic mode's fills of new
    # allocations (a recompute allocates the forward's again) and, without gradient
    # accumulation fusion, the weight-gradient adds into main_grad
    fill_fwd, fill_bwd = (memory_time_s(b, gpu)
                          for b in deterministic_fill_bytes(model, cfg, layer))
    extra_fwd = fill_fwd
    extra_bwd = (fill_bwd + (fill_fwd if full else 0.0)
                 + memory_time_s(wgrad_accumulation_bytes(model, cfg, layer), gpu))
    forward = lt.forward_s + extra_fwd + tp_fwd_exposed + cp_fwd + ep_fwd_exposed
    backward = lt.backward_s + extra_bwd + tp_bwd_exposed + cp_bwd + ep_bwd_exposed
    host_fwd, host_bwd = kernels.HOST_LAYER_PASS_S[cfg.framework.value]
    if model.mla is not None:  # MLA's extra projections, norms and RoPE pieces: more kernels
        mla_fwd, mla_bwd = kernels.HOST_MLA_FACTOR.get(cfg.framework.value, (1.0, 1.0))
        host_fwd, host_bwd = host_fwd * mla_fwd, host_bwd * mla_bwd
    moe_layer = model.moe is not None and model.is_moe_layer(layer)
    if model.moe is not None and moe_layer and not cfg.moe_grouped_gemm:
        expert_fwd, expert_bwd = kernels.HOST_EXPERT_PASS_S.get(cfg.framework.value, (0, 0))
        further = cfg.local_experts(model) - 1  # the first is in the layer's own floor
        host_fwd += further * expert_fwd
        host_bwd += further * expert_bwd
    if cfg.deterministic:
        (dense_fwd, dense_bwd), (moe_fwd, moe_bwd) = kernels.HOST_DETERMINISTIC_PASS_S.get(
            cfg.framework.value, ((0.0, 0.0), (0.0, 0.0)))
        host_fwd += dense_fwd + (moe_fwd if moe_layer else 0.0)
        host_bwd += dense_bwd + (moe_bwd if moe_layer else 0.0)
    host_bwd += host_fwd if full else 0.0
    wait = max(0.0, host_fwd - forward) + max(0.0, host_bwd - backward)
    return LayerPasses(
        forward_s=max(forward, host_fwd), backward_s=max(backward, host_bwd),
        gpu_forward_s=forward, gpu_backward_s=backward, host_forward_s=host_fwd,
        host_backward_s=host_bwd,
        compute_s=lt.forward_s + lt.backward_s + extra_fwd + extra_bwd,
        recompute_s=lt.recompute_s,
        tp_busy_s=tp_fwd_busy + tp_bwd_busy, tp_exposed_s=tp_fwd_exposed + tp_bwd_exposed,
        cp_busy_s=cp_busy, cp_exposed_s=cp_fwd + cp_bwd,
        ep_busy_s=(4 if rerun_mlp_block else 3) * ep_fwd,
        ep_exposed_s=ep_fwd_exposed + ep_bwd_exposed, host_wait_s=wait)


def cp_exposure(model: ModelSpec, cfg: ParallelConfig, links: StepLinks, lt: LayerTime,
                mode: Recompute) -> tuple[float, float, float]:
    """(forward exposed, backward exposed, busy) seconds of one layer's context-parallel
    traffic, one micro-batch. A ring: the local K and V (attention_kv_width wide) go round the
    cp ranks, cp - 1 transfers forward and again backward, beside which the key/value
    gradients travel back: cp - 1 transfers in bf16 with Transformer Engine's ring, cp in fp32
    with PyTorch's (torchtitan before 0.3.0; _templated_ring_attention_backward sends its fp32
    accumulator every round); each overlaps its pass's attention computation and shows beyond
    it. torchtitan 0.3.0's FlexAttention CP (parallel.cp_gathers_kv) all-gathers K and V
    before its one attention call and reduce-scatters their gradients after it: nothing to
    hide them behind, all exposed. A full recompute runs the forward's exchange again in
    backward, as does torchtitan's op-level SAC its gather (not in its save list)."""
    if cfg.cp <= 1:
        return 0.0, 0.0, 0.0
    cp = cfg.cp
    full = mode is Recompute.FULL
    kv = local_kv_elements(model, cfg) * 2  # bytes, 16-bit
    if cp_gathers_kv(cfg):
        gather = comm.all_gather_s(cp * kv, links.ring(Axis.CP))  # and the reduce-scatter
        again = gather if full or mode is Recompute.SELECTIVE else 0.0
        return gather, gather + again, 2 * gather + again
    forward = (cp - 1) * kv / links.ring(Axis.CP).bandwidth_bytes_per_s
    gradients = forward * 2 * cp / (cp - 1) if cfg.framework is Framework.TORCHTITAN else forward
    backward = forward + gradients + (forward if full else 0.0)
    attention_backward = lt.attention_s - lt.attention_forward_s + (
        lt.attention_forward_s if full else 0.0)
    return (max(0.0, forward - lt.attention_forward_s),
            max(0.0, backward - attention_backward), forward + backward)


def host_gpu_flow_s(ops: list[tuple[float, float, int]]) -> float:
    """Seconds of a pass whose ops the host launches in order while the GPU runs them: the
    two-machine flow shop of (host, GPU) seconds per op with the work of each op spread
    evenly over its many kernels, max over split points j of the host time to launch ops
    1..j plus the GPU time of ops j+1..n. `ops` are runs of identical ops, (host, GPU,
    repeats): within a run that sum is linear in j, so its ends are the only split points
    to try. A pass of identical ops takes n x max(host, GPU), as a sum of per-layer floors
    does; a GPU-heavy op (the loss) next to host-bound layers hides behind their launches
    where it comes first (the backward), not where it comes last (the forward). Passes do
    not overlap one another here: Megatron's 1F1B synchronises the host at each
    point-to-point exchange (pipeline_parallel/p2p_communication.py, batch_p2p_comm with
    batch_p2p_sync, both on by default). The interleaved schedule's overlapped exchanges
    (overlap_p2p_comm, on by default for it in megatron/training/arguments.py) do not; a
    host free to run ahead across passes could only shorten the schedule, yet 9 of the 12
    interleaved Megatron CI tests (host-bound toys) already run slower than priced (planner
    validate), so something not modelled holds the host there and passes are kept apart."""
    gpu_left = sum(g * n for _, g, n in ops)
    best = gpu_left
    host = 0.0
    for h, g, n in ops:
        host += h * n
        gpu_left -= g * n
        best = max(best, host + gpu_left)
    return best


def deterministic_fill_bytes(model: ModelSpec, cfg: ParallelConfig,
                             layer: int) -> tuple[float, float]:
    """(forward, backward) HBM bytes that Megatron's --deterministic-mode writes into one
    layer's new allocations, one micro-batch (0 without it): torch.use_deterministic_algorithms
    (True) fills every torch.empty with NaN (torch.utils.deterministic.fill_uninitialized_
    memory, on by default). Measured (kernels.DETERMINISTIC_FILL_FACTOR): the fills of a
    forward and backward take the time of writing the layer's stored activations
    (memory.layer_activation_bytes without recompute: what the forward computes)
    DETERMINISTIC_FILL_FACTOR times; the forward is taken to fill what it stores, the backward
    the rest."""
    if not cfg.deterministic:
        return 0.0, 0.0
    stored = float(layer_activation_bytes(model, cfg, layer, Recompute.NONE))
    return stored, (kernels.DETERMINISTIC_FILL_FACTOR - 1) * stored


def wgrad_accumulation_bytes(model: ModelSpec, cfg: ParallelConfig, layer: int) -> float:
    """HBM bytes of adding one layer's weight gradients into Megatron's main_grad buffers, one
    micro-batch (0 with gradient_accumulation_fusion, Megatron's default, where the
    weight-gradient GEMM accumulates in its epilogue). With --no-gradient-accumulation-fusion
    the GEMM returns a 16-bit .grad and the DDP backward hook runs main_grad.add_(grad)
    (megatron/core/distributed/distributed_data_parallel.py, _make_backward_post_hook):
    read 2 bytes, read and write the main_grad (4 each, 2 with --grad-reduce-in-bf16), per
    parameter on this GPU."""
    if cfg.gradient_accumulation_fusion or cfg.framework is not Framework.MEGATRON:
        return 0.0
    dense, expert = layer_params(model, cfg, layer)
    return (dense + expert) * main_grad_add_bytes(cfg)


def main_grad_add_bytes(cfg: ParallelConfig) -> float:
    """HBM bytes per parameter of DDP's hook adding a 16-bit .grad into the main gradient
    (main_grad.add_(grad), wgrad_accumulation_bytes): read 2, read and write the main_grad's
    grad bytes each."""
    return 2 + 2 * config_policy(cfg).grad_bytes


def a2a_paired_fraction(cfg: ParallelConfig) -> float:
    """Share of a stage's layer passes that Megatron's combined 1F1B pairs with a pass of
    another micro-batch (moe_a2a_overlap; 0 without it): all but the warm-up forwards and the
    cool-down backwards, counted on the first stage, which has the most
    (parallel.interleaved_warmup of its m * v chunk passes; one micro-batch of m without
    pipelining)."""
    if not cfg.moe_a2a_overlap:
        return 0.0
    passes = cfg.num_microbatches * cfg.vpp
    alone = 1 if cfg.pp == 1 else interleaved_warmup(cfg, 0)
    return max(0.0, 1 - alone / passes)


def ep_exposure(ep_fwd: float, compute_fwd: float, compute_bwd: float,
                paired: float) -> tuple[float, float]:
    """(forward, backward) exposed seconds of one MoE layer's expert all-to-alls (dispatch and
    combine: ep_fwd forward, twice that backward). Unpaired passes expose all of it. In a
    pair, Megatron's combined 1F1B runs this layer's forward of one micro-batch beside its
    backward of another (pipeline_parallel/combined_1f1b.py: "EP A2A in forward step is
    hidden by the attention/mlp computation in the backward step, and vice versa"): the
    forward's all-to-alls hide behind the partner's backward compute and the backward's
    behind its forward compute; what they outlast stays exposed. `paired` is the share of
    passes with a partner (a2a_paired_fraction)."""
    fwd = (1 - paired) * ep_fwd + paired * max(0.0, ep_fwd - compute_bwd)
    bwd = (1 - paired) * 2 * ep_fwd + paired * max(0.0, 2 * ep_fwd - compute_fwd)
    return fwd, bwd


class _PassCache:
    """Layers of one kind (dense or MoE, bf16 or not: ParallelConfig.layer_kind) under one
    recompute mode cost the same: each kind is timed once per configuration, and across
    configurations through _shared_passes."""

    def __init__(self, model: ModelSpec, cfg: ParallelConfig, gpu: GpuType,
                 links: StepLinks) -> None:
        self.model = model
        self.cfg = cfg
        self.args = (model, _passes_key(cfg), gpu, links)
        self.paired = a2a_paired_fraction(cfg)
        self.cache: dict[tuple[bool, bool, Recompute], LayerPasses] = {}
        self.first = cfg.kind_layers(model)

    def get(self, layer: int, mode: Recompute) -> LayerPasses:
        return self.get_kind(*self.cfg.layer_kind(self.model, layer), mode)

    def get_kind(self, is_moe: bool, bf16: bool, mode: Recompute) -> LayerPasses:
        """The passes of a layer of this kind."""
        key = (is_moe, bf16, mode)
        if key not in self.cache:
            self.cache[key] = _shared_passes(*self.args, self.first[(is_moe, bf16)], mode,
                                             self.paired)
        return self.cache[key]


def embedding_passes(model: ModelSpec, cfg: ParallelConfig, gpu: GpuType,
                     links: StepLinks) -> tuple[float, float]:
    """(forward, backward) GPU seconds of the input embedding, one micro-batch, on the stage
    that holds it: Megatron's VocabParallelEmbedding and LanguageModelEmbedding
    (tensor_parallel/layers.py, models/common/embeddings/language_model_embedding.py).
    Forward: each token's row looked up in the vocabulary shard (read and write h 16-bit
    values), a learned position embedding looked up and added where the model has one, the
    embedding dropout where it runs (read, write, a 1-byte mask), then the shards' reduction
    over TP (an all-reduce; a reduce-scatter with sequence parallelism, whose backward
    all-gathers: tp_exposure's halves), exposed. Backward: PyTorch's embedding_dense_backward
    writes the shard's dense 16-bit gradient (V/tp x h) from the incoming gradient, and DDP's
    hook adds it into the main gradient (main_grad_add_bytes), as for any parameter outside
    gradient-accumulation fusion. With vocab-parallel each stage holds
    1/pp of the vocabulary (its share here; the exchange of the lookups is left out), and
    tied embeddings' end-of-step all-reduce between the first and last stage is left out
    too. Other frameworks' embeddings are priced alike."""
    tokens = cfg.seq_len / cfg.cp * cfg.mbs
    h = model.hidden_size
    vocab = model.padded_vocab_size(cfg.tp) / cfg.tp
    if cfg.vocab_strategy is VocabStrategy.VOCAB_PARALLEL and cfg.pp > 1:
        vocab /= cfg.pp
    per_token = 4.0  # the lookup: read and write the row
    if model.position_embedding is PositionEmbedding.LEARNED:
        per_token += 4 + 6  # the position row's lookup, and the add
    if dropout_masks(model, cfg)[0]:
        per_token += 5
    forward = memory_time_s(per_token * h * tokens, gpu)
    backward = memory_time_s(2 * h * tokens + vocab * h * (2 + main_grad_add_bytes(cfg)), gpu)
    if cfg.tp > 1:
        c = comm.all_reduce_s(tp_bytes(model, cfg), links.ring(Axis.TP))
        forward += c / 2 if cfg.sequence_parallel else c
        backward += c / 2 if cfg.sequence_parallel else 0.0
    return forward, backward


def mtp_kind(model: ModelSpec, cfg: ParallelConfig) -> tuple[bool, bool, Recompute]:
    """The layer kind of each MTP module's transformer layer: the last decoder layer's (its
    shapes and precision, as memory.stage_activation_bytes counts it), under cfg.recompute."""
    return (*cfg.layer_kind(model, model.num_layers - 1), cfg.recompute)


def mtp_ops(model: ModelSpec, cfg: ParallelConfig, gpu: GpuType, passes: _PassCache
            ) -> tuple[list[tuple[float, float, int]], list[tuple[float, float, int]]]:
    """(forward, backward) ops, as host_gpu_flow_s takes them, that the multi-token
    prediction modules add to the last chunk of the last stage per micro-batch, where
    Megatron-Core runs them after the decoder (multi_token_prediction.py): for each of the
    model's MTP depths (DeepSeek-V3, arXiv 2412.19437 Sec. 2.2) the 2h -> h projection of the
    normed hidden state and embedding (eh_proj, a column-parallel GEMM), one transformer
    layer of the last layer's kind (its passes, communication and host time included: mtp_kind)
    and the shared output head and loss once more (head_time). The two input norms and the
    embedding lookup of the shifted tokens are element-wise and left out."""
    if not model.num_mtp_layers:
        return [], []
    proj_f, proj_dgrad, proj_wgrad = linear_gemm_times(mtp_projection_gemm(model, cfg), cfg,
                                                       gpu, cfg.precision)
    lp = passes.get_kind(*mtp_kind(model, cfg))
    head_f, head_b = head_time(model, cfg, gpu)
    forward = [(0.0, proj_f, 1), (lp.host_forward_s, lp.gpu_forward_s, 1), (0.0, head_f, 1)]
    backward = [(0.0, head_b, 1), (lp.host_backward_s, lp.gpu_backward_s, 1),
                (0.0, proj_dgrad + proj_wgrad, 1)]
    return forward * model.num_mtp_layers, backward * model.num_mtp_layers


def _passes_key(cfg: ParallelConfig) -> ParallelConfig:
    """`cfg` with the fields layer_passes does not read set to defaults: configurations that
    differ only in them (ZeRO stage, recompute choice, layout, interleaving, batch) share one
    timing of each layer kind. layer_passes and compute.layer_time read the sequence, the
    micro-batch, tp / cp / ep / expert-tp, sequence parallelism, TP overlap, precision,
    attention kernels and routing; the recompute mode and the all-to-all pairing (which reads
    the schedule) are their arguments."""
    return dataclasses.replace(
        cfg, zero=0, recompute=Recompute.NONE, recompute_num_layers=None, vpp=1, pp=1,
        vocab_strategy=VocabStrategy.BASELINE, layers_per_stage=(), layers_per_chunk=(),
        microbatch_group_size=None, global_batch=cfg.mbs * cfg.dp)


@functools.lru_cache(maxsize=1 << 14)
def _shared_passes(model: ModelSpec, cfg: ParallelConfig, gpu: GpuType, links: StepLinks,
                   layer: int, mode: Recompute, a2a_paired: float) -> LayerPasses:
    return layer_passes(model, cfg, gpu, links, layer, mode, a2a_paired)


def layer_costs(model: ModelSpec, cfg: ParallelConfig, cluster: Cluster,
                links: StepLinks | None = None) -> tuple[tuple[float, ...], float]:
    """Per-micro-batch forward + backward seconds of every layer, as estimate_step charges
    them under cfg.recompute, and of the LM head + loss and the MTP modules (mtp_ops) on the
    last stage: the layer partitioner's costs."""
    gpu = min(cluster.gpu_types, key=lambda g: g.peak(cfg.precision.value))
    passes = _PassCache(model, cfg, gpu, links or resolve_links(cluster, cfg))
    per_layer = tuple(passes.get(i, cfg.recompute).forward_s
                      + passes.get(i, cfg.recompute).backward_s
                      for i in range(model.num_layers))
    mtp_forward, mtp_backward = mtp_ops(model, cfg, gpu, passes)
    mtp = sum(max(h, g) * n for h, g, n in mtp_forward + mtp_backward)
    return per_layer, sum(head_time(model, cfg, gpu)) + mtp


def _three_passes_flops(gemm: Gemm) -> float:
    """A GEMM's forward, data-gradient and weight-gradient FLOPs, each over the share of its
    K loop (compute.k_loop_efficiency): FLOPs at the best-case rate that the three GEMMs take
    at least. The weight gradient's K is the token count, which grows with the micro-batch:
    counted at full share, so the bound holds for every micro-batch."""
    return gemm.flops * (1 / k_loop_efficiency(gemm.k) + 1 / k_loop_efficiency(gemm.n) + 1)


def step_lower_bound(model: ModelSpec, cfg: ParallelConfig, cluster: Cluster,
                     tp_ring: comm.RingLink, ep_ring: comm.RingLink | None = None) -> float:
    """A lower bound on estimate_step(..., exact=False).iteration_s for every configuration
    that shares cfg's degrees, layout and vocabulary placement, whatever its micro-batch,
    recompute or ZeRO stage: what lets the search drop a whole family of degrees.

    Per layer and micro-batch, the parts of layer_passes that are linear in the micro-batch,
    each at its best: the GEMMs at the best-case rate (forward and the two backward GEMMs,
    3 x the forward FLOPs, over the share of the K loop where that does not depend on the
    micro-batch; tile quantization only slows them), the fused attention core at the
    fastest rate its kernel reaches at any call size, the element-wise traffic (3 x the
    forward's: backward moves twice), and the TP collectives tp_exposure never hides (all of
    forward; backward, torchtitan's all and Megatron's output-gradient all-gathers and MoE
    dispatcher traffic) and the MoE all-to-alls, at their bandwidth terms (all_reduce_s's
    ring and tree both take at least 2(n-1)/n x bytes / bandwidth; measured curves are left
    out). A micro-batch of b sequences costs at least b x that, so over the m = sequences / b
    micro-batches the busiest stage needs at least `sequences` x its sum, and fast_makespan's
    fill and drain (the other stages' time / vpp) at least the other stages' per-sequence sum
    / vpp; the last stage also runs the LM head and loss and each MTP module (mtp_ops).
    Latencies, recompute, CP, pipeline hops, host waits, data-parallel and optimizer time
    only add. The rings are the slowest TP and EP rings (comm.slowest_ring)."""
    gpu = min(cluster.gpu_types, key=lambda g: g.peak(cfg.precision.value))
    unit = dataclasses.replace(cfg, mbs=1)  # one sequence
    sequences = cfg.global_batch / cfg.dp  # per replica and step, all micro-batches
    rate = matmul_rate(gpu, cfg.precision)
    c_bw = 0.0
    if cfg.tp > 1 and not cfg.tp_comm_overlap:  # tp_exposure's exposed collectives
        c_bw = comm.all_reduce_bandwidth_s(tp_bytes(model, unit), tp_ring)

    # an fp8 all-gather's bandwidth term is half a 16-bit one's (tp_gather_s adds latency)
    gather_bw = c_bw / 4 if tp_gathers_in_fp8(cfg) else None

    def tp_s(is_moe: bool) -> float:
        return sum(tp_never_hidden(cfg, c_bw, 1 if is_moe else 2, gather_bw))
    ep_s = 0.0
    if (model.moe is not None and cfg.ep > 1 and ep_ring is not None
            and not cfg.moe_a2a_overlap):  # overlapped they may hide entirely (ep_exposure)
        # dispatch + combine, in forward and twice in backward (layer_passes)
        ep_s = 3 * 2 * comm.all_to_all_s(routed_bytes(model, unit), ep_ring, latency=False)
    attention = (sum(attention_time_s(model, unit, gpu, best_rate=True))
                 if cfg.flash_attention else 0.0)
    per_kind: dict[bool, float] = {}

    def layer_s(layer: int) -> float:  # the bound of one layer, by its kind
        kind = model.is_moe_layer(layer)
        if kind not in per_kind:
            gemms = sum(_three_passes_flops(g) for g in layer_gemms(model, unit, layer))
            elementwise = 3 * memory_time_s(elementwise_bytes(model, unit, layer), gpu)
            per_kind[kind] = (gemms / rate + attention + elementwise + tp_s(kind)
                              + (ep_s if kind else 0.0))
        return per_kind[kind]
    stages = []
    for stage, layers in enumerate(stage_layers(model, cfg)):
        total = sum(layer_s(layer) for layer in layers)
        if stage == cfg.pp - 1 and cfg.vocab_strategy is not VocabStrategy.VOCAB_PARALLEL:
            logits = head_gemm(model, unit)  # head_time: 3 GEMMs, the loss in both passes
            total += _three_passes_flops(logits) / rate
            total += memory_time_s(sum(loss_pass_bytes(unit)) * logits.m * logits.n, gpu)
        if stage == cfg.pp - 1 and model.num_mtp_layers:  # mtp_ops: projection, layer, head
            logits = head_gemm(model, unit)
            total += model.num_mtp_layers * (
                layer_s(model.num_layers - 1)
                + (_three_passes_flops(logits)
                   + _three_passes_flops(mtp_projection_gemm(model, unit))) / rate
                + memory_time_s(sum(loss_pass_bytes(unit)) * logits.m * logits.n, gpu))
        stages.append(total)
    busiest = max(stages)
    return busiest * sequences + (sum(stages) - busiest) / cfg.vpp


@dataclass(frozen=True, slots=True, kw_only=True)
class StageTime:
    """One pipeline stage's part of the schedule, seconds: its passes of one micro-batch
    (all its chunks, forward and backward, as the schedule runs them: layers, exposed
    communication, the LM head and loss on the last stage, waits on the host) and what it is
    busy over the step; the rest of the pipeline's time it idles (its share of the bubble)."""

    stage: int
    forward_s: float
    backward_s: float
    busy_s: float

    def to_dict(self) -> dict[str, object]:
        return {"stage": self.stage, "forward_s": self.forward_s,
                "backward_s": self.backward_s, "busy_s": self.busy_s}


@dataclass(frozen=True, slots=True, kw_only=True)
class StepTime:
    """Seconds per optimizer step with its parts (busy = link or SM occupied; exposed = on
    the critical path), and each pipeline stage's passes (`stages`)."""

    iteration_s: float
    tokens_per_s: float
    model_tflops_per_gpu: float
    mfu: float
    hfu: float
    breakdown: tuple[tuple[str, float], ...]
    calibrated: bool
    stages: tuple[StageTime, ...] = ()

    def to_dict(self) -> dict[str, object]:
        return {
            "iteration_s": self.iteration_s, "tokens_per_s": self.tokens_per_s,
            "model_tflops_per_gpu": self.model_tflops_per_gpu, "mfu": self.mfu,
            "hfu": self.hfu, "breakdown": dict(self.breakdown),
            "stages": [stage.to_dict() for stage in self.stages],
            "calibrated": self.calibrated,
        }


def estimate_step(model: ModelSpec, cfg: ParallelConfig, cluster: Cluster, *,
                  links: StepLinks | None = None, exact: bool = True) -> StepTime:
    """Predict one optimizer step of `cfg` on the first tp*pp*cp*dp GPUs of `cluster`.

    `links` (resolve_links) may be passed in when many configurations share degrees;
    `exact=False` times the pipeline with fast_makespan instead of the event simulation."""
    gpu = min(cluster.gpu_types, key=lambda g: g.peak(cfg.precision.value))  # slowest wins
    links = links or resolve_links(cluster, cfg)
    rings = dict(links.rings)
    activation_bytes = cfg.seq_len / cfg.cp * cfg.mbs * model.hidden_size * 2
    sp = cfg.tp if cfg.sequence_parallel else 1  # Megatron-Core sends the s/tp shard with SP
    send = comm.p2p_s(activation_bytes / sp, links.pipeline)

    totals = {"compute_s": 0.0, "tp_comm_s": 0.0, "tp_exposed_s": 0.0, "cp_comm_s": 0.0,
              "cp_exposed_s": 0.0,
              "ep_comm_s": 0.0, "ep_exposed_s": 0.0, "recompute_s": 0.0, "host_wait_s": 0.0}
    passes = _PassCache(model, cfg, gpu, links)
    vocab_parallel = cfg.vocab_strategy is VocabStrategy.VOCAB_PARALLEL and cfg.pp > 1
    vocab_f = vocab_b = 0.0
    if vocab_parallel:  # every stage runs 1/pp of the LM head and loss (Yeung et al. 2024)
        head_f, head_b = head_time(model, cfg, gpu)
        hidden = cfg.seq_len / cfg.cp * cfg.mbs * model.hidden_size * 2 / (
            cfg.tp if cfg.sequence_parallel else 1)
        pp_ring = links.ring(Axis.PP)
        vocab_f = head_f / cfg.pp + comm.broadcast_s(hidden, pp_ring)
        vocab_b = head_b / cfg.pp + comm.all_reduce_s(hidden, pp_ring)
    chunks: list[list[ChunkTimes]] = []
    m = cfg.num_microbatches
    for stage, per_chunk in enumerate(stage_chunks(model, cfg)):
        row = []
        for c, chunk_layers in enumerate(per_chunk):
            # (host, GPU, layers in a row) of the chunk's runs of one layer kind, in order:
            # layers of one kind under one recompute mode cost the same
            runs = [(passes.get_kind(*kind), count)
                    for kind, count in cfg.chunk_layer_runs(model, chunk_layers)]
            forward_ops = [(lp.host_forward_s, lp.gpu_forward_s, n) for lp, n in runs]
            backward_ops = [(lp.host_backward_s, lp.gpu_backward_s, n) for lp, n in reversed(runs)]
            kinds = cfg.chunk_layer_kinds(model, chunk_layers)  # a fresh dict
            last_chunk = stage == cfg.pp - 1 and c == cfg.vpp - 1
            if last_chunk and model.num_mtp_layers:  # the MTP modules end the last chunk
                mtp_forward, mtp_backward = mtp_ops(model, cfg, gpu, passes)
                forward_ops += mtp_forward
                backward_ops = mtp_backward + backward_ops
                kind = mtp_kind(model, cfg)
                kinds[kind] = kinds.get(kind, 0) + model.num_mtp_layers
            for (is_moe, bf16, mode), count in sorted(kinds.items()):
                lp = passes.get_kind(is_moe, bf16, mode)
                totals["compute_s"] += lp.compute_s * m * count
                totals["recompute_s"] += lp.recompute_s * m * count
                totals["tp_comm_s"] += lp.tp_busy_s * m * count
                totals["tp_exposed_s"] += lp.tp_exposed_s * m * count
                totals["ep_comm_s"] += lp.ep_busy_s * m * count
                totals["ep_exposed_s"] += lp.ep_exposed_s * m * count
                totals["cp_comm_s"] += lp.cp_busy_s * m * count
                totals["cp_exposed_s"] += lp.cp_exposed_s * m * count
            if c == 0 and (stage == 0 or vocab_parallel):  # the embedding opens the pass
                embed_f, embed_b = embedding_passes(model, cfg, gpu, links)
                forward_ops.insert(0, (0.0, embed_f, 1))
                backward_ops.append((0.0, embed_b, 1))
            if vocab_parallel and c == cfg.vpp - 1:
                forward_ops.append((0.0, vocab_f, 1))
                backward_ops.insert(0, (0.0, vocab_b, 1))
            elif last_chunk:
                head_f, head_b = head_time(model, cfg, gpu)
                forward_ops.append((0.0, head_f, 1))  # the loss ends the forward
                backward_ops.insert(0, (0.0, head_b, 1))  # and starts the backward
            chunk = ChunkTimes(forward_s=host_gpu_flow_s(forward_ops),
                               backward_s=host_gpu_flow_s(backward_ops), send_s=send)
            # what the GPU idles waiting on the host: the flow shop's pass beyond its GPU work
            totals["host_wait_s"] += m * (
                chunk.forward_s - sum(g * n for _, g, n in forward_ops)
                + chunk.backward_s - sum(g * n for _, g, n in backward_ops))
            row.append(chunk)
        chunks.append(row)
    zero3_busy = zero3_exposed = 0.0
    if cfg.zero >= 3 and not cfg.fsdp_keeps_params:  # gathered per pass, prefetched
        gather_s, regather_s, reduce_s = _zero3_per_microbatch(model, cfg, rings[Axis.DP],
                                                               rings[Axis.EDP])
        backward_comm = regather_s + reduce_s
        zero3_busy = (gather_s + backward_comm) * m
        zero3_exposed = m * max(
            sum(max(0.0, gather_s - ch.forward_s) + max(0.0, backward_comm - ch.backward_s)
                for ch in row) for row in chunks)
        chunks = [[ChunkTimes(forward_s=max(ch.forward_s, gather_s),
                              backward_s=max(ch.backward_s, backward_comm),
                              send_s=ch.send_s) for ch in row] for row in chunks]
    if exact:
        pipeline = simulate(chunks, cfg.num_microbatches, cfg.group_size)
    else:
        makespan = fast_makespan(chunks, cfg.num_microbatches)
        busy = tuple(sum(c.forward_s + c.backward_s for c in row) * cfg.num_microbatches
                     for row in chunks)
        pipeline = PipelineResult(makespan_s=makespan, busy_s=busy)

    dp_busy, dp_exposed = _gradient_sync(model, cfg, rings[Axis.DP], rings[Axis.EDP])
    optimizer = _optimizer_s(model, cfg, gpu)
    iteration = pipeline.makespan_s + dp_exposed + optimizer
    world = cfg.world_size
    model_flops = model_flops_per_step(model, cfg)
    hardware_flops = hardware_flops_per_step(model, cfg)
    peak = gpu.peak(cfg.precision.value)
    breakdown = {
        "pipeline_s": pipeline.makespan_s,
        "bubble_s": pipeline.bubble_s,
        "pp_send_s": send,
        # ZeRO-3's per-pass gathers and reduce-scatters count here too; what they expose is
        # inside pipeline_s (the passes wait for them), the rest of dp_exposed_s follows it
        "dp_comm_s": dp_busy + zero3_busy,
        "dp_exposed_s": dp_exposed + zero3_exposed,
        "optimizer_s": optimizer,
        # busy totals summed over the stages (per GPU of each stage), for comparison
        **{k: v / cfg.pp for k, v in totals.items()},
    }
    return StepTime(
        iteration_s=iteration,
        tokens_per_s=cfg.global_batch * cfg.seq_len / iteration,
        model_tflops_per_gpu=model_flops / iteration / world / 1e12,
        mfu=model_flops / iteration / world / peak,
        hfu=hardware_flops / iteration / world / peak,
        breakdown=tuple(sorted((k, float(v)) for k, v in breakdown.items())),
        calibrated=gpu.id in STEP_TIME_VALIDATED_GPUS and cfg.precision is Precision.BF16,
        stages=tuple(StageTime(stage=i, forward_s=sum(c.forward_s for c in row),
                               backward_s=sum(c.backward_s for c in row),
                               busy_s=float(pipeline.busy_s[i]))
                     for i, row in enumerate(chunks)),
    )


def _zero3_per_microbatch(model: ModelSpec, cfg: ParallelConfig, dp_ring: comm.RingLink,
                          edp_ring: comm.RingLink) -> tuple[float, float, float]:
    """ZeRO-3 / FSDP (Rajbhandari et al. 2020 Sec. 7.2.2): every micro-batch all-gathers the
    16-bit parameters for its forward and again for its backward, and reduce-scatters the
    gradients: (forward gathers, backward gathers, reduce-scatters) seconds. pp is 1 with
    ZeRO-3.

    A layer that DeepSpeed recomputes whole is gathered a third time, for the recompute:
    DeepSpeed's gathers hang on every submodule's forward pre-hook, and the recompute in the
    backward runs those forwards again (DeepSpeed issue #4784: pre_sub_module_forward_function
    fires in the recompute, taken there for a forward step). FSDP's hooks sit on the wrapping
    unit, outside the checkpointed block (torchtitan applies activation checkpointing before
    fully_shard), so its backward gather serves the recompute too.

    One collective per transformer layer and one for the rest (embedding, final norm, head):
    FSDP's wrapping unit in torchtitan and Megatron-FSDP; DeepSpeed ZeRO-3 gathers per
    submodule, finer still (deepspeed_gathers_per_layer collectives per layer). Each pays the
    ring's (n - 1) latency steps, which at thousands of ranks is milliseconds per collective."""
    policy = config_policy(cfg)
    layers = stage_layers(model, cfg)[0]
    params = stage_params(model, cfg, 0, layers)
    deepspeed = cfg.framework is Framework.DEEPSPEED
    # (dense, expert parameters, collectives, kept in bf16, gathered again to recompute) of
    # each layer, one unit for the rest
    units: Counter[tuple[float, float, int, bool, bool]] = Counter(
        (*layer_params(model, cfg, i),
         deepspeed_gathers_per_layer(model, cfg, i) if deepspeed else 1,
         cfg.layer_in_bf16(model, i),
         deepspeed and cfg.layer_recompute(position) is Recompute.FULL)
        for position, i in enumerate(layers))
    # the rest: the vocabulary layers (their share gathered 16-bit), final norm, MTP
    rest_dense = params.dense - sum(d * n for (d, *_), n in units.items())
    rest_expert = params.expert - sum(e * n for (_, e, *_), n in units.items())
    # (dense, expert, their parameters gathered 16-bit, collectives, regathered, units)
    pieces = [(dense, expert, (dense, expert) if bf16 else (0.0, 0.0), k, again, count)
              for (dense, expert, k, bf16, again), count in units.items()]
    pieces.append((rest_dense, rest_expert, (float(params.vocab), 0.0), 1, False, 1))
    gather = regather = reduce = 0.0
    for dense, expert, (dense16, expert16), k, again, count in pieces:
        for size, ring, size16 in ((dense, dp_ring, dense16), (expert, edp_ring, expert16)):
            if size > 0:  # k collectives of size / k: the bandwidth term once, latency k times
                gathered = policy.gathered_bytes(size, size16)
                seconds = count * k * comm.all_gather_s(gathered / k, ring)
                gather += seconds
                regather += seconds * (2 if again else 1)
                reduce += count * k * comm.all_gather_s(size * policy.grad_bytes / k, ring)
    return gather, regather, reduce


def bf16_layer_params(model: ModelSpec, cfg: ParallelConfig,
                      layers: tuple[int, ...]) -> tuple[float, float]:
    """(dense, routed-expert) parameters on one GPU of the layers among `layers` that fp8
    training keeps in bf16 (ParallelConfig.bf16_layers): Megatron builds them outside
    fp8_model_init, so even with --fp8-param-gather they are 16-bit and gather 16-bit."""
    if cfg.precision is not Precision.FP8 or cfg.bf16_layers == (0, 0):
        return 0.0, 0.0
    shares = [layer_params(model, cfg, i) for i in layers if cfg.layer_in_bf16(model, i)]
    return sum(d for d, _ in shares), sum(e for _, e in shares)


# DeepSpeed's stage3_prefetch_bucket_size default: parameters (elements) one coalesced
# all-gather fetches at most (deepspeed/runtime/zero/config.py).
DEEPSPEED_PREFETCH_BUCKET = 50_000_000


def deepspeed_gathers_per_layer(model: ModelSpec, cfg: ParallelConfig, layer: int) -> int:
    """All-gathers DeepSpeed ZeRO-3 issues for one transformer layer: it fetches parameters per
    submodule (each linear), coalescing consecutive ones up to the prefetch bucket
    (partitioned_param_coordinator.fetch_sub_module; DeepSpeed issue #5047 compares its many
    per-linear all-gathers with FSDP's one per block). Linears in model order, packed greedily
    into buckets of DEEPSPEED_PREFETCH_BUCKET elements; a linear larger than the bucket is its
    own gather."""
    sizes = [p.in_dim * p.out_dim / cfg.tp for p in model.attention_projections()]
    moe = model.moe
    if moe is not None and model.is_moe_layer(layer):
        experts = cfg.local_experts(model)
        sizes += [p.in_dim * p.out_dim / cfg.expert_tp
                  for _ in range(round(experts)) for p in model.mlp_projections(
                      moe.ffn_hidden_size)]
        if moe.shared_width:
            sizes += [p.in_dim * p.out_dim / cfg.tp
                      for p in model.mlp_projections(moe.shared_width)]
    else:
        sizes += [p.in_dim * p.out_dim / cfg.tp
                  for p in model.mlp_projections(model.ffn_hidden_size)]
    gathers, bucket = 0, 0.0
    for size in sizes:
        if bucket and bucket + size > DEEPSPEED_PREFETCH_BUCKET:
            gathers += 1
            bucket = 0.0
        bucket += size
    return gathers + (1 if bucket else 0)


def _gradient_sync(model: ModelSpec, cfg: ParallelConfig, dp_ring: comm.RingLink,
                   edp_ring: comm.RingLink) -> tuple[float, float]:
    """(busy, exposed) seconds of the gradient reduction and parameter all-gather, for the
    stage with the most parameters. Each is exposed whole unless it overlaps
    (ParallelConfig.grad_reduce_hidden for the reduction, param_gather_hidden for the
    gather: Megatron's --overlap-param-gather; DeepSpeed's ZeRO-1/2 gather after the step)."""
    policy = config_policy(cfg)
    grad_bytes = policy.grad_bytes
    worst_busy = worst_exposed = 0.0
    for stage, layers in enumerate(stage_layers(model, cfg)):
        params = stage_params(model, cfg, stage, layers)
        busy = exposed = 0.0
        if cfg.zero >= 3 and not cfg.fsdp_keeps_params:  # per micro-batch, in the passes
            continue
        bf16_dense, bf16_expert = bf16_layer_params(model, cfg, layers)
        for count, ring, sixteen in ((params.dense, dp_ring, params.vocab + bf16_dense),
                                     (params.expert, edp_ring, bf16_expert)):
            if ring.size == 1 or count == 0:
                continue
            # the distributed optimizer gathers GEMM weights in fp8 with --fp8-param-gather,
            # the vocabulary layers and the layers kept in bf16 in 16-bit
            gathered = policy.gathered_bytes(count, sixteen)
            if cfg.zero >= 1 and cfg.dist_opt_instances > 1:
                # reduce-scatter and gather within a copy's ranks, all-reduce the shards
                # across the copies (approximated on the data-parallel ring's links)
                k = cfg.dist_opt_instances
                inner = dataclasses.replace(ring, size=max(1, ring.size // k), curves=())
                across = dataclasses.replace(ring, size=k, curves=())
                reduce = (comm.all_gather_s(count * grad_bytes, inner)
                          + comm.all_reduce_s(count * grad_bytes / inner.size, across))
                gather = comm.all_gather_s(gathered, inner)
            elif cfg.zero >= 1:
                reduce = comm.all_gather_s(count * grad_bytes, ring)
                gather = comm.all_gather_s(gathered, ring)
            else:
                reduce, gather = comm.all_reduce_s(count * grad_bytes, ring), 0.0
            busy += reduce + gather
            # FSDP reduces (and gathers) one block at a time, Megatron and DeepSpeed by
            # bucket: what overlaps leaves the last bucket's exposed
            if cfg.fsdp_keeps_params:
                bucket = params.largest_layer
            elif cfg.framework is Framework.DEEPSPEED:
                bucket = DEEPSPEED_BUCKET_PARAMS
            else:
                bucket = max(BUCKET_PARAMS, 1_000_000 * ring.size)
            share = min(1.0, bucket / count)
            exposed += reduce * (share if cfg.grad_reduce_hidden else 1.0)
            exposed += gather * (share if cfg.param_gather_hidden else 1.0)
        worst_busy = max(worst_busy, busy)
        worst_exposed = max(worst_exposed, exposed)
    return worst_busy, worst_exposed


def _optimizer_s(model: ModelSpec, cfg: ParallelConfig, gpu: GpuType) -> float:
    """The Adam step is memory-bound: OPTIMIZER_BYTES_PER_PARAM per parameter this GPU
    updates (its shard with the distributed optimizer), for the busiest stage."""
    worst = 0.0
    for stage, layers in enumerate(stage_layers(model, cfg)):
        params = stage_params(model, cfg, stage, layers)
        dense, expert = float(params.dense), float(params.expert)
        if cfg.zero >= 1:
            dense /= cfg.optimizer_shards
            expert /= max(1, cfg.expert_dp // cfg.dist_opt_instances)
        bytes_per = OPTIMIZER_BYTES_PER_PARAM + (2 if cfg.precision is Precision.FP8 else 0)
        worst = max(worst, memory_time_s((dense + expert) * bytes_per, gpu))
    return worst
