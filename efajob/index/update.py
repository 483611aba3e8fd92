"""Keeping the job index current: `efajob index update` (what is new since the last run) and
`efajob index rebuild` (everything, from the store). The one writer; library code (raises,
never prints: progress goes through a callback).

What an update costs: a stat of each cluster's jobs directory, and when its mtime moved (a job
directory came or went) one listing of it; a stat of each job directory not yet settled; and
for each directory that changed, its records read once and one report built per restart. A directory is settled once nothing landed in it for `SETTLE`
seconds: after that it is not stat'ed again (a store of a million jobs would otherwise cost a
million stats a run), so a record that lands later than that (a node back after days, its
outbox delivered) is picked up by `update --full` or `rebuild`. Rows are built from the
records only, as the scan of `efajob jobs` builds them (no Slurm, no live status), so the
index and the scan list the same rows.
"""
from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

from efajob.errors import EfajobError, JobIndexError
from efajob.index import db
from efajob.index.names import SLURM_ONLY_STATES, Lookup, names_from_slurm

SETTLE = 86400.0
Progress = Callable[[int, int], None]


@dataclass
class UpdateStats:
    clusters: int = 0
    dirs_seen: int = 0     # job directories listed (0 when no directory came or went)
    dirs_stated: int = 0   # of which stat'ed (new or not settled)
    dirs_indexed: int = 0  # of which (re)indexed: new or changed
    rows: int = 0          # rows written (one per restart)
    records: int = 0       # record files read
    removed: int = 0       # directories gone from the store, their rows dropped
    named: int = 0         # rows named from Slurm (their records carry no job name)
    restated: int = 0      # rows given Slurm's final state (CANCELLED, TIMEOUT, ...)
    kept_names: int = 0    # rows whose name a rebuild kept from the old index
    slurm_error: Optional[str] = None  # why Slurm could not be asked for names
    indexed: List[Tuple[str, str]] = field(default_factory=list)  # (cluster, job_id) (re)indexed


def index_mode(cfg) -> int:
    """0600 under private_records (the rows name the users of private jobs, and the writer
    reads every record as root), else 0644 like the store's records."""
    return 0o600 if cfg.private_records else 0o644


def _no_statuses(cluster: str) -> Dict:
    return {}  # rows from the records alone: running jobs come from the status files at query time


def node_rows(rep) -> List[Tuple]:
    """The node_jobs rows of one job report (db.NODE_JOB_COLUMNS): each node with data and the
    codes of the warning and critical findings that name it (NodeReport.marks). Nodes without
    data are left out: `incomplete` says nothing about the node's fabric."""
    m = rep.meta
    end = m.end if m.end is not None else m.start
    num = m.num_nodes or len(rep.nodes)
    return [(m.cluster, n.host, m.job_id, m.restart, end, num, " ".join(sorted(n.marks)))
            for n in rep.data_nodes]


def index_dir(conn: sqlite3.Connection, cfg, cluster: str, job_id: str, mtime: float,
              stats: UpdateStats) -> None:
    """(Re)write the rows of one job directory: one per restart, the newest marked latest."""
    from efajob.report.assemble import _build_from, jobs_row, not_yours
    from efajob.store.reader import find_job, load_job

    conn.execute("DELETE FROM jobs WHERE cluster = ? AND job_id = ?", (cluster, job_id))
    conn.execute("DELETE FROM node_jobs WHERE cluster = ? AND job_id = ?", (cluster, job_id))
    try:
        files = find_job(cfg.store, job_id, cluster=cluster, statuses=_no_statuses)
    except EfajobError:  # an empty directory (a record on its way): no row yet
        return
    for restart in files.restarts:
        run = files if restart == files.restart else find_job(
            cfg.store, job_id, cluster=cluster, restart=restart, statuses=_no_statuses)
        loaded = load_job(run)
        stats.records += len(run.paths)
        if not_yours(loaded, run):
            continue  # every record refused this writer: run it as root (docs/jobindex.md)
        rep = _build_from(cfg, run, loaded, time.time())
        row = jobs_row(rep)  # name: the records' job_name
        conn.executemany("INSERT OR REPLACE INTO node_jobs VALUES (?, ?, ?, ?, ?, ?, ?)",
                         node_rows(rep))
        conn.execute(db.INSERT, db.to_db(row, records=len(run.paths),
                                         latest=restart == files.restart,
                                         landed=mtime, nbytes=_size(run.paths)))
        stats.rows += 1


