"""The text report (the default of `efajob report`). Pure: JobReport in, str out; golden-tested
byte for byte.

Sections, as Princeton's jobstats lays them out: header, overall (with bar gauges), per node
(ranked, outliers marked), health, findings with advice, verdict. Units are decimal (GB = 1e9
bytes, Gbps = 1e9 bit/s), as link rates are quoted. Absent values print "n/a", never 0.
"""
from __future__ import annotations

import textwrap
from datetime import tzinfo
from typing import TYPE_CHECKING, Dict, List, Mapping, Optional, Sequence

from efajob.fmt import (NA, Column, fit_table, fmt_bytes, fmt_count, fmt_duration, fmt_gbps,
                        fmt_pct, fmt_time)
from efajob.node.readings import natural_key as natural_key  # re-exported: the renderers import it from here
from efajob.report.findings import short_verdict, verdict_tone
from efajob.report.maths import max2, ratio

if TYPE_CHECKING:  # pragma: no cover
    from efajob.report.model import JobReport, NodeReport

WIDTH = 80  # the default: a report must read in an 80x24 terminal (and in an e-mail)
MAX_PROSE = 100  # wider terminals widen the tables, not the sentences (long lines read badly)
GROUP_LIMIT = 6  # findings of one code shown before "... and N more"


def gauge(ratio: Optional[float], width: int = 40) -> str:
    """`[#########...............]`; over 100% (bursts above the quoted rate) fills the bar."""
    if ratio is None:
        return "[" + " " * width + "]"
    filled = max(0, min(width, int(round(ratio * width))))
    return "[" + "#" * filled + "." * (width - filled) + "]"


# -- colour ----------------------------------------------------------------------------------------
_COLORS = {"critical": "31;1", "Failure": "31;1", "warning": "33;1", "Warning": "33;1",
           "Healthy": "32;1", "info": "36", "bold": "1", "dim": "2"}


class _Paint:
    def __init__(self, on: bool):
        self.on = on

    def __call__(self, text: str, what: str) -> str:
        code = _COLORS.get(what)
        return f"\x1b[{code}m{text}\x1b[0m" if self.on and code else text


# -- tables --------------------------------------------------------------------------------------
def _wrap(text: str, indent: str, width: int, first: Optional[str] = None) -> List[str]:
    """`text` wrapped to `width`; the first line starts with `first` (default: `indent`)."""
    return textwrap.wrap(text, width, initial_indent=indent if first is None else first,
                         subsequent_indent=indent, break_on_hyphens=False,
                         break_long_words=False) or [(first or indent).rstrip()]


def _field(label: str, text: str, width: int, label_width: int = 14) -> List[str]:
    """`  Label         value`, the value wrapped under itself."""
    return _wrap(text, " " * (2 + label_width), width, first=f"  {label:<{label_width}}")


# -- sections ------------------------------------------------------------------------------------
def _header(r: "JobReport", tz: Optional[tzinfo], paint: _Paint, pw: int, rw: int) -> List[str]:
    m = r.meta
    title = f"EFA job report: job {m.job_id}, cluster {m.cluster}"
    verdict = f"Verdict: {r.verdict}"
    pad = rw - len(title) - len(verdict)
    tone = verdict_tone(r.verdict)
    if pad >= 1:
        out = [paint(title, "bold") + " " * pad + paint(verdict, tone), "=" * rw]
    else:  # a running job's longer verdict: on a line of its own, right-aligned
        out = [paint(title, "bold"), " " * max(0, rw - len(verdict)) + paint(verdict, tone),
               "=" * rw]
    job = m.job_id + (f" ({'array task' if '_' in m.alias else 'het component'} {m.alias})"
                      if m.alias else "")
    job += f" (restart {m.restart})" if m.restart or len(r.restarts) > 1 else ""
    who = m.user or NA
    if m.account:
        who += f"  (account {m.account})"
    rows = [("Job", job), ("Name", m.name or NA), ("User", who), ("Partition", m.partition or NA)]
    nodes = f"{m.num_nodes if m.num_nodes is not None else NA}"
    if m.nodelist:
        nodes += f"  {m.nodelist}"
    rows.append(("Nodes", nodes))
    rows.append(("Instance", _instance_line(r)))
    state = m.state or NA
    if m.exit_code:
        state += f", exit code {m.exit_code}"
    rows.append(("State", state))
    rows.append(("Start", fmt_time(m.start, tz)))
    rows.append(("End", "(running)" if r.running and m.end is None else fmt_time(m.end, tz)))
    run = fmt_duration(m.elapsed_s) + (" so far" if r.running else "")
    if m.time_limit:
        run += f"  (limit {fmt_duration(m.time_limit * 60)})"
    rows.append(("Run time", run))
    rows.append(("Metadata", "Slurm" if m.source == "slurm" else "job records (no Slurm metadata)"))
    for k, v in rows:
        out += _wrap(v, " " * 14, pw, first=f"  {k:<10}: ")
    for note in r.notes:
        out += _wrap("note: " + note, "        ", pw, first="  ")
    return out


