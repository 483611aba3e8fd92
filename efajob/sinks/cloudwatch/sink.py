"""The CloudWatch sink: node metrics each period, job-node records as EMF, nothing lost.

The sampling loop only folds ticks into memory (`cw_metrics.PeriodAggregator`) and queues a
request when a period closes; a worker thread sends. A request that fails on throttling, a
5xx or a connection error is retried with exponential backoff and jitter; after a few tries it
goes to the on-disk spool (`cw_spool`) and the sink enters *outage* mode: new requests go
straight to the spool and the oldest spooled request is retried with backoff until one goes
through, then the spool drains oldest first. A request CloudWatch refuses as invalid is split
in halves until only the offending datum is dropped (counted, logged). `flush()` (SIGTERM)
sends the open period; what cannot be sent in time is spooled for the next start.

botocore's own retries are turned off (one attempt per call) so the backoff here is the only
one; botocore gzips PutMetricData bodies above 4 KB (the service model allows it), which the
per-device and JobId sets reach. Limits: `cw_limits`. Docs: docs/cloudwatch.md.

botocore is imported when a sink is built, i.e. only when `[cloudwatch] enabled = true`.
"""
from __future__ import annotations

import collections
import logging
import os
import random
import threading
import time
from typing import Any, Callable, Deque, Dict, List, Mapping, Optional, Tuple

from efajob.sinks.cloudwatch.client import (CONNECT_TIMEOUT, READ_TIMEOUT, classify_error,
                                            make_clients, send_item, short)
from efajob.sinks.cloudwatch.emf import build_job_events
from efajob.sinks.cloudwatch.limits import (batch_datums, batch_log_events, check_datum,
                                            check_log_event)
from efajob.sinks.cloudwatch.metrics import Identity, PeriodAggregator
from efajob.sinks.cloudwatch.spool import Spool
from efajob.errors import ConfigError
from efajob.node.imds import fetch_identity

log = logging.getLogger("efajob.cloudwatch")

HIGH_RES_PERIODS = (1, 5, 10, 30)
MAX_QUEUE = 1024  # requests in memory (~17 h of periods): only reachable if the worker hangs
def validate_period(period: int) -> int:
    if period in HIGH_RES_PERIODS or (period >= 60 and period % 60 == 0):
        return period
    raise ConfigError(f"cloudwatch.period {period}: use 1, 5, 10, 30 or a multiple of 60 seconds "
                      "(the periods CloudWatch can aggregate)")


def log_group(cfg) -> str:
    return cfg.cloudwatch.log_group or f"/efajob/{cfg.cluster}"


def resolve_identity(cfg, *, fetch: Callable[[], Dict[str, str]] = fetch_identity,
                     env: Optional[Mapping[str, str]] = None) -> Tuple[Identity, str]:
    """(Identity, region): config first, then IMDSv2 (only when something is missing), then
    the node name as instance id and $AWS_REGION / $AWS_DEFAULT_REGION as region."""
    env = os.environ if env is None else env
    cw = cfg.cloudwatch
    instance_id, itype, region = cw.instance_id, cw.instance_type or cfg.instance_type, cw.region
    if not (instance_id and itype and region):
        found = fetch()
        instance_id = instance_id or found.get("instance_id")
        itype = itype or found.get("instance_type")
        region = region or found.get("region")
    instance_id = instance_id or cfg.node
    region = region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if not region:
        raise ConfigError("cloudwatch: no region: set [cloudwatch] region (not on EC2, or IMDS "
                          "did not answer)")
    return Identity(cluster=cfg.cluster, instance_id=instance_id, instance_type=itype), region


