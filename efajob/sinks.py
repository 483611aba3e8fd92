"""Metric sinks: where the daemon's ticks and delivered job records go besides the local store.

One registry (`SINKS`), one contract (`Sink`). A sink module and its optional dependency
(prometheus_client, boto3) are imported only when the sink is enabled in the config, so a node
without boto3 runs the daemon with Prometheus alone, and the hook path never sees them.

Adding a sink: write `efajob/<name>.py` with a class following `Sink`, then one entry here:

    def _build_cloudwatch(cfg, clock):
        from .cloudwatch import CloudWatchSink
        return CloudWatchSink(cfg, clock=clock)

    SINKS["cloudwatch"] = SinkSpec(enabled=lambda cfg: cfg.cloudwatch.enabled,
                                   build=_build_cloudwatch)
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from functools import cached_property
from typing import (TYPE_CHECKING, Callable, Dict, Iterable, List, Mapping, Optional, Protocol,
                    Tuple)

from .errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover - names for annotations only
    from .config import Config
    from .counters import SnapshotDelta
    from .runfiles import ActiveJob
    from .readings import Snapshot
    from .sysfs import DeviceInfo


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


SinkFactory = Callable[["Config", Callable[[], float]], Sink]


@dataclass(frozen=True)
class SinkSpec:
    enabled: Callable[["Config"], bool]
    build: SinkFactory


def _build_prometheus(cfg: "Config", clock: Callable[[], float]) -> Sink:
    from .promexp import PrometheusSink

    return PrometheusSink(cfg, clock=clock)


def _build_cloudwatch(cfg: "Config", clock: Callable[[], float]) -> Sink:
    from .cloudwatch import CloudWatchSink

    # Not the daemon's clock: the sink's timers pace network retries in real time.
    return CloudWatchSink(cfg)


SINKS: Dict[str, SinkSpec] = {
    "prometheus": SinkSpec(enabled=lambda cfg: cfg.prometheus.enabled, build=_build_prometheus),
    "cloudwatch": SinkSpec(enabled=lambda cfg: cfg.cloudwatch.enabled, build=_build_cloudwatch),
}


def enabled_sinks(cfg: "Config") -> List[str]:
    return [name for name, spec in SINKS.items() if spec.enabled(cfg)]


def build_sinks(cfg: "Config", names: Optional[Iterable[str]] = None, *,
                clock: Callable[[], float] = time.monotonic) -> List[Sink]:
    """Build the sinks the config enables (or exactly `names`). Unknown names: ConfigError.
    On a failure the sinks built so far are closed before the error propagates."""
    wanted = enabled_sinks(cfg) if names is None else list(names)
    for name in wanted:
        if name not in SINKS:
            raise ConfigError(f"unknown sink {name!r} (known: {', '.join(sorted(SINKS))})")
    built: List[Sink] = []
    try:
        for name in wanted:
            built.append(SINKS[name].build(cfg, clock))
    except BaseException:
        for s in built:
            try:
                s.close()
            except Exception:  # pragma: no cover - best effort while failing anyway
                pass
        raise
    return built
