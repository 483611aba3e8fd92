"""`efajob status` as a health check: its exit code for each state of the daemon (0 healthy,
1 degraded, 2 not running or stale), in text and JSON.

No daemon process and no wall-clock margin: the local store gets rows written through the
real LocalStore with this boot's id, the daemon's lock is taken in-process (as the daemon
takes it), and "fresh" is within three intervals of 600 s, so a slow machine's pause between
writing and reading cannot change the verdict.
"""
from __future__ import annotations

import json
import os
import time

import pytest
from click.testing import CliRunner

from efajob.cli.main import main
from efajob.daemon.loop import acquire_lock
from efajob.node.localstore import LocalStore, SampleRow, current_boot_id
from efajob.sim import build_node


def cfg_file(tmp_path, interval=600):
    path = tmp_path / "c.toml"
    path.write_text(f'cluster = "c1"\nsysfs_root = "{tmp_path}/sys"\nstate_dir = "{tmp_path}/state"\n'
                    f'run_dir = "{tmp_path}/run"\nstore = "{tmp_path}/store"\ninterval = {interval}\n'
                    'instance_type = "p4d.24xlarge"\n')
    return str(path)


def add_row(tmp_path, age: float) -> None:
    """One daemon row `age` seconds old (this boot: status measures age on the monotonic clock)."""
    with LocalStore.open(str(tmp_path / "state" / "efajob.db")) as s:
        s.add_sample(SampleRow(current_boot_id(), time.monotonic() - age, time.time() - age, 1.0,
                               {"tx_bytes": 1000, "rx_bytes": 500}, {}, {}, (), ()))


@pytest.fixture
def lock(tmp_path):
    fd = acquire_lock(str(tmp_path / "state"))  # what a running daemon holds
    yield
    os.close(fd)


def status(path, *extra):
    r = CliRunner().invoke(main, ["status", "--config", path, "--node", "n1", *extra])
    return r.exit_code, r.output


def test_never_started_is_2(tmp_path):
    build_node(str(tmp_path / "sys"), "p4d.24xlarge")
    code, out = status(cfg_file(tmp_path))
    assert code == 2 and "state: not running" in out and "no samples" in out
    code, out = status(cfg_file(tmp_path), "--format", "json")
    assert code == 2 and json.loads(out)["state"] == "not running"


def test_healthy_is_0(tmp_path, lock):
    build_node(str(tmp_path / "sys"), "p4d.24xlarge")
    add_row(tmp_path, 0)
    code, out = status(cfg_file(tmp_path))
    assert code == 0, out
    assert "state: healthy" in out and "daemon: last sample" in out
    doc = json.loads(status(cfg_file(tmp_path), "--format", "json")[1])
    assert doc["state"] == "healthy" and doc["problems"] == [] and doc["daemon"]["healthy"]
    # Which driver the node runs: AWS's shows its version in module/efa/version.
    assert "EFA driver: AWS out-of-tree 2.17.0g" in out and doc["efa_driver"] == "2.17.0g"


def test_in_tree_driver_named(tmp_path, lock):
    build_node(str(tmp_path / "sys"), "p4d.24xlarge", driver="in-tree")
    add_row(tmp_path, 0)
    code, out = status(cfg_file(tmp_path))
    assert code == 0 and "EFA driver: in-tree (no module/efa/version)" in out
    assert json.loads(status(cfg_file(tmp_path), "--format", "json")[1])["efa_driver"] is None


def test_missing_device_fault_is_degraded_1(tmp_path, lock):
    build_node(str(tmp_path / "sys"), "p4d.24xlarge", fault="missing-device")
    add_row(tmp_path, 0)
    code, out = status(cfg_file(tmp_path))
    assert code == 1 and "3 of the instance type's 4 EFA devices found" in out


def test_stale_is_2(tmp_path, lock):
    build_node(str(tmp_path / "sys"), "p4d.24xlarge")
    add_row(tmp_path, 100 * 600)  # a hundred intervals ago
    code, out = status(cfg_file(tmp_path))
    assert code == 2 and "state: stale" in out and "more than 3 intervals" in out


def test_fresh_rows_without_a_daemon_are_not_running(tmp_path):
    # `daemon --once`, or a daemon that died a moment ago: its last row is fresh, nobody holds
    # the lock.
    build_node(str(tmp_path / "sys"), "p4d.24xlarge")
    add_row(tmp_path, 0)
    code, out = status(cfg_file(tmp_path))
    assert code == 2 and "state: not running" in out and "lock" in out


def test_missing_devices_are_degraded_1(tmp_path, lock):
    build_node(str(tmp_path / "sys"), "p4d.24xlarge", device_limit=2)
    add_row(tmp_path, 0)
    code, out = status(cfg_file(tmp_path))
    assert code == 1 and "state: degraded" in out
    assert "2 of the instance type's 4 EFA devices found" in out


def test_undeliverable_records_are_degraded_1(tmp_path, lock):
    from efajob.config import load_config

    build_node(str(tmp_path / "sys"), "p4d.24xlarge")
    add_row(tmp_path, 0)
    cfg = load_config(cfg_file(tmp_path), env={}, node="n1")
    os.makedirs(cfg.outbox_dir, exist_ok=True)
    (tmp_path / "pending.json").write_text("{}")
    os.replace(tmp_path / "pending.json", os.path.join(cfg.outbox_dir, "c1-5-n1.json"))
    with open(os.path.join(cfg.outbox_dir, ".delivery.json"), "w") as f:
        json.dump({"attempts": 3, "next_try": 0, "last_error": "Read-only file system (/shared)"}, f)
    code, out = status(cfg_file(tmp_path))
    assert code == 1 and "Read-only file system (/shared)" in out and "1 waiting" in out, out


def test_render_shows_the_driver_error_rates():
    from efajob.daemon.nodestatus import render_status

    doc = {"node": "n1", "cluster": "c1", "instance_type": "p5.48xlarge",
           "daemon": {"last_sample": None, "store": "ok"}, "tx_gbps": 1.0, "rx_gbps": 1.0,
           "rates": {"rx_drops": 0.0, "rdma_read_wr_err": 5.0, "rdma_write_wr_err": 0.0},
           "error_rates": {"cmds_err": 2.0, "no_completion_cmds": 0.0}, "devices": [], "jobs": []}
    text = render_status(doc)
    assert "  EFA errors: rdma_read_wr_err 5.00/s, cmds_err 2.00/s\n" in text
    doc["rates"]["rdma_read_wr_err"] = 0.0
    doc["error_rates"]["cmds_err"] = 0.0
    assert "EFA errors" not in render_status(doc)
