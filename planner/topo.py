"""Reading `nvidia-smi topo -m` into GPU-pair link classes and GPU-NIC affinity.

Format notes (shared/reference/hardware.md Sec. 2.3): a header row of GPUn / NICn (or NIC
device names on older drivers) columns followed by affinity columns; rows per device; cells
`X`, `NV#` (a bond of # NVLinks), and the PCIe classes PIX < PXB < PHB < NODE < SYS; an optional
`NIC Legend` naming NICn. The header may carry ANSI underline escapes; fields are tab- or
space-separated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_CLASS = re.compile(r"^(X|NV\d+|PIX|PXB|PHB|NODE|SYS)$")
_LEGEND = re.compile(r"^\s*(NIC\d+)\s*:\s*(\S+)\s*$")
PCIE_CLASSES = ("PIX", "PXB", "PHB", "NODE", "SYS")  # best to worst


@dataclass(frozen=True, slots=True, kw_only=True)
class Topology:
    """One node as `nvidia-smi topo -m` describes it.

    Attributes:
        gpu_classes: gpu_classes[i][j] = link class between GPU i and GPU j ("X" on the
            diagonal).
        nics: NIC device names (from the NIC Legend, or the header on older drivers).
        gpu_nic_classes: gpu_nic_classes[i][n] = class between GPU i and NIC n.
    """

    gpu_classes: tuple[tuple[str, ...], ...]
    nics: tuple[str, ...]
    gpu_nic_classes: tuple[tuple[str, ...], ...]

    @property
    def num_gpus(self) -> int:
        return len(self.gpu_classes)

    def nvlinks(self, i: int, j: int) -> int:
        """Bonded NVLinks between GPUs i and j (0 when they talk over PCIe)."""
        cell = self.gpu_classes[i][j]
        return int(cell[2:]) if cell.startswith("NV") else 0


def parse(text: str, source: str = "topo") -> Topology:
    """Parse the matrix; raises ValueError naming the problem when it is not one."""
    lines = [_ANSI.sub("", line).rstrip() for line in text.splitlines()]
    # the header names GPU0 among its columns; data rows hold the "X" self cell instead
    header_index = next((i for i, line in enumerate(lines)
                         if "GPU0" in line.split() and "X" not in line.split()), None)
    if header_index is None:
        raise ValueError(f"{source}: no 'nvidia-smi topo -m' matrix (a header row naming GPU0)")
    columns = lines[header_index].split()
    devices = []
    for name in columns:
        if name in ("CPU", "NUMA", "GPU") or name.startswith(("Affinity", "ID")):
            break
        devices.append(name)
    legend = {}
    for line in lines:
        match = _LEGEND.match(line)
        if match:
            legend[match.group(1)] = match.group(2)
    rows: dict[str, list[str]] = {}
    for line in lines[header_index + 1:]:
        fields = line.split()
        if not fields or fields[0] not in devices:
            if fields and fields[0] == "Legend:":
                break
            continue
        cells = fields[1:1 + len(devices)]
        bad = [c for c in cells if not _CLASS.match(c)]
        if len(cells) != len(devices) or bad:
            raise ValueError(f"{source}: row {fields[0]}: expected {len(devices)} link classes "
                             f"(X, NV#, PIX, PXB, PHB, NODE, SYS), got {cells!r}")
        rows[fields[0]] = cells
    gpus = [d for d in devices if d.startswith("GPU")]
    nics = [d for d in devices if not d.startswith("GPU")]
    missing = [g for g in gpus if g not in rows]
    if not gpus or missing:
        raise ValueError(f"{source}: no rows for {missing or 'any GPU'}")
    index = {d: k for k, d in enumerate(devices)}
    gpu_classes = tuple(tuple(rows[g][index[h]] for h in gpus) for g in gpus)
    nic_classes = tuple(tuple(rows[g][index[n]] for n in nics) for g in gpus)
    return Topology(gpu_classes=gpu_classes, nics=tuple(legend.get(n, n) for n in nics),
                    gpu_nic_classes=nic_classes)
