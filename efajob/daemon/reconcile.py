"""Reconciling jobs whose epilog never came (node crash, slurmd killed, daemon restarted over a
reboot): their active-job files become records flagged incomplete, through the epilog's own
finishing path (hooks/finish.py), so there is one way to make a record. The daemon's worker
runs this; the hooks never do (it may ask Slurm, with a timeout).
"""
from __future__ import annotations

import logging
from typing import Callable, List, Optional, Sequence

from efajob.hooks.finish import finish_job
from efajob.hooks.outbox import epilog_record_exists
from efajob.hooks.runfiles import ActiveJobsReader, read_boot_id, remove_active
from efajob.slurm.adapter import job_is_running

# The outbox's logger, as before this moved here: sites grep the journal for it.
log = logging.getLogger("efajob.outbox")


def reconcile(cfg, active_jobs: Sequence, now_wall: float, *,
              is_running: Optional[Callable[[str], Optional[bool]]] = None,
              boot_id: Optional[str] = None, min_age: float = 60.0) -> List[str]:
    """Turn active-job files whose job is gone into records flagged incomplete (source
    "reconcile"). A job is gone when its boot_id is not this boot's (the node rebooted), or
    when `is_running(job_id)` says False. None (Slurm unreachable, unknown) keeps the file:
    better a late record than a wrong one. Jobs younger than `min_age` seconds are left alone
    (a prolog may still be writing; slurmctld may lag). Returns the keys reconciled.

    `is_running` defaults to `scontrol -o show job` with a timeout (slurm/adapter.py): for the
    daemon only, never the hooks.
    """
    boot = boot_id or read_boot_id()
    done: List[str] = []
    for job in _with_durable_copies(cfg, active_jobs, boot):
        rebooted = job.boot_id != boot
        if not rebooted:
            if now_wall - job.start_wall < min_age:
                continue
            try:
                if is_running is not None:
                    running = is_running(job.job_id)
                else:
                    running = job_is_running(job.job_id, job.restart)
            except Exception as e:  # noqa: BLE001 - unknown state: keep the file, try later
                log.warning("cannot tell whether job %s still runs: %s", job.job_id, e)
                continue
            if running is None or running:
                continue
        if epilog_record_exists(cfg, job):
            # The epilog wrote its exact record and was killed before it removed the active
            # file: a reconcile record (counters up to now, other jobs' traffic included)
            # must never replace it. Only the leftover files go.
            remove_active(cfg.run_dir, job.key, cfg.state_dir)
            log.info("job %s: its epilog's record exists; leftover active file removed", job.key)
            done.append(job.key)
            continue
        try:
            finish_job(cfg, job=job, source="reconcile", rebooted=rebooted, boot_id=boot,
                       now_wall=now_wall)
        except Exception as e:  # noqa: BLE001 - one bad job must not stop the others
            log.error("cannot reconcile job %s: %s", job.key, e)
            continue
        log.info("reconciled job %s (%s): its epilog never came", job.key,
                 "node rebooted" if rebooted else "no longer running")
        done.append(job.key)
    return done


def _with_durable_copies(cfg, active_jobs: Sequence, boot: str) -> List:
    """The run dir's active jobs, and the jobs of an earlier boot that only the state dir's
    durable copies remember (the run dir is a tmpfs: a crash wiped theirs). A durable copy of
    this boot without its run-dir file is what a finished epilog leaves when killed before its
    last unlink: removed."""
    jobs = list(active_jobs)
    known = {j.key for j in jobs}
    for job in ActiveJobsReader(cfg.state_dir).read():
        if job.key in known:
            continue
        if job.boot_id != boot:
            jobs.append(job)
            log.info("job %s ran here before a reboot (boot %s): its record comes from the "
                     "durable copy of its active file", job.key, job.boot_id)
        else:
            remove_active(cfg.state_dir, job.key)
    return jobs
