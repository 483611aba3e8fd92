"""`efajob doctor` on a simulated node: healthy (every check passes, exit 0), then broken one
cause at a time (that check, and only that one, fails or warns with its fix). Facts come from
real files in tmp_path (sysfs tree, hooks written by install, a running in-process daemon's
store and lock); Slurm's config, the clocks and the Prometheus answer are injected."""
from __future__ import annotations

import json
import os
import socket
import sys
import time

import pytest
from click.testing import CliRunner

from efajob.config import build_config
from efajob.daemon.loop import Daemon
from efajob.deploy.doctor import (FAIL, PASS, SKIP, WARN, Check, exit_code, render_json,
                                  render_text, run_checks)
from efajob.deploy.doctorfacts import gather
from efajob.sim import build_node

BOOT = "11111111-2222-3333-4444-555555555555"
T0 = 1_780_000_000.0  # 2026-05: after the clock floor
HEALTHY = {"efa devices": PASS, "counters": PASS, "reader": PASS, "daemon": PASS, "prolog hook": PASS,
           "epilog hook": PASS, "PrologFlags": PASS, "job store": PASS, "clock": PASS,
           "prometheus": PASS, "cloudwatch": SKIP}


class Clock:
    def __init__(self, t: float):
        self.t = t

    def __call__(self) -> float:
        return self.t


class Answer:
    """What urlopen returns, as a context manager."""

    def __init__(self, body: bytes):
        self.body = body

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def read(self, n=-1):
        return self.body


def efajob_metrics(url, timeout):
    assert url == "http://127.0.0.1:9814/metrics" and timeout > 0
    return Answer(b"# HELP efajob_tx_bytes_total ...\nefajob_tx_bytes_total 1\n")


class Node:
    """A healthy simulated p4d node: tree, config, hooks, a daemon holding its lock."""

    def __init__(self, tmp_path, proc):
        self.tmp = tmp_path
        self.sim = build_node(str(tmp_path / "sys"), "p4d.24xlarge")
        self.data = {"cluster": "c1", "sysfs_root": str(tmp_path / "sys"),
                     "run_dir": str(tmp_path / "run"), "state_dir": str(tmp_path / "state"),
                     "store": str(tmp_path / "store"), "interval": 1.0,
                     "instance_type": "p4d.24xlarge",
                     "prometheus": {"enabled": True, "port": 9814}}
        self.scripts = tmp_path / "scripts"
        from efajob.cli.hooks import install_wrappers

        install_wrappers(str(self.scripts), sys.executable, None)
        for rel in ("prolog.d/90_site_health", "epilog.d/50_site_cleanup"):
            p = self.scripts / rel
            p.write_text("#!/bin/sh\nexit 0\n")
            p.chmod(0o755)
        self.slurm = {"PrologFlags": "Alloc,Contain",
                      "Prolog": f"{self.scripts}/prolog.d/*", "Epilog": f"{self.scripts}/epilog.d/*"}
        self.mono, self.wall = Clock(5000.0), Clock(T0)
        self.daemon = Daemon(self.cfg(), clock=self.mono, wall_clock=self.wall, proc_root=proc,
                             sinks=[], worker=False)
        self.daemon.start()
        self.daemon.tick()
        self.mono.t += 1.0
        self.wall.t += 1.0
        self.daemon.tick()
        self.opener = efajob_metrics
        self.fs_clock = time.time
        # Whether this test venv built the C reader is not the node's health: injected.
        self.native = lambda: ("/venv/efajob/node/_fastread.so", None)

    def cfg(self):
        return build_config(self.data, env={}, node="n1")

    def checks(self, **kw):
        facts = gather(self.cfg(), slurm_config=lambda: self.slurm, clock=self.wall,
                       mono_clock=self.mono, fs_clock=self.fs_clock,
                       prometheus_opener=self.opener, native=self.native, **kw)
        return {c.name: c for c in run_checks(facts)}


@pytest.fixture
def node(tmp_path):
    d = tmp_path / "proc" / "sys" / "kernel" / "random"
    d.mkdir(parents=True)
    (d / "boot_id").write_text(BOOT + "\n")
    n = Node(tmp_path, str(tmp_path / "proc"))
    yield n
    n.daemon.close()


def statuses(checks):
    return {k: c.status for k, c in checks.items()}


