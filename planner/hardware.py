"""What the job runs on: nodes, links and islands, and the `link(a, b)` query.

A GPU is addressed by its global index (node-major, as torchrun numbers ranks when nodes and
local ranks are in order) or by `"node:local"`. `Cluster.link(a, b)` answers bandwidth and latency
from the most specific value the profile holds, following the resolution rules of
shared/reference/hardware.md Sec. 5.4:

1. a GPU-pair override, then a node-pair override (directional; mirrored unless asymmetric);
2. same node: the intra-node matrix entry, else the node's switch fabric bandwidth;
3. different nodes of one island: the measured node-pair matrix, else the slower of the two
   NICs serving the GPUs (a NIC shared by k GPUs gives each 1/k), else the island default;
   an oversubscribed fabric divides the unmeasured rates by its oversubscription (every GPU
   sends at once in a collective);
4. different islands: additionally capped by the inter-island link's per-node bandwidth
   shared by the node's GPUs and its aggregate bandwidth shared by the smaller island's GPUs;
   latency is the largest of the parts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from planner.gpus import GpuType


@dataclass(frozen=True, slots=True, kw_only=True)
class Link:
    """What one directed GPU-to-GPU path offers.

    Attributes:
        bandwidth_bytes_per_s: per direction.
        latency_s: per message.
        transport: nvlink, pcie, ib, roce, tcp, ...
        rule: which profile entry answered (shown in explanations).
    """

    bandwidth_bytes_per_s: float
    latency_s: float
    transport: str
    rule: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Nic:
    """A network interface and the local GPUs it serves."""

    name: str
    transport: str
    bandwidth_bytes_per_s: float
    latency_s: float
    gpus: tuple[int, ...]
    note: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class IntraFabric:
    """How the GPUs of one node talk.

    `fabric` is "switch" (all pairs equal: NVSwitch, or PCIe through one switch) or "matrix"
    (a measured per-pair matrix; `None` entries fall back to `bandwidth_bytes_per_s`).
    """

    fabric: str
    transport: str
    bandwidth_bytes_per_s: float
    latency_s: float
    bandwidth_matrix: tuple[tuple[float | None, ...], ...] = ()
    latency_matrix: tuple[tuple[float | None, ...], ...] = ()
    p2p: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeType:
    name: str
    gpu: GpuType
    num_gpus: int
    intra: IntraFabric
    nics: tuple[Nic, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Node:
    name: str
    node_type: NodeType
    island: str
    nics: tuple[Nic, ...]  # the node type's NICs with this node's overrides applied


@dataclass(frozen=True, slots=True, kw_only=True)
class Island:
    """A set of nodes on one fabric; `bandwidth_per_nic_bytes_per_s` is the default NIC rate."""

    name: str
    transport: str
    latency_s: float
    bandwidth_per_nic_bytes_per_s: float | None
    oversubscription: float = 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class InterIslandLink:
    islands: tuple[str, str]
    transport: str
    bandwidth_per_node_bytes_per_s: float
    aggregate_bytes_per_s: float | None
    latency_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class PairOverride:
    """A measured directed pair: GPUs (`local` set) or whole nodes (`local` None)."""

    src_node: int
    src_local: int | None
    dst_node: int
    dst_local: int | None
    bandwidth_bytes_per_s: float
    latency_s: float | None
    symmetric: bool
    note: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class CollectiveCurve:
    """A measured bus-bandwidth curve of one collective on a group shape (nccl-tests).

    Attributes:
        op: all_reduce, all_gather, reduce_scatter, all_to_all, sendrecv, ...
        num_ranks: ranks in the measured group.
        gpus_per_node: its GPUs on each node (the group's "signature" with num_ranks).
        points: (size_bytes, busbw_bytes_per_s), sizes ascending.
        source: where it was measured (file, tool).
    """

    op: str
    num_ranks: int
    gpus_per_node: int
    points: tuple[tuple[float, float], ...]
    source: str = ""

    def busbw(self, size_bytes: float) -> float:
        """Bus bandwidth at `size_bytes`, interpolated log-log between measured sizes and
        held constant beyond the ends (hardware.md Sec. 5.4)."""
        pts = self.points
        if size_bytes <= pts[0][0]:
            return pts[0][1]
        if size_bytes >= pts[-1][0]:
            return pts[-1][1]
        for (s0, b0), (s1, b1) in zip(pts, pts[1:], strict=False):
            if s0 <= size_bytes <= s1:
                frac = math.log(size_bytes / s0) / math.log(s1 / s0)
                return math.exp(math.log(b0) + frac * (math.log(b1) - math.log(b0)))
        return pts[-1][1]


@dataclass(frozen=True, slots=True, kw_only=True)
class Cluster:
    """A whole machine room as the planner sees it (immutable; built by hardware_io)."""

    name: str
    nodes: tuple[Node, ...]
    islands: tuple[Island, ...]
    inter_island: tuple[InterIslandLink, ...] = ()
    # node_pair_bandwidth[(src, dst)] = measured node-to-node bandwidth, bytes/s
    node_pair_bandwidth: tuple[tuple[tuple[int, int], float], ...] = ()
    pair_overrides: tuple[PairOverride, ...] = ()
    collective_curves: tuple[CollectiveCurve, ...] = ()
    provenance: str = ""
    # the node names are the site's host names (rich form), not numbered by the planner
    named_nodes: bool = False
    # lookup tables derived from the fields above
    _offsets: tuple[int, ...] = field(init=False, repr=False, compare=False)
    _pairs: dict[tuple[int, int], float] = field(init=False, repr=False, compare=False)
    _islands: dict[str, Island] = field(init=False, repr=False, compare=False)
    _node_index: dict[str, int] = field(init=False, repr=False, compare=False)
    _num_gpus: int = field(init=False, repr=False, compare=False)
    _width: int = field(init=False, repr=False, compare=False)  # GPUs per node if all equal
    _island_gpus: dict[str, int] = field(init=False, repr=False, compare=False)
    _uniform: bool = field(init=False, repr=False, compare=False)
    _gpu_types: tuple[GpuType, ...] = field(init=False, repr=False, compare=False)
    _min_width: int = field(init=False, repr=False, compare=False)  # fewest GPUs of a node
    _min_memory: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        offsets = []
        total = 0
        for node in self.nodes:
            offsets.append(total)
            total += node.node_type.num_gpus
        object.__setattr__(self, "_offsets", tuple(offsets))
        object.__setattr__(self, "_num_gpus", total)
        island_gpus: dict[str, int] = {}
        for node in self.nodes:
            island_gpus[node.island] = island_gpus.get(node.island, 0) + node.node_type.num_gpus
        object.__setattr__(self, "_island_gpus", island_gpus)
        widths = {node.node_type.num_gpus for node in self.nodes}
        object.__setattr__(self, "_width", widths.pop() if len(widths) == 1 else 0)
        object.__setattr__(self, "_pairs", dict(self.node_pair_bandwidth))
        object.__setattr__(self, "_islands", {i.name: i for i in self.islands})
        object.__setattr__(self, "_node_index", {n.name: i for i, n in enumerate(self.nodes)})
        seen: dict[str, GpuType] = {}
        for node in self.nodes:
            seen.setdefault(node.node_type.gpu.id, node.node_type.gpu)
        object.__setattr__(self, "_gpu_types", tuple(seen.values()))
        object.__setattr__(self, "_min_width", min(n.node_type.num_gpus for n in self.nodes))
        object.__setattr__(self, "_min_memory",
                           min(n.node_type.gpu.memory_bytes for n in self.nodes))
        first = self.nodes[0]
        object.__setattr__(self, "_uniform", (
            len(self.islands) == 1 and not self.node_pair_bandwidth and not self.pair_overrides
            and all(n.node_type is first.node_type and n.nics == first.node_type.nics
                    for n in self.nodes)))

    # ---- shape -------------------------------------------------------------------------------

    @property
    def num_gpus(self) -> int:
        return self._num_gpus

    @property
    def uniform(self) -> bool:
        """Every node alike, one island, nothing measured per pair or overridden per node:
        then groups of the same shape (node offsets and local indices) see the same links.
        (Computed once, in __post_init__.)"""
        return self._uniform

    @property
    def num_nodes(self) -> int:
        return len(self.nodes)

    @property
    def gpu_types(self) -> tuple[GpuType, ...]:
        """The GPU types of the nodes, in order of first appearance."""
        return self._gpu_types

    @property
    def min_gpu_memory_bytes(self) -> int:
        """The smallest device memory in the cluster (what a homogeneous plan must fit)."""
        return self._min_memory

    @property
    def gpus_per_node(self) -> int:
        """GPUs per node when all nodes agree; the smallest count otherwise."""
        return self._min_width

    def locate(self, gpu: int | str) -> tuple[int, int]:
        """(node index, local index) of a GPU given by global index or "node-name:local"."""
        if isinstance(gpu, str):
            name, _, local = gpu.rpartition(":")
            index = self._node_index.get(name)
            if index is None or not local.isdigit():
                raise KeyError(f"no GPU {gpu!r} in cluster {self.name}")
            if int(local) >= self.nodes[index].node_type.num_gpus:
                raise KeyError(f"no GPU {gpu!r} in cluster {self.name}")
            return index, int(local)
        if not 0 <= gpu < self._num_gpus:
            raise KeyError(f"GPU index {gpu} outside 0..{self._num_gpus - 1}")
        if self._width:  # every node has the same number of GPUs
            return divmod(gpu, self._width)
        offsets = self._offsets
        lo, hi = 0, len(offsets) - 1
        while lo < hi:  # last offset <= gpu
            mid = (lo + hi + 1) // 2
            if offsets[mid] <= gpu:
                lo = mid
            else:
                hi = mid - 1
        return lo, gpu - offsets[lo]

    def curve(self, op: str, num_ranks: int, gpus_per_node: int) -> CollectiveCurve | None:
        """The measured curve of `op` on a group of this shape, if the profile has one."""
        for c in self.collective_curves:
            if (c.op, c.num_ranks, c.gpus_per_node) == (op, num_ranks, gpus_per_node):
                return c
        return None

    def gpu_type(self, gpu: int | str) -> GpuType:
        node, _ = self.locate(gpu)
        return self.nodes[node].node_type.gpu

    # ---- links -------------------------------------------------------------------------------

    def link(self, a: int | str, b: int | str) -> Link:
        """Bandwidth and latency of the directed path a -> b (module docstring: the rules)."""
        src, dst = self.locate(a), self.locate(b)
        if src == dst:
            raise ValueError(f"link({a!r}, {b!r}): a GPU has no link to itself")
        override = self._override(src, dst)
        base = self._intra(src, dst) if src[0] == dst[0] else self._inter(src, dst)
        if override is None:
            return base
        return Link(
            bandwidth_bytes_per_s=override.bandwidth_bytes_per_s,
            latency_s=override.latency_s if override.latency_s is not None else base.latency_s,
            transport=base.transport,
            rule="pair override" + (f" ({override.note})" if override.note else ""),
        )

    def _override(self, src: tuple[int, int], dst: tuple[int, int]) -> PairOverride | None:
        gpu_level = None
        node_level = None
        for o in self.pair_overrides:
            forward = (o.src_node, o.dst_node) == (src[0], dst[0])
            backward = o.symmetric and (o.dst_node, o.src_node) == (src[0], dst[0])
            if o.src_local is None:
                if (forward or backward) and src[0] != dst[0]:
                    node_level = o
                continue
            if forward and (o.src_local, o.dst_local) == (src[1], dst[1]):
                gpu_level = o
            if backward and (o.dst_local, o.src_local) == (src[1], dst[1]):
                gpu_level = o
        return gpu_level or node_level

    def _intra(self, src: tuple[int, int], dst: tuple[int, int]) -> Link:
        fabric = self.nodes[src[0]].node_type.intra
        bandwidth, latency, rule = fabric.bandwidth_bytes_per_s, fabric.latency_s, "intra-node"
        if fabric.bandwidth_matrix:
            measured = fabric.bandwidth_matrix[src[1]][dst[1]]
            if measured is not None:
                bandwidth, rule = measured, "intra-node matrix"
        if fabric.latency_matrix:
            measured_latency = fabric.latency_matrix[src[1]][dst[1]]
            if measured_latency is not None:
                latency = measured_latency
        return Link(bandwidth_bytes_per_s=bandwidth, latency_s=latency,
                    transport=fabric.transport, rule=rule)

    def nic_share(self, node_index: int, local: int) -> tuple[Nic | None, float | None]:
        """The NIC serving a GPU and that GPU's share of it (bytes/s), when all GPUs it serves
        send at once (the case for collectives, where every rank is active)."""
        node = self.nodes[node_index]
        for nic in node.nics:
            if local in nic.gpus:
                return nic, nic.bandwidth_bytes_per_s / len(nic.gpus)
        return None, None

    def _inter(self, src: tuple[int, int], dst: tuple[int, int]) -> Link:
        src_node, dst_node = self.nodes[src[0]], self.nodes[dst[0]]
        src_island = self._islands[src_node.island]
        dst_island = self._islands[dst_node.island]
        latency = max(src_island.latency_s, dst_island.latency_s)
        measured = self._pairs.get((src[0], dst[0]))
        src_nic, src_share = self.nic_share(*src)
        dst_nic, dst_share = self.nic_share(*dst)
        serving = src_nic or dst_nic
        transport = serving.transport if serving is not None else src_island.transport
        for nic in (src_nic, dst_nic):
            if nic is not None:
                latency = max(latency, nic.latency_s)
        if measured is not None:  # measured as it was, oversubscription included
            bandwidth, rule = measured, "node-pair matrix"
        else:
            shares = [s for s in (src_share, dst_share) if s is not None]
            if shares:
                bandwidth, rule = min(shares), "NIC"
            else:
                defaults = [i.bandwidth_per_nic_bytes_per_s for i in (src_island, dst_island)
                            if i.bandwidth_per_nic_bytes_per_s is not None]
                if not defaults:
                    raise ValueError(
                        f"no bandwidth known between nodes {src_node.name} and {dst_node.name}"
                    )
                bandwidth, rule = min(defaults), "island default"
            oversubscription = max(src_island.oversubscription, dst_island.oversubscription)
            if oversubscription > 1:  # a blocking fabric when every GPU sends at once
                bandwidth /= oversubscription
                rule += f" / oversubscription {oversubscription:g}"
        if src_island.name != dst_island.name:
            bridge = self._bridge(src_island.name, dst_island.name)
            per_gpu = bridge.bandwidth_per_node_bytes_per_s / src_node.node_type.num_gpus
            if bridge.aggregate_bytes_per_s is not None:  # shared by the smaller island's GPUs
                share = bridge.aggregate_bytes_per_s / min(
                    self._island_gpus[src_island.name], self._island_gpus[dst_island.name])
                per_gpu = min(per_gpu, share)
            if per_gpu < bandwidth:
                bandwidth, rule = per_gpu, f"inter-island {bridge.transport}"
                transport = bridge.transport
            latency = max(latency, bridge.latency_s)
        return Link(bandwidth_bytes_per_s=bandwidth, latency_s=latency, transport=transport,
                    rule=rule)

    def _bridge(self, a: str, b: str) -> InterIslandLink:
        for bridge in self.inter_island:
            if set(bridge.islands) == {a, b}:
                return bridge
        raise ValueError(f"islands {a} and {b} have no inter_island link")
