"""The node daemon against simulated trees: rates, resets, vanishing devices, garbage, the
schedule, store failures, the worker, sd_notify, and SIGTERM/SIGHUP on a real process."""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import types
from typing import List

import pytest
from click.testing import CliRunner

from conftest import wait_until
from efajob.config import build_config
from efajob.daemon.loop import Daemon, Notifier, configure_logging
from efajob.errors import ConfigError, StoreError
from efajob.node.localstore import LocalStore, current_boot_id
from efajob.hooks.runfiles import ActiveJob, write_active
from efajob.sim import build_node
from efajob.sinks.registry import build_sinks
from efajob.node.sysfs import read_snapshot

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BOOT = "11111111-2222-3333-4444-555555555555"


class Clock:
    def __init__(self, t: float):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, s: float) -> None:
        self.t += s


def make_cfg(tmp_path, **kw):
    data = {
        "cluster": "c1",
        "sysfs_root": str(tmp_path / "sys"),
        "run_dir": str(tmp_path / "run"),
        "state_dir": str(tmp_path / "state"),
        "store": str(tmp_path / "store"),
        "interval": 1.0,
        "instance_type": "p5.48xlarge",
    }
    data.update(kw)
    return build_config(data, env={}, node="n1")


@pytest.fixture
def proc(tmp_path):
    d = tmp_path / "proc" / "sys" / "kernel" / "random"
    d.mkdir(parents=True)
    (d / "boot_id").write_text(BOOT + "\n")
    return str(tmp_path / "proc")


def start_daemon(cfg, proc, *, sinks=(), **kw):
    mono, wall = Clock(5000.0), Clock(1_700_000_000.0)
    d = Daemon(cfg, clock=mono, wall_clock=wall, proc_root=proc, sinks=list(sinks),
               worker=False, **kw)
    d.start()
    return d, mono, wall


def advance(mono, wall, s):
    mono.advance(s)
    wall.advance(s)


def port_totals(inj, port_names):
    """What a node total should be: injected per-device deltas of port counters, summed."""
    out = {}
    for counters in inj.devices.values():
        for k, v in counters.items():
            if k in port_names:
                out[k] = out.get(k, 0) + v
    return out


def job(key="42", user="alice", boot=BOOT):
    return ActiveJob(key=key, job_id=key.split(".")[0], restart=0, user=user, uid=1000,
                     partition="gpu", account=None, cluster="c1", node="n1", nodelist="n1",
                     num_nodes=1, start_wall=time.time(), start_mono=5000.0, boot_id=boot)


def test_rates_and_rows_match_injected_traffic_on_p5(tmp_path, proc):
    node = build_node(str(tmp_path / "sys"), "p5.48xlarge")
    cfg = make_cfg(tmp_path)
    write_active(cfg.run_dir, job(), read_snapshot(cfg.sysfs_root))
    d, mono, wall = start_daemon(cfg, proc)
    try:
        first = d.tick()
        assert first.rates == {} and first.delta is None
        inj = node.traffic(800, 400, 2.0)
        advance(mono, wall, 2.0)
        t = d.tick()
    finally:
        d.close()
    want = port_totals(inj, node.layout[0])
    assert set(t.rates) == set(node.layout[0])
    for k, v in want.items():
        assert t.rates[k] == v / 2.0, k
    assert t.rates["tx_bytes"] * 8 / 1e9 == pytest.approx(800, rel=1e-9)
    for dev, counters in inj.devices.items():
        assert t.device_rates[dev]["tx_bytes"] == counters["tx_bytes"] / 2.0
    assert [j.key for j in t.jobs] == ["42"]
    with LocalStore.open(cfg.db_path, readonly=True) as st:
        (row,) = st.samples_between(BOOT, 0, 1e9)
        assert st.jobs_between(BOOT, 0, 1e9) == {"42"}
    assert row.deltas == want and row.seconds == 2.0 and row.jobs == ("42",)
    assert row.device_tx_bytes == {dv: c["tx_bytes"] for dv, c in inj.devices.items()}
    assert row.resets == ()


