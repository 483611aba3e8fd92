"""Building a JobReport from job-node records (+ Slurm metadata, + live node status), then
judging it with the finding rules (report/findings.py).

Pure: no I/O, no clock (the caller passes `now`). The model it fills is model.py; the store
reading and Slurm lookups that feed it are assemble.py.

Records stream in (`ingest`): each one becomes its NodeReport (device counters and series in
the compact forms of compact.py) and a small header (HEADER_KEYS, what the job's metadata is
made of) as it is read, and is dropped; nothing holds a 4,096-node job's parsed records at once.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from efajob.config import DEFAULT_THRESHOLDS
from efajob.node.instances import lookup, unsupported_counters
from efajob.report.compact import columns, compact_block, compact_counters, compact_series
from efajob.report.findings import evaluate, running_verdict, sort_findings, verdict
from efajob.report.live import live_findings
from efajob.report.maths import (ints, max2, maxv, mean, nonempty, num, ratio,
                                 sum_counters)
from efajob.report.model import (ALIVE_STATES, DeviceReport, JobMeta, JobReport, NodeReport,
                                 Overall)
from efajob.slurm.hostlist import expand, fold
from efajob.store.reader import node_window
from efajob.values import as_object

# -- records -> nodes --------------------------------------------------------------------------
def _without(counters: Dict[str, int], names: Mapping[str, str]) -> Dict[str, int]:
    if not names or not any(k in counters for k in names):
        return counters  # the usual case: the record's dict itself, not a copy
    return {k: v for k, v in counters.items() if k not in names}


def _num(v: object) -> Optional[float]:
    # maths.num, its usual case first: 98,304 calls at 1,024 nodes.
    return v if type(v) is float and v == v else num(v)


def node_from_record(rec: Mapping[str, Any]) -> NodeReport:
    itype = lookup(nonempty(rec.get("instance_type")))
    unsupported = unsupported_counters(itype)
    raw = [d for d in rec.get("devices") or []
           if isinstance(d, dict) and isinstance(d.get("name"), str)]
    # The usual record: every device with the same counters, all counts. One array per node
    # (compact.compact_block); else each device's dicts checked and compacted on their own.
    ports = [d.get("counters") for d in raw]
    if unsupported:  # counters the type cannot count, left out (_without) before compacting
        ports = [_without(c, unsupported) if isinstance(c, dict) else c for c in ports]
    port = compact_block(ports)
    dev = compact_block([d.get("device_counters") for d in raw])
    devices = []
    for i, d in enumerate(raw):
        rs = d.get("resets")
        devices.append(DeviceReport(
            name=d["name"], link_gbps=_num(d.get("link_gbps")),
            counters=port[i] if port else
            compact_counters(_without(ints(d.get("counters")), unsupported)),
            # Shown and judged per device (device_errors), never summed.
            device_counters=dev[i] if dev else compact_counters(ints(d.get("device_counters"))),
            resets=[r for r in rs if isinstance(r, str)] if rs else [],
            peak_tx_gbps=_num(d.get("peak_tx_gbps")), peak_rx_gbps=_num(d.get("peak_rx_gbps"))))
    totals = _without(ints(rec.get("totals")), unsupported)
    if not totals and devices:  # an older writer without totals: the sum is the definition
        totals = sum_counters(d.counters for d in devices)
    ena_raw = as_object(rec.get("ena"))
    rates = as_object(rec.get("rates"))
    series = as_object(rec.get("series"))
    complete = rec.get("complete") is True
    link = num(rec.get("link_gbps"))
    if link is None and itype is not None:
        link = itype.total_gbps
    # The hooks take the link rate from the instance table when they know the type, else from
    # the devices' ports/1/rate (hooks/records.link_rates): say which.
    link_source = None if link is None else ("instance_table" if itype else "sysfs_rate")
    expected = rec.get("expected_devices")
    if isinstance(expected, bool) or not isinstance(expected, int) or expected <= 0:
        expected = itype.devices if itype else None
    n = NodeReport(
        host=rec["host"], status="complete" if complete else "incomplete", devices=devices,
        counters=totals, ena=sum_counters(ints(v) for v in ena_raw.values()),
        avg_tx_gbps=num(rates.get("avg_tx_gbps")), avg_rx_gbps=num(rates.get("avg_rx_gbps")),
        peak_tx_gbps=num(rates.get("peak_tx_gbps")), peak_rx_gbps=num(rates.get("peak_rx_gbps")),
        peak_source=nonempty(rates.get("peak_source")), link_gbps=link,
        instance_type=nonempty(rec.get("instance_type")), start=num(rec.get("start")),
        end=num(rec.get("end")), elapsed_s=num(rec.get("elapsed_s")),
        shared=[s for s in rec.get("shared") or [] if isinstance(s, str)], complete=complete,
        incomplete_reasons=[r for r in rec.get("incomplete_reasons") or [] if isinstance(r, str)],
        resets=[r for r in rec.get("resets") or [] if isinstance(r, str)],
        vanished_devices=[v for v in rec.get("vanished_devices") or [] if isinstance(v, str)],
        appeared_devices=[v for v in rec.get("appeared_devices") or [] if isinstance(v, str)],
        source=nonempty(rec.get("source")), daemon_samples=rec.get("daemon_samples")
        if isinstance(rec.get("daemon_samples"), int) else None,
        exit_code=nonempty(rec.get("exit_code")), series=compact_series(series))
    n.expected_devices, n.link_source = expected, link_source
    n.unsupported = dict(unsupported)
    return n


def flag_rates(n: NodeReport, tolerance: float) -> None:
    """Mark the series points and the peaks of `n` and of its devices faster than `tolerance` x
    their link rate (above_link, peak_above_link). Such a sample is not a measurement: a late
    read whose delta covers more time than its interval, a catch-up burst, or a wrong link rate."""
    for d in n.devices:
        dpeak = max2(d.peak_tx_gbps, d.peak_rx_gbps)
        d.peak_above_link = bool(d.link_gbps) and dpeak is not None and \
            dpeak > (d.link_gbps or 0) * tolerance
    link = n.link_gbps
    if not link:
        return
    cap = link * tolerance
    tx, rx = n.series.get("tx_gbps"), n.series.get("rx_gbps")
    cols = columns(tx, rx)
    if cols and all(_below(c, cap) for c in cols):
        n.above_link = []  # the usual case, decided at C speed
    elif cols:
        width = max(len(c) for c in cols)
        n.above_link = [i for i in range(width)
                        if any(i < len(c) and isinstance(c[i], (int, float)) and c[i] > cap
                               for c in cols)]
    peak = max2(n.peak_tx_gbps, n.peak_rx_gbps)
    n.peak_above_link = peak is not None and peak > cap


_NUMBERS = {int, float}


def _below(col: Sequence, cap: float) -> bool:
    """Every point of a series column is a number no faster than `cap` (an empty column
    too). Columns holding anything else (None for a gap, a bool) take flag_rates' full path."""
    if not col:
        return True
    if isinstance(col, list) and not set(map(type, col)) <= _NUMBERS:
        return False
    return max(col) <= cap


