"""Unit constants and the only place where units are parsed or formatted.

Inside the code everything is SI: bytes, seconds, FLOPs, bytes/s, FLOP/s.
"""

from __future__ import annotations

import math
import re

KiB = 1024
MiB = 1024**2
GiB = 1024**3
KB = 1000
MB = 1000**2
GB = 1000**3
TB = 1000**4
US = 1e-6
MS = 1e-3
TFLOPS = 1e12

_QUANTITY = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-zµ/]+)\s*$")

# Factor to SI for each unit spelling accepted in quantity strings ("47 GB/s", "400 Gb/s").
_UNIT_FACTORS: dict[str, tuple[str, float]] = {
    "B": ("bytes", 1.0),
    "KiB": ("bytes", KiB),
    "MiB": ("bytes", MiB),
    "GiB": ("bytes", GiB),
    "TiB": ("bytes", 1024.0**4),
    "KB": ("bytes", KB),
    "MB": ("bytes", MB),
    "GB": ("bytes", GB),
    "TB": ("bytes", TB),
    "B/s": ("bytes_per_s", 1.0),
    "MB/s": ("bytes_per_s", MB),
    "GB/s": ("bytes_per_s", GB),
    "TB/s": ("bytes_per_s", TB),
    "Mb/s": ("bytes_per_s", MB / 8),
    "Gb/s": ("bytes_per_s", GB / 8),
    "Gbps": ("bytes_per_s", GB / 8),
    "ns": ("s", 1e-9),
    "us": ("s", US),
    "µs": ("s", US),
    "ms": ("s", MS),
    "s": ("s", 1.0),
}


def parse_quantity(text: str, kind: str) -> float:
    """Parse a quantity string such as "47 GB/s", "400 Gb/s", "3 us" or "80 GiB" into SI.

    Args:
        text: the string as written in a profile.
        kind: "bytes", "bytes_per_s" or "s": the dimension the caller expects.

    Returns:
        The value in SI units (bytes, bytes/s or seconds).

    Raises:
        ValueError: with a message naming the accepted units.
    """
    match = _QUANTITY.match(text)
    accepted = ", ".join(u for u, (k, _) in _UNIT_FACTORS.items() if k == kind)
    if not match:
        raise ValueError(f"expected a number with a unit ({accepted}), got {text!r}")
    unit = match.group(2)
    if unit not in _UNIT_FACTORS or _UNIT_FACTORS[unit][0] != kind:
        raise ValueError(f"unit {unit!r} is not one of {accepted}")
    return float(match.group(1)) * _UNIT_FACTORS[unit][1]


def gib(num_bytes: float) -> float:
    """Bytes to GiB, for display only."""
    return num_bytes / GiB


def format_gib(num_bytes: float, digits: int = 2) -> str:
    """Format bytes as GiB for tables: `12.34 GiB`."""
    return f"{num_bytes / GiB:.{digits}f} GiB"


def format_count(count: float) -> str:
    """Format a parameter count in base 1000: 7.2B, 340M, 1.01T."""
    for factor, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(count) >= factor:
            value = count / factor
            digits = 2 if value < 10 else 1
            return f"{value:.{digits}f}{suffix}"
    return str(int(count))


def ceil_div(a: int, b: int) -> int:
    """Integer ceiling division."""
    return -(-a // b)


def is_number(value: object) -> bool:
    """True for int/float that is finite and not a bool (YAML booleans are ints in Python)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