@pytest.fixture
def small(tmp_path):
    return build_node(str(tmp_path / "sys"), "p5.48xlarge", device_limit=4)


def two_ticks(tmp_path, proc, node, **traffic):
    d, mono, wall = start_daemon(make_cfg(tmp_path), proc)
    try:
        first = d.tick()
        inj = node.traffic(200, 100, 1.0, **traffic)
        advance(mono, wall, 1.0)
        t = d.tick()
        with LocalStore.open(d.cfg.db_path, readonly=True) as st:
            rows = st.samples_between(BOOT, 0, 1e9)
        return first, t, inj, rows
    finally:
        d.close()


def test_reset_is_flagged_never_negative(tmp_path, proc, small):
    first, t, inj, (row,) = two_ticks(tmp_path, proc, small, fault="reset")
    (dev,) = inj.resets
    before = first.snapshot.devices[dev].port_counters
    # After a reset the counter holds base + what moved since; a reader's delta is that value
    # when it went down (flagged), else the plain difference.
    want_dev, want_resets = {}, set()
    for k, moved in inj.devices[dev].items():
        if k not in before:
            continue
        cur = inj.reset_bases[dev][k] + moved
        if cur < before[k]:
            want_dev[k] = cur
            want_resets.add(f"{dev}/{k}")
        else:
            want_dev[k] = cur - before[k]
    assert f"{dev}/tx_bytes" in want_resets
    assert {r for r in row.resets if "device:" not in r} == want_resets
    assert set(t.delta.resets) == set(row.resets)
    want = port_totals(inj, small.layout[0])
    for k, v in want_dev.items():
        want[k] += v - inj.devices[dev][k]
    assert row.deltas == want
    assert row.device_tx_bytes[dev] == want_dev["tx_bytes"]
    assert all(v >= 0 for v in row.deltas.values())


def test_vanishing_device_is_left_out(tmp_path, proc, small):
    _, t, inj, (row,) = two_ticks(tmp_path, proc, small, fault="vanish")
    (gone,) = inj.vanished
    assert gone in t.delta.vanished and gone not in row.device_tx_bytes
    assert row.deltas == port_totals(inj, small.layout[0])
    assert len(t.snapshot.devices) == 3


def test_the_daemon_keeps_the_hooks_device_cache(tmp_path, proc, small):
    """Written at start, rewritten after a rediscovery (a device gone), read by the hooks."""
    from efajob.node import devcache
    from efajob.sim import vanish_device

    d, mono, wall = start_daemon(make_cfg(tmp_path), proc)
    path = devcache.cache_path(d.cfg.run_dir)
    try:
        assert [x.name for x in devcache.load(path, small.root)] == small.present_devices()
        gone = small.present_devices()[-1]
        vanish_device(small, gone)
        for _ in range(2):
            advance(mono, wall, 1.0)
            d.tick()
        assert [x.name for x in devcache.load(path, small.root)] == small.present_devices()
        assert gone not in small.present_devices()
    finally:
        d.close()


def test_garbage_counter_is_absent_not_zero(tmp_path, proc, small):
    _, t, inj, (row,) = two_ticks(tmp_path, proc, small, fault="garbage")
    (bad,) = inj.garbage
    dev, name = bad.split("/")
    assert name not in t.snapshot.devices[dev].port_counters
    assert name not in t.device_rates[dev]
    assert row.deltas == port_totals(inj, small.layout[0])


def test_late_tick_skips_instead_of_piling_up(tmp_path, proc, small):
    mono, wall = Clock(100.0), Clock(1_700_000_000.0)
    starts = []

    def wait(s):
        advance(mono, wall, s)

    d = Daemon(make_cfg(tmp_path, interval=1.0), clock=mono, wall_clock=wall, proc_root=proc,
               sinks=[], worker=False, wait=wait)
    d.start()
    real_tick = d.tick

    def tick():
        starts.append(mono())
        t = real_tick()
        if len(starts) == 3:
            advance(mono, wall, 3.5)  # one slow tick (a stalled disk)
        return t

    d.tick = tick
    try:
        d.run(max_ticks=6)
    finally:
        d.close()
    # Ticks due at 103 and 104 are skipped, the one due at 105 runs at once (late), and the
    # schedule stays on the original grid: no burst of catch-up ticks, no drift.
    assert starts == [100.0, 101.0, 102.0, 105.5, 106.0, 107.0]
    assert d.skipped == 2


