"""The outbox and the job store: durable hand-over, backoff that survives restarts, private
mode, quarantine; daemon detection; reconciliation of jobs whose epilog never came."""
from __future__ import annotations

import fcntl
import json
import os
import stat

import pytest

from efajob.config import Config
from efajob.daemon.reconcile import reconcile
from efajob.hooks.outbox import (DeliveryResult, backoff_delay, daemon_alive, deliver_pending,
                                 load_outbox, pending, store_path, write_outbox)
from efajob.hooks.records import JobIdentity, build_record
from efajob.hooks.runfiles import ActiveJob, job_key, read_active, read_finished, write_active
from efajob.sim import build_node
from efajob.node.sysfs import read_snapshot


@pytest.fixture
def cfg(tmp_path):
    return Config(cluster="c1", node="n1", sysfs_root=str(tmp_path / "sys"), run_dir=str(tmp_path / "run"),
                  state_dir=str(tmp_path / "state"), store=str(tmp_path / "store"))


def record(job_id="42", restart=0, host="n1", cluster="c1", uid=1000):
    ident = JobIdentity(cluster=cluster, job_id=job_id, restart=restart, host=host, uid=uid)
    return build_record(ident, None, None, prolog_seen=False, end_wall=1.0)


class Clock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_write_and_deliver(cfg):
    paths = [write_outbox(cfg, record("42")), write_outbox(cfg, record("42", restart=1)),
             write_outbox(cfg, record("7", host="n2", cluster="other"))]
    assert mode(cfg.outbox_dir) == 0o700 and all(mode(p) == 0o600 for p in paths)
    assert len(pending(cfg)) == 3
    res = deliver_pending(cfg)
    assert sorted(os.path.relpath(p, cfg.store) for p in res.delivered) == [
        "c1/jobs/42/n1.1.json", "c1/jobs/42/n1.json", "other/jobs/7/n2.json"]
    assert [r["job_id"] for r in res.records] == ["42", "42", "7"]
    assert pending(cfg) == [] and res.pending == 0 and not res.skipped
    for p in res.delivered:
        assert mode(p) == 0o644 and json.load(open(p))["schema"] == "efajob/job-node-record"
    for d in ("c1", "c1/jobs", "c1/jobs/42"):
        assert mode(os.path.join(cfg.store, d)) == 0o755
    assert not [n for n in os.listdir(os.path.join(cfg.store, "c1/jobs/42")) if n.startswith(".")]


def test_write_outbox_refuses_bad_records(cfg):
    r = record()
    r["job_id"] = "../../etc"
    with pytest.raises(ValueError):
        write_outbox(cfg, r)
    assert pending(cfg) == []


def test_store_unwritable_then_writable_loses_nothing(cfg):
    clock = Clock()
    open(cfg.store, "w").close()  # the store path is a file: every mkdir fails (ENOTDIR)
    for j in ("1", "2", "3"):
        write_outbox(cfg, record(j))
    res = deliver_pending(cfg, now=clock)
    assert res.delivered == [] and res.pending == 3 and res.attempts == 1
    assert res.next_try == clock.t + 2.0 and "Not a directory" in res.last_error
    # Backing off: nothing is tried, even by a freshly started daemon (the state is on disk).
    clock.t += 1.0
    again = deliver_pending(cfg, now=clock)
    assert again.skipped and again.pending == 3 and again.attempts == 1
    clock.t += 1.5
    assert deliver_pending(cfg, now=clock).attempts == 2  # tried, failed, 4 s now
    assert deliver_pending(cfg, now=clock).skipped
    # The store comes back.
    os.unlink(cfg.store)
    clock.t += 4.0
    res = deliver_pending(cfg, now=clock)
    assert len(res.delivered) == 3 and res.pending == 0 and res.attempts == 0
    assert sorted(os.listdir(os.path.join(cfg.store, "c1", "jobs"))) == ["1", "2", "3"]
    assert not os.path.exists(os.path.join(cfg.outbox_dir, ".delivery.json"))


def test_failed_write_leaves_no_partial_file_and_keeps_the_record(cfg, monkeypatch):
    write_outbox(cfg, record())
    real = os.fsync

    def failing_fsync(fd):
        if os.readlink(f"/proc/self/fd/{fd}").startswith(cfg.store):
            raise OSError(5, "Input/output error")
        return real(fd)

    monkeypatch.setattr(os, "fsync", failing_fsync)
    res = deliver_pending(cfg)
    assert res.delivered == [] and res.pending == 1
    assert os.listdir(os.path.join(cfg.store, "c1", "jobs", "42")) == []
    monkeypatch.undo()
    assert len(deliver_pending(cfg, now=lambda: 1e12).delivered) == 1


def test_backoff_delay_is_capped():
    assert [backoff_delay(n) for n in (1, 2, 3, 4)] == [2.0, 4.0, 8.0, 16.0]
    assert backoff_delay(50) == 300.0


def test_private_records(cfg):
    cfg = cfg.replace(private_records=True)
    write_outbox(cfg, record("42", uid=1234))
    write_outbox(cfg, record("43", uid=None))
    deliver_pending(cfg)
    p = store_path(cfg.store, record("42"))
    st = os.stat(p)
    assert (st.st_uid, st.st_gid, mode(p)) == (1234, 0, 0o400)
    st = os.stat(store_path(cfg.store, record("43")))
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o400)


def test_quarantine_bad_outbox_files(cfg):
    write_outbox(cfg, record("1"))
    with open(os.path.join(cfg.outbox_dir, "junk@n1@c1.json"), "w") as f:
        f.write("{not json")
    bad = record("2")
    bad["host"] = "../../etc"
    with open(os.path.join(cfg.outbox_dir, "2@x@c1.json"), "w") as f:
        json.dump(bad, f)
    res = deliver_pending(cfg)
    assert sorted(res.quarantined) == ["2@x@c1.json", "junk@n1@c1.json"]
    assert len(res.delivered) == 1 and pending(cfg) == []
    assert sorted(os.listdir(os.path.join(cfg.outbox_dir, "bad"))) == sorted(res.quarantined)
    assert not os.path.exists(os.path.join(cfg.store, "etc"))


def test_delivery_is_idempotent(cfg):
    write_outbox(cfg, record())
    first = deliver_pending(cfg)
    write_outbox(cfg, record())  # the same record again (an epilog child raced the daemon)
    second = deliver_pending(cfg)
    assert first.delivered == second.delivered and pending(cfg) == []


def test_sink_errors_do_not_stop_delivery(cfg):
    write_outbox(cfg, record("1"))
    write_outbox(cfg, record("2"))
    seen = []

    def sink(r):
        seen.append(r["job_id"])
        raise RuntimeError("sink down")

    assert len(deliver_pending(cfg, on_record=sink).delivered) == 2 and seen == ["1", "2"]


def test_empty_outbox(cfg):
    assert deliver_pending(cfg) == DeliveryResult()


