"""Retention for the job store: `efajob index prune` removes old job directories and their
index rows together (config `[store_retention]`, docs/jobindex.md).

Two bounds, either or both: an age (directories whose last record landed more than
`max_age_days` ago) and a size (then the oldest directories until the store's records fit in
`max_gb`). Directories that are not settled (a record landed in the last day: `update.SETTLE`)
are never removed, whatever the bounds: their job may still be delivering records. The plan
is pure (`plan_prune`, table-tested); `prune` is the thin part: it runs under the index's
writer lock (one writer), brings the index up to date first (the plan is made from it, so
nothing the store holds is left uncounted), removes each directory and its rows in the same
transaction, and is a dry run unless told otherwise.
"""
from __future__ import annotations

import os
import shutil
import sqlite3
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Tuple

from efajob.errors import JobIndexError, StoreError, UsageError
from efajob.index import db

GB = 1e9  # decimal, as the rest of efajob's sizes
BATCH = 500  # directories removed per index commit


@dataclass(frozen=True)
class JobDir:
    cluster: str
    job_id: str
    landed: float  # the directory's mtime: when its last record arrived
    nbytes: int


@dataclass
class PrunePlan:
    remove: List[JobDir] = field(default_factory=list)  # oldest first
    kept: int = 0
    kept_bytes: int = 0

    @property
    def removed_bytes(self) -> int:
        return sum(d.nbytes for d in self.remove)


def plan_prune(dirs: Sequence[JobDir], *, now: float, max_age_s: float, max_bytes: float,
               settle_s: float) -> PrunePlan:
    """Which directories go: older than `max_age_s` (0: no age bound), then the oldest until
    the rest weigh at most `max_bytes` (0: no size bound); never one younger than `settle_s`."""
    order = sorted(dirs, key=lambda d: (d.landed, d.cluster, d.job_id))
    go = [d for d in order if max_age_s > 0 and now - d.landed > max_age_s]
    rest = [d for d in order if not (max_age_s > 0 and now - d.landed > max_age_s)]
    total = sum(d.nbytes for d in rest)
    keep: List[JobDir] = []
    for d in rest:  # oldest first
        if max_bytes > 0 and total > max_bytes and now - d.landed > settle_s:
            go.append(d)
            total -= d.nbytes
        else:
            keep.append(d)
    go = [d for d in go if now - d.landed > settle_s]
    plan = PrunePlan(remove=sorted(go, key=lambda d: (d.landed, d.cluster, d.job_id)))
    gone = {(d.cluster, d.job_id) for d in plan.remove}
    kept = [d for d in order if (d.cluster, d.job_id) not in gone]
    plan.kept, plan.kept_bytes = len(kept), sum(d.nbytes for d in kept)
    return plan


def read_dirs(conn: sqlite3.Connection, store: str) -> List[JobDir]:
    """Every job directory the index knows, with its records' size (rows indexed before
    version 2 have none: their files are stat'ed now)."""
    from efajob.store.reader import JOBS_DIR

    out = []
    for cluster, job_id, mtime, nbytes, unknown in conn.execute(
            "SELECT d.cluster, d.job_id, d.mtime, COALESCE(SUM(j.bytes), 0), "
            "SUM(j.bytes IS NULL AND j.job_id IS NOT NULL) FROM dirs d LEFT JOIN jobs j "
            "ON j.cluster = d.cluster AND j.job_id = d.job_id GROUP BY d.cluster, d.job_id"):
        if unknown:
            nbytes = _dir_bytes(os.path.join(store, cluster, JOBS_DIR, job_id))
        out.append(JobDir(cluster, job_id, mtime, int(nbytes)))
    return out


def _dir_bytes(path: str) -> int:
    total = 0
    try:
        with os.scandir(path) as it:
            for e in it:
                if e.is_file(follow_symlinks=False):
                    total += e.stat(follow_symlinks=False).st_size
    except OSError:
        pass
    return total


def bounds(cfg, max_age_days: Optional[float], max_gb: Optional[float]) -> Tuple[float, float]:
    """(max age in seconds, max bytes) from the options, else `[store_retention]`; a
    UsageError when there is neither bound (pruning with none would remove nothing)."""
    age = cfg.store_retention.max_age_days if max_age_days is None else max_age_days
    size = cfg.store_retention.max_gb if max_gb is None else max_gb
    if age < 0 or size < 0:
        raise UsageError("retention bounds must not be negative")
    if not age and not size:
        raise UsageError("no retention bound: set [store_retention] max_age_days or max_gb "
                         "in the config, or give --max-age-days / --max-gb")
    return age * 86400.0, size * GB


def _remove_dir(conn: sqlite3.Connection, store: str, d: JobDir) -> None:
    from efajob.config import validate_name
    from efajob.slurm.jobid import is_job_id
    from efajob.store.reader import JOBS_DIR

    # Names from the index, checked again before they become a path to delete.
    validate_name("cluster", d.cluster)
    if not is_job_id(d.job_id):
        raise JobIndexError(f"job index row {d.job_id!r} is not a job id")
    target = os.path.join(store, d.cluster, JOBS_DIR, d.job_id)
    try:
        shutil.rmtree(target)
    except FileNotFoundError:
        pass  # removed meanwhile (by hand): its rows go all the same
    except OSError as e:  # its rows stay: the next prune tries again
        raise StoreError(f"cannot remove {target}: {e.strerror or e}") from None
    conn.execute("DELETE FROM jobs WHERE cluster = ? AND job_id = ?", (d.cluster, d.job_id))
    conn.execute("DELETE FROM dirs WHERE cluster = ? AND job_id = ?", (d.cluster, d.job_id))
    conn.execute("DELETE FROM node_jobs WHERE cluster = ? AND job_id = ?", (d.cluster, d.job_id))
    conn.execute("DELETE FROM acct WHERE cluster = ? AND job_id = ?", (d.cluster, d.job_id))


def prune(cfg, *, max_age_s: float, max_bytes: float, apply: bool, now: float,
          on_removed: Callable[[JobDir], None] = lambda d: None) -> PrunePlan:
    """Plan (and with `apply`, carry out) the removal. The index must exist: the plan is made
    from it (JobIndexError otherwise)."""
    from efajob.index.update import SETTLE, _sync

    path = cfg.job_index_path
    if not os.path.exists(path):
        raise JobIndexError(f"no job index at {path}: prune plans from it "
                            "(`efajob index update` makes one)")
    with db.writer_lock(path):
        conn = db.open_writer(path)
        try:
            if db.get_meta(conn, "store") not in (None, os.path.abspath(cfg.store)):
                raise JobIndexError(f"job index {path} indexes the store "
                                    f"{db.get_meta(conn, 'store')}, not {cfg.store}: "
                                    "not pruning by it")
            with conn:
                _sync(conn, cfg, full=False, now=now, progress=None)  # what landed meanwhile
            plan = plan_prune(read_dirs(conn, cfg.store), now=now, max_age_s=max_age_s,
                              max_bytes=max_bytes, settle_s=SETTLE)
            if not apply:
                return plan
            # Rows are deleted in batches (a commit per directory would be an fsync each);
            # a crash between a removal and its commit leaves rows that the next update drops
            # (a directory gone from the store leaves the index).
            for i in range(0, len(plan.remove), BATCH):
                with conn:
                    for d in plan.remove[i:i + BATCH]:
                        _remove_dir(conn, cfg.store, d)
                        on_removed(d)
            return plan
        finally:
            conn.close()
