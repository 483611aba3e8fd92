"""The run dir: active-job files, start snapshots, the daemon's cached reader, job ids."""
from __future__ import annotations

import json
import os

import pytest

from efajob.errors import RecordError, UsageError
from efajob.slurm.jobid import is_job_id, job_key, parse_key, parse_restart, validate_job_id
from efajob.hooks.runfiles import (ActiveJob, ActiveJobsReader, active_path, atomic_write,
                                   read_active, read_start, remove_active, start_path, write_active)
from efajob.node.readings import DeviceReading, Snapshot


def snap(mono=100.0, wall=1_700_000_000.0, tx=1000):
    dev = DeviceReading("rdmap0s0", 1, {"tx_bytes": tx, "rx_bytes": 5}, {"alloc_pd_err": 0})
    return Snapshot(mono=mono, wall=wall, devices={"rdmap0s0": dev}, net={"eth0": {"rx_bytes": 7}})


def job(job_id="123", restart=0, **kw):
    base = dict(key=job_key(job_id, restart), job_id=job_id, restart=restart, user="alice", uid=1000,
                partition="gpu", account=None, cluster="c1", node="n1", nodelist="n[1-2]",
                num_nodes=2, start_wall=1_700_000_000.0, start_mono=100.0, boot_id="b1")
    base.update(kw)
    return ActiveJob(**base)


@pytest.mark.parametrize("value,ok", [
    ("123", True), ("123_4", True), ("123+1", True), ("4294967295", True),
    ("", False), ("../../etc", False), ("123/4", False), ("12 3", False), ("123_", False),
    ("+1", False), ("123+1_2", False), ("１２３", False), ("12345678901", False), ("123\n", False),
    (None, False), (123, False), ("123.1", False),
])
def test_job_ids(value, ok):
    assert is_job_id(value) is ok
    if ok:
        assert validate_job_id(value) == value
    else:
        with pytest.raises(UsageError):
            validate_job_id(value)


@pytest.mark.parametrize("job_id,restart,key", [
    ("123", 0, "123"), ("123", 1, "123.1"), ("7_3", 2, "7_3.2"), ("9+1", 0, "9+1"),
])
def test_job_key_roundtrip(job_id, restart, key):
    assert job_key(job_id, restart) == key
    assert parse_key(key) == (job_id, restart)


@pytest.mark.parametrize("bad", ["123.0", "123.", "../1", "1.2.3", "", "123.-1"])
def test_parse_key_rejects(bad):
    with pytest.raises(UsageError):
        parse_key(bad)


@pytest.mark.parametrize("value,expected", [(None, 0), ("", 0), ("0", 0), ("3", 3)])
def test_parse_restart(value, expected):
    assert parse_restart(value) == expected


@pytest.mark.parametrize("bad", ["-1", "x", "1e3", "9999999", "٣"])
def test_parse_restart_rejects(bad):
    with pytest.raises(UsageError):
        parse_restart(bad)


def test_job_key_rejects_bad_restart():
    for bad in (-1, True, 1.0):
        with pytest.raises(UsageError):
            job_key("1", bad)


def test_write_read_remove(tmp_path):
    rd = str(tmp_path / "run")
    j = job()
    write_active(rd, j, snap())
    assert read_active(rd, "123") == j
    assert read_start(rd, "123") == snap()
    d = json.loads(open(active_path(rd, "123")).read())
    assert d["schema"] == "efajob/active-job" and d["version"] == 1
    assert oct(os.stat(active_path(rd, "123")).st_mode & 0o777) == "0o644"
    assert oct(os.stat(os.path.join(rd, "active")).st_mode & 0o777) == "0o755"
    remove_active(rd, "123")
    assert read_active(rd, "123") is None and read_start(rd, "123") is None
    remove_active(rd, "123")  # twice is fine: an epilog may run without a prolog
    assert sorted(os.listdir(os.path.join(rd, "active"))) == []


def test_requeued_job_gets_its_own_files(tmp_path):
    rd = str(tmp_path)
    write_active(rd, job(), snap(tx=1))
    write_active(rd, job(restart=1), snap(tx=2))
    assert read_start(rd, "123").devices["rdmap0s0"].port_counters["tx_bytes"] == 1
    assert read_start(rd, "123.1").devices["rdmap0s0"].port_counters["tx_bytes"] == 2


