"""Prometheus exposition: a custom prometheus_client Collector over the daemon's latest tick.

The collector holds a reference to the last `sinks.Tick` and builds metric families only when
scraped, so the sampling loop pays one attribute store per tick. A scrape's text is written
by sinks/promtext.py (the same bytes prometheus_client would write, ~4x less CPU). Every metric is documented in
docs/metrics.md (name, type, unit, source file); keep that page in step with this module.

Cardinality is bounded: label values are device names (capped at MAX_DEVICES), counter names
come from the kernel's short fixed lists (capped at MAX_COUNTERS per kind), interfaces
(MAX_NETDEVS) and active jobs on this node (MAX_JOBS). What a cap drops is counted in
`efajob_exporter_dropped_series`, never silently lost.
"""
from __future__ import annotations

import gzip
import logging
import os
import re
import selectors
import socket
import threading
import time
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Callable, Dict, Iterator, List, Optional, Tuple, Type
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, ProcessCollector, make_wsgi_app
from prometheus_client.exposition import choose_encoder
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from efajob.node.ethtool import ALLOWANCE_COUNTERS
from efajob.node.instances import lookup, unsupported_counters
from efajob.errors import SinkError
from efajob.sinks import promtext
from efajob.sinks.promtext import Fam

if TYPE_CHECKING:  # pragma: no cover
    from efajob.config import Config
    from efajob.sinks.base import Tick

log = logging.getLogger("efajob.promexp")

MAX_DEVICES = 64
MAX_COUNTERS = 128
MAX_NETDEVS = 16
MAX_JOBS = 64
ERROR_KINDS = ("sample", "store", "sink", "status", "deliver", "reconcile", "worker")
_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*\Z")
# A kernel counter whose name would land in one of our own families is skipped rather than
# allowed to collide with it.
_RESERVED = ("node_", "device_", "net_", "daemon_", "job_", "exporter_")


def _port_metric(name: str) -> bool:
    return bool(_NAME_RE.match(name)) and not name.startswith(_RESERVED)


