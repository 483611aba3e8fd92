"""`efajob install hooks|systemd|dashboard|all` and `efajob uninstall` against a fake root: dry
runs write nothing, installs are recorded with checksums, uninstall removes exactly what was
written and keeps what the admin edited; every unit passes `systemd-analyze verify`, the
logrotate rule passes logrotate and really rotates."""
from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys

import pytest
from click.testing import CliRunner

from conftest import require_binary
from efajob.cli.main import main

PY = sys.executable
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNITS = ("etc/systemd/system/efajob-node.service", "etc/systemd/system/efajob-dashboard.service",
         "etc/systemd/system/efajob-index.service", "etc/systemd/system/efajob-index.timer")
HOOKS = ("opt/slurm/etc/scripts/prolog.d/00_efajob", "opt/slurm/etc/scripts/epilog.d/99_efajob")
LOGROTATE = "etc/logrotate.d/efajob"


@pytest.fixture
def root(tmp_path):
    """A fake / holding the config the node will read."""
    r = tmp_path / "root"
    (r / "etc" / "efajob").mkdir(parents=True)
    (r / "etc" / "efajob" / "config.toml").write_text(
        'cluster = "c1"\nstate_dir = "/var/lib/efajob"\nrun_dir = "/run/efajob"\n'
        'store = "/opt/parallelcluster/shared/efajob"\nlog_file = "/var/log/efajob/efajob.log"\n')
    return r


def run(*args, ok=True):
    res = CliRunner().invoke(main, list(args))
    if ok:
        assert res.exit_code == 0, res.output
    return res


def install_all(root, *extra):
    return run("install", "all", "--root", str(root), "--config", "/etc/efajob/config.toml",
               "--slurm-scripts-dir", "/opt/slurm/etc/scripts", "--python", PY, *extra)


def files_under(root):
    return sorted(os.path.relpath(os.path.join(d, n), root)
                  for d, _, names in os.walk(root) for n in names)


def manifest(root):
    with open(root / "var/lib/efajob/installed.json") as f:
        return json.load(f)


def test_dry_run_prints_every_file_with_its_content_and_writes_nothing(root):
    before = files_under(root)
    res = install_all(root, "--dry-run")
    assert files_under(root) == before
    out = res.output
    for rel in HOOKS + UNITS + (LOGROTATE,):
        assert f"--- would write /{rel} (mode " in out, rel
    # The content itself, not just the names: the unit's ExecStart and the hook's interpreter.
    assert f"ExecStart={PY} -m efajob daemon --config /etc/efajob/config.toml\n" in out
    assert f"PY={PY}\n" in out and '"/var/log/efajob/efajob.log" {\n' in out
    assert out.endswith("--- would record them in /var/lib/efajob/installed.json "
                        "(nothing written)\n")


def test_install_all_writes_and_records_each_file_with_its_checksum(root):
    res = install_all(root)
    want = sorted(HOOKS + UNITS + (LOGROTATE, "var/lib/efajob/installed.json",
                                   "etc/efajob/config.toml"))
    assert files_under(root) == want
    doc = manifest(root)
    assert doc["version"] == 1
    assert [e["path"] for e in doc["files"]] == sorted("/" + p for p in HOOKS + UNITS + (LOGROTATE,))
    for e in doc["files"]:
        data = (root / e["path"].lstrip("/")).read_bytes()
        assert e["sha256"] == hashlib.sha256(data).hexdigest()
        mode = stat.S_IMODE(os.stat(root / e["path"].lstrip("/")).st_mode)
        assert f"{mode:04o}" == e["mode"] == ("0755" if "scripts" in e["path"] else "0644")
    assert "wrote /etc/systemd/system/efajob-dashboard.service" in res.output
    assert "PrologFlags=Alloc" in res.output
    # The files name the node's paths, never the fake root.
    for rel in HOOKS + UNITS + (LOGROTATE,):
        assert str(root) not in (root / rel).read_text(), rel


def test_install_twice_gives_the_same_files_and_manifest(root):
    install_all(root)
    first = {p: (root / p).read_bytes() for p in files_under(root)}
    install_all(root)
    assert {p: (root / p).read_bytes() for p in files_under(root)} == first


def test_no_dashboard_and_no_log_file_leave_those_files_out(root):
    (root / "etc/efajob/config.toml").write_text('state_dir = "/var/lib/efajob"\n')
    install_all(root, "--no-dashboard")
    assert files_under(root) == sorted(HOOKS + (UNITS[0], "var/lib/efajob/installed.json",
                                                "etc/efajob/config.toml"))


def test_uninstall_removes_exactly_what_install_wrote_and_keeps_edited_files(root):
    install_all(root)
    site_script = root / "opt/slurm/etc/scripts/prolog.d/90_site_check"
    site_script.write_text("#!/bin/sh\nexit 0\n")  # not ours: must survive
    edited = root / UNITS[1]
    edited.write_text(edited.read_text().replace("--port 9815", "--port 9900"))
    (root / "var/lib/efajob/efajob.db").write_bytes(b"data")  # data: kept without --purge

    dry = run("uninstall", "--root", str(root), "--config", "/etc/efajob/config.toml", "--dry-run")
    assert "would remove: /etc/systemd/system/efajob-node.service (systemd)" in dry.output
    assert ("would keep (edited since install): /etc/systemd/system/efajob-dashboard.service "
            "(dashboard)") in dry.output
    assert (root / UNITS[0]).exists()  # a dry run removes nothing

    res = run("uninstall", "--root", str(root), "--config", "/etc/efajob/config.toml")
    assert files_under(root) == sorted([
        "etc/efajob/config.toml", UNITS[1], "opt/slurm/etc/scripts/prolog.d/90_site_check",
        "var/lib/efajob/efajob.db", "var/lib/efajob/installed.json"])
    assert "kept (edited since install): /etc/systemd/system/efajob-dashboard.service" in res.output
    assert "removed: /etc/logrotate.d/efajob (logrotate)" in res.output
    assert [e["path"] for e in manifest(root)["files"]] == ["/" + UNITS[1]]
    # Again: the edited file is still named, the removed ones are not mentioned any more.
    again = run("uninstall", "--root", str(root), "--config", "/etc/efajob/config.toml")
    assert again.output.splitlines()[0] == ("kept (edited since install): "
                                             "/etc/systemd/system/efajob-dashboard.service (dashboard)")
    assert "removed:" not in again.output


def test_uninstall_keeps_a_file_that_is_already_gone_quiet_and_purge_removes_node_data(root):
    install_all(root)
    os.unlink(root / HOOKS[0])
    outbox = root / "var/lib/efajob/outbox"
    outbox.mkdir()
    (outbox / "5@n1@c1.json").write_text("{}")
    (root / "run/efajob").mkdir(parents=True)
    res = run("uninstall", "--root", str(root), "--config", "/etc/efajob/config.toml", "--purge")
    assert f"already gone: /{HOOKS[0]} (hooks)" in res.output
    assert "removed: /var/lib/efajob" in res.output and "removed: /run/efajob" in res.output
    assert "1 record(s) in the outbox had not reached the job store" in res.output
    # The job store is elsewhere: shared with every node, never this node's to delete.
    assert "kept: /opt/parallelcluster/shared/efajob (the job store, shared" in res.output
    assert files_under(root) == ["etc/efajob/config.toml"]


def test_uninstall_with_nothing_installed_says_so(root):
    res = run("uninstall", "--root", str(root), "--config", "/etc/efajob/config.toml")
    assert res.output.startswith("nothing recorded in /var/lib/efajob/installed.json")


def test_a_corrupt_manifest_stops_uninstall_with_a_clear_error(root):
    install_all(root)
    (root / "var/lib/efajob/installed.json").write_text("{not json")
    res = run("uninstall", "--root", str(root), "--config", "/etc/efajob/config.toml", ok=False)
    assert res.exit_code == 4 and "is not valid JSON" in res.output
    assert (root / UNITS[0]).exists()


def test_a_read_only_target_fails_cleanly_before_recording_it(root):
    (root / "etc/systemd").mkdir(parents=True)
    (root / "etc/systemd/system").write_text("not a directory")
    res = run("install", "systemd", "--root", str(root), "--config", "/etc/efajob/config.toml",
              ok=False)
    assert res.exit_code == 1 and res.output.startswith("error: cannot write ")
    assert "Traceback" not in res.output
    assert not (root / "var/lib/efajob/installed.json").exists()


def test_install_systemd_output_dash_prints_only_the_unit(root):
    res = run("install", "systemd", "--root", str(root), "--config", "/etc/efajob/config.toml",
              "--output", "-")
    assert res.output.startswith("# Generated by `efajob install systemd`")
    assert files_under(root) == ["etc/efajob/config.toml"]


# -- the units and the logrotate rule --------------------------------------------------------
def _verify(analyze, path):
    res = subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True,
                         timeout=60)
    # Warnings about the host (no running systemd in a container) are not about our unit.
    name = os.path.basename(str(path))
    return res.returncode, [x for x in (res.stdout + res.stderr).splitlines() if name in x]


def test_systemd_analyze_accepts_every_unit_install_writes(root):
    analyze = require_binary("systemd-analyze")
    install_all(root)
    for rel in UNITS:
        rc, problems = _verify(analyze, root / rel)
        assert rc == 0 and problems == [], (rel, problems)


def test_systemd_analyze_would_catch_the_old_nobody_unit(tmp_path):
    # The unit docs/dashboard.md used to show: the check above is able to fail.
    analyze = require_binary("systemd-analyze")
    unit = tmp_path / "efajob-dashboard.service"
    unit.write_text("[Service]\nExecStart=/bin/true\nUser=nobody\n")
    _, problems = _verify(analyze, unit)
    assert any("nobody" in p for p in problems)


