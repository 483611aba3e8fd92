"""`efajob demo` end to end (real daemons and hooks as subprocesses), its Ctrl-C path, and its
pieces (config, hook environment) without subprocesses."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from efajob.config import load_config
from efajob.sim.demo import CLUSTER, DemoJob, _base_env, _hook_env, demo_jobs, write_config
from efajob.hooks.entry import identity_from_env

DEMO = [sys.executable, "-c", "from efajob.cli.main import main; main()", "demo"]


def procs_mentioning(text: str):
    """PIDs whose command line mentions `text` (our kept directory): nothing may outlive the demo."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd:
            out.append((int(pid), cmd))
    return out


def test_config_and_hook_env(tmp_path):
    cfg_path = str(tmp_path / "config.toml")
    write_config(cfg_path, str(tmp_path))
    cfg = load_config(cfg_path, env={}, node="n2")
    assert cfg.sysfs_root == f"{tmp_path}/sys/n2" and cfg.store == f"{tmp_path}/store"
    assert cfg.cluster == CLUSTER and cfg.interval == 0.2 and cfg.thresholds["short_job_seconds"] == 1
    base = _base_env(cfg_path)
    assert base["EFAJOB_CONFIG"] == cfg_path and not any(k.startswith("SLURM") for k in base)
    job = DemoJob("102", "bob", "t", {})
    env = _hook_env(base, job, "n2", ["n1", "n2", "n3", "n4"], 1002, epilog=True)
    ident = identity_from_env(env, load_config(cfg_path, env={}, node="n2"), epilog=True)
    assert (ident.job_id, ident.host, ident.user, ident.nodelist, ident.num_nodes, ident.exit_code) == (
        "102", "n2", "bob", "n[1-4]", 4, "0:0")
    assert [j.job_id for j in demo_jobs(3.0)] == ["101", "102", "103"]


def test_next_steps_run_from_the_kept_directory(tmp_path):
    from efajob.cli.report import next_steps

    text = next_steps("/tmp/my demo", True)
    assert "(cd '/tmp/my demo')" in text and "efajob report 102 --store store --no-slurm" in text
    assert "efajob top --sysfs-root sys/n1" in text and all(len(ln) <= 80 for ln in text.splitlines())
    text = next_steps("/tmp/efajob-demo-x", False)
    assert "deleted" in text and "efajob demo --keep" in text


@pytest.mark.integration
def test_demo_end_to_end(tmp_path):
    keep = str(tmp_path / "demo")
    # No bound on how long it takes: that is the machine's speed, not the demo's verdict.
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    p = subprocess.run(DEMO + ["--keep", keep, "--no-color"], capture_output=True, text=True,
                       timeout=600, env=dict(env, EFAJOB_CONFIG=""))
    assert p.returncode == 0, p.stderr[-3000:] + p.stdout[-3000:]
    out = p.stdout
    assert "job 101: Healthy  no findings" in out
    assert "job 102: Failure  device_idle, straggler_node" in out
    assert "job 103: Failure  efa_unused" in out
    assert "NCCL or MPI most likely fell back to sockets" in " ".join(out.split())
    assert out.count("EFA job report: job ") == 3
    assert "[" in p.stderr and "done" in p.stderr  # progress went to stderr
    assert f"config {keep}/config.toml, logs in {keep}/log, job store {keep}/store" in p.stderr
    assert f"Next, in that directory (cd {keep}):" in out and "efajob dashboard serve --store store" in out
    # The reports fit 80 columns (stdout is a pipe: no $COLUMNS in the environment); only
    # the lines naming the kept directory are as long as its path.
    wide = [ln for ln in out.splitlines() if len(ln) > 80 and keep not in ln]
    assert wide == []
    # Records came through the real hooks and daemons: one per node per job, complete.
    import json

    for job in ("101", "102", "103"):
        d = os.path.join(keep, "store", CLUSTER, "jobs", job)
        names = sorted(os.listdir(d))
        assert names == ["n1.json", "n2.json", "n3.json", "n4.json"]
        rec = json.load(open(os.path.join(d, "n1.json")))
        assert rec["complete"] and rec["prolog_seen"] and rec["daemon_samples"] > 5
        assert rec["rates"]["peak_source"] == "daemon" and rec["series"]["t"]
    assert procs_mentioning(keep) == []


@pytest.mark.integration
def test_demo_ctrl_c_stops_everything(tmp_path):
    keep = str(tmp_path / "demo")
    p = subprocess.Popen(DEMO + ["--keep", keep], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=dict(os.environ, EFAJOB_CONFIG=""))
    try:
        deadline = time.monotonic() + 300  # bounds a hang
        line = ""
        while "traffic" not in line:  # the daemons are up and a job is running
            line = p.stderr.readline()
            assert line and time.monotonic() < deadline, "the demo never got to its first job"
        assert len([c for _, c in procs_mentioning(keep) if " daemon " in c]) == 4
        p.send_signal(signal.SIGINT)
        p.wait(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 130
    deadline = time.monotonic() + 120  # processes the demo killed may take a moment to go
    while procs_mentioning(keep) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert procs_mentioning(keep) == []