class EfaCollector:
    """Builds efajob_* families from the latest tick at scrape time."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic,
                 link_gbps: Optional[Callable[[str], Optional[float]]] = None,
                 private: bool = False):
        self._tick: Optional["Tick"] = None
        self._clock = clock
        self._link_gbps = link_gbps
        # private_records: who runs what is not for every local user who can scrape the
        # endpoint; the `user` label stays (same series shape), empty.
        self._private = private

    def update(self, tick: "Tick") -> None:
        self._tick = tick  # one reference swap: the scrape thread reads whole ticks

    def describe(self) -> List[Metric]:
        # Families depend on the counters the kernel offers: nothing fixed to describe.
        return []

    def collect(self) -> Iterator[Metric]:
        """prometheus_client's protocol: the families as its Metric objects (the registry's
        own encoders, `name[]` filters); a plain scrape takes `families()` to promtext."""
        for fam in self.families():
            cls = CounterMetricFamily if fam.kind == "counter" else GaugeMetricFamily
            m = cls(fam.name, fam.doc, labels=fam.labels)
            for values, value in fam.samples:
                m.add_metric(values, value)
            yield m

    def families(self) -> List[Fam]:
        return list(self._families())

    def _families(self) -> Iterator[Fam]:
        tick = self._tick
        dropped: Dict[str, int] = {}
        if tick is None:
            yield from self._exporter(dropped)
            return
        yield from self._port_counters(tick, dropped)
        yield from self._device_counters(tick, dropped)
        yield from self._net_counters(tick, dropped)
        yield from self._node_rates(tick, dropped)
        yield from self._info(tick)
        yield from self._health(tick)
        yield from self._jobs(tick, dropped, self._private)
        yield from self._exporter(dropped)

    # -- counters --------------------------------------------------------------------------
    @staticmethod
    def _devices(tick: "Tick", dropped: Dict[str, int]) -> List[str]:
        names = sorted(tick.snapshot.devices)
        if len(names) > MAX_DEVICES:
            dropped["devices"] = len(names) - MAX_DEVICES
            names = names[:MAX_DEVICES]
        return names

    def _port_counters(self, tick: "Tick", dropped: Dict[str, int]) -> Iterator[Fam]:
        fams: Dict[str, Fam] = {}
        # Counters this instance type cannot count (SRD on Nitro v3, rdma_write_* without RDMA
        # write) read 0 whatever happens: absent, as in the reports, never a measured 0.
        unsupported = unsupported_counters(lookup(tick.instance_type))
        for dev in self._devices(tick, dropped):
            r = tick.snapshot.devices[dev]
            ports = [(r.port, r.port_counters)] + sorted(r.other_ports.items())
            for port, counters in ports:
                for name, value in counters.items():
                    if name in unsupported:
                        continue
                    fam = fams.get(name)
                    if fam is None:
                        if len(fams) >= MAX_COUNTERS or not _port_metric(name):
                            dropped["port_counters"] = dropped.get("port_counters", 0) + 1
                            continue
                        fam = fams[name] = Fam.counter(
                            f"efajob_{name}",
                            f"EFA port counter {name} (sysfs ports/<port>/hw_counters/{name})",
                            labels=("device", "port"))
                    fam.add((dev, str(port)), value)
        for name in sorted(fams):
            yield fams[name]

    def _device_counters(self, tick: "Tick", dropped: Dict[str, int]) -> Iterator[Fam]:
        fams: Dict[str, Fam] = {}
        for dev in self._devices(tick, {}):
            for name, value in tick.snapshot.devices[dev].device_counters.items():
                fam = fams.get(name)
                if fam is None:
                    if len(fams) >= MAX_COUNTERS or not _NAME_RE.match(name):
                        dropped["device_counters"] = dropped.get("device_counters", 0) + 1
                        continue
                    fam = fams[name] = Fam.counter(
                        f"efajob_device_{name}",
                        f"EFA device counter {name} (sysfs <device>/hw_counters/{name})",
                        labels=("device",))
                fam.add((dev,), value)
        for name in sorted(fams):
            yield fams[name]

    def _net_counters(self, tick: "Tick", dropped: Dict[str, int]) -> Iterator[Fam]:
        fams: Dict[str, Fam] = {}
        ifnames = sorted(tick.snapshot.net)
        if len(ifnames) > MAX_NETDEVS:
            dropped["netdevs"] = len(ifnames) - MAX_NETDEVS
            ifnames = ifnames[:MAX_NETDEVS]
        for ifname in ifnames:
            for name, value in tick.snapshot.net[ifname].items():
                fam = fams.get(name)
                if fam is None:
                    if len(fams) >= MAX_COUNTERS or not _NAME_RE.match(name):
                        dropped["net_counters"] = dropped.get("net_counters", 0) + 1
                        continue
                    source = ("ENA allowance counter, ethtool -S via SIOCETHTOOL"
                              if name in ALLOWANCE_COUNTERS
                              else "sysfs class/net/<if>/statistics")
                    fam = fams[name] = Fam.counter(
                        f"efajob_net_{name}", f"Network interface statistic {name} ({source})",
                        labels=("interface",))
                fam.add((ifname,), value)
        for name in sorted(fams):
            yield fams[name]

    # -- gauges ----------------------------------------------------------------------------
    @staticmethod
    def _node_rates(tick: "Tick", dropped: Dict[str, int]) -> Iterator[Fam]:
        unsupported = unsupported_counters(lookup(tick.instance_type))
        names = [n for n in sorted(tick.rates) if _NAME_RE.match(n) and n not in unsupported]
        if len(names) > MAX_COUNTERS:
            dropped["node_rates"] = len(names) - MAX_COUNTERS
            names = names[:MAX_COUNTERS]
        for name in names:
            unit = "bytes" if name.endswith("_bytes") else "events"
            g = Fam.gauge(
                f"efajob_node_{name}_per_second",
                f"Node total of EFA port counter {name} per second over the last sample "
                f"interval ({unit}/s, all devices)")
            g.add((), tick.rates[name])
            yield g

    def _info(self, tick: "Tick") -> Iterator[Fam]:
        g = Fam.gauge("efajob_node_info", "This node (always 1): join on instance",
                              labels=("cluster", "node", "instance_type"))
        g.add((tick.cluster, tick.node, tick.instance_type or ""), 1)
        yield g
        link = Fam.gauge("efajob_device_link_gbps",
                                 "EFA device link rate (Gbit/s; instance-type table, else sysfs "
                                 "ports/<port>/rate)", labels=("device",))
        # No efajob_device_up: efa_query_port hard-codes ACTIVE/LinkUp, so port state never
        # shows a sick EFA device. What does: port counters that stop being readable (a closed
        # admin queue fails every stats query), counted here per device.
        readable = Fam.gauge(
            "efajob_device_port_counters",
            "Port counters read from the device in the last sample (0: unreadable, e.g. the "
            "admin queue closed after no_completion_cmds rose)", labels=("device",))
        for d in tick.devices[:MAX_DEVICES]:
            gbps = self._link_gbps(d.name) if self._link_gbps else None
            gbps = gbps if gbps is not None else d.rate_gbps
            if gbps is not None:
                link.add((d.name,), gbps)
            reading = tick.snapshot.devices.get(d.name)
            readable.add((d.name,), float(len(reading.port_counters) if reading else 0))
        yield link
        yield readable
        expected = lookup(tick.instance_type)
        if expected is not None:
            g = Fam.gauge("efajob_node_expected_devices",
                                  "EFA devices this node's instance type has (instance table): "
                                  "compare with efajob_daemon_devices")
            g.add((), float(expected.devices))
            yield g

    def _health(self, tick: "Tick") -> Iterator[Fam]:
        h = tick.health
        simple: List[Tuple[str, str, float]] = [
            ("efajob_daemon_sample_duration_seconds", "Time to read every counter at the last tick",
             h.sample_seconds),
            ("efajob_daemon_tick_duration_seconds",
             "Time of the last complete tick (sample, maths, store, sinks)", h.tick_seconds),
            ("efajob_daemon_last_sample_age_seconds",
             "Seconds since the last sample (monotonic clock, at scrape time)",
             max(0.0, self._clock() - tick.snapshot.mono)),
            ("efajob_daemon_start_time_seconds", "Daemon start (epoch seconds)", h.started_wall),
            ("efajob_daemon_store_up", "1 when the local store accepted the last tick",
             1.0 if h.store_ok else 0.0),
            ("efajob_daemon_store_pending_rows", "Rows waiting for the local store",
             float(h.store_pending)),
            ("efajob_daemon_devices", "EFA devices in the last sample",
             float(len(tick.snapshot.devices))),
        ]
        for name, doc, value in simple:
            g = Fam.gauge(name, doc)
            g.add((), value)
            yield g
        for name, doc, value in (
            ("efajob_daemon_ticks", "Ticks sampled since the daemon started", h.ticks),
            ("efajob_daemon_skipped_ticks", "Scheduled ticks skipped because one ran late",
             h.skipped_ticks),
        ):
            c = Fam.counter(name, doc)
            c.add((), value)
            yield c
        errs = Fam.counter("efajob_daemon_errors", "Errors by kind since start",
                                   labels=("kind",))
        for kind in sorted(set(ERROR_KINDS) | set(h.errors)):
            errs.add((kind,), h.errors.get(kind, 0))
        yield errs

    @staticmethod
    def _jobs(tick: "Tick", dropped: Dict[str, int], private: bool = False) -> Iterator[Fam]:
        g = Fam.gauge(
            "efajob_job_active",
            "1 for each Slurm job active on this node (run dir): join node series on instance",
            labels=("job_id", "user"))
        jobs = sorted(tick.jobs, key=lambda j: j.key)
        if len(jobs) > MAX_JOBS:
            dropped["jobs"] = len(jobs) - MAX_JOBS
            jobs = jobs[:MAX_JOBS]
        seen = set()
        for j in jobs:
            labels = (j.job_id, "" if private else j.user or "")
            if labels not in seen:  # two restarts of one job id cannot both be active; be safe
                seen.add(labels)
                g.add(labels, 1)
        yield g

    @staticmethod
    def _exporter(dropped: Dict[str, int]) -> Iterator[Fam]:
        g = Fam.gauge("efajob_exporter_dropped_series",
                              "Series left out at this scrape by the cardinality caps",
                              labels=("what",))
        for what in ("devices", "port_counters", "device_counters", "netdevs", "net_counters",
                     "node_rates", "jobs"):
            g.add((what,), dropped.get(what, 0))
        yield g


class PrometheusSink:
    """The `prometheus` sink: a private registry (efajob_* + process_*) served on
    `[prometheus] bind:port` (127.0.0.1:9814 by default)."""

    name = "prometheus"

    def __init__(self, cfg: "Config", *, clock: Callable[[], float] = time.monotonic,
                 serve: bool = True):
        from efajob.node.instances import lookup

        itype = lookup(cfg.instance_type)
        per_device = (lambda _name: itype.gbps_per_device) if itype else None
        self.collector = EfaCollector(clock=clock, link_gbps=per_device,
                                      private=cfg.private_records)
        # The full registry serves what the fast path below does not (`name[]` filters,
        # other methods); the process registry is what a fast scrape appends to our text.
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)
        # auto_describe: the names ProcessCollector yields, so `name[]` filters can find them.
        self.process_registry = CollectorRegistry(auto_describe=True)
        process = ProcessCollector(registry=self.process_registry)
        self.registry.register(process)
        self._httpd: Optional[MetricsServer] = None
        self.address: Optional[Tuple[str, int]] = None
        if serve:
            self._serve(cfg.prometheus.bind, cfg.prometheus.port)

    def _serve(self, bind: str, port: int) -> None:
        try:
            self._httpd = MetricsServer(self.wsgi_app(), bind, port)
        except OSError as e:
            raise SinkError(f"cannot serve Prometheus metrics on {bind}:{port}: "
                            f"{e.strerror or e}") from None
        self.address = (bind, self._httpd.port)

    def exposition(self, accept: str = "") -> bytes:
        """The body a plain scrape with this Accept header gets (tests, promtool, benches)."""
        encoder, content_type = choose_encoder(accept)
        return self._render(content_type, encoder)

    def _render(self, content_type: str, encoder: Callable[..., bytes],
                names: Optional[List[str]] = None) -> bytes:
        # Our families through promtext, then the process_* families through prometheus_client
        # in the same format (its OpenMetrics output ends with the `# EOF` line). `names`: a
        # scrape's `name[]` filter, sample names as prometheus_client matches them.
        om = content_type.startswith("application/openmetrics-text")
        fams = self.collector.families()
        process: object = self.process_registry
        if names is not None:
            wanted = set(names)
            fams = [f for f in fams
                    if (f.name + "_total" if f.kind == "counter" else f.name) in wanted]
            process = self.process_registry.restricted_registry(names)
        return promtext.render(fams, openmetrics=om).encode("utf-8") + encoder(process)

    def wsgi_app(self) -> Callable:
        """prometheus_client's WSGI app, except that a GET (what Prometheus sends) is answered
        from promtext: the same bytes, a fraction of the CPU (docs/performance.md). Other
        methods (OPTIONS, 405s) and /favicon.ico go to prometheus_client's app."""
        fallback = make_wsgi_app(self.registry)

        def app(environ: dict, start_response: Callable) -> List[bytes]:
            if environ.get("REQUEST_METHOD") != "GET" or environ.get("PATH_INFO") == "/favicon.ico":
                return fallback(environ, start_response)
            encoder, content_type = choose_encoder(environ.get("HTTP_ACCEPT", ""))
            if not content_type.startswith(("text/plain", "application/openmetrics-text")):
                return fallback(environ, start_response)
            names = parse_qs(environ.get("QUERY_STRING", "")).get("name[]")
            body = self._render(content_type, encoder, names)
            headers = [("Content-Type", content_type)]
            if _gzip_accepted(environ.get("HTTP_ACCEPT_ENCODING", "")):
                body = gzip.compress(body)
                headers.append(("Content-Encoding", "gzip"))
            start_response("200 OK", headers)
            return [body]

        return app

    def on_tick(self, tick: "Tick") -> None:
        self.collector.update(tick)

    def on_record(self, record: dict) -> None:
        # Job records are summaries of a finished job: not a Prometheus time series.
        pass

    def flush(self, timeout: float) -> None:
        pass

    def close(self) -> None:
        if self._httpd is not None:
            self._httpd.close()
            self._httpd = None


