"""Process groups in Megatron's order, ring bandwidth on resolved links, collective formulas."""

from __future__ import annotations

import pytest

from planner.cost import comm
from planner.cost.comm import Axis, RingLink
from planner.hardware_io import load_cluster
from planner.parallel import ParallelConfig
from planner.units import GB


def test_groups_follow_megatron_order() -> None:
    """tp=2, cp=1, dp=2, pp=2 on 8 ranks: tp groups are neighbours, dp groups stride tp, pp
    groups stride tp*dp."""
    cfg = ParallelConfig(tp=2, dp=2, pp=2, global_batch=4)
    assert comm.groups(cfg, Axis.TP) == [(0, 1), (2, 3), (4, 5), (6, 7)]
    assert comm.groups(cfg, Axis.DP) == [(0, 2), (1, 3), (4, 6), (5, 7)]
    assert comm.groups(cfg, Axis.PP) == [(0, 4), (2, 6), (1, 5), (3, 7)]


def test_expert_groups() -> None:
    """tp=2, dp=4, ep=4, etp=1 in a stage of 8: ep groups are 4 consecutive ranks, expert-dp
    groups stride 4."""
    cfg = ParallelConfig(tp=2, dp=4, ep=4, etp=1, global_batch=4)
    assert comm.groups(cfg, Axis.EP) == [(0, 1, 2, 3), (4, 5, 6, 7)]
    assert comm.groups(cfg, Axis.EDP) == [(0, 4), (1, 5), (2, 6), (3, 7)]


def test_ring_formulas_by_hand() -> None:
    """8 ranks, 100 GB/s, 5 us: all-reduce of 1 GB = 2 * 7/8 * 1e9 / 1e11 + 14 * 5e-6."""
    ring = RingLink(bandwidth_bytes_per_s=100 * GB, latency_s=5e-6, size=8)
    assert comm.all_reduce_s(1e9, ring) == pytest.approx(0.0175 + 70e-6)
    assert comm.all_gather_s(1e9, ring) == pytest.approx(0.00875 + 35e-6)


def test_tree_wins_for_small_messages_on_large_groups() -> None:
    """1024 ranks, 47 GB/s, 14 us per step. 1 MB: ring 2*1023/1024*1e6/47e9 + 2046*14e-6
    = 28.7 ms, tree 2e6/47e9 + 20*14e-6 = 0.33 ms. Even 1 GB goes to the tree at this size
    (ring 42.5 + 28.6 ms of latency, tree 42.6 + 0.3 ms); on 8 ranks the ring wins (both move
    nearly the same bytes and 2(n-1)/n = 1.75 < 2)."""
    ring = RingLink(bandwidth_bytes_per_s=47 * GB, latency_s=14e-6, size=1024)
    assert comm.all_reduce_s(1e6, ring) == pytest.approx(2e6 / 47e9 + 20 * 14e-6)
    assert comm.all_reduce_s(1e9, ring) == pytest.approx(2e9 / 47e9 + 20 * 14e-6)
    small = RingLink(bandwidth_bytes_per_s=47 * GB, latency_s=14e-6, size=8)
    assert comm.all_reduce_s(1e9, small) == pytest.approx(2 * 7 / 8 * 1e9 / 47e9 + 14 * 14e-6)


def test_deterministic_mode_pins_the_ring() -> None:
    """Megatron's --deterministic-mode runs with NCCL_ALGO=Ring (its launch sets it): the
    1024-rank 1 MB all-reduce above then pays the ring's 2046 latency steps instead of the
    tree's 20; resolve_links marks every ring of a deterministic configuration so."""
    import dataclasses

    from planner.cost.step import resolve_links
    ring = RingLink(bandwidth_bytes_per_s=47 * GB, latency_s=14e-6, size=1024, ring_only=True)
    assert comm.all_reduce_s(1e6, ring) == pytest.approx(
        2 * 1023 / 1024 * 1e6 / 47e9 + 2046 * 14e-6)
    cluster = load_cluster("dgx-h100")
    cfg = ParallelConfig(tp=8, dp=16, global_batch=16)
    plain = resolve_links(cluster, cfg)
    pinned = resolve_links(cluster, dataclasses.replace(cfg, deterministic=True))
    assert all(r.ring_only for _, r in pinned.rings)
    assert not any(r.ring_only for _, r in plain.rings)
    assert [dataclasses.replace(r, ring_only=False) for _, r in pinned.rings] == [
        r for _, r in plain.rings]


def test_multi_node_ring_uses_a_nic_per_gpu() -> None:
    """dgx-h100: a dp ring of the 8 GPUs of each of 2 nodes runs 8 rings through 8 NICs:
    min(370 intra, 8 x 47 inter) = 370 GB/s; one GPU per node: the NIC, 47 GB/s."""
    cluster = load_cluster("dgx-h100")
    wide = comm.ring_link(cluster, tuple(range(16)))
    assert wide.bandwidth_bytes_per_s == 370 * GB and wide.gpus_per_node == 8
    narrow = comm.ring_link(cluster, (0, 8, 16, 24))
    assert narrow.bandwidth_bytes_per_s == 47 * GB


def test_slowest_group_sets_the_time() -> None:
    """two-island-degraded: dp groups across h100-02 -> h100-03 see the slow measured pair
    (31.2 GB/s) while the others see 46+; the slowest ring is the one that counts."""
    cluster = load_cluster("two-island-degraded")
    cfg = ParallelConfig(tp=8, dp=4, global_batch=4)
    ring = comm.slowest_ring(cluster, cfg, Axis.DP)
    assert ring.bandwidth_bytes_per_s == pytest.approx(31.2 * GB)


