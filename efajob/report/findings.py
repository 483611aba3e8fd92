"""Findings: data-driven rules that judge a job report, with plain advice, and the verdict.

Each rule is a pure function `(report, thresholds) -> [Finding]` registered under its code in
RULES (in the order they are shown). Thresholds are numbers from the config's `[thresholds]`
table (defaults: config.DEFAULT_THRESHOLDS, documented in docs/report.md); nothing is eval'd.
A rule that lacks the counters it needs says nothing: absent is not zero, and the health
section shows "n/a" for it.

Verdict (DCGM's "Overall Health"): any critical finding -> Failure; any warning -> Warning;
otherwise Healthy. A running job is never "Healthy": its verdict says "Running" and what its
nodes' daemons saw in the last minute (running_verdict; live findings: report/live.py).
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Dict, Iterable, List, Mapping, Optional

from efajob.node.counters import is_device_error, is_wr_error
from efajob.report.compact import any_nonzero, columns, nonzero, values_of
from efajob.report.counternotes import DEVICE_ERROR_MEANINGS, reset_devices, reset_note, wr_kind
from efajob.report.maths import add, max2, ratio
from efajob.report.model import ENA_ALLOWANCE, LINK_SOURCES
from efajob.fmt import fmt_bytes, fmt_count, fmt_duration, fmt_gbps, fmt_pct

if TYPE_CHECKING:  # pragma: no cover
    from efajob.report.model import JobReport

SEVERITIES = ("critical", "warning", "info")
VERDICTS = {"critical": "Failure", "warning": "Warning"}


@dataclass(frozen=True)
class Finding:
    code: str
    severity: str  # critical | warning | info
    message: str  # what we saw, with the numbers
    advice: str = ""  # what to do about it
    host: Optional[str] = None
    device: Optional[str] = None
    live: bool = False  # from a running node's last minute (report/live.py), not a record

    def to_dict(self) -> dict:
        d: Dict[str, object] = {"code": self.code, "severity": self.severity}
        if self.host is not None:
            d["host"] = self.host
        if self.device is not None:
            d["device"] = self.device
        d["message"] = self.message
        if self.advice:
            d["advice"] = self.advice
        if self.live:
            d["live"] = True
        return d


Rule = Callable[["JobReport", Mapping[str, float]], List[Finding]]
RULES: Dict[str, Rule] = {}


def rule(code: str) -> Callable[[Rule], Rule]:
    def register(fn: Rule) -> Rule:
        RULES[code] = fn
        return fn
    return register


def evaluate(report: "JobReport", thresholds: Mapping[str, float],
             codes: Optional[Iterable[str]] = None) -> List[Finding]:
    """Every rule's findings (or those of the rules named in `codes`: a rule's findings carry
    its code): critical first, then warnings, then info; within a severity in rule order, then
    in the report's node ranking."""
    wanted = None if codes is None else set(codes)
    out: List[Finding] = []
    for code, fn in RULES.items():
        if wanted is None or code in wanted:
            out.extend(fn(report, thresholds))
    return sort_findings(out, report)


def sort_findings(findings: List[Finding], report: "JobReport") -> List[Finding]:
    rank = {n.host: n.rank for n in report.nodes}
    order = {code: i for i, code in enumerate(RULES)}
    return sorted(findings, key=lambda f: (SEVERITIES.index(f.severity), order[f.code],
                                           rank.get(f.host or "", 0), f.device or ""))


def verdict(findings: List[Finding]) -> str:
    for sev in ("critical", "warning"):
        if any(f.severity == sev for f in findings):
            return VERDICTS[sev]
    return "Healthy"


RUNNING_PROBLEMS_LIVE = "Running: problems seen live"
RUNNING_PROBLEMS = "Running: problems seen"  # in the records of nodes already done
RUNNING_CLEAN = "Running: no problem seen in the last minute"
RUNNING_PARTIAL = "Running: no problem seen, some nodes not judged yet"
RUNNING_NO_DATA = "Running: not judged yet (no live window)"
# The colour (text) and badge class (HTML, dashboard) of each verdict.
_TONES = {RUNNING_PROBLEMS_LIVE: "Warning", RUNNING_PROBLEMS: "Warning", RUNNING_CLEAN: "Healthy",
          RUNNING_PARTIAL: "unknown", RUNNING_NO_DATA: "unknown"}


