"""The job report model: job-node records (+ Slurm metadata, + live node status) -> JobReport.

Pure: no I/O, no clock (the caller passes `now`). Renderers (render_text/_json/_html/_csv.py)
turn a JobReport into a string. Rules that judge the job live in findings.py; this module
only measures.

Job numbers are SUMS over the job's nodes (a job moved what its nodes moved; averaging per node
was a real bug elsewhere, microsoft/pai#1933); per-node rates are shown beside them. A counter
no node reported is absent (None, "n/a"), never 0.
"""
from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from .config import DEFAULT_THRESHOLDS
from .hostlist import expand, fold
from .instances import lookup

HEALTH_COUNTERS = ("rx_drops", "retrans_pkts", "retrans_bytes", "retrans_timeout_events",
                   "impaired_remote_conn_events", "unresponsive_remote_events")
# `ethtool -S` names of the ENA driver's allowance counters (the ENA "network performance
# metrics"); present in a record only when the hooks could read them.
ENA_ALLOWANCE = ("bw_in_allowance_exceeded", "bw_out_allowance_exceeded", "pps_allowance_exceeded",
                 "conntrack_allowance_exceeded", "linklocal_allowance_exceeded")
STATUSES = ("complete", "incomplete", "running", "missing")
# Slurm states in which a job still holds its nodes (slurm.ALIVE_STATES, without importing the
# adapter into the pure model).
_ALIVE = frozenset(("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "STOPPED",
                    "RESIZING", "SIGNALING", "STAGE_OUT"))


class _Traffic:
    """Bytes sent and received, from the `counters` of a device or a node (absent stays None)."""

    counters: Dict[str, int]

    @property
    def tx_bytes(self) -> Optional[int]:
        return self.counters.get("tx_bytes")

    @property
    def rx_bytes(self) -> Optional[int]:
        return self.counters.get("rx_bytes")

    @property
    def traffic(self) -> Optional[int]:
        return _add(self.tx_bytes, self.rx_bytes)


@dataclass
class DeviceReport(_Traffic):
    name: str
    link_gbps: Optional[float] = None
    counters: Dict[str, int] = field(default_factory=dict)
    device_counters: Dict[str, int] = field(default_factory=dict)
    resets: List[str] = field(default_factory=list)
    peak_tx_gbps: Optional[float] = None
    peak_rx_gbps: Optional[float] = None


@dataclass
class NodeReport(_Traffic):
    host: str
    status: str  # one of STATUSES
    devices: List[DeviceReport] = field(default_factory=list)
    counters: Dict[str, int] = field(default_factory=dict)  # port counters summed over devices
    ena: Dict[str, int] = field(default_factory=dict)  # ENA statistics summed over interfaces
    avg_tx_gbps: Optional[float] = None
    avg_rx_gbps: Optional[float] = None
    peak_tx_gbps: Optional[float] = None
    peak_rx_gbps: Optional[float] = None
    peak_source: Optional[str] = None
    link_gbps: Optional[float] = None
    instance_type: Optional[str] = None
    start: Optional[float] = None
    end: Optional[float] = None
    elapsed_s: Optional[float] = None
    shared: List[str] = field(default_factory=list)
    complete: bool = False
    incomplete_reasons: List[str] = field(default_factory=list)
    resets: List[str] = field(default_factory=list)
    vanished_devices: List[str] = field(default_factory=list)
    source: Optional[str] = None  # "epilog" | "reconcile"
    daemon_samples: Optional[int] = None
    exit_code: Optional[str] = None
    series: Dict[str, Any] = field(default_factory=dict)
    live_tx_gbps: Optional[float] = None  # running: the node status file's current rates
    live_rx_gbps: Optional[float] = None
    live_age_s: Optional[float] = None
    rank: int = 0
    marks: List[str] = field(default_factory=list)  # finding codes that name this node

    @property
    def has_data(self) -> bool:
        return self.status in ("complete", "incomplete")

    @property
    def rx_drops(self) -> Optional[int]:
        return self.counters.get("rx_drops")

    @property
    def retrans_pkts(self) -> Optional[int]:
        return self.counters.get("retrans_pkts")

    @property
    def util_avg(self) -> Optional[float]:
        return _ratio(_max2(self.avg_tx_gbps, self.avg_rx_gbps), self.link_gbps)

    @property
    def util_peak(self) -> Optional[float]:
        return _ratio(_max2(self.peak_tx_gbps, self.peak_rx_gbps), self.link_gbps)