def test_a_healthy_node_passes_every_check(node):
    checks = node.checks()
    assert statuses(checks) == HEALTHY, render_text(list(checks.values()))
    assert checks["efa devices"].message == "4 EFA devices, as a p4d.24xlarge has"
    assert checks["daemon"].message == "running, newest sample 0 s old"
    assert checks["prolog hook"].message.endswith("prolog.d/00_efajob runs last of 2")
    assert checks["epilog hook"].message.endswith("epilog.d/99_efajob runs first of 2")
    assert exit_code(list(checks.values())) == 0


def _ib(n):
    return n.tmp / "sys" / "class" / "infiniband"


def _break_devices(n):
    import shutil

    last = _ib(n) / sorted(os.listdir(_ib(n)))[-1]
    if last.is_symlink():
        os.unlink(last)
    else:
        shutil.rmtree(last)


def _break_counters(n):
    for d in os.listdir(_ib(n)):
        hw = _ib(n) / d / "ports" / "1" / "hw_counters"
        for f in hw.iterdir():
            f.unlink()


def _break_reader(n):
    n.native = lambda: (None, "not built: no _fastread module in /venv/efajob/node")


def _break_daemon_stale(n):
    n.mono.t += 60
    n.wall.t += 60


def _break_daemon_gone(n):
    n.daemon.close()


def _break_prolog_order(n):
    p = n.scripts / "prolog.d" / "000_early"
    p.write_text("#!/bin/sh\nexit 0\n")
    p.chmod(0o755)


def _break_epilog_mode(n):
    (n.scripts / "epilog.d" / "99_efajob").chmod(0o644)


def _break_prolog_interpreter(n):
    p = n.scripts / "prolog.d" / "00_efajob"
    p.write_text(p.read_text().replace(f"PY={sys.executable}", "PY=/gone/venv/bin/python3"))


def _break_epilog_missing(n):
    (n.scripts / "epilog.d" / "99_efajob").unlink()


def _break_flags(n):
    n.slurm["PrologFlags"] = "Contain"


def _break_store(n):
    (n.tmp / "store").write_text("a file where the store should be")
    n.data["store"] = str(n.tmp / "store" / "sub")


def _break_clock_floor(n):
    n.wall.t = 1_600_000_000.0  # 2020
    n.mono.t = 5001.0


def _break_clock_skew(n):
    n.fs_clock = lambda: time.time() + 30


def _break_prometheus(n):
    def refused(url, timeout):
        raise ConnectionRefusedError(111, "Connection refused")

    n.opener = refused


@pytest.mark.parametrize("breaker,name,status,words", [
    (_break_devices, "efa devices", FAIL, "3 of the 4 EFA devices"),
    (_break_counters, "counters", FAIL, "no readable port counter on 4 of 4"),
    (_break_reader, "reader", WARN, "counters read in Python: the C reader is not built"),
    (_break_daemon_stale, "daemon", FAIL, "stale: newest sample 60 s old"),
    (_break_daemon_gone, "daemon", FAIL, "not running"),
    (_break_prolog_order, "prolog hook", WARN, "00_efajob does not run last: 000_early"),
    (_break_epilog_mode, "epilog hook", FAIL, "99_efajob is not executable"),
    (_break_prolog_interpreter, "prolog hook", FAIL, "runs /gone/venv/bin/python3"),
    (_break_epilog_missing, "epilog hook", FAIL, "99_efajob is missing"),
    (_break_flags, "PrologFlags", FAIL, "PrologFlags=Contain: without Alloc"),
    (_break_store, "job store", FAIL, "cannot write"),
    (_break_clock_floor, "clock", FAIL, "the clock says 2020-"),
    (_break_clock_skew, "clock", WARN, "30.0 s ahead of the job store's file server"),
    (_break_prometheus, "prometheus", FAIL, "127.0.0.1:9814: no answer"),
], ids=lambda x: x.__name__ if callable(x) else None)
def test_each_broken_node_fails_its_own_check_only(node, breaker, name, status, words):
    breaker(node)
    checks = node.checks()
    want = dict(HEALTHY, **{name: status})
    assert statuses(checks) == want, render_text(list(checks.values()))
    c = checks[name]
    assert words in c.message and c.fix, c
    assert exit_code(list(checks.values())) == {WARN: 1, FAIL: 2}[status]


