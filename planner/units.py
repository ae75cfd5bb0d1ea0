"""Unit constants and the only place where units are parsed or formatted.

Inside the code everything is SI: bytes, seconds, FLOPs, bytes/s, FLOP/s.
"""

from __future__ import annotations

import math

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
