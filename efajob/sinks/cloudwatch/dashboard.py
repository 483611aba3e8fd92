"""The CloudWatch dashboard body (pure), built from the sink's own catalogue.

Every metric a widget names carries the exact dimension set the sink publishes: explicit
`[namespace, name, dim, value, ...]` rows for the cluster-level sets (their values are known:
the cluster name), `SEARCH('{namespace,dims...} ...')` expressions for per-instance, per-type,
per-device and per-job sets (instances come and go). The seed's dashboard named no dimensions,
so every widget stayed empty; `check_dashboard()` refuses a body that names a metric the
catalogue does not publish, and tests compare the body with what moto actually received.

Body structure: CloudWatch API reference, "Dashboard Body Structure and Syntax" (24-unit grid,
<= 500 metrics per widget). Names: [A-Za-z0-9_-], <= 255 characters.

Standard library only.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from efajob.sinks.cloudwatch.emf import EMF_DIMENSIONS, JOB_METRICS as EMF_JOB_METRICS
from efajob.sinks.cloudwatch.metrics import (DEVICE, ENA_ALLOWANCE, ERROR_METRICS, JOB, NODE, TYPE,
                                             MetricSpec,
                                             catalogue)
from efajob.errors import SinkError

_NAME_BAD = re.compile(r"[^A-Za-z0-9_-]")
_SEARCH = re.compile(r"SEARCH\(\s*'\{([^}]*)\}(.*?)'\s*,\s*'(\w+)'")
_METRIC_NAME = re.compile(r'MetricName\s*=\s*"([^"]+)"')
_METRIC_NAMES = re.compile(r"MetricName\s*=\s*\(([^)]*)\)")
_DIM_VALUE = re.compile(r'(\w+)\s*=\s*"([^"]*)"')


def dashboard_name(cluster: str) -> str:
    return _NAME_BAD.sub("_", f"efajob-{cluster}")[:255]


@dataclass(frozen=True)
class MetricRef:
    """One metric (or metric family, for SEARCH) a widget reads."""

    widget: str
    namespace: str
    names: Tuple[str, ...]
    dimensions: Tuple[str, ...]  # dimension names, as a set in published order
    values: Tuple[Tuple[str, str], ...]  # dimension values fixed by the widget
    search: bool


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def search(namespace: str, dims: Sequence[str], names: Sequence[str], cluster: str,
           stat: str, period: int) -> str:
    schema = ",".join([_q(namespace)] + [_q(d) for d in dims])
    if len(names) == 1:
        name_term = f"MetricName={_q(names[0])}"
    else:
        name_term = "MetricName=(" + " OR ".join(_q(n) for n in names) + ")"
    return (f"SEARCH('{{{schema}}} {name_term} ClusterName={_q(cluster)}', "
            f"'{stat}', {period})")


class _Builder:
    def __init__(self, namespace: str, cluster: str, region: str, period: int):
        self.ns, self.cluster, self.region, self.period = namespace, cluster, region, period
        self.widgets: List[dict] = []
        self.x = self.y = self.row_h = 0

    def _place(self, width: int, height: int) -> Tuple[int, int]:
        if self.x + width > 24:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        pos = (self.x, self.y)
        self.x += width
        self.row_h = max(self.row_h, height)
        return pos

    def text(self, markdown: str, height: int = 4) -> None:
        x, y = self._place(24, height)
        self.widgets.append({"type": "text", "x": x, "y": y, "width": 24, "height": height,
                             "properties": {"markdown": markdown}})

    def metric(self, title: str, metrics: List[list], *, stat: str = "Sum", label: str = "",
               width: int = 12) -> None:
        x, y = self._place(width, 6)
        props: Dict[str, Any] = {"title": title, "view": "timeSeries", "stacked": False,
                                 "region": self.region, "period": self.period, "stat": stat,
                                 "metrics": metrics}
        if label:
            props["yAxis"] = {"left": {"label": label, "showUnits": False}}
        self.widgets.append({"type": "metric", "x": x, "y": y, "width": width, "height": 6,
                             "properties": props})

    def row(self, name: str, *, id: str, stat: str, visible: bool = True,
            label: Optional[str] = None) -> list:
        opts: Dict[str, Any] = {"id": id, "stat": stat}
        if not visible:
            opts["visible"] = False
        if label:
            opts["label"] = label
        return [self.ns, name, "ClusterName", self.cluster, opts]

    def expr(self, expression: str, id: str, label: str) -> list:
        return [{"expression": expression, "id": id, "label": label}]

    def search(self, dims: Sequence[str], names: Sequence[str], stat: str, id: str,
               label: str = "") -> list:
        return [{"expression": search(self.ns, dims, names, self.cluster, stat, self.period),
                 "id": id, "label": label}]


TEXT = """## EFA network: cluster {cluster} (efajob)
Published by the `efajob daemon` on every node ([cloudwatch] in /etc/efajob/config.toml).
Each datum covers one period of {period} s: **Sum** is what the counter moved (bytes, packets,
events), **Average** the mean rate per second, **Maximum** the highest per-tick (1 s) rate.
Metric names are the EFA driver's counter names. Dimensions: ClusterName (cluster totals),
ClusterName+InstanceId (per node), ClusterName+InstanceType. Job records are CloudWatch Logs
events in `{log_group}` (EMF): query them with Logs Insights (`filter JobId = "123"`), or run
`efajob report <jobid>` on the head node. Rx drops or SRD retransmits that persist point at
congestion, a bad peer or a security group that does not allow all traffic to itself."""


def build_dashboard(*, cluster: str, region: str, namespace: str = "EFAJob", period: int = 60,
                    per_device: bool = False, job_metrics: bool = False,
                    log_group: Optional[str] = None) -> dict:
    """The dashboard body (a dict; PutDashboard takes its JSON)."""
    p = max(60, period)  # the console shows 1-minute points at most for standard widgets
    b = _Builder(namespace, cluster, region, p)
    b.text(TEXT.format(cluster=cluster, period=period, log_group=log_group or f"/efajob/{cluster}"))
    b.metric("Cluster EFA throughput (Gb/s)", [
        b.row("tx_bytes", id="tx", stat="Sum", visible=False),
        b.row("rx_bytes", id="rx", stat="Sum", visible=False),
        b.expr("tx*8/PERIOD(tx)/1e9", "txg", "tx Gb/s"),
        b.expr("rx*8/PERIOD(rx)/1e9", "rxg", "rx Gb/s"),
    ], label="Gb/s")
    b.metric("Cluster EFA packets per second", [
        b.row("tx_pkts", id="tp", stat="Sum", visible=False),
        b.row("rx_pkts", id="rp", stat="Sum", visible=False),
        b.expr("tp/PERIOD(tp)", "tps", "tx packets/s"),
        b.expr("rp/PERIOD(rp)", "rps", "rx packets/s"),
    ], label="packets/s")
    for counter, what in (("tx_bytes", "tx"), ("rx_bytes", "rx")):
        b.metric(f"EFA {what} per instance (mean bytes/s)",
                 [b.search(NODE, [counter], "Average", f"{what}n")], stat="Average",
                 label="bytes/s")
    b.metric("EFA peak 1 s tx per instance (bytes/s)",
             [b.search(NODE, ["tx_bytes"], "Maximum", "pk")], stat="Maximum", label="bytes/s")
    b.metric("EFA packets per instance (mean packets/s)",
             [b.search(NODE, ["tx_pkts", "rx_pkts"], "Average", "pp")], stat="Average",
             label="packets/s")
    b.metric("EFA rx drops (per period)", [
        b.row("rx_drops", id="drops", stat="Sum", label="cluster"),
        b.search(NODE, ["rx_drops"], "Sum", "dn"),
    ])
    b.metric("SRD health: retransmits, impaired and unresponsive remotes (per period)", [
        b.row("retrans_pkts", id="rt", stat="Sum", label="cluster retrans_pkts"),
        b.search(NODE, ["retrans_pkts", "impaired_remote_conn_events",
                        "unresponsive_remote_events"], "Sum", "srd"),
    ])
    b.metric("EFA errors: RDMA work requests, admin commands (per period; not 0 is a finding)",
             [b.search(NODE, [n for n, _ in ERROR_METRICS], "Sum", "err")])
    b.metric("ENA allowance exceeded (per period, when the node reports it)",
             [b.search(NODE, list(ENA_ALLOWANCE), "Sum", "ena")])
    b.metric("EFA bytes by instance type (per period)",
             [b.search(TYPE, ["tx_bytes", "rx_bytes"], "Sum", "ty")])
    if per_device:
        b.metric("EFA tx per device (mean bytes/s)",
                 [b.search(DEVICE, ["tx_bytes"], "Average", "dv")], stat="Average",
                 label="bytes/s")
        b.metric("EFA rx drops and retransmits per device",
                 [b.search(DEVICE, ["rx_drops", "retrans_pkts"], "Sum", "dd")])
    if job_metrics:
        b.metric("EFA bytes per running job (per period)",
                 [b.search(JOB, ["tx_bytes", "rx_bytes"], "Sum", "jb")])
    b.metric("Finished job-nodes: bytes (job records, per period)", [
        b.row("job_tx_bytes", id="jt", stat="Sum", label="tx bytes"),
        b.row("job_rx_bytes", id="jr", stat="Sum", label="rx bytes"),
    ])
    b.metric("Finished job-nodes: peak Gb/s and drops (job records)", [
        b.row("job_peak_tx_gbps", id="jpt", stat="Maximum", label="peak tx Gb/s"),
        b.row("job_peak_rx_gbps", id="jpr", stat="Maximum", label="peak rx Gb/s"),
        b.row("job_rx_drops", id="jd", stat="Sum", label="rx drops"),
        b.row("job_retrans_pkts", id="jrt", stat="Sum", label="retrans pkts"),
    ])
    return {"start": "-PT3H", "periodOverride": "inherit", "widgets": b.widgets}


# -- checking ----------------------------------------------------------------------------
def metric_refs(body: dict) -> List[MetricRef]:
    """Every metric the widgets read: explicit rows and SEARCH expressions (math over ids
    reads nothing by itself)."""
    refs: List[MetricRef] = []
    for w in body.get("widgets", []):
        props = w.get("properties", {})
        title = props.get("title", w.get("type", ""))
        for row in props.get("metrics", []):
            if row and isinstance(row[0], dict):
                expr = row[0].get("expression", "")
                for m in _SEARCH.finditer(expr):
                    schema = [s.strip().strip('"') for s in m.group(1).split(",")]
                    terms = m.group(2)
                    group = _METRIC_NAMES.search(terms)
                    names = tuple(re.findall(r'"([^"]+)"', group.group(1)) if group
                                  else _METRIC_NAME.findall(terms))
                    rest = _METRIC_NAMES.sub("", terms)
                    values = tuple((k, v) for k, v in _DIM_VALUE.findall(rest) if k != "MetricName")
                    refs.append(MetricRef(title, schema[0], names, tuple(schema[1:]), values, True))
                continue
            parts = [x for x in row if not isinstance(x, dict)]
            ns, name, dims = parts[0], parts[1], parts[2:]
            pairs = tuple(zip(dims[0::2], dims[1::2]))
            refs.append(MetricRef(title, ns, (name,), tuple(k for k, _ in pairs), pairs, False))
    return refs


def published_specs(*, per_device: bool = False, job_metrics: bool = False) -> List[MetricSpec]:
    """The catalogue plus the EMF job metrics: everything a widget may name."""
    specs = catalogue(per_device=per_device, job_metrics=job_metrics)
    specs += [MetricSpec(n, u, tuple(EMF_DIMENSIONS[0]), "emf") for n, u, _ in EMF_JOB_METRICS]
    return specs


def check_dashboard(body: dict, specs: Sequence[MetricSpec], namespace: str) -> List[str]:
    """Problems: a widget metric whose (name, dimension set) is not published."""
    known = {(s.name, frozenset(s.dimensions)) for s in specs}
    problems = []
    for ref in metric_refs(body):
        if ref.namespace != namespace:
            problems.append(f"{ref.widget}: namespace {ref.namespace!r} is not {namespace!r}")
        if not ref.names:
            problems.append(f"{ref.widget}: no metric name")
        for n in ref.names:
            if (n, frozenset(ref.dimensions)) not in known:
                problems.append(f"{ref.widget}: {n} with dimensions {list(ref.dimensions)} "
                                "is not published")
    return problems


def validate_dashboard(body: dict, specs: Sequence[MetricSpec], namespace: str) -> None:
    problems = check_dashboard(body, specs, namespace)
    if problems:
        raise SinkError("dashboard names metrics the sink does not publish: " + "; ".join(problems))
