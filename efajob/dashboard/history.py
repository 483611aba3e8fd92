"""History: the last hours of cluster, node and job throughput, drops and retransmits, from the
models the server builds (one point per refresh at most every `step` seconds), kept in memory
in bounded rings, and drawn as inline SVG charts with a time axis. No database, nothing on disk:
a restarted server starts a new history (Prometheus or CloudWatch keep the long one).

Memory is bounded by `points` per series: at 10,000 nodes and 240 points, the node rings hold
2.4 M points (times in `array('d')`, the four values in `array('f')`: 24 bytes a point), 65 MB
measured with tracemalloc, which a head node serving 10,000 nodes can spare;
`node_series=False` keeps the cluster and jobs only (at most `max_jobs` job rings).
"""
from __future__ import annotations

import threading
from array import array
from collections import OrderedDict
from typing import Dict, Optional, Sequence, Tuple

from efajob.dashboard.model import Dashboard
from efajob.fmt import fmt_bandwidth, fmt_time
from efajob.report.render.html import esc

STEP = 30.0  # seconds between points: 240 points are two hours
POINTS = 240
FIELDS = ("tx_gbps", "rx_gbps", "rx_drops", "retrans_pkts")
NAN = float("nan")


class Ring:
    """`points` samples of FIELDS at times `t`, oldest dropped first."""

    def __init__(self, points: int):
        self.points = points
        self.t = array("d")
        self.v = {f: array("f") for f in FIELDS}

    def add(self, t: float, values: Sequence[Optional[float]]) -> None:
        self.t.append(t)
        for f, x in zip(FIELDS, values):
            self.v[f].append(NAN if x is None else x)
        if len(self.t) > self.points:
            del self.t[0]
            for a in self.v.values():
                del a[0]

    def to_dict(self) -> dict:
        """Absent values (NaN inside) are null."""
        return {"t": list(self.t),
                **{f: [None if x != x else round(x, 4) for x in a] for f, a in self.v.items()}}


def _sum_rate(nodes, name: str) -> Optional[float]:
    """A job's rate summed over its nodes that report it; None when none does (not 0)."""
    vals = [x for x in (n.rates.get(name) for n in nodes) if x is not None]
    return sum(vals) if vals else None


class History:
    def __init__(self, *, step: float = STEP, points: int = POINTS, node_series: bool = True,
                 max_jobs: int = 2000):
        self.step, self.points, self.node_series, self.max_jobs = step, points, node_series, max_jobs
        self._lock = threading.Lock()
        self._last: Optional[float] = None
        self.cluster = Ring(points)
        self.nodes: Dict[Tuple[str, str], Ring] = {}
        self.jobs: "OrderedDict[Tuple[str, str], Ring]" = OrderedDict()

    def add(self, d: Dashboard) -> bool:
        """One point from a model, unless the last is younger than `step`; True if added."""
        t = d.generated
        with self._lock:
            if self._last is not None and t - self._last < self.step:
                return False
            self._last = t
            tot = d.totals
            self.cluster.add(t, (tot.tx_gbps, tot.rx_gbps, tot.rates.get("rx_drops"),
                                 tot.rates.get("retrans_pkts")))
            if self.node_series:
                seen = set()
                for n in d.nodes:
                    if n.stale or not n.efajob:
                        continue
                    key = (n.cluster, n.host)
                    seen.add(key)
                    ring = self.nodes.get(key)
                    if ring is None:
                        ring = self.nodes[key] = Ring(self.points)
                    ring.add(t, (n.tx_gbps, n.rx_gbps, n.rates.get("rx_drops"), n.rates.get("retrans_pkts")))
                # A node gone from the model for a whole ring's span has nothing left to show.
                span = self.step * self.points
                for key in [k for k, r in self.nodes.items()
                            if k not in seen and r.t and t - r.t[-1] > span]:
                    del self.nodes[key]
            for r in d.running:
                key = (r.cluster, r.key)
                ring = self.jobs.get(key)
                if ring is None:
                    ring = self.jobs[key] = Ring(self.points)
                self.jobs.move_to_end(key)
                nodes = [d.by_host[(r.cluster, h)] for h in r.hosts if (r.cluster, h) in d.by_host]
                ring.add(t, (r.tx_gbps, r.rx_gbps, _sum_rate(nodes, "rx_drops"),
                             _sum_rate(nodes, "retrans_pkts")))
            while len(self.jobs) > self.max_jobs:  # the least recently running go first
                self.jobs.popitem(last=False)
            return True

    def series(self, kind: str, key: Optional[Tuple[str, str]] = None) -> Optional[dict]:
        """A copy of one ring as JSON: kind `cluster`, `node` or `job`."""
        with self._lock:
            if kind == "cluster":
                ring: Optional[Ring] = self.cluster
            else:
                ring = (self.nodes if kind == "node" else self.jobs).get(key)  # type: ignore[arg-type]
            return None if ring is None else ring.to_dict()


