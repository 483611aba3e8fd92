"""The head-node dashboard page: Dashboard (efajob/dashboard/model.py) -> one self-contained HTML page.

Pure: model in, string out. Inline CSS and SVG, no script at all, a Content-Security-Policy that
forbids scripts and fetches; it refreshes itself with `<meta http-equiv="refresh">`, which needs
no script. Every string from the store (host, cluster, job, user, partition, device names,
problems) goes through `esc()`; attribute values too.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

from efajob.dashboard.model import CSP, NAME_RE, Dashboard, DeviceView, NodeJob, as_number, ratio
from efajob.slurm.hostlist import fold
from efajob.slurm.jobid import is_job_id
from efajob.report.findings import verdict_tone
from efajob.report.render.html import esc
from efajob.fmt import NA, fmt_bytes, fmt_duration, fmt_gbps, fmt_pct, fmt_time

JobHref = Callable[[str, str, int], Optional[str]]  # (cluster, job id, restart) -> link or None
_CSS = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:20px;color:#1d2430}
h1{font-size:20px;margin:0 0 2px}h2{font-size:16px;margin:22px 0 6px;border-bottom:1px solid #d8dde6}
.sub{color:#5b6576;margin:0 0 12px}table{border-collapse:collapse}
td,th{padding:3px 12px 3px 0;text-align:left;vertical-align:middle;white-space:nowrap}
th{font-weight:600;color:#4a5566;font-size:13px}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
tbody tr:nth-child(even){background:#f6f8fa}tr.warn td{background:#fff6e0}tr.stale td{color:#8a93a3;background:#f0f1f3}
.cards{display:flex;flex-wrap:wrap;gap:10px}.card{border:1px solid #e1e5ec;border-radius:6px;padding:8px 12px;min-width:150px}
.card b{display:block;font-size:20px}.card span{color:#5b6576;font-size:12px}
.badge{display:inline-block;padding:0 7px;border-radius:8px;color:#fff;font-weight:600;font-size:12px}
.badge.ok{background:#2e7d32}.badge.warn{background:#b26a00}.badge.stale{background:#6b7585}
.badge.Healthy{background:#2e7d32}.badge.Warning{background:#b26a00}.badge.Failure{background:#c62828}
.badge.unknown{background:#6b7585}td.hot{color:#c62828;font-weight:600}
.gauge{display:inline-block;width:80px;height:10px;background:#e8ebf0;border-radius:5px;vertical-align:middle;overflow:hidden}
.gauge span{display:block;height:100%;background:#1565c0}.big .gauge{width:160px}
.alerts{border-left:4px solid #b26a00;background:#fff6e0;padding:6px 12px;margin:12px 0}.alerts p{margin:2px 0}
.muted{color:#6b7585}svg.devs{vertical-align:middle}a{color:#1565c0}
"""


def _gauge(ratio: Optional[float]) -> str:
    pct = 0.0 if ratio is None else max(0.0, min(100.0, ratio * 100))
    return f'<span class="gauge"><span style="width:{pct:.1f}%"></span></span> {esc(fmt_pct(ratio))}'


def _rate(v: Optional[float]) -> str:
    if v is None:
        return NA
    return "0" if v == 0 else (f"{v:,.0f}/s" if v >= 10 else f"{v:.1f}/s")


def _ago(age: Optional[float]) -> str:
    return NA if age is None else f"{fmt_duration(age)} ago"


def _link(text: str, href: Optional[str]) -> str:
    return f'<a href="{esc(href)}">{esc(text)}</a>' if href else esc(text)


def _job_link(text: str, href: Optional[JobHref], cluster: object, job_id: object, restart: object) -> str:
    """A job id linked to its report, only when every part is what the server accepts (a
    record's fields are data from a shared filesystem)."""
    if (href is not None and is_job_id(job_id) and isinstance(cluster, str)
            and NAME_RE.fullmatch(cluster) is not None and isinstance(restart, int)
            and not isinstance(restart, bool) and restart >= 0):
        return _link(text, href(cluster, job_id, restart))
    return _link(text, None)


def _device_bars(devs: Sequence[DeviceView]) -> str:
    """One bar per device: its busier direction over its link rate. An idle device among busy
    siblings, or a device whose error counters rose or whose counters are unreadable (red),
    stands out at a glance. (Not the port state: the EFA driver always reports ACTIVE.)"""
    if not devs:
        return '<span class="muted">none</span>'
    w, h = 5, 18
    bars = []
    for i, d in enumerate(devs):
        busier = max([v for v in (d.tx_gbps, d.rx_gbps) if v is not None], default=None)
        r = max(0.0, min(1.0, ratio(busier, d.link_gbps) or 0.0))
        bh = max(1.0, r * h) if busier is not None else 0.0
        color = "#c62828" if d.sick else "#1565c0"
        what = ("port counters unreadable" if d.port_counters == 0 else
                "errors " + ", ".join(f"{k} {v:.2g}/s" for k, v in d.errors.items()) if d.errors
                else "no errors")
        tip = (f"{d.name} ({what}): sent {fmt_gbps(d.tx_gbps)}, received "
               f"{fmt_gbps(d.rx_gbps)} of {fmt_gbps(d.link_gbps)} Gbps")
        back = "#f4c7c3" if d.sick else "#e8ebf0"
        bars.append(f'<g><title>{esc(tip)}</title><rect x="{i * (w + 1)}" y="0" width="{w}" '
                    f'height="{h}" fill="{back}"/><rect x="{i * (w + 1)}" y="{h - bh:.1f}" '
                    f'width="{w}" height="{bh:.1f}" fill="{color}"/></g>')
    well = sum(1 for d in devs if not d.sick)
    return (f'<svg class="devs" xmlns="http://www.w3.org/2000/svg" width="{len(devs) * (w + 1)}" '
            f'height="{h}" role="img" aria-label="{esc(f"{well} of {len(devs)} devices without errors")}">'
            + "".join(bars) + f"</svg> {well}/{len(devs)}")


