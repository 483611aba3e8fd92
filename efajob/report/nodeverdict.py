"""What a node's own status says is wrong with it: its EFA devices (errors rising, port
counters unreadable, fewer than its type has) and the health rules on its last minute.

Pure. Two writers of the same answer: the daemon, which puts it in its status file as
`verdict` (daemon/nodestatus.py) so that the head-node dashboard does not parse 32 devices'
window and run the rules for each of 10,000 files it re-reads; and the dashboard itself,
for a file without a verdict (an older daemon) or one judged by other rules or thresholds
than its own (`rules_key` differs: a site that set thresholds on the head node only, or
daemons of another efajob version during an upgrade).
"""
from __future__ import annotations

import hashlib
import json
from typing import Iterable, List, Mapping, Optional, Sequence, Tuple

from efajob import __version__
from efajob.node.readings import natural_key

# Per-second health rates a node's status has (kernel names): what judges a node whose daemon
# wrote no window, and what the dashboard shows per node.
HEALTH_RATES = ("rx_drops", "retrans_pkts", "retrans_timeout_events",
                "impaired_remote_conn_events", "unresponsive_remote_events",
                "rdma_read_wr_err", "rdma_write_wr_err")
Problem = Tuple[str, str, Optional[str]]  # (kind, message, severity: None for the kind's)
# One device as the rules see it: (name, {error counter: per second, > 0}, readable port
# counters or None when unknown).
DeviceErrors = Tuple[str, Mapping[str, float], Optional[int]]


def rules_key(thresholds: Optional[Mapping[str, float]]) -> str:
    """Which rules judged: efajob's version and a digest of the thresholds (defaults
    included). A verdict is used only by a reader whose key is the same."""
    from efajob.config import DEFAULT_THRESHOLDS

    th = dict(DEFAULT_THRESHOLDS)
    th.update(thresholds or {})
    digest = hashlib.sha1(json.dumps(sorted(th.items())).encode()).hexdigest()[:12]
    return f"{__version__}:{digest}"


def device_problems(devices: Iterable[DeviceErrors], expected: object) -> List[Problem]:
    """(kind, message, None) of what the driver's own signals say is wrong with a node's EFA
    devices (not the port state: efa_query_port hard-codes ACTIVE)."""
    devs = sorted(devices, key=lambda d: natural_key(d[0]))
    out: List[Problem] = []
    erring = [d for d in devs if d[1]]
    if erring:
        worst = sorted({k for d in erring for k in d[1]})
        out.append(("device_errors", f"EFA errors on {', '.join(d[0] for d in erring[:4])}"
                   + (f" (+{len(erring) - 4})" if len(erring) > 4 else "")
                   + f": {', '.join(worst[:4])}", None))
    unreadable = [d[0] for d in devs if d[2] == 0]
    if unreadable:
        out.append(("counters_unreadable", "port counters unreadable: " + ", ".join(unreadable[:4])
                    + (f" (+{len(unreadable) - 4})" if len(unreadable) > 4 else ""), None))
    if isinstance(expected, int) and not isinstance(expected, bool) and 0 < len(devs) < expected:
        out.append(("device_missing", f"{len(devs)} of {expected} EFA devices", None))
    return out


def live_problems(host: str, recent_doc: object, rates: Mapping[str, float],
                  thresholds: Optional[Mapping[str, float]],
                  instance_type: Optional[str]) -> List[Problem]:
    """What the daemon saw go wrong: the health rules on its last minute (`recent`, the same
    rules and thresholds as a report: report/live.py), or, from a daemon that writes no
    window, any of HEALTH_RATES moving at the last sample (`rates` may hold others: the
    status file's `rates` has every port counter). Either way a node dropping or
    retransmitting packets is never `ok`."""
    from efajob.config import DEFAULT_THRESHOLDS
    from efajob.report.live import node_findings
    from efajob.store.reader import parse_recent

    recent = parse_recent(recent_doc)
    if recent is None:
        return [(k, f"{k} {rates[k]:,.1f}/s at the last sample", None) for k in HEALTH_RATES
                if isinstance(rates.get(k), (int, float)) and rates[k] > 0]
    th = dict(DEFAULT_THRESHOLDS)
    th.update(thresholds or {})
    return [(f.code, f.message, f.severity) for f in node_findings(host, recent, th, instance_type)
            if f.severity != "info"]


def node_verdict(host: str, devices: Sequence[DeviceErrors], expected: object,
                 recent_doc: object, rates: Mapping[str, float],
                 thresholds: Optional[Mapping[str, float]], instance_type: Optional[str]) -> dict:
    """The status file's `verdict`: {"rules": rules_key, "devices": [[kind, message, null],
    ...], "live": [[kind, message, severity], ...]}. Apart, because a reader that finds the
    file stale shows the device problems and not the live ones (old news)."""
    return {"rules": rules_key(thresholds),
            "devices": [list(p) for p in device_problems(devices, expected)],
            "live": [list(p) for p in live_problems(host, recent_doc, rates, thresholds,
                                                    instance_type)]}


def parse_verdict(raw: object, key: str) -> Optional[Tuple[List[Problem], List[Problem]]]:
    """A status file's `verdict` -> (device problems, live problems) when it was judged by the
    rules `key` names and every entry is well formed; None otherwise (the reader judges the
    file itself). Messages are cut to 300 characters: the file is anyone's to write."""
    if not isinstance(raw, dict) or raw.get("rules") != key:
        return None
    out: List[List[Problem]] = []
    for part in ("devices", "live"):
        entries = raw.get(part)
        if not isinstance(entries, list) or len(entries) > 64:
            return None
        got: List[Problem] = []
        for e in entries:
            if not (isinstance(e, list) and len(e) == 3 and isinstance(e[0], str)
                    and isinstance(e[1], str) and (e[2] is None or e[2] in SEVERITIES)):
                return None
            got.append((e[0][:64], e[1][:300], e[2]))
        out.append(got)
    return out[0], out[1]


SEVERITIES = ("critical", "warning", "info")
