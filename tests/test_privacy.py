"""private_records = true covers live data too (issue 13, case 6), checked as two real
unprivileged users: the job's owner (nobody, 65534) and another user (uid 4242, no passwd
entry). The effective uid is switched in-process (the venv's interpreter may live where other
users cannot run it); the prolog and the daemon run as root, as on a node.

Before the fix, with private_records on, every local user read a running job's user and
partition from the node status file, the active-job file in the run dir and `efajob status`,
and the live report and the dashboard showed them too."""
from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
import time

import pytest

from conftest import cli_runner, require
from efajob.cli.main import main
from efajob.config import build_config
from efajob.daemon.loop import Daemon
from efajob.errors import StoreError
from efajob.hooks.entry import run_prolog
from efajob.hooks.runfiles import ActiveJobsReader
from efajob.node.localstore import LocalStore
from efajob.sim import build_node
# What the commands import lazily, imported now as root: the interpreter's own library lives
# under /root here, where the other users cannot read it.
import efajob.report.render.csv  # noqa: F401,E402
import efajob.report.render.html  # noqa: F401,E402
import efajob.report.render.json  # noqa: F401,E402
import efajob.report.render.text  # noqa: F401,E402
import pwd  # noqa: F401,E402
from jobsim import NodePool, healthy, job_records

OWNER, OTHER = 65534, 4242
BOOT = "7c2f0c4e-5e3b-4b8e-9a55-0a4e2e7d9f00"


class Clock:
    def __init__(self, t):
        self.t = t

    def __call__(self):
        return self.t


@pytest.fixture
def site():
    require("root (to act as other users)", os.geteuid() == 0)
    root = tempfile.mkdtemp(prefix="efajob-privacy-", dir="/tmp")
    os.chmod(root, 0o755)  # pytest's tmp_path is 0700: other users could not even look
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def config_file(root, private):
    path = os.path.join(root, f"efajob-{int(private)}.toml")
    with open(path, "w") as f:
        f.write(f'cluster = "c1"\nsysfs_root = "{root}/sys"\nrun_dir = "{root}/run"\n'
                f'state_dir = "{root}/state"\nstore = "{root}/store"\ninterval = 1.0\n'
                f'instance_type = "p5.48xlarge"\nprivate_records = {str(private).lower()}\n')
    os.chmod(path, 0o644)
    return path


def prolog_env(conf):
    return {"EFAJOB_CONFIG": conf, "SLURMD_NODENAME": "n1", "SLURM_JOB_ID": "42",
            "SLURM_JOB_USER": "nobody", "SLURM_JOB_UID": str(OWNER),
            "SLURM_JOB_PARTITION": "secretpart", "SLURM_CLUSTER_NAME": "c1",
            "SLURM_NODELIST": "n1", "SLURM_JOB_NUM_NODES": "1",
            "SLURM_SCRIPT_CONTEXT": "prolog_slurmd"}


def as_user(uid, fn, *args, **kw):
    os.seteuid(uid)
    try:
        return fn(*args, **kw)
    finally:
        os.seteuid(0)


def cli(*args):
    return cli_runner().invoke(main, list(args), catch_exceptions=False)


def start_job_and_daemon(root, private):
    """Prolog of job 42 as nobody, then two daemon ticks and a status write, all as root."""
    conf = config_file(root, private)
    cfg = build_config({"cluster": "c1", "sysfs_root": f"{root}/sys", "run_dir": f"{root}/run",
                        "state_dir": f"{root}/state", "store": f"{root}/store", "interval": 1.0,
                        "instance_type": "p5.48xlarge", "private_records": private},
                       env={}, node="n1")
    node = build_node(os.path.join(root, "sys"), "p5.48xlarge")
    run_prolog(cfg, prolog_env(conf))
    proc = os.path.join(root, "proc", "sys", "kernel", "random")
    os.makedirs(proc)
    with open(os.path.join(proc, "boot_id"), "w") as f:
        f.write(BOOT + "\n")
    mono, wall = Clock(5000.0), Clock(time.time())
    d = Daemon(cfg, clock=mono, wall_clock=wall, proc_root=os.path.join(root, "proc"),
               sinks=[], worker=False)
    d.start()
    try:
        d.tick()
        node.traffic(100, 100, 1.0)
        mono.t += 1.0
        wall.t += 1.0
        d.tick()
        d.write_status()
        status = os.path.join(cfg.store, "c1", "nodes", "n1.json")
        with open(status, "rb") as f:
            live = f.read()
    finally:
        d.close()
    # A clean stop's last status lists no job: the checks below read a running daemon's file.
    with open(status, "wb") as f:
        f.write(live)
    return cfg, conf


