"""nvidia-smi topo -m: parsing and the profile built from it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from planner import topo
from planner.hardware_io import cluster_from_dict, profile_from_topology
from planner.units import GB
from tests.conftest import REPO

DATA = REPO / "tests" / "data"
Run = Callable[..., tuple[int, str, str]]


def test_parse_dgx_h100_with_ansi_header_and_nic_legend() -> None:
    t = topo.parse((DATA / "topo_h100.txt").read_text())
    assert t.num_gpus == 8 and t.nvlinks(0, 7) == 18
    assert t.nics == ("mlx5_0", "mlx5_1", "mlx5_2", "mlx5_3")
    assert t.gpu_nic_classes[2] == ("SYS", "PXB", "SYS", "SYS")


def test_switch_profile_and_nic_affinity() -> None:
    """NV18 everywhere is an NVSwitch: 450 GB/s x 0.8 = 360 GB/s per GPU; GPUs 0-5 reach a NIC
    through PIX/PXB, GPUs 6-7 only through NODE, so they share the closest one (mlx5_3)."""
    text = profile_from_topology(topo.parse((DATA / "topo_h100.txt").read_text()),
                                 gpu_id="h100-sxm5-80gb", nodes="h[01-02]", nic_rate_gbps=400,
                                 name="t", source="topo_h100.txt")
    cluster = cluster_from_dict(yaml.safe_load(text), "t")
    assert cluster.num_gpus == 16
    assert cluster.link(0, 5).bandwidth_bytes_per_s == pytest.approx(360 * GB)
    nics = {nic.name: nic.gpus for nic in cluster.nodes[0].nics}
    assert nics == {"mlx5_0": (0, 1), "mlx5_1": (2, 3), "mlx5_2": (4, 5), "mlx5_3": (6, 7)}
    # two GPUs share each 400 Gb/s NIC: 400/8 x 0.9 / 2 per GPU across nodes
    assert cluster.link(0, 8).bandwidth_bytes_per_s == pytest.approx(50 * GB * 0.9 / 2)


def test_bridged_pairs_become_a_matrix() -> None:
    """RTX 3090 box: NV4 bridges pair GPUs 0-2 and 1-3 (56 GB/s x 0.8 = 44.8), other pairs go
    through the host (32 GB/s PCIe crossed twice: 16)."""
    text = profile_from_topology(topo.parse((DATA / "topo_3090.txt").read_text()),
                                 gpu_id="rtx-3090", nodes="box1", nic_rate_gbps=10, name="t",
                                 source="topo_3090.txt")
    cluster = cluster_from_dict(yaml.safe_load(text), "t")
    assert cluster.link(0, 2).bandwidth_bytes_per_s == pytest.approx(44.8 * GB)
    assert cluster.link(0, 1).bandwidth_bytes_per_s == pytest.approx(16 * GB)


def test_not_a_matrix() -> None:
    with pytest.raises(ValueError, match="no 'nvidia-smi topo -m' matrix"):
        topo.parse("GPU 0: NVIDIA H100\n")


def test_cli_import_topo(run_cli: Run, tmp_path: Path) -> None:
    out = tmp_path / "c.yaml"
    args = ("profile", "import-topo", str(DATA / "topo_h100.txt"), "--gpu", "h100-sxm5-80gb",
            "--nodes", "h100-[01-16]", "--nic-rate-gbps", "400", "-o", str(out))
    code, _, err = run_cli(*args)
    assert code == 0, err
    code, out_text, err = run_cli("estimate", "--model", "llama3-8b", "--cluster", str(out),
                                  "--global-batch", "128", "--seq-len", "4096", "--tp", "8",
                                  "--zero", "1", "--format", "json")
    assert code == 0, err
    code, _, err = run_cli(*args)
    assert code == 2 and "not overwriting" in err
    code, _, err = run_cli("profile", "import-topo", str(DATA / "topo_h100.txt"), "--gpu",
                           "h100", "--nodes", "x", "--nic-rate-gbps", "400", "-o",
                           str(tmp_path / "d.yaml"))
    assert code == 2 and "unknown GPU" in err
