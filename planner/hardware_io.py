"""Loading cluster profiles: the minimal form of DESIGN.md and the rich form
(`schema: planner.hardware/v1`, shared/reference/hardware.md Sec. 5, with unit-suffixed keys as
STYLE.md asks). Every problem of a file is reported at once."""

from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path

import yaml

from planner import nccl_tests, topo
from planner.errors import InputError
from planner.gpus import GPU_CATALOG, PCIE4_BYTES_PER_S, UNMEASURED_MATMUL_FRAC, GpuType
from planner.hardware import (
    Cluster,
    CollectiveCurve,
    InterIslandLink,
    IntraFabric,
    Island,
    Nic,
    Node,
    NodeType,
    PairOverride,
)
from planner.schema import Reader, read_document, read_text
from planner.units import GB, TB, TFLOPS, US, GiB

SCHEMA = "planner.hardware/v1"

# Per-step latencies used when a profile gives none: NCCL's own model of one ring step with
# the Simple protocol (src/graph/tuning.cc: NVLink 3.4, PCIe 5.7, network 14 us; summarized in
# shared/reference/hardware.md Sec. 3.5) and NCCL over TCP sockets (~45 us for 8 B,
# NVIDIA/nccl-tests#82).
NVLINK_LATENCY_US = 3.4
PCIE_LATENCY_US = 5.7
NET_LATENCY_US = 14.0
TCP_LATENCY_US = 45.0
TRANSPORTS = ("nvlink", "nvswitch", "pcie", "xgmi", "ib", "roce", "efa", "tcp", "slingshot")


def builtin_profiles_dir() -> Path:
    """Where the shipped profiles live: the checkout's profiles/ (editable install), else
    <prefix>/share/planner/profiles (wheel install, pyproject's data-files)."""
    checkout = Path(__file__).resolve().parent.parent / "profiles"
    if checkout.is_dir():
        return checkout
    return Path(sys.prefix) / "share" / "planner" / "profiles"


def builtin_profiles() -> dict[str, Path]:
    directory = builtin_profiles_dir()
    if not directory.is_dir():
        return {}
    return {p.stem: p for p in sorted(directory.glob("*.yaml"))}


def load_cluster(ref: str) -> Cluster:
    """Resolve `--cluster`: a built-in profile name (`planner profiles`) or a YAML path."""
    profiles = builtin_profiles()
    if ref in profiles:
        path = profiles[ref]
    else:
        path = Path(ref)
        if not path.exists():
            raise InputError(
                f"--cluster {ref!r}: not a built-in profile and no such file",
                hint="built-in profiles: " + ", ".join(profiles) + " (see `planner profiles`)",
            )
    return cluster_from_dict(read_document(path), str(path))


def cluster_from_dict(data: object, source: str) -> Cluster:
    r = Reader(source, data)
    if r.has("schema") or r.has("node_types"):
        return _rich(r)
    return _minimal(r)


# ---- GPU types --------------------------------------------------------------------------------

def _gpu(r: Reader, key: str, custom: dict[str, GpuType]) -> GpuType | None:
    value = r.raw(key)
    if isinstance(value, str):
        gpu = custom.get(value) or GPU_CATALOG.get(value.lower())
        if gpu is None:
            known = ", ".join(sorted(set(GPU_CATALOG) | set(custom)))
            r.fail(key, f"unknown GPU {value!r}; expected one of {known}, or a mapping "
                   "{memory_GiB, memory_bandwidth_TBps, peak_tflops: {bf16: ...}}")
        return gpu
    if value is None:
        r.fail(key, "missing; expected a GPU catalog id (see README) or a mapping")
        return None
    child = r.child(key)
    assert child is not None
    return _gpu_mapping(child, str(value.get("name", key)) if isinstance(value, dict) else key)


