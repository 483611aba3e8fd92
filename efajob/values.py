"""Checks for numbers read from files other processes wrote (records, node status files)."""
from __future__ import annotations

import math
from typing import Optional


def as_number(v: object) -> Optional[float]:
    """A finite, non-negative JSON number, else None (rates, times and link speeds are never
    negative; NaN, infinity and 400-digit integers are corruption, not data)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    try:
        f = float(v)
    except OverflowError:
        return None
    return f if math.isfinite(f) and f >= 0 else None