def _size(paths) -> Optional[int]:
    """The record files' bytes (for retention's size bound); None if one went meanwhile."""
    try:
        return sum(os.stat(p).st_size for p in paths)
    except OSError:
        return None


def _known(conn: sqlite3.Connection, cluster: str) -> Dict[str, Tuple[float, int]]:
    return {j: (m, s) for j, m, s in conn.execute(
        "SELECT job_id, mtime, settled FROM dirs WHERE cluster = ?", (cluster,))}


def _sync(conn: sqlite3.Connection, cfg, *, full: bool, now: float,
          progress: Optional[Progress]) -> UpdateStats:
    from efajob.slurm.jobid import is_job_id
    from efajob.store.reader import JOBS_DIR, _listdir, list_clusters

    stats = UpdateStats()
    clusters = list_clusters(cfg.store)
    work: List[Tuple[str, str, Optional[Tuple[float, int]]]] = []
    for c in clusters:
        stats.clusters += 1
        jobs_dir = os.path.join(cfg.store, c, JOBS_DIR)
        try:
            st_jobs = os.stat(jobs_dir)
            # Trusted only once it is 2 s old: on a filesystem with coarse timestamps (NFS) a
            # directory made just after this listing could leave the mtime as it was.
            listed = str(st_jobs.st_mtime_ns) if time.time() - st_jobs.st_mtime > 2 else ""
        except OSError:
            listed = ""
        if not full and listed and db.get_meta(conn, f"listed:{c}") == listed:
            # No job directory came or went since the last run (the jobs directory's mtime
            # moves when one does): only the unsettled ones can have changed.
            open_dirs = conn.execute("SELECT job_id, mtime, settled FROM dirs WHERE cluster = ? "
                                     "AND settled = 0", (c,)).fetchall()
            work += [(c, j, (m, st)) for j, m, st in open_dirs]
            continue
        known = _known(conn, c)
        names = {n for n in _listdir(jobs_dir, "jobs directory") if is_job_id(n)}
        db.set_meta(conn, f"listed:{c}", listed)
        stats.dirs_seen += len(names)
        for gone in set(known) - names:
            conn.execute("DELETE FROM jobs WHERE cluster = ? AND job_id = ?", (c, gone))
            conn.execute("DELETE FROM dirs WHERE cluster = ? AND job_id = ?", (c, gone))
            conn.execute("DELETE FROM node_jobs WHERE cluster = ? AND job_id = ?", (c, gone))
            conn.execute("DELETE FROM acct WHERE cluster = ? AND job_id = ?", (c, gone))
            stats.removed += 1
        work += [(c, n, known.get(n)) for n in sorted(names)
                 if full or n not in known or not known[n][1]]
    for i, (c, name, seen) in enumerate(work):
        try:
            mtime = os.stat(os.path.join(cfg.store, c, JOBS_DIR, name)).st_mtime
        except OSError:
            continue  # removed meanwhile: the next run drops it
        stats.dirs_stated += 1
        if seen is None or seen[0] != mtime:
            index_dir(conn, cfg, c, name, mtime, stats)
            stats.dirs_indexed += 1
            stats.indexed.append((c, name))
        settled = int(now - mtime > SETTLE)
        conn.execute("INSERT OR REPLACE INTO dirs VALUES (?, ?, ?, ?)", (c, name, mtime, settled))
        if progress is not None and ((i + 1) % 500 == 0 or i + 1 == len(work)):
            progress(i + 1, len(work))
    db.set_meta(conn, "store", os.path.abspath(cfg.store))
    db.set_meta(conn, "updated", repr(now))
    return stats