def test_all_to_all_splits_intra_and_inter() -> None:
    """16 ranks over 2 nodes of 8: 7/16 of the data stays on the node, 8/16 leaves by NIC."""
    ring = RingLink(bandwidth_bytes_per_s=370 * GB, latency_s=0.0, size=16,
                    intra_bytes_per_s=370 * GB, inter_bytes_per_s=47 * GB, gpus_per_node=8)
    assert comm.all_to_all_s(1e9, ring) == pytest.approx(max(7 / 16 * 1e9 / 370e9,
                                                             8 / 16 * 1e9 / 47e9))


def test_tp_pp_dp_mapping_puts_pipeline_neighbours_next() -> None:
    """--use-tp-pp-dp-mapping: tp=2, pp=2, dp=2 ranks order tp, pp, dp: pipeline pairs are
    (0, 2), data-parallel pairs stride tp*pp = 4."""
    cfg = ParallelConfig(tp=2, dp=2, pp=2, global_batch=4, rank_order="tp-cp-pp-dp")
    assert comm.groups(cfg, Axis.PP) == [(0, 2), (4, 6), (1, 3), (5, 7)]
    assert comm.groups(cfg, Axis.DP) == [(0, 4), (1, 5), (2, 6), (3, 7)]
    assert comm.groups(cfg, Axis.TP) == [(0, 1), (4, 5), (2, 3), (6, 7)]


def test_every_rank_in_exactly_one_group_per_axis() -> None:
    for order in ("tp-cp-dp-pp", "tp-cp-pp-dp"):
        cfg = ParallelConfig(tp=2, cp=2, dp=2, pp=2, ep=2, etp=1, global_batch=8,
                             rank_order=order)
        for axis in Axis:
            ranks = sorted(r for g in comm.groups(cfg, axis) for r in g)
            assert ranks == list(range(16)), (order, axis)


def _slowest_ring_by_enumeration(cluster: object, cfg: ParallelConfig, axis: Axis) -> RingLink:
    """slowest_ring as first written: every group, one per shape on uniform clusters."""
    members = comm.groups(cfg, axis)
    if cluster.uniform:  # type: ignore[attr-defined]
        width = cluster.gpus_per_node  # type: ignore[attr-defined]
        by_shape: dict[tuple[tuple[int, int], ...], tuple[int, ...]] = {}
        for group in members:
            first = group[0] // width
            by_shape.setdefault(tuple((g // width - first, g % width) for g in group), group)
        members = list(by_shape.values())
    rings = [comm.ring_link(cluster, g) for g in members]  # type: ignore[arg-type]
    return min(rings, key=lambda r: (r.bandwidth_bytes_per_s, -r.latency_s))


def test_slowest_ring_by_base_residue_equals_enumerating_every_group() -> None:
    """The shortcut (a group shape of base + fixed offsets depends only on the base modulo the
    node width) gives the ring enumerating all groups gives, expert axes included, on 300
    seeded random layouts over uniform clusters of 8, 4 and 6 GPUs per node and a non-uniform
    one, both rank orders."""
    import random

    from planner.hardware_io import cluster_from_dict
    rng = random.Random(5)
    clusters = [load_cluster(n) for n in ("dgx-h100", "selene", "two-island-degraded")]
    for width in (4, 6):
        clusters.append(cluster_from_dict(
            {"name": f"w{width}", "gpu": "h100-sxm5-80gb", "num_nodes": 96,
             "gpus_per_node": width, "intra_node": {"bandwidth_GBps": 370},
             "inter_node": {"bandwidth_GBps": 47}}, f"w{width}"))
    checked = 0
    while checked < 300:
        cluster = rng.choice(clusters)
        tp, cp, pp = rng.choice([1, 2, 4, 8]), rng.choice([1, 2, 3]), rng.choice([1, 2, 3, 4])
        dp = rng.choice([1, 2, 3, 5, 8, 16])
        if tp * cp * pp * dp > min(cluster.num_gpus, 512):
            continue
        etp = rng.choice([1, tp])
        stage = tp * cp * dp
        ep = rng.choice([e for e in (1, 2, 3, 4, 8) if stage % (e * etp) == 0])
        cfg = ParallelConfig(tp=tp, cp=cp, pp=pp, dp=dp, ep=ep, etp=etp, global_batch=dp,
                             rank_order=rng.choice(["tp-cp-dp-pp", "tp-cp-pp-dp"]))
        for axis in Axis:
            assert comm.slowest_ring(cluster, cfg, axis) == _slowest_ring_by_enumeration(
                cluster, cfg, axis), (cluster.name, cfg, axis)
        checked += 1


def test_ring_latency_is_the_sum_of_its_hops() -> None:
    """A ring over two DGX H100 nodes has 14 NVLink hops and 2 network hops: its n - 1 steps
    cost the mean hop latency each (NCCL's tuning model), not the network's every step."""
    cluster = load_cluster("dgx-h100")
    members = tuple(range(16))
    ring = comm.ring_link(cluster, members)
    hops = [cluster.link(members[i], members[(i + 1) % 16]).latency_s for i in range(16)]
    assert ring.latency_s == max(hops) and ring.hop_latency_s == pytest.approx(sum(hops) / 16)
    assert ring.hop_latency_s < ring.latency_s
    size = 1e3  # latency-bound
    assert comm.all_gather_s(size, ring) == pytest.approx(
        15 / 16 * size / ring.bandwidth_bytes_per_s + 15 * sum(hops) / 16)
