"""The head-node dashboard page: Dashboard (efajob/dashboard/model.py) -> one self-contained HTML page.

Pure: model in, string out. Inline CSS and SVG, no script at all, a Content-Security-Policy that
forbids scripts and fetches; it refreshes itself with `<meta http-equiv="refresh">`, which needs
no script. Every string from the store (host, cluster, job, user, partition, device names,
problems) goes through `esc()`; attribute values too.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Optional, Sequence

from efajob.dashboard.model import CSP, NAME_RE, UTIL_SUSPECT, Dashboard, DeviceView, NodeJob, NodeView, as_number, ratio
from efajob.dashboard.view import DEFAULT, STATES, View, pages, select, to_query
from efajob.slurm.hostlist import fold
from efajob.slurm.jobid import is_job_id
from efajob.report.findings import verdict_tone
from efajob.report.render.html import esc
from efajob.fmt import NA, fmt_bandwidth, fmt_bytes, fmt_duration, fmt_gbps, fmt_pct, fmt_time

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
.alerts p.critical b{color:#c62828}.badge.no-efajob{background:#90a4ae}.badge.powered-down{background:#b0bec5}
.grp{display:inline-block;vertical-align:top;margin:0 10px 8px 0;max-width:100%}.gh{font-size:12px;color:#4a5566}
.map{display:flex;flex-wrap:wrap;gap:1px;max-width:1200px}.map a,.map i,.legend i{display:inline-block;width:9px;height:9px}
.u{background:#dfe3ea}.u0{background:#c6dbef}.u1{background:#9ecae1}.u2{background:#6baed6}.u3{background:#3182bd}
.u4{background:#08519c}.w{background:#f0a202}.c{background:#c62828}.s{background:#8a93a3}
.p{background:#fff;outline:1px solid #b0bec5;outline-offset:-1px}.x{background:repeating-linear-gradient(45deg,#fff 0 2px,#b0bec5 2px 3px)}
form#filter{margin:6px 0}form#filter input,form#filter select{font:inherit;font-size:13px}.pager{margin:6px 0}
.over{color:#b26a00;font-weight:600}.hist{margin:4px 0}
"""


def _gauge(ratio: Optional[float]) -> str:
    pct = 0.0 if ratio is None else max(0.0, min(100.0, ratio * 100))
    bar = f'<span class="gauge"><span style="width:{pct:.1f}%"></span></span> '
    if ratio is not None and ratio > UTIL_SUSPECT:
        # More than the link carries is a wrong link rate or a counter glitch: questioned.
        return bar + (f'<span class="over" title="above the link rate: the link rate or a counter '
                      f'is wrong">{esc(fmt_pct(ratio))}?</span>')
    return bar + esc(fmt_pct(ratio))


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


def _device_bars(devs: Sequence[DeviceView], detail: bool = True) -> str:
    """One bar per device: its busier direction over its link rate. An idle device among busy
    siblings, or a device whose error counters rose or whose counters are unreadable (red),
    stands out at a glance. (Not the port state: the EFA driver always reports ACTIVE.)
    The bars are three paths (healthy, sick, sick backgrounds), not two rects a device, and
    `detail` adds a tooltip per device (the node page): a 100-row table of 32-device nodes was
    450 kB of rects and tooltips."""
    if not devs:
        return '<span class="muted">none</span>'
    w, h = 5, 18
    paths = {"well": [], "sick": [], "back": []}  # type: dict
    tips = []
    for i, d in enumerate(devs):
        busier = max([v for v in (d.tx_gbps, d.rx_gbps) if v is not None], default=None)
        r = max(0.0, min(1.0, ratio(busier, d.link_gbps) or 0.0))
        bh = max(1.0, r * h) if busier is not None else 0.0
        x = i * (w + 1)
        if d.sick:
            paths["back"].append(f"M{x} 0h{w}v{h}h-{w}z")
        if bh:
            paths["sick" if d.sick else "well"].append(f"M{x} {h}v-{bh:.1f}h{w}v{bh:.1f}z")
        if detail:
            what = ("port counters unreadable" if d.port_counters == 0 else
                    "errors " + ", ".join(f"{k} {v:.2g}/s" for k, v in d.errors.items()) if d.errors
                    else "no errors")
            tip = (f"{d.name} ({what}): sent {fmt_gbps(d.tx_gbps)}, received "
                   f"{fmt_gbps(d.rx_gbps)} of {fmt_gbps(d.link_gbps)} Gbps")
            tips.append(f'<rect x="{x}" y="0" width="{w}" height="{h}" fill-opacity="0">'
                        f"<title>{esc(tip)}</title></rect>")
    width = len(devs) * (w + 1)
    well = sum(1 for d in devs if not d.sick)
    label = f"{well} of {len(devs)} devices without errors"
    sick = [d.name for d in devs if d.sick]
    title = label + (": " + ", ".join(sick[:8]) + " erring" if sick else "")
    drawn = "".join(f'<path fill="{color}" d="{"".join(paths[k])}"/>'
                    for k, color in (("back", "#f4c7c3"), ("well", "#1565c0"), ("sick", "#c62828"))
                    if paths[k])
    return (f'<svg class="devs" xmlns="http://www.w3.org/2000/svg" width="{width}" '
            f'height="{h}" role="img" aria-label="{esc(label)}"><title>{esc(title)}</title>'
            f'<rect width="{width}" height="{h}" fill="#e8ebf0"/>{drawn}{"".join(tips)}'
            f"</svg> {well}/{len(devs)}")


