"""How a job becomes a record on this node: the epilog's finishing path, and reconcile's.

`finish_job()` gathers what the node knows about a job that ended (its start snapshot and
active-job file from the run dir, an end snapshot read directly from sysfs, the daemon's rows
from the local store, the jobs that overlapped it), builds the job-node record
(records.build_record), writes it to the outbox and forgets the job's run-dir files. The
epilog (hook.run_epilog) and outbox.reconcile (epilogs that never ran) both call it: one way
to make a record. docs/hooks.md and docs/records.md describe the result.

On the hook import path: standard library only, imported lazily like the hook itself.
"""
from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # no `typing` at run time: the epilog imports this (bench/hooks.py)
    from typing import List, Optional, Set

STORE_TIMEOUT = 0.5  # seconds the epilog waits for a locked local store
# Job windows longer than this read the daemon's minute rollups for their whole minutes
# (docs/records.md): decoding 1 s rows costs the epilog ~20 us each (bench/hooks.py), so
# 20 minutes of raw rows (full-resolution series) is the most that keeps it within budget.
RAW_WINDOW_MAX = 20 * 60.0
BUSIEST_MINUTES = 5  # raw-row minutes read for per-device peaks when rollups lack them (< schema 2)


def identity_from_active(job) -> "object":
    from efajob.slurm.jobid import JobIdentity

    return JobIdentity(
        cluster=job.cluster, job_id=job.job_id, restart=job.restart, host=job.node, user=job.user,
        uid=job.uid, partition=job.partition, account=job.account, nodelist=job.nodelist,
        num_nodes=job.num_nodes, start_wall=job.start_wall, start_mono=job.start_mono)


# -- reading ---------------------------------------------------------------------------------
def read_counters(root: str, ethtool=None, cache: Optional[str] = None):
    """(snapshot, {device: sysfs link Gb/s}) in one reading; `ethtool` as in sysfs.Sampler,
    `cache` the discovery cache (node/devcache.py)."""
    from efajob.node.devcache import read_once

    snap, devices = read_once(root, cache=cache, ethtool=ethtool)
    return snap, {d.name: d.rate_gbps for d in devices}


def read_window(cfg, boot_id: str, mono0: float, mono1: float, *,
                wall_offset: Optional[float] = None, with_sums: bool = False):
    """The daemon's view of the job window: (rows, minutes, peak_rows, jobs, why_none);
    `minutes` a node/minutes.MinuteWindow or None (a short window: raw rows only), with every
    counter's sums when `with_sums` (a job without a start snapshot counts from them).

    A missing, locked or broken local store means "no daemon samples", never a failure.
    Up to RAW_WINDOW_MAX seconds the raw rows are read. Longer windows (a 24 h job is 86,400
    rows: seconds and hundreds of MB as Python objects) use the minute rollups for their
    whole minutes, raw rows for the head and tail, and the raw rows of the BUSIEST_MINUTES
    busiest minutes for per-device peaks. `wall_offset` (wall - mono of this boot) maps the
    rollups' wall minutes.
    """
    from efajob.errors import StoreError
    from efajob.node.localstore import LocalStore

    try:
        store = LocalStore.open(cfg.db_path, readonly=True, timeout=STORE_TIMEOUT)
    except StoreError as e:
        return [], None, [], set(), str(e)
    try:
        if wall_offset is None or mono1 - mono0 <= RAW_WINDOW_MAX:
            rows = store.samples_between(boot_id, mono0, mono1)
            return rows, None, [], {j for r in rows for j in r.jobs}, None
        return _read_long_window(store, boot_id, mono0, mono1, wall_offset,
                                 with_sums=with_sums) + (None,)
    except StoreError as e:
        return [], None, [], set(), str(e)
    finally:
        store.close()


