"""Which nodes' time series a report draws: all of a small job's, a sample of a huge one's.

A chart per node is readable for a few dozen nodes; 4,096 of them are a 30 MB page nobody
scrolls. Past SERIES_LIMIT nodes with data the report draws the fastest and the slowest nodes
(by traffic: the ranking's ends), a few around the median, and the nodes that have a finding,
first in the ranking's order, up to the limit, and says how many it drew (`describe`). The
JSON report keeps every node's series. Pure.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, List

if TYPE_CHECKING:  # pragma: no cover
    from efajob.report.model import JobReport, NodeReport

SERIES_LIMIT = 32
ENDS = 4  # fastest and slowest each
MEDIAN = 8  # around the median


@dataclass(frozen=True)
class SeriesSample:
    nodes: List["NodeReport"]  # in ranking order
    of: int  # nodes with data
    fastest: int = 0
    slowest: int = 0
    median: int = 0
    flagged: int = 0  # drawn nodes that have a finding
    flagged_of: int = 0  # nodes with a finding

    @property
    def complete(self) -> bool:
        return len(self.nodes) == self.of


def series_sample(r: "JobReport", limit: int = SERIES_LIMIT) -> SeriesSample:
    data = r.data_nodes  # ranked: most traffic first
    if len(data) <= limit:
        return SeriesSample(nodes=data, of=len(data))
    n = len(data)
    fast = list(range(ENDS))
    slow = list(range(n - ENDS, n))
    mid = n // 2
    median = list(range(mid - MEDIAN // 2, mid + MEDIAN - MEDIAN // 2))
    chosen = set(fast) | set(slow) | set(median)
    flagged_all = [i for i, x in enumerate(data) if x.marks]
    room = max(0, limit - len(chosen))
    chosen.update([i for i in flagged_all if i not in chosen][:room])
    return SeriesSample(nodes=[data[i] for i in sorted(chosen)], of=n, fastest=len(fast),
                        slowest=len(slow), median=len(median),
                        flagged=sum(1 for i in flagged_all if i in chosen),
                        flagged_of=len(flagged_all))


def describe(s: SeriesSample) -> str:
    """What a sampled chart section says about itself ("" when every node is drawn)."""
    if s.complete:
        return ""
    parts = [f"the {s.fastest} fastest", f"the {s.slowest} slowest",
             f"{s.median} around the median"]
    if s.flagged_of:
        parts.append(f"{s.flagged:,} of the {s.flagged_of:,} with findings" if s.flagged < s.flagged_of
                     else f"every node with a finding ({s.flagged_of:,})")
    return (f"Series shown for {len(s.nodes):,} of {s.of:,} nodes: " + ", ".join(parts[:-1])
            + f" and {parts[-1]} (--format json has every node's series).")