@dataclass
class JobMeta:
    job_id: str
    cluster: str
    restart: int = 0
    name: Optional[str] = None
    user: Optional[str] = None
    account: Optional[str] = None
    partition: Optional[str] = None
    state: Optional[str] = None
    exit_code: Optional[str] = None
    nodelist: Optional[str] = None  # folded
    num_nodes: Optional[int] = None
    hosts: List[str] = field(default_factory=list)  # expected hosts, when known
    start: Optional[float] = None
    end: Optional[float] = None
    elapsed_s: Optional[float] = None
    time_limit: Optional[int] = None  # minutes (Slurm's unit); None: unlimited or unknown
    instance_type: Optional[str] = None
    alias: Optional[str] = None  # the array task (7_8) or het component (8+1) form of the id
    source: str = "records"  # where the header came from: "slurm" or "records"


@dataclass
class Overall:
    totals: Dict[str, int] = field(default_factory=dict)  # every port counter, summed over nodes
    ena: Dict[str, int] = field(default_factory=dict)
    nodes_with_data: int = 0
    avg_tx_gbps: Optional[float] = None  # per node: mean over nodes
    avg_rx_gbps: Optional[float] = None
    peak_tx_gbps: Optional[float] = None  # per node: the highest node's peak
    peak_rx_gbps: Optional[float] = None
    link_gbps: Optional[float] = None  # per node
    util_avg: Optional[float] = None  # busier direction / link rate
    util_peak: Optional[float] = None
    rdma_read_share: Optional[float] = None  # of the bytes initiated: read, write, send
    rdma_write_share: Optional[float] = None
    send_share: Optional[float] = None
    resets: List[str] = field(default_factory=list)  # "host:device/counter"


@dataclass
class JobReport:
    meta: JobMeta
    nodes: List[NodeReport]
    overall: Overall
    findings: List[Any] = field(default_factory=list)  # findings.Finding
    verdict: str = "Healthy"
    notes: List[str] = field(default_factory=list)
    skipped: List[Tuple[str, str]] = field(default_factory=list)  # (path, why)
    restarts: Tuple[int, ...] = (0,)
    running: bool = False
    generated: Optional[float] = None

    @property
    def data_nodes(self) -> List[NodeReport]:
        return [n for n in self.nodes if n.has_data]


# -- small maths (None-aware) -----------------------------------------------------------------
def _add(a: Optional[float], b: Optional[float]) -> Optional[Any]:
    if a is None and b is None:
        return None
    return (a or 0) + (b or 0)


def _max2(a: Optional[float], b: Optional[float]) -> Optional[float]:
    vals = [v for v in (a, b) if v is not None]
    return max(vals) if vals else None


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    if a is None or not b:
        return None
    return a / b


def _mean(values: Iterable[Optional[float]]) -> Optional[float]:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def _maxv(values: Iterable[Optional[float]]) -> Optional[float]:
    vals = [v for v in values if v is not None]
    return max(vals) if vals else None


def _num(v: object) -> Optional[float]:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
        return None
    return float(v)


_INT_ONLY = {int}


def _ints(d: object) -> Dict[str, int]:
    """A record's counter dict, keeping only non-negative ints (a hand-edited record may hold
    anything). The common case is checked with C-level calls and returns the dict itself: a
    1,024-node report checks ~70,000 of these."""
    if not isinstance(d, dict):
        return {}
    if set(map(type, d.values())) <= _INT_ONLY and min(d.values(), default=0) >= 0:
        return d  # JSON keys are always strings
    return {k: v for k, v in d.items() if type(v) is int and v >= 0}


def _str(v: object) -> Optional[str]:
    return v if isinstance(v, str) and v else None


def sum_counters(dicts: Iterable[Mapping[str, int]]) -> Dict[str, int]:
    out: Dict[str, int] = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return out


def median_low(values: Sequence[float]) -> float:
    return statistics.median_low(values)