def render_chart(series: Optional[dict], title: str, *, tz=None, width: int = 560,
                 height: int = 110) -> str:
    """Sent and received over time (Gbps, scaled unit on the axis) and rx drops per second as
    red ticks along the bottom; a time axis with the first, middle and last times."""
    t = (series or {}).get("t") or []
    label = f"{title}: sent (blue) and received (orange) over time; drops in red"
    head = (f'<svg class="history" xmlns="http://www.w3.org/2000/svg" width="{width}" '
            f'height="{height + 16}" role="img" aria-label="{esc(label)}"><title>{esc(label)}</title>'
            f'<rect width="{width}" height="{height}" fill="#fafbfc" stroke="#e1e5ec"/>')
    if len(t) < 2:
        return head + (f'<text x="8" y="{height // 2}" font-size="11" fill="#8a93a3">history starts '
                       "with the server: points come every refresh</text></svg>")
    assert series is not None
    t0, t1 = t[0], t[-1]
    span = (t1 - t0) or 1.0
    vals = [x for k in ("tx_gbps", "rx_gbps") for x in series[k] if x is not None]
    top = max(vals + [1e-9]) * 1.15

    def line(k: str, color: str, w: float) -> str:
        pts = " ".join(f"{(ti - t0) / span * width:.1f},{height - (y / top) * (height - 4):.1f}"
                       for ti, y in zip(t, series[k]) if y is not None)
        return f'<polyline class="{k}" fill="none" stroke="{color}" stroke-width="{w}" points="{pts}"/>'

    drops = "".join(f'<rect x="{(ti - t0) / span * width:.1f}" y="{height - 6}" width="2" height="6" '
                    f'fill="#c62828"><title>{esc(f"{y:,.1f}")} rx drops/s</title></rect>'
                    for ti, y in zip(t, series["rx_drops"]) if y)
    axis = "".join(f'<text x="{x}" y="{height + 12}" font-size="10" fill="#6b7585" text-anchor="{a}">'
                   f"{esc(fmt_time(tt, tz)[11:16])}</text>"
                   for x, a, tt in ((2, "start", t0), (width // 2, "middle", (t0 + t1) / 2),
                                    (width - 2, "end", t1)))
    return (head + line("tx_gbps", "#1565c0", 2.5) + line("rx_gbps", "#d84315", 1.2) + drops
            + f'<text x="4" y="11" font-size="10" fill="#6b7585">{esc(fmt_bandwidth(top / 1.15))}</text>'
            + axis + "</svg>")


def history_block(series: Optional[dict], title: str, tz=None) -> str:
    return f'<div class="hist">{render_chart(series, title, tz=tz)}</div>'


def history_to_dict(h: History, kind: str, key: Optional[Tuple[str, str]] = None) -> dict:
    return {"schema": "efajob/dashboard-history", "version": 1, "kind": kind,
            "key": list(key) if key else None, "step": h.step, "points": h.points,
            "series": h.series(kind, key)}

