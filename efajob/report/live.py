"""Live findings: a running node judged by its daemon's last minute (the node status file's
`recent`, efajob/daemon/recent.py), with the same rules and thresholds as a finished job's
records, so that "Healthy" never stands for "no data yet".

Pure. Each live node becomes a one-node report whose counters are the window's; the per-node
health rules (LIVE_CODES) run on it and their findings are kept with the window's length in
front of the message. Job-wide rules (EFA unused, stragglers, short job, ...) need the whole
job and are not run on a minute of one node.
"""
from __future__ import annotations

from dataclasses import replace
from typing import List, Mapping, Optional, Tuple

from efajob.report.findings import Finding, evaluate
from efajob.report.maths import sum_counters
from efajob.report.model import DeviceReport, JobMeta, JobReport, NodeReport, Overall

# The rules that judge one node from its own counters. Codes not (yet) registered are skipped.
LIVE_CODES = ("device_idle", "device_missing", "wr_errors", "device_errors", "rx_drops",
              "retransmits", "impaired_connections", "unresponsive_remote")


def window_node(host: str, recent, instance_type: Optional[str] = None,
                link_gbps: Optional[float] = None) -> NodeReport:
    """A store.reader.RecentCounters as a NodeReport with data (status "complete")."""
    devices = [DeviceReport(name=name, counters=dict(pc), device_counters=dict(dc))
               for name, (pc, dc) in sorted(recent.devices.items())]
    counters = dict(recent.counters) or sum_counters(d.counters for d in devices)
    return NodeReport(host=host, status="complete", complete=True, devices=devices,
                      counters=counters, instance_type=instance_type, link_gbps=link_gbps,
                      elapsed_s=recent.seconds, resets=list(recent.resets),
                      vanished_devices=list(recent.vanished),
                      appeared_devices=list(recent.appeared))


def node_findings(host: str, recent, thresholds: Mapping[str, float],
                  instance_type: Optional[str] = None) -> List[Finding]:
    """What the health rules say about one node's window, messages marked as live."""
    node = window_node(host, recent, instance_type)
    node.rank = 1
    report = JobReport(meta=JobMeta(job_id="0", cluster="live", num_nodes=1,
                                    instance_type=instance_type),
                       nodes=[node], overall=Overall(nodes_with_data=1))
    prefix = f"Live, last {recent.seconds:.0f} s: "
    # Only the per-node rules run: the job-wide ones (straggler, efa_unused, short_job...)
    # were most of a live judgement's time and their findings were dropped anyway.
    return [replace(f, message=prefix + f.message, live=True)
            for f in evaluate(report, thresholds, LIVE_CODES)]


def live_findings(windows: Mapping[str, Tuple[object, Optional[str]]],
                  thresholds: Mapping[str, float]) -> List[Finding]:
    """Findings of every running node with a window: {host: (RecentCounters, instance type)}."""
    out: List[Finding] = []
    for host, (recent, itype) in sorted(windows.items()):
        out.extend(node_findings(host, recent, thresholds, itype))
    return out
