"""Job reports assembled from the job store (and Slurm when reachable): what `efajob report`,
`efajob jobs`, the demo and the head-node dashboard share. Library code: raises, never prints.
"""
from __future__ import annotations

import contextlib
import gc
import os
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from efajob.errors import AmbiguousJobError, SlurmError, StoreError


# -- Slurm (optional) -------------------------------------------------------------------------
def slurm_lookup(job_id: str, timeout: float = 10.0) -> Tuple[Any, Optional[str]]:
    """(JobInfo or None, a note for the report). Never raises: no Slurm is a normal case."""
    try:
        from efajob.slurm.adapter import get_backend

        info = get_backend(timeout=timeout).job(job_id)
    except SlurmError as e:
        return None, f"Slurm not reachable ({e}): header from the job records"
    if info is None:
        return None, f"Slurm does not know job {job_id} (purged, no accounting): header from the job records"
    return info, None


def check_slurm(info: Any, files, hosts: List[str]) -> Tuple[Any, bool, Optional[str]]:
    """(info or None, use Slurm's times, note): refuse metadata of another job with the same id."""
    if info is None:
        return None, True, None
    cl = getattr(info, "cluster", None)
    if cl and cl != files.cluster:
        return None, True, (f"Slurm's job {files.job_id} belongs to cluster {cl}, not {files.cluster}: "
                            "header from the job records")
    nodes = set(getattr(info, "nodes", None) or ())
    if nodes and hosts and not nodes & set(hosts):
        return None, True, (f"Slurm's job {files.job_id} ran on other nodes than these records (a "
                            "reused job id?): header from the job records")
    restarts = getattr(info, "restarts", None)
    if isinstance(restarts, int) and restarts != files.restart:
        return info, False, (f"Slurm describes restart {restarts}, this report restart "
                             f"{files.restart}: start, end and state come from the records")
    return info, True, None


def _store_has(store: str, cluster: Optional[str], job_id: str) -> bool:
    from efajob.store.reader import JOBS_DIR, list_clusters

    return any(os.path.isdir(os.path.join(store, c, JOBS_DIR, job_id))
               for c in ([cluster] if cluster else list_clusters(store)))


DENIED = "unreadable: Permission denied"


def private_view(cfg, euid: Optional[int] = None) -> bool:
    """private_records and we are not root: a job is ours only when we can read its records
    (or, while it runs, when Slurm says it is ours)."""
    return bool(cfg.private_records) and (os.geteuid() if euid is None else euid) != 0


def not_yours(loaded, files, private: bool = False) -> bool:
    """Nothing here is ours to report. Every record of the job refused us (another user's
    private job) and no daemon shows it live; or, in a private view, not one record is
    readable while the job runs or some record refused us (its live data is not ours either)."""
    if loaded.records:
        return False
    denied = bool(loaded.skipped) and all(why == DENIED for _, why in loaded.skipped)
    if private:
        return bool(files.live) or any(why == DENIED for _, why in loaded.skipped)
    return denied and not files.live


def _slurm_says_ours(info) -> bool:
    import pwd

    user = getattr(info, "user", None)
    try:
        return bool(user) and pwd.getpwuid(os.geteuid()).pw_name == user
    except KeyError:
        return False


def build_job_report(cfg, job_id: str, *, cluster: Optional[str] = None,
                     restart: Optional[int] = None, use_slurm: bool = True,
                     now: Optional[float] = None, warn=None):
    """Everything `efajob report` does short of rendering. Raises EfajobError."""
    from efajob.slurm.jobid import validate_job_id

    validate_job_id(job_id)
    now = time.time() if now is None else now
    info, note = slurm_lookup(job_id) if use_slurm else (None, None)
    with _no_gc():
        return _build(cfg, job_id, info, note, cluster, restart, now, warn, use_slurm)


