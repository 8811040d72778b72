"""Memory sizes: :func:`parse_size` (``"20GiB"`` -> bytes) and :func:`format_bytes` (bytes -> text).

Examples
--------
>>> parse_size("1.5KiB")
1536
>>> parse_size("512MB")
512000000
>>> format_bytes(1536)
'1.5 KiB'
"""
from __future__ import annotations

import math
import re
from typing import Any

from workbench.errors import PlacementError
from workbench.safeio import short

_UNITS = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
    "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40,
}
#: largest memory size :func:`parse_size` accepts (1 EiB); anything above is a typo, not a budget
MAX_SIZE_BYTES = 2**60
_SIZE_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(value: int | float | str) -> int:
    """Convert a memory size to bytes.

    Parameters
    ----------
    value : int, float or str
        Bytes as a number, or a string with a unit: ``"20GiB"``, ``"512MB"``, ``"1.5 KiB"``, ``"300k"``
        (single letters are binary: ``k`` = KiB). Underscores are allowed (``"1_000"``).

    Returns
    -------
    int
        Number of bytes (>= 0).

    Raises
    ------
    PlacementError
        For negative, non-finite (NaN, infinity, ``"1e999GB"``) or non-numeric values, unknown units,
        and sizes over :data:`MAX_SIZE_BYTES` (1 EiB).

    Examples
    --------
    >>> parse_size(1_000), parse_size("2GiB"), parse_size("3 kb")
    (1000, 2147483648, 3000)
    """
    if isinstance(value, bool):
        raise PlacementError(f"memory size {short(value)} is a bool; give bytes (int) or a string like '20GiB'")
    if isinstance(value, (int, float)):
        return _check_size(value, value)
    if not isinstance(value, str):
        raise PlacementError(
            f"memory size {short(value)} has type {type(value).__name__}; give bytes (int) or a string like '20GiB'"
        )
    match = _SIZE_RE.match(value.replace("_", ""))
    if not match:
        raise PlacementError(
            f"cannot parse memory size {short(value)}; use a number with an optional unit such as "
            "'512MB', '20GiB', '1.5 TiB' or plain bytes"
        )
    number_text, unit = match.groups()
    unit_key = unit.lower()
    if unit_key not in _UNITS:
        raise PlacementError(
            f"unknown unit {short(unit)} in memory size {short(value)}; use one of B, KB, MB, GB, TB, KiB, MiB, "
            "GiB, TiB (for example '20GiB')"
        )
    # float() turns an overlong exponent ("1e999") into inf, which _check_size refuses
    return _check_size(value, float(number_text) * _UNITS[unit_key])


def _check_size(value: Any, number: float) -> int:
    """``number`` (bytes) as an int, refusing NaN, infinity, negatives and sizes over :data:`MAX_SIZE_BYTES`."""
    if isinstance(number, float) and (math.isnan(number) or math.isinf(number)):
        raise PlacementError(
            f"memory size {short(value)} is not a finite number of bytes; give bytes or a string like '20GiB'"
        )
    if number < 0:
        raise PlacementError(
            f"memory size {short(value)} must be a non-negative number of bytes (for example '20GiB')"
        )
    if number > MAX_SIZE_BYTES:
        raise PlacementError(
            f"memory size {short(value)} is absurdly large (over 1 EiB = 2**60 bytes); give a real budget "
            "such as '20GiB'"
        )
    return int(number)


def format_bytes(n: int | float) -> str:
    """Human-readable bytes: ``format_bytes(1536) == '1.5 KiB'``."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover
