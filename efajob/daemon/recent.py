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
from typing import TYPE_CHECKING, Deque, Dict, Iterable, Optional

from efajob.node.counters import diff_snapshots

if TYPE_CHECKING:  # pragma: no cover
    from efajob.hooks.runfiles import ActiveJob
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

    def summary(self, since: Optional[float] = None) -> Optional[dict]:
        """The window as the status file's `recent` object; None before two snapshots.
        `since` (monotonic): start at the first anchor at or after it instead, so that a job
        that started 10 s ago is not charged with the 50 s before it (None when no anchor is
        that recent yet)."""
        with self._lock:
            anchors = [a for a in self._anchors if since is None or a.mono >= since]
            first, last = (anchors[0] if anchors else None), self._latest
        if first is None or last is None or last.mono <= first.mono:
            return None
        return build_recent(diff_snapshots(first, last))

    def covers(self, since: float) -> bool:
        """Whether the whole window lies after `since` (a job older than the window: its
        window is the node's)."""
        with self._lock:
            return bool(self._anchors) and self._anchors[0].mono >= since

    def job_windows(self, jobs: Iterable["ActiveJob"], boot_id: str) -> Dict[str, Optional[dict]]:
        """{job key: its own window} for the jobs that started inside the node's window (None:
        too new for one); older jobs, and jobs of another boot, are left out."""
        return {j.key: self.summary(since=j.start_mono) for j in jobs
                if j.boot_id == boot_id and not self.covers(j.start_mono)}


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
