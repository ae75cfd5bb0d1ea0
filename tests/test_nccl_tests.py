"""nccl-tests logs: parsing both formats, importing into a profile, and the curve's use."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from planner import nccl_tests
from planner.cost import comm
from planner.hardware_io import cluster_from_dict, import_nccl_tests
from tests.conftest import REPO

DATA = REPO / "tests" / "data"
Run = Callable[..., tuple[int, str, str]]


def test_current_format_with_mpi_prefixes_and_nccl_info() -> None:
    [curve] = nccl_tests.parse((DATA / "all_reduce_2x8_h100.log").read_text())
    assert curve.op == "all_reduce"
    assert curve.hosts == ("h100-01", "h100-01", "h100-02", "h100-02")
    assert (curve.num_ranks, curve.gpus_per_node) == (4, 2)
    assert curve.gpu_name == "NVIDIA H100 80GB HBM3"
    assert curve.points[0] == (1048576, 101.9, 15.44)
    assert curve.points[-1] == (536870912, 11780.5, 68.36)


def test_old_format_without_root_column() -> None:
    [curve] = nccl_tests.parse((DATA / "all_gather_old_format.log").read_text())
    assert curve.op == "unknown"
    assert curve.points == ((16777216, 190.1, 44.13), (134217728, 1410.3, 47.58))
    assert curve.gpu_name == "Tesla V100-SXM2-32GB"


def test_no_table_is_an_error() -> None:
    with pytest.raises(ValueError, match="no nccl-tests result table"):
        nccl_tests.parse("NCCL INFO Bootstrap\nhello\n", "x.log")


def test_import_and_the_curve_takes_precedence() -> None:
    """The imported all-reduce curve (4 ranks, 2 per node) replaces the ring model for groups
    of that shape: 256 MiB lies between 64 MiB (65.24) and 512 MiB (68.36 GB/s) on a log-log
    line; the time is 2(n-1)/n x size / busbw."""
    text = import_nccl_tests(REPO / "profiles" / "two-island-degraded.yaml",
                             [DATA / "all_reduce_2x8_h100.log"])
    import yaml

    cluster = cluster_from_dict(yaml.safe_load(text), "imported")
    curve = cluster.curve("all_reduce", 4, 2)
    assert curve is not None
    size = 256 * 2**20
    busbw = curve.busbw(size)
    assert 65.24e9 < busbw < 68.36e9
    ring = comm.ring_link(cluster, (0, 1, 8, 9))  # 2 GPUs on each of h100-01 and h100-02
    assert comm.all_reduce_s(size, ring) == pytest.approx(2 * 3 / 4 * size / busbw)
    other = comm.ring_link(cluster, (0, 8))  # another shape: the ring model
    assert other.curves == ()


def test_cli_import(run_cli: Run, tmp_path: Path, write: Callable[[str, str], Path]) -> None:
    out = tmp_path / "mine.yaml"
    base = str(REPO / "profiles" / "dgx-h100.yaml")
    code, _, err = run_cli("profile", "import-nccl-tests", str(DATA / "all_reduce_2x8_h100.log"),
                           "--base", base, "-o", str(out))
    assert code == 0 and out.exists(), err
    code, _, err = run_cli("profile", "import-nccl-tests", str(DATA / "all_reduce_2x8_h100.log"),
                           "--base", base, "-o", str(out))
    assert code == 2 and "not overwriting" in err
    old = str(DATA / "all_gather_old_format.log")
    code, _, err = run_cli("profile", "import-nccl-tests", old, "--base", base, "-o",
                           str(tmp_path / "b.yaml"))
    assert code == 2 and "--op" in err
    code, _, err = run_cli("profile", "import-nccl-tests", old, "--base", base, "-o",
                           str(tmp_path / "b.yaml"), "--op", "all_gather")
    assert code == 0, err
    code, _, err = run_cli("profile", "import-nccl-tests", old, "--base",
                           str(REPO / "profiles" / "selene.yaml"), "-o", str(tmp_path / "c.yaml"))
    assert code == 2 and "rich profile form" in err
    bad = write("bad.log", "nothing here\n")
    code, _, err = run_cli("profile", "import-nccl-tests", str(bad), "--base", base, "-o",
                           str(tmp_path / "d.yaml"))
    assert code == 2 and "bad.log" in err
