"""Reading nccl-tests text output into measured collective curves.

Header-driven (shared/reference/hardware.md Sec. 2.1): the column names come from the `#` line
holding `size` and `count`, the out-of-place group ends at the second `time` column, and data
rows may carry `mpirun --tag-output` prefixes (`[1,0]<stdout>:`) or sit between `NCCL INFO`
lines. Both the current format (`redop root ... #wrong`) and the 2019-22 one (no `root`,
`error`) parse. Which ranks ran where comes from the `# Using devices` lines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PREFIX = re.compile(r"^\s*(\[[^\]]*\](<\w+>)?:?\s*)+")
_TEST = re.compile(r"Collective test starting:\s*(\w+)")
_DEVICE = re.compile(r"#\s*Rank\s+(\d+).*?\bon\s+(\S+)\s+device\s+(\d+).*?\]\s*(.+?)\s*$")
_OPS = {"all_reduce": "all_reduce", "all_gather": "all_gather", "reduce_scatter": "reduce_scatter",
        "alltoall": "all_to_all", "sendrecv": "sendrecv", "broadcast": "broadcast",
        "reduce": "reduce"}


@dataclass(frozen=True, slots=True, kw_only=True)
class ParsedCurve:
    """One nccl-tests run: the collective, who ran it, and (size, time, busbw) points.

    Attributes:
        op: all_reduce, all_gather, reduce_scatter, all_to_all, sendrecv, broadcast, reduce.
        hosts: host name of each rank, in rank order.
        gpu_name: the device name nccl-tests printed (e.g. "NVIDIA H100 80GB HBM3").
        points: (size_bytes, time_us, busbw_GBps) of the out-of-place columns.
    """

    op: str
    hosts: tuple[str, ...]
    gpu_name: str
    points: tuple[tuple[int, float, float], ...]

    @property
    def num_ranks(self) -> int:
        return len(self.hosts)

    @property
    def gpus_per_node(self) -> int:
        counts: dict[str, int] = {}
        for host in self.hosts:
            counts[host] = counts.get(host, 0) + 1
        return min(counts.values())


def parse(text: str, source: str = "log") -> list[ParsedCurve]:
    """Every test in one nccl-tests log. Raises ValueError naming the line when a log has no
    result table or a row does not match its header."""
    curves: list[ParsedCurve] = []
    op = "unknown"
    ranks: dict[int, tuple[str, str]] = {}
    columns: list[str] = []
    points: list[tuple[int, float, float]] = []

    def flush() -> None:
        if points:
            hosts = tuple(ranks[r][0] for r in sorted(ranks)) or ("unknown",)
            gpu = next(iter(ranks.values()))[1] if ranks else ""
            curves.append(ParsedCurve(op=op, hosts=hosts, gpu_name=gpu, points=tuple(points)))
        points.clear()

    for number, raw_line in enumerate(text.splitlines(), start=1):
        line = _PREFIX.sub("", raw_line).rstrip()
        if not line or "NCCL INFO" in line or "NCCL WARN" in line:
            continue
        started = _TEST.search(line)
        if started:
            flush()
            name = started.group(1).removesuffix("_perf")
            op = _OPS.get(name, name)
            ranks, columns = {}, []
            continue
        device = _DEVICE.match(line)
        if device:
            ranks[int(device.group(1))] = (device.group(2), device.group(4))
            continue
        if line.startswith("#"):
            tokens = line.lstrip("#").split()
            if "size" in tokens and "count" in tokens:
                columns = tokens
            continue
        fields = line.split()
        if not columns or not fields[0].isdigit():
            continue
        try:
            size = int(fields[0])
            time_index = columns.index("time")
            busbw_index = columns.index("busbw")
            # the data row has no unit line tokens; align on the header's first group
            points.append((size, float(fields[time_index]), float(fields[busbw_index])))
        except (ValueError, IndexError):
            raise ValueError(f"{source}: line {number}: row does not match the header "
                             f"{' '.join(columns)!r}: {raw_line.strip()!r}") from None
    flush()
    if not curves:
        raise ValueError(f"{source}: no nccl-tests result table found (expected a '#  size  "
                         "count ...' header followed by rows)")
    return curves
