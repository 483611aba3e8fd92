"""Exact sums that move: the cluster totals of 10,000 nodes are kept between refreshes and
moved by the nodes that changed (dashboard/model.py's Tally), never summed again.

Floats added and taken away again drift, and their sum depends on the order. So each value is
held as an integer count of 2**-1074 (every finite double is one: 1074 is the exponent of the
smallest subnormal): adding and taking away is exact in any order, and a total is the exact
sum rounded once (the answer of math.fsum), whatever happened before.
"""
from __future__ import annotations

import math
from typing import Dict, Iterable, Optional, Tuple

_SHIFT = 1074
_ONE = 1 << _SHIFT

Items = Tuple[Tuple[str, int], ...]  # (column, exact value) of one node


def exact(v: float) -> int:
    """`v` (finite) in units of 2**-1074, exactly."""
    num, den = v.as_integer_ratio()  # den is a power of two, at most 2**1074
    return num << (_SHIFT + 1 - den.bit_length())


class Sums:
    """Per column: the exact sum of the values present and how many there are (a column no
    node reports totals None, not 0)."""

    __slots__ = ("sums", "counts")

    def __init__(self) -> None:
        self.sums: Dict[str, int] = {}
        self.counts: Dict[str, int] = {}

    def add(self, items: Iterable[Tuple[str, int]], sign: int = 1) -> None:
        sums, counts = self.sums, self.counts
        for k, x in items:
            sums[k] = sums.get(k, 0) + sign * x
            counts[k] = counts.get(k, 0) + sign

    def total(self, column: str) -> Optional[float]:
        if not self.counts.get(column):
            return None
        try:
            return self.sums[column] / _ONE  # int / int: correctly rounded
        except OverflowError:  # past the largest double, as a float sum would say
            return math.inf
