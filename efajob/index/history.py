"""The previous runs of a job (same cluster, name and user) for `efajob compare` and the
report's history section: from the job index (one indexed query, `jobs_name`), or, for
`compare` only, from a scan of the store when there is no usable index (with a warning; the
report never scans: its cost must not grow with the store).
"""
from __future__ import annotations

import os
from typing import Callable, List, Optional, Tuple

from efajob.errors import JobIndexError
from efajob.index import db
from efajob.report.jobfilter import JobFilter


def _earlier(job: dict, rows: List[dict], limit: int) -> List[dict]:
    start = job.get("start")
    out = [r for r in rows if not r.get("running") and r["job_id"] != job["job_id"]
           and (start is None or (r.get("start") is not None and r["start"] < start))]
    return out[:limit]


def indexed_name(cfg, cluster: str, job_id: str, restart: int) -> Optional[str]:
    """The name the index holds for a job (asked of Slurm by `index update`), or None."""
    try:
        conn = db.open_reader(cfg.job_index_path)
    except JobIndexError:
        return None
    try:
        row = conn.execute("SELECT name FROM jobs WHERE cluster = ? AND job_id = ? AND "
                           "restart = ?", (cluster, job_id, restart)).fetchone()
        return row[0] if row else None
    finally:
        conn.close()


def previous_runs(cfg, job: dict, *, limit: int, scan: bool, euid: Optional[int] = None,
                  warn: Callable[[str], None] = lambda msg: None) -> Tuple[List[dict], str]:
    """(rows, "index" | "scan" | "none"): up to `limit` runs of `job`'s name and user on its
    cluster that started before it, newest first. "none": no name or user, or (scan=False)
    no usable index."""
    from efajob.report.assemble import list_jobs, private_view

    if not job.get("name") or not job.get("user"):
        return [], "none"
    # sacct's window: started before this run started (then _earlier drops this run itself).
    flt = JobFilter(users=frozenset({job["user"]}), names=frozenset({job["name"]}),
                    end=job.get("start"))
    want = limit + 1  # this run may be among them
    if not private_view(cfg, euid):
        try:
            conn = db.open_reader(cfg.job_index_path)
            try:
                if db.get_meta(conn, "store") != os.path.abspath(cfg.store):
                    raise JobIndexError(f"the job index {cfg.job_index_path} is of another store")
                rows = db.query(conn, flt, limit=want, cluster=job["cluster"])
            finally:
                conn.close()
            return _earlier(job, rows, limit), "index"
        except JobIndexError as e:
            if not scan:
                return [], "none"
            warn(f"{e}; scanning the store for the previous runs instead (slow on a big store)")
    elif not scan:
        return [], "none"
    rows = list_jobs(cfg, limit=want, cluster=job["cluster"], euid=euid, match=flt.match)
    return _earlier(job, rows, limit), "scan"
