"""CloudWatch alarms on the cluster-level metrics the sink publishes (`efajob cloudwatch
alarms`), and what they cost (pure).

Only the ClusterName dimension set is alarmed: it exists whatever nodes come and go, so one
alarm watches the whole cluster and the count (and price) does not grow with the fleet. The
per-node metrics (error counters, SRD connection events) would need one alarm per instance,
created and deleted as ParallelCluster's dynamic nodes start and stop; the conditions that
need a node or a job (a device missing, a stale daemon, EFA unused by a job) are not in
CloudWatch's metrics at all by default. Those stay with the Prometheus rules
(slurm/prometheus/efajob-rules.yml) and the reports.

Thresholds are the config's `[thresholds]` (the report's and the Prometheus rules' numbers).
`Sum` of a published metric is the counter's increase over the period (metrics.py), so the
ratios below are exact packet ratios, not ratios of averages.

Price (list price, US East, standard resolution): $0.10 per alarm metric per month, so an
alarm on a metric-math expression over two metrics costs $0.20 (the CloudWatch pricing page,
"Alarms"; see docs/cloudwatch.md).
"""
from __future__ import annotations

from typing import List, Mapping, Optional, Sequence

from efajob.sinks.cloudwatch.metrics import CLUSTER

PERIOD = 300  # seconds: standard resolution, and at most a 5-minute delay
USD_PER_ALARM_METRIC_MONTH = 0.10  # standard resolution (60 s period or more)
ALARM_PREFIX = "efajob-"


def _metric(namespace: str, cluster: str, name: str) -> dict:
    # Only what the sink publishes per cluster (CLUSTER_METRICS; a test checks it).
    return {"Namespace": namespace, "MetricName": name,
            "Dimensions": [{"Name": CLUSTER[0], "Value": cluster}]}


def _ratio(namespace: str, cluster: str, top: str, bottom: str, period: int, label: str) -> list:
    return [
        {"Id": "num", "ReturnData": False,
         "MetricStat": {"Metric": _metric(namespace, cluster, top), "Period": period,
                        "Stat": "Sum"}},
        {"Id": "den", "ReturnData": False,
         "MetricStat": {"Metric": _metric(namespace, cluster, bottom), "Period": period,
                        "Stat": "Sum"}},
        {"Id": "ratio", "Expression": "num / den", "Label": label, "ReturnData": True},
    ]


def build_alarms(*, cluster: str, namespace: str, thresholds: Mapping[str, float],
                 actions: Sequence[str] = (), period: int = PERIOD) -> List[dict]:
    """PutMetricAlarm arguments, one dict per alarm (names `efajob-<cluster>-...`)."""
    common = {"ActionsEnabled": bool(actions), "AlarmActions": list(actions),
              "TreatMissingData": "notBreaching",  # no traffic published is not a fault
              "ComparisonOperator": "GreaterThanThreshold", "DatapointsToAlarm": 1}
    name = f"{ALARM_PREFIX}{cluster}"
    out = [
        dict(common, AlarmName=f"{name}-rx-drops", EvaluationPeriods=1, Threshold=0.0,
             AlarmDescription="efajob: EFA packets dropped on receive somewhere in cluster "
             f"{cluster} in the last {period // 60} min (rx_drops)",
             Statistic="Sum", Period=period, **_metric(namespace, cluster, "rx_drops")),
        dict(common, AlarmName=f"{name}-rx-drops-high", EvaluationPeriods=1,
             Threshold=float(thresholds["rx_drops_critical_ratio"]),
             AlarmDescription="efajob: share of EFA packets received that were dropped "
             f"(rx_drops / rx_pkts) above {thresholds['rx_drops_critical_ratio']:g}",
             Metrics=_ratio(namespace, cluster, "rx_drops", "rx_pkts", period, "drop ratio")),
        dict(common, AlarmName=f"{name}-retransmits", EvaluationPeriods=2, DatapointsToAlarm=2,
             Threshold=float(thresholds["retrans_ratio_warning"]),
             AlarmDescription="efajob: SRD retransmitted share of EFA packets sent "
             f"(retrans_pkts / tx_pkts) above {thresholds['retrans_ratio_warning']:g} for "
             f"{2 * period // 60} min (Nitro v4 and later)",
             Metrics=_ratio(namespace, cluster, "retrans_pkts", "tx_pkts", period,
                            "retransmit ratio")),
        dict(common, AlarmName=f"{name}-retransmits-high", EvaluationPeriods=1,
             Threshold=float(thresholds["retrans_ratio_critical"]),
             AlarmDescription="efajob: SRD retransmitted share of EFA packets sent above "
             f"{thresholds['retrans_ratio_critical']:g}",
             Metrics=_ratio(namespace, cluster, "retrans_pkts", "tx_pkts", period,
                            "retransmit ratio")),
    ]
    if not actions:
        for a in out:
            del a["AlarmActions"]
    return out


def alarm_metric_count(alarm: Mapping) -> int:
    """Metrics an alarm is billed for: one, or each metric a math expression reads."""
    metrics: Optional[list] = alarm.get("Metrics")
    if not metrics:
        return 1
    return sum(1 for m in metrics if "MetricStat" in m)


def monthly_cost(alarms: Sequence[Mapping]) -> float:
    return round(sum(alarm_metric_count(a) for a in alarms) * USD_PER_ALARM_METRIC_MONTH, 2)


def render_cost(alarms: Sequence[Mapping]) -> str:
    n = sum(alarm_metric_count(a) for a in alarms)
    return (f"{len(alarms)} alarms on {n} alarm metrics (standard resolution): "
            f"${monthly_cost(alarms):.2f}/month at ${USD_PER_ALARM_METRIC_MONTH:.2f} per "
            "alarm metric (US East list price; docs/cloudwatch.md)\n")
