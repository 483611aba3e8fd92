"""Numbers, sizes, rates, durations and times for people: the formats every renderer, the findings
and the dashboard share (pure, standard library only).

Units are decimal (GB = 1e9 bytes, Gbps = 1e9 bit/s), as link rates are quoted. Absent values
print "n/a", never 0.
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Iterable, List, Optional, Sequence, Tuple

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


_RATE_UNITS = ("Gbps", "Tbps", "Pbps", "Ebps")


def fmt_bandwidth(gbps: Optional[float]) -> str:
    """A rate in Gbps with its unit, scaled up as a cluster's sum grows ("312 Gbps",
    "1.00 Pbps"): a card reading "1,000,559.0 Gbps" is not read at a glance."""
    if gbps is None:
        return NA
    if 0 < gbps < 0.05:
        return "<0.1 Gbps"
    v, i = float(gbps), 0
    while v >= 999.5 and i < len(_RATE_UNITS) - 1:
        v /= 1000.0
        i += 1
    return f"{v:.1f} Gbps" if i == 0 and v < 100 else f"{_sig3(v)} {_RATE_UNITS[i]}"


def fmt_pct(ratio: Optional[float], nd: int = 1) -> str:
    return NA if ratio is None else f"{ratio * 100:.{nd}f}%"


def fmt_duration(s: Optional[float]) -> str:
    """Slurm's elapsed-time format, as sacct, seff and squeue print it: `HH:MM:SS`, and
    `D-HH:MM:SS` from a day on (a reader of efajob's report has those tools' output beside it)."""
    if s is None:
        return NA
    s = max(0, int(round(s)))
    days, s = divmod(s, 86400)
    hms = f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"
    return f"{days}-{hms}" if days else hms


def fmt_time(t: Optional[float], tz: Optional[tzinfo] = None) -> str:
    if t is None:
        return NA
    dt = datetime.fromtimestamp(t, tz) if tz else datetime.fromtimestamp(t).astimezone()
    return dt.strftime("%Y-%m-%d %H:%M:%S %Z").strip()


@dataclass(frozen=True)
class Column:
    """One column of a table that fits a width, as `ps` and `sacct` choose theirs.

    `drop` 0: always shown; when the table is too wide, the columns with the highest `drop`
    go first, a level at a time. `flex`: free text (the last column, NOTES): it takes what
    the others leave, at least FLEX_MIN, and wraps onto continuation lines under itself.
    `width`: at least this wide (a live view whose columns must not jump between frames).
    """

    header: str
    right: bool = False
    drop: int = 0
    flex: bool = False
    width: int = 0


FLEX_MIN = 16  # a flex column narrower than this wraps a note into word-per-line stubs


def fit_table(columns: Sequence[Column], rows: Iterable[Sequence[str]], width: Optional[int],
              indent: str = "  ") -> Tuple[List[str], List[Column]]:
    """(lines, dropped columns): aligned columns two spaces apart, dropping columns by `drop`
    level until the table fits `width` (None: no limit, every column). Columns that cannot
    be dropped may still overflow a very narrow width: a table is never cut mid-cell.

    A row with fewer cells than columns ends in a span: its last cell starts at its column
    and runs over the rest (a running node's "running, live ..." in place of its numbers),
    wrapped to `width`; spans take no part in the column widths."""
    body = [list(r) for r in rows]
    natural = [max([len(c.header), c.width] + [len(r[i]) for r in body
                                               if i < len(r) - (len(r) < len(columns))])
               for i, c in enumerate(columns)]

    def need(kept: Sequence[int]) -> int:
        ws = [min(natural[i], max(FLEX_MIN, len(columns[i].header))) if columns[i].flex
              else natural[i] for i in kept]
        return len(indent) + sum(ws) + 2 * (len(ws) - 1)

    kept = list(range(len(columns)))
    levels = sorted({c.drop for c in columns if c.drop > 0}, reverse=True)
    while width is not None and need(kept) > width and levels:
        level = levels.pop(0)
        kept = [i for i in kept if columns[i].drop != level]
    widths = {i: natural[i] for i in kept}
    flex = [i for i in kept if columns[i].flex]
    if width is not None and flex:
        rest = need([i for i in kept if i != flex[0]]) + 2
        floor = min(natural[flex[0]], max(FLEX_MIN, len(columns[flex[0]].header)))
        widths[flex[0]] = max(floor, min(natural[flex[0]], width - rest))

    def offset(col: int) -> int:
        return len(indent) + sum(widths[i] + 2 for i in kept if i < col)

    def wrapped(text: str, w: int) -> List[str]:
        return textwrap.wrap(text, max(w, FLEX_MIN), break_long_words=False,
                             break_on_hyphens=False) or [""]

    def lines_of(cells: Sequence[str]) -> List[str]:
        out, cont, at = [], [], 0
        span = len(cells) - 1 if len(cells) < len(columns) else None
        for i in kept:
            if span is not None and i >= span:
                at = offset(span)
                parts = wrapped(cells[span], width - at) if width is not None else [cells[span]]
                out.append(parts[0])
                cont = parts[1:]
                break
            c, w = cells[i], widths[i]
            if columns[i].flex and len(c) > w:
                parts = wrapped(c, w)
                c, cont, at = parts[0], parts[1:], offset(i)
            out.append(c.rjust(w) if columns[i].right else c.ljust(w))
        first = (indent + "  ".join(out)).rstrip()
        return [first] + [" " * at + c for c in cont]

    lines = lines_of([c.header for c in columns])
    for r in body:
        lines += lines_of(r)
    return lines, [c for i, c in enumerate(columns) if i not in kept]


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], right: Sequence[bool],
          indent: str = "  ") -> List[str]:
    """Aligned columns, two spaces apart: one line for the headers, one a row; `right` says
    which columns are right-aligned (numbers). Trailing spaces are stripped."""
    return fit_table([Column(h, r) for h, r in zip(headers, right)], rows, None, indent)[0]