def test_private_records_hide_who_runs_what_on_the_node(site):
    cfg, conf = start_job_and_daemon(site, private=True)
    # The run dir: root's files; their names (job keys, what squeue shows) stay visible.
    for sub in ("active", "start"):
        mode = stat.S_IMODE(os.stat(os.path.join(cfg.run_dir, sub, "42.json")).st_mode)
        assert mode == 0o600, (sub, oct(mode))
    reader = ActiveJobsReader(cfg.run_dir)
    assert as_user(OTHER, reader.read) == [] and reader.private == ["42"]
    # The local SQLite and its WAL: root's only.
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(cfg.db_path + suffix):
            assert stat.S_IMODE(os.stat(cfg.db_path + suffix).st_mode) == 0o600, suffix
    with pytest.raises(StoreError, match="not readable by you"):
        as_user(OTHER, LocalStore.open, cfg.db_path, readonly=True)
    # `efajob status` as another user: the job by key, marked private; no name anywhere.
    out = as_user(OTHER, cli, "status", "--config", conf)
    assert "42" in out.output and "(private)" in out.output, out.output
    assert "nobody" not in out.output and "secretpart" not in out.output
    # The node status file on the shared store: job ids only.
    doc = json.load(open(os.path.join(cfg.store, "c1", "nodes", "n1.json")))
    assert [(j["job_id"], j["user"], j["partition"]) for j in doc["jobs"]] == [("42", None, None)]


def test_without_private_records_the_node_shows_names(site):
    """The same run with private_records off: what the private run hides is really there."""
    cfg, conf = start_job_and_daemon(site, private=False)
    assert stat.S_IMODE(os.stat(os.path.join(cfg.run_dir, "active", "42.json")).st_mode) == 0o644
    assert stat.S_IMODE(os.stat(cfg.db_path).st_mode) == 0o644
    out = as_user(OTHER, cli, "status", "--config", conf)
    assert "nobody" in out.output and "secretpart" in out.output, out.output
    doc = json.load(open(os.path.join(cfg.store, "c1", "nodes", "n1.json")))
    assert doc["jobs"][0]["user"] == "nobody"


def test_live_report_and_jobs_are_the_owners_only(site, monkeypatch):
    from efajob.report import assemble
    from efajob.slurm.adapter import JobInfo

    cfg, conf = start_job_and_daemon(site, private=True)
    # Without Slurm nobody can prove the running job is theirs: exit 4, and why.
    other = as_user(OTHER, cli, "report", "42", "--config", conf, "--no-slurm", "--no-color")
    assert other.exit_code == 4 and "is running" in other.output, other.output
    assert "--no-slurm" in other.output
    # Slurm says the job is nobody's: its owner gets the live report, the other user does not.
    monkeypatch.setattr(assemble, "slurm_lookup",
                        lambda job_id: (JobInfo(job_id="42", user="nobody", state="RUNNING",
                                                partition="secretpart", num_nodes=1,
                                                nodes=["n1"]), None))
    mine = as_user(OWNER, cli, "report", "42", "--config", conf, "--no-color")
    assert mine.exit_code == 0 and "nobody" in mine.output, mine.output
    theirs = as_user(OTHER, cli, "report", "42", "--config", conf, "--no-color")
    assert theirs.exit_code == 4 and "does not say it is yours" in theirs.output, theirs.output
    assert "secretpart" not in theirs.output
    # `jobs` as another user lists no running job (it has no record anyone could read yet).
    listed = as_user(OTHER, cli, "jobs", "--config", conf, "--format", "json")
    assert listed.exit_code == 0 and json.loads(listed.stdout)["jobs"] == [], listed.output
    # Root sees everything.
    assert [j["job_id"] for j in json.loads(cli("jobs", "--config", conf, "--format",
                                                "json").stdout)["jobs"]] == ["42"]
    # The job index, written by root: 0600 (it names every job's user), and other users'
    # `jobs` scan the store instead, saying so. Root's reads the index.
    assert cli("index", "update", "--config", conf).exit_code == 0
    assert stat.S_IMODE(os.stat(cfg.job_index_path).st_mode) == 0o600
    listed = as_user(OTHER, cli, "jobs", "--config", conf, "--format", "json")
    assert listed.exit_code == 0 and json.loads(listed.stdout)["jobs"] == [], listed.output
    assert "the job index is root's; scanning the store" in listed.stderr
    mine = cli("jobs", "--config", conf, "--format", "json")
    assert [j["job_id"] for j in json.loads(mine.stdout)["jobs"]] == ["42"]
    assert "warning" not in mine.stderr, mine.stderr


def test_dashboard_shows_no_names_with_private_records(site):
    from efajob.dashboard.page import render_dashboard
    from efajob.dashboard.server import Collector
    from efajob.hooks.outbox import deliver_one

    cfg, _ = start_job_and_daemon(site, private=True)
    pool = NodePool(os.path.join(site, "pool"))
    for rec in job_records(pool, healthy(2), job_id="41", cluster="c1", user="nobody"):
        deliver_one(cfg, dict(rec, uid=OWNER, partition="secretpart", account="secretacct"))
    col = Collector(cfg, ttl=0.0, clock=time.time)
    page = render_dashboard(col.collect(), refresh=0, store=cfg.store)
    assert "42" in page and "41" in page
    for secret in ("nobody", "secretpart", "secretacct"):
        assert secret not in page, secret
    html = col.job_report_html("41", "c1", None)
    assert "nobody" not in html and "secretpart" not in html