# -- records -> nodes --------------------------------------------------------------------------
def node_from_record(rec: Mapping[str, Any]) -> NodeReport:
    devices = []
    for d in rec.get("devices") or []:
        if not isinstance(d, dict) or not isinstance(d.get("name"), str):
            continue
        devices.append(DeviceReport(
            name=d["name"], link_gbps=_num(d.get("link_gbps")), counters=_ints(d.get("counters")),
            # Shown, never summed: passed through as the record has them.
            device_counters=d["device_counters"] if isinstance(d.get("device_counters"), dict) else {},
            resets=[r for r in d.get("resets") or [] if isinstance(r, str)],
            peak_tx_gbps=_num(d.get("peak_tx_gbps")), peak_rx_gbps=_num(d.get("peak_rx_gbps"))))
    totals = _ints(rec.get("totals"))
    if not totals and devices:  # an older writer without totals: the sum is the definition
        totals = sum_counters(d.counters for d in devices)
    ena_raw = rec.get("ena") if isinstance(rec.get("ena"), dict) else {}
    rates = rec.get("rates") if isinstance(rec.get("rates"), dict) else {}
    series = rec.get("series") if isinstance(rec.get("series"), dict) else {}
    complete = rec.get("complete") is True
    link = _num(rec.get("link_gbps"))
    if link is None:
        it = lookup(_str(rec.get("instance_type")))
        link = it.total_gbps if it else None
    return NodeReport(
        host=rec["host"], status="complete" if complete else "incomplete", devices=devices,
        counters=totals, ena=sum_counters(_ints(v) for v in ena_raw.values()),
        avg_tx_gbps=_num(rates.get("avg_tx_gbps")), avg_rx_gbps=_num(rates.get("avg_rx_gbps")),
        peak_tx_gbps=_num(rates.get("peak_tx_gbps")), peak_rx_gbps=_num(rates.get("peak_rx_gbps")),
        peak_source=_str(rates.get("peak_source")), link_gbps=link,
        instance_type=_str(rec.get("instance_type")), start=_num(rec.get("start")),
        end=_num(rec.get("end")), elapsed_s=_num(rec.get("elapsed_s")),
        shared=[s for s in rec.get("shared") or [] if isinstance(s, str)], complete=complete,
        incomplete_reasons=[r for r in rec.get("incomplete_reasons") or [] if isinstance(r, str)],
        resets=[r for r in rec.get("resets") or [] if isinstance(r, str)],
        vanished_devices=[v for v in rec.get("vanished_devices") or [] if isinstance(v, str)],
        source=_str(rec.get("source")), daemon_samples=rec.get("daemon_samples")
        if isinstance(rec.get("daemon_samples"), int) else None,
        exit_code=_str(rec.get("exit_code")), series=dict(series))


def _rank(nodes: List[NodeReport]) -> List[NodeReport]:
    """Nodes with data by traffic (most first), then running, then missing; ties by name."""
    order = {"complete": 0, "incomplete": 0, "running": 1, "missing": 2}
    nodes = sorted(nodes, key=lambda n: (order[n.status], -(n.traffic or 0)
                                         if n.traffic is not None else 1, _host_key(n.host)))
    for i, n in enumerate(nodes, 1):
        n.rank = i
    return nodes


def _expand(nodelist: Optional[str]) -> List[str]:
    from .errors import UsageError

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
    o.avg_tx_gbps = _mean(n.avg_tx_gbps for n in data)
    o.avg_rx_gbps = _mean(n.avg_rx_gbps for n in data)
    o.peak_tx_gbps = _maxv(n.peak_tx_gbps for n in data)
    o.peak_rx_gbps = _maxv(n.peak_rx_gbps for n in data)
    links = Counter(n.link_gbps for n in data if n.link_gbps)
    o.link_gbps = links.most_common(1)[0][0] if links else None
    o.util_avg = _ratio(_max2(o.avg_tx_gbps, o.avg_rx_gbps), o.link_gbps)
    o.util_peak = _ratio(_max2(o.peak_tx_gbps, o.peak_rx_gbps), o.link_gbps)
    # Each transfer counted once, on the side that initiated it: RDMA read bytes (the reader's
    # rx), RDMA write bytes (the writer's tx), two-sided send bytes.
    parts = {k: o.totals.get(k) for k in ("rdma_read_bytes", "rdma_write_bytes", "send_bytes")}
    known = {k: v for k, v in parts.items() if v is not None}
    whole = sum(known.values())
    if known and whole > 0:
        o.rdma_read_share = _ratio(parts["rdma_read_bytes"], whole)
        o.rdma_write_share = _ratio(parts["rdma_write_bytes"], whole)
        o.send_share = _ratio(parts["send_bytes"], whole)
    o.resets = [f"{n.host}:{r}" for n in data for r in n.resets]
    return o


# -- metadata ------------------------------------------------------------------------------------
def _first(values: Iterable[Optional[Any]]) -> Optional[Any]:
    return next((v for v in values if v is not None), None)