def running_verdict(findings: List[Finding], running_nodes: int, live_nodes: int) -> str:
    """A running job's verdict: `running_nodes` without a record yet, `live_nodes` of them
    with a last-minute window in their daemon's status file."""
    problems = [f for f in findings if f.severity != "info"]
    if any(f.live for f in problems):
        return RUNNING_PROBLEMS_LIVE
    if problems:
        return RUNNING_PROBLEMS
    if running_nodes and live_nodes == running_nodes:
        return RUNNING_CLEAN
    return RUNNING_PARTIAL if live_nodes else RUNNING_NO_DATA


_SHORT = {RUNNING_PROBLEMS_LIVE: "Running: problems", RUNNING_PROBLEMS: "Running: problems",
          RUNNING_CLEAN: "Running: no problem", RUNNING_PARTIAL: "Running: partial",
          RUNNING_NO_DATA: "Running: not judged"}


def short_verdict(v: object) -> str:
    """The verdict in a job list's column (`efajob jobs`): a running job's, shortened."""
    return _SHORT.get(str(v), str(v))


def verdict_tone(v: object) -> str:
    """Healthy, Warning, Failure or unknown: how a verdict is coloured."""
    if v in ("Healthy", "Warning", "Failure"):
        return str(v)
    return _TONES.get(str(v), "unknown")


def _multi_node(report: "JobReport") -> bool:
    return (report.meta.num_nodes or 0) > 1 or len(report.nodes) > 1


_NCCL_CHECKS = (
    "Check that the job sets FI_PROVIDER=efa, that NCCL finds the aws-ofi-nccl plugin "
    "(libnccl-net.so on LD_LIBRARY_PATH, or NCCL_NET_PLUGIN), and run once with "
    "NCCL_DEBUG=INFO: the log must say \"Selected Provider is efa\", not tcp or sockets. "
    "`fi_info -p efa` on a node must list the EFA devices.")


# -- rules, in display order ------------------------------------------------------------------
@rule("efa_unused")
def efa_unused(report: "JobReport", th: Mapping[str, float]) -> List[Finding]:
    nodes = [n for n in report.data_nodes if n.traffic is not None]
    if not _multi_node(report) or not nodes or report.running:
        return []
    per_node = sum(n.traffic or 0 for n in nodes) / len(nodes)  # (no None: filtered above)
    if per_node >= th["efa_unused_bytes_per_node"]:
        return []
    ena_nodes = [n for n in nodes if "tx_bytes" in n.ena or "rx_bytes" in n.ena]
    ena = (sum(n.ena.get("tx_bytes", 0) + n.ena.get("rx_bytes", 0) for n in ena_nodes)
           / len(ena_nodes)) if ena_nodes else None
    what = (f"The job ran on {report.meta.num_nodes or len(report.nodes)} nodes but moved only "
            f"{fmt_bytes(per_node)} per node over EFA")
    if ena is not None and ena >= th["ena_fallback_bytes_per_node"]:
        return [Finding("efa_unused", "critical",
                        f"{what}, while the ENA (TCP/IP) interfaces moved {fmt_bytes(ena)} per node: "
                        "NCCL or MPI most likely fell back to sockets, at a fraction of EFA's bandwidth.",
                        _NCCL_CHECKS)]
    tail = ("" if ena is not None else " (ENA traffic was not recorded)")
    return [Finding("efa_unused", "warning",
                    f"{what}{tail}. If the nodes were meant to communicate, they did not use EFA.",
                    _NCCL_CHECKS)]


@rule("straggler_node")
def straggler_node(report: "JobReport", th: Mapping[str, float]) -> List[Finding]:
    nodes = [(n, t) for n, t in ((n, n.traffic) for n in report.data_nodes) if t is not None]
    if len(nodes) < 2:
        return []
    median = statistics.median(t for _, t in nodes)
    if median < th["efa_unused_bytes_per_node"]:
        return []  # nobody moved much: efa_unused speaks, not this
    out = []
    for n, traffic in nodes:
        if traffic < th["straggler_ratio"] * median:
            out.append(Finding(
                "straggler_node", "warning",
                f"{n.host} moved {fmt_bytes(traffic)}, {fmt_pct(traffic / median)} of the median "
                f"node ({fmt_bytes(median)}): in collective operations every node waits for the "
                "slowest.",
                "Look at this node's EFA devices (device findings, `efajob devices` on it), its GPUs "
                "(`nvidia-smi`, `dcgmi diag -r 2`) and whatever else ran on it; drain it if it "
                "stays slow.", host=n.host))
    return out


