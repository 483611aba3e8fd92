"""Numbers, sizes, rates, durations and times for people: the formats every renderer, the findings
and the dashboard share (pure, standard library only).

Units are decimal (GB = 1e9 bytes, Gbps = 1e9 bit/s), as link rates are quoted. Absent values
print "n/a", never 0.
"""
from __future__ import annotations

from datetime import datetime, tzinfo
from typing import Iterable, List, Optional, Sequence

NA = "n/a"
_SI = ("", "k", "M", "G", "T", "P", "E")


def _sig3(v: float) -> str:
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def _si(n: float) -> str:
    """n with three significant digits and a decimal SI prefix ("1.46 T")."""
    v, i = float(n), 0
    while v >= 999.5 and i < len(_SI) - 1:
        v /= 1000.0
        i += 1
    return f"{_sig3(v)} {_SI[i]}"


def fmt_bytes(n: Optional[float]) -> str:
    if n is None:
        return NA
    return f"{int(n)} B" if n < 1000 else _si(n) + "B"


def fmt_count(n: Optional[float]) -> str:
    if n is None:
        return NA
    return f"{int(n):,}" if n < 1_000_000 else _si(n)


def fmt_gbps(v: Optional[float]) -> str:
    if v is None:
        return NA
    return "<0.1" if 0 < v < 0.05 else f"{v:,.1f}"


def fmt_pct(ratio: Optional[float], nd: int = 1) -> str:
    return NA if ratio is None else f"{ratio * 100:.{nd}f}%"


def fmt_duration(s: Optional[float]) -> str:
    if s is None:
        return NA
    s = int(round(s))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600:02d}h"


def fmt_time(t: Optional[float], tz: Optional[tzinfo] = None) -> str:
    if t is None:
        return NA
    dt = datetime.fromtimestamp(t, tz) if tz else datetime.fromtimestamp(t).astimezone()
    return dt.strftime("%Y-%m-%d %H:%M:%S %Z").strip()


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], right: Sequence[bool],
          indent: str = "  ") -> List[str]:
    """Aligned columns, two spaces apart: one line for the headers, one a row; `right` says
    which columns are right-aligned (numbers). Trailing spaces are stripped."""
    rows = [list(r) for r in rows]
    widths = [len(h) for h in headers]
    for r in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, r)]

    def line(cells: Sequence[str]) -> str:
        out = [c.rjust(w) if rt else c.ljust(w) for c, w, rt in zip(cells, widths, right)]
        return (indent + "  ".join(out)).rstrip()

    return [line(headers)] + [line(r) for r in rows]
