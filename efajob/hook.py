"""`efajob-hook prolog|epilog`: the Slurm Prolog/Epilog entry point (docs/hooks.md).

What slurmd gives a hook (shared/notes/slurm.md): no PATH, no HOME, the job in `SLURM_*`
variables, `SLURMD_NODENAME`; a non-zero exit DRAINS the node (and requeues and holds the job
for a prolog). So this module:
- always exits 0, logging a failure as one line to syslog (/dev/log) and stderr;
- reads counters directly (exact totals with or without a daemon), writes only to local disk
  (the run dir and the outbox), never calls Slurm commands or the network;
- validates every environment value before it becomes a path or a record field;
- imports only the standard library and efajob's hook path, lazily where it can (the prolog
  should cost a few ms over interpreter start: bench/hooks.py).

prolog: start snapshot + active-job file (runfiles.write_active).
epilog: end snapshot, start snapshot, daemon rows from the local store (if any), overlap,
        the job-node record into the outbox, the active file removed; then, when no daemon
        is running, a detached child delivers the outbox to the job store while the epilog
        waits at most DELIVERY_WAIT seconds for it.
"""
from __future__ import annotations

import os
import re
import sys
import time
from typing import List, Mapping, Optional

DELIVERY_WAIT = 1.0  # seconds the epilog waits for its delivery child (never longer)
STORE_TIMEOUT = 0.5  # seconds the epilog waits for a locked local store
# Job windows longer than this read the daemon's minute rollups for their whole minutes
# (docs/records.md): decoding 1 s rows costs the epilog ~20 us each (bench/hooks.py), so
# 20 minutes of raw rows (full-resolution series) is the most that keeps it within budget.
RAW_WINDOW_MAX = 20 * 60.0
BUSIEST_MINUTES = 5  # minutes of raw rows read for per-device peaks in a long window
LOCK_TIMEOUT = 1.0  # seconds a hook waits for the run-dir lock (history file)
_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@+-]{0,127}")  # user, partition, account
_NODELIST_RE = re.compile(r"[A-Za-z0-9_.,\[\]-]{1,65536}")
_DIGITS_RE = re.compile(r"[0-9]{1,10}")
USAGE = "usage: efajob-hook prolog|epilog   (run by slurmd; always exits 0)"


# -- the environment -------------------------------------------------------------------------
def _name(env: Mapping[str, str], var: str) -> Optional[str]:
    v = env.get(var)
    return v if v and _NAME_RE.fullmatch(v) else None


def _int(env: Mapping[str, str], var: str) -> Optional[int]:
    v = env.get(var)
    return int(v) if v and _DIGITS_RE.fullmatch(v) else None


def _digits(env: Mapping[str, str], var: str) -> Optional[str]:
    v = env.get(var)
    return v if v and _DIGITS_RE.fullmatch(v) else None


def resolve_cluster(cfg, env: Mapping[str, str]) -> str:
    """The config's `cluster` wins; when it is left at the built-in "default", Slurm's
    ClusterName (SLURM_CLUSTER_NAME) is used, so an unconfigured node still files its records
    under the right cluster. The daemon never sees that variable: reconcile uses the cluster
    saved in the active-job file."""
    from .config import validate_name
    from .errors import ConfigError

    if cfg.cluster != "default":
        return cfg.cluster
    name = env.get("SLURM_CLUSTER_NAME")
    if name:
        try:
            return validate_name("cluster", name)
        except ConfigError:
            pass
    return cfg.cluster