def test_units_are_hardened():
    from efajob.config import build_config
    from efajob.deploy.units import render_dashboard_unit, render_unit

    daemon = render_unit(build_config({}, env={}, node="n1"), python=PY, config_file=None,
                         node=None).splitlines()
    dash = render_dashboard_unit(python=PY, config_file="/etc/efajob/config.toml").splitlines()
    for lines in (daemon, dash):
        for want in ("ProtectSystem=strict", "NoNewPrivileges=yes", "PrivateDevices=yes",
                     "ProtectKernelTunables=yes", "RestrictNamespaces=yes",
                     "SystemCallFilter=@system-service"):
            assert want in lines
        assert not any(x.startswith("User=") for x in lines)
    assert "DynamicUser=yes" in dash and "CapabilityBoundingSet=" in dash
    assert not any(x.startswith("ReadWritePaths=") for x in dash)  # it writes nothing
    assert "CPUQuota=10%" in daemon and "MemoryMax=128M" in daemon  # limits kept
    assert "ReadWritePaths=-/run/efajob -/var/lib/efajob -/var/lib/efajob/jobstore" in daemon
    from efajob.deploy.units import render_index_units

    index, timer = (u.splitlines() for u in render_index_units(
        build_config({"index_path": "/srv/efa/jobindex.db"}, env={}, node="h"), python=PY,
        config_file=None))
    assert "ProtectSystem=strict" in index and "ReadWritePaths=-/srv/efa" in index
    assert "Type=oneshot" in index and "OnUnitActiveSec=1min" in timer


@pytest.mark.parametrize("name", ["efajob-node.service", "efajob-dashboard.service",
                                  "efajob-index.service", "efajob-index.timer"])
def test_repo_unit_copies_match_the_renderers(name):
    from efajob.config import build_config
    from efajob.deploy.units import render_dashboard_unit, render_index_units, render_unit

    if name == "efajob-node.service":
        want = render_unit(build_config({}, env={}, node="n1"), python="/usr/bin/python3",
                           config_file="/etc/efajob/config.toml", node=None)
    elif name.startswith("efajob-index"):
        service, timer = render_index_units(build_config({}, env={}, node="n1"),
                                            python="/usr/bin/python3",
                                            config_file="/etc/efajob/config.toml")
        want = service if name.endswith(".service") else timer
    else:
        want = render_dashboard_unit(python="/usr/bin/python3",
                                     config_file="/etc/efajob/config.toml")
    with open(os.path.join(REPO, "slurm", "systemd", name)) as f:
        assert f.read() == want


def test_logrotate_rule_text():
    from efajob.deploy.units import render_logrotate
    from efajob.errors import ConfigError

    text = render_logrotate("/var/log/efa job/x.log")
    assert text.splitlines()[1] == '"/var/log/efa job/x.log" {'
    assert "copytruncate" not in text and "postrotate" not in text  # WatchedFileHandler reopens
    with pytest.raises(ConfigError, match="log_file"):
        render_logrotate('/var/log/"x.log')


def test_logrotate_accepts_the_rule_and_rotates_the_log(tmp_path):
    from efajob.deploy.units import render_logrotate

    logrotate = require_binary("logrotate")
    log = tmp_path / "log" / "efajob.log"
    log.parent.mkdir()
    log.write_text("line\n")
    rule = tmp_path / "efajob"
    rule.write_text(render_logrotate(str(log)))
    state = tmp_path / "state"
    d = subprocess.run([logrotate, "-d", "-s", str(state), str(rule)], capture_output=True,
                       text=True, timeout=60)
    assert d.returncode == 0 and "error" not in d.stderr.lower(), d.stderr
    # -f: rotate now. The old file moves to .1 (compressed a cycle later) and a new one exists.
    f = subprocess.run([logrotate, "-f", "-s", str(state), str(rule)], capture_output=True,
                       text=True, timeout=60)
    assert f.returncode == 0, f.stderr
    assert (tmp_path / "log" / "efajob.log.1").read_text() == "line\n"
    assert log.exists() and log.read_text() == ""


def test_root_without_config_reads_the_roots_config_never_this_machines(root, tmp_path,
                                                                         monkeypatch):
    mine = tmp_path / "machine.toml"
    mine.write_text('state_dir = "/this/machine/state"\n')
    monkeypatch.setenv("EFAJOB_CONFIG", str(mine))
    run("install", "systemd", "--root", str(root))
    unit = (root / UNITS[0]).read_text()
    assert f"ExecStart={PY} -m efajob daemon --config /etc/efajob/config.toml\n" in unit
    assert (root / "var/lib/efajob/installed.json").exists()
    (root / "etc/efajob/config.toml").unlink()
    run("install", "dashboard", "--root", str(root))  # no config there: the defaults
    assert "--config" not in (root / UNITS[1]).read_text()
    assert not (root / "this").exists()


def test_a_failed_write_leaves_the_manifest_as_it_was(root):
    run("install", "hooks", "--root", str(root), "--slurm-scripts-dir", "/opt/slurm/etc/scripts",
        "--config", "/etc/efajob/config.toml", "--python", PY)
    before = manifest(root)
    (root / "etc/systemd").mkdir(parents=True)
    (root / "etc/systemd/system").write_text("not a directory")
    res = run("install", "systemd", "--root", str(root), "--config", "/etc/efajob/config.toml",
              ok=False)
    assert res.exit_code == 1 and manifest(root) == before
    assert [e["component"] for e in before["files"]] == ["hooks", "hooks"]