def test_slurm_unreachable_warns_and_scripts_dir_still_checks_the_hooks(node):
    from efajob.errors import SlurmError

    def down():
        raise SlurmError("scontrol show config failed: Unable to contact slurm controller")

    node.slurm_config = down
    facts = gather(node.cfg(), slurm_config=down, clock=node.wall, mono_clock=node.mono,
                   prometheus_opener=node.opener)
    checks = {c.name: c for c in run_checks(facts)}
    assert checks["PrologFlags"].status == WARN and "Unable to contact" in checks["PrologFlags"].message
    assert checks["prolog hook"].status == WARN  # nowhere to look
    facts = gather(node.cfg(), slurm_config=down, clock=node.wall, mono_clock=node.mono,
                   prometheus_opener=node.opener, slurm_scripts_dir=str(node.scripts))
    checks = {c.name: c for c in run_checks(facts)}
    assert checks["prolog hook"].status == PASS and checks["epilog hook"].status == PASS


def test_hook_settings_without_a_glob():
    from efajob.deploy.doctor import HookFacts, check_hook

    assert check_hook(HookFacts("prolog", "(null)", "slurm")).status == FAIL
    assert check_hook(HookFacts("prolog", "/etc/slurm/prolog.sh", "slurm")).status == WARN
    assert check_hook(HookFacts("epilog", "/opt/x/epilog.d/99_efajob", "slurm")).status == PASS


def test_disabled_sinks_are_not_checked_and_unknown_instance_type_warns(node):
    node.data["prometheus"] = {"enabled": False}
    node.data["instance_type"] = None
    checks = node.checks()
    assert checks["prometheus"].status == SKIP and checks["prometheus"].message == "disabled in the config"
    assert checks["efa devices"].status == WARN and "count not checked" in checks["efa devices"].message


def test_render_text_is_one_line_per_check_with_the_fix():
    checks = [Check("daemon", PASS, "running"), Check("PrologFlags", FAIL, "PrologFlags=(null)",
                                                      "set it"),
              Check("cloudwatch", SKIP, "disabled in the config")]
    assert render_text(checks) == (
        "pass  daemon       running\n"
        "fail  PrologFlags  PrologFlags=(null) (fix: set it)\n"
        "skip  cloudwatch   disabled in the config\n"
        "3 checks: 1 pass, 0 warn, 1 fail, 1 not checked\n")
    doc = json.loads(render_json(checks))
    assert doc["result"] == "fail" and doc["exit_code"] == 2
    assert doc["checks"][1] == {"name": "PrologFlags", "status": "fail",
                                "message": "PrologFlags=(null)", "fix": "set it"}


def test_prometheus_probe_against_the_daemons_real_exporter(tmp_path):
    """The real exporter on 127.0.0.1, and a port where something else answers."""
    from efajob.deploy.doctorfacts import probe_prometheus
    from http.server import BaseHTTPRequestHandler, HTTPServer
    import threading

    build_node(str(tmp_path / "sys"), "p4d.24xlarge")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = build_config({"sysfs_root": str(tmp_path / "sys"), "run_dir": str(tmp_path / "run"),
                        "state_dir": str(tmp_path / "state"), "store": str(tmp_path / "store"),
                        "prometheus": {"enabled": True, "port": port}}, env={}, node="n1")
    d = Daemon(cfg, worker=False)
    d.start()
    try:
        d.tick()
        # The probe's own 5 s deadline is doctor's; a busy CI machine gets 120 s.
        assert probe_prometheus(cfg, timeout=120) == (f"127.0.0.1:{port}", None)
    finally:
        d.close()

    class Other(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"hello")

        def log_message(self, *a):
            pass

    srv = HTTPServer(("127.0.0.1", 0), Other)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        other = build_config({"prometheus": {"enabled": True, "port": srv.server_port}},
                             env={}, node="n1")
        addr, why = probe_prometheus(other, timeout=120)
        assert "not with efajob's metrics" in why
    finally:
        srv.shutdown()
        srv.server_close()