def _cards(d: Dashboard) -> str:
    t = d.totals
    link = f" of {fmt_bandwidth(t.link_gbps)}" if t.link_gbps else ""
    cards = [
        (f"{t.fresh:,}/{t.nodes:,}", f"nodes reporting ({t.stale:,} stale, {t.warn:,} with problems)"),
        (f"{fmt_bandwidth(t.tx_gbps)} / {fmt_bandwidth(t.rx_gbps)}", "EFA now, sent / received" + link),
        (f'<span class="big">{_gauge(t.util)}</span>', "utilisation (busier direction)"),
        (f"{t.running_jobs:,}", f"running jobs, {t.users:,} user(s)"),
        (f"{_rate(t.rates.get('rx_drops'))} / {_rate(t.rates.get('retrans_pkts'))}",
         "rx drops / SRD retransmits"),
    ]
    return '<div class="cards">' + "".join(
        f'<div class="card" id="card{i}"><b>{v if i == 2 else esc(v)}</b><span>{esc(s)}</span></div>'
        for i, (v, s) in enumerate(cards)) + "</div>"


MAX_GROUPS = 12  # problem kinds listed; the rest are counted
MAX_HOSTLIST = 160  # characters of a group's folded hostlist shown


def _short_hostlist(hosts: Sequence[str]) -> str:
    text = _fold(hosts)
    return text if len(text) <= MAX_HOSTLIST else text[:MAX_HOSTLIST].rsplit(",", 1)[0] + ",…"


def _alerts(d: Dashboard, links: "Links") -> str:
    """Problems first, grouped by kind, worst first: "31 nodes: rx drops" with their hostlist,
    one line however many nodes share a fault."""
    lines = []
    for g in d.problems[:MAX_GROUPS]:
        hosts = [h for _, h in g.hosts]
        count = f"{len(hosts):,} node{'s' if len(hosts) != 1 else ''}: {g.label}"
        where = _short_hostlist(hosts)
        href = ("/" + to_query(DEFAULT, problem=g.kind)) if links.table else None
        lines.append(f'<p class="{esc(g.severity)}" data-kind="{esc(g.kind)}"><b>{esc(count)}</b> '
                     f'{_link(where, href)} <span class="muted">e.g. {esc(g.example)}</span></p>')
    if len(d.problems) > MAX_GROUPS:
        rest = d.problems[MAX_GROUPS:]
        lines.append(f"<p>{len(rest)} more kind(s) of problem on "
                     f"{len({h for g in rest for h in g.hosts}):,} node(s)</p>")
    lines += [f"<p>{esc(x)}</p>" for x in d.notes[:20]]
    if len(d.notes) > 20:
        lines.append(f"<p>{len(d.notes) - 20} more note(s)</p>")
    return f'<div class="alerts" id="alerts">{"".join(lines)}</div>' if lines else ""


