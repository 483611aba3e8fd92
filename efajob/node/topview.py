"""What `efajob top` shows: per-device rates over one interval, sorted, as a plain table (line
mode, for pipes and logs) or as the lines of a full screen of a given size. Pure: a delta in,
rows and strings out; cli/top.py owns the terminal.

Rates are decimal Gbps (1e9 bit/s, as link rates are quoted) and packets per second; drops and
retransmits are counts over the interval. An absent counter prints "-", never 0.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from efajob.fmt import Column, fit_table
from efajob.node.counters import SnapshotDelta, bytes_to_gbps, rate
from efajob.node.instances import InstanceType
from efajob.node.readings import natural_key
from efajob.node.sysfs import DeviceInfo

# The sorts, and the keys cli/top.py gives them (the footer names them).
SORTS = ("name", "tx", "rx", "util", "drops", "retrans")
HELP = "q quit  sort: n name  t tx  r rx  u util  d drops  x retrans"
SHORT_HELP = "q quit  sort: n t r u d x"


@dataclass(frozen=True)
class TopRow:
    name: str
    tx_gbps: Optional[float]
    rx_gbps: Optional[float]
    tx_pps: Optional[float]
    rx_pps: Optional[float]
    util: Optional[float]  # percent of the device's link rate, busier direction
    drops: Optional[int]
    retrans: Optional[int]
    reset: bool = False

    @property
    def busy(self) -> float:
        """Bits moved both ways: what "busiest" ranks by."""
        return (self.tx_gbps or 0.0) + (self.rx_gbps or 0.0)


def build_top_rows(delta: SnapshotDelta, devices: Sequence[DeviceInfo],
                   itype: Optional[InstanceType]) -> Tuple[List[TopRow], TopRow]:
    """(one row per device in natural name order, the node's TOTAL row)."""
    secs = delta.seconds
    link = {d.name: (itype.gbps_per_device if itype else d.rate_gbps) for d in devices}
    rows = []
    for name in sorted(delta.devices, key=natural_key):
        c = delta.devices[name].port_counters
        tx, rx = bytes_to_gbps(c.get("tx_bytes"), secs), bytes_to_gbps(c.get("rx_bytes"), secs)
        lk = link.get(name)
        util = None if (not lk or tx is None or rx is None) else 100.0 * max(tx, rx) / lk
        rows.append(TopRow(name, tx, rx, rate(c.get("tx_pkts"), secs), rate(c.get("rx_pkts"), secs),
                           util, c.get("rx_drops"), c.get("retrans_pkts"),
                           bool(delta.devices[name].resets)))
    t = delta.port_totals()
    links = [link.get(r.name) for r in rows]
    total_link = sum(x for x in links if x) if links and all(links) else None
    tx, rx = bytes_to_gbps(t.get("tx_bytes"), secs), bytes_to_gbps(t.get("rx_bytes"), secs)
    util = None if (not total_link or tx is None or rx is None) else 100.0 * max(tx, rx) / total_link
    total = TopRow("TOTAL", tx, rx, rate(t.get("tx_pkts"), secs), rate(t.get("rx_pkts"), secs),
                   util, t.get("rx_drops"), t.get("retrans_pkts"))
    return rows, total


def sort_rows(rows: Sequence[TopRow], sort: str) -> List[TopRow]:
    """Names in natural order; numbers largest first, absent values last, ties by name."""
    by_name = sorted(rows, key=lambda r: natural_key(r.name))
    if sort == "name":
        return by_name
    attr = {"tx": "tx_gbps", "rx": "rx_gbps", "util": "util", "drops": "drops",
            "retrans": "retrans"}[sort]
    return sorted(by_name, key=lambda r: (getattr(r, attr) is None, -(getattr(r, attr) or 0)))


def _num(v: Optional[float], fmt: str = "{:,.2f}") -> str:
    return "-" if v is None else fmt.format(v)


# Narrow terminals give up packet rates first, then retransmits and drops; device, Gbps and
# utilisation always stay. The widths hold a busy device's values (1,600.00 Gbps, 9,999,999
# packets/s, 100.0%), so the full-screen columns do not jump from one frame to the next, and
# add up to 80 columns with a p5's device names.
COLUMNS = (Column("DEVICE", width=10), Column("TX_GBPS", True, width=8),
           Column("RX_GBPS", True, width=8), Column("TX_PPS", True, drop=3, width=9),
           Column("RX_PPS", True, drop=3, width=9), Column("UTIL", True, width=6),
           Column("DROPS", True, drop=1), Column("RETRANS", True, drop=2), Column(""))


def _cells(r: TopRow) -> List[str]:
    return [r.name, _num(r.tx_gbps), _num(r.rx_gbps), _num(r.tx_pps, "{:,.0f}"),
            _num(r.rx_pps, "{:,.0f}"), _num(r.util, "{:.1f}%"), _num(r.drops, "{:,}"),
            _num(r.retrans, "{:,}"), "reset" if r.reset else ""]


def _head(delta: SnapshotDelta) -> str:
    head = f"efajob top: {len(delta.devices)} EFA device(s), interval {delta.seconds:.2f} s"
    if delta.vanished:
        head += f", vanished: {', '.join(delta.vanished)}"
    if delta.appeared:
        head += f", appeared: {', '.join(delta.appeared)}"
    return head


def render_top(delta: SnapshotDelta, devices: Sequence[DeviceInfo], itype: Optional[InstanceType],
               *, sort: str = "name", width: Optional[int] = 80) -> str:
    """Line mode: a header line, every device and the TOTAL row (the output of a pipe)."""
    rows, total = build_top_rows(delta, devices, itype)
    cells = [_cells(r) for r in sort_rows(rows, sort)]
    tot = _cells(total)
    tot[5] = ""  # the node's utilisation is the summary's; in the table it reads as a device's
    lines, _ = fit_table(COLUMNS, cells + [tot], width, indent="")
    return _head(delta) + "\n" + "\n".join(lines) + "\n"


def render_screen(delta: Optional[SnapshotDelta], devices: Sequence[DeviceInfo],
                  itype: Optional[InstanceType], *, sort: str, height: int, width: int,
                  interval: float, node: str = "") -> Tuple[List[str], int]:
    """The full-screen view: (lines, index of the column-header line, -1 when none).

    Title, a summary line of the node's totals, the table header, as many devices as fit,
    and a footer with the keys. When not every device fits, the busiest (tx + rx) are the
    ones shown, in the chosen order, and the footer says how many are hidden. No line is
    wider than `width`, and there are at most `height` lines."""
    title = (f"efajob top{' on ' + node if node else ''}: "
             + (f"{itype.name}, " if itype else "")
             + f"every {interval:g} s, sort {sort}")
    if delta is None:
        lines = [title, f"reading the counters: first rates in {interval:g} s", "", HELP]
        return [ln[:width] for ln in lines[:height]], -1
    rows, total = build_top_rows(delta, devices, itype)
    summary = (f"{len(rows)} EFA devices  tx {_num(total.tx_gbps, '{:,.1f}')} Gbps  "
               f"rx {_num(total.rx_gbps, '{:,.1f}')} Gbps  util {_num(total.util, '{:.1f}%')}  "
               f"drops {_num(total.drops, '{:,}')}  retrans {_num(total.retrans, '{:,}')}")
    notes = []
    if delta.vanished:
        notes.append(f"vanished: {', '.join(delta.vanished)}")
    if delta.appeared:
        notes.append(f"appeared: {', '.join(delta.appeared)}")
    top = [title, summary] + (["; ".join(notes)] if notes else [])
    room = max(0, height - len(top) - 2)  # the column header and the footer
    shown = rows
    if len(rows) > room:
        busiest = set(r.name for r in sorted(rows, key=lambda r: (-r.busy, natural_key(r.name)))[:room])
        shown = [r for r in rows if r.name in busiest]
    table, _ = fit_table(COLUMNS, [_cells(r) for r in sort_rows(shown, sort)], width, indent="")
    hidden = "" if len(shown) == len(rows) else f"{len(shown)} of {len(rows)} devices (the busiest)  "
    footer = hidden + (HELP if len(hidden) + len(HELP) <= width else SHORT_HELP)
    pad = [""] * max(0, height - len(top) - len(table) - 1)  # the footer on the last line
    lines = top + table + pad + [footer]
    return [ln[:width] for ln in lines[:height]], len(top) if len(top) < height else -1