def _gpu_mapping(r: Reader, gpu_id: str) -> GpuType | None:
    base_id = r.string("base", required=False)
    base = GPU_CATALOG.get(base_id.lower()) if base_id else None
    if base_id and base is None:
        r.fail("base", f"unknown GPU {base_id!r}")
    r.string("name", required=False)
    memory = r.number("memory_GiB", required=base is None)
    bandwidth = r.number("memory_bandwidth_TBps", required=base is None)
    scaleup = r.number("scaleup_bandwidth_GBps", positive=False, default=0.0)
    pcie = r.number("pcie_bandwidth_GBps", required=False)
    peaks: dict[str, float] = dict(base.peak_flops_per_s) if base else {}
    peak_reader = r.child("peak_tflops", required=base is None)
    if peak_reader is not None:
        for precision in list(peak_reader.data):
            value = peak_reader.number(str(precision))
            if value is not None:
                peaks[str(precision)] = value * TFLOPS
        if "bf16" not in peaks and "fp16" not in peaks:
            r.fail("peak_tflops", "needs at least bf16 (dense TFLOP/s)")
    num_sms = r.int("num_sms", default=base.num_sms if base else 0)
    fractions: dict[str, float] = (dict(base.matmul_frac) if base
                                   else {"bf16": UNMEASURED_MATMUL_FRAC})
    stated_fracs: dict[str, float] = {}
    frac_reader = r.child("matmul_efficiency")
    if frac_reader is not None:
        for precision in list(frac_reader.data):
            fraction = frac_reader.fraction(str(precision), default=-1.0)
            if fraction > 0:
                stated_fracs[str(precision)] = fraction
    fractions.update(stated_fracs)
    tdp = r.number("tdp_W", default=base.tdp_w if base else 0.0)
    limit = r.number("power_limit_W", required=False)
    if limit and not tdp:
        r.fail("power_limit_W", "needs the GPU's TDP to compare with: add tdp_W (its "
               "datasheet's maximum board power) or build the GPU on a catalog `base`")
    if limit and tdp and stated_fracs and limit < tdp:
        # a stated matmul_efficiency was measured at the stated limit: keep it as stated
        fractions.update({k: v * tdp / limit for k, v in stated_fracs.items()})
    r.string("source", required=False)
    r.unknown_keys(("base", "name", "memory_GiB", "memory_bandwidth_TBps",
                    "scaleup_bandwidth_GBps", "pcie_bandwidth_GBps", "peak_tflops", "source",
                    "num_sms", "matmul_efficiency", "tdp_W", "power_limit_W"))
    if not peaks:
        return None
    return GpuType(
        id=gpu_id,
        name=gpu_id,
        memory_bytes=int(memory * GiB) if memory else (base.memory_bytes if base else 0),
        memory_bandwidth_bytes_per_s=bandwidth * TB if bandwidth else (
            base.memory_bandwidth_bytes_per_s if base else 0.0),
        peak_flops_per_s=tuple(sorted(peaks.items())),
        scaleup_bytes_per_s=(scaleup or 0.0) * GB or (base.scaleup_bytes_per_s if base else 0.0),
        scaleup_kind=base.scaleup_kind if base else ("nvlink" if scaleup else "pcie"),
        pcie_bytes_per_s=pcie * GB if pcie else (
            base.pcie_bytes_per_s if base else PCIE4_BYTES_PER_S),
        num_sms=num_sms or 0,
        matmul_frac=tuple(sorted(fractions.items())),
        source=f"{r.source}: {r.prefix.rstrip('.')}",
        compute_capability=base.compute_capability if base else None,
        kernels_measured_on=base.kernels_measured_on if base else None,
        tdp_w=tdp or 0.0,
        power_limit_w=limit or 0.0,
    )


# ---- minimal form -----------------------------------------------------------------------------

_MINIMAL_KEYS = ("name", "gpu", "num_nodes", "gpus_per_node", "intra_node", "inter_node",
                 "provenance", "source")


def _link_spec(r: Reader, key: str, required: bool = True) -> tuple[float, float] | None:
    child = r.child(key, required=required)
    if child is None:
        return None
    bandwidth = child.number("bandwidth_GBps", unit_hint=" (GB/s per GPU, per direction)")
    latency = child.number("latency_us", positive=False,
                           default=NVLINK_LATENCY_US if key == "intra_node" else NET_LATENCY_US)
    child.string("transport", required=False)
    child.unknown_keys(("bandwidth_GBps", "latency_us", "transport", "source", "note"))
    if bandwidth is None:
        return None
    return bandwidth * GB, (latency or 0.0) * US