def _rank(nodes: List[NodeReport]) -> List[NodeReport]:
    """Nodes with data by traffic (most first), then running, then missing; ties by name."""
    order = {"complete": 0, "incomplete": 0, "running": 1, "missing": 2}
    nodes = sorted(nodes, key=lambda n: (order[n.status], -(n.traffic or 0)
                                         if n.traffic is not None else 1, _host_key(n.host)))
    for i, n in enumerate(nodes, 1):
        n.rank = i
    return nodes


def _expand(nodelist: Optional[str]) -> List[str]:
    from efajob.errors import UsageError

    try:
        return expand(nodelist, limit=100_000)
    except UsageError:  # a garbled nodelist in a record: fall back to the records' hosts
        return []


def _host_key(host: str) -> Tuple:
    import re

    return tuple(int(p) if p.isdigit() else p for p in re.split(r"([0-9]+)", host))


def build_overall(nodes: Sequence[NodeReport]) -> Overall:
    data = [n for n in nodes if n.has_data]
    o = Overall(nodes_with_data=len(data))
    o.totals = sum_counters(n.counters for n in data)
    o.ena = sum_counters(n.ena for n in data)
    o.avg_tx_gbps = mean(n.avg_tx_gbps for n in data)
    o.avg_rx_gbps = mean(n.avg_rx_gbps for n in data)
    o.peak_tx_gbps = maxv(n.peak_tx_gbps for n in data)
    o.peak_rx_gbps = maxv(n.peak_rx_gbps for n in data)
    links = Counter(n.link_gbps for n in data if n.link_gbps)
    o.link_gbps = links.most_common(1)[0][0] if links else None
    o.link_source = next((n.link_source for n in data if n.link_gbps == o.link_gbps), None)
    for n in data:
        o.unsupported.update(n.unsupported)
    o.util_avg = ratio(max2(o.avg_tx_gbps, o.avg_rx_gbps), o.link_gbps)
    o.util_peak = ratio(max2(o.peak_tx_gbps, o.peak_rx_gbps), o.link_gbps)
    # Each transfer counted once, on the side that initiated it: RDMA read bytes (the reader's
    # rx), RDMA write bytes (the writer's tx), two-sided send bytes.
    parts = {k: o.totals.get(k) for k in ("rdma_read_bytes", "rdma_write_bytes", "send_bytes")}
    known = {k: v for k, v in parts.items() if v is not None}
    whole = sum(known.values())
    if known and whole > 0:
        o.rdma_read_share = ratio(parts["rdma_read_bytes"], whole)
        o.rdma_write_share = ratio(parts["rdma_write_bytes"], whole)
        o.send_share = ratio(parts["send_bytes"], whole)
    o.resets = [f"{n.host}:{r}" for n in data for r in n.resets]
    return o


