"""The job report model: job-node records (+ Slurm metadata, + live node status) -> JobReport.

Pure: no I/O, no clock (the caller passes `now`). Renderers (render_text/_json/_html/_csv.py)
turn a JobReport into a string. Rules that judge the job live in report/findings.py; this module
only measures.

Job numbers are SUMS over the job's nodes (a job moved what its nodes moved; averaging per node
was a real bug elsewhere, microsoft/pai#1933); per-node rates are shown beside them. A counter
no node reported is absent (None, "n/a"), never 0.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

from efajob.report.maths import add, max2, ratio

HEALTH_COUNTERS = ("rx_drops", "retrans_pkts", "retrans_bytes", "retrans_timeout_events",
                   "impaired_remote_conn_events", "unresponsive_remote_events")
# `ethtool -S` names of the ENA driver's allowance counters (the ENA "network performance
# metrics"); present in a record only when the hooks could read them.
ENA_ALLOWANCE = ("bw_in_allowance_exceeded", "bw_out_allowance_exceeded", "pps_allowance_exceeded",
                 "conntrack_allowance_exceeded", "linklocal_allowance_exceeded")
STATUSES = ("complete", "incomplete", "running", "missing")
# Where a link capacity came from: the per-type table (node/instances.py), or the devices'
# sysfs `ports/1/rate` (the record's own link rates, when the type is unknown).
LINK_SOURCES = {"instance_table": "instance-type table", "sysfs_rate": "ports/1/rate"}
# Slurm states in which a job still holds its nodes (slurm.ALIVE_STATES, without importing the
# adapter into the pure model).
ALIVE_STATES = frozenset(("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "STOPPED",
                    "RESIZING", "SIGNALING", "STAGE_OUT"))


class _Traffic:
    """Bytes sent and received, from the `counters` of a device or a node (absent stays None)."""

    counters: Mapping[str, int]  # a dict, or report/compact.py's Counters

    @property
    def tx_bytes(self) -> Optional[int]:
        return self.counters.get("tx_bytes")

    @property
    def rx_bytes(self) -> Optional[int]:
        return self.counters.get("rx_bytes")

    @property
    def traffic(self) -> Optional[int]:
        return add(self.tx_bytes, self.rx_bytes)


@dataclass
class DeviceReport(_Traffic):
    name: str
    link_gbps: Optional[float] = None
    counters: Mapping[str, int] = field(default_factory=dict)  # compact.Counters in a report
    device_counters: Mapping[str, int] = field(default_factory=dict)
    resets: List[str] = field(default_factory=list)
    peak_tx_gbps: Optional[float] = None
    peak_rx_gbps: Optional[float] = None
    peak_above_link: bool = False  # its peak is faster than its link: not a measurement


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
    appeared_devices: List[str] = field(default_factory=list)
    source: Optional[str] = None  # "epilog" | "reconcile"
    daemon_samples: Optional[int] = None
    exit_code: Optional[str] = None
    series: Dict[str, Any] = field(default_factory=dict)
    live_tx_gbps: Optional[float] = None  # running: the node status file's current rates
    live_rx_gbps: Optional[float] = None
    live_age_s: Optional[float] = None
    live_window_s: Optional[float] = None  # running: the daemon's last-minute window, if any
    rank: int = 0
    marks: List[str] = field(default_factory=list)  # finding codes that name this node
    expected_devices: Optional[int] = None  # EFA devices the instance type has
    link_source: Optional[str] = None  # LINK_SOURCES: where link_gbps came from
    # Port counters this instance type cannot count (they read 0 there): name -> why. They are
    # left out of `counters` and the devices' counters, so they read "not supported", not 0.
    unsupported: Dict[str, str] = field(default_factory=dict)
    # Series points (indices) and peaks faster than the node's links can carry: not facts.
    above_link: List[int] = field(default_factory=list)
    peak_above_link: bool = False

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
        return ratio(max2(self.avg_tx_gbps, self.avg_rx_gbps), self.link_gbps)

    @property
    def util_peak(self) -> Optional[float]:
        return ratio(max2(self.peak_tx_gbps, self.peak_rx_gbps), self.link_gbps)


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
    link_source: Optional[str] = None  # LINK_SOURCES key of the nodes' link rate
    unsupported: Dict[str, str] = field(default_factory=dict)  # as NodeReport.unsupported
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


def without_owner(r: JobReport) -> JobReport:
    """The report with its job's name, user, account and partition left out."""
    from dataclasses import replace

    return replace(r, meta=replace(r.meta, name=None, user=None, account=None, partition=None))