def _minimal(r: Reader) -> Cluster:
    name = r.string("name", default=Path(r.source).stem)
    gpu = _gpu(r, "gpu", {})
    num_nodes = r.int("num_nodes")
    per_node = r.int("gpus_per_node")
    intra = _link_spec(r, "intra_node", required=(per_node or 1) > 1)
    inter = _link_spec(r, "inter_node", required=(num_nodes or 1) > 1)
    r.unknown_keys(_MINIMAL_KEYS)
    r.check("see the cluster YAML forms in README.md")
    assert gpu and num_nodes and per_node and name
    intra_bw, intra_lat = intra or (gpu.scaleup_bytes_per_s or gpu.pcie_bytes_per_s,
                                    (NVLINK_LATENCY_US if gpu.scaleup_bytes_per_s
                                     else PCIE_LATENCY_US) * US)
    transport = "nvlink" if gpu.scaleup_bytes_per_s else "pcie"
    nics: tuple[Nic, ...] = ()
    if inter is not None:
        nics = tuple(
            Nic(name=f"nic{i}", transport="ib", bandwidth_bytes_per_s=inter[0],
                latency_s=inter[1], gpus=(i,))
            for i in range(per_node)
        )
    node_type = NodeType(
        name="node", gpu=gpu, num_gpus=per_node,
        intra=IntraFabric(fabric="switch", transport=transport, bandwidth_bytes_per_s=intra_bw,
                          latency_s=intra_lat),
        nics=nics,
    )
    island = Island(name="default", transport="ib", latency_s=inter[1] if inter else 0.0,
                    bandwidth_per_nic_bytes_per_s=inter[0] if inter else None)
    width = len(str(num_nodes - 1))
    nodes = tuple(Node(name=f"node{i:0{width}d}", node_type=node_type, island="default",
                       nics=nics) for i in range(num_nodes))
    return Cluster(name=name, nodes=nodes, islands=(island,), provenance=r.source)


# ---- rich form --------------------------------------------------------------------------------

_RICH_KEYS = ("schema", "name", "provenance", "gpu_types", "node_types", "islands",
              "inter_island", "measurements", "defaults")
_HOSTLIST = re.compile(r"^(?P<prefix>[^\[\]]*)\[(?P<lo>\d+)-(?P<hi>\d+)\](?P<suffix>[^\[\]]*)$")


def expand_hostlist(pattern: str) -> list[str]:
    """Expand one Slurm-style range, `gpu[001-016]` -> gpu001 ... gpu016 (zero padding kept)."""
    match = _HOSTLIST.match(pattern)
    if not match:
        raise ValueError(f"expected a name or a range like 'node[01-16]', got {pattern!r}")
    lo, hi = match.group("lo"), match.group("hi")
    if int(hi) < int(lo):
        raise ValueError(f"range {pattern!r} ends before it starts")
    width = len(lo)
    return [f"{match.group('prefix')}{i:0{width}d}{match.group('suffix')}"
            for i in range(int(lo), int(hi) + 1)]


def _matrix(r: Reader, key: str, size: int, scale: float) -> tuple[tuple[float | None, ...], ...]:
    value = r.raw(key)
    if value is None:
        return ()
    if (not isinstance(value, list) or len(value) != size
            or any(not isinstance(row, list) or len(row) != size for row in value)):
        r.fail(key, f"expected a {size}x{size} matrix (row = source, column = destination)")
        return ()
    rows = []
    for i, row in enumerate(value):
        out: list[float | None] = []
        for j, cell in enumerate(row):
            if cell is None or (i == j and isinstance(cell, str)):
                out.append(None)
            elif isinstance(cell, (int, float)) and not isinstance(cell, bool) and cell > 0:
                out.append(float(cell) * scale)
            else:
                r.fail(f"{key}[{i}][{j}]", f"expected a number > 0 or null, got {cell!r}")
                out.append(None)
        rows.append(tuple(out))
    return tuple(rows)


