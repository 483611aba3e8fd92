"""The node's last minute, for its status file: what a running job's report and the dashboard
judge a node by before any job record exists (docs/daemon.md, `recent`).

The sampling loop hands every snapshot to `RecentWindow.add` (a comparison and at most a deque
append: the loop pays nothing per device); the worker thread, when it writes the status file, diffs the oldest kept
snapshot against the newest (`counters.diff_snapshots`: a reset counts what came after it, a
vanished device is listed) and keeps only what a judgement needs, so that a 32-device node's
status stays a few kB: every port counter summed over the node, and per device its bytes (an
idle device) plus the health and error counters that moved.
"""
from __future__ import annotations

import collections
import threading
from typing import TYPE_CHECKING, Deque, Dict, Optional

from efajob.node.counters import diff_snapshots

if TYPE_CHECKING:  # pragma: no cover
    from efajob.node.counters import SnapshotDelta
    from efajob.node.readings import Snapshot

RECENT_SECONDS = 60.0
# Port counters that say something is wrong when they move (kernel names).
HEALTH_PORT_COUNTERS = frozenset(("rx_drops", "retrans_pkts", "retrans_bytes",
                                  "retrans_timeout_events", "impaired_remote_conn_events",
                                  "unresponsive_remote_events"))


def is_error_counter(name: str) -> bool:
    """Device counters that count failures: the driver's `*_err` (admin and verbs commands,
    `rdma_read_wr_err`, `rdma_write_wr_err`, ...) and `no_completion_cmds` (admin commands
    the device never completed), named open-endedly so counters a newer driver adds count too."""
    return name.endswith("_err") or name == "no_completion_cmds"


class RecentWindow:
    """The newest snapshot and anchors at least `seconds / ANCHORS` apart reaching back just
    past `seconds`, so that a full window covers `seconds` to `seconds` + one anchor step.
    Anchors rather than every tick: a p5 snapshot holds ~1,300 counter values, and 60 of them
    at 1 s would cost the daemon megabytes for nothing. `add` runs in the sampling loop,
    `summary` in the worker."""

    ANCHORS = 12

    def __init__(self, seconds: float = RECENT_SECONDS):
        self.seconds = seconds
        self._step = seconds / self.ANCHORS
        self._anchors: Deque["Snapshot"] = collections.deque()
        self._latest: Optional["Snapshot"] = None
        self._lock = threading.Lock()

    def add(self, snap: "Snapshot") -> None:
        with self._lock:
            anchors = self._anchors
            if self._latest is not None and snap.mono < self._latest.mono:
                anchors.clear()  # another clock (a restart of the sampler in a test): start over
            if not anchors or snap.mono - anchors[-1].mono >= self._step:
                anchors.append(snap)
            self._latest = snap
            edge = snap.mono - self.seconds
            while len(anchors) > 1 and anchors[1].mono <= edge:
                anchors.popleft()

    def clear(self) -> None:
        with self._lock:
            self._anchors.clear()
            self._latest = None

    def summary(self) -> Optional[dict]:
        """The window as the status file's `recent` object; None before two snapshots."""
        with self._lock:
            first, last = (self._anchors[0] if self._anchors else None), self._latest
        if first is None or last is None or last.mono <= first.mono:
            return None
        return build_recent(diff_snapshots(first, last))


def build_recent(delta: "SnapshotDelta") -> dict:
    """`{"seconds", "counters": {port counter: node sum}, "devices": {name: {"counters":
    {tx_bytes, rx_bytes, health counters that moved}, "device_counters": {error counters
    that moved}}}, "resets", "vanished", "appeared"}`. Absent counters stay absent."""
    devices: Dict[str, dict] = {}
    for name, d in sorted(delta.devices.items()):
        pc = {k: v for k, v in d.port_counters.items()
              if k in ("tx_bytes", "rx_bytes", "tx_pkts", "rx_pkts")
              or (k in HEALTH_PORT_COUNTERS and v)}
        dc = {k: v for k, v in d.device_counters.items() if v and is_error_counter(k)}
        devices[name] = {"counters": pc, "device_counters": dc}
    return {"seconds": round(delta.seconds, 3), "counters": dict(sorted(delta.port_totals().items())),
            "devices": devices, "resets": list(delta.resets), "vanished": list(delta.vanished),
            "appeared": list(delta.appeared)}
