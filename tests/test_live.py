"""Live truth (issue 12): a running job's report and the dashboard judge each node by its
daemon's last minute (the node status file's `recent`), never "Healthy" without data.

A real Daemon samples a simulated p5 node under injected clocks; the simulator's `drops` fault
gives exact totals, so the window, the finding and the badge are checked against them."""
from __future__ import annotations

import json
import time

import pytest

from efajob.daemon.recent import RecentWindow, build_recent, is_error_counter
from efajob.dashboard.model import build_dashboard, parse_node_view
from efajob.dashboard.page import render_dashboard
from efajob.hooks.runfiles import ActiveJob, write_active
from efajob.node.sysfs import read_snapshot
from efajob.report.assemble import build_job_report
from efajob.report.findings import (RUNNING_CLEAN, RUNNING_NO_DATA, RUNNING_PARTIAL,
                                    RUNNING_PROBLEMS_LIVE, verdict_tone)
from efajob.report.render.json import report_to_dict
from efajob.report.render.text import render_text
from efajob.sim import build_node
from efajob.store.reader import parse_recent

from test_daemon import BOOT, advance, make_cfg, start_daemon

STEP = 10.0  # seconds between the daemon's ticks here (the clock is injected)


@pytest.fixture
def proc(tmp_path):
    """A /proc with the boot id the daemon files its samples under."""
    (tmp_path / "proc" / "sys" / "kernel" / "random").mkdir(parents=True)
    (tmp_path / "proc" / "sys" / "kernel" / "random" / "boot_id").write_text(BOOT + "\n")
    return str(tmp_path / "proc")


@pytest.fixture
def node(tmp_path):
    return build_node(str(tmp_path / "sys"), "p5.48xlarge", device_limit=4)


def running_job(cfg, key="42", start_mono=5000.0):
    job = ActiveJob(key=key, job_id=key, restart=0, user="alice", uid=1000, partition="gpu",
                    account=None, cluster="c1", node="n1", nodelist="n1", num_nodes=1,
                    start_wall=time.time(), start_mono=start_mono, boot_id=BOOT)
    write_active(cfg.run_dir, job, read_snapshot(cfg.sysfs_root))


def sample_minute(tmp_path, proc, node, fault=None, steps=6):
    """A daemon ticks every STEP s for steps x STEP s of traffic; returns (cfg, wall time
    at the end, injected rx_drops of the window, the status document)."""
    cfg = make_cfg(tmp_path, interval=STEP)
    running_job(cfg)
    d, mono, wall = start_daemon(cfg, proc)
    drops = 0
    try:
        d.tick()
        for _ in range(steps):
            inj = node.traffic(200, 200, STEP, fault=fault)
            drops += inj.totals.get("rx_drops", 0)
            advance(mono, wall, STEP)
            d.tick()
        d.write_status()  # the worker's status job alone: no reconcile (asks Slurm)
        path = tmp_path / "store" / "c1" / "nodes" / "n1.json"
        live = path.read_text()
    finally:
        d.close()
    # A clean stop writes a last status listing no job: put back the running daemon's file,
    # which is what these tests read (a daemon still sampling).
    path.write_text(live)
    return cfg, wall(), drops, json.loads(live)


def test_window_of_a_daemon_seeing_drops(tmp_path, proc, node):
    cfg, now, drops, doc = sample_minute(tmp_path, proc, node, fault="drops")
    recent = doc["recent"]
    assert drops > 0 and recent["seconds"] == 6 * STEP
    assert recent["counters"]["rx_drops"] == drops  # exact: the simulator's totals
    assert sum(d["counters"].get("rx_drops", 0) for d in recent["devices"].values()) == drops
    assert sorted(recent["devices"]) == sorted(node.device_order)
    assert parse_recent(recent).counters["rx_drops"] == drops