def _instance_line(r: "JobReport") -> str:
    from efajob.node.instances import lookup

    m, o = r.meta, r.overall
    it = lookup(m.instance_type)
    if it is not None:
        return (f"{it.name}, {it.devices} EFA devices x {it.gbps_per_device:g} Gbps "
                f"= {it.total_gbps:,.0f} Gbps per node")
    if o.link_gbps:
        return f"{m.instance_type or 'unknown type'}, {o.link_gbps:,.0f} Gbps EFA per node"
    return m.instance_type or NA


def _overall(r: "JobReport", pw: int) -> List[str]:
    o, t = r.overall, r.overall.totals
    n = o.nodes_with_data
    out = [f"Overall EFA traffic (sum over {n} node{'s' if n != 1 else ''} with records)"]
    live = [x for x in r.nodes if x.status == "running" and x.live_age_s is not None]
    if live:
        tx = sum(x.live_tx_gbps or 0 for x in live)
        rx = sum(x.live_rx_gbps or 0 for x in live)
        out += _field("Live now", f"{fmt_gbps(tx)} Gbps out / {fmt_gbps(rx)} Gbps in, summed over "
                      f"{len(live)} running node{'s' if len(live) != 1 else ''} (node status files)", pw)
    if n == 0:
        return out + _wrap("no node record yet (records arrive when each node's part of the job "
                           "ends)", "  ", pw)
    out += _field("Sent", f"{fmt_bytes(t.get('tx_bytes'))} in {fmt_count(t.get('tx_pkts'))} packets", pw)
    out += _field("Received", f"{fmt_bytes(t.get('rx_bytes'))} in {fmt_count(t.get('rx_pkts'))} packets", pw)
    q = QUESTIONED if any(x.peak_above_link for x in r.data_nodes) else ""
    out += _field("Per node", f"avg {fmt_gbps(o.avg_tx_gbps)} Gbps out / {fmt_gbps(o.avg_rx_gbps)} "
                  f"in;  peak {fmt_gbps(o.peak_tx_gbps)}{q} out / {fmt_gbps(o.peak_rx_gbps)}{q} in", pw)
    link = f" of {o.link_gbps:,.0f} Gbps per node" if o.link_gbps else " (link rate unknown)"
    # The bar takes what the line leaves: 21 columns of label, 7 of percentage, the link text.
    bar = max(10, min(40, pw - 21 - 2 - 7 - len(link)))
    out.append(f"  Utilisation   avg  {gauge(o.util_avg, bar)} {fmt_pct(o.util_avg):>6}{link}")
    out.append(f"                peak {gauge(o.util_peak, bar)} {fmt_pct(o.util_peak) + q:>6}"
               + ("  (? above the link: see rate_above_link)" if q else ""))
    if o.link_source:
        out += _field("Link rate", link_source_text(r), pw)
    if o.rdma_read_share is not None or o.rdma_write_share is not None or o.send_share is not None:
        write = ("not supported" if "rdma_write_bytes" in o.unsupported
                 else fmt_pct(o.rdma_write_share))
        out += _field("Bytes by op", f"RDMA read {fmt_pct(o.rdma_read_share)}, RDMA write "
                      f"{write}, send/recv {fmt_pct(o.send_share)}", pw)
    if o.ena:
        out += _field("ENA (TCP/IP)", f"sent {fmt_bytes(o.ena.get('tx_bytes'))}, received "
                      f"{fmt_bytes(o.ena.get('rx_bytes'))}  (not EFA: sockets, storage, control)", pw)
    return out