def _nic(r: Reader, num_gpus: int | None) -> Nic | None:
    name = r.string("name")
    transport = r.choice("transport", TRANSPORTS, default="ib")
    rate = r.number("rate_Gbps", required=False)
    bandwidth = r.number("bandwidth_GBps", required=rate is None,
                         unit_hint=" (measured GB/s per direction)")
    latency = r.number("latency_us", positive=False,
                       default=TCP_LATENCY_US if transport == "tcp" else NET_LATENCY_US)
    gpus_raw = r.raw("gpus")
    gpus: tuple[int, ...] = ()
    if not isinstance(gpus_raw, list) or not gpus_raw:
        r.fail("gpus", "expected a non-empty list of local GPU indices this NIC serves")
    else:
        for g in gpus_raw:
            if not isinstance(g, int) or isinstance(g, bool) or g < 0 or (
                    num_gpus is not None and g >= num_gpus):
                r.fail("gpus", f"GPU index {g!r} does not exist (node has {num_gpus} GPUs)")
        gpus = tuple(g for g in gpus_raw if isinstance(g, int))
    r.raw("rail")
    r.raw("gpudirect_rdma")
    r.raw("source")
    note = r.string("note", required=False) or ""
    r.unknown_keys(("name", "transport", "rate_Gbps", "bandwidth_GBps", "latency_us", "gpus",
                    "rail", "gpudirect_rdma", "source", "note"))
    if not name or not gpus:
        return None
    # Without a measurement, NCCL over IB/RoCE reaches ~90% of line rate (hardware.md Sec. 4.3:
    # NDR 400 Gb/s -> 46-49 GB/s, HDR 200 Gb/s -> ~24 GB/s).
    value = bandwidth * GB if bandwidth else (rate or 0.0) * GB / 8 * 0.9
    return Nic(name=name, transport=transport or "ib", bandwidth_bytes_per_s=value,
               latency_s=(latency or 0.0) * US, gpus=gpus, note=note)


COLLECTIVES = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all", "sendrecv",
               "broadcast", "reduce")


def _collective_curve(r: Reader) -> CollectiveCurve | None:
    """measurements.collective_curves[i]: {op, num_ranks, gpus_per_node, points:
    [[size_bytes, time_us, busbw_GBps], ...], source}."""
    op = r.choice("op", COLLECTIVES)
    num_ranks = r.int("num_ranks", minimum=2)
    per_node = r.int("gpus_per_node")
    raw = r.raw("points")
    points: list[tuple[float, float]] = []
    if not isinstance(raw, list) or not raw:
        r.fail("points", "expected a list of [size_bytes, time_us, busbw_GBps]")
    else:
        for i, row in enumerate(raw):
            ok = (isinstance(row, list) and len(row) == 3
                  and all(isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0
                          for x in row))
            if not ok:
                r.fail(f"points[{i}]", f"expected [size_bytes, time_us, busbw_GBps] > 0, "
                       f"got {row!r}")
                continue
            points.append((float(row[0]), float(row[2]) * GB))
        sizes = [p[0] for p in points]
        if sizes != sorted(set(sizes)):
            r.fail("points", "sizes must be strictly increasing")
    source = r.raw("source")
    for key in ("algo", "dtype", "note"):
        r.raw(key)
    r.unknown_keys(("op", "num_ranks", "gpus_per_node", "points", "source", "algo", "dtype",
                    "note"))
    if not (op and num_ranks and per_node and points) or r.problems:
        return None
    return CollectiveCurve(op=op, num_ranks=num_ranks, gpus_per_node=per_node,
                           points=tuple(points), source=str(source or ""))


def _node_type(r: Reader, name: str, custom: dict[str, GpuType]) -> NodeType | None:
    gpu = _gpu(r, "gpu", custom)
    num_gpus = r.int("num_gpus")
    intra_r = r.child("intra", required=(num_gpus or 1) > 1)
    intra = None
    if intra_r is not None:
        fabric = intra_r.choice("fabric", ("switch", "matrix"), default="switch")
        transport = intra_r.choice("transport", TRANSPORTS, default="nvlink")
        size = num_gpus or 0
        bw_matrix: tuple[tuple[float | None, ...], ...] = ()
        lat_matrix: tuple[tuple[float | None, ...], ...] = ()
        if fabric == "matrix":
            bw_matrix = _matrix(intra_r, "bandwidth_GBps", size, GB)
            if isinstance(intra_r.raw("latency_us"), list):
                lat_matrix = _matrix(intra_r, "latency_us", size, US)
            if not bw_matrix and not intra_r.problems:
                intra_r.fail("bandwidth_GBps", "fabric: matrix needs a bandwidth_GBps matrix")
            off_diagonal = [c for row in bw_matrix for c in row if c is not None]
            bandwidth = min(off_diagonal) if off_diagonal else None
            latency = PCIE_LATENCY_US if transport == "pcie" else NVLINK_LATENCY_US
            if not lat_matrix:
                latency = intra_r.number("latency_us", positive=False, default=latency) or 0.0
        else:
            bandwidth = intra_r.number("bandwidth_GBps", unit_hint=" (per GPU, per direction)")
            bandwidth = bandwidth * GB if bandwidth else None
            latency = intra_r.number("latency_us", positive=False,
                                     default=NVLINK_LATENCY_US) or 0.0
        p2p = intra_r.boolean("p2p", default=True)
        intra_r.raw("topo")
        intra_r.raw("source")
        intra_r.unknown_keys(("fabric", "transport", "bandwidth_GBps", "latency_us", "p2p",
                              "topo", "source", "note"))
        if bandwidth:
            intra = IntraFabric(fabric=fabric or "switch", transport=transport or "nvlink",
                                bandwidth_bytes_per_s=bandwidth, latency_s=latency * US,
                                bandwidth_matrix=bw_matrix, latency_matrix=lat_matrix, p2p=p2p)
    nics = [n for n in (_nic(x, num_gpus) for x in r.items("nics")) if n is not None]
    r.raw("source")
    r.unknown_keys(("gpu", "num_gpus", "intra", "nics", "source", "note"))
    if gpu is None or not num_gpus:
        return None
    if intra is None:  # a one-GPU node never uses its intra-node fabric
        intra = IntraFabric(fabric="switch", transport="pcie",
                            bandwidth_bytes_per_s=gpu.pcie_bytes_per_s,
                            latency_s=PCIE_LATENCY_US * US)
    return NodeType(name=name, gpu=gpu, num_gpus=num_gpus, intra=intra, nics=tuple(nics))


