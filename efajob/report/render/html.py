"""The HTML report: one self-contained page (inline CSS and SVG, no script, no external
resource), safe to mail around or attach to a ticket.

Every string that comes from a record, Slurm or the store (job names, user names, hosts,
device names, counter names, file paths) goes through `esc()`: a job named
`<script>alert(1)</script>` prints as text. A Content-Security-Policy that forbids scripts and
any fetch backs that up. Charts: per node, tx and rx Gbps over the job from the record's series,
downsampled to at most MAX_POINTS points; past report/sampling.SERIES_LIMIT nodes only a sample
of the nodes is drawn, and the page says which.
"""
from __future__ import annotations

import html
from datetime import tzinfo
from typing import TYPE_CHECKING, List, Optional, Sequence, Tuple

from efajob.fmt import NA, fmt_bytes, fmt_count, fmt_duration, fmt_gbps, fmt_pct, fmt_time
from efajob.report.compact import column
from efajob.report.findings import verdict_tone
from efajob.report.sampling import describe, series_sample
from efajob.report.render.text import (QUESTIONED, device_avg, error_totals, fmt_allowance,
                                       link_source_text, natural_key, not_here)

if TYPE_CHECKING:  # pragma: no cover
    from efajob.report.model import JobReport, NodeReport

MAX_POINTS = 120
DEVICE_ROWS_NODES = 64
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"
_CSS = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1d2430;max-width:1200px}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:24px 0 8px;border-bottom:1px solid #d8dde6}
table{border-collapse:collapse}td,th{padding:2px 10px 2px 0;text-align:left;vertical-align:top}
th{font-weight:600;color:#4a5566}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
tr.dev td{color:#5b6576;font-size:12px}tr.flag td{background:#fff6e0}
tr.devs>td{padding:0 0 4px 24px}details summary{cursor:pointer;color:#5b6576;font-size:12px}
.finding{margin:6px 0}code{background:#f0f2f5;padding:0 3px;border-radius:3px;font-size:13px}
.verdict{display:inline-block;padding:2px 10px;border-radius:10px;color:#fff;font-weight:600}
.Healthy{background:#2e7d32}.Warning{background:#b26a00}.Failure{background:#c62828}.unknown{background:#6b7585}
.sev{font-weight:600;text-transform:uppercase;font-size:11px;padding:1px 6px;border-radius:6px;color:#fff}
.critical{background:#c62828}.warning{background:#b26a00}.info{background:#1565c0}
.gauge{display:inline-block;width:300px;height:12px;background:#e8ebf0;border-radius:6px;vertical-align:middle;overflow:hidden}
.gauge span{display:block;height:100%;background:#1565c0}
.charts{display:flex;flex-wrap:wrap;gap:12px}.chart{border:1px solid #e1e5ec;border-radius:6px;padding:4px}
.chart p{margin:0;font-size:12px}.advice{color:#4a5566;margin:2px 0 10px}.note{color:#6b4f00}
.legend .tx{color:#1565c0}.legend .rx{color:#d84315}.legend .above{color:#c62828}
"""


def esc(v: object) -> str:
    return html.escape(str(v), quote=True)


def _downsample(t: Sequence, ys: Sequence, n: int = MAX_POINTS) -> Tuple[List[float], List[Optional[float]]]:
    if len(t) <= n:
        return list(t), list(ys)
    k = -(-len(t) // n)
    ot, oy = [], []
    for i in range(0, len(t), k):
        vals = [v for v in ys[i:i + k] if isinstance(v, (int, float))]
        ot.append(t[min(i + k, len(t)) - 1])
        oy.append(sum(vals) / len(vals) if vals else None)
    return ot, oy


def _polyline(t: Sequence[float], ys: Sequence[Optional[float]], sx: float, sy: float, h: float,
              cls: str, color: str, width: float) -> str:
    pts = " ".join(f"{x * sx:.1f},{h - y * sy:.1f}" for x, y in zip(t, ys)
                   if isinstance(x, (int, float)) and isinstance(y, (int, float)))
    return (f'<polyline class="{cls}" fill="none" stroke="{color}" stroke-width="{width}" '
            f'points="{pts}"/>' if pts else "")


def series_top(nodes: Sequence["NodeReport"]) -> float:
    """One y scale for every node's chart (so a straggler looks lower): the highest point of any
    series plus headroom, or the link rate when nothing was sampled."""
    top = 0.0
    for n in nodes:
        for key in ("tx_gbps", "rx_gbps"):
            vals = (n.series or {}).get(key)
            if vals is None or isinstance(vals, list):
                top = max([top] + [v for v in vals or [] if isinstance(v, (int, float))])
            elif len(vals):  # a compact column (report/compact.py): numbers only
                top = max(top, max(vals))
    if top <= 0:
        top = max([n.link_gbps or 0.0 for n in nodes] + [1.0])
    return top * 1.15


def chart(n: "NodeReport", top: Optional[float] = None, width: int = 260, height: int = 90) -> str:
    """Inline SVG of one node's tx/rx Gbps over time (empty frame when there is no series)."""
    s = n.series or {}
    # Lists as parsed, or compact arrays (report/compact.py); anything else draws no chart.
    cols = [column(v) if v else [] for v in (s.get("t"), s.get("tx_gbps"), s.get("rx_gbps"))]
    ok = all(c is not None for c in cols) and len(cols[0] or []) > 0
    t, tx, rx = (c or [] for c in cols)
    label = f"{n.host}: EFA Gbps over time (blue sent, orange received)"
    head = (f'<svg class="series" xmlns="http://www.w3.org/2000/svg" width="{width}" '
            f'height="{height + 14}" role="img" aria-label="{esc(label)}" data-host="{esc(n.host)}">'
            f"<title>{esc(label)}</title>")
    frame = f'<rect x="0" y="0" width="{width}" height="{height}" fill="#fafbfc" stroke="#e1e5ec"/>'
    if not ok:
        return head + frame + (f'<text x="8" y="{height // 2}" font-size="11" fill="#8a93a3">'
                               "no daemon samples</text></svg>")
    tt, ttx = _downsample(t[:len(tx)], tx)
    _, trx = _downsample(t[:len(rx)], rx)
    if top is None:
        top = series_top([n])
    tmax = max(v for v in tt if isinstance(v, (int, float))) or 1.0
    sx, sy = width / tmax, (height - 4) / top
    axis = (f'<text x="2" y="{height + 12}" font-size="10" fill="#6b7585">0</text>'
            f'<text x="{width - 2}" y="{height + 12}" font-size="10" fill="#6b7585" '
            f'text-anchor="end">{esc(fmt_duration(tmax))}</text>'
            f'<text x="4" y="11" font-size="10" fill="#6b7585">{esc(f"{top:,.0f}")} Gbps</text>')
    # Sent drawn wide under received: equal rates (the usual all-reduce) still show both.
    return (head + frame
            + _polyline(tt, ttx, sx, sy, height, "tx", "#1565c0", 3.0)
            + _polyline(tt, trx, sx, sy, height, "rx", "#d84315", 1.2)
            + _above_link(n, t, tx, rx, sx, sy, height)
            + axis + "</svg>")


def _above_link(n: "NodeReport", t: Sequence, tx: Sequence, rx: Sequence, sx: float, sy: float,
                h: float) -> str:
    """A red ring on every point faster than the link (finding rate_above_link), drawn at the
    point's own value and time: it is questioned, not hidden."""
    out = []
    for i in n.above_link:
        if i >= len(t) or not isinstance(t[i], (int, float)):
            continue
        ys = [c[i] for c in (tx, rx) if i < len(c) and isinstance(c[i], (int, float))]
        if ys:
            out.append(f'<circle class="above-link" cx="{t[i] * sx:.1f}" cy="{max(2.0, h - max(ys) * sy):.1f}" '
                       f'r="3" fill="none" stroke="#c62828"><title>{esc(fmt_gbps(max(ys)))} Gbps: above '
                       f"the link, not a measurement</title></circle>")
    return "".join(out)


def _gauge(ratio: Optional[float]) -> str:
    pct = 0.0 if ratio is None else max(0.0, min(100.0, ratio * 100))
    return f'<span class="gauge"><span style="width:{pct:.1f}%"></span></span> {esc(fmt_pct(ratio))}'


def _rows(pairs: Sequence[Tuple[str, str]]) -> str:
    return "".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in pairs)


def _header(r: "JobReport", tz: Optional[tzinfo]) -> str:
    m = r.meta
    job = esc(m.job_id) + (f" ({esc(m.alias)})" if m.alias else "") + (
        f" restart {m.restart}" if m.restart or len(r.restarts) > 1 else "")
    state = esc(m.state or NA) + (f", exit code {esc(m.exit_code)}" if m.exit_code else "")
    pairs = [("Job", job), ("Name", esc(m.name or NA)), ("User", esc(m.user or NA)),
             ("Account", esc(m.account or NA)), ("Partition", esc(m.partition or NA)),
             ("Nodes", esc(f"{m.num_nodes or NA}  {m.nodelist or ''}")),
             ("Instance type", esc(m.instance_type or NA)), ("State", state),
             ("Start", esc(fmt_time(m.start, tz))),
             ("End", "(running)" if r.running and m.end is None else esc(fmt_time(m.end, tz))),
             ("Run time", esc(fmt_duration(m.elapsed_s))),
             ("Metadata", "Slurm" if m.source == "slurm" else "job records (no Slurm metadata)")]
    notes = "".join(f'<p class="note">note: {esc(n)}</p>' for n in r.notes)
    return f"<table>{_rows(pairs)}</table>{notes}"


def _overall(r: "JobReport") -> str:
    o, t = r.overall, r.overall.totals
    if o.nodes_with_data == 0:
        return "<p>No node record yet.</p>"
    q = QUESTIONED if any(x.peak_above_link for x in r.data_nodes) else ""
    write = "not supported" if "rdma_write_bytes" in o.unsupported else fmt_pct(o.rdma_write_share)
    pairs = [
        ("Sent", esc(f"{fmt_bytes(t.get('tx_bytes'))} in {fmt_count(t.get('tx_pkts'))} packets")),
        ("Received", esc(f"{fmt_bytes(t.get('rx_bytes'))} in {fmt_count(t.get('rx_pkts'))} packets")),
        ("Per node, average", esc(f"{fmt_gbps(o.avg_tx_gbps)} Gbps out / {fmt_gbps(o.avg_rx_gbps)} Gbps in")),
        ("Per node, peak", esc(f"{fmt_gbps(o.peak_tx_gbps)}{q} Gbps out / {fmt_gbps(o.peak_rx_gbps)}{q} Gbps in")),
        ("Utilisation, average", _gauge(o.util_avg) + (esc(f" of {o.link_gbps:,.0f} Gbps") if o.link_gbps else "")),
        ("Utilisation, peak", _gauge(o.util_peak) + esc(q and f"{q} (above the link: see rate_above_link)")),
        ("Bytes by operation", esc(f"RDMA read {fmt_pct(o.rdma_read_share)}, RDMA write {write}, "
                                   f"send/recv {fmt_pct(o.send_share)}")),
    ]
    if o.link_source:
        pairs.insert(6, ("Link rate", esc(link_source_text(r))))
    if o.ena:
        pairs.append(("ENA (TCP/IP)", esc(f"sent {fmt_bytes(o.ena.get('tx_bytes'))}, received "
                                          f"{fmt_bytes(o.ena.get('rx_bytes'))}")))
    return (f"<p>Sum over {o.nodes_with_data} node(s) with records.</p><table>{_rows(pairs)}</table>")


def _nodes(r: "JobReport") -> str:
    head = ("<tr><th class=n>#</th><th>Host</th><th>Status</th><th class=n>Sent</th>"
            "<th class=n>Received</th><th class=n>Avg out Gbps</th><th class=n>Avg in Gbps</th>"
            "<th class=n>Peak Gbps</th><th class=n>Util</th><th class=n>Drops</th>"
            "<th class=n>Retrans</th><th>Findings</th></tr>")
    body = []
    # Every device of every node up to DEVICE_ROWS_NODES nodes; beyond, only flagged nodes'
    # devices (a 1,024 x 32 table helps nobody; the JSON and CSV have them all).
    show_devices = len(r.nodes) <= DEVICE_ROWS_NODES
    for n in r.nodes:
        peak = max([v for v in (n.peak_tx_gbps, n.peak_rx_gbps) if v is not None], default=None)
        cells = [str(n.rank), esc(n.host), esc(n.status), fmt_bytes(n.tx_bytes), fmt_bytes(n.rx_bytes),
                 fmt_gbps(n.avg_tx_gbps), fmt_gbps(n.avg_rx_gbps),
                 fmt_gbps(peak) + (QUESTIONED if n.peak_above_link else ""), fmt_pct(n.util_avg),
                 fmt_count(n.rx_drops), fmt_count(n.retrans_pkts)]
        if n.status == "running":
            cells[5:7] = [f"live {fmt_gbps(n.live_tx_gbps)}", f"live {fmt_gbps(n.live_rx_gbps)}"]
        cls = ' class="flag"' if n.marks or n.status == "missing" else ""
        num = (0, 3, 4, 5, 6, 7, 8, 9, 10)
        tds = "".join(f"<td{' class=n' if i in num else ''}>{esc(c) if i not in (1, 2) else c}</td>"
                      for i, c in enumerate(cells))
        # The row's id is what the findings link to (host names are validated store names).
        body.append(f'<tr{cls} id="{esc(node_anchor(n.host))}">{tds}<td>{esc(", ".join(n.marks))}</td></tr>')
        if not show_devices and not n.marks:
            continue
        devs = []
        for d in sorted(n.devices, key=lambda d: natural_key(d.name)):
            dpk = max([v for v in (d.peak_tx_gbps, d.peak_rx_gbps) if v is not None], default=None)
            dc = ["", esc(d.name), "", fmt_bytes(d.tx_bytes), fmt_bytes(d.rx_bytes),
                  fmt_gbps(device_avg(d.tx_bytes, n.elapsed_s)), fmt_gbps(device_avg(d.rx_bytes, n.elapsed_s)),
                  fmt_gbps(dpk) + (QUESTIONED if d.peak_above_link else ""), "",
                  fmt_count(d.counters.get("rx_drops")),
                  fmt_count(d.counters.get("retrans_pkts"))]
            tds = "".join(f"<td{' class=n' if i in num else ''}>{esc(c) if i != 1 else c}</td>"
                          for i, c in enumerate(dc))
            devs.append(f'<tr class="dev">{tds}<td>{"reset" if d.resets else ""}</td></tr>')
        if devs:
            # Collapsed: a 256-node job's 8,192 device rows pushed everything else out of sight;
            # a flagged node opens on its own devices.
            body.append(f'<tr class="devs"><td colspan="12"><details{" open" if n.marks else ""}>'
                        f"<summary>{len(devs)} device(s) of {esc(n.host)}</summary><table>{head}"
                        f"{''.join(devs)}</table></details></td></tr>")
    note = "" if show_devices else (f"<p>Device rows shown for flagged nodes only ({len(r.nodes)} "
                                    "nodes); --format csv or json lists every device.</p>")
    return f"{note}<table>{head}{''.join(body)}</table>"


def node_anchor(host: str) -> str:
    return f"node-{host}"


def advice_html(text: str) -> str:
    """Advice as text: `command` spans (the text report's backticks) become <code>, the rest
    is escaped; an unpaired backtick stays a backtick."""
    parts = text.split("`")
    if len(parts) % 2 == 0:  # unpaired: no code spans at all
        return esc(text)
    return "".join(f"<code>{esc(p)}</code>" if i % 2 else esc(p) for i, p in enumerate(parts))


def _findings(r: "JobReport") -> str:
    if not r.findings:
        return "<p>None: nothing unusual in the counters.</p>"
    out = []
    hosts = {n.host for n in r.nodes}
    for f in r.findings:
        # A finding about a node links to its row in the table below.
        host = (f'<a href="#{esc(node_anchor(f.host))}">{esc(f.host)}</a>' if f.host in hosts
                else esc(f.host or ""))
        where = " ".join(x for x in (host, esc(f.device or "")) if x)
        out.append(f'<div class="finding"><p><span class="sev {esc(f.severity)}">{esc(f.severity)}</span> '
                   f"<b>{esc(f.code)}</b> {where}<br>{esc(f.message)}</p>"
                   + (f'<p class="advice">{advice_html(f.advice)}</p>' if f.advice else "") + "</div>")
    return "".join(out)


def _health(r: "JobReport") -> str:
    t, o = r.overall.totals, r.overall

    def count(name: str) -> str:
        return not_here(r, name) if name in o.unsupported else fmt_count(t.get(name))

    errs = error_totals(r)
    pairs = [("rx drops", fmt_count(t.get("rx_drops"))),
             ("SRD retransmitted packets", count("retrans_pkts")),
             ("retransmit timeouts", count("retrans_timeout_events")),
             ("impaired remote connections", count("impaired_remote_conn_events")),
             ("unresponsive remote events", count("unresponsive_remote_events")),
             ("RDMA work-request errors", fmt_count(errs["wr_errors"])),
             ("device (admin, verbs) errors", fmt_count(errs["device_errors"]))]
    if "rdma_write_wr_err" in o.unsupported:
        pairs.append(("RDMA write counters", not_here(r, "rdma_write_wr_err")))
    pairs += [("ENA allowance exceeded", fmt_allowance(o.ena)),
              ("counter resets", ", ".join(o.resets) or "none")]
    return f"<table>{_rows([(k, esc(v)) for k, v in pairs])}</table>"


def render_html(r: "JobReport", *, tz: Optional[tzinfo] = None) -> str:
    m = r.meta
    title = f"EFA job report: job {m.job_id}, cluster {m.cluster}"
    top = series_top(r.data_nodes)
    sample = series_sample(r)
    charts = "".join(
        f'<div class="chart"><p>{esc(n.rank)}. {esc(n.host)} ({esc(n.status)})</p>{chart(n, top)}</div>'
        for n in sample.nodes)
    if not sample.complete:
        charts = f'<p class="note" id="series-sample">{esc(describe(sample))}</p>' + charts
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>\n"
        f'<h1>{esc(title)} <span class="verdict {esc(verdict_tone(r.verdict))}" id="verdict">{esc(r.verdict)}</span></h1>\n'
        # Verdict and findings first: at 256 nodes they were 16,000 px down, below every row.
        f'<h2 id="findings">Findings</h2>\n{_findings(r)}\n'
        f"<h2>Job</h2>\n{_header(r, tz)}\n<h2>Overall</h2>\n{_overall(r)}\n"
        f"<h2>Health</h2>\n{_health(r)}\n"
        f'<h2>Throughput over time</h2>\n<p class="legend"><span class="tx">&#9632; sent</span> '
        f'<span class="rx">&#9632; received</span> <span class="above">&#9675; above the link (not a measurement)</span> (Gbps per node, one scale for all nodes)</p>\n<div class="charts">{charts or "<p>No node record yet.</p>"}</div>\n'
        f"<h2>Per node (ranked by traffic)</h2>\n{_nodes(r)}\n"
        "</body></html>\n")