def test_write_active_refuses_mismatched_key(tmp_path):
    with pytest.raises(RecordError):
        write_active(str(tmp_path), job().replace(key="124"), snap())
    with pytest.raises(RecordError):
        read_start(str(tmp_path), "../x")


def test_atomic_write_leaves_no_temp_on_error(tmp_path, monkeypatch):
    target = tmp_path / "f.json"
    target.write_bytes(b"old")

    def boom(*a):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", boom)
    with pytest.raises(OSError):
        atomic_write(str(target), b"new")
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["f.json"] and target.read_bytes() == b"old"


def test_bad_start_snapshot_is_a_record_error(tmp_path):
    rd = str(tmp_path)
    write_active(rd, job(), snap())
    with open(start_path(rd, "123"), "w") as f:
        f.write('{"devices": []}')  # no mono/wall
    with pytest.raises(RecordError):
        read_start(rd, "123")
    with open(start_path(rd, "123"), "w") as f:
        f.write("{not json")
    with pytest.raises(RecordError):
        read_start(rd, "123")


def test_reader_caches_and_skips_bad_files(tmp_path, caplog, monkeypatch):
    rd = str(tmp_path)
    r = ActiveJobsReader(rd)
    assert r.read() == []  # no run dir yet
    write_active(rd, job("1"), snap())
    write_active(rd, job("2"), snap())
    adir = os.path.join(rd, "active")
    open(os.path.join(adir, "garbage.json"), "w").write("{")
    open(os.path.join(adir, "3.json"), "w").write(json.dumps(job("4").to_dict()))  # name != key
    open(os.path.join(adir, ".1.json.123.tmp"), "w").write("{")  # a writer's temp file
    open(os.path.join(adir, "5.json"), "w").write(json.dumps(dict(job("5").to_dict(), uid=True)))
    with caplog.at_level("WARNING"):
        assert [j.key for j in r.read()] == ["1", "2"]
    assert len([m for m in caplog.messages if "skipping" in m]) == 3

    # Unchanged files are not parsed again, nor re-logged.
    calls = []
    orig = ActiveJobsReader._parse
    monkeypatch.setattr(ActiveJobsReader, "_parse",
                        staticmethod(lambda p, s: calls.append(p) or orig(p, s)))
    caplog.clear()
    assert [j.key for j in r.read()] == ["1", "2"]
    assert calls == [] and caplog.messages == []

    remove_active(rd, "1")
    write_active(rd, job("6", restart=2), snap())
    assert [j.key for j in r.read()] == ["2", "6.2"]
    assert calls == [os.path.join(adir, "6.2.json")]


@pytest.mark.parametrize("field,value", [
    ("schema", "other"), ("version", 2), ("job_id", 5), ("restart", "0"), ("start_mono", None),
    ("key", "999"), ("cluster", None),
])
def test_active_from_dict_rejects(field, value):
    d = job().to_dict()
    d[field] = value
    with pytest.raises(RecordError):
        ActiveJob.from_dict(d)


def test_sweep_removes_only_what_dead_writers_left(tmp_path):
    """Issue 13, case 8: a hook killed inside atomic_write left `.x.json.<pid>.<hex>.tmp`
    files forever. The sweep takes those of dead pids once old; a live writer's stays."""
    import subprocess
    import sys

    from efajob.hooks.runfiles import sweep_temp_files

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, timeout=120)
    dead_pid = int(dead.stdout)
    names = {"old_dead": f".42.json.{dead_pid}.0a1b2c3d.tmp",
             "young_dead": f".43.json.{dead_pid}.0a1b2c3e.tmp",
             "old_live": f".44.json.{os.getpid()}.0a1b2c3f.tmp",
             "record": "45.json", "other": ".hidden"}
    for key, name in names.items():
        p = tmp_path / name
        p.write_text("x")
        if key != "young_dead":
            os.utime(p, (1000.0, 1000.0))
    now = 1000.0 + 3600
    os.utime(tmp_path / names["young_dead"], (now - 5, now - 5))
    removed = sweep_temp_files([str(tmp_path), str(tmp_path / "missing")], now)
    assert removed == [str(tmp_path / names["old_dead"])]
    assert sorted(os.listdir(tmp_path)) == sorted(n for k, n in names.items() if k != "old_dead")