def _job_refs(jobs: Sequence[NodeJob], cluster: str, links: "Links", stale: bool) -> str:
    if not jobs:
        return '<span class="muted">idle</span>'
    # A stale node's jobs may be long gone: shown, not linked (the report would not find them).
    return ", ".join((f'<span class="muted">{esc(j.key)}</span>' if stale else
                      _link(j.key, links.job(cluster, j.key)) if links.job else
                      _job_link(j.key, links.report, cluster, j.job_id, j.restart))
                     + (f" ({esc(j.user)})" if j.user else "") for j in jobs)


@dataclass(frozen=True)
class Links:
    """Where the page may link: each None on a static file (`dashboard build`: no server)."""
    report: Optional[JobHref] = None  # a job's HTML report
    node: Optional[Callable[[str, str], str]] = None  # (cluster, host) -> node page
    job: Optional[Callable[[str, str], str]] = None  # (cluster, job key) -> job page
    table: bool = False  # sort, filter and page links to "/?..."


def _cell_class(n: NodeView) -> str:
    """A node map cell's colour: health first (it is what needs eyes), then utilisation."""
    if n.state in ("no-efajob", "powered-down", "stale"):
        return {"no-efajob": "x", "powered-down": "p", "stale": "s"}[n.state]
    if n.problems:
        return "c" if any(sev == "critical" for _, sev in n.kinds) else "w"
    if n.util is None:
        return "u"
    return f"u{min(4, int(n.util * 5))}"


def _map_group(n: NodeView) -> str:
    if n.state in ("no-efajob", "powered-down"):
        return n.state
    return n.jobs[0].key if n.jobs and not n.stale else ""


def node_map(d: Dashboard, links: Links) -> str:
    """One small cell per node, grouped by the job it runs (job boundaries are group borders),
    coloured by health then utilisation, each a link to its node. Built once per snapshot."""
    slot = f"map:{links.node is not None}:{links.job is not None}"  # a static page links nothing
    cached = d.cache.get(slot)
    if cached is not None:
        return cached
    groups: dict = {}
    for n in d.nodes:
        groups.setdefault((n.cluster, _map_group(n)), []).append(n)

    def order(item) -> tuple:
        (cluster, key), _ = item
        return (cluster, key in ("", "no-efajob", "powered-down"), key)

    out = []
    for (cluster, key), members in sorted(groups.items(), key=order):
        r = d.by_job.get((cluster, key))
        if r is not None:
            who = ", ".join(r.users)
            title = f"job {key}" + (f" ({who})" if who else "") + f", {len(members):,} node(s)"
            head = _link(title, links.job(cluster, key) if links.job else None)
        else:
            head = esc({"": "idle or stale", "no-efajob": "in Slurm, no efajob",
                        "powered-down": "powered down (cloud)"}.get(key, f"job {key}")
                       + f", {len(members):,} node(s)")
        if len(d.clusters) > 1:
            head = esc(cluster + ": ") + head
        cells = []
        for n in members:
            tip = esc(f"{n.host}: {n.state}, {fmt_pct(n.util)}")
            cls = _cell_class(n)
            if links.node:
                cells.append(f'<a class="{cls}" href="{esc(links.node(n.cluster, n.host))}" title="{tip}"></a>')
            else:
                cells.append(f'<i class="{cls}" title="{tip}"></i>')
        out.append(f'<div class="grp"><div class="gh">{head}</div><div class="map">{"".join(cells)}</div></div>')
    legend = ('<p class="legend muted"><i class="u0"></i><i class="u2"></i><i class="u4"></i> '
              'utilisation 0-100% &nbsp;<i class="w"></i> warning <i class="c"></i> critical '
              '<i class="s"></i> stale <i class="p"></i> powered down <i class="x"></i> no efajob</p>')
    html = f'<div id="nodemap">{"".join(out)}</div>{legend}' if out else ""
    d.cache[slot] = html
    return html


_HEADS = (("node", "Node", ""), ("state", "State", ""), ("type", "Type", ""), ("tx", "Sent", "n"),
          ("rx", "Recv", "n"), ("util", "Utilisation", ""), ("", "Devices", ""),
          ("drops", "rx drops", "n"), ("retrans", "Retransmits", "n"), ("jobs", "Jobs (user)", ""),
          ("updated", "Updated", ""))