def link_source_text(r: "JobReport") -> str:
    """Which link capacity utilisation used, in words (text and HTML)."""
    from efajob.report.model import LINK_SOURCES

    o = r.overall
    where = LINK_SOURCES.get(o.link_source or "", "unknown")
    if o.link_source == "instance_table":
        return f"from the {where} ({r.meta.instance_type or 'instance type'})"
    return f"from the devices' {where} (instance type unknown)"


# A peak or utilisation built on samples faster than the link (finding rate_above_link).
QUESTIONED = "?"

_MARKS = {"straggler_node": "straggler", "device_idle": "idle device", "rx_drops": "drops",
          "device_missing": "missing device", "wr_errors": "WR errors",
          "device_errors": "device errors", "rate_above_link": "rate above link",
          "retransmits": "retransmits", "impaired_connections": "impaired",
          "unresponsive_remote": "unresponsive", "ena_allowance_exceeded": "ENA allowance",
          "counter_reset": "reset", "incomplete": "incomplete"}


def _node_row(n: "NodeReport") -> List[str]:
    if n.status == "running":
        if n.live_age_s is None and n.live_tx_gbps is None and n.live_rx_gbps is None:
            live = "no node status"
        else:
            live = (f"live {fmt_gbps(n.live_tx_gbps)} out / {fmt_gbps(n.live_rx_gbps)} in Gbps"
                    + (f", {fmt_duration(n.live_age_s)} ago" if n.live_age_s is not None else ""))
        return [str(n.rank), n.host, " ", f"running: {live}"]
    if n.status == "missing":
        return [str(n.rank), n.host, "!", "no record"]
    notes = [_MARKS.get(c, c) for c in n.marks]
    if n.shared:
        notes.append("shared")
    return [str(n.rank), n.host, "!" if n.marks else " ", fmt_bytes(n.tx_bytes), fmt_bytes(n.rx_bytes),
            fmt_gbps(n.avg_tx_gbps), fmt_gbps(n.avg_rx_gbps),
            fmt_gbps(max2(n.peak_tx_gbps, n.peak_rx_gbps)) + (QUESTIONED if n.peak_above_link else ""),
            fmt_pct(n.util_avg), fmt_count(n.rx_drops), fmt_count(n.retrans_pkts)] + [", ".join(notes)]


def device_avg(nbytes: Optional[int], seconds: Optional[float]) -> Optional[float]:
    """A device's average Gbps over the node's job window."""
    if nbytes is None or not seconds:
        return None
    return nbytes * 8 / seconds / 1e9


# What a narrow table gives up first: the averages (the overall section has the per-node
# mean), then the peak, then retransmits and drops (NOTES and the findings name the nodes
# that have them), then utilisation. Rank, host, bytes and notes always stay.
NODE_COLUMNS = (Column("#", True), Column("HOST"), Column(""), Column("SENT", True),
                Column("RECEIVED", True), Column("AVG OUT", True, drop=5),
                Column("AVG IN", True, drop=5), Column("PEAK", True, drop=4),
                Column("UTIL", True, drop=1), Column("DROPS", True, drop=2),
                Column("RETRANS", True, drop=3), Column("NOTES", flex=True))


def _nodes(r: "JobReport", verbose: bool, width: Optional[int], pw: int) -> List[str]:
    rows: List[List[str]] = []
    for n in r.nodes:
        rows.append(_node_row(n))
        if verbose:
            for d in sorted(n.devices, key=lambda d: natural_key(d.name)):
                atx, arx = device_avg(d.tx_bytes, n.elapsed_s), device_avg(d.rx_bytes, n.elapsed_s)
                util = ratio(max2(atx, arx), d.link_gbps)
                rows.append(["", "  " + d.name, "", fmt_bytes(d.tx_bytes), fmt_bytes(d.rx_bytes),
                             fmt_gbps(atx), fmt_gbps(arx),
                             fmt_gbps(max2(d.peak_tx_gbps, d.peak_rx_gbps))
                             + (QUESTIONED if d.peak_above_link else ""), fmt_pct(util),
                             fmt_count(d.counters.get("rx_drops")),
                             fmt_count(d.counters.get("retrans_pkts")),
                             "reset" if d.resets else ""])
    lines, dropped = fit_table(NODE_COLUMNS, rows, width)
    head = ("Per node, by traffic (Gbps; ! see findings" + ("" if verbose else "; -v per device")
            + ("; --wide all columns" if dropped else "") + ")")
    return _wrap(head, "  ", pw, first="") + lines