# -- metadata ------------------------------------------------------------------------------------
def _first(values: Iterable[Optional[Any]]) -> Optional[Any]:
    return next((v for v in values if v is not None), None)


def derive_state(records: Sequence[Mapping[str, Any]], running: bool) -> Optional[str]:
    """A Slurm-like state from the records alone (no Slurm): the exit codes the epilogs saw."""
    if running:
        return "RUNNING"
    codes = [nonempty(r.get("exit_code")) for r in records]
    known = [c for c in codes if c]
    if not known:
        return "ENDED" if records else None
    for c in known:
        exit_part, _, sig = c.partition(":")
        if exit_part not in ("0", "") or sig not in ("0", ""):
            return "FAILED"
    return "COMPLETED"


def meta_from_records(job_id: str, cluster: str, restart: int,
                      records: Sequence[Mapping[str, Any]], running: bool) -> JobMeta:
    m = JobMeta(job_id=job_id, cluster=cluster, restart=restart)
    m.name = _first(nonempty(r.get("job_name")) for r in records)
    m.user = _first(nonempty(r.get("user")) for r in records)
    m.account = _first(nonempty(r.get("account")) for r in records)
    m.partition = _first(nonempty(r.get("partition")) for r in records)
    m.nodelist = _first(nonempty(r.get("nodelist")) for r in records)
    nn = [n for n in (r.get("num_nodes") for r in records) if isinstance(n, int)]
    m.num_nodes = max(nn) if nn else None
    m.instance_type = _first(nonempty(r.get("instance_type")) for r in records)
    starts = [s for s in (num(r.get("start")) for r in records) if s is not None]
    ends = [e for e in (num(r.get("end")) for r in records) if e is not None]
    m.start = min(starts) if starts else None
    m.end = None if running or not ends else max(ends)
    codes = [c for c in (nonempty(r.get("exit_code")) for r in records) if c]
    if not running:
        m.exit_code = next((c for c in codes if c != "0:0"), codes[0] if codes else None)
    m.state = derive_state(records, running)
    for r in records:
        a, t = nonempty(r.get("array_job_id")), nonempty(r.get("array_task_id"))
        h, o = nonempty(r.get("het_job_id")), nonempty(r.get("het_job_offset"))
        m.alias = f"{a}_{t}" if a and t else (f"{h}+{o}" if h and o else None)
        if m.alias:
            break
    return m