def _rich(r: Reader) -> Cluster:
    schema = r.string("schema", default=SCHEMA)
    if schema != SCHEMA:
        r.fail("schema", f"expected {SCHEMA!r}, got {schema!r}")
    name = r.string("name", default=Path(r.source).stem) or "cluster"
    provenance = r.raw("provenance")
    r.raw("defaults")
    custom: dict[str, GpuType] = {}
    gpu_types = r.child("gpu_types")
    if gpu_types is not None:
        for gpu_id in list(gpu_types.data):
            child = gpu_types.child(str(gpu_id))
            gpu = _gpu_mapping(child, str(gpu_id)) if child is not None else None
            if gpu is not None:
                custom[str(gpu_id)] = gpu
    node_types: dict[str, NodeType] = {}
    types_r = r.child("node_types", required=True)
    if types_r is not None:
        for type_name in list(types_r.data):
            child = types_r.child(str(type_name))
            built = _node_type(child, str(type_name), custom) if child is not None else None
            if built is not None:
                node_types[str(type_name)] = built

    islands: list[Island] = []
    nodes: list[Node] = []
    seen_names: set[str] = set()
    for island_r in r.items("islands", required=True):
        island_name: str = island_r.string("name") or f"island{len(islands)}"
        fabric = island_r.child("fabric")
        transport: str = "ib"
        latency: float = NET_LATENCY_US
        per_nic: float | None = None
        oversub: float = 1.0
        if fabric is not None:
            transport = fabric.choice("transport", TRANSPORTS, default="ib") or "ib"
            latency = fabric.number("latency_us", positive=False,
                                    default=NET_LATENCY_US) or 0.0
            per_nic = fabric.number("bandwidth_per_nic_GBps", required=False)
            oversub = fabric.number("oversubscription", default=1.0) or 1.0
            fabric.raw("topology")
            fabric.unknown_keys(("transport", "latency_us", "bandwidth_per_nic_GBps",
                                 "oversubscription", "topology"))
        islands.append(Island(name=island_name, transport=transport, latency_s=latency * US,
                              bandwidth_per_nic_bytes_per_s=per_nic * GB if per_nic else None,
                              oversubscription=oversub))
        for node_r in island_r.items("nodes", required=True):
            names: list[str] = []
            if node_r.has("names"):
                try:
                    names = expand_hostlist(str(node_r.raw("names")))
                except ValueError as exc:
                    node_r.fail("names", str(exc))
            else:
                single = node_r.string("name")
                names = [single] if single else []
            node_type_name = node_r.string("type")
            node_type = node_types.get(node_type_name or "")
            declared = types_r.data if types_r is not None else {}
            if node_type_name and node_type is None and node_type_name not in declared:
                node_r.fail("type", f"unknown node type {node_type_name!r}; defined: "
                            + ", ".join(node_types))
            nics = node_type.nics if node_type else ()
            for override_r in node_r.items("nics"):
                nic_name = override_r.string("name")
                bandwidth = override_r.number("bandwidth_GBps")
                override_r.raw("note")
                override_r.unknown_keys(("name", "bandwidth_GBps", "note"))
                names_known = [n.name for n in nics]
                if nic_name and nic_name not in names_known:
                    override_r.fail("name", f"no NIC {nic_name!r} on node type {node_type_name}; "
                                    "it has " + ", ".join(names_known))
                elif nic_name and bandwidth:
                    nics = tuple(
                        Nic(name=n.name, transport=n.transport,
                            bandwidth_bytes_per_s=bandwidth * GB, latency_s=n.latency_s,
                            gpus=n.gpus, note=str(override_r.data.get("note", "override")))
                        if n.name == nic_name else n for n in nics)
            node_r.unknown_keys(("name", "names", "type", "nics"))
            for node_name in names:
                if node_name in seen_names:
                    node_r.fail("name", f"node {node_name!r} appears twice")
                seen_names.add(node_name)
                if node_type is not None:
                    nodes.append(Node(name=node_name, node_type=node_type, island=island_name,
                                      nics=nics))
    island_names = {i.name for i in islands}
    node_index = {n.name: i for i, n in enumerate(nodes)}

    bridges = []
    for bridge_r in r.items("inter_island"):
        between = bridge_r.raw("between")
        if (not isinstance(between, list) or len(between) != 2
                or not set(map(str, between)) <= island_names):
            bridge_r.fail("between", "expected two island names from: "
                          + ", ".join(sorted(island_names)))
            continue
        bridge_transport = bridge_r.choice("transport", TRANSPORTS, default="tcp") or "tcp"
        per_node = bridge_r.number("bandwidth_per_node_GBps")
        aggregate = bridge_r.number("aggregate_bandwidth_GBps", required=False)
        bridge_latency = bridge_r.number("latency_us", positive=False,
                                         default=TCP_LATENCY_US) or 0.0
        bridge_r.raw("source")
        bridge_r.unknown_keys(("between", "transport", "bandwidth_per_node_GBps",
                               "aggregate_bandwidth_GBps", "latency_us", "source", "note"))
        if per_node:
            bridges.append(InterIslandLink(
                islands=(str(between[0]), str(between[1])), transport=bridge_transport,
                bandwidth_per_node_bytes_per_s=per_node * GB,
                aggregate_bytes_per_s=aggregate * GB if aggregate else None,
                latency_s=bridge_latency * US))
    connected = {frozenset(b.islands) for b in bridges}
    ordered = sorted(island_names)
    for i, a in enumerate(ordered):
        for b in ordered[i + 1:]:
            if frozenset((a, b)) not in connected:
                r.fail("inter_island", f"islands {a} and {b} have no link between them; "
                       "add {between: [a, b], bandwidth_per_node_GBps: ...}")

    pair_bandwidth: dict[tuple[int, int], float] = {}
    overrides: list[PairOverride] = []
    curves: list[CollectiveCurve] = []
    measurements = r.child("measurements")
    if measurements is not None:
        for pairs_r in measurements.items("node_pairs"):
            pair_nodes = pairs_r.raw("nodes")
            if not isinstance(pair_nodes, list) or not pair_nodes:
                pairs_r.fail("nodes", "expected the list of node names the matrix covers")
                continue
            missing = [n for n in pair_nodes if n not in node_index]
            if missing:
                pairs_r.fail("nodes", f"unknown nodes {missing}")
                continue
            matrix = _matrix(pairs_r, "bandwidth_GBps", len(pair_nodes), GB)
            for key in ("metric", "message_size_MiB", "concurrency", "source", "note"):
                pairs_r.raw(key)
            pairs_r.unknown_keys(("nodes", "bandwidth_GBps"))
            for i, src in enumerate(pair_nodes):
                for j, dst in enumerate(pair_nodes):
                    if i != j and matrix and matrix[i][j] is not None:
                        pair_bandwidth[(node_index[src], node_index[dst])] = matrix[i][j]  # type: ignore[assignment]
        for o in measurements.items("pair_overrides"):
            ends = []
            for key in ("src", "dst"):
                text = o.string(key)
                if text is None:
                    continue
                host, sep, local = str(text).rpartition(":")
                if not sep:
                    host, local = str(text), ""
                if host not in node_index:
                    o.fail(key, f"unknown node {host!r}")
                    continue
                if local and (not local.isdigit() or int(local) >= nodes[
                        node_index[host]].node_type.num_gpus):
                    o.fail(key, f"no GPU {local!r} on node {host}")
                    continue
                ends.append((node_index[host], int(local) if local else None))
            bandwidth = o.number("bandwidth_GBps")
            pair_latency = o.number("latency_us", required=False)
            symmetric = o.boolean("symmetric", default=True)
            note = o.string("note", required=False) or ""
            o.raw("source")
            o.unknown_keys(("src", "dst", "bandwidth_GBps", "latency_us", "symmetric", "note",
                            "source"))
            if len(ends) == 2 and bandwidth:
                if (ends[0][1] is None) != (ends[1][1] is None):
                    o.fail("dst", "give both ends as node:gpu, or both as node names")
                    continue
                overrides.append(PairOverride(
                    src_node=ends[0][0], src_local=ends[0][1], dst_node=ends[1][0],
                    dst_local=ends[1][1], bandwidth_bytes_per_s=bandwidth * GB,
                    latency_s=pair_latency * US if pair_latency is not None else None,
                    symmetric=bool(symmetric), note=note))
        for curve_r in measurements.items("collective_curves"):
            curve = _collective_curve(curve_r)
            if curve is not None:
                curves.append(curve)
        measurements.unknown_keys(("node_pairs", "pair_overrides", "collective_curves"))
    r.unknown_keys(_RICH_KEYS)
    if not nodes and not r.problems:
        r.fail("islands", "no nodes defined")
    r.check("see the rich cluster form in shared/reference/hardware.md and profiles/")
    return Cluster(
        name=name, nodes=tuple(nodes), islands=tuple(islands), inter_island=tuple(bridges),
        node_pair_bandwidth=tuple(sorted(pair_bandwidth.items())),
        pair_overrides=tuple(overrides),
        collective_curves=tuple(curves),
        provenance=str(provenance) if provenance else r.source,
        named_nodes=True,
    )