@contextlib.contextmanager
def _no_gc():
    """Parsing a 1,024-node job creates millions of small acyclic objects (JSON dicts, lists):
    the cyclic collector runs again and again and finds nothing. Off while we build, it saves
    a third of the time (bench/report.py); back on afterwards."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def parts_error(job_id: str, parts) -> AmbiguousJobError:
    """`report 500` of an array (or `report 420` of a het job): one report would mix the
    tasks' nodes, times and exit codes, or show one task as if it were the job. Exit 6 with
    the ids to ask for instead (docs/report.md)."""
    kind, what = (("an array job", "task") if "_" in parts[0] else
                  ("a heterogeneous job", "component"))
    shown = ", ".join(parts[:20]) + (f", ... ({len(parts)} in all)" if len(parts) > 20 else "")
    plural = "s" if len(parts) > 1 else ""
    return AmbiguousJobError(f"job {job_id} is {kind} ({len(parts)} {what}{plural}: {shown}); "
                             f"report one {what}, e.g. efajob report {parts[0]}")


def _build(cfg, job_id: str, info: Any, note: Optional[str], cluster: Optional[str],
           restart: Optional[int], now: float, warn, use_slurm: bool = True):
    from efajob.store.reader import LoadedRecords, find_job, find_parts, iter_records, list_clusters
    from efajob.report.build import build_report, ingest

    parts = tuple(getattr(info, "parts", None) or ())
    if parts:
        raise parts_error(job_id, parts)
    target = job_id
    sid = getattr(info, "slurm_job_id", None)
    if sid and sid != job_id and not _store_has(cfg.store, cluster, job_id):
        target = sid  # the hooks file an array task 7_8 under its SLURM_JOB_ID
    files = find_job(cfg.store, target, cluster=cluster, restart=restart, now=now,
                     max_status_age=max(60.0, 4 * cfg.status_interval))
    # Records are made into nodes as they are read (report/build.py ingest), so a huge job is
    # never held whole; what the checks below read of them is each record's header.
    skipped: List[Tuple[str, str]] = []
    ing = ingest(iter_records(files.paths, job_id=files.job_id, restart=files.restart,
                              skipped=skipped))
    loaded = LoadedRecords(records=ing.headers, skipped=skipped)
    if job_id.isdigit() and any(str(r.get(k)) == job_id for r in loaded.records
                                for k in ("array_job_id", "het_job_id")):
        # Records that know their array/het job (a Slurm that sets SLURM_ARRAY_* for the
        # hooks) when Slurm was not asked or has forgotten the job.
        listed = find_parts(cfg.store, job_id, [files.cluster] if files.cluster else
                            list_clusters(cfg.store))
        if listed:
            raise parts_error(job_id, listed)
    private = private_view(cfg)
    if not_yours(loaded, files, private) and not (private and _slurm_says_ours(info)):
        if private and files.live and not loaded.skipped:
            raise StoreError(
                f"job {files.job_id} is running: with private_records = true its live data is "
                "shown to root and the job's user only, and Slurm "
                + ("was not asked (--no-slurm)" if not use_slurm else "does not say it is yours"))
        raise StoreError(
            f"job {files.job_id}: its records are private (private_records = true) and not "
            "yours: only root and the job's user can read them")
    for path, why in loaded.skipped:
        if warn:
            warn(f"skipped {path}: {why}")
    hosts = [r["host"] for r in loaded.records] + list(files.live)
    info, times, note2 = check_slurm(info, files, hosts)
    report = build_report(
        ing, job_id=files.job_id, cluster=files.cluster, restart=files.restart,
        restarts=files.restarts, restart_defaulted=files.restart_defaulted, job_info=info,
        slurm_note=note2 or note, slurm_times=times, live=files.live, skipped=loaded.skipped,
        thresholds=cfg.thresholds, now=now)
    return with_nccl_log(cfg, report, info)


def with_nccl_log(cfg: Any, report: Any, info: Any) -> Any:
    """The one hook point of report/nccllog.py: an efa_unused finding quotes NCCL's log when
    Slurm names the job's output file and the config allows reading it (docs/report.md)."""
    path = getattr(info, "stdout", None)
    if not path or not cfg.reads_nccl_log or not any(f.code == "efa_unused"
                                                     for f in report.findings):
        return report
    from efajob.report.nccllog import confirm, read_evidence

    ev = read_evidence(path)
    return report if ev is None else confirm(report, ev)


# -- recent jobs ------------------------------------------------------------------------------
def job_summary(r) -> dict:
    """One `efajob jobs` row from a JobReport."""
    m, o = r.meta, r.overall
    busier = [v for v in (o.avg_tx_gbps, o.avg_rx_gbps) if v is not None]
    return {"cluster": m.cluster, "job_id": m.job_id, "restart": m.restart, "alias": m.alias,
            "user": m.user, "state": m.state, "num_nodes": m.num_nodes, "start": m.start,
            "end": m.end, "elapsed_s": m.elapsed_s, "tx_bytes": o.totals.get("tx_bytes"),
            "rx_bytes": o.totals.get("rx_bytes"),
            "avg_gbps_per_node": round(max(busier), 3) if busier else None,
            "verdict": r.verdict, "findings": sorted({f.code for f in r.findings if f.severity != "info"}),
            "running": r.running}


def jobs_row(r) -> dict:
    """An `efajob jobs` row: job_summary plus what `jobs` filters on (partition, account) and
    the job's name when Slurm or the records give one. Not in job_summary: the dashboard's
    rows go out with only `user` blanked under private_records."""
    m, o = r.meta, r.overall
    peaks = [v for v in (o.peak_tx_gbps, o.peak_rx_gbps) if v is not None]
    return dict(job_summary(r), partition=m.partition, account=m.account, name=m.name,
                peak_gbps_per_node=round(max(peaks), 3) if peaks else None)


