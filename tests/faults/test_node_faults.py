"""The fault suite, on the node: hooks as slurmd runs them on simulated nodes, the daemon as
systemd runs it (a real process, killed with SIGKILL) or in-process on the real sysfs path,
and the store broken in the ways a cluster breaks it. Every scenario ends with a row of the
table (fault_ledger.py) and the same demands: no record lost, every byte count exact or
flagged, no hook exiting non-zero."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import pytest

from conftest import fill_disk, mount_tmpfs, wait_until
from efajob.hooks.outbox import deliver_pending, pending
from fault_site import PY, Site

pytestmark = pytest.mark.integration


def test_daemon_never_started(tmp_path):
    """No daemon anywhere: every epilog delivers its own record."""
    site = Site(tmp_path, hosts=["n1", "n2"])
    for j in range(10):
        site.job(str(100 + j), ["n1", "n2"], tx_gbps=40 + j, rx_gbps=20)
    site.row("daemon never started", "no daemon on 2 nodes", exact_required=True).check()


def _start_daemon(site, host):
    log = open(os.path.join(site.root, f"daemon-{host}.log"), "a")
    p = subprocess.Popen([PY, "-m", "efajob", "daemon", "--config", site.conf, "--node", host],
                         stdout=subprocess.DEVNULL, stderr=log, env=dict(os.environ))
    log.close()
    from efajob.hooks.outbox import daemon_alive

    assert wait_until(lambda: daemon_alive(site.cfg(host)) or p.poll() is not None)
    assert p.poll() is None, open(os.path.join(site.root, f"daemon-{host}.log")).read()
    return p


def _stop(daemon):
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=120) == 0


def test_daemon_killed_and_restarted(tmp_path):
    """SIGKILL at the worst moments: before an epilog (it must deliver itself) and right after
    one (its record sits in the outbox until the restarted daemon forwards it)."""
    site = Site(tmp_path, hosts=["n1"])
    daemon = _start_daemon(site, "n1")
    try:
        for j in range(6):
            job = str(200 + j)
            site.hook("prolog", job, "n1")
            site.traffic(job, "n1", tx_gbps=30 + j)
            if j % 2 == 0:
                daemon.kill()
                daemon.wait(timeout=120)
                site.hook("epilog", job, "n1")
            else:
                site.hook("epilog", job, "n1")
                daemon.kill()
                daemon.wait(timeout=120)
            daemon = _start_daemon(site, "n1")
        cfg = site.cfg("n1")
        assert wait_until(lambda: not pending(cfg)), pending(cfg)
    finally:
        _stop(daemon)
    site.row("daemon SIGKILLed, restarted", "6 kills: 3 before an epilog, 3 after",
             exact_required=True).check()


def test_two_daemons_on_one_node(tmp_path):
    """The second daemon is refused (it exits non-zero, saying which pid holds the lock); the
    first keeps counting and delivering."""
    site = Site(tmp_path, hosts=["n1"])
    first = _start_daemon(site, "n1")
    try:
        second = subprocess.run([PY, "-m", "efajob", "daemon", "--config", site.conf, "--node",
                                 "n1"], capture_output=True, text=True, timeout=300)
        assert second.returncode != 0 and "another efajob daemon" in second.stderr
        assert str(first.pid) in second.stderr and "Traceback" not in second.stderr
        for j in range(3):
            site.job(str(300 + j), ["n1"])
        cfg = site.cfg("n1")
        assert wait_until(lambda: not pending(cfg) and len(site.records()) == 3)
    finally:
        _stop(first)
    site.row("two daemons", "a second daemon started on the same node",
             exact_required=True).check()


def test_store_unwritable_then_back(tmp_path):
    """The shared store is not a directory (root ignores modes, so not chmod): every record
    waits in the outbox, hooks exit 0; once the store is back, delivery takes them all."""
    site = Site(tmp_path, hosts=["n1", "n2"])
    os.makedirs(site.store)
    with open(os.path.join(site.store, "c1"), "w") as f:
        f.write("not a directory\n")
    for j in range(5):
        site.job(str(400 + j), ["n1", "n2"])
    assert site.records() == {}
    os.unlink(os.path.join(site.store, "c1"))
    for h in ("n1", "n2"):
        cfg = site.cfg(h)
        _redeliver(cfg)
    site.row("store unwritable", "store path not a directory for 5 jobs",
             exact_required=True).check()


def _redeliver(cfg):
    """What the daemon does once the backoff expires: clear it and deliver."""
    state = os.path.join(cfg.outbox_dir, ".delivery.json")
    if os.path.exists(state):
        os.unlink(state)
    res = deliver_pending(cfg)
    assert res.pending == 0, res


@pytest.fixture
def tiny_fs(tmp_path):
    (tmp_path / "tiny").mkdir()
    with mount_tmpfs(tmp_path / "tiny", "256k") as mnt:
        yield str(mnt)


def test_store_full_then_freed(tmp_path, tiny_fs):
    site = Site(tmp_path, hosts=["n1"])
    os.symlink(tiny_fs, site.store)
    fill_disk(tiny_fs)
    for j in range(4):
        site.job(str(500 + j), ["n1"])
    assert site.records() == {}
    os.unlink(os.path.join(tiny_fs, "filler"))
    _redeliver(site.cfg("n1"))
    site.row("store full", "ENOSPC on the shared store for 4 jobs",
             exact_required=True).check()


def test_local_disk_full(tmp_path, tiny_fs):
    """The state dir (outbox, SQLite) fills up mid-job: the epilog keeps the exact record in
    the run dir's spare outbox and delivers it from there."""
    site = Site(tmp_path, hosts=["n1"])
    os.makedirs(site.path("n1"), exist_ok=True)
    os.symlink(tiny_fs, site.path("n1", "state"))
    for j in range(3):
        job = str(600 + j)
        site.hook("prolog", job, "n1")
        site.traffic(job, "n1")
        if j == 0:
            fill_disk(tiny_fs)
        p = site.hook("epilog", job, "n1")
        assert "kept in" in p.stderr, p.stderr  # said, in one line; not an error exit
    site.row("local disk full", "ENOSPC in the state dir from the first job on",
             exact_required=True).check()


