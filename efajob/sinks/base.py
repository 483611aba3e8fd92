"""The sink contract: `Sink` (what the daemon calls), `Tick` (what it passes every interval) and
`DaemonHealth`. Sink modules import this one; the registry (registry.py) imports the sinks, only
when one is enabled. Standard library only.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Dict, Mapping, Optional, Protocol, Tuple

if TYPE_CHECKING:  # pragma: no cover - names for annotations only
    from efajob.node.counters import SnapshotDelta
    from efajob.hooks.runfiles import ActiveJob
    from efajob.node.readings import Snapshot
    from efajob.node.sysfs import DeviceInfo


@dataclass(frozen=True)
class DaemonHealth:
    """The daemon's own state at a tick (exported as efajob_daemon_* metrics)."""

    started_wall: float
    ticks: int  # ticks sampled since start
    skipped_ticks: int  # scheduled ticks skipped because a tick ran late
    sample_seconds: float  # how long reading every counter took at this tick
    tick_seconds: float  # the whole tick: sample, maths, store, sinks (previous tick)
    errors: Mapping[str, int]  # by kind: sample, store, sink, status, deliver, reconcile, worker
    store_ok: bool
    store_pending: int  # rows waiting for the store (it was locked or unwritable)
    store_error: Optional[str] = None


@dataclass(frozen=True)
class Tick:
    """Everything a sink may use about one sample. Treat as read-only; do not keep references
    beyond the next tick unless you copy (the daemon builds a new Tick every interval).

    - `snapshot`: the reading (`sysfs.Snapshot`: mono, wall, devices with kernel counter names,
      ENA `net` statistics).
    - `delta`: `counters.SnapshotDelta` against the previous reading (None on the first tick):
      per-device deltas, `seconds`, `resets` ("device/counter"), `appeared`/`vanished`.
    - `rates`: node totals per second of every port counter present on some device
      (`tx_bytes` -> bytes/s, `rx_pkts` -> packets/s...). Empty on the first tick. Absent
      counters are missing keys, never 0.
    - `device_rates`: per device, per port counter, per second (computed from `delta` when
      first asked for: most ticks nobody does, and the daemon pays for every tick).
    - `jobs`: the active jobs on this node (`runfiles.ActiveJob`), read from the run dir.
    - `devices`: discovery info (`sysfs.DeviceInfo`: link rate, state) of the sampled devices.
    - `instance_type`: e.g. "p5.48xlarge" (config, else unknown: None).
    """

    snapshot: "Snapshot"
    delta: Optional["SnapshotDelta"]
    rates: Dict[str, float]
    jobs: Tuple["ActiveJob", ...]
    devices: Tuple["DeviceInfo", ...]
    instance_type: Optional[str]
    cluster: str
    node: str
    boot_id: str
    health: DaemonHealth

    @cached_property
    def device_rates(self) -> Dict[str, Dict[str, float]]:
        d = self.delta
        return _per_second({n: dd.port_counters for n, dd in d.devices.items()}, d) if d else {}

    @cached_property
    def net_rates(self) -> Dict[str, Dict[str, float]]:
        """Per interface, per ENA statistic, per second."""
        return _per_second(self.delta.net, self.delta) if self.delta else {}


def _per_second(groups: Mapping[str, Mapping[str, int]], delta: "SnapshotDelta"):
    secs = delta.seconds
    if secs <= 0:
        return {}
    return {g: {k: v / secs for k, v in c.items()} for g, c in groups.items()}


class Sink(Protocol):
    """What the daemon calls. Every method must return quickly and never raise on purpose:
    the daemon guards calls anyway and counts exceptions as `sink` errors."""

    name: str

    def on_tick(self, tick: Tick) -> None:
        """Called by the sampling loop every tick: must not block (queue, don't send)."""

    def on_record(self, record: dict) -> None:
        """A job-node record the daemon delivered to the job store (worker thread)."""

    def flush(self, timeout: float) -> None:
        """Send what is queued, within `timeout` seconds (SIGTERM, reload)."""

    def close(self) -> None:
        """Release servers, threads and clients."""