def test_locked_store_keeps_rows_until_it_is_free(tmp_path, proc, small):
    d, mono, wall = start_daemon(make_cfg(tmp_path), proc, store_timeout=0.05)
    other = sqlite3.connect(d.cfg.db_path, isolation_level=None)
    try:
        d.tick()
        other.execute("BEGIN EXCLUSIVE")
        for _ in range(3):
            advance(mono, wall, 1.0)
            t = d.tick()
        assert t.health.store_pending == 3 and not t.health.store_ok
        assert d.errors["store"] >= 1 and "locked" in t.health.store_error
        other.execute("ROLLBACK")
        advance(mono, wall, 1.0)
        t = d.tick()
        assert t.health.store_pending == 0
        with LocalStore.open(d.cfg.db_path, readonly=True) as st:
            assert len(st.samples_between(BOOT, 0, 1e9)) == 4
    finally:
        other.close()
        d.close()


def test_corrupt_store_is_fatal_at_start_with_recovery(tmp_path, proc, small):
    cfg = make_cfg(tmp_path)
    os.makedirs(cfg.state_dir)
    with open(cfg.db_path, "wb") as f:
        f.write(b"garbage" * 1000)
    d = Daemon(cfg, proc_root=proc, sinks=[], worker=False)
    with pytest.raises(StoreError, match=r"corrupt.*mv "):
        d.start()
    os.replace(cfg.db_path, cfg.db_path + ".corrupt")  # the documented recovery
    d = Daemon(cfg, proc_root=proc, sinks=[], worker=False)
    d.start()  # the lock was released by the failed start
    d.close()


def test_corrupt_store_cli_exit_code(tmp_path, small):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'sysfs_root = "{tmp_path}/sys"\nstate_dir = "{tmp_path}/state"\n'
                   f'run_dir = "{tmp_path}/run"\nstore = "{tmp_path}/store"\ninterval = 0.05\n')
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "efajob.db").write_bytes(b"x" * 4096)
    from efajob.cli.main import main

    res = CliRunner().invoke(main, ["daemon", "--config", str(cfg), "--once"])
    assert res.exit_code == 4, res.output
    assert "corrupt" in res.output and "docs/daemon.md" in res.output


def test_second_daemon_on_the_same_state_dir_is_refused(tmp_path, proc, small):
    d, _, _ = start_daemon(make_cfg(tmp_path), proc)
    try:
        with pytest.raises(StoreError, match=f"another efajob daemon \\(pid {os.getpid()}\\)"):
            Daemon(make_cfg(tmp_path), proc_root=proc, sinks=[], worker=False).start()
        # What the epilog asks: found through /proc/<pid>/fdinfo/<fd> of the lock's holder.
        from efajob.hooks.outbox import daemon_alive

        pid, fd = open(os.path.join(d.cfg.state_dir, "daemon.lock")).read().split()
        assert (int(pid), int(fd)) == (os.getpid(), d._lock_fd) and daemon_alive(d.cfg)
    finally:
        d.close()
    assert not daemon_alive(d.cfg)


def test_unwritable_store_dir_is_retried_while_sampling_goes_on(tmp_path, proc, small):
    cfg = make_cfg(tmp_path)
    os.makedirs(cfg.state_dir)
    os.mkdir(cfg.db_path)  # a directory where the database should be: cannot open
    d, mono, wall = start_daemon(cfg, proc)
    try:
        assert d.store is None and d.errors["store"] == 1
        d.tick()
        advance(mono, wall, 1.0)
        t = d.tick()
        assert t.rates and t.health.store_pending == 1
        os.rmdir(cfg.db_path)
        advance(mono, wall, 31.0)  # past the retry delay
        t = d.tick()
        assert t.health.store_ok and t.health.store_pending == 0
    finally:
        d.close()