def _cards(d: Dashboard) -> str:
    t = d.totals
    link = f" of {t.link_gbps:,.0f} Gbps" if t.link_gbps else ""
    cards = [
        (f"{t.fresh}/{t.nodes}", f"nodes reporting ({t.stale} stale, {t.warn} with problems)"),
        (f"{fmt_gbps(t.tx_gbps)} / {fmt_gbps(t.rx_gbps)}", "EFA Gbps now, sent / received" + link),
        (f'<span class="big">{_gauge(t.util)}</span>', "utilisation (busier direction)"),
        (f"{t.running_jobs}", f"running jobs, {t.users} user(s)"),
        (f"{_rate(t.rates.get('rx_drops'))} / {_rate(t.rates.get('retrans_pkts'))}",
         "rx drops / SRD retransmits"),
    ]
    return '<div class="cards">' + "".join(
        f'<div class="card" id="card{i}"><b>{v if i == 2 else esc(v)}</b><span>{esc(s)}</span></div>'
        for i, (v, s) in enumerate(cards)) + "</div>"


def _alerts(d: Dashboard) -> str:
    lines = [f"<p><b>{esc(n.host)}</b>{esc(' (' + n.cluster + ')' if len(d.clusters) > 1 else '')}: "
             f"{esc('; '.join(n.problems))}</p>" for n in d.nodes if n.problems]
    lines += [f"<p>{esc(x)}</p>" for x in d.notes]
    return f'<div class="alerts" id="alerts">{"".join(lines)}</div>' if lines else ""


def _job_refs(jobs: Sequence[NodeJob], cluster: str, href: Optional[JobHref], stale: bool) -> str:
    if not jobs:
        return '<span class="muted">idle</span>'
    # A stale node's jobs may be long gone: shown, not linked (the report would not find them).
    return ", ".join((f'<span class="muted">{esc(j.key)}</span>' if stale else
                      _job_link(j.key, href, cluster, j.job_id, j.restart))
                     + (f" ({esc(j.user)})" if j.user else "") for j in jobs)


def _nodes_table(d: Dashboard, href: Optional[JobHref], tz) -> str:
    if not d.nodes:
        return "<p>No node status files yet: are the node daemons running, and do they see this store?</p>"
    multi = len(d.clusters) > 1
    head = ("<tr>" + ("<th>Cluster</th>" if multi else "") + "<th>Node</th><th>State</th><th>Type</th>"
            "<th class=n>Sent Gbps</th><th class=n>Recv Gbps</th><th>Utilisation</th><th>Devices</th>"
            "<th class=n>rx drops</th><th class=n>Retransmits</th><th>Jobs (user)</th><th>Updated</th></tr>")
    rows = []
    for n in d.nodes:
        state = {"ok": "ok", "warn": "problem", "stale": "STALE"}[n.state]
        cells = ([esc(n.cluster)] if multi else []) + [
            f"<b>{esc(n.host)}</b>", f'<span class="badge {n.state}">{state}</span>',
            esc(n.instance_type or NA), esc(fmt_gbps(n.tx_gbps)), esc(fmt_gbps(n.rx_gbps)),
            _gauge(n.util), _device_bars(n.devices), esc(_rate(n.rates.get("rx_drops"))),
            esc(_rate(n.rates.get("retrans_pkts"))), _job_refs(n.jobs, n.cluster, href, n.stale),
            f'<span title="{esc(fmt_time(n.time, tz))}">{esc(_ago(n.age_s))}</span>']
        off = 1 if multi else 0
        num = {3 + off, 4 + off, 7 + off, 8 + off}
        # Drops and retransmits are rare on a healthy fabric: any, now, is shown in red.
        hot = {i + off for i, k in ((7, "rx_drops"), (8, "retrans_pkts")) if n.rates.get(k)}
        cls = {i: ' class="n hot"' if i in hot else " class=n" for i in num}
        tds = "".join(f"<td{cls.get(i, '')}>{c}</td>" for i, c in enumerate(cells))
        rows.append(f'<tr class="{n.state}" data-host="{esc(n.host)}">{tds}</tr>')
    return f'<table id="nodes"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'