@pytest.mark.parametrize("content", ["pid fd", "pid only (older daemons)"])
def test_daemon_alive_reads_the_daemon_lock(cfg, content):
    assert daemon_alive(cfg) is False  # no lock file
    os.makedirs(cfg.state_dir)
    path = os.path.join(cfg.state_dir, "daemon.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    mine = f"{os.getpid()} {fd}\n" if content == "pid fd" else f"{os.getpid()}\n"
    os.pwrite(fd, mine.encode(), 0)
    try:
        assert daemon_alive(cfg) is False  # file, nobody holds it
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert daemon_alive(cfg) is True
        # Probing must not take the lock: the daemon could fail to start because of it.
        other = os.open(path, os.O_RDWR)
        with pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(other)
    finally:
        os.close(fd)
    assert daemon_alive(cfg) is False


def test_daemon_alive_is_not_fooled_by_a_stale_pid_or_a_reused_descriptor(cfg, tmp_path):
    os.makedirs(cfg.state_dir)
    path = os.path.join(cfg.state_dir, "daemon.lock")
    with open(path, "w") as f:
        f.write("999999999 3\n")  # no such process
    assert daemon_alive(cfg) is False
    # A live process whose descriptor now names another file, which it holds a lock on.
    decoy = os.open(str(tmp_path / "decoy"), os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(decoy, fcntl.LOCK_EX)
        with open(path, "w") as f:
            f.write(f"{os.getpid()} {decoy}\n")
        assert daemon_alive(cfg) is False
    finally:
        os.close(decoy)


def test_daemon_alive_falls_back_to_proc_locks_without_fdinfo(cfg, tmp_path):
    """No right to read /proc/<pid>/fdinfo (or a /proc without it): /proc/locks decides."""
    os.makedirs(cfg.state_dir)
    path = os.path.join(cfg.state_dir, "daemon.lock")
    with open(path, "w") as f:
        f.write("1234 5\n")
    st = os.stat(path)
    proc = tmp_path / "proc"
    (proc / "1234" / "fdinfo").mkdir(parents=True)
    (proc / "1234" / "fdinfo" / "5").mkdir()  # reading it fails (EISDIR), not "gone"
    line = f"1: FLOCK  ADVISORY  WRITE 1234 {os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino} 0 EOF\n"
    (proc / "locks").write_text(line)
    assert daemon_alive(cfg, proc_root=str(proc)) is True
    (proc / "locks").write_text("1: FLOCK  ADVISORY  WRITE 1234 00:01:1 0 EOF\n")
    assert daemon_alive(cfg, proc_root=str(proc)) is False


# -- reconcile ---------------------------------------------------------------------------------
def active(cfg, job_id="42", restart=0, boot="boot-1", start=None):
    start = start or read_snapshot(cfg.sysfs_root)
    job = ActiveJob(key=job_key(job_id, restart), job_id=job_id, restart=restart, user="alice",
                    uid=1000, partition="gpu", account=None, cluster="c1", node="n1",
                    nodelist="n1", num_nodes=1, start_wall=start.wall, start_mono=start.mono,
                    boot_id=boot)
    write_active(cfg.run_dir, job, start)
    return job


@pytest.fixture
def node(cfg):
    return build_node(cfg.sysfs_root, "p4d.24xlarge")


def test_reconcile_after_reboot(cfg, node):
    job = active(cfg, boot="old-boot")
    done = reconcile(cfg, [job], job.start_wall + 5, boot_id="new-boot",
                     is_running=lambda j: pytest.fail("a reboot needs no Slurm"))
    assert done == ["42"] and read_active(cfg.run_dir, "42") is None
    (r,) = load_outbox(cfg)
    assert r["source"] == "reconcile" and r["complete"] is False
    assert r["incomplete_reasons"] == ["rebooted", "no_epilog"]
    assert r["prolog_seen"] is True and r["epilog_seen"] is False and r["totals"] == {}


def test_reconcile_job_no_longer_running(cfg, node):
    job = active(cfg, boot="b")
    inj = node.traffic(10, 5, 4)
    done = reconcile(cfg, [job], job.start_wall + 120, boot_id="b", is_running=lambda j: False)
    assert done == ["42"]
    (r,) = load_outbox(cfg)
    assert r["totals"]["tx_bytes"] == inj.totals["tx_bytes"]  # end read when reconciled
    assert r["incomplete_reasons"] == ["no_epilog"] and r["source"] == "reconcile"
    assert [e["key"] for e in read_finished(cfg.run_dir)] == ["42"]


@pytest.mark.parametrize("answer", [True, None, RuntimeError("slurmctld down")])
def test_reconcile_keeps_running_or_unknown_jobs(cfg, node, answer):
    job = active(cfg, boot="b")

    def is_running(job_id):
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert reconcile(cfg, [job], job.start_wall + 120, boot_id="b", is_running=is_running) == []
    assert read_active(cfg.run_dir, "42") == job and pending(cfg) == []


def test_reconcile_leaves_young_jobs_alone(cfg, node):
    job = active(cfg, boot="b")
    assert reconcile(cfg, [job], job.start_wall + 10, boot_id="b", is_running=lambda j: False) == []
    assert reconcile(cfg, [job], job.start_wall + 10, boot_id="b", is_running=lambda j: False,
                     min_age=0) == ["42"]


def test_reconcile_one_bad_job_does_not_stop_the_others(cfg, node):
    good = active(cfg, "1", boot="old")
    ghost = good.replace(key="2", job_id="2", cluster="bad/name")
    assert reconcile(cfg, [ghost, good], good.start_wall + 5, boot_id="new") == ["1"]


def _epilog_then_killed(cfg, job, start):
    """The epilog writes its record, then dies before removing the active file (SIGKILL at
    slurmd's timeout, OOM): what it leaves is the outbox record and the run-dir files."""
    from efajob.hooks.finish import finish_job

    finish_job(cfg, job=job, source="epilog", boot_id=job.boot_id, now_wall=job.start_wall + 100)
    write_active(cfg.run_dir, job, start)


@pytest.mark.parametrize("delivered", [False, True])
def test_reconcile_never_replaces_the_epilogs_record(cfg, node, delivered):
    """Issue 13, case 3: the exact record (this job's bytes) was replaced by a `no_epilog` one
    carrying the next job's traffic."""
    start = read_snapshot(cfg.sysfs_root)
    job = active(cfg, boot="b", start=start)
    mine = node.traffic(10, 5, 4)
    _epilog_then_killed(cfg, job, start)
    if delivered:
        deliver_pending(cfg)
    node.traffic(300, 300, 10)  # the next job on the node
    assert reconcile(cfg, [job], job.start_wall + 120, boot_id="b", is_running=lambda j: False) == ["42"]
    assert read_active(cfg.run_dir, "42") is None  # the leftover is cleaned up
    deliver_pending(cfg)
    with open(store_path(cfg.store, record("42"))) as f:
        kept = json.load(f)
    assert kept["source"] == "epilog" and kept["totals"]["tx_bytes"] == mine.totals["tx_bytes"]
    assert pending(cfg) == []


def test_delivery_keeps_the_epilogs_record_over_a_reconcile_one(cfg, node):
    """The guard at delivery too: a reconcile record made before the epilog's reached the store
    (two nodes' views of one shared store, a slow NFS) does not overwrite it."""
    from efajob.hooks.finish import finish_job

    start = read_snapshot(cfg.sysfs_root)
    job = active(cfg, boot="b", start=start)
    mine = node.traffic(10, 5, 4)
    finish_job(cfg, job=job, source="epilog", boot_id="b", now_wall=job.start_wall + 100)
    deliver_pending(cfg)
    write_active(cfg.run_dir, job, start)
    node.traffic(300, 300, 10)
    finish_job(cfg, job=job, source="reconcile", boot_id="b", now_wall=job.start_wall + 200)
    res = deliver_pending(cfg)
    assert pending(cfg) == [] and res.delivered == [] and res.records == []  # no sink sees it
    assert len(res.dropped) == 1
    with open(store_path(cfg.store, record("42"))) as f:
        kept = json.load(f)
    assert kept["source"] == "epilog" and kept["totals"]["tx_bytes"] == mine.totals["tx_bytes"]


@pytest.mark.parametrize("planted", ["symlink", "file"])
def test_delivery_never_follows_a_planted_symlink(cfg, tmp_path, planted):
    # A user who can write to the store plants jobs/42 -> a directory of theirs (or of root's,
    # /etc): root's delivery must not write there. The record stays in the outbox, not lost.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    jobs = os.path.join(cfg.store, "c1", "jobs")
    os.makedirs(jobs)
    if planted == "symlink":
        os.symlink(elsewhere, os.path.join(jobs, "42"))
    else:
        open(os.path.join(jobs, "42"), "w").close()
    write_outbox(cfg, record("42"))
    res = deliver_pending(cfg, now=Clock())
    assert res.delivered == [] and res.pending == 1
    assert ("a symlink" if planted == "symlink" else "not a directory") in res.last_error
    assert os.listdir(elsewhere) == []
    os.unlink(os.path.join(jobs, "42"))
    res = deliver_pending(cfg, now=Clock(2000.0))
    assert [os.path.relpath(p, cfg.store) for p in res.delivered] == ["c1/jobs/42/n1.json"]