def test_cli_doctor_exit_code_and_json(node, monkeypatch):
    from efajob.cli.main import main

    conf = node.tmp / "c.toml"
    conf.write_text(f'cluster = "c1"\nsysfs_root = "{node.tmp}/sys"\nrun_dir = "{node.tmp}/run"\n'
                    f'state_dir = "{node.tmp}/state"\nstore = "{node.tmp}/store"\n'
                    'instance_type = "p4d.24xlarge"\ninterval = 3600.0\n')
    monkeypatch.setenv("PATH", str(node.tmp / "nobin"))  # no scontrol: Slurm cannot be asked
    node.daemon.close()  # the CLI judges by the real clocks: no fake-clock daemon to judge
    res = CliRunner().invoke(main, ["doctor", "--config", str(conf), "--node", "n1",
                                    "--slurm-scripts-dir", str(node.scripts), "--format", "json"])
    doc = json.loads(res.output)
    got = {c["name"]: c["status"] for c in doc["checks"]}
    # Slurm is not asked here (a warning), the daemon is gone (a failure): exit 2.
    assert got["PrologFlags"] == WARN and got["prolog hook"] == PASS and got["clock"] == PASS
    assert got["daemon"] == FAIL and got["efa devices"] == PASS and got["job store"] == PASS
    assert res.exit_code == 2 == doc["exit_code"]
    text = CliRunner().invoke(main, ["doctor", "--config", str(conf), "--node", "n1",
                                     "--slurm-scripts-dir", str(node.scripts)])
    assert text.exit_code == 2 and len(text.output.splitlines()) == len(doc["checks"]) + 1


SCONTROL_SHOW_CONFIG = """Configuration data as of 2026-12-03T06:40:00
AccountingStorageBackupHost = (null)
Epilog                  = /opt/slurm/etc/scripts/epilog.d/*
Prolog                  = /opt/slurm/etc/scripts/prolog.d/*
PrologFlags             = Alloc,Contain
SlurmctldHost[0]        = head(10.0.0.1)

Cgroup Support Configuration:
AllowedRAMSpace         = 100.0%

MPI Plugins Configuration:
PrologFlags             = (a plugin section repeating a key)
Slurmctld(primary) at head is UP
"""


def test_parse_scontrol_config_and_the_backend_runs_scontrol():
    import subprocess

    from efajob.slurm.adapter import CommandBackend, parse_scontrol_config

    conf = parse_scontrol_config(SCONTROL_SHOW_CONFIG)
    assert conf["Prolog"] == "/opt/slurm/etc/scripts/prolog.d/*"
    assert conf["PrologFlags"] == "Alloc,Contain"  # the first, slurm.conf's
    assert conf["SlurmctldHost[0]"] == "head(10.0.0.1)" and conf["AllowedRAMSpace"] == "100.0%"
    assert "Configuration data as of 2026-12-03T06:40:00" not in conf
    calls = []

    def runner(argv, **kw):
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 0, SCONTROL_SHOW_CONFIG, "")

    b = CommandBackend(runner=runner, which=lambda n: f"/usr/bin/{n}")
    assert b.show_config()["Epilog"] == "/opt/slurm/etc/scripts/epilog.d/*"
    assert calls == [["/usr/bin/scontrol", "show", "config"]]


def test_undelivered_records_warn_on_the_job_store_check(node):
    from dataclasses import replace

    from efajob.deploy.doctor import check_store

    facts = gather(node.cfg(), slurm_config=lambda: node.slurm, clock=node.wall,
                   mono_clock=node.mono, prometheus_opener=node.opener)
    assert check_store(facts).status == PASS
    c = check_store(replace(facts, delivery_error="Permission denied", outbox_pending=3))
    assert c.status == WARN and "cannot deliver records: Permission denied (3 waiting)" in c.message


def test_the_reader_check_passes_when_python_reads_are_chosen():
    from efajob.deploy.doctor import check_reader

    from efajob.node.sysfs import NATIVE_OFF

    facts = type("F", (), {"reader": None, "reader_problem": NATIVE_OFF})
    c = check_reader(facts)  # type: ignore[arg-type]
    assert c.status == PASS and c.message == ("counters read in Python: the C reader is turned "
                                              "off by EFAJOB_NO_NATIVE in the environment")
    facts.reader_problem = "cannot be loaded: undefined symbol: PyFoo"
    c = check_reader(facts)  # type: ignore[arg-type]
    assert c.status == WARN and "efajob install native" in c.fix