def test_live_report_of_a_node_dropping_packets(tmp_path, proc, node):
    cfg, now, drops, _ = sample_minute(tmp_path, proc, node, fault="drops")
    r = build_job_report(cfg, "42", use_slurm=False, now=now)
    assert r.running and r.verdict == RUNNING_PROBLEMS_LIVE
    (f,) = [f for f in r.findings if f.code == "rx_drops"]
    assert f.live and f.host == "n1" and f.severity == "warning"  # 0.1 %: not above 1e-3
    assert f.message.startswith("Live, last 60 s: n1 dropped ")
    assert f"{drops:,}" in f.message
    # User and partition from the daemon's status (the active-job file), not "n/a".
    assert (r.meta.user, r.meta.partition) == ("alice", "gpu")
    text = render_text(r, width=80)
    assert "Verdict: Running: problems seen live" in text and "User      : alice" in text
    assert max(len(ln) for ln in text.splitlines()) <= 80
    d = report_to_dict(r)
    assert d["verdict"] == RUNNING_PROBLEMS_LIVE and {"code": "rx_drops", "live": True}.items() \
        <= [x for x in d["findings"] if x["code"] == "rx_drops"][0].items()


def test_live_report_of_a_healthy_node(tmp_path, proc, node):
    cfg, now, drops, _ = sample_minute(tmp_path, proc, node)
    r = build_job_report(cfg, "42", use_slurm=False, now=now)
    assert drops == 0 and r.verdict == RUNNING_CLEAN and verdict_tone(r.verdict) == "Healthy"
    assert [f.code for f in r.findings if f.severity != "info"] == []


def test_running_verdicts_without_a_window(tmp_path, proc, node):
    # One tick: no window yet (two snapshots needed): the verdict says there is no live data.
    cfg, now, _, doc = sample_minute(tmp_path, proc, node, steps=0)
    assert "recent" not in doc
    r = build_job_report(cfg, "42", use_slurm=False, now=now)
    assert r.verdict == RUNNING_NO_DATA and verdict_tone(r.verdict) == "unknown"
    assert "Healthy" not in render_text(r)


def test_dashboard_node_dropping_packets_is_never_ok(tmp_path, proc, node):
    _, now, drops, doc = sample_minute(tmp_path, proc, node, fault="drops")
    n = parse_node_view(doc, "c1", now=now, max_status_age=60)
    assert n.state == "warn" and any(p.startswith("Live, last 60 s: n1 dropped") for p in n.problems)
    page = render_dashboard(build_dashboard([("c1", doc)], [], now=now, max_status_age=60))
    assert '<span class="badge warn">problem</span>' in page and '<span class="badge ok">' not in page
    # An older daemon without `recent`: a health rate moving at the last sample is enough.
    old = dict(doc)
    del old["recent"]
    del old["verdict"]  # older daemons wrote no verdict either
    del old["expected_devices"]  # nor this (and the simulated tree is cut to a few devices)
    old["rates"] = dict(old["rates"], rx_drops=5421.0)
    n = parse_node_view(old, "c1", now=now, max_status_age=60)
    assert n.state == "warn" and n.problems == ["rx_drops 5,421.0/s at the last sample"]
    # A clean minute stays ok.
    old["rates"]["rx_drops"] = 0.0
    assert parse_node_view(old, "c1", now=now, max_status_age=60).state == "ok"


def test_recent_window_keeps_one_minute():
    from efajob.node.readings import DeviceReading, Snapshot

    def snap(t, drops):
        dev = DeviceReading("rdmap0", 1, {"rx_drops": drops, "tx_bytes": 0}, {"cmds_err": 0})
        return Snapshot(mono=t, wall=t, devices={"rdmap0": dev})

    w = RecentWindow(seconds=60)
    assert w.summary() is None
    w.add(snap(0.0, 0))
    assert w.summary() is None  # one snapshot: no window
    for i in range(1, 200):  # a tick a second, 7 drops each
        w.add(snap(float(i), 7 * i))
        s = w.summary()
        assert s["counters"]["rx_drops"] == 7 * s["seconds"]
        assert s["seconds"] == i if i <= 60 else 60 <= s["seconds"] < 65, (i, s["seconds"])
    assert len(w._anchors) <= 14  # anchors 5 s apart, not 60 snapshots
    w.add(snap(5.0, 0))  # a clock that went back: start over
    assert w.summary() is None
    assert is_error_counter("rdma_read_wr_err") and is_error_counter("no_completion_cmds")
    assert not is_error_counter("tx_bytes") and not is_error_counter("keep_alive_rcvd")