def test_status_file_and_unwritable_job_store(tmp_path, proc, small):
    d, mono, wall = start_daemon(make_cfg(tmp_path), proc)
    try:
        d.tick()
        small.traffic(200, 100, 1.0)
        advance(mono, wall, 1.0)
        d.tick()
        d.run_worker_once()
        path = tmp_path / "store" / "c1" / "nodes" / "n1.json"
        doc = json.loads(path.read_text())
        assert doc["schema"] == "efajob/node-status" and doc["node"] == "n1"
        assert doc["tx_gbps"] == pytest.approx(200) and len(doc["devices"]) == 4
        assert doc["daemon"]["healthy"] and doc["devices"][0]["link_gbps"] == 100.0
        assert doc["efa_driver"] == "2.17.0g"  # the simulated AWS driver's module/efa/version
        # The job store goes away (a file where the cluster dir was): logged, counted, no raise.
        path.unlink()
        os.rmdir(path.parent)
        os.rmdir(path.parent.parent)
        (tmp_path / "store" / "c1").write_text("not a dir")
        d.run_worker_once()
        assert d.errors["status"] == 1
        advance(mono, wall, 1.0)
        assert d.tick().rates
    finally:
        d.close()


def test_a_clean_stop_leaves_a_status_file_listing_no_job(tmp_path, proc, small):
    """Issue 17: after a clean stop the last status file still listed a job that had ended."""
    cfg = make_cfg(tmp_path)
    write_active(cfg.run_dir, job("77"), read_snapshot(cfg.sysfs_root))
    d, mono, wall = start_daemon(cfg, proc)
    path = tmp_path / "store" / "c1" / "nodes" / "n1.json"
    try:
        d.tick()
        d.write_status()
        assert [j["key"] for j in json.loads(path.read_text())["jobs"]] == ["77"]
    finally:
        d.close()
    doc = json.loads(path.read_text())
    assert doc["jobs"] == [] and doc["node"] == "n1"


def test_status_file_carries_the_driver_error_signals(tmp_path, proc, small):
    """Errors that rose since the previous status, per device and summed; readable counters;
    the type's device count. (Port state stays in the file for display, judged by nothing.)"""
    d, mono, wall = start_daemon(make_cfg(tmp_path), proc)
    path = tmp_path / "store" / "c1" / "nodes" / "n1.json"
    try:
        d.tick()
        d.write_status()
        assert json.loads(path.read_text())["error_rates"] == {}  # no earlier status yet
        small.traffic(200, 100, 1.0)
        name = small.present_devices()[1]
        dev = small.device_path(name)
        for sub, counter, n in (("hw_counters", "cmds_err", 40),
                                ("hw_counters", "no_completion_cmds", 20),
                                (os.path.join("ports", "1", "hw_counters"), "rdma_read_wr_err", 100)):
            p = os.path.join(dev, sub, counter)
            with open(p) as f:
                v = int(f.read())
            with open(p, "w") as f:
                f.write(f"{v + n}\n")
        # Past device_counter_interval (10 s): the daemon reads device counters again.
        advance(mono, wall, 20.0)
        d.tick()
        d.write_status()
        doc = json.loads(path.read_text())
        assert doc["expected_devices"] == 32
        assert doc["error_rates"]["cmds_err"] == 2.0 and doc["error_rates"]["no_completion_cmds"] == 1.0
        assert doc["rates"]["rdma_read_wr_err"] == 5.0
        devs = {x["name"]: x for x in doc["devices"]}
        assert devs[name]["errors"] == {"cmds_err": 2.0, "no_completion_cmds": 1.0,
                                        "rdma_read_wr_err": 5.0}
        assert all(x["errors"] == {} for n, x in devs.items() if n != name)
        assert all(x["port_counters"] > 10 for x in devs.values())
    finally:
        d.close()