def _head(view: View, links: Links, multi: bool) -> str:
    cells = ["<th>Cluster</th>"] if multi else []
    for key, text, cls in _HEADS:
        c = f" class={cls}" if cls else ""
        if key and links.table:
            desc = not view.desc if view.sort == key else key not in ("node", "type", "state")
            mark = (" ▼" if view.desc else " ▲") if view.sort == key else ""
            cells.append(f'<th{c}><a href="/{esc(to_query(view, sort=key, desc=desc))}">'
                         f"{esc(text)}</a>{mark}</th>")
        else:
            cells.append(f"<th{c}>{esc(text)}</th>")
    return "<tr>" + "".join(cells) + "</tr>"


def _state_text(n: NodeView) -> str:
    text = {"ok": "ok", "warn": "problem", "stale": "STALE", "no-efajob": "no efajob",
            "powered-down": "powered down"}[n.state]
    return f'<span class="badge {n.state}">{esc(text)}</span>' + (
        f' <span class="muted">{esc(n.slurm_state)}</span>' if n.slurm_state else "")


def _filter_form(view: View) -> str:
    def box(name: str, label: str, size: int = 12) -> str:
        return (f'<label>{esc(label)} <input name="{name}" size="{size}" '
                f'value="{esc(getattr(view, name))}"></label> ')
    opts = "".join(f'<option value="{s}"{" selected" if view.state == s else ""}>{s or "any"}</option>'
                   for s in ("",) + STATES)
    keep = "".join(f'<input type="hidden" name="{k}" value="{esc(str(getattr(view, k)))}">'
                   for k in ("sort", "problem") if getattr(view, k) != getattr(DEFAULT, k))
    if view.desc:
        keep += '<input type="hidden" name="desc" value="1">'
    return ('<form method="get" action="/" id="filter">' + box("q", "Nodes (hostlist)", 22)
            + box("job", "Job", 8) + box("user", "User", 10) + box("partition", "Partition", 10)
            + f'<label>State <select name="state">{opts}</select></label> {keep}'
            '<button type="submit">Filter</button> <a href="/">clear</a></form>')


def _pager(view: View, total: int) -> str:
    last = pages(total, view)
    if last == 1:
        return ""
    parts = []
    if view.page > 1:
        parts.append(f'<a href="/{esc(to_query(view, page=view.page - 1))}" rel="prev">previous</a>')
    parts.append(f"page {min(view.page, last)} of {last}")
    if view.page < last:
        parts.append(f'<a href="/{esc(to_query(view, page=view.page + 1))}" rel="next">next</a>')
    return '<p class="pager">' + " · ".join(parts) + "</p>"


def _nodes_table(d: Dashboard, links: Links, tz, view: View) -> str:
    if not d.nodes:
        return "<p>No node status files yet: are the node daemons running, and do they see this store?</p>"
    total, rows_of = select(d.nodes, view)
    multi = len(d.clusters) > 1
    rows = []
    for n in rows_of:
        host = _link(n.host, links.node(n.cluster, n.host) if links.node else None)
        cells = ([esc(n.cluster)] if multi else []) + [
            f"<b>{host}</b>", _state_text(n),
            esc(n.instance_type or NA), esc(fmt_bandwidth(n.tx_gbps)), esc(fmt_bandwidth(n.rx_gbps)),
            _gauge(n.util), _device_bars(n.devices, detail=False), esc(_rate(n.rates.get("rx_drops"))),
            esc(_rate(n.rates.get("retrans_pkts"))), _job_refs(n.jobs, n.cluster, links, n.stale),
            f'<span title="{esc(fmt_time(n.time, tz))}">{esc(_ago(n.age_at(d.generated)))}</span>']
        off = 1 if multi else 0
        num = {3 + off, 4 + off, 7 + off, 8 + off}
        # Drops and retransmits are rare on a healthy fabric: any, now, is shown in red.
        hot = {i + off for i, k in ((7, "rx_drops"), (8, "retrans_pkts")) if n.rates.get(k)}
        cls = {i: ' class="n hot"' if i in hot else " class=n" for i in num}
        tds = "".join(f"<td{cls.get(i, '')}>{c}</td>" for i, c in enumerate(cells))
        rows.append(f'<tr class="{n.state}" data-host="{esc(n.host)}">{tds}</tr>')
    shown = (f"{total:,} of {len(d.nodes):,} nodes match" if total != len(d.nodes)
             else f"{total:,} nodes")
    form = _filter_form(view) if links.table else ""
    body = (f'<table id="nodes"><thead>{_head(view, links, multi)}</thead><tbody>{"".join(rows)}'
            "</tbody></table>") if rows else "<p>No node matches.</p>"
    return f'{form}<p class="muted" id="matched">{esc(shown)}</p>{body}{_pager(view, total) if links.table else ""}'


