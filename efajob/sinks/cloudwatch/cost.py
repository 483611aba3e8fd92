"""What a CloudWatch config costs per month: metric count and list price (pure).

Prices (CloudWatch pricing page, US East (N. Virginia), standard tier, as of 2026; other
regions differ a little, check the page before committing to a budget):
- custom metrics, per metric-month, prorated by the hour (a metric costs for the hours in which
  it receives data): $0.30 for the first 10,000, $0.10 for the next 240,000, $0.05 for the
  next 750,000, $0.02 above 1,000,000;
- API requests (PutMetricData, PutLogEvents): $0.01 per 1,000;
- log ingestion (EMF job records): $0.50 per GB.
Not counted: dashboards ($3 per dashboard-month beyond the free 3), GetMetricData when a
dashboard is viewed, log storage, alarms.

Standard library only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from efajob.sinks.cloudwatch.emf import JOB_METRICS as EMF_JOB_METRICS
from efajob.sinks.cloudwatch.limits import (MAX_DATUMS_PER_REQUEST, MAX_REQUEST_BYTES,
                                            estimate_datum_bytes)
from efajob.sinks.cloudwatch.metrics import catalogue
from efajob.node.instances import lookup

HOURS_PER_MONTH = 730
METRIC_TIERS: Tuple[Tuple[Optional[int], float], ...] = (
    (10_000, 0.30), (240_000, 0.10), (750_000, 0.05), (None, 0.02))
API_PER_1000 = 0.01
LOGS_PER_GB = 0.50
EVENT_BYTES_PER_DEVICE = 120  # an EMF job-node event: ~2 KB + the compact per-device list
EVENT_BYTES_BASE = 2_500


def metric_month_cost(metric_months: float) -> float:
    """Tiered price of this many metric-months."""
    left, cost = metric_months, 0.0
    for size, price in METRIC_TIERS:
        take = left if size is None else min(left, size)
        cost += take * price
        left -= take
        if left <= 0:
            break
    return cost


@dataclass
class CostLine:
    what: str
    count: float  # metrics (metric-months), requests or GB
    unit: str
    note: str = ""


@dataclass
class CostEstimate:
    nodes: int
    instance_type: str
    period: int
    metric_lines: List[CostLine] = field(default_factory=list)
    other_lines: List[Tuple[CostLine, float]] = field(default_factory=list)

    @property
    def metrics(self) -> float:
        return sum(line.count for line in self.metric_lines)

    @property
    def metrics_cost(self) -> float:
        return metric_month_cost(self.metrics)

    @property
    def total(self) -> float:
        return self.metrics_cost + sum(c for _, c in self.other_lines)

    def to_dict(self) -> dict:
        return {
            "nodes": self.nodes, "instance_type": self.instance_type, "period": self.period,
            "metrics": {line.what: line.count for line in self.metric_lines},
            "metric_count": self.metrics, "metrics_usd": round(self.metrics_cost, 2),
            "other": {line.what: {"count": line.count, "unit": line.unit, "usd": round(c, 2)}
                      for line, c in self.other_lines},
            "total_usd": round(self.total, 2),
        }


def estimate_cost(cw, *, nodes: int, instance_type: str, jobs_per_month: int = 0,
                  job_hours: float = 4.0, nodes_per_job: int = 1) -> CostEstimate:
    """Monthly estimate for `nodes` nodes of `instance_type` under the [cloudwatch] config `cw`.
    JobId metrics (job_metrics) and EMF events scale with `jobs_per_month`."""
    it = lookup(instance_type)
    srd = it.srd_counters if it is not None else True
    devices = it.devices if it is not None else 0
    specs = catalogue(per_device=cw.per_device, job_metrics=cw.job_metrics, srd=srd,
                      rdma_write=it.rdma_write if it is not None else True)
    by_scope: Dict[str, int] = {}
    for s in specs:
        by_scope[s.scope] = by_scope.get(s.scope, 0) + 1
    est = CostEstimate(nodes=nodes, instance_type=instance_type, period=cw.period)
    node_n = by_scope.get("node", 0)
    est.metric_lines.append(CostLine(f"per node ({node_n} x {nodes})", node_n * nodes, "metrics",
                                     "5 of them ENA allowance, when the node reports them"))
    est.metric_lines.append(CostLine("per cluster", by_scope.get("cluster", 0), "metrics"))
    est.metric_lines.append(CostLine("per instance type", by_scope.get("type", 0), "metrics"))
    dev_n = by_scope.get("device", 0) * devices * nodes
    est.metric_lines.append(CostLine(
        f"per device ({by_scope.get('device', 0)} x {devices} devices x {nodes})" if cw.per_device
        else "per device (off)", dev_n, "metrics"))
    job_mm = 0.0
    if cw.job_metrics:
        job_mm = by_scope.get("job", 0) * jobs_per_month * job_hours / HOURS_PER_MONTH
    est.metric_lines.append(CostLine(
        f"JobId ({by_scope.get('job', 0)} per job x {jobs_per_month} jobs x {job_hours:g} h)"
        if cw.job_metrics else "JobId (off)", round(job_mm, 2), "metric-months"))
    est.metric_lines.append(CostLine("job records (EMF, ClusterName)", len(EMF_JOB_METRICS),
                                     "metrics", "only in hours when jobs end"))

    # PutMetricData requests: one per node per period unless the datums pass a limit.
    per_node_datums = node_n + by_scope.get("cluster", 0) + by_scope.get("type", 0) + \
        by_scope.get("device", 0) * devices
    sample = {"MetricName": "unresponsive_remote_events", "Timestamp": 0.0,
              "Dimensions": [{"Name": "ClusterName", "Value": "x" * 32},
                             {"Name": "InstanceId", "Value": "i-0123456789abcdef0"},
                             {"Name": "Device", "Value": "rdmap198s0"}],
              "StatisticValues": {"SampleCount": 60.0, "Sum": 1.234567891234e15,
                                  "Minimum": 1.23456789e13, "Maximum": 1.23456789e13},
              "Unit": "Bytes/Second", "StorageResolution": 60}
    per_request = max(1, min(MAX_DATUMS_PER_REQUEST,
                             (MAX_REQUEST_BYTES - 1024) // estimate_datum_bytes(sample)))
    requests_per_period = max(1, math.ceil(per_node_datums / per_request))
    periods = HOURS_PER_MONTH * 3600 / cw.period
    put_metric = nodes * periods * requests_per_period
    est.other_lines.append((CostLine(
        f"PutMetricData ({requests_per_period} per node per {cw.period} s)", round(put_metric),
        "requests"), put_metric / 1000 * API_PER_1000))
    if jobs_per_month:
        events = jobs_per_month * nodes_per_job
        est.other_lines.append((CostLine("PutLogEvents (one per job-node)", events, "requests"),
                                events / 1000 * API_PER_1000))
        gb = events * (EVENT_BYTES_BASE + EVENT_BYTES_PER_DEVICE * devices) / 1e9
        est.other_lines.append((CostLine("job records ingested", round(gb, 4), "GB"),
                                gb * LOGS_PER_GB))
    return est


def render_cost(est: CostEstimate) -> str:
    lines = [f"CloudWatch cost estimate: {est.nodes} x {est.instance_type}, one datum per metric "
             f"every {est.period} s",
             "(US East list prices; see docs/cloudwatch.md)", ""]
    lines.append(f"{'custom metrics':<52}{'count':>12}")
    for line in est.metric_lines:
        note = f"  ({line.note})" if line.note and line.count else ""
        lines.append(f"  {line.what:<50}{line.count:>12,g}{note}")
    lines.append(f"{'total custom metrics':<52}{est.metrics:>12,g}   ${est.metrics_cost:,.2f}/month")
    lines.append("")
    for line, usd in est.other_lines:
        lines.append(f"  {line.what:<50}{line.count:>12,g} {line.unit:<9}${usd:,.2f}/month")
    lines.append("")
    lines.append(f"{'estimated total':<52}{'':>12}   ${est.total:,.2f}/month")
    return "\n".join(lines) + "\n"