@rule("device_missing")
def device_missing(report: "JobReport", th: Mapping[str, float]) -> List[Finding]:
    out = []
    for n in report.data_nodes:
        if n.expected_devices is None:
            continue
        seen = {d.name for d in n.devices} | set(n.vanished_devices) | set(n.appeared_devices)
        if not seen or len(seen) >= n.expected_devices:
            continue  # no device at all: a record without counters, `incomplete` speaks
        kind = n.instance_type or "its instance type"
        out.append(Finding(
            "device_missing", "critical",
            f"{n.host} had {len(seen)} of the {n.expected_devices} EFA devices {kind} has: "
            + ("1 never showed up, and the job ran without its bandwidth."
               if n.expected_devices - len(seen) == 1 else
               f"{n.expected_devices - len(seen)} never showed up, and the job ran without "
               "their bandwidth."),
            "`efajob devices` and `fi_info -p efa` on the node list what the driver found; "
            "`dmesg` shows probe errors (some types, p5en among them, probe devices late after "
            "boot). A device that never appears is an instance fault: drain the node and "
            "replace the instance.", host=n.host))
    return out


@rule("device_idle")
def device_idle(report: "JobReport", th: Mapping[str, float]) -> List[Finding]:
    out = []
    for n in report.data_nodes:
        for name in n.vanished_devices:
            out.append(Finding(
                "device_idle", "critical",
                f"{name} on {n.host} disappeared during the job (driver unbind or a device fault): "
                "its traffic is missing from the totals.",
                "Check `dmesg` on the node for efa errors; drain the node and replace the instance "
                "if the device does not come back.", host=n.host, device=name))
        for name in n.appeared_devices:
            out.append(Finding(
                "device_idle", "warning",
                f"{name} on {n.host} appeared during the job (absent when it started: a driver "
                "reload or a device slow to probe): its traffic is not in the totals.",
                "Check `dmesg` on the node for efa resets or probe errors; a device that comes "
                "and goes is worth draining the node for.", host=n.host, device=name))
        ports = [d.counters for d in n.devices]  # d.traffic, for all devices at once
        devs = [(d, t) for d, t in zip(n.devices, map(add, values_of(ports, "tx_bytes"),
                                                     values_of(ports, "rx_bytes")))
                if t is not None]
        if len(devs) < 2 or (n.traffic or 0) < th["efa_unused_bytes_per_node"]:
            continue
        # The LOW median: idle devices must be a strict minority. A job that uses 4 of 8 GPUs
        # (and so 4 of 8 devices) is not flagged.
        ref = statistics.median_low(t for _, t in devs)
        if ref <= 0:
            continue
        for d, traffic in devs:
            if traffic < th["device_idle_ratio"] * ref:
                dead = traffic == 0
                out.append(Finding(
                    "device_idle", "critical" if dead else "warning",
                    f"{d.name} on {n.host} moved {'nothing' if dead else fmt_bytes(traffic)} while "
                    f"its {len(devs) - 1} siblings moved {fmt_bytes(ref)} each (median): "
                    + ("the device looks dead." if dead else "it carried far less than its share."),
                    "Check `dmesg` on the node for efa errors and this device's error counters "
                    "(`efajob snapshot` on the node; findings wr_errors, device_errors). Its port state cannot "
                    "tell: the EFA driver always reports ACTIVE. NCCL spreads traffic over every "
                    "device it can use: a device it cannot use costs the node that share of its "
                    "bandwidth. Drain and replace the instance if the device stays idle.",
                    host=n.host, device=d.name))
    return out


