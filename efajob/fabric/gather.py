"""What `efajob nodes` scores, read: node-job rows from the job index (a single query) or, without
one, from a scan of the store (a report built per job, as `index rebuild` does); and each
node's daemon baseline from its status file. Thin I/O around pure parsing (`parse_baseline`).
Library code: raises, warns through a callback.
"""
from __future__ import annotations

import os
import re
from typing import Callable, Dict, List, Mapping, Optional, Set, Tuple

from efajob.errors import EfajobError
from efajob.fabric.score import Baseline, History, NodeJob
from efajob.values import as_number

Warn = Callable[[str], None]


def parse_baseline(doc: object, now: float, max_age: float) -> Optional[Baseline]:
    """A node status document (daemon/nodestatus.py) -> Baseline, or None when it is not one,
    or stale (a daemon that stopped says nothing about now)."""
    if not isinstance(doc, dict) or doc.get("schema") != "efajob/node-status":
        return None
    t = as_number(doc.get("time"))
    node, cluster = doc.get("node"), doc.get("cluster")
    if t is None or now - t > max_age or not isinstance(node, str) or not isinstance(cluster, str):
        return None
    devices = doc.get("devices")
    devs = devices if isinstance(devices, list) else []
    errors: Set[str] = set()
    for d in devs:
        errs = d.get("errors") if isinstance(d, dict) else None
        if isinstance(errs, dict):
            errors.update(k for k, v in errs.items() if isinstance(k, str) and (as_number(v) or 0) > 0)
    rates = doc.get("error_rates")
    if isinstance(rates, dict):
        errors.update(k for k, v in rates.items() if isinstance(k, str) and (as_number(v) or 0) > 0)
    exp = as_number(doc.get("expected_devices"))
    return Baseline(cluster=cluster, node=node, devices=len(devs),
                    expected_devices=int(exp) if exp is not None and isinstance(devices, list)
                    else None, errors=tuple(sorted(errors)))


# The daemon writes its status file compactly with sorted keys (daemon/nodestatus.py):
# `"port_counters":N` once per entry of `devices` and nowhere else, error objects `{}` when
# nothing rose. A file whose bytes show no non-empty error object and at least the expected
# number of devices has no problem to parse for: 32 devices' `recent` window make a status file
# ~30 KB, and parsing 2,000 of them would be most of `efajob nodes` (bench/nodes.py).
_ERRORS_RE = re.compile(rb'"(?:errors|error_rates)"\s*:\s*\{\s*"')
_EXPECTED_RE = re.compile(rb'"expected_devices"\s*:\s*([0-9]+)')
_PORT_COUNTERS = b'"port_counters":'


def quick_baseline(data: bytes, cluster: str, node: str) -> Optional[Baseline]:
    """The Baseline of a status file with nothing wrong, from its bytes; None when the bytes
    do not prove that (then the file is parsed)."""
    if _ERRORS_RE.search(data):
        return None
    m = _EXPECTED_RE.search(data)
    devices = data.count(_PORT_COUNTERS)
    if m is None:
        return None if b'"expected_devices":null' not in data else Baseline(
            cluster=cluster, node=node, devices=devices, expected_devices=None, errors=())
    expected = int(m.group(1))
    if devices < expected:
        return None
    return Baseline(cluster=cluster, node=node, devices=devices, expected_devices=expected,
                    errors=())


def read_baselines(store: str, cluster: Optional[str], now: float, max_age: float, *,
                   quick: bool = True) -> Dict[Tuple[str, str], Baseline]:
    """{(cluster, node): Baseline} of the fresh node status files (fresh: modified within
    `max_age`, as the daemon rewrites its file every few seconds; then the document's own
    time is checked too when it is parsed)."""
    from efajob.store.reader import MAX_STATUS_BYTES, NODES_DIR, _clusters_to_search, _listdir
    from efajob.values import loads_checked, read_regular

    out: Dict[Tuple[str, str], Baseline] = {}
    for c in _clusters_to_search(store, cluster):
        d = os.path.join(store, c, NODES_DIR)
        try:
            names = _listdir(d, "node status directory")
        except EfajobError:
            continue  # no daemon has published yet
        for name in names:
            if not name.endswith(".json") or name.startswith("."):
                continue
            path = os.path.join(d, name)
            try:
                if now - os.stat(path).st_mtime > max_age:
                    continue  # its daemon stopped: it says nothing about now
                data = read_regular(path, MAX_STATUS_BYTES)
                b = quick_baseline(data, c, name[:-5]) if quick else None
                if b is None:
                    b = parse_baseline(loads_checked(data), now, max_age)
            except (OSError, ValueError):
                continue  # rewritten every few seconds: unreadable now is not a finding
            if b is not None and b.cluster == c:
                out[(c, b.node)] = b
    return out


def history_from_index(cfg, *, since: Optional[float], cluster: Optional[str]) -> History:
    from efajob.index import db

    path = cfg.job_index_path
    conn = db.open_store_reader(path, cfg.store)
    try:
        totals = {(c, n): (runs, multi) for c, n, runs, multi in
                  db.count_node_jobs(conn, since=since, cluster=cluster)}
        marked = [NodeJob(c, n, j, r, e, nn, tuple(codes.split()))
                  for c, n, j, r, e, nn, codes in db.query_node_jobs(
                      conn, since=since, cluster=cluster, marked_only=True)]
        return History(totals, marked)
    finally:
        conn.close()


def _no_statuses(cluster: str) -> Dict:
    return {}  # finished runs only: a running job has no findings per node yet


def rows_from_scan(cfg, *, since: Optional[float], cluster: Optional[str], now: float,
                   euid: Optional[int] = None) -> List[NodeJob]:
    """The same rows as the index's, from the records: one report per job run."""
    from efajob.index.update import node_rows
    from efajob.report.assemble import _build_from, not_yours, private_view
    from efajob.store.reader import find_job, list_job_dirs, load_job

    private = private_view(cfg, euid)
    out: List[NodeJob] = []
    for d in list_job_dirs(cfg.store, cluster=cluster, since=since):
        try:
            files = find_job(cfg.store, d.job_id, cluster=d.cluster, statuses=_no_statuses)
        except EfajobError:
            continue  # an empty directory: a record on its way
        for restart in files.restarts:
            run = files if restart == files.restart else find_job(
                cfg.store, d.job_id, cluster=d.cluster, restart=restart, statuses=_no_statuses)
            loaded = load_job(run)
            if not_yours(loaded, run, private):
                continue
            for c, n, j, r, e, nn, codes in node_rows(_build_from(cfg, run, loaded, now)):
                if since is None or e is None or e >= since:
                    out.append(NodeJob(c, n, j, r, e, nn, tuple(codes.split())))
    return out


def gather(cfg, *, since: Optional[float], cluster: Optional[str], now: float,
           use_index: bool = True, baseline: bool = True, euid: Optional[int] = None,
           warn: Warn = lambda msg: None,
           ) -> Tuple[History, Mapping[Tuple[str, str], Baseline], str]:
    """(the node-job history, baselines, "index" or "scan")."""
    from efajob.index.listing import read_index

    history: Optional[History] = None
    source = "scan"
    if use_index:
        history = read_index(cfg, euid, lambda: history_from_index(cfg, since=since,
                                                                   cluster=cluster), warn)
        source = "index" if history is not None else "scan"
    if history is None:
        history = History.from_rows(rows_from_scan(cfg, since=since, cluster=cluster, now=now,
                                                   euid=euid))
    max_age = max(60.0, 4 * cfg.status_interval)
    bases = read_baselines(cfg.store, cluster, now, max_age) if baseline else {}
    return history, bases, source