def identity_from_env(env: Mapping[str, str], cfg, *, epilog: bool = False):
    """Slurm's hook environment -> JobIdentity. Raises UsageError when the job id or restart
    count is missing or malformed (they become paths); other bad values become None."""
    from .errors import UsageError
    from .jobid import parse_restart, validate_job_id
    from .jobid import JobIdentity, format_exit_code

    raw = env.get("SLURM_JOB_ID")
    if not raw:
        raise UsageError("SLURM_JOB_ID is not set (is this run by slurmd as Prolog/Epilog?)")
    # Records are filed under SLURM_JOB_ID, the unique numeric id every Slurm gives the hooks.
    # Slurm 22.05's slurmd sets no array or het variables in Prolog/Epilog (measured: an array
    # task 7_8 runs its hooks as SLURM_JOB_ID=10 and nothing else), so the user-facing form
    # (7_8, 8+1) is recorded only when present; the report maps it through Slurm.
    job_id = validate_job_id(raw)
    array_job, array_task = _digits(env, "SLURM_ARRAY_JOB_ID"), _digits(env, "SLURM_ARRAY_TASK_ID")
    het_job, het_off = _digits(env, "SLURM_HET_JOB_ID"), _digits(env, "SLURM_HET_JOB_OFFSET")
    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")  # 23.02+ / 22.05
    start_time = _int(env, "SLURM_JOB_START_TIME")  # 23.02+
    return JobIdentity(
        cluster=resolve_cluster(cfg, env),
        job_id=job_id,
        restart=parse_restart(env.get("SLURM_JOB_RESTART_COUNT")),
        host=cfg.node,
        user=_name(env, "SLURM_JOB_USER"),
        uid=_int(env, "SLURM_JOB_UID"),
        partition=_name(env, "SLURM_JOB_PARTITION"),
        account=_name(env, "SLURM_JOB_ACCOUNT"),
        nodelist=nodelist if nodelist and _NODELIST_RE.fullmatch(nodelist) else None,
        num_nodes=_int(env, "SLURM_JOB_NUM_NODES"),
        array_job_id=array_job if array_task else None,
        array_task_id=array_task if array_job else None,
        het_job_id=het_job if het_off else None,
        het_job_offset=het_off if het_job else None,
        exit_code=format_exit_code(env.get("SLURM_JOB_EXIT_CODE"), env.get("SLURM_JOB_EXIT_CODE2"))
        if epilog else None,
        derived_exit_code=format_exit_code(env.get("SLURM_JOB_DERIVED_EC")) if epilog else None,
        start_wall=float(start_time) if start_time else None,
    )


def identity_from_active(job) -> "object":
    from .jobid import JobIdentity

    return JobIdentity(
        cluster=job.cluster, job_id=job.job_id, restart=job.restart, host=job.node, user=job.user,
        uid=job.uid, partition=job.partition, account=job.account, nodelist=job.nodelist,
        num_nodes=job.num_nodes, start_wall=job.start_wall, start_mono=job.start_mono)


# -- reading ---------------------------------------------------------------------------------
def read_counters(root: str, ethtool=None):
    """(snapshot, {device: sysfs link Gb/s}) in one discovery; `ethtool` as in sysfs.Sampler."""
    from .sysfs import Sampler

    with Sampler(root, rediscover_interval=float("inf"), ethtool=ethtool) as s:
        snap = s.sample()
        return snap, {d.name: d.rate_gbps for d in s.devices}


def read_window(cfg, boot_id: str, mono0: float, mono1: float, *,
                wall_offset: Optional[float] = None):
    """The daemon's view of the job window: (rows, rollups, peak_rows, jobs, why_none).

    A missing, locked or broken local store means "no daemon samples", never a failure.
    Up to RAW_WINDOW_MAX seconds the raw rows are read. Longer windows (a 24 h job is 86,400
    rows: seconds and hundreds of MB as Python objects) use the minute rollups for their
    whole minutes, raw rows for the head and tail, and the raw rows of the BUSIEST_MINUTES
    busiest minutes for per-device peaks. `wall_offset` (wall - mono of this boot) maps the
    rollups' wall minutes.
    """
    from .errors import StoreError
    from .localstore import LocalStore

    try:
        store = LocalStore.open(cfg.db_path, readonly=True, timeout=STORE_TIMEOUT)
    except StoreError as e:
        return [], [], [], set(), str(e)
    try:
        if wall_offset is None or mono1 - mono0 <= RAW_WINDOW_MAX:
            rows = store.samples_between(boot_id, mono0, mono1)
            return rows, [], [], {j for r in rows for j in r.jobs}, None
        return _read_long_window(store, boot_id, mono0, mono1, wall_offset) + (None,)
    except StoreError as e:
        return [], [], [], set(), str(e)
    finally:
        store.close()


