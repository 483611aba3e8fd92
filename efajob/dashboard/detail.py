"""The dashboard's detail pages: one node, one job (running or recent). Pure: model in, HTML out.

Like the main page: no script, every string from the store through `esc()`. A job page shows
what the live node status files say now (throughput per node, the nodes' problems) and what
the job's records say (its summary row: verdict, findings), with a link to its full report.
"""
from __future__ import annotations

from typing import Mapping, Optional

from efajob.dashboard.model import Dashboard, NodeView, RunningJob, as_number
from efajob.dashboard.page import (Links, _device_bars, _gauge, _job_link, _link, _rate, _state_text,
                                   _short_hostlist, head_html)
from efajob.report.findings import verdict_tone
from efajob.report.render.html import esc
from efajob.fmt import NA, fmt_bandwidth, fmt_bytes, fmt_duration, fmt_time


def _kv(rows) -> str:
    return "<table class=kv>" + "".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"


def _problems(n: NodeView) -> str:
    if not n.problems:
        return '<p class="muted">none</p>'
    return "<ul>" + "".join(f'<li class="{esc(sev)}">{esc(p)}</li>'
                            for (_, sev), p in zip(n.kinds, n.problems)) + "</ul>"


def render_node_page(d: Dashboard, n: NodeView, links: Links, *, refresh: int = 0, tz=None,
                     history: str = "") -> str:
    title = f"Node {n.host} ({n.cluster})"
    jobs = ", ".join(_link(j.key, links.job(n.cluster, j.key) if links.job and not n.stale else None)
                     + (f" ({esc(j.user)})" if j.user else "") for j in n.jobs) or "idle"
    facts = [("State", _state_text(n)), ("Instance type", esc(n.instance_type or NA)),
             ("Sent / received", esc(f"{fmt_bandwidth(n.tx_gbps)} / {fmt_bandwidth(n.rx_gbps)}")),
             ("Utilisation", _gauge(n.util)), ("Link", esc(fmt_bandwidth(n.link_gbps))),
             ("rx drops / retransmits", esc(f"{_rate(n.rates.get('rx_drops'))} / "
                                            f"{_rate(n.rates.get('retrans_pkts'))}")),
             ("Jobs", jobs), ("Status written", esc(fmt_time(n.time, tz))),
             ("Daemon", esc(f"{n.daemon_version or NA}, "
                            + {True: "healthy", False: "unhealthy", None: "health unknown"}[n.daemon_healthy]))]
    devs = "".join(
        f"<tr><td>{esc(dv.name)}</td><td class=n>{esc(fmt_bandwidth(dv.tx_gbps))}</td>"
        f"<td class=n>{esc(fmt_bandwidth(dv.rx_gbps))}</td><td class=n>{esc(fmt_bandwidth(dv.link_gbps))}</td>"
        f"<td>{esc(', '.join(f'{k} {v:.2g}/s' for k, v in dv.errors.items()) or '-')}</td></tr>"
        for dv in n.devices)
    dev_table = ("<table id=devices><thead><tr><th>Device</th><th class=n>Sent</th><th class=n>Recv</th>"
                 f"<th class=n>Link</th><th>Errors rising</th></tr></thead><tbody>{devs}</tbody></table>"
                 if devs else '<p class="muted">no EFA device in the status file</p>')
    meta = f'<meta http-equiv="refresh" content="{int(refresh)}">' if refresh > 0 else ""
    return (head_html(title, meta) + f'<p><a href="/">← all nodes</a></p><h1>{esc(title)}</h1>'
            f"{_kv(facts)}<h2>Problems</h2>{_problems(n)}"
            + (f"<h2>Last hours</h2>{history}" if history else "")
            + f"<h2>Devices {_device_bars(n.devices)}</h2>"
            f"{dev_table}</body></html>\n")


