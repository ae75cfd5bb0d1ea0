"""Collectives on the links each parallel group actually crosses.

Placement: Megatron-Core's rank order (parallel.RANK_ORDERS: tp fastest, then cp, dp, pp, or
pp before dp with --use-tp-pp-dp-mapping; expert parallelism folds into dp), with global rank
r on GPU r of the cluster (node-major, as torchrun numbers ranks). Every
group of each axis is resolved through `Cluster.link`, and the slowest group of an axis sets
the time (all groups of an axis run in lockstep), so one degraded link or a slow island shows.

A measured nccl-tests curve of the group's shape (op, ranks, GPUs per node) in the profile
takes precedence: time = size x the op's bus factor / measured busbw at that size.
Otherwise, collective times are the alpha-beta ring models NCCL's own performance notes use
(nccl-tests doc/PERFORMANCE.md, "bus bandwidth"): with n ranks and M bytes,
all-reduce 2(n-1)/n * M / B + 2(n-1) * a (or NCCL's tree, 2M / B + 2 log2(n) * a, when that is
faster: large groups, small messages), all-gather and reduce-scatter (n-1)/n * M / B +
(n-1) * a, where B is the bus bandwidth a GPU sustains on the ring and a the per-step latency
(on a ring the mean of its hops' latencies, as NCCL's tuning model counts them; the tree and
the all-to-all wait on the slowest link's).
A ring that spans nodes with k of its GPUs on each node runs k rings through k NICs, so its
inter-node hops carry k times one GPU's NIC share (shared/reference/hardware.md Sec. 3.2,
6.2: inter-node all-reduce busbw ~ min(intra busbw, node NIC aggregate)).
"""

from __future__ import annotations

import enum
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

from planner.hardware import Cluster, CollectiveCurve, Link
from planner.parallel import ParallelConfig


class Axis(enum.StrEnum):
    TP = "tp"
    CP = "cp"
    DP = "dp"  # the gradient group: data parallel x context parallel (Megatron dp_cp group)
    EP = "ep"
    EDP = "edp"  # expert data parallel
    PP = "pp"


@dataclass(frozen=True, slots=True, kw_only=True)
class RingLink:
    """What a collective over one group sustains.

    Attributes:
        bandwidth_bytes_per_s: ring bus bandwidth per GPU (inter-node hops x k rings).
        intra_bytes_per_s: slowest intra-node hop, per GPU.
        inter_bytes_per_s: slowest inter-node hop, per GPU (its NIC share), inf if none.
        gpus_per_node: k, the group's GPUs on each node (the fewest on any node).
    """

    bandwidth_bytes_per_s: float
    latency_s: float
    size: int
    # mean latency of the ring's hops (NVLink inside a node, the network between nodes); None:
    # latency_s, every hop alike
    hop_latency_s: float | None = None
    intra_bytes_per_s: float = float("inf")
    inter_bytes_per_s: float = float("inf")
    gpus_per_node: int = 1
    curves: tuple[CollectiveCurve, ...] = ()  # measured curves for this group's shape
    # NCCL_ALGO=Ring (what Megatron's --deterministic-mode runs with): all-reduces take the
    # ring, never the double binary tree
    ring_only: bool = False

    @property
    def ring_step_latency_s(self) -> float:
        """Latency per ring step: NCCL pipelines a ring collective's chunks hop by hop, so
        its n - 1 steps cost the sum of the hops' latencies along the ring, intra-node hops at
        NVLink latency and node crossings at the network's (NCCL src/graph/tuning.cc: ring
        latency = (nsteps - nInterSteps) x intraLat + nInterSteps x interLat)."""
        return self.latency_s if self.hop_latency_s is None else self.hop_latency_s

    def measured_busbw(self, op: str, size_bytes: float) -> float | None:
        for curve in self.curves:
            if curve.op == op:
                return curve.busbw(size_bytes)
        return None

    @property
    def spans_nodes(self) -> bool:
        return self.inter_bytes_per_s != float("inf")


def strides(cfg: ParallelConfig) -> tuple[int, int, int, int]:
    """(tp, cp, dp, pp) strides of `cfg.rank_order` (fastest axis first): rank = sum of
    coordinate x stride."""
    size = {"tp": cfg.tp, "cp": cfg.cp, "dp": cfg.dp, "pp": cfg.pp}
    stride, out = 1, {}
    for axis in cfg.rank_order.split("-"):
        out[axis] = stride
        stride *= size[axis]
    return out["tp"], out["cp"], out["dp"], out["pp"]


