"""Cluster profiles: loading both forms, the GPU catalog, and link() resolution rules."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from planner.errors import InputError
from planner.gpus import GPU_CATALOG, PCIE4_BYTES_PER_S, UNMEASURED_MATMUL_FRAC
from planner.hardware_io import builtin_profiles, expand_hostlist, load_cluster
from planner.units import GB, GiB, MiB

REQUIRED_GPUS = ("a100-sxm4-40gb", "a100-sxm4-80gb", "h100-sxm5-80gb", "h800-sxm5-80gb",
                 "h200-sxm-141gb", "b200", "mi300x", "l40s", "rtx-4090", "rtx-3090")


def test_catalog_has_design_ids_with_sources() -> None:
    for gpu_id in REQUIRED_GPUS:
        gpu = GPU_CATALOG[gpu_id]
        assert gpu.source and gpu.peak("bf16") > 0 and gpu.memory_bytes > 0


def test_design_peaks() -> None:
    """DESIGN.md: dense BF16 peaks A100 312, H100/H800/H200 989.4 TFLOP/s."""
    assert GPU_CATALOG["a100-sxm4-80gb"].peak("bf16") == 312e12
    for gpu_id in ("h100-sxm5-80gb", "h800-sxm5-80gb", "h200-sxm-141gb"):
        assert GPU_CATALOG[gpu_id].peak("bf16") == pytest.approx(989.4e12)
    assert GPU_CATALOG["h100-sxm5-80gb"].memory_bytes == 81559 * MiB


def test_required_profiles_ship_and_load() -> None:
    names = set(builtin_profiles())
    assert {"selene", "dgx-h100", "hgx-h200", "dgx-b200", "rtx4090-8x-pcie",
            "two-island-degraded"} <= names
    for name in names:
        cluster = load_cluster(name)
        assert cluster.num_gpus > 0 and cluster.provenance


def test_minimal_form(write: Callable[[str, str], Path]) -> None:
    path = write("c.yaml", """\
name: selene
gpu: a100-sxm4-80gb
num_nodes: 4
gpus_per_node: 8
intra_node: {bandwidth_GBps: 300, latency_us: 3}
inter_node: {bandwidth_GBps: 25, latency_us: 5}
""")
    c = load_cluster(str(path))
    assert (c.num_gpus, c.num_nodes, c.gpus_per_node) == (32, 4, 8)
    assert c.min_gpu_memory_bytes == 80 * GiB
    intra, inter = c.link(0, 1), c.link(0, 8)
    assert intra.bandwidth_bytes_per_s == 300 * GB and intra.rule == "intra-node"
    assert inter.bandwidth_bytes_per_s == 25 * GB and inter.rule == "NIC"
    assert inter.latency_s == pytest.approx(5e-6)


def test_custom_gpu_mapping(write: Callable[[str, str], Path]) -> None:
    path = write("c.yaml", """\
gpu: {name: my-gpu, memory_GiB: 64, memory_bandwidth_TBps: 2, peak_tflops: {bf16: 400}}
num_nodes: 1
gpus_per_node: 4
intra_node: {bandwidth_GBps: 100}
""")
    c = load_cluster(str(path))
    assert c.min_gpu_memory_bytes == 64 * GiB
    gpu = c.gpu_type(0)
    assert gpu.peak("bf16") == 400e12
    # Unmeasured: the hardware.md default fraction, PCIe Gen4, no SM count (no wave model).
    assert dict(gpu.matmul_frac) == {"bf16": UNMEASURED_MATMUL_FRAC}
    assert (gpu.pcie_bytes_per_s, gpu.num_sms) == (PCIE4_BYTES_PER_S, 0)


def test_custom_gpu_on_a_base_keeps_what_it_does_not_override(
        write: Callable[[str, str], Path]) -> None:
    path = write("c.yaml", """\
gpu: {name: h100-capped, base: h100-sxm5-80gb, peak_tflops: {bf16: 700}}
num_nodes: 1
gpus_per_node: 8
intra_node: {bandwidth_GBps: 450}
""")
    gpu = load_cluster(str(path)).gpu_type(0)
    base = GPU_CATALOG["h100-sxm5-80gb"]
    assert gpu.peak("bf16") == 700e12
    assert (gpu.pcie_bytes_per_s, gpu.num_sms, gpu.matmul_frac, gpu.kernels_measured_on) == (
        base.pcie_bytes_per_s, base.num_sms, base.matmul_frac, base.kernels_measured_on)


def test_profile_matmul_efficiency_overrides_the_measured_one(
        write: Callable[[str, str], Path]) -> None:
    """A user who measured their own GPUs (e.g. at a lower power cap) states the fraction; it
    wins over the catalog's measured one, and the step is slower for it."""
    from planner.catalog import BUILTIN_MODELS
    from planner.cost.step import estimate_step
    from planner.parallel import ParallelConfig
    path = write("c.yaml", """\
gpu: {name: h100-500w, base: h100-sxm5-80gb, matmul_efficiency: {bf16: 0.6}}
num_nodes: 1
gpus_per_node: 8
intra_node: {bandwidth_GBps: 450}
""")
    capped = load_cluster(str(path))
    assert dict(capped.gpu_type(0).matmul_frac)["bf16"] == 0.6
    cfg = ParallelConfig(tp=8, global_batch=8, seq_len=8192, sequence_parallel=True)
    model = BUILTIN_MODELS["llama3-8b"]
    assert (estimate_step(model, cfg, capped).iteration_s
            > estimate_step(model, cfg, load_cluster("dgx-h100")).iteration_s)


