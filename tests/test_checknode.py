"""`efajob-check-node` (efajob/cli/checknode.py, node/health.py): healthy and broken simulated
trees, the local store's window, the previous check's counters, the drain line and when it
runs. Counted on simulated trees; how fast it starts is checked by what it imports (bench/
checknode.py has the times)."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

import pytest

from efajob.cli.checknode import STATE_FILE, main
from efajob.node.health import (REASON_MAX, DeviceNow, Window, drain_argv, drain_line, judge,
                                parse_state, reason, window_from_sums)
from efajob.node.localstore import LocalStore, SampleRow
from efajob.node.sysfs import read_snapshot
from efajob.sim import build_node

NOW = 1714557600.0
BOOT = "boot-1"


class Run:
    def __init__(self, tmp_path, sysfs, instance_type="p4d.24xlarge", **env):
        self.state = str(tmp_path / "state")
        os.makedirs(self.state, exist_ok=True)
        self.env = {"EFAJOB_CONFIG": "", "EFAJOB_SYSFS_ROOT": sysfs, "EFAJOB_STATE_DIR": self.state,
                    "PATH": "", **env}
        if instance_type:
            self.env["EFAJOB_INSTANCE_TYPE"] = instance_type
        self.drained = []

    def __call__(self, *args, now=NOW, boot=BOOT):
        out, err = [], []
        code = main(list(args), env=self.env, out=out.append, err=err.append, now=now,
                    boot_id=boot, drain_runner=lambda argv: self.drained.append(argv))
        return code, out, err


@pytest.fixture
def p4d(tmp_path):
    root = str(tmp_path / "sys")
    return build_node(root, "p4d.24xlarge", name="n1"), root


def test_healthy_node_is_silent(tmp_path, p4d):
    node, root = p4d
    run = Run(tmp_path, root)
    assert run() == (0, [], [])
    code, out, _ = run("-v")
    assert code == 0 and out == ["efajob: ok: 4 EFA devices, no local store samples, errors "
                                 "compared with the previous check"]


def test_missing_device(tmp_path):
    root = str(tmp_path / "sys")
    build_node(root, "p4d.24xlarge", fault="missing-device")
    code, out, _ = Run(tmp_path, root)()
    assert code == 1 and out == ["efajob: 3 of 4 EFA devices (p4d.24xlarge)"]
    # without an instance type nothing says 4: the check cannot know (the daemon caches it)
    assert Run(tmp_path, root, instance_type=None)()[0] == 0
    with open(os.path.join(str(tmp_path / "state"), "instance-type"), "w") as f:
        f.write("p4d.24xlarge\n")
    assert Run(tmp_path, root, instance_type=None)()[0] == 1


@pytest.mark.parametrize("fault,counter", [("wr-errors", "rdma_read_wr_err"),
                                           ("admin-errors", "cmds_err")])
def test_errors_rising_since_the_previous_check(tmp_path, p4d, fault, counter):
    node, root = p4d
    run = Run(tmp_path, root)
    assert run()[0] == 0  # the first check of this boot keeps the counters
    before = read_snapshot(root, include_net=False)
    node.traffic(50, 50, 10, fault=fault)
    after = read_snapshot(root, include_net=False)
    rose = {}
    for name, d in after.devices.items():
        for k, v in {**d.port_counters, **d.device_counters}.items():
            old = {**before.devices[name].port_counters, **before.devices[name].device_counters}
            if k == counter and v > old[k]:
                rose[name] = v - old[k]
    assert len(rose) == 1
    (dev, n), = rose.items()
    code, out, _ = run()
    assert code == 1 and out[0].startswith(f"efajob: {dev} errors rising (")
    assert f"{counter} +{n}" in out[0]
    assert run()[0] == 0  # compared with the check just before: nothing rose since
    # another boot: the counters restarted, the old ones say nothing
    node.traffic(50, 50, 10, fault=fault)
    assert run(boot="boot-2")[0] == 0


def test_state_file_is_the_previous_checks(tmp_path, p4d):
    _, root = p4d
    run = Run(tmp_path, root)
    run()
    with open(os.path.join(run.state, STATE_FILE)) as f:
        doc = json.load(f)
    assert doc["boot_id"] == BOOT and len(doc["devices"]) == 4
    assert parse_state(doc, BOOT) == doc["devices"] and parse_state(doc, "other") is None
    assert parse_state({"boot_id": BOOT, "devices": {"d": {"x": True, "y": 3}}}, BOOT) == \
        {"d": {"y": 3}}
    # Nothing moved: the file is left as it is (same inode, same mtime); a rise rewrites it.
    path = os.path.join(run.state, STATE_FILE)
    before = os.stat(path)
    assert run()[0] == 0
    after = os.stat(path)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    run(boot="boot-2")
    with open(path) as f:
        assert json.load(f)["boot_id"] == "boot-2"
    with open(os.path.join(run.state, STATE_FILE), "w") as f:
        f.write("{garbage")
    assert run() == (0, [], [])


def _sample(i, moved, jobs=("42",), deltas=None):
    return SampleRow(boot_id=BOOT, mono=100.0 + i, wall=NOW - 300 + i, seconds=1.0,
                     deltas=deltas or {"tx_bytes": sum(moved.values())},
                     device_tx_bytes=dict(moved), device_rx_bytes=dict(moved), jobs=jobs,
                     resets=())


def _store(run, rows):
    with LocalStore.open(os.path.join(run.state, "efajob.db")) as s:
        for r in rows:
            s.add_sample(r)


def test_device_idle_in_jobs_from_the_local_store(tmp_path, p4d):
    _, root = p4d
    names = sorted(read_snapshot(root, include_net=False).devices)
    run = Run(tmp_path, root)
    _store(run, [_sample(i, {n: (0 if n == names[2] else 10**9) for n in names})
                 for i in range(120)])
    code, out, _ = run()
    assert code == 1 and out == [f"efajob: {names[2]} moved nothing in jobs while its 3 "
                                 "siblings moved traffic (last 2 min of jobs)"]


def test_half_the_devices_used_or_no_job_is_not_idle(tmp_path, p4d):
    _, root = p4d
    names = sorted(read_snapshot(root, include_net=False).devices)
    run = Run(tmp_path, root)
    half = {n: (10**9 if k < 2 else 0) for k, n in enumerate(names)}
    one_off = {n: (0 if n == names[0] else 10**9) for n in names}
    _store(run, [_sample(i, half) for i in range(60)]
           + [_sample(60 + i, one_off, jobs=()) for i in range(60)])  # no job: not judged
    assert run()[0] == 0


def test_device_gone_since_the_window(tmp_path):
    root = str(tmp_path / "sys")
    build_node(root, "p4d.24xlarge", fault="missing-device")
    names = sorted(read_snapshot(root, include_net=False).devices) + ["rdmap160s27"]
    run = Run(tmp_path, root, instance_type=None)
    _store(run, [_sample(i, {n: 10**6 for n in names}) for i in range(30)])
    code, out, _ = run()
    assert code == 1 and out == ["efajob: rdmap160s27 gone (seen in the last 30 s)"]


def test_wr_errors_in_the_window(tmp_path, p4d):
    _, root = p4d
    names = sorted(read_snapshot(root, include_net=False).devices)
    run = Run(tmp_path, root)
    _store(run, [_sample(i, {n: 10**6 for n in names},
                         deltas={"tx_bytes": 1, "rdma_read_wr_err": 2}) for i in range(10)])
    code, out, _ = run()
    assert code == 1 and "work requests in error in the last 10 s (rdma_read_wr_err +20)" \
        in out[0]


def test_no_sysfs_is_unfit_and_bad_config_is_a_usage_error(tmp_path):
    code, out, _ = Run(tmp_path, str(tmp_path / "nowhere"))()
    assert code == 1 and out == ["efajob: 0 of 4 EFA devices (p4d.24xlarge)"]
    run = Run(tmp_path, str(tmp_path / "nowhere"), EFAJOB_INTERVAL="fast")
    code, out, err = run("--drain", "--run")
    assert code == 2 and out == [] and run.drained == []
    assert Run(tmp_path, "x")("--run")[0] == 2  # --run without --drain
    for bad in (["--window", "soon"], ["--bogus"], ["--node"]):
        code, out, err = Run(tmp_path, "x")(*bad)
        assert code == 2 and out == [] and err[0].startswith("efajob-check-node: ")
    code, out, _ = Run(tmp_path, "x")("--help")
    assert code == 0 and out[0].startswith("usage: efajob-check-node")


def test_options_parse():
    from efajob.cli.checknode import parse_args

    a = parse_args(["--drain", "--run", "--node=n9", "--window", "60", "-v"])
    assert (a["drain"], a["run"], a["node"], a["window"], a["verbose"]) == (True, True, "n9",
                                                                              60.0, True)


# -- draining -----------------------------------------------------------------------------
HOSTILE = "efajob: rdmap0s1 'x' $(reboot) `id` \"q\"; rm -rf /"


def test_drain_line_quotes_safely():
    line = drain_line("n1", HOSTILE)
    assert shlex.split(line) == drain_argv("n1", HOSTILE)
    assert shlex.split(line)[-1] == "reason=" + HOSTILE
    assert line.startswith("scontrol update nodename=n1 state=drain 'reason=efajob: ")


def test_reason_is_one_printable_line_of_bounded_length():
    from efajob.node.health import Problem

    text = reason([Problem("missing", None, "a\nb\x1b[31m\u00e9")] * 40)
    assert "\n" not in text and "\x1b" not in text and len(text) == len("efajob: ") + REASON_MAX
    assert text.endswith("...")


@pytest.fixture
def broken(tmp_path):
    root = str(tmp_path / "sys")
    build_node(root, "p4d.24xlarge", fault="missing-device")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "scontrol").write_text("#!/bin/sh\nexit 0\n")
    (bindir / "scontrol").chmod(0o755)
    return root, str(bindir)


def test_drain_prints_then_runs(tmp_path, broken):
    root, bindir = broken
    run = Run(tmp_path, root, PATH=bindir, SLURMD_NODENAME="n7")
    code, out, _ = run("--drain")
    assert code == 1 and run.drained == []
    assert out == ["efajob: 3 of 4 EFA devices (p4d.24xlarge)",
                   "scontrol update nodename=n7 state=drain "
                   "'reason=efajob: 3 of 4 EFA devices (p4d.24xlarge)'"]
    code, out, err = run("--drain", "--run")
    assert code == 1 and err == []
    assert run.drained == [[os.path.join(bindir, "scontrol"), "update", "nodename=n7",
                            "state=drain", "reason=efajob: 3 of 4 EFA devices (p4d.24xlarge)"]]


@pytest.mark.parametrize("ctx", ["prolog_slurmd", "epilog_slurmd", "prolog_slurmctld"])
def test_never_drains_from_a_prolog_or_epilog(tmp_path, broken, ctx):
    root, bindir = broken
    run = Run(tmp_path, root, PATH=bindir, SLURMD_NODENAME="n7", SLURM_SCRIPT_CONTEXT=ctx)
    code, out, err = run("--drain", "--run")
    assert code == 1 and run.drained == [] and len(out) == 2
    assert "not draining from a Prolog/Epilog" in err[0]


def test_drain_failure_is_reported(tmp_path, broken):
    root, _ = broken
    run = Run(tmp_path, root, SLURMD_NODENAME="n7")  # PATH empty, no scontrol in its dirs
    out, err = [], []
    code = main(["--drain", "--run"], env=run.env, out=out.append, err=err.append, now=NOW,
                boot_id=BOOT, drain_runner=lambda argv: "exit 1")
    assert code == 1
    assert err == (["efajob-check-node: drain failed: scontrol not found"]
                   if not any(os.path.exists(os.path.join(d, "scontrol"))
                              for d in ("/usr/bin", "/usr/local/bin", "/opt/slurm/bin"))
                   else ["efajob-check-node: drain failed: exit 1"])


# -- the pure judgement ----------------------------------------------------------------------
def test_judge_renamed_device_is_not_gone():
    devs = [DeviceNow(f"rdmap{k}s0", {"tx_bytes": 1}, {}) for k in range(4)]
    w = Window(seconds=600, devices_seen={"efa_0", "rdmap1s0", "rdmap2s0", "rdmap3s0"})
    assert judge(devs, expected=4, instance_type="x", window=w, previous=None,
                 busy_bytes=1e8) == []


def _window_of(rows, since):
    """The Window by its definition, row by row (what recent_sums must equal)."""
    w = Window()
    for r in rows:
        if r.wall < since:
            continue
        w.seconds += r.seconds
        w.devices_seen.update(r.device_tx_bytes, r.device_rx_bytes)
        for k, v in r.deltas.items():
            if k.endswith("_wr_err"):
                w.wr_errors[k] = w.wr_errors.get(k, 0) + v
        if r.jobs:
            w.busy_seconds += r.seconds
            for per in (r.device_tx_bytes, r.device_rx_bytes):
                for d, v in per.items():
                    w.busy_bytes[d] = w.busy_bytes.get(d, 0) + v
    return w


def test_window_from_the_store_matches_its_definition(tmp_path):
    # Two layouts (a device appears half way, a wr_err counter with it), idle rows, rows
    # before the window and beyond the row limit: summed by column, as row by row.
    rows = [_sample(i, {"a": 5 + i, "b": 7}, jobs=("42",) if i % 3 else ()) for i in range(40)]
    rows += [_sample(40 + i, {"a": 1, "b": 2, "c": 3 * i},
                     deltas={"tx_bytes": 9, "rdma_read_wr_err": i, "rdma_write_wr_err": 1,
                             "rx_drops": 4}) for i in range(30)]
    path = str(tmp_path / "efajob.db")
    with LocalStore.open(path) as s:
        for r in rows:
            s.add_sample(r)
    with LocalStore.open(path, readonly=True) as ro:
        for n, since in ((1000, NOW - 300 + 5), (50, NOW - 300), (1000, NOW), (0, NOW - 300)):
            got = window_from_sums(ro.recent_sums(n, since))
            assert got == _window_of(rows[max(0, len(rows) - n):] if n else [], since), (n, since)
        got = window_from_sums(ro.recent_sums(1000, NOW - 300 + 5))
    assert got.busy_bytes["c"] == 2 * sum(3 * i for i in range(30))
    assert got.wr_errors == {"rdma_read_wr_err": sum(range(30)), "rdma_write_wr_err": 30}


def test_window_of_a_damaged_store_is_no_window(tmp_path, p4d):
    _, root = p4d
    run = Run(tmp_path, root)
    _store(run, [_sample(i, {"rdmap16s27": 10**9}) for i in range(20)])
    import sqlite3

    db = sqlite3.connect(os.path.join(run.state, "efajob.db"))
    db.execute("UPDATE samples SET packed = X'01ffff' WHERE id = (SELECT MAX(id) FROM samples)")
    db.commit()
    db.close()
    code, out, _ = run("-v")
    assert code == 0 and "no local store samples" in out[0], out


# -- startup: what it imports -------------------------------------------------------------
def test_imports_neither_click_nor_the_report(tmp_path, p4d):
    _, root = p4d
    # -S and efajob's directory by hand, as the hook wrappers do: an editable install's import
    # finder (site) imports re and typing itself.
    import efajob

    top = os.path.dirname(os.path.dirname(os.path.abspath(efajob.__file__)))
    code = (f"import sys; sys.path.insert(0, {top!r}); "
            "from efajob.cli.checknode import main; rc = main(['-v']); "
            "print(rc, ' '.join(sorted(m for m in sys.modules "
            "if m.split('.')[0] in ('click', 'efajob', 'argparse', 'socket', 'statistics', "
            "'dataclasses', 'typing', 're', 'json'))))")
    env = dict(os.environ, EFAJOB_CONFIG="", EFAJOB_SYSFS_ROOT=root,
               EFAJOB_STATE_DIR=str(tmp_path / "st"), EFAJOB_INSTANCE_TYPE="p4d.24xlarge")
    p = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                       env=env, timeout=120, check=True)
    rc, mods = p.stdout.splitlines()[-1].split(" ", 1)
    assert rc == "0"
    loaded = set(mods.split())
    # The standard modules that cost most of a check before (docs/operations.md).
    assert not any(m.split(".")[0] in ("click", "argparse", "socket", "statistics",
                                       "dataclasses", "typing", "re", "json") for m in loaded)
    assert loaded <= {"efajob", "efajob.cli", "efajob.cli.checknode", "efajob.config",
                      "efajob.errors", "efajob.fastjson", "efajob.frozen", "efajob.minitoml", "efajob.values", "efajob.node", "efajob.node.health",
                      "efajob.node.counters", "efajob.node.sysfs", "efajob.node.readings",
                      "efajob.node.flatlayout", "efajob.node.instances",
                      "efajob.node.localstore", "efajob.node.minutes",
                      "efajob.node._fastread"}, loaded


def test_the_installed_script_runs_the_check_without_re(tmp_path, p4d):
    # slurm/efajob-check-node is what pip installs (pyproject's script-files): pip's generated
    # entry-point wrapper would import re, a quarter of the check's cost.
    _, root = p4d
    import efajob

    top = os.path.dirname(os.path.dirname(os.path.abspath(efajob.__file__)))
    script = os.path.join(top, "slurm", "efajob-check-node")
    env = dict(os.environ, EFAJOB_CONFIG="", EFAJOB_SYSFS_ROOT=root, PYTHONPATH=top,
               EFAJOB_STATE_DIR=str(tmp_path / "st"), EFAJOB_INSTANCE_TYPE="p4d.24xlarge")
    p = subprocess.run([sys.executable, "-S", "-X", "importtime", script], capture_output=True,
                       text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr[-2000:]  # healthy: exit 0, silent
    imported = {line.rsplit("|", 1)[-1].strip() for line in p.stderr.splitlines()
                if line.startswith("import time:")}
    assert "efajob.cli.checknode" in imported and not imported & {"re", "dataclasses", "typing"}


def test_counter_files_that_are_not_numbers_fifos_or_gone_are_absent(tmp_path):
    from efajob.cli.checknode import _read_counters

    d = tmp_path / "hw_counters"
    d.mkdir()
    (d / "tx_bytes").write_text("123\n")
    (d / "cmds_err").write_text("garbage\n")
    os.mkfifo(str(d / "rdma_read_wr_err"))  # would block a plain open() and read
    names = ["tx_bytes", "cmds_err", "rdma_read_wr_err", "missing"]
    assert _read_counters(str(d), names) == {"tx_bytes": 123}
    assert _read_counters(str(tmp_path / "gone"), names) == {}