def test_build_recent_keeps_errors_and_health_counters_that_moved():
    from efajob.node.counters import DeviceDelta, SnapshotDelta

    delta = SnapshotDelta(60.0, devices={
        "a": DeviceDelta("a", {"tx_bytes": 5, "rx_bytes": 6, "rx_drops": 0, "retrans_pkts": 3,
                               "send_wrs": 9}, {"cmds_err": 4, "alloc_pd_err": 0, "keep_alive_rcvd": 60})},
        vanished=("b",))
    r = build_recent(delta)
    assert r["devices"]["a"] == {"counters": {"tx_bytes": 5, "rx_bytes": 6, "retrans_pkts": 3},
                                 "device_counters": {"cmds_err": 4}}
    assert r["counters"]["send_wrs"] == 9 and r["vanished"] == ["b"]
    assert RUNNING_PARTIAL.startswith("Running")


def test_live_report_takes_user_and_partition_from_slurm(tmp_path, proc, node, monkeypatch):
    import efajob.slurm.adapter as slurm
    from efajob.slurm.adapter import JobInfo

    class Backend:
        def job(self, job_id):
            return JobInfo(job_id="42", user="bob", partition="p5", account="ml", state="RUNNING",
                           nodes=["n1"], nodelist="n1", num_nodes=1, slurm_job_id="42")

    cfg, now, _, _ = sample_minute(tmp_path, proc, node, fault="drops")
    monkeypatch.setattr(slurm, "get_backend", lambda **kw: Backend())
    r = build_job_report(cfg, "42", now=now)
    assert (r.meta.user, r.meta.partition, r.meta.account) == ("bob", "p5", "ml")
    assert r.meta.source == "slurm" and r.verdict == RUNNING_PROBLEMS_LIVE


def test_live_report_of_a_dead_device(tmp_path, proc, node):
    cfg, now, _, _ = sample_minute(tmp_path, proc, node, fault="dead-device")
    r = build_job_report(cfg, "42", use_slurm=False, now=now)
    idle = [f for f in r.findings if f.code == "device_idle"]
    assert [(f.host, f.live, f.severity) for f in idle] == [("n1", True, "critical")], r.findings
    assert idle[0].device in node.device_order and r.verdict == RUNNING_PROBLEMS_LIVE


def test_a_job_is_not_charged_with_the_minute_before_it(tmp_path, proc, node):
    # 40 s of drops (a previous job), then job 43 starts and 20 s of clean traffic follow.
    cfg = make_cfg(tmp_path, interval=STEP)
    d, mono, wall = start_daemon(cfg, proc)
    path = tmp_path / "store" / "c1" / "nodes" / "n1.json"
    try:
        d.tick()
        for _ in range(4):
            node.traffic(200, 200, STEP, fault="drops")
            advance(mono, wall, STEP)
            d.tick()
        running_job(cfg, "43", start_mono=mono())
        d.tick()  # the daemon sees the job; no anchor after its start yet
        d.write_status()
        young = json.loads(path.read_text())
        assert young["jobs"][0]["recent"] is None and young["recent"]["counters"]["rx_drops"] > 0
        assert build_job_report(cfg, "43", use_slurm=False, now=wall()).verdict == RUNNING_NO_DATA
        for _ in range(2):
            node.traffic(200, 200, STEP)
            advance(mono, wall, STEP)
            d.tick()
        d.write_status()
        doc = json.loads(path.read_text())
        r = build_job_report(cfg, "43", use_slurm=False, now=wall())
    finally:
        d.close()
    own = doc["jobs"][0]["recent"]
    assert own["seconds"] == 2 * STEP and own["counters"]["rx_drops"] == 0
    assert r.verdict == RUNNING_CLEAN and not [f for f in r.findings if f.live]
    # The node itself did drop packets within the minute: the dashboard says so.
    assert parse_node_view(doc, "c1", now=wall(), max_status_age=60).state == "warn"
