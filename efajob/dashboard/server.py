"""`efajob dashboard serve`: the dashboard over HTTP, read-only, standard library only.

    GET /            the page (dashboard/page.py), refreshing itself; the query string is the
                     node table's view (dashboard/view.py: q, job, user, partition, state,
                     problem, sort, desc, page, per)
    GET /node/<cluster>/<host>, /jobs/<cluster>/<key>
                     a node's page, a job's page (dashboard/detail.py)
    GET /api/nodes   the nodes and cluster totals as JSON (dashboard.nodes_to_dict); with a
                     view in the query string, only that page of matching nodes
    GET /api/problems, /api/node/<cluster>/<host>, /api/job/<cluster>/<key>, /api/jobs,
        /api/history the problem summary, one node, one job (each with its history), running
                     and recent jobs, the cluster's history (dashboard/history.py)
    GET /job/<id>    one job's HTML report (`efajob report <id> --format html`); optional
                     ?cluster=NAME&restart=N when the id is ambiguous
    GET /healthz     "ok"; 503 while a store read hangs past its deadline (for a load
                     balancer or a systemd watchdog script)

Anything else is 404; any method but GET and HEAD is 405. The job id is unquoted, then
validated by slurm/jobid.py before it reaches find_job (which builds paths), so `/job/..%2F..%2Fetc`
is a 404 and never a path. Bound to loopback (the default), requests must name a loopback
host (`Host: localhost:9815`): a web page the viewer has open cannot read the dashboard
through DNS rebinding. There is no authentication: bind elsewhere only behind something that
has it.

The store is read at most once per `ttl` seconds whatever the number of viewers (one lock,
one snapshot), and a finished job's summary is kept until its directory changes: a refresh
costs a directory listing and the node status files, not every recent job's records.
"""
from __future__ import annotations

import gc
import gzip
import ipaddress
import json
import logging
import os
import signal
import socket
import threading
import time
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Dict, List, Optional, Tuple
from urllib.parse import parse_qs, quote, unquote, urlsplit

from efajob import __version__
from efajob.dashboard.model import (CSP, NAME_RE, Dashboard, NodeBase, job_to_dict,
                                    jobs_to_dict, node_base_from_bytes, node_to_dict, nodes_to_dict,
                                    problems_to_dict)
from efajob.report.nodeverdict import rules_key
from efajob.dashboard.history import History, history_block, history_to_dict
from efajob.dashboard.page import Links
from efajob.dashboard.view import parse_view, view_to_dict
from efajob.errors import AmbiguousJobError, EfajobError, JobNotFoundError, StoreError, UsageError
from efajob.dashboard import incremental
from efajob.dashboard.statusdir import StatusDir
from efajob.store.reader import NODES_DIR, list_clusters, list_job_dirs

log = logging.getLogger("efajob.dashboard")

DEFAULT_PORT = 9815
GZIP_MIN = 4096
NODES_TTL = 30.0  # Slurm's node list is asked at most this often (one sinfo per 30 s)
SUMMARY_TTL = 300.0  # a cached job summary is rebuilt at least this often (coarse NFS mtimes)
# How long a request waits for a store read before it answers from the last snapshot (or 503):
# a hung mount must cost each request this much at most, never the whole dashboard.
STORE_DEADLINE = 10.0
_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1", "[::1]")


def max_status_age(status_interval: float) -> float:
    """Older node status files are stale: four missed writes, never less than a minute."""
    return max(60.0, 4 * status_interval)


# What the refresh reads of a changed status file first: its head and devices, written before
# its 25 kB window (4.6 kB for 32 devices); a longer one is read again whole.
HEAD_BYTES = 8192