def test_counter_resets_vanishing_and_reappearing_devices(tmp_path):
    """Records are exact, or say why not: a counter reset, a device gone mid-job, one that
    came back, garbage in a counter file."""
    site = Site(tmp_path, hosts=["n1", "n2", "n3", "n4"])
    site.job("700", ["n1"], fault="reset")
    site.job("701", ["n2"], fault="vanish")
    site.job("702", ["n3"], fault="garbage")
    # n4: a device missing at the prolog comes back during the job.
    ib = os.path.join(site.sys("n4"), "class", "infiniband")
    dev = sorted(os.listdir(ib))[-1]
    aside = os.path.join(site.root, "aside")
    os.rename(os.path.join(ib, dev), aside)
    site.hook("prolog", "703", "n4")
    os.rename(aside, os.path.join(ib, dev))
    site.traffic("703", "n4")
    site.hook("epilog", "703", "n4")
    site.job("704", ["n1"])  # after the reset: exact again
    recs = site.records()
    assert "device_appeared" in recs[("703", "n4")]["incomplete_reasons"]
    assert "device_vanished" in recs[("701", "n2")]["incomplete_reasons"]
    row = site.row("device faults", "reset, vanish, reappear, garbage counter file")
    row.check()
    assert row.flagged >= 2


def test_node_crash_and_reboot(tmp_path):
    """A node dies mid-job: no epilog, and its tmpfs run dir is gone after the reboot. Before
    the durable copy of the active file (state dir) nothing remembered the job: no record
    at all. Now the restarted daemon makes one from the old boot's samples, flagged."""
    from efajob.daemon.loop import Daemon
    from efajob.daemon.reconcile import reconcile

    site = Site(tmp_path, hosts=["n1", "n2"])
    daemons = {}
    for h in ("n1", "n2"):
        daemons[h] = Daemon(site.cfg(h), sinks=[], worker=False)
        daemons[h].start()
        daemons[h].tick()
    for h in ("n1", "n2"):
        site.hook("prolog", "800", h, ["n1", "n2"])
    for _ in range(3):
        for h in ("n1", "n2"):
            site.traffic("800", h, seconds=5)
            daemons[h].tick()
    for d in daemons.values():
        d.close()
    for h in ("n1", "n2"):
        shutil.rmtree(site.path(h, "run"))  # the crash: /run is a tmpfs
        cfg = site.cfg(h)


        assert reconcile(cfg, [], time.time(), boot_id="after-the-reboot") == ["800"]
        _redeliver(cfg)
    recs = site.records()
    for h in ("n1", "n2"):
        assert recs[("800", h)]["source"] == "reconcile"
        assert {"rebooted", "no_epilog"} <= set(recs[("800", h)]["incomplete_reasons"])
    site.row("node crash and reboot", "2 nodes die mid-job, run dirs wiped").check()


def test_40_concurrent_prologs_and_epilogs(tmp_path):
    hosts = [f"n{i}" for i in range(1, 41)]
    site = Site(tmp_path, hosts=hosts)
    jobs = [(str(900 + i), h) for i, h in enumerate(hosts)]
    site.hooks("prolog", jobs)
    for job, h in jobs:
        site.traffic(job, h, tx_gbps=10 + int(job) % 7)
    site.hooks("epilog", jobs)
    site.row("40 concurrent hooks", "40 prologs, then 40 epilogs, at once",
             exact_required=True).check()


def test_2000_job_churn(tmp_path, monkeypatch):
    """2,000 short jobs one after another on a node, through the hook's own main() in this
    process (2,000 interpreter starts would take most of CI's budget; the subprocess path is
    every other scenario's): exact records, no descriptor leaked, no error logged."""
    import logging

    from efajob.hooks import entry

    site = Site(tmp_path, hosts=["n1"])
    errors = []

    class Catch(logging.Handler):
        def emit(self, record):
            if record.levelno >= logging.WARNING:
                errors.append(record.getMessage())

    handler = Catch()
    logging.getLogger("efajob").addHandler(handler)
    fds = len(os.listdir("/proc/self/fd"))
    try:
        for j in range(2000):
            job = str(10000 + j)
            for kind in ("prolog", "epilog"):
                for k, v in site.env(kind, job, "n1", ["n1"]).items():
                    monkeypatch.setenv(k, v)
                if kind == "epilog":
                    site.traffic(job, "n1", tx_gbps=1 + j % 50, rx_gbps=1, seconds=1)
                rc = entry.main([kind])
                site.hook_runs += 1
                if rc != 0:
                    site.hook_nonzero.append(f"{kind} {job}: rc {rc}")
    finally:
        logging.getLogger("efajob").removeHandler(handler)
        _reap()
    leaked = len(os.listdir("/proc/self/fd")) - fds
    site.hook_nonzero += [f"logged: {m}" for m in errors]
    row = site.row("2,000-job churn", f"2,000 jobs back to back; fds leaked: {leaked}",
                   exact_required=True)
    row.check()
    assert leaked <= 0, leaked


def _reap():
    """The epilogs' delivery children, which init would reap on a node."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