def _owner_from_status(m: JobMeta, live: Mapping[str, Any], job_id: str, restart: int) -> None:
    """User and partition of a job with no record yet, from the active-job entries of its
    nodes' status files (null there with private_records); Slurm's, when asked, win."""
    for st in live.values():
        for j in getattr(st, "jobs", ()):
            if j.job_id == job_id and j.restart == restart:
                m.user = m.user or j.user
                m.partition = m.partition or getattr(j, "partition", None)


def apply_slurm(m: JobMeta, info: Any, *, times: bool = True) -> None:
    """Overlay what Slurm knows (efajob.slurm.adapter.JobInfo, duck-typed). `times=False` keeps the
    records' start/end/state (the report is about an earlier restart than Slurm's)."""
    for attr in ("name", "user", "account", "partition"):
        v = getattr(info, attr, None)
        if v not in (None, ""):
            setattr(m, attr, str(v))
    limit = getattr(info, "time_limit", None)
    if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
        m.time_limit = limit
    nodelist = getattr(info, "nodelist", None)
    if nodelist:
        m.nodelist = str(nodelist)
    jid = getattr(info, "job_id", None)
    if isinstance(jid, str) and jid != m.job_id and ("_" in jid or "+" in jid):
        m.alias = jid
    hosts = getattr(info, "nodes", None)
    if hosts:
        m.hosts = [str(h) for h in hosts]
    nn = getattr(info, "num_nodes", None)
    if isinstance(nn, int) and nn > 0:
        m.num_nodes = nn
    if times:
        for attr in ("state", "exit_code"):
            v = getattr(info, attr, None)
            if v not in (None, ""):
                setattr(m, attr, str(v))
        for attr in ("start", "end"):
            v = num(getattr(info, attr, None))
            if v is not None and v > 0:
                setattr(m, attr, v)
    m.source = "slurm"


# -- the report --------------------------------------------------------------------------------
# What meta_from_records (and assemble's checks: host, array and het ids) read of a record:
# all that is kept of it once its NodeReport is made.
HEADER_KEYS = ("host", "job_name", "user", "account", "partition", "nodelist", "num_nodes",
               "instance_type", "start", "end", "exit_code", "array_job_id", "array_task_id",
               "het_job_id", "het_job_offset")


def record_header(rec: Mapping[str, Any]) -> Dict[str, Any]:
    return {k: rec[k] for k in HEADER_KEYS if k in rec}


@dataclass
class Ingested:
    """A job's records, read: {host: NodeReport} (a later record of a host replaces an
    earlier one) and every record's header, in reading order."""

    nodes: Dict[str, NodeReport] = field(default_factory=dict)
    headers: List[Dict[str, Any]] = field(default_factory=list)


def ingest(records: Iterable[Mapping[str, Any]]) -> Ingested:
    """Consume `records` one at a time, keeping its NodeReport and header only: a record
    is garbage as soon as the next one is read."""
    out = Ingested()
    for rec in records:
        out.nodes[rec["host"]] = node_from_record(rec)
        out.headers.append(record_header(rec))
    return out