class Collector:
    """Reads the store into a Dashboard, at most once per `ttl` seconds, for every thread.

    The read runs in one refresh thread at a time; a request waits for it at most `deadline`
    seconds. A store that does not answer (a hung NFS mount) then gets the last snapshot with
    a note saying how old it is, or a StoreError (503) when there is none; the lock is never
    held across a read, so one hung read cannot wedge the other requests or outlive the hang.
    """

    def __init__(self, cfg, *, cluster: Optional[str] = None, limit: int = 20, ttl: float = 2.0,
                 use_slurm: bool = False, clock: Callable[[], float] = time.time,
                 mono: Callable[[], float] = time.monotonic, deadline: float = STORE_DEADLINE):
        self.cfg, self.cluster, self.limit, self.ttl = cfg, cluster, limit, ttl
        self.use_slurm, self.clock, self.mono, self.deadline = use_slurm, clock, mono, deadline
        self.max_age = max_status_age(cfg.status_interval)
        self._lock = threading.Lock()
        self._snap: Optional[Tuple[float, Dashboard]] = None
        self._summaries: Dict[Tuple[str, str, float], Tuple[float, dict]] = {}
        self._refresh: Optional[threading.Thread] = None
        self._refresh_since = 0.0
        self._error: Optional[BaseException] = None
        self._slurm_nodes: Optional[Tuple[float, Dict[str, str]]] = None
        # Between refreshes (refresh thread only), by cluster: each status file's NodeBase
        # (its parse and verdict), bounded by the files of the last refresh.
        self._dirs: Dict[str, StatusDir] = {}
        self._turn = 0  # the refresh's number: which files a refresh rechecks
        self._memo: Dict[str, object] = {}  # build_from_bases's, between refreshes
        self.history = History()  # a point per refresh, at most every 30 s (memory only)
        self._rules = rules_key(cfg.thresholds)

    def snapshot(self) -> Dashboard:
        with self._lock:
            if self._snap is not None and self.mono() - self._snap[0] < self.ttl:
                return self._snap[1]
            t = self._refresh
            if t is None:
                t = self._refresh = threading.Thread(target=self._run_refresh,
                                                     name="efajob-dashboard-refresh", daemon=True)
                self._refresh_since = self.mono()
                t.start()
            # What is left of the read's deadline: once it is stuck, requests answer at once.
            wait = max(0.0, self.deadline - (self.mono() - self._refresh_since))
        t.join(wait)
        with self._lock:
            if t.is_alive():  # the store has not answered
                stuck = self.mono() - self._refresh_since
                if self._snap is None:
                    raise StoreError(f"the job store {self.cfg.store} has not answered for "
                                     f"{stuck:.0f} s (a hung filesystem?)")
                age, d = self.mono() - self._snap[0], self._snap[1]
                note = (f"the job store has not answered for {stuck:.0f} s: showing what it "
                        f"held {age:.0f} s ago")
                return replace(d, notes=list(d.notes) + [note])
            if self._error is not None:
                raise self._error
            assert self._snap is not None
            return self._snap[1]

    def stuck_for(self) -> float:
        """Seconds the current store read has run beyond the deadline (0: none is stuck)."""
        with self._lock:
            if self._refresh is None:
                return 0.0
            return max(0.0, self.mono() - self._refresh_since - self.deadline)

    def _run_refresh(self) -> None:
        d: Optional[Dashboard] = None
        err: Optional[BaseException] = None
        try:
            d = self.collect()
        except Exception as e:  # noqa: BLE001 - handed to the waiting requests
            err = e
        if d is not None:
            self.history.add(d)  # before the snapshot is published: a page shows its point
        with self._lock:
            if d is not None:
                self._snap = (self.mono(), d)
            self._error, self._refresh = err, None

    def collect(self) -> Dashboard:
        # A refresh makes a few hundred thousand objects that live on as the model; the cyclic
        # collector's passes over them were a third of a 10,000-node refresh (bench/dashboard.py).
        # Reference counting frees the garbage meanwhile; the collector runs again after.
        was = gc.isenabled()
        gc.disable()
        try:
            return self._collect()
        finally:
            if was:
                gc.enable()

    def _collect(self) -> Dashboard:
        now = self.clock()
        store = self.cfg.store
        clusters = [self.cluster] if self.cluster else list_clusters(store)
        notes: List[str] = []
        removed: List[Tuple[str, object]] = []
        added: List[Tuple[str, object]] = []
        # Clusters that went are forgotten (their files' parses go with them); each
        # directory's files are kept as read (a read cut short leaves each file as it was or
        # as read: StatusDir).
        for c in self._dirs.keys() - set(clusters):
            removed += [(c, p) for p in self._dirs[c].parsed.values()]
        self._dirs = dirs = {c: self._dirs.get(c) or StatusDir() for c in clusters}
        try:
            for c in clusters:
                # A cluster directory's name may be anything: its files' nodes are unusable then.
                gone, came, n = dirs[c].refresh(
                    os.path.join(store, c, NODES_DIR), c,
                    self._parse if NAME_RE.fullmatch(c) else lambda _d, _c, _p, _w: None,
                    self._turn, HEAD_BYTES)
                removed += [(c, p) for p in gone]
                added += [(c, p) for p in came]
                notes += n
            self._turn += 1
            recent = self._recent(now, notes)
            slurm = self._node_list(notes) if self.use_slurm else None
            return incremental.build(lambda: [(c, p) for c, sd in dirs.items()  # type: ignore[misc]
                                              for p in sd.parsed.values()],
                                     removed, added, recent, now=now,  # type: ignore[arg-type]
                                     max_status_age=self.max_age, notes=notes,
                                     private=self.cfg.private_records, slurm_nodes=slurm,
                                     slurm_cluster=self.cluster or self.cfg.cluster,
                                     expire_after=self.cfg.status_expiry or None, memo=self._memo)
        except BaseException:
            # Files read but not built into the model, or totals moved half way: the next
            # refresh builds from scratch.
            self._memo = {}
            raise

    def _parse(self, data: bytes, cluster: str, previous: object, whole: bool) -> Optional[NodeBase]:
        return node_base_from_bytes(data, cluster, private=self.cfg.private_records,
                                    thresholds=self.cfg.thresholds, rules=self._rules,
                                    previous=previous if isinstance(previous, NodeBase) else None,
                                    whole=whole)

    def _node_list(self, notes: List[str]) -> Optional[Dict[str, str]]:
        """Slurm's {node: state}, asked at most once per NODES_TTL; None (and a note) when
        Slurm does not answer: the page then shows the status files alone."""
        from efajob.errors import SlurmError
        from efajob.slurm.adapter import CommandBackend

        if self._slurm_nodes is not None and self.mono() - self._slurm_nodes[0] < NODES_TTL:
            return self._slurm_nodes[1]
        try:
            nodes = CommandBackend().nodes()
        except SlurmError as e:
            notes.append(f"Slurm's node list is not available ({e})")
            return None
        if self._slurm_nodes is not None and self._slurm_nodes[1] == nodes:
            nodes = self._slurm_nodes[1]  # the same list: the refresh may move the last model
        self._slurm_nodes = (self.mono(), nodes)
        return nodes

    def _recent(self, now: float, notes: List[str]) -> List[dict]:
        from efajob.report.assemble import job_summary
        from efajob.store.reader import find_job, load_job, status_reader
        from efajob.report.build import build_report

        statuses = status_reader(self.cfg.store)  # once per refresh, not once per job
        rows: List[dict] = []
        keep: Dict[Tuple[str, str, float], Tuple[float, dict]] = {}
        for d in list_job_dirs(self.cfg.store, cluster=self.cluster):
            if len(rows) >= self.limit:
                break
            key = (d.cluster, d.job_id, d.mtime)
            hit = self._summaries.get(key)
            if hit is not None and self.mono() - hit[0] < SUMMARY_TTL:
                row = hit[1]
            else:
                try:
                    files = find_job(self.cfg.store, d.job_id, cluster=d.cluster, now=now,
                                     max_status_age=self.max_age, statuses=statuses)
                except EfajobError as e:  # an empty directory, a job being written
                    log.debug("job %s/%s left out: %s", d.cluster, d.job_id, e)
                    continue
                loaded = load_job(files)
                r = build_report(loaded.records, job_id=files.job_id, cluster=files.cluster,
                                 restart=files.restart, restarts=files.restarts, live=files.live,
                                 skipped=loaded.skipped, thresholds=self.cfg.thresholds, now=now)
                row = job_summary(r)
                hit = (self.mono(), row)
            if not row.get("running"):  # a running job's row changes without its directory
                keep[key] = hit
            rows.append(row)
        self._summaries = keep  # bounded: only the jobs of this listing
        return rows

    def job_report_html(self, job_id: str, cluster: Optional[str], restart: Optional[int]) -> str:
        from efajob.report.assemble import build_job_report
        from efajob.report.render.html import render_html

        r = build_job_report(self.cfg, job_id, cluster=cluster or self.cluster, restart=restart,
                             use_slurm=self.use_slurm, now=self.clock(),
                             warn=lambda m: log.warning("job %s: %s", job_id, m))
        if self.cfg.private_records:
            from efajob.report.model import without_owner

            r = without_owner(r)  # the page is for anyone who reaches the port
        return render_html(r)