def list_jobs(cfg, *, user: Optional[str] = None, since: Optional[float] = None,
              state: Optional[str] = None, limit: int = 20, cluster: Optional[str] = None,
              now: Optional[float] = None, euid: Optional[int] = None,
              match: Optional[Callable[[dict], bool]] = None,
              users: Iterable[str] = ()) -> List[dict]:
    """Recent jobs, newest first (by when their records arrived), with totals and verdicts,
    from a scan of the store (report/jobindex.py is the fast way). Reports are built from the
    records only (no Slurm: one query per job would be slow). In a private view
    (private_records, not root) only jobs with a record we can read are listed: a running job
    has none yet, and whose it is would take a Slurm query per job. `match(row)`: a further
    filter (report/jobfilter.py). Node status files are read once per cluster, whatever the
    number of jobs listed; with a user filter one record per job is read to skip other
    users' jobs before building a report."""
    from efajob.store.reader import (find_job, list_job_dirs, load_job, read_records,
                                     status_reader)

    now = time.time() if now is None else now
    max_age = max(60.0, 4 * cfg.status_interval)
    statuses = status_reader(cfg.store)
    private = private_view(cfg, euid)
    wanted = set(users) | ({user} if user else set())

    def keep(row: dict) -> bool:
        if wanted and row.get("user") not in wanted:
            return False
        if state and (row.get("state") or "").upper() != state.upper():
            return False
        if since is not None and (row.get("end") or row.get("start") or now) < since:
            return False
        return match is None or match(row)

    out = [] if private else running_rows(cfg, statuses, cluster=cluster, now=now, keep=keep,
                                          limit=limit)
    for d in list_job_dirs(cfg.store, cluster=cluster, since=since):
        if len(out) >= limit:
            break
        files = find_job(cfg.store, d.job_id, cluster=d.cluster, now=now, max_status_age=max_age,
                         statuses=statuses)
        if wanted and files.paths and not files.live:
            peek = read_records(files.paths[:1], job_id=files.job_id, restart=files.restart)
            if peek.records and peek.records[0].get("user") not in wanted | {None}:
                continue  # the report would show the records' first user: not this one
        loaded = load_job(files)
        if not_yours(loaded, files, private):
            continue  # another user's private job: not listed (it once read as a "Warning")
        rep = _build_from(cfg, files, loaded, now)
        row = jobs_row(rep)
        if keep(dict(row, nodes=[n.host for n in rep.data_nodes])):  # -N: as the index's node_jobs
            out.append(row)
    return out[:limit]


def _build_from(cfg, files, loaded, now: float):
    from efajob.report.build import build_report

    return build_report(loaded.records, job_id=files.job_id, cluster=files.cluster,
                        restart=files.restart, restarts=files.restarts, live=files.live,
                        skipped=loaded.skipped, thresholds=cfg.thresholds, now=now)


def running_rows(cfg, statuses, *, cluster: Optional[str] = None, now: Optional[float] = None,
                 keep: Callable[[dict], bool] = lambda row: True,
                 limit: Optional[int] = None) -> List[dict]:
    """`efajob jobs` rows of the jobs that fresh node status files list and that have no job
    directory yet, from the statuses already read (`statuses(cluster)`: status_reader), at
    most `limit` of those `keep` accepts. `keep` first sees what the status files say (user,
    partition, state, start), so a live report (findings over every node of the job) is built
    only for a row that is shown."""
    from efajob.report.build import build_report
    from efajob.store.reader import JOBS_DIR, _clusters_to_search

    now = time.time() if now is None else now
    max_age = max(60.0, 4 * cfg.status_interval)
    by_job: Dict[Tuple[str, str], Dict[str, Any]] = {}
    first: Dict[Tuple[str, str], Any] = {}
    for c in _clusters_to_search(cfg.store, cluster):
        for host, st in statuses(c).items():
            if not st.fresh(now, max_age):
                continue
            for j in st.jobs:
                by_job.setdefault((c, j.job_id), {})[host] = st
                first.setdefault((c, j.job_id), j)
    out: List[dict] = []
    for (c, jid), live in by_job.items():
        if limit is not None and len(out) >= limit:
            break
        j = first[(c, jid)]
        if not keep({"cluster": c, "job_id": jid, "user": j.user, "partition": j.partition,
                     "state": "RUNNING", "start": j.start, "end": None, "nodes": sorted(live)}):
            continue
        if os.path.isdir(os.path.join(cfg.store, c, JOBS_DIR, jid)):
            continue
        restarts = tuple(sorted({j.restart for s in live.values() for j in s.jobs
                                 if j.job_id == jid}))
        chosen = restarts[-1]
        mine = {h: s for h, s in live.items()
                if any(j.job_id == jid and j.restart == chosen for j in s.jobs)}
        row = jobs_row(build_report([], job_id=jid, cluster=c, restart=chosen,
                                       restarts=restarts, live=mine, now=now,
                                       thresholds=cfg.thresholds))
        if not row.get("user"):
            row["user"] = j.user
        if not row.get("partition"):
            row["partition"] = j.partition
        if keep(row):
            out.append(row)
    return out