def _gzip_accepted(header: str) -> bool:
    # As prometheus_client's gzip_accepted (not in every version this package accepts).
    return any(a.split(";")[0].strip().lower() == "gzip" for a in header.split(","))


class _SilentHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the stdlib's signature
        pass  # one line per scrape would flood the journal


class MetricsServer:
    """The sink's WSGI app (prometheus_client's content negotiation, gzip, `name[]` filters)
    on a thread-per-request server whose accept loop sleeps until a connection or `close()`.

    prometheus_client's own start_http_server runs socketserver's serve_forever(), which wakes
    every 0.5 s to look for a shutdown request: two wake-ups a second, about 0.06 % of a core
    on an idle node, nearly what being scraped every 15 s costs (docs/performance.md). Here a
    pipe wakes the loop for shutdown instead.
    """

    def __init__(self, app: Callable, bind: str, port: int):
        family, _, _, _, sockaddr = socket.getaddrinfo(
            bind, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        server_class: Type[WSGIServer] = type("_Server", (ThreadingMixIn, WSGIServer),
                                              {"address_family": family, "daemon_threads": True})
        host = sockaddr[0]
        assert isinstance(host, str)  # AF_INET or AF_INET6: (host, port, ...), host a string
        self._httpd = make_server(host, port, app, server_class,
                                  handler_class=_SilentHandler)
        self._httpd.timeout = 1.0  # handle_request() is only called once the socket is readable
        self.port: int = self._httpd.server_port
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC)
        self._thread = threading.Thread(target=self._loop, name="efajob-prometheus", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(self._httpd.socket, selectors.EVENT_READ, "accept")
            sel.register(self._wake_r, selectors.EVENT_READ, "stop")
            while True:
                ready = sel.select()  # no timeout: nothing to do until a scrape or close()
                if any(key.data == "stop" for key, _ in ready):
                    return
                try:
                    self._httpd.handle_request()  # accept, then a thread serves the request
                except Exception:  # noqa: BLE001 - one bad connection must not end the endpoint
                    log.exception("prometheus endpoint: request failed")

    def close(self, timeout: float = 5.0) -> None:
        os.write(self._wake_w, b"\0")
        self._thread.join(timeout)
        self._httpd.server_close()
        os.close(self._wake_r)
        os.close(self._wake_w)