def job_href(cluster: str, job_id: str, restart: int) -> str:
    return f"/job/{quote(job_id, safe='')}?cluster={quote(cluster, safe='')}" + (
        f"&restart={restart}" if restart else "")


def node_href(cluster: str, host: str) -> str:
    return f"/node/{quote(cluster, safe='')}/{quote(host, safe='')}"


def job_page_href(cluster: str, key: str) -> str:
    return f"/jobs/{quote(cluster, safe='')}/{quote(key, safe='')}"


LINKS = Links(report=job_href, node=node_href, job=job_page_href, table=True)


def _two(rest: str) -> Optional[Tuple[str, str]]:
    """`<cluster>/<name>` of a detail path, both in the store's name alphabet (a job key:
    `123`, `123_4.1`), else None (a 404)."""
    parts = rest.split("/")
    if len(parts) != 2 or not NAME_RE.fullmatch(parts[0]) or not NAME_RE.fullmatch(parts[1]):
        return None
    return parts[0], parts[1]


def _recent_row(d: Dashboard, cluster: str, key: str) -> Optional[dict]:
    for r in d.recent:
        restart = r.get("restart") or 0
        if r.get("cluster") == cluster and f"{r.get('job_id')}" + (f".{restart}" if restart else "") == key:
            return r
    return None