def test_profile_power_limit(write: Callable[[str, str], Path]) -> None:
    """`power_limit_W` below the base's 700 W TDP scales the power-bound kernels by 500/700
    (gpus.GpuType.power_scale); a `matmul_efficiency` stated with it was measured at that
    limit and is what large GEMMs get; a limit above the TDP changes nothing."""
    from planner.cost.compute import matmul_rate
    from planner.parallel import Precision

    def gpu(keys: str) -> object:
        path = write("c.yaml", f"gpu: {{base: h100-sxm5-80gb, {keys}}}\n"
                               "num_nodes: 1\ngpus_per_node: 1\n")
        return load_cluster(str(path)).gpu_type(0)

    base = GPU_CATALOG["h100-sxm5-80gb"]
    capped = gpu("power_limit_W: 500")
    assert (base.tdp_w, capped.tdp_w, capped.power_limit_w) == (700, 700, 500)
    assert matmul_rate(capped, Precision.BF16) == pytest.approx(
        matmul_rate(base, Precision.BF16) * 5 / 7)
    measured = gpu("power_limit_W: 500, matmul_efficiency: {bf16: 0.55}")
    assert matmul_rate(measured, Precision.BF16) == pytest.approx(0.55 * base.peak("bf16"))
    assert gpu("power_limit_W: 800").power_scale == 1.0


def test_link_rules_most_specific_first() -> None:
    """two-island-degraded: the measured node-pair matrix is directional (h100-02 -> h100-03
    31.2 GB/s, back 44.9); a GPU-pair override beats the switch fabric; a NIC shared by four
    GPUs gives each a quarter; the degraded NIC halves that; crossing islands is capped by the
    TCP link shared by the node's 8 GPUs (1.9 GB/s / 8)."""
    c = load_cluster("two-island-degraded")
    fwd, back = c.link("h100-02:0", "h100-03:0"), c.link("h100-03:0", "h100-02:0")
    assert (fwd.bandwidth_bytes_per_s, back.bandwidth_bytes_per_s) == (31.2 * GB, 44.9 * GB)
    assert fwd.rule == "node-pair matrix"
    override = c.link("h100-03:5", "h100-03:6")
    assert override.bandwidth_bytes_per_s == 180 * GB and override.rule.startswith("pair")
    assert c.link("h100-03:6", "h100-03:5").bandwidth_bytes_per_s == 180 * GB  # symmetric
    assert c.link("h100-01:0", "h100-01:1").bandwidth_bytes_per_s == 370 * GB
    assert c.link("a100-03:0", "a100-02:0").bandwidth_bytes_per_s == 22 * GB / 4
    assert c.link("a100-04:4", "a100-03:4").bandwidth_bytes_per_s == 11 * GB / 4
    cross = c.link("h100-01:0", "a100-01:0")
    assert cross.bandwidth_bytes_per_s == pytest.approx(min(1.9 * GB / 8, 7.5 * GB / 32))
    assert cross.transport == "tcp" and cross.latency_s == pytest.approx(40e-6)


def test_intra_node_matrix() -> None:
    c = load_cluster("rtx4090-8x-pcie")
    assert c.link(0, 1).bandwidth_bytes_per_s == 12 * GB
    assert c.link(0, 5).bandwidth_bytes_per_s == 9 * GB
    assert c.link(0, 5).rule == "intra-node matrix"


def test_locate_and_bad_gpu() -> None:
    c = load_cluster("two-island-degraded")
    assert c.locate(17) == (2, 1)
    assert c.locate("a100-01:3") == (4, 3)
    with pytest.raises(KeyError):
        c.locate("h100-01:8")
    with pytest.raises(ValueError):
        c.link(3, 3)


def test_hostlist() -> None:
    assert expand_hostlist("gpu[001-003]") == ["gpu001", "gpu002", "gpu003"]
    assert expand_hostlist("n[8-10].x") == ["n8.x", "n9.x", "n10.x"]
    with pytest.raises(ValueError):
        expand_hostlist("gpu[3-1]")


RICH = """\
schema: planner.hardware/v1
name: t
node_types:
  n:
    gpu: h100-sxm5-80gb
    num_gpus: 2
    intra: {fabric: switch, bandwidth_GBps: 370}
    nics:
      - {name: nic0, bandwidth_GBps: 47, gpus: [0, 1]}
islands:
  - name: a
    nodes:
      - {names: "x[1-2]", type: n}
"""