def derive_state(records: Sequence[Mapping[str, Any]], running: bool) -> Optional[str]:
    """A Slurm-like state from the records alone (no Slurm): the exit codes the epilogs saw."""
    if running:
        return "RUNNING"
    codes = [_str(r.get("exit_code")) for r in records]
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
    m.user = _first(_str(r.get("user")) for r in records)
    m.account = _first(_str(r.get("account")) for r in records)
    m.partition = _first(_str(r.get("partition")) for r in records)
    m.nodelist = _first(_str(r.get("nodelist")) for r in records)
    nn = [r.get("num_nodes") for r in records if isinstance(r.get("num_nodes"), int)]
    m.num_nodes = max(nn) if nn else None
    m.instance_type = _first(_str(r.get("instance_type")) for r in records)
    starts = [s for s in (_num(r.get("start")) for r in records) if s is not None]
    ends = [e for e in (_num(r.get("end")) for r in records) if e is not None]
    m.start = min(starts) if starts else None
    m.end = None if running or not ends else max(ends)
    codes = [c for c in (_str(r.get("exit_code")) for r in records) if c]
    if not running:
        m.exit_code = next((c for c in codes if c != "0:0"), codes[0] if codes else None)
    m.state = derive_state(records, running)
    for r in records:
        a, t = _str(r.get("array_job_id")), _str(r.get("array_task_id"))
        h, o = _str(r.get("het_job_id")), _str(r.get("het_job_offset"))
        m.alias = f"{a}_{t}" if a and t else (f"{h}+{o}" if h and o else None)
        if m.alias:
            break
    return m


def apply_slurm(m: JobMeta, info: Any, *, times: bool = True) -> None:
    """Overlay what Slurm knows (efajob.slurm.JobInfo, duck-typed). `times=False` keeps the
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
            v = _num(getattr(info, attr, None))
            if v is not None and v > 0:
                setattr(m, attr, v)
    m.source = "slurm"


# -- the report --------------------------------------------------------------------------------
def build_report(records: Sequence[Mapping[str, Any]], *, job_id: str, cluster: str,
                 restart: int = 0, restarts: Sequence[int] = (0,), restart_defaulted: bool = False,
                 job_info: Any = None, slurm_note: Optional[str] = None, slurm_times: bool = True,
                 live: Optional[Mapping[str, Any]] = None, expected_hosts: Sequence[str] = (),
                 skipped: Sequence[Tuple[str, str]] = (),
                 thresholds: Optional[Mapping[str, float]] = None,
                 now: Optional[float] = None) -> JobReport:
    """Assemble the report. `live` is {host: jobstore.NodeStatus} of nodes that list the job as
    running; `expected_hosts` the job's hosts when known otherwise (default: Slurm's, else the
    records' nodelist expanded)."""
    from .findings import evaluate, verdict

    nodes: Dict[str, NodeReport] = {}
    for rec in records:
        nodes[rec["host"]] = node_from_record(rec)
    # A node with a record has run its epilog: a status file written just before that may
    # still list the job, but the node is done with it.
    live = {h: s for h, s in (live or {}).items() if h not in nodes}
    if job_info is not None and slurm_times and getattr(job_info, "state", None) and \
            str(job_info.state).upper() not in _ALIVE:
        live = {}  # Slurm says it is over: a status file younger than a minute is just late
    slurm_running = job_info is not None and slurm_times and \
        str(getattr(job_info, "state", "") or "").upper() in _ALIVE - {"PENDING"}
    for host, st in live.items():
        if host in nodes:
            continue
        job = next((j for j in st.jobs if j.job_id == job_id and j.restart == restart), None)
        nodes[host] = NodeReport(host=host, status="running", live_tx_gbps=st.tx_gbps,
                                 live_rx_gbps=st.rx_gbps,
                                 live_age_s=st.age(now) if now is not None else None,
                                 start=job.start if job else None,
                                 instance_type=getattr(st, "instance_type", None))
    running = bool(live) or slurm_running
    meta = meta_from_records(job_id, cluster, restart, records, running)
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
        meta.elapsed_s = _maxv(n.elapsed_s for n in nodes.values())
    if meta.instance_type is None:
        meta.instance_type = _first(n.instance_type for n in nodes.values())

    ranked = _rank(list(nodes.values()))
    report = JobReport(meta=meta, nodes=ranked, overall=build_overall(ranked),
                       skipped=list(skipped), restarts=tuple(restarts), running=running,
                       generated=now)
    if restart_defaulted:
        report.notes.append(
            f"job {job_id} ran {len(restarts)} times (restarts {', '.join(map(str, restarts))}): "
            f"showing restart {restart}, the latest; choose another with --restart N")
    if slurm_note:
        report.notes.append(slurm_note)
    th = dict(DEFAULT_THRESHOLDS)
    th.update(thresholds or {})
    report.findings = evaluate(report, th)
    report.verdict = verdict(report.findings)
    by_host = {n.host: n for n in ranked}
    for f in report.findings:
        n = by_host.get(f.host) if f.host else None
        if n is not None and f.code not in n.marks and f.severity != "info":
            n.marks.append(f.code)
    return report