def _read_long_window(store, boot_id: str, mono0: float, mono1: float, off: float, *,
                      with_sums: bool = False):
    """(raw rows outside the minutes, MinuteWindow or None, peak rows, jobs) of a long window:
    its whole wall minutes from the rollups (node/minutes.py), the head and tail raw."""
    wall0, wall1 = mono0 + off, mono1 + off
    first = int(-(-wall0 // 60))  # the first whole minute of the window
    end = int(wall1 // 60)  # minutes that end by wall1
    window = store.minute_window(first, end, with_sums=with_sums) if end > first else None
    if window is None or not window.minutes:
        rows = store.samples_between(boot_id, mono0, mono1)
        return rows, None, [], {j for r in rows for j in r.jobs}
    covered = window.covered()
    lo, hi = window.minutes[0][0], window.minutes[-1][0]
    # Rollups group rows by their wall minute: split on that too (a second of slack each side).
    head = store.samples_between(boot_id, mono0, min(mono1, lo * 60.0 - off + 1.0))
    tail = store.samples_between(boot_id, max(mono0, (hi + 1) * 60.0 - off - 1.0), mono1)
    seen = set()
    rows = []
    for r in head + tail:
        if int(r.wall // 60) not in covered and r.mono not in seen:
            seen.add(r.mono)
            rows.append(r)
    peak_rows = []
    # Rollups of schema 2 keep each device's fastest rate: per-device peaks come from every
    # minute (records.build_record), no raw rows needed. Older ones: the busiest minutes' rows.
    for minute in ([] if window.peaks_complete else window.busiest(BUSIEST_MINUTES)):
        peak_rows += [r for r in store.samples_between(boot_id, minute * 60.0 - off - 1.0,
                                                       (minute + 1) * 60.0 - off + 1.0)
                      if int(r.wall // 60) == minute]
    return rows, window, peak_rows, _jobs_seen(store, boot_id, mono0, mono1, window, rows)


def _jobs_seen(store, boot_id: str, mono0: float, mono1: float, window, rows) -> "Set[str]":
    """Who else ran here in a long window: the jobs of its minute rollups, of the raw rows
    outside them, and of the rows not rolled up yet, when every rollup kept its jobs (schema
    2); else every raw row's (an index range scan, 86,400 rows for 24 h: 18 ms, a fifth of
    the epilog)."""
    if window.jobs is not None:
        return (window.jobs | {j for r in rows for j in r.jobs}
                | store.unrolled_jobs(boot_id, mono0, mono1))
    return store.jobs_between(boot_id, mono0, mono1)


# -- the record ------------------------------------------------------------------------------
def finish_job(cfg, *, ident=None, job=None, key: Optional[str] = None, source: str = "epilog",
               rebooted: bool = False, boot_id: str, now_wall: float) -> str:
    """The one way a job becomes a record (the epilog, and reconcile() for lost epilogs):
    gather, build, write to the outbox, forget the run-dir files, note it in the history.
    Returns the outbox path. Raises on what must be logged (outbox unwritable...)."""
    from efajob.errors import EfajobError, RecordError
    from efajob.node.instances import read_cached_instance_type
    from efajob.hooks.outbox import write_outbox
    from efajob.hooks.records import build_record
    from efajob.hooks.runfiles import (ActiveJobsReader, LazyLogger, LockTimeout, add_finished,
                                       hooks_lock, overlapping, read_active, read_finished,
                                       read_start, remove_active)

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

    if job is not None and job.boot_id != boot_id:
        # The counters were reset by a reboot: the start snapshot is useless here, and the
        # old boot's monotonic clock is only comparable to the old boot's daemon rows.
        rebooted = True
    if job is not None:
        ident = ident.replace(start_wall=job.start_wall, start_mono=job.start_mono)
    if rebooted:
        reasons.append("rebooted")

    end = rates = None
    if not rebooted:
        try:
            from efajob.node.devcache import cache_path
            from efajob.node.ethtool import ethtool_reader_from_config

            end, rates = read_counters(cfg.sysfs_root, ethtool_reader_from_config(cfg),
                                       cache_path(cfg.run_dir))
        except EfajobError as e:
            log.warning("no end snapshot: %s", e)
    row_boot = job.boot_id if (rebooted and job is not None) else boot_id
    mono0 = start.mono if start is not None else ident.start_mono
    if mono0 is None and ident.start_wall is not None and end is not None:
        mono0 = end.mono - (end.wall - ident.start_wall)
    mono1 = end.mono if end is not None else float("inf")
    rows: list = []
    minutes = None
    peak_rows: list = []
    shared: Set[str] = set()
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
        rows, minutes, peak_rows, seen, _why = read_window(
            cfg, row_boot, mono0, mono1,
            wall_offset=(end.wall - end.mono) if end is not None and not rebooted else None,
            with_sums=start is None)
        shared |= seen
    shared.discard(key)
    shared.discard(ident.key)

    record = build_record(
        ident, start, end, rows, minutes=minutes, peak_rows=peak_rows, shared=shared,
        instance_type=cfg.instance_type or read_cached_instance_type(cfg.state_dir),
        device_rates=rates, source=source,
        prolog_seen=prolog_seen, epilog_seen=source == "epilog",
        end_wall=now_wall if end is None and not rows else None, reasons=reasons)
    path = write_outbox(cfg, record)
    if mono0 is not None and end is not None and not rebooted:
        try:
            with hooks_lock(cfg.run_dir, cfg.hook_wait):
                add_finished(cfg.run_dir, key, boot_id, mono0, end.mono)
        except (LockTimeout, OSError) as e:
            log.warning("job %s: history not updated (overlap detection only): %s", key, e)
    remove_active(cfg.run_dir, key, cfg.state_dir)
    return path