def rank_of(cfg: ParallelConfig, tp: int, cp: int, dp: int, pp: int) -> int:
    """Global rank of the given coordinates in `cfg.rank_order`."""
    s_tp, s_cp, s_dp, s_pp = strides(cfg)
    return tp * s_tp + cp * s_cp + dp * s_dp + pp * s_pp


def _offsets(cfg: ParallelConfig) -> tuple[list[int], list[int], list[int], list[int]]:
    """Each axis's coordinate x stride, for every coordinate: (tp, cp, dp, pp)."""
    s_tp, s_cp, s_dp, s_pp = strides(cfg)
    return ([t * s_tp for t in range(cfg.tp)], [c * s_cp for c in range(cfg.cp)],
            [d * s_dp for d in range(cfg.dp)], [p * s_pp for p in range(cfg.pp)])


def groups(cfg: ParallelConfig, axis: Axis) -> list[tuple[int, ...]]:
    """Every process group of `axis`, as global ranks in ring order (that of the axis's
    coordinate). Expert groups are laid over each stage's ranks in ascending order: expert-TP
    fastest, then EP, then expert-DP (Megatron's expert rank generator)."""
    out: list[tuple[int, ...]] = []
    tps, cps, dps, pps = _offsets(cfg)
    if axis is Axis.PP:
        return [tuple(t + c + d + p for p in pps) for t in tps for c in cps for d in dps]
    if axis is Axis.TP:
        return [tuple(t + c + d + p for t in tps) for p in pps for d in dps for c in cps]
    if axis is Axis.CP:
        return [tuple(t + c + d + p for c in cps) for p in pps for d in dps for t in tps]
    if axis is Axis.DP:  # data x context parallel: the gradient group
        return [tuple(t + c + d + p for d in dps for c in cps) for p in pps for t in tps]
    for p in pps:
        stage = sorted(t + c + d + p for t in tps for c in cps for d in dps)
        if axis is Axis.EP:
            step, size = cfg.expert_tp, cfg.ep
        else:
            step, size = cfg.expert_tp * cfg.ep, cfg.expert_dp
        block = step * size
        for base in range(0, len(stage), block):
            for offset in range(step):
                out.append(tuple(stage[base + offset + i * step] for i in range(size)))
    return out


def _hop_shape(src: int, dst: int, width: int) -> tuple[int, int, int]:
    """What a hop's link depends on in a uniform cluster (GPU g is local g % width of node
    g // width): the node offset and the two local indices."""
    return dst // width - src // width, src % width, dst % width


def ring_link(cluster: Cluster, members: tuple[int, ...]) -> RingLink:
    """Bus bandwidth and step latency of a ring over `members` (module docstring)."""
    size = len(members)
    if size == 1:
        return RingLink(bandwidth_bytes_per_s=float("inf"), latency_s=0.0, size=1)
    nodes = [cluster.locate(g)[0] for g in members]
    per_node = min(Counter(nodes).values())
    intra = inter = float("inf")
    latency = total_latency = 0.0
    width = cluster.gpus_per_node
    # on a uniform cluster a hop's link depends only on its shape (node offset, local indices)
    by_shape: dict[tuple[int, int, int], Link] = {}
    for i, src in enumerate(members):
        dst = members[(i + 1) % size]
        if cluster.uniform:
            shape = _hop_shape(src, dst, width)
            link = by_shape.get(shape) or by_shape.setdefault(shape, cluster.link(src, dst))
        else:
            link = cluster.link(src, dst)
        latency = max(latency, link.latency_s)
        total_latency += link.latency_s
        if nodes[i] == nodes[(i + 1) % size]:
            intra = min(intra, link.bandwidth_bytes_per_s)
        else:
            inter = min(inter, link.bandwidth_bytes_per_s)
    curves = tuple(c for c in cluster.collective_curves
                   if (c.num_ranks, c.gpus_per_node) == (size, per_node))
    return RingLink(bandwidth_bytes_per_s=min(intra, inter * per_node), latency_s=latency,
                    size=size, intra_bytes_per_s=intra, inter_bytes_per_s=inter,
                    gpus_per_node=per_node, curves=curves, hop_latency_s=total_latency / size)