@pytest.mark.parametrize(("text", "expected"), [
    ("gpu: h100\nnum_nodes: 1\ngpus_per_node: 8\nintra_node: {bandwidth_GBps: 300}\n",
     "unknown GPU 'h100'"),
    ("gpu: a100-sxm4-80gb\nnum_nodes: 2\ngpus_per_node: 8\nintra_node: {bandwidth_GBps: 300}\n"
     "inter_node: {bandwidth_GBps: 25e9}\n", "YAML reads numbers like 450e9"),
    ("gpu: a100-sxm4-80gb\nnum_nodes: 2\ngpus_per_node: 8\nintra_node: {bandwidth_GBps: -3}\n"
     "inter_node: {bandwidth_GBps: 25}\n", "intra_node.bandwidth_GBps: expected a number > 0"),
    ("gpu: a100-sxm4-80gb\nnum_nodes: 2\ngpus_per_node: 8\n", "inter_node: missing"),
    (RICH.replace("gpus: [0, 1]", "gpus: [0, 2]"), "GPU index 2 does not exist"),
    (RICH.replace("type: n}", "type: m}"), "unknown node type 'm'"),
    (RICH.replace("planner.hardware/v1", "v0"), "schema: expected 'planner.hardware/v1'"),
    (RICH.replace("intra: {fabric: switch, bandwidth_GBps: 370}",
                  "intra: {fabric: matrix, bandwidth_GBps: [[null, 1, 2]]}"), "2x2 matrix"),
    (RICH + "  - name: b\n    nodes:\n      - {name: y1, type: n}\n", "no link between them"),
    (RICH + "      - {name: x1, type: n}\n", "appears twice"),
    (RICH + "measurements:\n  pair_overrides:\n    - {src: z1, dst: x1, bandwidth_GBps: 3}\n",
     "unknown node 'z1'"),
    ("gpu: {memory_GiB: 24, memory_bandwidth_TBps: 1, peak_tflops: {bf16: 100}, "
     "power_limit_W: 300}\nnum_nodes: 1\ngpus_per_node: 1\n", "add tdp_W"),
])
def test_cluster_errors(write: Callable[[str, str], Path], text: str, expected: str) -> None:
    path = write("cluster.yaml", text)
    with pytest.raises(InputError) as info:
        load_cluster(str(path))
    messages = " | ".join(info.value.problems) or str(info.value)
    assert expected in messages
    assert "cluster.yaml" in messages


def test_node_pair_override_and_asymmetry(write: Callable[[str, str], Path]) -> None:
    """A node-level override applies to every GPU pair between the two nodes; with
    symmetric: false only in the direction given."""
    text = RICH + ("measurements:\n  pair_overrides:\n"
                   "    - {src: x1, dst: x2, bandwidth_GBps: 5, symmetric: false}\n")
    c = load_cluster(str(write("c.yaml", text)))
    assert c.link("x1:0", "x2:1").bandwidth_bytes_per_s == 5 * GB
    assert c.link("x2:1", "x1:0").bandwidth_bytes_per_s == 47 * GB / 2  # NIC shared by 2 GPUs
    assert c.link("x1:0", "x1:1").bandwidth_bytes_per_s == 370 * GB  # same node: untouched


def test_oversubscription_and_inter_island_aggregate(write: Callable[[str, str], Path]) -> None:
    """An island with oversubscription 2 halves unmeasured inter-node rates; the aggregate
    inter-island bandwidth (7.5 GB/s) shared by the smaller island's 32 GPUs caps a crossing
    GPU at 0.234 GB/s, below its node's 1.9 GB/s / 8."""
    text = RICH.replace("  - name: a\n", "  - name: a\n    fabric: {oversubscription: 2}\n")
    c = load_cluster(str(write("c.yaml", text)))
    assert c.link("x1:0", "x2:0").bandwidth_bytes_per_s == pytest.approx(47 * GB / 2 / 2)
    assert "oversubscription" in c.link("x1:0", "x2:0").rule
    two = load_cluster("two-island-degraded")
    assert two.link("h100-01:0", "a100-01:0").bandwidth_bytes_per_s == pytest.approx(
        7.5 * GB / 32)


def test_a_gpu_built_on_the_a100_keeps_its_in_framework_fraction(
        write: Callable[[str, str], Path]) -> None:
    """The A100's calibrated fraction lives in the catalog, so a profile GPU built on it is
    priced the same (it was keyed by the catalog id and fell back to MAMF for any other)."""
    from planner.gpus import A100_IN_FRAMEWORK_MATMUL_FRAC
    path = write("c.yaml", """\
gpu: {name: my-a100, base: a100-sxm4-80gb}
num_nodes: 1
gpus_per_node: 8
intra_node: {bandwidth_GBps: 230}
""")
    gpu = load_cluster(str(path)).gpu_type(0)
    assert dict(gpu.matmul_frac) == {"bf16": A100_IN_FRAMEWORK_MATMUL_FRAC}