@rule("wr_errors")
def wr_errors(report: "JobReport", th: Mapping[str, float]) -> List[Finding]:
    out = []
    for n in report.data_nodes:
        if not any_nonzero([d.counters for d in n.devices], is_wr_error):
            continue  # the usual node, told at C speed
        for d in n.devices:
            errs = nonzero(d.counters, is_wr_error)
            total = sum(errs.values())
            if not errs or total < th["wr_errors"]:
                continue
            # rdma_read_wr_err counts failed rdma_read_wrs: the share of failed requests.
            shares = [ratio(v, d.counters.get(k[:-len("_wr_err")] + "_wrs"))
                      for k, v in errs.items()]
            crit = any(r is not None and r > th["wr_errors_critical_ratio"] for r in shares) or \
                any(d.counters.get(k[:-len("_wr_err")] + "_wrs") == 0 for k in errs)
            listed = ", ".join(f"{k} {fmt_count(v)}" for k, v in sorted(errs.items()))
            kinds = " and ".join(f"{fmt_count(v)} {wr_kind(k)}" for k, v in sorted(errs.items()))
            out.append(Finding(
                "wr_errors", "critical" if crit else "warning",
                f"{d.name} on {n.host} completed {kinds} work requests in error ({listed})."
                + reset_note([d.name] if d.name in reset_devices(n, errs) else []),
                "The device counts an RDMA work request that completed with an error status "
                "(the driver passes the device's count through unchanged): the application "
                "(NCCL through aws-ofi-nccl, or MPI through libfabric) saw those errors, "
                "typically a peer's memory region that was deregistered or never registered "
                "(GPUDirect/dma-buf setup), a peer process that died, or an unreachable peer. "
                "Look in the job's log (NCCL_DEBUG=WARN, FI_LOG_LEVEL=warn); errors on one "
                "device point at it or its peers, errors on every node at the software stack.",
                host=n.host, device=d.name))
    return out


@rule("device_errors")
def device_errors(report: "JobReport", th: Mapping[str, float]) -> List[Finding]:
    out = []
    for n in report.data_nodes:
        if not any_nonzero([d.device_counters for d in n.devices], is_device_error):
            continue
        for d in n.devices:
            errs = nonzero(d.device_counters, is_device_error)
            if not errs or sum(errs.values()) < th["device_errors"]:
                continue
            order = list(DEVICE_ERROR_MEANINGS)
            names = sorted(errs, key=lambda k: (order.index(k) if k in order else len(order), k))
            listed = ", ".join(f"{k} {fmt_count(errs[k])}" for k in names)
            dead = "no_completion_cmds" in errs
            meaning = "; ".join(f"{k}: {DEVICE_ERROR_MEANINGS.get(k, 'failed driver operations of that kind')}"
                                for k in names)
            resets = reset_devices(n, errs, device=True)
            out.append(Finding(
                "device_errors", "critical" if dead else "warning",
                f"{d.name} on {n.host} counted driver errors during the job ({listed})"
                + (": the device stopped answering admin commands." if dead else ".")
                + reset_note([d.name] if d.name in resets else []),
                f"{meaning[0].upper()}{meaning[1:]}. "
                + ("A device that stops completing admin commands is unusable until the driver "
                   "is reloaded: drain the node, check `dmesg` for efa admin-queue errors and "
                   "replace the instance if it recurs." if dead else
                   "Verbs errors come from the job's processes (libfabric, NCCL): check the "
                   "job's log and the node's limits (`ulimit -l` unlimited for memory "
                   "registration), and `dmesg` for efa errors."),
                host=n.host, device=d.name))
    return out


@rule("rx_drops")
def rx_drops(report: "JobReport", th: Mapping[str, float]) -> List[Finding]:
    out = []
    for n in report.data_nodes:
        drops = n.rx_drops
        if drops is None or drops < th["rx_drops"] or drops == 0:
            continue
        pkts = n.counters.get("rx_pkts")
        ratio = drops / pkts if pkts else None
        crit = ratio is not None and ratio > th["rx_drops_critical_ratio"]
        share = f" ({fmt_pct(ratio, 3)} of {fmt_count(pkts)} received)" if ratio is not None else ""
        out.append(Finding(
            "rx_drops", "critical" if crit else "warning",
            f"{n.host} dropped {fmt_count(drops)} received packets{share}."
            + reset_note(reset_devices(n, ("rx_drops",))),
            "EFA drops what the receiver cannot take in (full queues) or what a congested fabric "
            "delivers late; SRD resends it at a cost in bandwidth. Drops on one node point at "
            "that node (CPU or PCIe pressure, another job); on every node, at congestion.",
            host=n.host))
    return out