def import_nccl_tests(base: Path, logs: list[Path], op: str | None = None) -> str:
    """A copy of the rich profile `base` with the collective curves of nccl-tests `logs` added
    under measurements.collective_curves (one per test; provenance: file and sha256). The
    result is validated by loading it. `op` names the collective of logs that do not (old
    nccl-tests versions print no "Collective test starting" line). Returns YAML text."""
    data = read_document(base)
    if not isinstance(data, dict) or not (data.get("schema") or data.get("node_types")):
        raise InputError(f"{base}: measured curves go into the rich profile form",
                         hint="start from a rich profile (schema: planner.hardware/v1), e.g. "
                              "a copy of profiles/dgx-h100.yaml")
    measurements = data.setdefault("measurements", {}) or {}
    data["measurements"] = measurements
    curves = measurements.setdefault("collective_curves", []) or []
    measurements["collective_curves"] = curves
    for log in logs:
        text = read_text(log)
        try:
            parsed = nccl_tests.parse(text, str(log))
        except ValueError as exc:
            raise InputError(str(exc), hint="pass the text output of an nccl-tests *_perf "
                             "binary") from None
        digest = hashlib.sha256(text.encode()).hexdigest()
        for curve in parsed:
            name = op or curve.op
            if name not in COLLECTIVES:
                raise InputError(f"{log}: cannot tell which collective this log measured",
                                 hint="pass --op all_reduce (or all_gather, reduce_scatter, "
                                      "all_to_all, sendrecv)")
            if curve.num_ranks < 2:
                raise InputError(f"{log}: the '# Using devices' lines list fewer than 2 ranks",
                                 hint="run nccl-tests without -q so it prints its devices")
            curves.append({
                "op": name, "num_ranks": curve.num_ranks,
                "gpus_per_node": curve.gpus_per_node,
                "points": [[size, time_us, busbw] for size, time_us, busbw in curve.points],
                "source": {"tool": "nccl-tests", "raw": str(log), "sha256": digest,
                           "gpu": curve.gpu_name, "hosts": sorted(set(curve.hosts))},
            })
    text = yaml.safe_dump(data, sort_keys=False, width=100)
    cluster_from_dict(yaml.safe_load(text), f"{base} + nccl-tests")
    return text