class RecordingSink:
    name = "rec"

    def __init__(self, fail=False):
        self.ticks, self.records, self.fail, self.flushed, self.closed = [], [], fail, False, False

    def on_tick(self, tick):
        if self.fail:
            raise RuntimeError("boom")
        self.ticks.append(tick)

    def on_record(self, record):
        self.records.append(record)

    def flush(self, timeout):
        self.flushed = True

    def close(self):
        self.closed = True


def test_sinks_see_ticks_and_a_failing_sink_does_not_stop_the_loop(tmp_path, proc, small):
    good, bad = RecordingSink(), RecordingSink(fail=True)
    d, mono, wall = start_daemon(make_cfg(tmp_path), proc, sinks=[bad, good])
    d.tick()
    advance(mono, wall, 1.0)
    d.tick()
    d.close()
    assert len(good.ticks) == 2 and d.errors["sink"] == 2
    assert good.flushed and good.closed and bad.closed


def test_worker_delivers_and_reconciles_through_outbox(tmp_path, proc, small, monkeypatch):
    calls = []

    def deliver_pending(cfg):
        calls.append("deliver")
        return types.SimpleNamespace(records=[{"job_id": "7"}])

    def reconcile(cfg, active, now_wall):
        calls.append(("reconcile", [j.key for j in active], now_wall))
        raise OSError("stale NFS handle")

    fake = types.SimpleNamespace(deliver_pending=deliver_pending, reconcile=reconcile)
    monkeypatch.setattr("efajob.daemon.loop._outbox", lambda: fake)
    sink = RecordingSink()
    cfg = make_cfg(tmp_path)
    write_active(cfg.run_dir, job("9"), read_snapshot(cfg.sysfs_root))
    d, mono, wall = start_daemon(cfg, proc, sinks=[sink])
    try:
        d.tick()
        d.run_worker_once()
    finally:
        d.close()
    assert calls == ["deliver", ("reconcile", ["9"], wall())]
    assert sink.records == [{"job_id": "7"}] and d.errors["reconcile"] == 1


class _RecordingEvent(threading.Event):
    """The worker's kick event, noting every timeout the worker sleeps with, and whether it
    had written a node status (with a sample) before: until then it looks again each interval.
    Flagged from write_status, in the worker's own thread before it computes the timeout, so
    a first tick landing in between cannot be mistaken for a short poll."""

    def __init__(self, daemon):
        super().__init__()
        self.waits, self.status_written = [], False
        write = daemon.write_status

        def write_status():
            if daemon.last_tick is not None:
                self.status_written = True
            write()

        daemon.write_status = write_status

    def wait(self, timeout=None):
        self.waits.append((timeout, self.status_written))
        return super().wait(timeout)


def test_worker_delivers_a_new_outbox_record_at_once(tmp_path, proc, small, monkeypatch):
    """An epilog's record reaches the store on the tick after it lands in the outbox, not at
    the next sweep; between jobs the worker sleeps until its next job is due instead of
    polling. Checked on what the worker does, not on how fast it does it: the sweep is set
    beyond the test's length, so only the main thread's kick can deliver the second time."""
    from efajob.daemon import loop as daemon_mod

    calls = []
    fake = types.SimpleNamespace(
        deliver_pending=lambda cfg: calls.append("deliver") or types.SimpleNamespace(records=[]),
        reconcile=lambda cfg, active, now_wall: [])
    monkeypatch.setattr("efajob.daemon.loop._outbox", lambda: fake)
    monkeypatch.setattr(daemon_mod, "DELIVER_SWEEP_SECONDS", 3600.0)
    cfg = make_cfg(tmp_path, interval=0.2, status_interval=60.0)
    os.makedirs(cfg.outbox_dir)
    d = Daemon(cfg, proc_root=proc, sinks=[], worker=True)
    kick = d._worker_kick = _RecordingEvent(d)
    d.start()
    loop = threading.Thread(target=d.run, daemon=True)
    loop.start()
    try:
        assert wait_until(lambda: calls and any(sampled for _, sampled in kick.waits))
        assert calls == ["deliver"]  # the first round at start
        with open(os.path.join(cfg.outbox_dir, "7.json.tmp"), "w") as f:
            f.write("{}")
        os.rename(os.path.join(cfg.outbox_dir, "7.json.tmp"), os.path.join(cfg.outbox_dir, "7.json"))
        assert wait_until(lambda: len(calls) >= 2)
    finally:
        d.stop()
        loop.join(120)
        d.close()
    assert calls == ["deliver", "deliver"]
    # Once sampling runs, every sleep lasts until a job is due (status every 60 s, reconcile
    # every 60 s): never a short poll. Before the first sample it looks again each interval.
    assert all(t >= 10 for t, sampled in kick.waits if sampled), kick.waits