@rule("retransmits")
def retransmits(report: "JobReport", th: Mapping[str, float]) -> List[Finding]:
    out = []
    for n in report.data_nodes:
        rp = n.retrans_pkts
        if not rp:
            continue
        tx = n.counters.get("tx_pkts")
        ratio = rp / tx if tx else None
        if ratio is not None and ratio < th["retrans_ratio_warning"]:
            continue
        crit = ratio is not None and ratio >= th["retrans_ratio_critical"]
        timeouts = n.counters.get("retrans_timeout_events")
        extra = f"; {fmt_count(timeouts)} retransmit timeouts" if timeouts else ""
        share = f" ({fmt_pct(ratio, 3)} of {fmt_count(tx)} sent{extra})" if ratio is not None else ""
        out.append(Finding(
            "retransmits", "critical" if crit else "warning",
            f"{n.host} retransmitted {fmt_count(rp)} packets{share}."
            + reset_note(reset_devices(n, ("retrans_pkts",))),
            "SRD resends lost packets transparently, but many resends cost bandwidth: congestion, "
            "a bad link or a struggling peer. One node standing out points at it; all nodes, at "
            "placement (use a cluster placement group) or the fabric.", host=n.host))
    return out


def _count_rule(report: "JobReport", counter: str, threshold: float, code: str,
                message: str, advice: str) -> List[Finding]:
    """A warning for every node whose `counter` reached `threshold` (`message` is formatted
    with the node's `host` and the `count`)."""
    out = []
    for n in report.data_nodes:
        v = n.counters.get(counter)
        if v and v >= threshold:
            out.append(Finding(code, "warning", message.format(host=n.host, count=fmt_count(v))
                               + reset_note(reset_devices(n, (counter,))), advice, host=n.host))
    return out


@rule("impaired_connections")
def impaired_connections(report: "JobReport", th: Mapping[str, float]) -> List[Finding]:
    return _count_rule(
        report, "impaired_remote_conn_events", th["impaired_events"], "impaired_connections",
        "{host} saw {count} impaired remote connection events: SRD found the path to some "
        "peers lossy or slow.",
        "If other nodes report the same, the common peer is the suspect: compare the "
        "per-node health columns.")


@rule("unresponsive_remote")
def unresponsive_remote(report: "JobReport", th: Mapping[str, float]) -> List[Finding]:
    return _count_rule(
        report, "unresponsive_remote_events", th["unresponsive_events"], "unresponsive_remote",
        "{host} saw {count} unresponsive remote events: peers stopped answering.",
        "A peer node or process died, or the security group does not allow all traffic "
        "within itself (EFA needs an inbound AND an outbound rule allowing all traffic "
        "to and from the same security group).")


@rule("ena_allowance_exceeded")
def ena_allowance_exceeded(report: "JobReport", th: Mapping[str, float]) -> List[Finding]:
    out = []
    for n in report.data_nodes:
        hits = {k: n.ena[k] for k in ENA_ALLOWANCE if n.ena.get(k)}
        if sum(hits.values()) >= th["ena_allowance_events"] and hits:
            listed = ", ".join(f"{k} {fmt_count(v)}" for k, v in hits.items())
            out.append(Finding(
                "ena_allowance_exceeded", "warning",
                f"{n.host}'s ENA interface went over its instance allowances ({listed}): packets "
                "were queued or dropped.",
                "Usually checkpoint or dataset traffic (FSx, S3) at the same time as training: "
                "spread it out, or keep it off the critical path.", host=n.host))
    return out


@rule("shared_node")
def shared_node(report: "JobReport", th: Mapping[str, float]) -> List[Finding]:
    out = []
    for n in report.data_nodes:
        if n.shared:
            jobs = ", ".join(n.shared[:8]) + (f" (+{len(n.shared) - 8})" if len(n.shared) > 8 else "")
            out.append(Finding(
                "shared_node", "info",
                f"{n.host} also ran job(s) {jobs} during this job: EFA counters are per device, "
                "not per job, so its numbers include their traffic.",
                "For exact per-job numbers run multi-node jobs with --exclusive.", host=n.host))
    return out


@rule("counter_reset")
def counter_reset(report: "JobReport", th: Mapping[str, float]) -> List[Finding]:
    out = []
    for n in report.data_nodes:
        if n.resets:
            devs = sorted({r.split("/", 1)[0] for r in n.resets})
            out.append(Finding(
                "counter_reset", "warning",
                f"Counters went down during the job on {n.host} ({', '.join(devs)}): a device reset "
                "or driver reload. Its totals count only what happened after the reset.",
                "Check `dmesg` on the node for efa or ena resets.", host=n.host))
    return out