def build_report(records: Union[Iterable[Mapping[str, Any]], Ingested], *, job_id: str, cluster: str,
                 restart: int = 0, restarts: Sequence[int] = (0,), restart_defaulted: bool = False,
                 job_info: Any = None, slurm_note: Optional[str] = None, slurm_times: bool = True,
                 live: Optional[Mapping[str, Any]] = None, expected_hosts: Sequence[str] = (),
                 skipped: Sequence[Tuple[str, str]] = (),
                 thresholds: Optional[Mapping[str, float]] = None,
                 now: Optional[float] = None) -> JobReport:
    """Assemble the report. `live` is {host: jobstore.NodeStatus} of nodes that list the job as
    running; `expected_hosts` the job's hosts when known otherwise (default: Slurm's, else the
    records' nodelist expanded). `records` may be a one-pass iterator, or already `ingest`ed."""
    ing = records if isinstance(records, Ingested) else ingest(records)
    nodes, headers = ing.nodes, ing.headers
    # A node with a record has run its epilog: a status file written just before that may
    # still list the job, but the node is done with it.
    live = {h: s for h, s in (live or {}).items() if h not in nodes}
    if job_info is not None and slurm_times and getattr(job_info, "state", None) and \
            str(job_info.state).upper() not in ALIVE_STATES:
        live = {}  # Slurm says it is over: a status file younger than a minute is just late
    slurm_running = job_info is not None and slurm_times and \
        str(getattr(job_info, "state", "") or "").upper() in ALIVE_STATES - {"PENDING"}
    windows: Dict[str, Tuple[Any, Optional[str]]] = {}
    for host, st in live.items():
        if host in nodes:
            continue
        job = next((j for j in st.jobs if j.job_id == job_id and j.restart == restart), None)
        # The job's own window when it started inside the node's last minute.
        window = node_window(st)
        recent = job.window(window) if job is not None else window
        if recent is not None:
            windows[host] = (recent, getattr(st, "instance_type", None))
        nodes[host] = NodeReport(host=host, status="running", live_tx_gbps=st.tx_gbps,
                                 live_rx_gbps=st.rx_gbps,
                                 live_age_s=st.age(now) if now is not None else None,
                                 live_window_s=recent.seconds if recent is not None else None,
                                 start=job.start if job else None,
                                 instance_type=getattr(st, "instance_type", None))
    running = bool(live) or slurm_running
    meta = meta_from_records(job_id, cluster, restart, headers, running)
    _owner_from_status(meta, live, job_id, restart)
    if job_info is not None:
        apply_slurm(meta, job_info, times=slurm_times)
    if not meta.hosts:
        meta.hosts = list(expected_hosts) or _expand(meta.nodelist)
    for host in meta.hosts:
        if host not in nodes:
            nodes[host] = NodeReport(host=host, status="running" if running else "missing")
    if meta.start is None:
        meta.start = _first(n.start for n in nodes.values() if n.status == "running")
    if meta.num_nodes is None or meta.num_nodes < len(nodes):
        meta.num_nodes = len(nodes) or None
    # Folded for display (records carry what Slurm gave the hooks, possibly unfolded).
    meta.nodelist = fold(meta.hosts or sorted(nodes, key=_host_key)) if (meta.hosts or nodes) else None
    if meta.start is not None:
        end = meta.end if meta.end is not None else (now if running else None)
        meta.elapsed_s = None if end is None else max(0.0, end - meta.start)
    if meta.elapsed_s is None:
        meta.elapsed_s = maxv(n.elapsed_s for n in nodes.values())
    if meta.instance_type is None:
        meta.instance_type = _first(n.instance_type for n in nodes.values())

    th = dict(DEFAULT_THRESHOLDS)
    th.update(thresholds or {})
    ranked = _rank(list(nodes.values()))
    for node in ranked:
        flag_rates(node, th["rate_above_link_ratio"])
    report = JobReport(meta=meta, nodes=ranked, overall=build_overall(ranked),
                       skipped=list(skipped), restarts=tuple(restarts), running=running,
                       generated=now)
    if restart_defaulted:
        report.notes.append(
            f"job {job_id} ran {len(restarts)} times (restarts {', '.join(map(str, restarts))}): "
            f"showing restart {restart}, the latest; choose another with --restart N")
    if slurm_note:
        report.notes.append(slurm_note)
    report.findings = evaluate(report, th)
    if running:
        report.findings = sort_findings(report.findings + live_findings(windows, th), report)
        waiting = [n for n in ranked if n.status == "running"]
        report.verdict = running_verdict(report.findings, len(waiting),
                                         sum(1 for n in waiting if n.live_window_s is not None))
    else:
        report.verdict = verdict(report.findings)
    by_host = {n.host: n for n in ranked}
    for f in report.findings:
        n = by_host.get(f.host) if f.host else None
        if n is not None and f.code not in n.marks and f.severity != "info":
            n.marks.append(f.code)
    return report