# Achieved share of NVLink's per-direction rate for ring traffic when nothing is measured:
# "measured ~ 80-90% of unidirectional spec at large sizes for NVLink/IB ring" (hardware.md
# Sec. 4.3; e.g. 8 x H100 ring busbw ~370 of 450 GB/s).
NVLINK_ACHIEVED_FRAC = 0.8


def profile_from_topology(topology: topo.Topology, *, gpu_id: str, nodes: str,
                          nic_rate_gbps: float, name: str, source: str) -> str:
    """A rich profile (YAML text) for `nodes` (a hostlist) of identical machines described by
    one `nvidia-smi topo -m`: an NV# bond carries #/(the widest bond) of the GPU's scale-up
    rate (catalog; 25 GB/s per link on A100/H100, 50 on B200, 14 on an RTX 3090 bridge) x
    NVLINK_ACHIEVED_FRAC; an all-equal NVLink matrix becomes a switch fabric; PCIe-only pairs
    are host-staged (the GPU's PCIe rate, crossed twice: half of it); each GPU is served by the
    NICs it reaches through at most PCIe switches (PIX / PXB), else by the closest one."""
    gpu = GPU_CATALOG.get(gpu_id)
    if gpu is None:
        raise InputError(f"--gpu {gpu_id!r}: unknown GPU",
                         hint="one of " + ", ".join(sorted(GPU_CATALOG)))
    if "[" in nodes:
        try:
            expand_hostlist(nodes)
        except ValueError as exc:
            raise InputError(f"--nodes {nodes!r}: {exc}") from None
    n = topology.num_gpus
    widest = max((topology.nvlinks(i, j) for i in range(n) for j in range(n)), default=0)
    per_link = gpu.scaleup_bytes_per_s / GB / widest if widest else 0.0
    matrix: list[list[float | None]] = []
    for i in range(n):
        row: list[float | None] = []
        for j in range(n):
            if i == j:
                row.append(None)
            elif topology.nvlinks(i, j):
                row.append(round(topology.nvlinks(i, j) * per_link * NVLINK_ACHIEVED_FRAC, 2))
            else:
                row.append(round(gpu.pcie_bytes_per_s / GB * 0.5, 2))  # staged: PCIe twice
        matrix.append(row)
    cells = {c for r in matrix for c in r if c is not None}
    if len(cells) == 1 and all(topology.nvlinks(i, j) for i in range(n) for j in range(n)
                               if i != j):
        intra: dict[str, object] = {"fabric": "switch", "transport": "nvswitch",
                                    "bandwidth_GBps": cells.pop(),
                                    "latency_us": NVLINK_LATENCY_US}
    else:
        intra = {"fabric": "matrix",
                 "transport": "nvlink" if any(topology.nvlinks(i, j) for i in range(n)
                                              for j in range(n)) else "pcie",
                 "bandwidth_GBps": matrix, "topo": [list(r) for r in topology.gpu_classes]}
    served: dict[str, list[int]] = {}
    for i in range(n):
        for nic in _closest_nics(topology, i):
            served.setdefault(nic, []).append(i)
    nics = [{"name": nic, "transport": "ib", "rate_Gbps": nic_rate_gbps, "gpus": gpus}
            for nic, gpus in served.items()]
    data = {
        "schema": SCHEMA,
        "name": name,
        "provenance": {"created_by": "planner profile import-topo", "raw": source,
                       "notes": "bandwidths derived from link classes, not measured; add "
                                "nccl-tests curves with planner profile import-nccl-tests"},
        "node_types": {"node": {"gpu": gpu.id, "num_gpus": n, "intra": intra, "nics": nics}},
        "islands": [{"name": "cluster", "nodes": [
            {"names" if "[" in nodes else "name": nodes, "type": "node"}]}],
    }
    text = yaml.safe_dump(data, sort_keys=False, width=100)
    cluster_from_dict(yaml.safe_load(text), f"{source} (imported)")
    return text



def _closest_nics(topology: topo.Topology, gpu: int) -> list[str]:
    """The NICs that serve `gpu`: those behind at most PCIe switches (PIX, PXB), else the one
    with the best PCIe class."""
    classes = topology.gpu_nic_classes[gpu]
    near = [topology.nics[k] for k, c in enumerate(classes) if c in ("PIX", "PXB")]
    if near or not classes:
        return near
    rank = [topo.PCIE_CLASSES.index(c) if c in topo.PCIE_CLASSES else len(topo.PCIE_CLASSES)
            for c in classes]
    return [topology.nics[rank.index(min(rank))]]