@rule("rate_above_link")
def rate_above_link(report: "JobReport", th: Mapping[str, float]) -> List[Finding]:
    out = []
    for n in report.data_nodes:
        devs = [d for d in n.devices if d.peak_above_link]
        if not n.above_link and not n.peak_above_link and not devs:
            continue
        cols = columns(n.series.get("tx_gbps"), n.series.get("rx_gbps"))
        points = max((len(c) for c in cols), default=0)
        peak = max((v for v in (n.peak_tx_gbps, n.peak_rx_gbps) if v is not None), default=0.0)
        where = LINK_SOURCES.get(n.link_source or "", "the record")
        if n.above_link or n.peak_above_link:
            what = (f"{len(n.above_link)} of {points} points of its time series" if n.above_link
                    else "its peak rate")
            seen = (f"{what} read faster than its links can carry (highest {fmt_gbps(peak)} Gbps "
                    f"against {fmt_gbps(n.link_gbps)} Gbps from the {where})")
        else:
            d0 = max(devs, key=lambda d: max2(d.peak_tx_gbps, d.peak_rx_gbps) or 0.0)
            seen = (f"the peaks of {len(devs)} device(s) read faster than their links can carry "
                    f"(highest {d0.name}, {fmt_gbps(max2(d0.peak_tx_gbps, d0.peak_rx_gbps))} "
                    f"Gbps against {fmt_gbps(d0.link_gbps)} Gbps)")
        out.append(Finding(
            "rate_above_link", "warning",
            f"{n.host}: {seen}: such samples are not measurements, and the peaks and peak "
            "utilisation built on them are marked '?'.",
            "Totals and averages come from the start and end snapshots and stay exact. A sample "
            "reads too fast when the daemon read counters late and the delta covers more time "
            "than its interval (`efajob status` shows skipped ticks), or when the link rate is "
            "wrong (check the instance type in the config or IMDS).", host=n.host))
    return out


_REASONS = {
    "no_prolog": "the prolog did not run: counted from the daemon's samples only",
    "no_prolog_no_samples": ("no prolog ran, so nothing recorded the job's start (the daemon learns of a job "
                             "from the prolog's run-dir file): no counters"),
    "no_start_snapshot": "no start snapshot: counted from the daemon's samples only",
    "no_epilog": "the epilog never ran (node crash, slurmd restart): counted up to the daemon's last sample",
    "no_end_snapshot": "no end snapshot: counted up to the daemon's last sample",
    "device_vanished": "a device vanished during the job",
    "device_appeared": "a device appeared during the job: its traffic is not counted",
}


@rule("incomplete")
def incomplete(report: "JobReport", th: Mapping[str, float]) -> List[Finding]:
    out = []
    if report.running:
        live = sum(1 for n in report.nodes if n.status == "running" and n.live_age_s is not None)
        out.append(Finding(
            "incomplete", "info",
            f"The job is still running ({live} node(s) live, {len(report.data_nodes)} record(s) so "
            "far): numbers are partial.",
            "Run the report again after the job ends for exact totals."))
    for n in report.nodes:
        if n.status == "incomplete":
            why = "; ".join(_REASONS.get(r, r) for r in n.incomplete_reasons) or "flagged incomplete"
            if n.source == "reconcile" and "no_epilog" not in n.incomplete_reasons:
                why += " (record made by the daemon's reconciliation)"
            out.append(Finding("incomplete", "warning", f"The record of {n.host} is incomplete: {why}.",
                               "Numbers of this node may be low. See docs/records.md.", host=n.host))
    missing = [n.host for n in report.nodes if n.status == "missing"]
    if missing:
        shown = ", ".join(missing[:10]) + (f" (+{len(missing) - 10})" if len(missing) > 10 else "")
        out.append(Finding(
            "incomplete", "warning",
            f"No record from {len(missing)} of {len(report.nodes)} nodes ({shown}): the totals leave "
            "them out.",
            "Their records may still wait in those nodes' outboxes (daemon stopped, store "
            "unwritable): `efajob status` on a node shows its outbox."))
    for path, why in report.skipped:
        out.append(Finding("incomplete", "warning", f"Skipped record file {path}: {why}.",
                           "The node's numbers are missing from the totals."))
    return out


@rule("short_job")
def short_job(report: "JobReport", th: Mapping[str, float]) -> List[Finding]:
    e = report.meta.elapsed_s
    if e is None or report.running or e >= th["short_job_seconds"]:
        return []
    return [Finding("short_job", "info",
                    f"The job ran for only {fmt_duration(e)}: averages and peaks over so short a time "
                    "say little.", "")]
