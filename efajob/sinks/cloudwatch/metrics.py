"""What the CloudWatch sink publishes (the catalogue) and how ticks become datums (pure).

The catalogue is the one source of metric names, units and dimension sets: the sink's
aggregator, the dashboard builder and the cost estimator all read it, so a dashboard widget
cannot name a metric the sink does not publish.

Statistics. One datum per metric per period carries `StatisticValues` over the period's
ticks, weighted by time so the numbers are exact whatever the tick length:
- `Sum` is the counter's increase over the period (bytes, packets, events): exact, from the
  integer deltas, so a cluster's or a job's bytes are a `Sum` away;
- `SampleCount` is the seconds observed (one sample per second: equal to the tick count at the
  default 1 s interval);
- `Average` (= Sum / SampleCount) is therefore the mean rate per second;
- `Minimum`/`Maximum` are the lowest and highest per-tick rates: the 1 s peak survives (a 60 s
  average would hide every burst).
Metric names are the kernel's counter names, verbatim; units are per second.

Cardinality (each unique namespace + name + dimension set is a billed custom metric, see
docs/cloudwatch.md): by default 17 metrics per node at most (8 EFA traffic and health, 4 EFA
error counters, 5 ENA allowance when the node reports them), 6 per cluster and 2 per instance
type. Counters the instance type cannot count (SRD on Nitro v3, rdma_write_* without RDMA
write: their files read 0) are never published. Per-device and JobId metrics only
when enabled.

Standard library only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

if TYPE_CHECKING:  # pragma: no cover
    from efajob.sinks.base import Tick

# Dimension sets (names in the order they are sent).
NODE = ("ClusterName", "InstanceId")
CLUSTER = ("ClusterName",)
TYPE = ("ClusterName", "InstanceType")
DEVICE = ("ClusterName", "InstanceId", "Device")
JOB = ("ClusterName", "JobId")

BYTES_RATE, COUNT_RATE = "Bytes/Second", "Count/Second"
# EFA port counters (node sums over devices): kernel name -> unit.
EFA_METRICS: Tuple[Tuple[str, str], ...] = (
    ("tx_bytes", BYTES_RATE), ("rx_bytes", BYTES_RATE),
    ("tx_pkts", COUNT_RATE), ("rx_pkts", COUNT_RATE),
    ("rx_drops", COUNT_RATE), ("retrans_pkts", COUNT_RATE),
    ("impaired_remote_conn_events", COUNT_RATE), ("unresponsive_remote_events", COUNT_RATE),
)
# The driver's error signals (docs/report.md, findings wr_errors and device_errors): the port
# work-request errors and the device's admin-queue errors; the verbs *_err counters stay in the
# reports and Prometheus (eleven more metrics per node would cost more than they tell).
ERROR_METRICS: Tuple[Tuple[str, str], ...] = (
    ("rdma_read_wr_err", COUNT_RATE), ("rdma_write_wr_err", COUNT_RATE),
    ("cmds_err", COUNT_RATE), ("no_completion_cmds", COUNT_RATE),
)
DEVICE_LEVEL = ("cmds_err", "no_completion_cmds")  # <dev>/hw_counters, not the port's
SRD_ONLY = frozenset(("retrans_pkts", "impaired_remote_conn_events", "unresponsive_remote_events"))
RDMA_WRITE_ONLY = frozenset(("rdma_write_wr_err",))
# ENA allowance counters (`ethtool -S`, ENA driver >= 2.2.10), summed over interfaces, when
# the node's readings include them (absent otherwise: absent is not zero).
ENA_ALLOWANCE: Tuple[str, ...] = (
    "bw_in_allowance_exceeded", "bw_out_allowance_exceeded", "pps_allowance_exceeded",
    "conntrack_allowance_exceeded", "linklocal_allowance_exceeded",
)
CLUSTER_METRICS = ("tx_bytes", "rx_bytes", "tx_pkts", "rx_pkts", "rx_drops", "retrans_pkts")
TYPE_METRICS = ("tx_bytes", "rx_bytes")
DEVICE_METRICS = ("tx_bytes", "rx_bytes", "rx_drops", "retrans_pkts")
JOB_METRICS = ("tx_bytes", "rx_bytes")
UNITS: Dict[str, str] = dict(EFA_METRICS + ERROR_METRICS, **{n: COUNT_RATE for n in ENA_ALLOWANCE})
_EFA_NAMES = tuple(n for n, _ in EFA_METRICS + ERROR_METRICS if n not in DEVICE_LEVEL)

MAX_DEVICES = 64  # per node, bounds per-device cardinality whatever sysfs shows
MAX_JOBS = 32  # concurrent jobs on one node with JobId metrics


@dataclass(frozen=True)
class MetricSpec:
    name: str
    unit: str
    dimensions: Tuple[str, ...]
    scope: str  # node, cluster, type, device, job: how its count grows


def catalogue(*, per_device: bool = False, job_metrics: bool = False, srd: bool = True,
              ena_allowance: bool = True, rdma_write: bool = True) -> List[MetricSpec]:
    """Every (metric, dimension set) the sink may publish under a config."""
    node = [n for n, _ in EFA_METRICS if srd or n not in SRD_ONLY]
    node += [n for n, _ in ERROR_METRICS if rdma_write or n not in RDMA_WRITE_ONLY]
    if ena_allowance:
        node += list(ENA_ALLOWANCE)
    out = [MetricSpec(n, UNITS[n], NODE, "node") for n in node]
    out += [MetricSpec(n, UNITS[n], CLUSTER, "cluster") for n in CLUSTER_METRICS if n in node]
    out += [MetricSpec(n, UNITS[n], TYPE, "type") for n in TYPE_METRICS]
    if per_device:
        out += [MetricSpec(n, UNITS[n], DEVICE, "device") for n in DEVICE_METRICS if n in node]
    if job_metrics:
        out += [MetricSpec(n, UNITS[n], JOB, "job") for n in JOB_METRICS]
    return out


@dataclass(frozen=True)
class Identity:
    cluster: str
    instance_id: str
    instance_type: Optional[str] = None


class _Stat:
    """Time-weighted statistics of one metric over one period."""

    __slots__ = ("seconds", "total", "lo", "hi")

    def __init__(self) -> None:
        self.seconds = 0.0
        self.total = 0
        self.lo = math.inf
        self.hi = -math.inf

    def add(self, amount: int, seconds: float) -> None:
        r = amount / seconds
        self.seconds += seconds
        self.total += amount
        if r < self.lo:
            self.lo = r
        if r > self.hi:
            self.hi = r


Key = Tuple[str, Tuple[Tuple[str, str], ...]]


class PeriodAggregator:
    """Folds ticks into one datum per metric and dimension set per `period` seconds.

    Periods are aligned to the wall clock (multiples of `period` since the epoch) so every
    node's datum for 12:00 lands in CloudWatch's 12:00 bucket; a tick belongs to the period
    containing the middle of its interval. `add()` returns the finished period's datums when a
    tick opens a new period (at most once per period); `close()` returns the current one.
    """

    def __init__(self, ident: Identity, *, period: int = 60, per_device: bool = False,
                 job_metrics: bool = False):
        self.ident = ident
        self.period = period
        self.per_device = per_device
        self.job_metrics = job_metrics
        self.resolution = 60 if period >= 60 else 1  # sub-minute periods need high resolution
        self._start: Optional[float] = None
        self._stats: Dict[Key, _Stat] = {}
        self.capped = {"devices": 0, "jobs": 0}  # what MAX_DEVICES / MAX_JOBS left out
        # Counters this type cannot count (they read 0): published never, not as 0.
        from efajob.node.instances import lookup, unsupported_counters

        self._unsupported = unsupported_counters(lookup(ident.instance_type))

    def add(self, tick: "Tick") -> List[dict]:
        delta = tick.delta
        if delta is None or delta.seconds <= 0:
            return []
        # The period holding the middle of the tick's interval: the reading at 12:01:00.2
        # covers 12:00:59.2-12:01:00.2, which is mostly 12:00's traffic.
        mid = tick.snapshot.wall - delta.seconds / 2
        start = math.floor(mid / self.period) * self.period
        done: List[dict] = []
        if self._start is None:
            self._start = start
        elif start > self._start:
            done = self.close()
            self._start = start
        # A wall clock stepped back keeps adding to the open period: never emit out of order.
        self._fold(tick)
        return done

    def close(self) -> List[dict]:
        """The open period's datums (empty when nothing was added); starts afresh."""
        stats, self._stats = self._stats, {}
        if not stats or self._start is None:
            return []
        out = []
        for (name, dims), s in stats.items():
            out.append({
                "MetricName": name,
                "Dimensions": [{"Name": k, "Value": v} for k, v in dims],
                "Timestamp": float(self._start),
                "StatisticValues": {"SampleCount": round(s.seconds, 6), "Sum": float(s.total),
                                    "Minimum": s.lo, "Maximum": s.hi},
                "Unit": UNITS[name],
                "StorageResolution": self.resolution,
            })
        return out

    # -- folding ---------------------------------------------------------------------------
    def _put(self, name: str, dims: Tuple[Tuple[str, str], ...], amount: int, secs: float) -> None:
        key = (name, dims)
        s = self._stats.get(key)
        if s is None:
            s = self._stats[key] = _Stat()
        s.add(amount, secs)

    def _fold(self, tick: "Tick") -> None:
        delta = tick.delta
        assert delta is not None  # add() folds only ticks with a delta
        secs = delta.seconds
        idn = self.ident
        node = (("ClusterName", idn.cluster), ("InstanceId", idn.instance_id))
        node_totals = delta.port_totals()  # the daemon computed it already
        skip = self._unsupported
        totals: Dict[str, int] = {k: node_totals[k] for k in _EFA_NAMES
                                  if k in node_totals and k not in skip}
        totals.update(delta.device_totals(DEVICE_LEVEL))
        for ifstats in delta.net.values():
            for k, v in ifstats.items():
                if k in ENA_ALLOWANCE:
                    totals[k] = totals.get(k, 0) + v
        for name, v in totals.items():
            self._put(name, node, v, secs)
            if name in CLUSTER_METRICS:
                self._put(name, (("ClusterName", idn.cluster),), v, secs)
            if name in TYPE_METRICS and idn.instance_type:
                self._put(name, (("ClusterName", idn.cluster), ("InstanceType", idn.instance_type)),
                          v, secs)
        if self.per_device:
            # Columns rather than delta.devices: on the daemon's flat path that would build
            # every device's dictionaries each tick just for four counters.
            cols = [(name, delta.port_column(name)) for name in DEVICE_METRICS
                    if name not in self._unsupported]
            names = sorted(set().union(*(c for _, c in cols)))
            if len(names) > MAX_DEVICES:
                self.capped["devices"] += len(names) - MAX_DEVICES
                names = names[:MAX_DEVICES]
            for dev in names:
                dims: Tuple[Tuple[str, str], ...] = node + (("Device", dev),)
                for name, col in cols:
                    if dev in col:
                        self._put(name, dims, col[dev], secs)
        if self.job_metrics and tick.jobs:
            ids = sorted({j.job_id for j in tick.jobs})
            if len(ids) > MAX_JOBS:
                self.capped["jobs"] += len(ids) - MAX_JOBS
                ids = ids[:MAX_JOBS]
            for job_id in ids:
                dims = (("ClusterName", idn.cluster), ("JobId", job_id))
                for name in JOB_METRICS:
                    if name in totals:
                        self._put(name, dims, totals[name], secs)
