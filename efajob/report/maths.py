"""None-aware maths and the coercion of values read from job-node records (pure).

Records are JSON files other processes (or people) wrote: a value may be missing, a string, a
bool or NaN. `num`/`ints`/`nonempty` keep what is usable and turn the rest into None or {}, and
the None-aware helpers keep "not measured" apart from 0 (DESIGN.md, invariant 3).
"""
from __future__ import annotations

import statistics
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence


def add(a: Optional[float], b: Optional[float]) -> Optional[Any]:
    if a is None and b is None:
        return None
    return (a or 0) + (b or 0)


def max2(a: Optional[float], b: Optional[float]) -> Optional[float]:
    vals = [v for v in (a, b) if v is not None]
    return max(vals) if vals else None


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    if a is None or not b:
        return None
    return a / b


def mean(values: Iterable[Optional[float]]) -> Optional[float]:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def maxv(values: Iterable[Optional[float]]) -> Optional[float]:
    vals = [v for v in values if v is not None]
    return max(vals) if vals else None


def num(v: object) -> Optional[float]:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
        return None
    return float(v)


_INT_ONLY = {int}


def ints(d: object) -> Dict[str, int]:
    """A record's counter dict, keeping only non-negative ints (a hand-edited record may hold
    anything). The common case is checked with C-level calls and returns the dict itself: a
    1,024-node report checks ~70,000 of these."""
    if not isinstance(d, dict):
        return {}
    if set(map(type, d.values())) <= _INT_ONLY and min(d.values(), default=0) >= 0:
        return d  # JSON keys are always strings
    return {k: v for k, v in d.items() if type(v) is int and v >= 0}


def nonempty(v: object) -> Optional[str]:
    return v if isinstance(v, str) and v else None


def sum_counters(dicts: Iterable[Mapping[str, int]]) -> Dict[str, int]:
    out: Dict[str, int] = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return out


def median_low(values: Sequence[float]) -> float:
    return statistics.median_low(values)
