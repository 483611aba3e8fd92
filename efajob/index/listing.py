"""`efajob jobs`: the job index when there is one, the scan of the store when not.

Running jobs (in node status files, no job directory yet) are not in the index: they come
from the status files either way, read once. The scan is the fallback, with a warning:
no index, one of another version or store, or a private view (private_records, not root:
the index names the users of every job and is root's, mode 0600; docs/jobindex.md).
"""
from __future__ import annotations

import os
import time
from typing import Callable, List, Optional, Tuple, TypeVar

from efajob.errors import JobIndexError
from efajob.index import db
from efajob.report.jobfilter import JobFilter

T = TypeVar("T")

STALE = 900.0  # an index not updated for 15 min: its timer or service has stopped


def _from_index(cfg, flt: JobFilter, *, limit: int, cluster: Optional[str],
                since: Optional[float], now: float, warn: Callable[[str], None]) -> List[dict]:
    from efajob.report.assemble import running_rows
    from efajob.store.reader import status_reader

    path = cfg.job_index_path
    conn = db.open_store_reader(path, cfg.store)
    try:
        updated = db.get_meta(conn, "updated")
        if updated is not None and now - float(updated) > STALE:
            warn(f"the job index {path} was last updated {(now - float(updated)) / 60:.0f} min "
                 "ago: newer jobs are missing (is `efajob index update` still run?)")

        def keep(row: dict) -> bool:
            end = row.get("end") or row.get("start") or now
            return flt.match(row) and (since is None or end >= since)

        # `--state CD`: no running job can match, and 2,000 status files are most of the cost.
        live = not flt.states or "RUNNING" in flt.states
        out = running_rows(cfg, status_reader(cfg.store), cluster=cluster, now=now, keep=keep,
                           limit=limit) if live else []
        if len(out) < limit:
            out += db.query(conn, flt, limit=limit - len(out), cluster=cluster, since=since)
        return out
    finally:
        conn.close()


def read_index(cfg, euid: Optional[int], read: Callable[[], T],
               warn: Callable[[str], None]) -> Optional[T]:
    """read() from the job index, or None (said through `warn`) when the caller must scan the
    store instead: under private_records the index is root's (it holds every user's rows), and
    a missing, old or broken index is a JobIndexError."""
    from efajob.report.assemble import private_view

    if private_view(cfg, euid):
        if os.path.exists(cfg.job_index_path):
            warn("private_records: the job index is root's; scanning the store "
                 "(only the jobs whose records you can read)")
        return None
    try:
        return read()
    except JobIndexError as e:
        warn(f"{e}; scanning the store instead (slow on a big store)")
        return None


def recent_jobs(cfg, flt: JobFilter, *, limit: int = 20, cluster: Optional[str] = None,
                since: Optional[float] = None, now: Optional[float] = None,
                use_index: bool = True, euid: Optional[int] = None,
                warn: Callable[[str], None] = lambda msg: None) -> Tuple[List[dict], str]:
    """(rows, "index" or "scan"): what `efajob jobs` lists, newest first."""
    from efajob.report.assemble import list_jobs

    now = time.time() if now is None else now
    if use_index:
        got = read_index(cfg, euid, lambda: _from_index(cfg, flt, limit=limit, cluster=cluster,
                                                        since=since, now=now, warn=warn), warn)
        if got is not None:
            return got, "index"
    rows = list_jobs(cfg, users=flt.users, since=since, limit=limit, cluster=cluster, now=now,
                     euid=euid, match=flt.match)
    return rows, "scan"
