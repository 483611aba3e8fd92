"""`efajob accounting sync`: put each finished job's summary into its AdminComment in
slurmdbd, from the job index (the head node's one writer; run by `efajob index update` when
Slurm keeps accounting in slurmdbd and `accounting.admin_comment` is not off).

A job is written once all its nodes' records are in the index (records >= nodes) or
`accounting.settle_s` after its last one landed (a node that never reports), and written
again if a late record changes its row. What a run costs: one indexed query for the rows
landed within `accounting.max_age_days` not yet handled, one `sacct` per 200 of them, one
`sacctmgr` per job to write. Slurm errors stop nothing: the job is retried on a later run.
"""
from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from efajob.accounting.slurmdb import SlurmDB, pick
from efajob.accounting.summary import VERDICTS, encode, from_row, merge, sacctmgr_alters
from efajob.errors import SlurmError
from efajob.index import db

RETRY_S = 60.0          # a job not yet finished in slurmdbd, or not there yet
ERROR_RETRY_S = 600.0   # sacctmgr failed for this job
ABSENT_AFTER_S = 86400.0  # still not in slurmdbd a day after landing: given up (status absent)
BATCH = 1000            # jobs handled per run at most (the rest the next run)


@dataclass
class SyncStats:
    cluster: str = ""
    pending: int = 0
    written: int = 0      # written, appended or replaced
    unchanged: int = 0
    skipped: int = 0      # a site's own text under `skip`, or text sacctmgr would alter
    waiting: int = 0      # not finished in slurmdbd yet, or not there yet
    errors: List[str] = field(default_factory=list)
    by_status: Dict[str, int] = field(default_factory=dict)


def slurm_version(config: Dict[str, str]) -> Tuple[int, int]:
    """(major, minor) from `scontrol show config`'s SLURM_VERSION ("22.05.8"); (0, 0) when
    unknown, which sacctmgr_alters treats as the oldest (the cautious side)."""
    parts = config.get("SLURM_VERSION", "").split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return 0, 0


def slurmdbd_cluster(config: Dict[str, str]) -> Tuple[Optional[str], Optional[str]]:
    """(Slurm's ClusterName, None) when slurmctld keeps accounting in slurmdbd, else
    (None, why not). `config`: `scontrol show config` parsed."""
    kind = config.get("AccountingStorageType", "")
    if "slurmdbd" not in kind:
        return None, f"Slurm's AccountingStorageType is {kind or 'unset'}, not slurmdbd"
    cluster = config.get("ClusterName")
    if not cluster:
        return None, "Slurm's configuration has no ClusterName"
    return cluster, None


_ROW_COLS = ", ".join(f'j."{c}"' for c in db.COLUMNS)


def pending(conn: sqlite3.Connection, cluster: str, *, now: float, settle_s: float,
            max_age_s: float, limit: int = BATCH) -> List[dict]:
    """The latest rows of `cluster` due a write: finished (a verdict a summary carries),
    complete or settled, landed within max_age_s, and not handled at this landing time
    (or due a retry). Oldest first, so a backlog drains in order."""
    sql = (f"SELECT {_ROW_COLS}, j.records, j.landed FROM jobs j "
           "LEFT JOIN acct a ON a.cluster = j.cluster AND a.job_id = j.job_id "
           "WHERE j.latest = 1 AND j.cluster = ? AND j.landed >= ? "
           f"AND j.verdict IN ({', '.join('?' * len(VERDICTS))}) "
           "AND (j.records >= COALESCE(j.num_nodes, 1) OR j.landed <= ?) "
           "AND (a.job_id IS NULL OR a.landed != j.landed OR (a.retry_at > 0 AND a.retry_at <= ?)) "
           "ORDER BY j.landed LIMIT ?")
    out = []
    for values in conn.execute(sql, (cluster, now - max_age_s, *VERDICTS, now - settle_s, now,
                                     limit)):
        row = db.from_db(values[:len(db.COLUMNS)])
        row["records"], row["landed"] = values[len(db.COLUMNS):]
        out.append(row)
    return out