_SRD_NA = "n/a (no SRD counters: they need Nitro v4+ and kernel 6.17+)"


def not_here(r: "JobReport", counter: str) -> str:
    """How an absent counter reads: "not supported here" with why, or n/a."""
    why = r.overall.unsupported.get(counter)
    return f"not supported here ({why})" if why else _SRD_NA


def error_totals(r: "JobReport") -> Dict[str, Optional[int]]:
    """Work-request errors (`*_wr_err` port counters) and driver errors (device_errors'
    counters) summed over the job's devices; None when no device had such a counter."""
    from efajob.node.counters import is_device_error, is_wr_error
    from efajob.report.compact import sum_over

    wr: Optional[int] = None
    dev: Optional[int] = None
    for n in r.data_nodes:
        t = sum_over([d.counters for d in n.devices], is_wr_error)
        if t is not None:
            wr = (wr or 0) + t
        t = sum_over([d.device_counters for d in n.devices], is_device_error)
        if t is not None:
            dev = (dev or 0) + t
    return {"wr_errors": wr, "device_errors": dev}


def _health(r: "JobReport", pw: int) -> List[str]:
    t, o = r.overall.totals, r.overall
    out = ["Health (sum over nodes)"]
    if not r.data_nodes:
        return out + ["  no node record yet"]

    def line(label: str, value: str) -> None:
        out.extend(_field(label, value, pw, label_width=30))

    line("rx drops", fmt_count(t.get("rx_drops")))
    if "retrans_pkts" in t:
        line("SRD retransmitted packets", f"{fmt_count(t.get('retrans_pkts'))}  ({fmt_bytes(t.get('retrans_bytes'))}; "
             f"{fmt_count(t.get('retrans_timeout_events'))} timeouts)")
    else:
        line("SRD retransmitted packets", not_here(r, "retrans_pkts"))
    line("impaired remote connections", fmt_count(t.get("impaired_remote_conn_events"))
         if "impaired_remote_conn_events" in t else not_here(r, "impaired_remote_conn_events"))
    line("unresponsive remote events", fmt_count(t.get("unresponsive_remote_events"))
         if "unresponsive_remote_events" in t else not_here(r, "unresponsive_remote_events"))
    errs = error_totals(r)
    line("RDMA work-request errors", fmt_count(errs["wr_errors"]))
    line("device (admin, verbs) errors", fmt_count(errs["device_errors"]))
    if "rdma_write_wr_err" in r.overall.unsupported:
        line("RDMA write counters", not_here(r, "rdma_write_wr_err"))
    line("ENA allowance exceeded", fmt_allowance(o.ena))
    line("counter resets", ", ".join(o.resets[:6]) + (f" (+{len(o.resets) - 6})" if len(o.resets) > 6 else "")
         if o.resets else "none")
    return out


def _findings(r: "JobReport", paint: _Paint, pw: int) -> List[str]:
    out = ["Findings"]
    if not r.findings:
        return out + ["  none: nothing unusual in the counters"]
    seen: Dict[str, int] = {}
    for f in r.findings:
        key = f"{f.severity}:{f.code}"
        seen[key] = seen.get(key, 0) + 1
        if seen[key] == GROUP_LIMIT:
            total = sum(1 for g in r.findings if g.code == f.code and g.severity == f.severity)
            out += _wrap(f"... and {total - GROUP_LIMIT + 1} more {f.severity} {f.code} findings "
                         "(--format json lists them all)", "      ", pw, first="  ")
        if seen[key] >= GROUP_LIMIT:
            continue
        where = " ".join(x for x in (f.host, f.device) if x)
        out.append("  " + paint(f"[{f.severity}]", f.severity) + f" {f.code}" + (f"  {where}" if where else ""))
        out += _wrap(f.message, "      ", pw)
        if f.advice:
            out += _wrap("-> " + f.advice, "      ", pw)
    return out