def _printable(s: str, limit: int = 200) -> str:
    # Request paths go to the log: no terminal escapes, no forged log lines.
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in s[:limit])


class Handler(BaseHTTPRequestHandler):
    server: "DashboardServer"
    _logged: Optional[Tuple[int, int]] = None  # (code, bytes) of the answer, for the log line
    server_version = f"efajob-dashboard/{__version__}"
    sys_version = ""
    timeout = 30  # a client that stops sending mid-request frees its thread

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        if self.command not in ("GET", "HEAD"):
            self.close_connection = True  # the body, if any, is not read
            self._send(405, "text/plain", b"method not allowed: this dashboard is read-only\n",
                       {"Allow": "GET, HEAD"})
            return False
        host = (self.headers.get("Host") or "").strip().lower()
        if host and self.server.loopback and _host_name(host) not in _LOOPBACK_NAMES:
            self._send(421, "text/plain", b"misdirected request: this dashboard answers to "
                       b"localhost only (use an SSH tunnel, or --bind)\n")
            return False
        return True

    def do_GET(self) -> None:
        self._route()

    def do_HEAD(self) -> None:
        self._route()

    def _route(self) -> None:
        url = urlsplit(self.path)
        path = url.path
        try:
            if path in ("/", "/index.html"):
                self._page(parse_qs(url.query))
            elif path == "/api/nodes":
                d = self.server.collector.snapshot()
                self._json(view_to_dict(d, parse_view(parse_qs(url.query))) if url.query
                           else nodes_to_dict(d))
            elif path == "/api/history":
                self._json(history_to_dict(self.server.collector.history, "cluster"))
            elif path == "/api/problems":
                self._json(problems_to_dict(self.server.collector.snapshot()))
            elif path.startswith(("/node/", "/api/node/")):
                self._node(path.startswith("/api/"), unquote(path.split("/node/", 1)[1]))
            elif path.startswith(("/jobs/", "/api/job/")):
                self._job_page(path.startswith("/api/"), unquote(path.split("/", 3)[-1]
                                                                 if path.startswith("/api/") else path[6:]))
            elif path == "/api/jobs":
                self._json(jobs_to_dict(self.server.collector.snapshot()))
            elif path.startswith("/job/"):
                self._job(unquote(path[len("/job/"):]), parse_qs(url.query))
            elif path == "/healthz":
                stuck = self.server.collector.stuck_for()
                if stuck:
                    self._send(503, "text/plain", f"store not answering: {stuck:.0f} s past the "
                               f"{self.server.collector.deadline:g} s deadline\n".encode())
                else:
                    self._send(200, "text/plain", b"ok\n")
            else:
                self._send(404, "text/plain", b"not found\n")
        except (JobNotFoundError, UsageError) as e:  # an unknown or malformed job id
            self._send(404, "text/plain", f"{e}\n".encode())
        except AmbiguousJobError as e:
            self._send(409, "text/plain", f"{e}\n".encode())
        except EfajobError as e:  # the store is unreadable: say so, keep serving
            self._send(503, "text/plain", f"{e}\n".encode())
        except Exception:  # a bug must not kill the server or leak a traceback to the page
            log.exception("error answering %s", _printable(self.path))
            self._send(500, "text/plain", b"internal error (see the dashboard's log)\n")

    def _page(self, query: Dict[str, List[str]]) -> None:
        from efajob.dashboard.page import render_dashboard

        d = self.server.collector.snapshot()
        hist = history_block(self.server.collector.history.series("cluster"), "cluster")
        page = render_dashboard(d, refresh=self.server.refresh, links=LINKS, view=parse_view(query),
                                store=self.server.collector.cfg.store, history=hist)
        self._send(200, "text/html", page.encode("utf-8"))

    def _node(self, api: bool, rest: str) -> None:
        from efajob.dashboard.detail import render_node_page

        d = self.server.collector.snapshot()
        where = _two(rest)
        n = d.by_host.get(where) if where else None
        if n is None:
            self._send(404, "text/plain", b"no such node\n")
        else:
            hist = self.server.collector.history
            if api:
                self._json(dict(node_to_dict(n, d.generated), history=hist.series("node", where)))
                return
            page = render_node_page(d, n, LINKS, refresh=self.server.refresh,
                                    history=history_block(hist.series("node", where), n.host))
            self._send(200, "text/html", page.encode("utf-8"))

    def _job_page(self, api: bool, rest: str) -> None:
        from efajob.dashboard.detail import render_job_page

        d = self.server.collector.snapshot()
        where = _two(rest)
        running = d.by_job.get(where) if where else None
        summary = _recent_row(d, *where) if where else None
        if where is None or (running is None and summary is None):
            self._send(404, "text/plain", b"no such running or recent job\n")
        else:
            series = self.server.collector.history.series("job", where)
            if api:
                self._json(dict(job_to_dict(d, running, summary), history=series))
                return
            page = render_job_page(d, where[0], where[1], running, summary, LINKS,
                                   refresh=self.server.refresh,
                                   history=history_block(series, f"job {where[1]}") if running else "")
            self._send(200, "text/html", page.encode("utf-8"))

    def _json(self, doc: dict) -> None:
        self._send(200, "application/json", (json.dumps(doc, indent=1) + "\n").encode())

    def _job(self, job_id: str, query: Dict[str, List[str]]) -> None:
        from efajob.config import validate_name
        from efajob.slurm.jobid import parse_restart, validate_job_id

        validate_job_id(job_id)  # before the id comes near a path: UsageError -> 404
        cluster = _first(query, "cluster")
        if cluster is not None:
            try:
                validate_name("cluster", cluster)
            except EfajobError as e:
                raise UsageError(str(e)) from None
        restart = _first(query, "restart")
        html = self.server.collector.job_report_html(
            job_id, cluster, parse_restart(restart) if restart is not None else None)
        self._send(200, "text/html", html.encode("utf-8"))

    def _send(self, code: int, ctype: str, body: bytes, extra: Optional[Dict[str, str]] = None) -> None:
        extra = dict(extra or {})
        # A 256-node page is ~2 MB of repetitive markup (device bars): ~10x smaller gzipped,
        # which matters through an SSH tunnel every refresh.
        if len(body) > GZIP_MIN and "gzip" in (self.headers.get("Accept-Encoding") or "").lower():
            body = gzip.compress(body, compresslevel=5)
            extra.update({"Content-Encoding": "gzip", "Vary": "Accept-Encoding"})
        self.send_response(code)
        self.send_header("Content-Type", f"{ctype}; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Content-Security-Policy", CSP + "; frame-ancestors 'none'")
        for k, v in extra.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self._logged = (code, len(body))

    def log_request(self, code="-", size="-") -> None:
        pass  # one line per request from _send's numbers, in handle_one_request below

    def log_message(self, fmt: str, *args) -> None:
        log.warning("%s %s", self.client_address[0], _printable(fmt % args))

    def handle_one_request(self) -> None:
        self._logged = None
        t0 = time.monotonic()
        super().handle_one_request()
        if self._logged is not None:
            code, size = self._logged
            log.info('%s "%s %s" %d %d %.1f ms', self.client_address[0], self.command,
                     _printable(self.path), code, size, (time.monotonic() - t0) * 1000)