def test_worker_retries_waiting_records_sooner_than_the_sweep(tmp_path, proc, small, monkeypatch):
    """After a round that left records in the outbox (job store down) the next round is due in
    DELIVER_SECONDS; after one that emptied it, only at the DELIVER_SWEEP_SECONDS sweep."""
    from efajob.daemon import loop as daemon_mod

    left = [3]
    fake = types.SimpleNamespace(
        deliver_pending=lambda cfg: types.SimpleNamespace(records=[], pending=left[0]),
        reconcile=lambda cfg, active, now_wall: [])
    monkeypatch.setattr("efajob.daemon.loop._outbox", lambda: fake)
    cfg = make_cfg(tmp_path)
    d, mono, _ = start_daemon(cfg, proc, sinks=[])
    try:
        due = {"deliver": 0.0, "reconcile": 0.0, "status": 0.0}
        d.run_worker_once(due)
        assert due["deliver"] == mono() + daemon_mod.DELIVER_SECONDS
        left[0] = 0
        due["deliver"] = 0.0
        d.run_worker_once(due)
        assert due["deliver"] == mono() + daemon_mod.DELIVER_SWEEP_SECONDS
    finally:
        d.close()


def test_sd_notify_ready_and_watchdog(tmp_path, proc, small):
    path = str(tmp_path / "notify")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(path)
    srv.settimeout(2)
    try:
        n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "20000000"})
        assert n.watchdog_period == 10.0
        d = Daemon(make_cfg(tmp_path, interval=0.01), proc_root=proc, sinks=[], worker=False,
                   notifier=n)
        d.start()
        d.run(max_ticks=2)
        d.close()
        srv.setblocking(False)
        got = []
        while True:
            try:
                got.append(srv.recv(4096).decode())
            except BlockingIOError:
                break
    finally:
        srv.close()
    assert got[0].startswith("READY=1") and got[-1] == "STOPPING=1"
    assert set(got[1:-1]) == {"WATCHDOG=1"} and len(got) >= 4  # at least one per tick
    assert Notifier({}).watchdog_period is None  # no socket: silent no-op
    Notifier({}).notify("READY=1")


def test_build_sinks_registry(tmp_path):
    cfg = make_cfg(tmp_path)
    assert build_sinks(cfg) == []
    with pytest.raises(ConfigError, match="unknown sink 'nope'"):
        build_sinks(cfg, ["nope"])


def test_log_file_survives_logrotate(tmp_path):
    cfg = make_cfg(tmp_path, log_file=str(tmp_path / "d.log"))
    configure_logging(cfg)
    try:
        lg = logging.getLogger("efajob.daemon")
        lg.info("before")
        os.rename(tmp_path / "d.log", tmp_path / "d.log.1")  # what logrotate does
        lg.info("after")
    finally:
        configure_logging(make_cfg(tmp_path))
    assert "before" in (tmp_path / "d.log.1").read_text()
    assert "after" in (tmp_path / "d.log").read_text()