def _name_from_slurm(conn: sqlite3.Connection, stats: UpdateStats,
                     lookup: Optional[Lookup]) -> None:
    """Name the rows indexed in this run whose records carry no job name, from Slurm
    (index/names.py): one query per run, only when such rows exist; and give those jobs
    Slurm's final state when it is one the records cannot tell (CANCELLED, TIMEOUT, ...)."""
    if lookup is None or not stats.indexed:
        return
    rows = []
    for c, job_id in stats.indexed:
        rows += conn.execute("SELECT cluster, job_id, user FROM jobs WHERE cluster = ? AND "
                             "job_id = ? AND name IS NULL", (c, job_id)).fetchall()
    found, stats.slurm_error = names_from_slurm(sorted(set(rows)), lookup)
    for (c, job_id), j in sorted(found.items()):
        if j.name:
            cur = conn.execute("UPDATE jobs SET name = ? WHERE cluster = ? AND job_id = ? AND "
                               "name IS NULL", (j.name, c, job_id))
            stats.named += cur.rowcount
        state = (j.state or "").upper()
        if state in SLURM_ONLY_STATES:  # the latest run's, as Slurm keeps one state a job
            stats.restated += conn.execute(
                "UPDATE jobs SET state = ? WHERE cluster = ? AND job_id = ? AND latest = 1 AND "
                "state IS NOT ?", (state, c, job_id, state)).rowcount


def _keep_names(conn: sqlite3.Connection, old: str, stats: UpdateStats) -> None:
    """A rebuild keeps the names the old index had from Slurm: the records do not carry
    them, and slurmctld forgets a job minutes after it ends."""
    named = db.read_names(old)
    for c, job_id, restart, name in named:
        cur = conn.execute("UPDATE jobs SET name = ? WHERE cluster = ? AND job_id = ? AND "
                           "restart = ? AND name IS NULL", (name, c, job_id, restart))
        stats.kept_names += cur.rowcount


def update(cfg, *, full: bool = False, now: Optional[float] = None,
           progress: Optional[Progress] = None, names: Optional[Lookup] = None) -> UpdateStats:
    """Index what landed since the last run (creating the index if there is none). `names`:
    where the names of jobs whose records carry none come from (names.scontrol_lookup), or
    None not to ask."""
    path = cfg.job_index_path
    now = time.time() if now is None else now
    with db.writer_lock(path):
        conn = (db.open_writer(path) if os.path.exists(path)
                else db.create(path, index_mode(cfg)))
        try:
            if db.get_meta(conn, "store") not in (None, os.path.abspath(cfg.store)):
                raise JobIndexError(f"job index {path} indexes the store "
                                    f"{db.get_meta(conn, 'store')}, not {cfg.store}: "
                                    "`efajob index rebuild` starts it afresh")
            with conn:  # one transaction: a reader sees the run's rows all at once
                stats = _sync(conn, cfg, full=full, now=now, progress=progress)
                _name_from_slurm(conn, stats, names)
                return stats
        finally:
            conn.close()


def rebuild(cfg, *, now: Optional[float] = None, progress: Optional[Progress] = None,
            names: Optional[Lookup] = None) -> UpdateStats:
    """A new index of the whole store, renamed over the old one when complete; it keeps the
    old index's job names (from Slurm) and asks Slurm (`names`) for the rest."""
    path = cfg.job_index_path
    now = time.time() if now is None else now
    tmp = f"{path}.new-{os.getpid()}"
    with db.writer_lock(path):
        _remove(tmp)  # left by an interrupted rebuild whose pid this one reuses
        conn = db.create(tmp, index_mode(cfg))
        try:
            with conn:
                stats = _sync(conn, cfg, full=True, now=now, progress=progress)
                _keep_names(conn, path, stats)
                _name_from_slurm(conn, stats, names)
            conn.close()
            os.replace(tmp, path)
        except BaseException:
            conn.close()
            _remove(tmp)
            raise
    return stats


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