def _first(query: Dict[str, List[str]], name: str) -> Optional[str]:
    """The first value of a query parameter, None when it is absent."""
    values = query.get(name)
    return values[0] if values else None


def _host_name(host: str) -> str:
    """`localhost:9815` -> `localhost`; `[::1]:9815` -> `[::1]`."""
    if host.startswith("["):
        return host.split("]")[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def is_loopback(bind: str) -> bool:
    if bind == "localhost":
        return True
    try:
        return ipaddress.ip_address(bind).is_loopback
    except ValueError:
        return False


class DashboardServer(ThreadingHTTPServer):
    daemon_threads = True  # a stuck client never delays stopping
    allow_reuse_address = True

    def __init__(self, bind: str, port: int, collector: Collector, *, refresh: int = 10):
        if ":" in bind:
            self.address_family = socket.AF_INET6
        self.collector, self.refresh, self.loopback = collector, refresh, is_loopback(bind)
        try:
            super().__init__((bind, port), Handler)
        except OSError as e:
            raise UsageError(f"cannot listen on {bind}:{port}: {e.strerror or e}") from None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        assert isinstance(host, str)  # AF_INET or AF_INET6: (host, port, ...), host a string
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}/"


def run(server: DashboardServer) -> None:
    """Serve until SIGTERM, SIGINT or Ctrl-C, then close the socket. Main thread only."""

    def stop(signum, _frame) -> None:
        log.info("signal %d: stopping", signum)
        # shutdown() waits for serve_forever() to return: never call it from that thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    old = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        server.server_close()
        log.info("stopped")