def test_status_command_reads_the_store(tmp_path, small):
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text(
        f'cluster = "c1"\nsysfs_root = "{tmp_path}/sys"\nstate_dir = "{tmp_path}/state"\n'
        f'run_dir = "{tmp_path}/run"\nstore = "{tmp_path}/store"\ninterval = 0.05\n'
        'instance_type = "p5.48xlarge"\n')
    from efajob.cli.main import main

    runner = CliRunner()
    res = runner.invoke(main, ["status", "--config", str(cfg_file), "--node", "n1"])
    assert res.exit_code == 2 and "no samples" in res.output and "devices (4)" in res.output
    cfg = build_config({"run_dir": f"{tmp_path}/run"}, env={}, node="n1")
    # This boot's id and a fresh start: reconciliation must leave the job alone.
    write_active(cfg.run_dir, job("12", boot=current_boot_id()), read_snapshot(str(tmp_path / "sys")))
    res = runner.invoke(main, ["daemon", "--config", str(cfg_file), "--node", "n1", "--once"])
    assert res.exit_code == 0, res.output
    # Healthy means a sample no older than three intervals: read with a long interval, so a
    # slow machine's pause between the two commands cannot make the daemon look stale.
    cfg_file.write_text(cfg_file.read_text().replace("interval = 0.05", "interval = 600"))
    res = runner.invoke(main, ["status", "--config", str(cfg_file), "--node", "n1",
                               "--format", "json"])
    doc = json.loads(res.output)
    assert doc["daemon"]["healthy"] and "tx_bytes" in doc["rates"]
    assert [j["key"] for j in doc["jobs"]] == ["12"] and len(doc["devices"]) == 4
    # Fresh rows, but the --once daemon has exited: not running (tests/test_status.py has
    # every state with a daemon's lock held).
    assert res.exit_code == 2 and doc["state"] == "not running"
    res = runner.invoke(main, ["status", "--config", str(cfg_file), "--node", "n1"])
    assert "daemon: last sample" in res.output and "12" in res.output


# -- a real process: signals -----------------------------------------------------------------
def _write_cfg(path, tmp_path, port=None):
    text = (f'cluster = "c1"\nsysfs_root = "{tmp_path}/sys"\nstate_dir = "{tmp_path}/state"\n'
            f'run_dir = "{tmp_path}/run"\nstore = "{tmp_path}/store"\ninterval = 0.1\n'
            'status_interval = 0.2\n')
    if port:
        text += f'[prometheus]\nenabled = true\nbind = "127.0.0.1"\nport = {port}\n'
    path.write_text(text)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _drain(sock, into):
    try:
        while True:
            into.append(sock.recv(4096))
    except OSError:  # closed, or silent for the socket's timeout
        pass


def test_sigterm_and_sighup_on_a_real_process(tmp_path, small):
    import urllib.request

    cfg = tmp_path / "c.toml"
    _write_cfg(cfg, tmp_path)
    notify = str(tmp_path / "notify")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(notify)
    srv.settimeout(120)
    env = dict(os.environ, NOTIFY_SOCKET=notify, EFAJOB_NODE="n1", PYTHONPATH=REPO)
    log = open(tmp_path / "stderr", "w+")
    p = subprocess.Popen([sys.executable, "-m", "efajob", "daemon", "--config", str(cfg)],
                         env=env, stderr=log, stdout=subprocess.DEVNULL, cwd=REPO)
    try:
        assert srv.recv(4096).startswith(b"READY=1")
        # Read the rest as systemd does: the daemon must never wait on this socket, and a
        # queue left full would only hide that.
        notes: List[bytes] = []
        threading.Thread(target=_drain, args=(srv, notes), daemon=True).start()
        status = tmp_path / "store" / "c1" / "nodes" / "n1.json"
        assert wait_until(status.exists)
        # SIGHUP: the new config turns the Prometheus endpoint on.
        port = _free_port()
        _write_cfg(cfg, tmp_path, port)
        p.send_signal(signal.SIGHUP)

        def scraped():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
                    return b"efajob_node_tx_bytes_per_second" in r.read()
            except OSError:
                return False

        assert wait_until(scraped), open(tmp_path / "stderr").read()
        # A broken config on SIGHUP keeps the old one.
        cfg.write_text("bogus_key = 1\n")
        p.send_signal(signal.SIGHUP)
        assert wait_until(lambda: "keeping the old config" in open(tmp_path / "stderr").read())
        assert scraped()
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=120) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=60)
        srv.close()
        log.close()
    err = open(tmp_path / "stderr").read()
    assert "reloaded config" in err and "stopped" in err and "Traceback" not in err
    with LocalStore.open(str(tmp_path / "state" / "efajob.db"), readonly=True) as st:
        assert st.counts()["samples"] >= 2