MAX_RUNNING = 50  # running jobs listed on the main page (the JSON API has all)


def _running_table(d: Dashboard, links: Links, tz) -> str:
    if not d.running:
        return "<p>None: no fresh node status lists a job.</p>"
    head = ("<tr><th>Job</th><th>Cluster</th><th>User</th><th>Partition</th><th class=n>Nodes</th>"
            "<th>Hosts</th><th>Running for</th><th class=n>Sent</th><th class=n>Recv</th>"
            "<th>Shared with other jobs</th><th>Report</th></tr>")
    rows = []
    for r in d.running[:MAX_RUNNING]:
        since = None if r.start is None else max(0.0, d.generated - r.start)
        page = links.job(r.cluster, r.key) if links.job else None
        cells = [_link(r.key, page), esc(r.cluster),
                 esc(", ".join(r.users) or NA), esc(", ".join(r.partitions) or NA), f"{len(r.hosts):,}",
                 esc(_short_hostlist(r.hosts)), f'<span title="{esc(fmt_time(r.start, tz))}">{esc(fmt_duration(since))}</span>',
                 esc(fmt_bandwidth(r.tx_gbps)), esc(fmt_bandwidth(r.rx_gbps)),
                 esc(_short_hostlist(r.shared_hosts) or "-"),
                 _job_link("report", links.report, r.cluster, r.job_id, r.restart)]
        tds = "".join(f"<td{' class=n' if i in (4, 7, 8) else ''}>{c}</td>" for i, c in enumerate(cells))
        rows.append(f"<tr>{tds}</tr>")
    more = (f'<p class="muted">and {len(d.running) - MAX_RUNNING:,} more (all in /api/jobs)</p>'
            if len(d.running) > MAX_RUNNING else "")
    return f'<table id="running"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>{more}'


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
                     tz=None, store: Optional[str] = None, view: View = DEFAULT,
                     links: Optional[Links] = None, history: str = "") -> str:
    """The page: problems first, the node map, one page of the node table (`view`: the query
    string's filter, sort and page), running and recent jobs. `refresh` > 0 reloads it every
    that many seconds (meta refresh: no script); `links` says what may be linked (the server's
    routes; `job_href` alone: job reports only; neither in a static file, whose table then
    holds every node). `history`: the server's chart of the last hours (dashboard/history.py)."""
    links = links or Links(report=job_href)
    if not links.table:
        view = replace(view, page=1, per=max(1, len(d.nodes)))
    where = ", ".join(d.clusters) or "no cluster yet"
    title = f"EFA dashboard: {where}"
    meta = f'<meta http-equiv="refresh" content="{int(refresh)}">' if refresh > 0 else ""
    sub = (f"Generated {fmt_time(d.generated, tz)}"
           + (f", refreshed every {int(refresh)} s" if refresh > 0 else " (static: does not refresh)")
           + f". Nodes silent for more than {fmt_duration(d.max_status_age)} are stale and left out of the totals."
           + (f" Store {store}." if store else ""))
    hint = "" if links.report else ('<p class="muted">Job reports: <code>efajob report JOBID --format html '
                                    "-o FILE</code> (or open this page through <code>efajob dashboard serve</code>).</p>")
    return (
        head_html(title, refresh=meta)
        + f"<h1>{esc(title)}</h1>\n<p class=\"sub\">{esc(sub)}</p>\n{_cards(d)}\n{_alerts(d, links)}\n"
        + (f"<h2>Cluster, last hours</h2>\n{history}\n" if history else "")
        + f"<h2>Node map ({len(d.nodes):,})</h2>\n{node_map(d, links)}\n"
        f"<h2>Nodes</h2>\n{_nodes_table(d, links, tz, view)}\n"
        f"<h2>Running jobs ({len(d.running):,})</h2>\n{_running_table(d, links, tz)}\n"
        f"<h2>Recent jobs</h2>\n{_recent_table(d, links.report, tz)}\n{hint}"
        "</body></html>\n")


def head_html(title: str, refresh: str = "") -> str:
    """The document head every dashboard page shares (CSP, CSS), then `<body>`."""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">{refresh}'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>\n")