def render_text(r: "JobReport", *, verbose: bool = False, color: bool = False,
                tz: Optional[tzinfo] = None, width: Optional[int] = WIDTH) -> str:
    """The full text report. `tz` None: the machine's local zone. `width`: the terminal's
    columns (None: `--wide`, every column of the per-node table whatever its width); prose
    wraps at MAX_PROSE at most, rules span the wider of prose and table."""
    paint = _Paint(color)
    pw = min(width or MAX_PROSE, MAX_PROSE)
    nodes = _nodes(r, verbose, width, pw)
    rw = max([pw] + [len(ln) for ln in nodes])
    rw = min(rw, width) if width else rw
    rule = "-" * rw
    counts = {s: sum(1 for f in r.findings if f.severity == s) for s in ("critical", "warning", "info")}
    summary = ", ".join(f"{v} {k}{'s' if k == 'warning' and v > 1 else ''}"
                        for k, v in counts.items() if v) or "no findings"
    parts = [_header(r, tz, paint, pw, rw), [rule], _overall(r, pw), [rule], nodes, [rule],
             _health(r, pw), [rule], _findings(r, paint, pw), ["=" * rw],
             [paint(f"Verdict: {r.verdict}", verdict_tone(r.verdict)) + f"  ({summary})"]]
    return "\n".join(line for part in parts for line in part) + "\n"


# -- `efajob jobs` ---------------------------------------------------------------------------------
def fmt_allowance(ena: Mapping[str, int]) -> str:
    """The ENA allowance counters of a report line: the ones that moved, "none" when every one
    that was read stayed at 0, "n/a" when none was read (absent is not zero)."""
    from efajob.report.model import ENA_ALLOWANCE

    read = [k for k in ENA_ALLOWANCE if k in ena]
    if not read:
        return "n/a (not recorded)"
    moved = [f"{k} {fmt_count(ena[k])}" for k in read if ena[k]]
    return ", ".join(moved) if moved else f"none ({len(read)} counters read)"


# The job list at 80 columns gives up the cluster name first (most stores hold one), then
# the start time, the per-node average, the node count and the user; job, state, run time,
# traffic and verdict stay.
JOB_COLUMNS = (Column("CLUSTER", drop=5), Column("JOB"), Column("USER", drop=1), Column("STATE"),
               Column("NODES", True, drop=2), Column("START", drop=4), Column("ELAPSED", True),
               Column("SENT", True), Column("RECEIVED", True), Column("AVG/NODE", True, drop=3),
               Column("VERDICT"))


def render_jobs(rows: Sequence[dict], *, tz: Optional[tzinfo] = None, color: bool = False,
                width: Optional[int] = WIDTH) -> str:
    """One line per job: rows are `jobreports.job_summary` dicts. `width` as render_text's."""
    paint = _Paint(color)
    if not rows:
        return "No jobs in the store match.\n"
    body = []
    for j in rows:
        body.append([j["cluster"], j["job_id"] + (f".{j['restart']}" if j.get("restart") else ""),
                     j.get("user") or NA, j.get("state") or NA, str(j.get("num_nodes") or NA),
                     fmt_time(j.get("start"), tz)[:16] if j.get("start") else NA,
                     fmt_duration(j.get("elapsed_s")), fmt_bytes(j.get("tx_bytes")),
                     fmt_bytes(j.get("rx_bytes")),
                     (fmt_gbps(j.get("avg_gbps_per_node")) + " Gbps") if j.get("avg_gbps_per_node") is not None else NA,
                     short_verdict(j["verdict"])])
    lines, _ = fit_table(JOB_COLUMNS, body, width, indent="")
    if color:  # colour after alignment: escape codes have no width
        lines = [lines[0]] + [ln[: len(ln) - len(row[-1])] + paint(row[-1], verdict_tone(j["verdict"]))
                              for ln, row, j in zip(lines[1:], body, rows)]
    return "\n".join(lines) + "\n"