def render_job_page(d: Dashboard, cluster: str, key: str, running: Optional[RunningJob],
                    summary: Optional[Mapping], links: Links, *, refresh: int = 0, tz=None,
                    history: str = "") -> str:
    """`running`: the job in the fresh status files (None: not running now); `summary`: its
    row among the recent jobs (None: not among them)."""
    title = f"Job {key} ({cluster})"
    parts = [head_html(title, f'<meta http-equiv="refresh" content="{int(refresh)}">' if refresh > 0 else ""),
             f'<p><a href="/">← dashboard</a></p><h1>{esc(title)}</h1>']
    job_id, restart = (running.job_id, running.restart) if running else (
        (summary or {}).get("job_id"), (summary or {}).get("restart") or 0)
    report = _job_link("Full report (HTML)", links.report, cluster, job_id, restart)
    if summary:
        verdict = str(summary.get("verdict") or NA)
        findings = summary.get("findings")
        findings = findings if isinstance(findings, list) else []
        parts.append(_kv([
            ("Verdict", f'<span class="badge {verdict_tone(summary.get("verdict"))}">{esc(verdict)}</span>'),
            ("Findings", esc(", ".join(map(str, findings)) or "-")),
            ("User", esc(summary.get("user") or NA)), ("State", esc(summary.get("state") or NA)),
            ("Elapsed", esc(fmt_duration(as_number(summary.get("elapsed_s"))))),
            ("Sent / received", esc(f"{fmt_bytes(as_number(summary.get('tx_bytes')))} / "
                                    f"{fmt_bytes(as_number(summary.get('rx_bytes')))}")),
            ("Report", report)]))
    else:
        parts.append(f"<p>{report}</p>")
    if running is None:
        parts.append('<p class="muted">Not running now (no fresh node status lists it).</p></body></html>\n')
        return "".join(parts)
    nodes = [d.by_host[(cluster, h)] for h in running.hosts if (cluster, h) in d.by_host]
    since = None if running.start is None else max(0.0, d.generated - running.start)
    parts.append("<h2>Now</h2>" + _kv([
        ("Users", esc(", ".join(running.users) or NA)), ("Partitions", esc(", ".join(running.partitions) or NA)),
        ("Nodes", esc(f"{len(running.hosts):,}: {_short_hostlist(running.hosts)}")),
        ("Running for", esc(fmt_duration(since))),
        ("Sent / received", esc(f"{fmt_bandwidth(running.tx_gbps)} / {fmt_bandwidth(running.rx_gbps)}")),
        ("Shared nodes", esc(_short_hostlist(running.shared_hosts) or "-"))]))
    if history:
        parts.append(f"<h2>Last hours</h2>{history}")
    sick = [n for n in nodes if n.problems]
    parts.append(f"<h2>Findings now ({len(sick):,} node(s) with problems)</h2>")
    parts.append("<ul>" + "".join(
        f"<li><b>{_link(n.host, links.node(cluster, n.host) if links.node else None)}</b>: "
        f"{esc('; '.join(n.problems))}</li>" for n in sick[:200]) + "</ul>" if sick else '<p class="muted">none</p>')
    rows = "".join(
        f'<tr class="{n.state}"><td><b>{_link(n.host, links.node(cluster, n.host) if links.node else None)}</b></td>'
        f"<td>{_state_text(n)}</td><td class=n>{esc(fmt_bandwidth(n.tx_gbps))}</td>"
        f"<td class=n>{esc(fmt_bandwidth(n.rx_gbps))}</td><td>{_gauge(n.util)}</td>"
        f"<td>{_device_bars(n.devices, detail=False)}</td><td class=n>{esc(_rate(n.rates.get('rx_drops')))}</td></tr>"
        for n in nodes)
    parts.append("<h2>Throughput per node</h2><table id=jobnodes><thead><tr><th>Node</th><th>State</th>"
                 "<th class=n>Sent</th><th class=n>Recv</th><th>Utilisation</th><th>Devices</th>"
                 f"<th class=n>rx drops</th></tr></thead><tbody>{rows}</tbody></table></body></html>\n")
    return "".join(parts)
