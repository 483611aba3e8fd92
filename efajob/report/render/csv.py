"""The CSV report: one row per node, then one row per device of that node (`level` says which).

For spreadsheets and pandas: raw numbers (bytes, Gbps with 3 decimals, ratios), no units; an
absent value is an empty cell, never 0. Columns are fixed (COLUMNS), documented in
docs/report.md; counters a row lacks stay empty.
"""
from __future__ import annotations

import csv
import io
from typing import TYPE_CHECKING, Iterator, List, Optional

from efajob.report.render.text import device_avg, natural_key

if TYPE_CHECKING:  # pragma: no cover
    from efajob.report.model import JobReport

COUNTERS = ("tx_bytes", "rx_bytes", "tx_pkts", "rx_pkts", "rx_drops", "send_bytes", "recv_bytes",
            "rdma_read_bytes", "rdma_read_resp_bytes", "rdma_write_bytes", "rdma_write_recv_bytes",
            "retrans_pkts", "retrans_bytes", "retrans_timeout_events", "unresponsive_remote_events",
            "impaired_remote_conn_events")
COLUMNS = ("job_id", "cluster", "restart", "level", "rank", "host", "device", "status",
           "avg_tx_gbps", "avg_rx_gbps", "peak_tx_gbps", "peak_rx_gbps", "link_gbps", "util_avg") \
    + COUNTERS + ("ena_tx_bytes", "ena_rx_bytes", "shared", "resets", "findings")


def _f(v: Optional[float], nd: int = 3) -> str:
    return "" if v is None else f"{v:.{nd}f}"


def _i(v: Optional[int]) -> str:
    return "" if v is None else str(v)


def render_csv(r: "JobReport") -> str:
    return "".join(iter_csv(r))


def iter_csv(r: "JobReport") -> Iterator[str]:
    """The CSV in pieces: the header, then each node's row with its devices' rows. A 4,096-node
    job is 135,000 rows (~35 MB): written as they are made, never held whole (and copied) in
    one buffer."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")

    def piece() -> str:
        text = buf.getvalue()
        buf.seek(0)
        buf.truncate()
        return text

    w.writerow(COLUMNS)
    yield piece()
    m = r.meta
    by_device: dict = {}
    for f in r.findings:
        if f.device is not None:
            by_device.setdefault((f.host, f.device), []).append(f.code)
    for n in r.nodes:
        base = [m.job_id, m.cluster, str(m.restart)]
        w.writerow(base + [
            "node", str(n.rank), n.host, "", n.status, _f(n.avg_tx_gbps), _f(n.avg_rx_gbps),
            _f(n.peak_tx_gbps), _f(n.peak_rx_gbps), _f(n.link_gbps, 1), _f(n.util_avg, 4)]
            + [_i(n.counters.get(c)) for c in COUNTERS]
            + [_i(n.ena.get("tx_bytes")), _i(n.ena.get("rx_bytes")), " ".join(n.shared),
               " ".join(n.resets), " ".join(n.marks)])
        for d in sorted(n.devices, key=lambda d: natural_key(d.name)):
            atx, arx = device_avg(d.tx_bytes, n.elapsed_s), device_avg(d.rx_bytes, n.elapsed_s)
            busier: List[float] = [v for v in (atx, arx) if v is not None]
            util = max(busier) / d.link_gbps if busier and d.link_gbps else None
            marks = " ".join(by_device.get((n.host, d.name), ()))
            w.writerow(base + [
                "device", str(n.rank), n.host, d.name, n.status, _f(atx), _f(arx),
                _f(d.peak_tx_gbps), _f(d.peak_rx_gbps), _f(d.link_gbps, 1), _f(util, 4)]
                + [_i(d.counters.get(c)) for c in COUNTERS]
                + ["", "", "", " ".join(d.resets), marks])
        yield piece()
