"""The sink registry: where the daemon's ticks and delivered job records go besides the local store.

One registry (`SINKS`), one contract (`Sink`). A sink module and its optional dependency
(prometheus_client, boto3) are imported only when the sink is enabled in the config, so a node
without boto3 runs the daemon with Prometheus alone, and the hook path never sees them.

Adding a sink: write `efajob/sinks/<name>.py` with a class following `base.Sink`, then one entry
here:

    def _build_cloudwatch(cfg, clock):
        from efajob.sinks.cloudwatch.sink import CloudWatchSink
        return CloudWatchSink(cfg, clock=clock)

    SINKS["cloudwatch"] = SinkSpec(enabled=lambda cfg: cfg.cloudwatch.enabled,
                                   build=_build_cloudwatch)
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Dict, Iterable, List, Optional

from efajob.errors import ConfigError
from efajob.sinks.base import Sink

if TYPE_CHECKING:  # pragma: no cover - names for annotations only
    from efajob.config import Config


SinkFactory = Callable[["Config", Callable[[], float]], Sink]


@dataclass(frozen=True)
class SinkSpec:
    enabled: Callable[["Config"], bool]
    build: SinkFactory


def _build_prometheus(cfg: "Config", clock: Callable[[], float]) -> Sink:
    from efajob.sinks.prometheus import PrometheusSink

    return PrometheusSink(cfg, clock=clock)


def _build_cloudwatch(cfg: "Config", clock: Callable[[], float]) -> Sink:
    from efajob.sinks.cloudwatch.sink import CloudWatchSink

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