# -- the systemd unit ------------------------------------------------------------------------
def test_install_systemd_writes_a_hardened_unit(tmp_path):
    from efajob.cli.main import main

    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text('state_dir = "/var/lib/efajob"\nrun_dir = "/run/efajob"\n'
                        'store = "/home/shared/efajob"\ninterval = 5.0\n')
    out = tmp_path / "unit" / "efajob-node.service"
    res = CliRunner().invoke(main, ["install", "systemd", "--config", str(cfg_file), "--output",
                                    str(out), "--node", "n7"])
    assert res.exit_code == 0, res.output
    text = out.read_text()
    exec_start = next(x for x in text.splitlines() if x.startswith("ExecStart="))
    assert exec_start == (f"ExecStart={sys.executable} -m efajob daemon --config "
                          f"{cfg_file} --node n7")
    for line in ("Type=notify", "Restart=on-failure", "NoNewPrivileges=yes",
                 "ProtectSystem=strict", "WatchdogSec=50s", "StateDirectory=efajob",
                 "ReadWritePaths=-/run/efajob -/var/lib/efajob -/home/shared/efajob"):
        assert line in text.splitlines(), line
    assert any(x.startswith("CPUQuota=") for x in text.splitlines())
    assert any(x.startswith("MemoryMax=") for x in text.splitlines())
    assert "ProtectHome" not in text  # the store lives under /home here


def test_repo_unit_template_matches_the_renderer():
    from efajob.cli.install import render_unit

    cfg = build_config({}, env={}, node="n1")
    want = render_unit(cfg, python="/usr/bin/python3", config_file="/etc/efajob/config.toml",
                       node=None)
    with open(os.path.join(REPO, "slurm", "systemd", "efajob-node.service")) as f:
        assert f.read() == want


def test_systemd_analyze_accepts_the_unit(tmp_path):
    from conftest import require_binary
    from efajob.cli.install import render_unit

    analyze = require_binary("systemd-analyze")
    unit = tmp_path / "efajob-node.service"
    unit.write_text(render_unit(build_config({}, env={}, node="n1"), python=sys.executable,
                                config_file=None, node="n1"))
    res = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    # Warnings about the host (no running systemd in a container) are not about our unit.
    problems = [x for x in (res.stdout + res.stderr).splitlines() if "efajob-node.service" in x]
    assert res.returncode == 0 and not problems, res.stdout + res.stderr


def test_instance_type_from_imds_is_cached_for_the_hooks(tmp_path, proc, small):
    from efajob.node.instances import read_cached_instance_type

    cfg = make_cfg(tmp_path, instance_type=None)
    d, mono, wall = start_daemon(cfg, proc)
    calls = []
    try:
        got = d.resolve_instance_type(fetch=lambda: calls.append(1) or {"instance_type": "p5en.48xlarge"})
        assert got == "p5en.48xlarge" and read_cached_instance_type(cfg.state_dir) == "p5en.48xlarge"
        assert d.tick().instance_type == "p5en.48xlarge"
        # Cached: a restarted daemon does not ask IMDS again.
        assert d.resolve_instance_type(fetch=lambda: calls.append(2) or {}) == "p5en.48xlarge"
        assert calls == [1]
    finally:
        d.close()
    # Off EC2 nothing is found and nothing is cached.
    cfg2 = make_cfg(tmp_path, instance_type=None, state_dir=str(tmp_path / "state2"))
    d2, _, _ = start_daemon(cfg2, proc)
    try:
        assert d2.resolve_instance_type(fetch=lambda: {}) is None
        assert read_cached_instance_type(cfg2.state_dir) is None
    finally:
        d2.close()