def _read_long_window(store, boot_id: str, mono0: float, mono1: float, off: float):
    wall0, wall1 = mono0 + off, mono1 + off
    first = int(-(-wall0 // 60))  # the first whole minute of the window
    rollups = [ro for ro in store.rollups_between(first * 60.0, wall1)
               if (ro.minute + 1) * 60.0 <= wall1]
    if not rollups:
        rows = store.samples_between(boot_id, mono0, mono1)
        return rows, [], [], {j for r in rows for j in r.jobs}
    covered = {ro.minute for ro in rollups}
    lo, hi = min(covered), max(covered)
    # Rollups group rows by their wall minute: split on that too (a second of slack each side).
    head = store.samples_between(boot_id, mono0, min(mono1, lo * 60.0 - off + 1.0))
    tail = store.samples_between(boot_id, max(mono0, (hi + 1) * 60.0 - off - 1.0), mono1)
    seen = set()
    rows = []
    for r in head + tail:
        if int(r.wall // 60) not in covered and r.mono not in seen:
            seen.add(r.mono)
            rows.append(r)
    busiest = sorted(rollups, key=lambda ro: -((ro.rate_max.get("tx_bytes") or 0.0)
                                               + (ro.rate_max.get("rx_bytes") or 0.0)))
    peak_rows = []
    for ro in busiest[:BUSIEST_MINUTES]:
        peak_rows += [r for r in store.samples_between(boot_id, ro.minute * 60.0 - off - 1.0,
                                                       (ro.minute + 1) * 60.0 - off + 1.0)
                      if int(r.wall // 60) == ro.minute]
    return rows, rollups, peak_rows, store.jobs_between(boot_id, mono0, mono1)


# -- the hooks -------------------------------------------------------------------------------
def run_prolog(cfg, env: Mapping[str, str]) -> str:
    """Start snapshot + active-job file. Returns the job key. Raises on failure."""
    from .runfiles import ActiveJob, read_boot_id, write_active
    from .ethtool import ethtool_reader_from_config
    from .sysfs import read_snapshot

    ident = identity_from_env(env, cfg)
    snap = read_snapshot(cfg.sysfs_root, ethtool=ethtool_reader_from_config(cfg))
    job = ActiveJob(
        key=ident.key, job_id=ident.job_id, restart=ident.restart, user=ident.user, uid=ident.uid,
        partition=ident.partition, account=ident.account, cluster=ident.cluster, node=ident.host,
        nodelist=ident.nodelist, num_nodes=ident.num_nodes, start_wall=snap.wall,
        start_mono=snap.mono, boot_id=read_boot_id())
    write_active(cfg.run_dir, job, snap)
    return job.key


def run_epilog(cfg, env: Mapping[str, str]) -> str:
    """Build the record, put it in the outbox, forget the job. Returns the outbox path."""
    from dataclasses import replace

    from .runfiles import read_boot_id

    ident = identity_from_env(env, cfg, epilog=True)
    ident = replace(ident, restart=epilog_restart(cfg.run_dir, ident.job_id, ident.restart))
    key = ident.key
    path = finish_job(cfg, ident=ident, key=key, source="epilog", boot_id=read_boot_id(),
                      now_wall=time.time())
    return path


def epilog_restart(run_dir: str, job_id: str, restart: int, lookback: int = 8) -> int:
    """Which run of the job this epilog ends. Measured on Slurm 22.05: when a job is requeued,
    the Epilog of the run being requeued already sees SLURM_JOB_RESTART_COUNT incremented. So
    when no run-dir files exist for `restart`, the newest earlier run that has them is the one
    ending here (the next run cannot have started on this node before this epilog ends)."""
    from .jobid import job_key
    from .runfiles import active_path, start_path

    def seen(r: int) -> bool:
        k = job_key(job_id, r)
        return os.path.exists(active_path(run_dir, k)) or os.path.exists(start_path(run_dir, k))

    if restart == 0 or seen(restart):
        return restart
    for r in range(restart - 1, max(-1, restart - 1 - lookback), -1):
        if seen(r):
            return r
    return restart


def finish_job(cfg, *, ident=None, job=None, key: Optional[str] = None, source: str = "epilog",
               rebooted: bool = False, boot_id: str, now_wall: float) -> str:
    """The one way a job becomes a record (the epilog, and reconcile() for lost epilogs):
    gather, build, write to the outbox, forget the run-dir files, note it in the history.
    Returns the outbox path. Raises on what must be logged (outbox unwritable...)."""
    from .errors import EfajobError, RecordError
    from .outbox import write_outbox
    from .records import build_record
    from .runfiles import (ActiveJobsReader, LazyLogger, LockTimeout, add_finished, hooks_lock,
                           overlapping, read_active, read_finished, read_start, remove_active)

    log = LazyLogger("efajob.hook")
    reasons: List[str] = []
    if ident is None:
        ident = identity_from_active(job)
    key = key or ident.key
    if job is None:
        try:
            job = read_active(cfg.run_dir, key)
        except RecordError as e:
            log.warning("%s", e)
            reasons.append("bad_active_file")
    try:
        start = read_start(cfg.run_dir, key)
    except RecordError as e:
        log.warning("%s", e)
        start, reasons = None, reasons + ["bad_start_snapshot"]
    prolog_seen = job is not None or start is not None
    from dataclasses import replace

    if job is not None and job.boot_id != boot_id:
        # The counters were reset by a reboot: the start snapshot is useless here, and the
        # old boot's monotonic clock is only comparable to the old boot's daemon rows.
        rebooted = True
    if job is not None:
        ident = replace(ident, start_wall=job.start_wall, start_mono=job.start_mono)
    if rebooted:
        reasons.append("rebooted")

    end = rates = None
    if not rebooted:
        try:
            from .ethtool import ethtool_reader_from_config

            end, rates = read_counters(cfg.sysfs_root, ethtool_reader_from_config(cfg))
        except EfajobError as e:
            log.warning("no end snapshot: %s", e)
    row_boot = job.boot_id if (rebooted and job is not None) else boot_id
    mono0 = start.mono if start is not None else ident.start_mono
    if mono0 is None and ident.start_wall is not None and end is not None:
        mono0 = end.mono - (end.wall - ident.start_wall)
    mono1 = end.mono if end is not None else float("inf")
    rows: list = []
    rollups: list = []
    peak_rows: list = []
    shared = set()
    # Order matters with concurrent epilogs: a finishing job enters the history before it
    # leaves the active files, so reading the active files first and the history second
    # cannot miss it.
    if not rebooted:
        # Jobs still active here overlap this one (they started before our end).
        shared.update(j.key for j in ActiveJobsReader(cfg.run_dir).read()
                      if j.boot_id == boot_id and (end is None or j.start_mono < end.mono))
    if mono0 is not None:
        shared.update(overlapping(read_finished(cfg.run_dir), row_boot, mono0, mono1))
        # The daemon's rows and its view of who else ran here meanwhile.
        rows, rollups, peak_rows, seen, _why = read_window(
            cfg, row_boot, mono0, mono1,
            wall_offset=(end.wall - end.mono) if end is not None and not rebooted else None)
        shared |= seen
    shared.discard(key)
    shared.discard(ident.key)

    record = build_record(
        ident, start, end, rows, rollups=rollups, peak_rows=peak_rows, shared=shared,
        instance_type=cfg.instance_type, device_rates=rates, source=source,
        prolog_seen=prolog_seen, epilog_seen=source == "epilog",
        end_wall=now_wall if end is None and not rows else None, reasons=reasons)
    path = write_outbox(cfg, record)
    if mono0 is not None and end is not None and not rebooted:
        try:
            with hooks_lock(cfg.run_dir, LOCK_TIMEOUT):
                add_finished(cfg.run_dir, key, boot_id, mono0, end.mono)
        except (LockTimeout, OSError) as e:
            log.warning("job %s: history not updated (overlap detection only): %s", key, e)
    remove_active(cfg.run_dir, key)
    return path


# -- delivery without a daemon -----------------------------------------------------------------
def deliver_detached(cfg, wait: float = DELIVERY_WAIT, first: Optional[str] = None) -> Optional[bool]:
    """Deliver the outbox in a child process in its own session, with stdio on /dev/null (slurmd
    reads our stdout until EOF and kills our process group on timeout: the child must hold
    neither). The child delivers `first` (this epilog's outbox file) before the rest and says
    so through a pipe; the parent waits at most `wait` seconds for that, never for the rest.
    True: `first` (or everything, without `first`) delivered in time; False: not yet (a hung
    NFS server, a backoff: the child or the daemon carries on); None: no child started."""
    import select

    try:
        r, w = os.pipe()
        pid = os.fork()
    except OSError:
        return None
    if pid == 0:  # pragma: no cover - runs in the child (tests check its effect)
        code = 1
        try:
            os.close(r)
            os.setsid()
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            from .outbox import deliver_pending

            def tell(ok: bool) -> None:
                os.write(w, b"1" if ok else b"0")

            res = deliver_pending(cfg, first=first, on_first=tell)
            code = 0 if not res.pending else 1
        except BaseException:
            pass
        finally:
            os._exit(code)  # closes `w`: the parent's select() sees EOF
    os.close(w)
    try:
        ready, _, _ = select.select([r], [], [], wait)
        said = os.read(r, 1) if ready else b""
    finally:
        os.close(r)
    if not ready:
        return False
    if said == b"1":
        # Ours has landed; the child may still deliver older records. Reap it if it is done,
        # else init will (it is in its own session and holds none of slurmd's pipes).
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        return True
    try:  # EOF without a word: the child has exited
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return None
    return first is None and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


# -- logging and main --------------------------------------------------------------------------
def _setup_logging() -> None:
    """stderr always; syslog (/dev/log) when there is one. Hooks have no journal of their own:
    slurmd keeps only the exit status. Called on the first message only (LazyLogger)."""
    import logging

    log = logging.getLogger("efajob")
    log.setLevel(logging.INFO)
    log.propagate = False
    fmt = logging.Formatter("efajob-hook[%(process)d]: %(message)s")
    err = logging.StreamHandler(sys.stderr)
    err.setFormatter(fmt)
    err.setLevel(logging.WARNING)
    log.addHandler(err)
    if os.path.exists("/dev/log"):
        log.addHandler(_lazy_syslog_class()(fmt))


def _lazy_syslog_class():
    import logging

    class LazySyslog(logging.Handler):
        """Connects to /dev/log on the first message it is given (importing logging.handlers
        and socket costs a few ms)."""

        def __init__(self, fmt):
            super().__init__(logging.WARNING)
            self.setFormatter(fmt)
            self._h = None

        def emit(self, record):
            try:
                if self._h is None:
                    from logging.handlers import SysLogHandler

                    self._h = SysLogHandler("/dev/log", SysLogHandler.LOG_DAEMON)
                    self._h.setFormatter(self.formatter)
                self._h.emit(record)
            except Exception:  # noqa: BLE001 - no syslog: stderr still has it
                pass

    return LazySyslog


def main(argv: Optional[List[str]] = None) -> int:
    """Always returns 0 (`sys.exit(main())`): a failing hook would drain the node."""
    argv = sys.argv[1:] if argv is None else argv
    from .runfiles import LazyLogger

    LazyLogger.on_first_use = _setup_logging
    log = LazyLogger("efajob.hook")
    what = argv[0] if argv else ""
    job = os.environ.get("SLURM_JOB_ID", "?")
    job = job if len(job) <= 32 and job.isprintable() else repr(job[:32])
    if what not in ("prolog", "epilog"):
        log.error("%s (got %r)", USAGE, " ".join(argv)[:80])
        return 0
    try:
        from .config import load_config

        cfg = load_config(node=os.environ.get("SLURMD_NODENAME") or None)
        if what == "prolog":
            run_prolog(cfg, os.environ)
        else:
            path = run_epilog(cfg, os.environ)
            from .outbox import daemon_alive

            if not daemon_alive(cfg):
                if deliver_detached(cfg, first=os.path.basename(path)) is False:
                    log.warning("%s job %s: record not in the job store %s yet (slow or "
                                "backing off); it stays in the outbox until it lands",
                                what, job, cfg.store)
    except Exception as e:  # noqa: BLE001 - the whole point: never fail the job or the node
        if isinstance(e, OSError) and e.strerror:
            msg = f"{e.strerror}: {e.filename}" if e.filename else e.strerror
        else:
            msg = str(e)
        log.error("%s job %s failed: %s: %s", what, job, type(e).__name__, msg)
    return 0


if __name__ == "__main__":  # `python -m efajob.hook prolog`
    sys.exit(main())