def _mark(conn: sqlite3.Connection, row: dict, status: str, now: float, retry_at: float,
          stats: SyncStats) -> None:
    conn.execute("INSERT OR REPLACE INTO acct VALUES (?, ?, ?, ?, ?, ?)",
                 (row["cluster"], row["job_id"], row["landed"], status, now, retry_at))
    stats.by_status[status] = stats.by_status.get(status, 0) + 1


def sync(conn: sqlite3.Connection, slurmdb: SlurmDB, cluster: str, *, policy: str,
         now: float, settle_s: float, max_age_s: float, version: Tuple[int, int],
         limit: int = BATCH) -> SyncStats:
    """Write the summaries due (see pending) and record what came of each in `acct`.
    SlurmError only when sacct cannot be read at all (nothing is marked then)."""
    stats = SyncStats(cluster=cluster)
    rows = pending(conn, cluster, now=now, settle_s=settle_s, max_age_s=max_age_s, limit=limit)
    stats.pending = len(rows)
    if not rows:
        return stats
    found = slurmdb.read([r["job_id"] for r in rows], cluster)
    for row in rows:
        job = pick(found.get(row["job_id"], ()), row.get("user"))
        if job is None:
            if found.get(row["job_id"]):
                _mark(conn, row, "ambiguous", now, 0, stats)  # an id Slurm reused: not guessed
                stats.skipped += 1
            elif now - row["landed"] > ABSENT_AFTER_S:
                _mark(conn, row, "absent", now, 0, stats)
            else:
                _mark(conn, row, "waiting", now, now + RETRY_S, stats)
                stats.waiting += 1
            continue
        if not job.finished:
            _mark(conn, row, "waiting", now, now + RETRY_S, stats)
            stats.waiting += 1
            continue
        summary = from_row(row)
        if summary is None:  # pending() selects rows with a verdict: cannot happen
            continue
        value, why = merge(job.admin_comment, encode(summary), policy)
        if value is None:
            status = why.split(":")[0]
            _mark(conn, row, status, now, 0, stats)
            stats.unchanged += status == "unchanged"
            stats.skipped += status != "unchanged"
            continue
        if sacctmgr_alters(value, version):
            _mark(conn, row, "skipped", now, 0, stats)  # sacctmgr would alter the site's text
            stats.skipped += 1
            continue
        try:
            slurmdb.write(job.job_id_raw, cluster, row.get("user"), value)
        except SlurmError as e:
            _mark(conn, row, "error", now, now + ERROR_RETRY_S, stats)
            stats.errors.append(f"job {row['job_id']}: {e}")
            continue
        _mark(conn, row, why, now, 0, stats)
        stats.written += 1
    return stats


def run(cfg, backend, *, now: Optional[float] = None,
        config: Optional[Dict[str, str]] = None) -> Tuple[Optional[SyncStats], Optional[str]]:
    """One sync under the index's writer lock: (stats, None), or (None, why it did not run:
    policy off, no index, Slurm without slurmdbd). SlurmError when Slurm cannot be asked."""
    acct = cfg.accounting
    if acct.admin_comment == "off":
        return None, "accounting.admin_comment is off"
    path = cfg.job_index_path
    if not os.path.exists(path):
        return None, f"no job index at {path} (`efajob index update` makes one)"
    config = config if config is not None else backend.show_config()
    cluster, why = slurmdbd_cluster(config)
    if cluster is None:
        return None, why
    now = time.time() if now is None else now
    with db.writer_lock(path):
        conn = db.open_writer(path)
        try:
            with conn:
                return sync(conn, SlurmDB(backend), cluster, policy=acct.admin_comment, now=now,
                            settle_s=acct.settle_s,
                            max_age_s=acct.max_age_days * 86400.0,
                            version=slurm_version(config)), None
        finally:
            conn.close()