def _lattice(cfg: ParallelConfig, axis: Axis
             ) -> tuple[Iterator[int], list[int], list[tuple[int, int]]] | None:
    """The groups of `axis` as base + fixed offsets: (bases in groups()' order, generated as
    asked, offsets in ring order, (count, stride) of the terms every base is a sum of).
    Expert axes take this form when each stage's ranks are contiguous (pp the slowest
    axis); None otherwise."""
    s_tp, s_cp, s_dp, s_pp = strides(cfg)
    tps, cps, dps, pps = _offsets(cfg)
    if axis is Axis.TP:
        return ((c + d + p for p in pps for d in dps for c in cps), tps,
                [(cfg.cp, s_cp), (cfg.dp, s_dp), (cfg.pp, s_pp)])
    if axis is Axis.CP:
        return ((t + d + p for p in pps for d in dps for t in tps), cps,
                [(cfg.tp, s_tp), (cfg.dp, s_dp), (cfg.pp, s_pp)])
    if axis is Axis.DP:
        return ((t + p for p in pps for t in tps), [d + c for d in dps for c in cps],
                [(cfg.tp, s_tp), (cfg.pp, s_pp)])
    if axis is Axis.PP:
        return ((t + c + d for t in tps for c in cps for d in dps), pps,
                [(cfg.tp, s_tp), (cfg.cp, s_cp), (cfg.dp, s_dp)])
    stage = cfg.tp * cfg.cp * cfg.dp
    if s_pp != stage:  # a stage's ranks are not contiguous: groups() sorts them
        return None
    if axis is Axis.EP:
        step, size = cfg.expert_tp, cfg.ep
    else:
        step, size = cfg.expert_tp * cfg.ep, cfg.expert_dp
    block = step * size
    bases = (p + b + o for p in pps for b in range(0, stage, block) for o in range(step))
    return (bases, [i * step for i in range(size)],
            [(cfg.pp, s_pp), (stage // block, block), (step, 1)])


def representative_groups(cluster: Cluster, cfg: ParallelConfig,
                          axis: Axis) -> list[tuple[int, ...]]:
    """The groups of `axis` that stand for all of them: every group on a non-uniform
    cluster; on a uniform one, groups of the same shape see the same links, so one group per
    shape. Groups of the form base + fixed offsets (_lattice) have a shape that depends only
    on the base modulo the node width: once a group of every base residue (the residues the
    base's terms can sum to) has been seen, the rest only repeat shapes."""
    width = cluster.gpus_per_node
    lattice = _lattice(cfg, axis) if cluster.uniform else None
    if lattice is not None:
        bases, offsets, terms = lattice
        residues = {0}
        for count, stride in terms:
            steps = {k * stride % width for k in range(min(count, width))}
            residues = {(r + k) % width for r in residues for k in steps}
        by_residue: dict[int, tuple[int, ...]] = {}
        for base in bases:  # in groups()' order: the same representative of each shape
            by_residue.setdefault(base % width, tuple(base + o for o in offsets))
            if len(by_residue) == len(residues):
                break
        return list(by_residue.values())
    members = groups(cfg, axis)
    if not cluster.uniform:
        return members
    by_shape: dict[tuple[tuple[int, int], ...], tuple[int, ...]] = {}
    for group in members:  # every node alike: GPU g is local g % w of node g // w
        first = group[0] // width
        shape = tuple((g // width - first, g % width) for g in group)
        by_shape.setdefault(shape, group)
    return list(by_shape.values())


def slowest_ring(cluster: Cluster, cfg: ParallelConfig, axis: Axis) -> RingLink:
    """The slowest ring of all groups of `axis` (they run in lockstep), among the groups that
    stand for all (representative_groups)."""
    rings = [ring_link(cluster, g) for g in representative_groups(cluster, cfg, axis)]
    return min(rings, key=lambda r: (r.bandwidth_bytes_per_s, -r.latency_s))


def all_reduce_s(num_bytes: float, ring: RingLink) -> float:
    """A measured curve of the group's shape takes precedence over the ring model; otherwise
    the faster of the ring and the tree, or the ring where NCCL_ALGO pins it (ring_only)."""
    n = ring.size
    if n == 1 or num_bytes == 0:
        return 0.0
    measured = ring.measured_busbw("all_reduce", num_bytes)
    if measured is not None:  # nccl-tests: time = size x 2(n-1)/n / busbw
        return 2 * (n - 1) / n * num_bytes / measured
    ring_s = 2 * (n - 1) / n * num_bytes / ring.bandwidth_bytes_per_s + 2 * (n - 1) * (
        ring.ring_step_latency_s)
    # NCCL's double binary tree (Sanders et al. 2009; NCCL 2.4+): each rank sends and
    # receives about the message twice over, at the same bus bandwidth, in 2 log2(n) latency
    # steps; NCCL picks whichever is faster.
    if ring.ring_only:
        return ring_s
    tree_s = 2 * num_bytes / ring.bandwidth_bytes_per_s + 2 * math.ceil(math.log2(n)) * (
        ring.latency_s)
    return min(ring_s, tree_s)


def all_gather_s(num_bytes: float, ring: RingLink) -> float:
    """All-gather (or reduce-scatter) of a `num_bytes` result."""
    n = ring.size
    if n == 1 or num_bytes == 0:
        return 0.0
    measured = ring.measured_busbw("all_gather", num_bytes) or ring.measured_busbw(
        "reduce_scatter", num_bytes)
    if measured is not None:
        return (n - 1) / n * num_bytes / measured
    return ((n - 1) / n * num_bytes / ring.bandwidth_bytes_per_s
            + (n - 1) * ring.ring_step_latency_s)


def all_to_all_s(num_bytes: float, ring: RingLink, *, latency: bool = True) -> float:
    """All-to-all where each rank holds `num_bytes` and sends 1/n of it to every rank: (k-1)/n
    of it stays on the node (intra-node links), (n-k)/n leaves through the GPU's own NIC; both
    run at once, the slower sets the time. `latency=False` gives the bandwidth term alone."""
    n = ring.size
    if n == 1 or num_bytes == 0:
        return 0.0
    k = ring.gpus_per_node if ring.spans_nodes else n
    intra = (k - 1) / n * num_bytes / ring.intra_bytes_per_s if k > 1 else 0.0
    inter = (n - k) / n * num_bytes / ring.inter_bytes_per_s if n > k else 0.0
    return max(intra, inter) + ((n - 1) * ring.latency_s if latency else 0.0)


def all_reduce_bandwidth_s(num_bytes: float, ring: RingLink) -> float:
    """A lower bound on all_reduce_s: the ring's bandwidth term 2(n-1)/n x bytes / bandwidth,
    which the double binary tree (2 x bytes / bandwidth) never beats; 0 where a measured
    curve decides instead."""
    n = ring.size
    if n == 1 or ring.measured_busbw("all_reduce", num_bytes) is not None:
        return 0.0
    return 2 * (n - 1) / n * num_bytes / ring.bandwidth_bytes_per_s


def pipeline_link(cluster: Cluster, cfg: ParallelConfig) -> RingLink:
    """The slowest stage-to-stage hop of the placement (pairs with the same tp, cp and dp
    ranks in adjacent stages), as a two-rank link."""
    if cfg.pp == 1:
        return RingLink(bandwidth_bytes_per_s=float("inf"), latency_s=0.0, size=1)
    worst: tuple[float, float] | None = None
    width, uniform = cluster.gpus_per_node, cluster.uniform
    seen: set[tuple[int, int, int]] = set()  # on a uniform cluster, hops of one shape match
    for group in representative_groups(cluster, cfg, Axis.PP):
        for src, dst in zip(group, group[1:], strict=False):
            if uniform:
                shape = _hop_shape(src, dst, width)
                if shape in seen:
                    continue
                seen.add(shape)
            link = cluster.link(src, dst)
            if worst is None or link.bandwidth_bytes_per_s < worst[0]:
                worst = (link.bandwidth_bytes_per_s, link.latency_s)
    assert worst is not None
    return RingLink(bandwidth_bytes_per_s=worst[0], latency_s=worst[1], size=2)


def broadcast_s(num_bytes: float, ring: RingLink) -> float:
    """Pipelined ring broadcast of `num_bytes` from one rank to the group (nccl-tests: bus
    factor 1): M / B + (n - 1) steps of latency."""
    if ring.size == 1 or num_bytes == 0:
        return 0.0
    return num_bytes / ring.bandwidth_bytes_per_s + (ring.size - 1) * ring.latency_s


def p2p_s(num_bytes: float, link: RingLink) -> float:
    """Send of `num_bytes` over a stage-to-stage link (pipeline_link)."""
    if link.size == 1 or num_bytes == 0:
        return 0.0
    return num_bytes / link.bandwidth_bytes_per_s + link.latency_s