class CloudWatchSink:
    """The `cloudwatch` sink (sinks.SINKS). See the module docstring."""

    name = "cloudwatch"

    def __init__(self, cfg, *, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time,
                 identity: Optional[Identity] = None, region: Optional[str] = None,
                 clients: Optional[Dict[str, Any]] = None,
                 sleep: Optional[Callable[[float], Any]] = None,
                 rng: Callable[[], float] = random.random, start: bool = True,
                 backoff_base: float = 1.0, backoff_cap: float = 60.0, inline_attempts: int = 3):
        cw = cfg.cloudwatch
        self.cfg = cfg
        self.namespace = cw.namespace
        self.log_group = log_group(cfg)
        self.log_stream = cfg.node
        if identity is None or region is None:
            ident, reg = resolve_identity(cfg)
            identity, region = identity or ident, region or reg
        self.identity, self.region = identity, region
        self._agg = PeriodAggregator(identity, period=validate_period(cw.period),
                                     per_device=cw.per_device, job_metrics=cw.job_metrics)
        self._clients = clients if clients is not None else make_clients(cfg, region)
        self._clock, self._wall, self._rng = clock, wall, rng
        self._interrupt = threading.Event()  # cuts backoff waits short (flush, close)
        self._sleep = sleep or self._interrupt.wait
        self._base, self._cap, self._inline = backoff_base, backoff_cap, max(1, inline_attempts)
        self._agg_lock = threading.Lock()
        self._cv = threading.Condition()
        self._queue: Deque[dict] = collections.deque()
        self._busy = False
        self._stopping = False
        self._spool_lock = threading.Lock()
        self._spool = Spool(os.path.join(cfg.state_dir, "cloudwatch-spool"), cw.spool_max_bytes)
        self._outage = False
        self._outage_attempt = 0
        self._retry_at = 0.0  # monotonic: when to retry the spool in outage mode
        self.counts: Dict[str, int] = collections.Counter()
        self.delays: List[float] = []  # backoff delays waited (the last 100), for tests/status
        self._thread: Optional[threading.Thread] = None
        if len(self._spool):
            log.info("CloudWatch spool holds %d request(s) from before: sending them first",
                     len(self._spool))
        if start:
            self._thread = threading.Thread(target=self._run, name="efajob-cloudwatch", daemon=True)
            self._thread.start()

    # -- the sink protocol (callers' threads: never block, never raise) ---------------------
    def on_tick(self, tick) -> None:
        try:
            with self._agg_lock:
                datums = self._agg.add(tick)
            if datums:
                self._enqueue_datums(datums)
        except Exception:  # pragma: no cover - a bug here must not stop sampling
            self.counts["errors"] += 1
            log.exception("cloudwatch: tick not aggregated")

    def on_record(self, record: dict) -> None:
        try:
            events = build_job_events(record, self.namespace, self._wall(),
                                      private=self.cfg.private_records)
        except Exception as e:
            self.counts["rejected_events"] += 1
            log.error("cloudwatch: job record %s/%s not published: %s", record.get("job_id"),
                      record.get("host"), e)
            return
        self._enqueue_events(events)

    def flush(self, timeout: float) -> None:
        """Queue the open period and send everything queued within `timeout` seconds; failures
        go to the spool at once (no backoff while flushing)."""
        deadline = self._clock() + timeout
        self.close_period()
        self._interrupt.set()
        try:
            if self._thread is None:
                self.process()
                return
            with self._cv:
                self._cv.notify_all()
                while (self._queue or self._busy) and self._clock() < deadline:
                    self._cv.wait(min(0.05, max(0.0, deadline - self._clock())))
        finally:
            self._interrupt.clear()

    def close_period(self) -> None:
        """Queue the open period's datums now (flush; tests)."""
        with self._agg_lock:
            datums = self._agg.close()
        self._enqueue_datums(datums)

    def close(self) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        self._interrupt.set()
        if self._thread is not None:
            self._thread.join(CONNECT_TIMEOUT + READ_TIMEOUT + 1.0)
            if self._thread.is_alive():  # pragma: no cover - botocore timeouts prevent it
                log.error("cloudwatch: worker still busy at close; its request may be lost")
            self._thread = None
        with self._cv:
            left = list(self._queue)
            self._queue.clear()
        for item in left:
            self._spool_put(item)

    # -- queueing --------------------------------------------------------------------------
    def stats(self) -> Dict[str, int]:
        out = dict(self.counts)
        with self._spool_lock:
            out.update(spooled_now=len(self._spool), spool_bytes=self._spool.bytes,
                       spool_dropped_items=self._spool.dropped_items,
                       spool_dropped=self._spool.dropped_count)
        out["queued"] = len(self._queue)
        out["capped_devices"] = self._agg.capped["devices"]
        out["capped_jobs"] = self._agg.capped["jobs"]
        return out

    def _valid(self, items: List[dict], check, now, counter: str, what: str) -> List[dict]:
        """The items `check` accepts; each rejected one is counted and logged, never sent."""
        good = []
        for x in items:
            why = check(x, now)
            if why:
                self.counts[counter] += 1
                log.warning("cloudwatch: %s not sent: %s", what, why)
            else:
                good.append(x)
        return good

    def _enqueue_datums(self, datums: List[dict]) -> None:
        good = self._valid(datums, check_datum, self._wall(), "rejected_datums", "datum")
        self._enqueue([{"kind": "metrics", "namespace": self.namespace, "datums": b,
                        "count": len(b)} for b in batch_datums(good)])

    def _enqueue_events(self, events: List[dict]) -> None:
        good = self._valid(events, check_log_event, int(self._wall() * 1000), "rejected_events",
                           "job event")
        self._enqueue([{"kind": "logs", "group": self.log_group, "stream": self.log_stream,
                        "events": b, "count": len(b)} for b in batch_log_events(good)])

    def _enqueue(self, items: List[dict]) -> None:
        if not items:
            return
        with self._cv:
            for it in items:
                if len(self._queue) >= MAX_QUEUE:
                    old = self._queue.popleft()
                    self.counts["queue_dropped"] += old["count"]
                    log.error("cloudwatch: in-memory queue full: dropped %d datums/events",
                              old["count"])
                self._queue.append(it)
            self._cv.notify_all()

    # -- the worker ------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cv:
                while not (self._stopping or self._queue or self._spool_due()):
                    self._cv.wait(self._idle_wait())
                if self._stopping:
                    return
            try:
                self.process()
            except Exception:  # pragma: no cover - keep the worker alive whatever happens
                self.counts["errors"] += 1
                log.exception("cloudwatch: worker error")

    def _idle_wait(self) -> Optional[float]:
        if self._outage or len(self._spool):
            return max(0.01, self._retry_at - self._clock())
        return None

    def _spool_due(self) -> bool:
        return bool(len(self._spool)) and self._clock() >= self._retry_at

    def process(self) -> None:
        """Send (or, in outage mode, spool) every queued request; then retry the spool if due."""
        while True:
            with self._cv:
                if not self._queue:
                    break
                item = self._queue.popleft()
                self._busy = True
            try:
                if self._outage:
                    self._spool_put(item)
                else:
                    self._send_retrying(item)
            finally:
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()
        if self._spool_due():
            with self._cv:
                self._busy = True
            try:
                self._drain_spool()
            finally:
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()

    def _backoff(self, attempt: int) -> float:
        # Exponential with "equal jitter": half fixed (so waits really grow), half random (so
        # nodes throttled together do not retry together).
        d = min(self._cap, self._base * (2 ** attempt))
        return d / 2 + self._rng() * d / 2

    def _wait(self, delay: float) -> None:
        self.delays.append(delay)
        del self.delays[:-100]
        self._sleep(delay)

    def _send_retrying(self, item: dict) -> None:
        attempt = 0
        while True:
            try:
                self._send(item)
                return
            except Exception as e:
                kind = classify_error(e)
                if kind == "fatal":
                    self._fatal(item, e)
                    return
                attempt += 1
                self.counts["retries"] += 1
                if attempt >= self._inline or self._interrupt.is_set():
                    log.warning("cloudwatch: %s failed (%s): spooled, retrying with backoff",
                                item["kind"], short(e))
                    self._spool_put(item)
                    self._enter_outage()
                    return
                self._wait(self._backoff(attempt - 1))

    def _enter_outage(self) -> None:
        if not self._outage:
            self._outage, self._outage_attempt = True, 0
            self.counts["outages"] += 1
        self._retry_at = self._clock() + self._backoff(self._outage_attempt)

    def _drain_spool(self) -> None:
        while True:
            with self._spool_lock:
                got = self._spool.oldest()
            if got is None:
                if self._outage:
                    log.info("cloudwatch: endpoint back; spool drained")
                self._outage, self._outage_attempt = False, 0
                return
            name, item = got
            try:
                self._send(item)
            except Exception as e:
                kind = classify_error(e)
                if kind == "fatal":
                    with self._spool_lock:
                        self._spool.remove(name)
                    self._fatal(item, e)
                    continue
                self.counts["retries"] += 1
                self._outage = True
                self._outage_attempt += 1
                delay = self._backoff(self._outage_attempt)
                self.delays.append(delay)
                self._retry_at = self._clock() + delay
                return
            with self._spool_lock:
                self._spool.remove(name)
            self.counts["unspooled_items"] += 1
            with self._cv:
                if self._queue or self._stopping:  # let fresh data and close() go first
                    return

    def _spool_put(self, item: dict) -> None:
        with self._spool_lock:
            if self._spool.put(item):
                self.counts["spooled_items"] += 1

    def _fatal(self, item: dict, exc: BaseException) -> None:
        """The request is invalid: split it until only what CloudWatch refuses is dropped."""
        key = "datums" if item["kind"] == "metrics" else "events"
        parts = item[key]
        if len(parts) > 1:
            mid = len(parts) // 2
            for half in (parts[:mid], parts[mid:]):
                self._send_retrying(dict(item, **{key: half, "count": len(half)}))
            return
        self.counts["rejected_" + key] += len(parts)
        log.error("cloudwatch: %s refused, dropped: %s", item["kind"], short(exc))

    # -- sending ---------------------------------------------------------------------------
    def _send(self, item: dict) -> None:
        for k, v in send_item(self._clients, item, self._wall()).items():
            if v:
                self.counts[k] += v