def _running_table(d: Dashboard, href: Optional[JobHref], tz) -> str:
    if not d.running:
        return "<p>None: no fresh node status lists a job.</p>"
    head = ("<tr><th>Job</th><th>Cluster</th><th>User</th><th>Partition</th><th class=n>Nodes</th>"
            "<th>Hosts</th><th>Running for</th><th class=n>Sent Gbps</th><th class=n>Recv Gbps</th>"
            "<th>Shared with other jobs</th></tr>")
    rows = []
    for r in d.running:
        since = None if r.start is None else max(0.0, d.generated - r.start)
        cells = [_job_link(r.key, href, r.cluster, r.job_id, r.restart), esc(r.cluster),
                 esc(", ".join(r.users) or NA), esc(", ".join(r.partitions) or NA), str(len(r.hosts)),
                 esc(_fold(r.hosts)), f'<span title="{esc(fmt_time(r.start, tz))}">{esc(fmt_duration(since))}</span>',
                 esc(fmt_gbps(r.tx_gbps)), esc(fmt_gbps(r.rx_gbps)), esc(_fold(r.shared_hosts) or "-")]
        tds = "".join(f"<td{' class=n' if i in (4, 7, 8) else ''}>{c}</td>" for i, c in enumerate(cells))
        rows.append(f"<tr>{tds}</tr>")
    return f'<table id="running"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'


def _fold(hosts: Sequence[str]) -> str:
    try:
        return fold(hosts)
    except Exception:  # a name fold() cannot group: list it as is (display only)
        return ",".join(hosts)


def _recent_table(d: Dashboard, href: Optional[JobHref], tz) -> str:
    if not d.recent:
        return "<p>No job records in the store yet (they arrive after each job's epilog).</p>"
    head = ("<tr><th>Job</th><th>Cluster</th><th>User</th><th>State</th><th class=n>Nodes</th>"
            "<th>Start</th><th class=n>Elapsed</th><th class=n>Sent</th><th class=n>Received</th>"
            "<th class=n>Avg/node</th><th>Verdict</th><th>Findings</th></tr>")
    rows = []
    for j in d.recent:
        jid, cluster, restart = j.get("job_id"), j.get("cluster"), j.get("restart") or 0
        key = f"{jid}" + (f".{restart}" if restart else "")
        verdict = str(j.get("verdict") or NA)
        if j.get("running") and not verdict.startswith("Running"):
            verdict += " (running)"
        vcls = verdict_tone(j.get("verdict"))
        findings = j.get("findings")
        findings = findings if isinstance(findings, list) else []
        avg = as_number(j.get("avg_gbps_per_node"))
        cells = [_job_link(key, href, cluster, jid, restart), esc(cluster or NA),
                 esc(j.get("user") or NA), esc(j.get("state") or NA), esc(j.get("num_nodes") or NA),
                 esc(fmt_time(as_number(j.get("start")), tz)[:16] if as_number(j.get("start")) else NA),
                 esc(fmt_duration(as_number(j.get("elapsed_s")))), esc(fmt_bytes(as_number(j.get("tx_bytes")))),
                 esc(fmt_bytes(as_number(j.get("rx_bytes")))), esc(f"{fmt_gbps(avg)} Gbps" if avg is not None else NA),
                 f'<span class="badge {vcls}">{esc(verdict)}</span>', esc(", ".join(map(str, findings)) or "-")]
        tds = "".join(f"<td{' class=n' if i in (4, 6, 7, 8, 9) else ''}>{c}</td>" for i, c in enumerate(cells))
        rows.append(f"<tr>{tds}</tr>")
    return f'<table id="recent"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'


def render_dashboard(d: Dashboard, *, refresh: int = 0, job_href: Optional[JobHref] = None,
                     tz=None, store: Optional[str] = None) -> str:
    """The page. `refresh` > 0 reloads it every that many seconds (meta refresh: no script);
    `job_href` links job ids to their reports (the server's /job/<id>; none in a static file)."""
    where = ", ".join(d.clusters) or "no cluster yet"
    title = f"EFA dashboard: {where}"
    meta = f'<meta http-equiv="refresh" content="{int(refresh)}">' if refresh > 0 else ""
    sub = (f"Generated {fmt_time(d.generated, tz)}"
           + (f", refreshed every {int(refresh)} s" if refresh > 0 else " (static: does not refresh)")
           + f". Nodes silent for more than {fmt_duration(d.max_status_age)} are stale and left out of the totals."
           + (f" Store {store}." if store else ""))
    hint = "" if job_href else ('<p class="muted">Job reports: <code>efajob report JOBID --format html '
                                "-o FILE</code> (or open this page through <code>efajob dashboard serve</code>).</p>")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">{meta}'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>\n"
        f"<h1>{esc(title)}</h1>\n<p class=\"sub\">{esc(sub)}</p>\n{_cards(d)}\n{_alerts(d)}\n"
        f"<h2>Nodes ({len(d.nodes)})</h2>\n{_nodes_table(d, job_href, tz)}\n"
        f"<h2>Running jobs ({len(d.running)})</h2>\n{_running_table(d, job_href, tz)}\n"
        f"<h2>Recent jobs</h2>\n{_recent_table(d, job_href, tz)}\n{hint}"
        "</body></html>\n")
