"""efajob-hook prolog|epilog, run as slurmd runs them: subprocesses with a Slurm-like environment
(no PATH, no HOME) against simulated sysfs trees; hostile inputs; the environment parser."""
from __future__ import annotations

import fcntl
import glob
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import HOOK_WAIT_ENV, fill_disk, mount_tmpfs
from efajob.config import build_config
from efajob.errors import UsageError
from efajob.hooks.entry import deliver_detached, identity_from_env, resolve_cluster
from efajob.node.localstore import LocalStore, SampleRow
from efajob.hooks.outbox import load_outbox, pending, write_outbox
from efajob.hooks.records import JobIdentity, build_record
from efajob.hooks.runfiles import read_boot_id, read_finished
from efajob.sim import build_node

PY = sys.executable


@pytest.fixture
def site(tmp_path):
    """A config with {node} paths (several simulated nodes share this host) and node n1."""
    conf = tmp_path / "efajob.toml"
    conf.write_text(
        'cluster = "c1"\n'
        f'sysfs_root = "{tmp_path}/{{node}}/sys"\n'
        f'run_dir = "{tmp_path}/{{node}}/run"\n'
        f'state_dir = "{tmp_path}/{{node}}/state"\n'
        f'store = "{tmp_path}/store"\n'
        'instance_type = "p5.48xlarge"\n')
    return tmp_path, str(conf)


def cfg_for(site, node="n1"):
    root, conf = site
    from efajob.config import load_config

    return load_config(conf, env={}, node=node)


def slurm_env(conf, job_id="42", node="n1", **extra):
    env = {"EFAJOB_CONFIG": conf, "SLURMD_NODENAME": node, "SLURM_JOB_ID": job_id,
           "SLURM_JOB_USER": "alice", "SLURM_JOB_UID": "1000", "SLURM_JOB_PARTITION": "gpu",
           "SLURM_CLUSTER_NAME": "slurmname", "SLURM_NODELIST": "n[1-2]",
           "SLURM_JOB_NUM_NODES": "2", "SLURM_JOB_RESTART_COUNT": "0",
           "SLURM_SCRIPT_CONTEXT": "prolog_slurmd", **HOOK_WAIT_ENV}
    env.update(extra)
    return {k: v for k, v in env.items() if v is not None}


def hook(kind, env, timeout=120):
    """Run the hook as slurmd would: no PATH, no HOME, absolute interpreter."""
    assert "PATH" not in env and "HOME" not in env
    p = subprocess.run([PY, "-m", "efajob.hooks.entry", kind], env=env, capture_output=True, text=True,
                       timeout=timeout, cwd="/")
    return p


def epilog_env(conf, job_id="42", **extra):
    extra.setdefault("SLURM_SCRIPT_CONTEXT", "epilog_slurmd")
    extra.setdefault("SLURM_JOB_EXIT_CODE", "0")
    extra.setdefault("SLURM_JOB_EXIT_CODE2", "0:0")
    extra.setdefault("SLURM_JOB_DERIVED_EC", "0")
    return slurm_env(conf, job_id, **extra)


def store_records(root, cluster="c1"):
    out = {}
    for p in glob.glob(os.path.join(str(root), "store", cluster, "jobs", "*", "*.json")):
        out[os.path.relpath(p, os.path.join(str(root), "store", cluster, "jobs"))] = json.load(open(p))
    return out


def wait_for_records(root, n, timeout=120.0):
    deadline = time.monotonic() + timeout
    while len(store_records(root)) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    return store_records(root)


def no_temp_files(*dirs):
    for d in dirs:
        for base, _, files in os.walk(d):
            assert not [f for f in files if f.endswith(".tmp")], base


# -- the whole path --------------------------------------------------------------------------
def test_prolog_traffic_epilog_totals_are_exact(site):
    root, conf = site
    node = build_node(str(root / "n1" / "sys"), "p5.48xlarge")
    p = hook("prolog", slurm_env(conf))
    assert (p.returncode, p.stdout, p.stderr) == (0, "", "")
    assert os.path.exists(root / "n1" / "run" / "active" / "42.json")
    inj = node.traffic(400, 300, 30, pattern="bursty")
    p = hook("epilog", epilog_env(conf, SLURM_JOB_EXIT_CODE="256", SLURM_JOB_EXIT_CODE2="1:0"))
    assert (p.returncode, p.stderr) == (0, "")
    recs = store_records(root)
    assert list(recs) == ["42/n1.json"]  # no daemon: the epilog delivered it itself
    r = recs["42/n1.json"]
    assert len(r["devices"]) == 32 and r["link_gbps"] == 3200.0
    for dev in r["devices"]:
        for name, delta in dev["counters"].items():
            assert delta == inj.devices[dev["name"]][name], (dev["name"], name)
        for name, delta in dev["device_counters"].items():
            assert delta == inj.devices[dev["name"]][name], (dev["name"], name)
    for name in ("tx_bytes", "rx_bytes", "tx_pkts", "rx_pkts", "rdma_write_bytes"):
        assert r["totals"][name] == inj.totals[name]
    assert r["ena"] == inj.ena
    assert (r["job_id"], r["host"], r["cluster"], r["user"], r["uid"]) == ("42", "n1", "c1", "alice", 1000)
    assert (r["exit_code"], r["derived_exit_code"], r["nodelist"], r["num_nodes"]) == ("1:0", "0:0", "n[1-2]", 2)
    assert r["complete"] is True and r["incomplete_reasons"] == [] and r["shared"] == []
    # The run dir is clean again (but for the history), the outbox empty.
    assert os.listdir(root / "n1" / "run" / "active") == []
    assert os.listdir(root / "n1" / "run" / "start") == []
    assert pending(cfg_for(site)) == []
    no_temp_files(root / "n1" / "run", root / "n1" / "state", root / "store")


def test_resets_and_vanished_device_through_the_hooks(site):
    root, conf = site
    node = build_node(str(root / "n1" / "sys"), "p4d.24xlarge")
    hook("prolog", slurm_env(conf))
    inj = node.traffic(50, 50, 10, fault="reset")
    assert inj.resets
    hook("epilog", epilog_env(conf))
    r = store_records(root)["42/n1.json"]
    assert r["resets"] and all(x.split("/")[0] in inj.resets for x in r["resets"])
    assert all(v >= 0 for d in r["devices"] for v in d["counters"].values())


def test_requeued_job_gets_its_own_record(site):
    root, conf = site
    build_node(str(root / "n1" / "sys"), "p4d.24xlarge")
    for restart in ("0", "1"):
        assert hook("prolog", slurm_env(conf, SLURM_JOB_RESTART_COUNT=restart)).stderr == ""
        assert hook("epilog", epilog_env(conf, SLURM_JOB_RESTART_COUNT=restart)).stderr == ""
    recs = store_records(root)
    assert sorted(recs) == ["42/n1.1.json", "42/n1.json"]
    assert (recs["42/n1.1.json"]["restart"], recs["42/n1.1.json"]["key"]) == (1, "42.1")
    assert recs["42/n1.1.json"]["complete"] and recs["42/n1.json"]["complete"]


def test_requeue_epilog_already_sees_the_next_restart_count(site):
    """Slurm 22.05 (measured by tests/test_slurm_e2e.py): the Epilog of the run being requeued
    gets SLURM_JOB_RESTART_COUNT=1 while its Prolog had 0."""
    root, conf = site
    node = build_node(str(root / "n1" / "sys"), "p4d.24xlarge")
    hook("prolog", slurm_env(conf, SLURM_JOB_RESTART_COUNT="0"))
    inj0 = node.traffic(10, 10, 2)
    assert hook("epilog", epilog_env(conf, SLURM_JOB_RESTART_COUNT="1")).stderr == ""
    hook("prolog", slurm_env(conf, SLURM_JOB_RESTART_COUNT="1"))
    inj1 = node.traffic(20, 10, 2)
    assert hook("epilog", epilog_env(conf, SLURM_JOB_RESTART_COUNT="1")).stderr == ""
    recs = store_records(root)
    assert sorted(recs) == ["42/n1.1.json", "42/n1.json"]
    assert (recs["42/n1.json"]["restart"], recs["42/n1.json"]["key"]) == (0, "42")
    assert recs["42/n1.json"]["totals"]["tx_bytes"] == inj0.totals["tx_bytes"]
    assert recs["42/n1.1.json"]["totals"]["tx_bytes"] == inj1.totals["tx_bytes"]
    assert all(r["complete"] for r in recs.values())
    assert os.listdir(root / "n1" / "run" / "active") == []


def test_epilog_without_prolog(site):
    root, conf = site
    build_node(str(root / "n1" / "sys"), "p4d.24xlarge")
    p = hook("epilog", epilog_env(conf, "77"))
    assert (p.returncode, p.stderr) == (0, "")
    r = store_records(root)["77/n1.json"]
    assert r["prolog_seen"] is False and r["complete"] is False
    assert r["incomplete_reasons"] == ["no_prolog_no_samples"] and r["totals"] == {}


def test_overlap_found_without_a_daemon(site):
    root, conf = site
    build_node(str(root / "n1" / "sys"), "p4d.24xlarge")
    hook("prolog", slurm_env(conf, "1"))
    hook("prolog", slurm_env(conf, "2"))
    hook("epilog", epilog_env(conf, "2"))  # 1 is still active
    hook("epilog", epilog_env(conf, "1"))  # 2 is in the history
    hook("prolog", slurm_env(conf, "3"))   # after both: overlaps nothing
    hook("epilog", epilog_env(conf, "3"))
    recs = store_records(root)
    assert recs["1/n1.json"]["shared"] == ["2"] and recs["2/n1.json"]["shared"] == ["1"]
    assert recs["3/n1.json"]["shared"] == []
    assert [e["key"] for e in read_finished(str(root / "n1" / "run"))] == ["2", "1", "3"]


def test_concurrent_epilogs(site):
    root, conf = site
    build_node(str(root / "n1" / "sys"), "p4d.24xlarge")
    jobs = [str(i) for i in range(10, 26)]
    for j in jobs:
        hook("prolog", slurm_env(conf, j))
    with ThreadPoolExecutor(len(jobs)) as ex:
        results = list(ex.map(lambda j: hook("epilog", epilog_env(conf, j)), jobs))
    # Each epilog's delivery child delivers every pending record, so most find their own
    # already delivered by another: that is said at once, never a "not in the job store yet"
    # warning (issue 13: 12 of 40 false warnings). hook_wait is 120 s here, so any warning
    # would be false.
    for p in results:
        assert p.returncode == 0 and p.stdout == "" and p.stderr == "", p.stderr
    recs = wait_for_records(root, len(jobs))
    assert sorted(recs) == sorted(f"{j}/n1.json" for j in jobs)
    assert sorted(e["key"] for e in read_finished(str(root / "n1" / "run"))) == sorted(jobs)
    for j in jobs:
        assert set(recs[f"{j}/n1.json"]["shared"]) == set(jobs) - {j}


def test_daemon_rows_give_peaks_and_series(site):
    root, conf = site
    node = build_node(str(root / "n1" / "sys"), "p4d.24xlarge")
    cfg = cfg_for(site)
    hook("prolog", slurm_env(conf))
    node.traffic(10, 10, 2)
    boot, now = read_boot_id(), time.monotonic()
    store = LocalStore.open(cfg.db_path)
    for i in range(5):
        store.add_sample(SampleRow(boot, now + i * 0.001, time.time(), 0.1,
                                   {"tx_bytes": (i + 1) * 10 ** 8, "rx_bytes": 0},
                                   {"rdmap16s27": (i + 1) * 10 ** 8}, {"rdmap16s27": 0},
                                   ("42", "99"), ()))
    store.close()
    time.sleep(0.05)
    hook("epilog", epilog_env(conf))
    r = store_records(root)["42/n1.json"]
    assert r["daemon_samples"] == 5 and r["rates"]["peak_source"] == "daemon"
    assert r["rates"]["peak_tx_gbps"] == pytest.approx(40.0)  # 5e8 B in 0.1 s
    assert len(r["series"]["t"]) == 5 and r["shared"] == ["99"]


def test_long_window_uses_rollups(site):
    """A 3-hour job (beyond RAW_WINDOW_MAX): whole minutes from the daemon's rollups, peaks
    from the busiest minutes' raw rows, the series bounded."""
    from efajob.hooks.finish import RAW_WINDOW_MAX
    from efajob.hooks.runfiles import ActiveJob, write_active
    from efajob.node.sysfs import read_snapshot

    root, conf = site
    build_node(str(root / "n1" / "sys"), "p4d.24xlarge")
    cfg = cfg_for(site)
    span, step = 3 * 3600.0, 5.0
    assert span > RAW_WINDOW_MAX
    boot, now_m, now_w = read_boot_id(), time.monotonic(), time.time()
    store = LocalStore.open(cfg.db_path)
    n = int(span / step)
    spike = n // 2
    for i in range(n):
        age = span - i * step - 1.0
        tx = 25 * 10 ** 9 if i == spike else 10 ** 9  # the spike: 40 Gb/s node, 30 on one device
        dev = {"rdmap16s27": tx * 3 // 4, "rdmap32s27": tx // 4}
        store.add_sample(SampleRow(boot, now_m - age, now_w - age, step, {"tx_bytes": tx, "rx_bytes": 0},
                                   dev, {d: 0 for d in dev}, ("42", "7") if i == 10 else ("42",), ()))
    store.close()
    start = read_snapshot(cfg.sysfs_root)
    start = start.replace(mono=now_m - span, wall=now_w - span)
    write_active(cfg.run_dir, ActiveJob("42", "42", 0, None, None, None, None, "c1", "n1", None, None,
                                        start.wall, start.mono, boot), start)
    p = hook("epilog", epilog_env(conf))
    assert (p.returncode, p.stderr) == (0, "")
    r = store_records(root)["42/n1.json"]
    assert n - 2 <= r["daemon_samples"] <= n
    assert r["rates"]["peak_tx_gbps"] == pytest.approx(40.0)
    peaks = {d["name"]: d["peak_tx_gbps"] for d in r["devices"]}
    assert peaks["rdmap16s27"] == pytest.approx(30.0) and peaks["rdmap32s27"] == pytest.approx(10.0)
    assert r["series"]["interval_s"] == 60.0 and 170 <= len(r["series"]["t"]) <= 182
    assert r["shared"] == ["7"] and r["complete"] is True


def test_running_daemon_delivers_not_the_epilog(site):
    root, conf = site
    build_node(str(root / "n1" / "sys"), "p4d.24xlarge")
    cfg = cfg_for(site)
    os.makedirs(cfg.state_dir, exist_ok=True)
    fd = os.open(os.path.join(cfg.state_dir, "daemon.lock"), os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        hook("prolog", slurm_env(conf))
        assert hook("epilog", epilog_env(conf)).stderr == ""
    finally:
        os.close(fd)
    assert store_records(root) == {} and len(pending(cfg)) == 1


def test_several_simulated_nodes_share_one_host(site):
    root, conf = site
    for n in ("n1", "n2"):
        build_node(str(root / n / "sys"), "p4d.24xlarge", name=n)
        hook("prolog", slurm_env(conf, node=n))
    for n in ("n1", "n2"):
        hook("epilog", epilog_env(conf, SLURMD_NODENAME=n))
    assert sorted(store_records(root)) == ["42/n1.json", "42/n2.json"]


# -- hostile inputs: exit 0, one clear line, no partial file ------------------------------------
def one_line(p, *words):
    assert p.returncode == 0 and p.stdout == ""
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("kind", ["prolog", "epilog"])
@pytest.mark.parametrize("job_id,why", [
    ("../../etc", "not valid"), ("42/x", "not valid"), ("", "SLURM_JOB_ID is not set"),
    (None, "SLURM_JOB_ID is not set"), ("4" * 30, "not valid"),
])
def test_bad_job_ids(site, kind, job_id, why):
    root, conf = site
    build_node(str(root / "n1" / "sys"), "p4d.24xlarge")
    p = hook(kind, slurm_env(conf, job_id=job_id))
    one_line(p, "efajob-hook", kind, why)
    assert not os.path.exists(root / "n1" / "run" / "active") or not os.listdir(root / "n1" / "run" / "active")
    assert not os.path.exists(root / "etc") and not os.path.exists(root / "n1" / "etc")
    assert pending(cfg_for(site)) == [] and store_records(root) == {}


@pytest.mark.parametrize("var,value,words", [
    ("SLURMD_NODENAME", "../n1", ["node name"]),
    ("SLURM_JOB_RESTART_COUNT", "-1", ["restart count"]),
    ("EFAJOB_CONFIG", "/nonexistent/efajob.toml", ["does not exist"]),
])
def test_bad_environment(site, var, value, words):
    root, conf = site
    p = hook("prolog", slurm_env(conf, **{var: value}))
    one_line(p, "prolog job 42 failed", *words)


def test_unknown_subcommand_and_no_args():
    for argv in (["nonsense"], []):
        p = subprocess.run([PY, "-m", "efajob.hooks.entry"] + argv, env={}, capture_output=True,
                           text=True, timeout=120)
        one_line(p, "usage: efajob-hook prolog|epilog")


def test_missing_sysfs_root(site):
    root, conf = site
    one_line(hook("prolog", slurm_env(conf)), "prolog job 42 failed", "sysfs root")
    assert not os.path.exists(root / "n1" / "run" / "active")


def test_unwritable_run_dir(site):
    root, conf = site
    build_node(str(root / "n1" / "sys"), "p4d.24xlarge")
    (root / "n1" / "run").write_text("I am a file, not a directory\n")  # root ignores modes
    one_line(hook("prolog", slurm_env(conf)), "prolog job 42 failed", "Not a directory")
    assert (root / "n1" / "run").read_text() == "I am a file, not a directory\n"


def _kept_in_the_spare_outbox(root, p, *words):
    """The epilog's record went to <run_dir>/outbox, said in one warning line, and its delivery
    child took it to the store from there: exact, and the run-dir files gone."""
    line = one_line(p, "not writable", "kept in", str(root / "n1" / "run" / "outbox"), *words)
    assert "failed" not in line
    rec = wait_for_records(root, 1)["42/n1.json"]
    assert rec["source"] == "epilog" and rec["complete"] is True
    assert not os.path.exists(root / "n1" / "run" / "active" / "42.json")
    assert os.listdir(root / "n1" / "run" / "outbox") == []


def test_unwritable_outbox_keeps_the_record_in_the_run_dir(site):
    root, conf = site
    build_node(str(root / "n1" / "sys"), "p4d.24xlarge")
    hook("prolog", slurm_env(conf))
    os.makedirs(root / "n1" / "state", exist_ok=True)  # the prolog made it (durable copy)
    (root / "n1" / "state" / "outbox").write_text("")
    _kept_in_the_spare_outbox(root, hook("epilog", epilog_env(conf)), "File exists")


@pytest.fixture
def tiny_fs(tmp_path):
    """A 64 KiB tmpfs: a disk that fills up."""
    (tmp_path / "tiny").mkdir()
    with mount_tmpfs(tmp_path / "tiny", "64k") as mnt:
        yield mnt


fill = fill_disk


def test_full_disk_prolog(site, tiny_fs):
    root, conf = site
    build_node(str(root / "n1" / "sys"), "p5.48xlarge")
    run = tiny_fs / "run"
    (root / "n1" / "run").symlink_to(run)
    os.makedirs(run)
    fill(str(tiny_fs))
    one_line(hook("prolog", slurm_env(conf)), "prolog job 42 failed", "No space left on device")
    for sub in ("active", "start"):
        d = run / sub
        assert not d.exists() or os.listdir(d) == []  # all or nothing, no temp files


def test_full_disk_epilog(site, tiny_fs):
    root, conf = site
    build_node(str(root / "n1" / "sys"), "p5.48xlarge")
    (root / "n1").mkdir(exist_ok=True)
    (root / "n1" / "state").symlink_to(tiny_fs)
    hook("prolog", slurm_env(conf))
    assert (tiny_fs / "active" / "42.json").exists()  # the durable copy, while there was room
    fill(str(tiny_fs))
    # Issue 13, case 4: the exact record was lost (and reconcile later counted 3x the bytes).
    _kept_in_the_spare_outbox(root, hook("epilog", epilog_env(conf)), "No space left on device")
    outbox = tiny_fs / "outbox"
    assert not outbox.exists() or [n for n in os.listdir(outbox) if n.endswith(".json")] == []


def test_full_run_dir_and_outbox_keep_the_active_file(site):
    """Neither outbox can take the record: the epilog fails (one line) and the active file
    stays for reconcile, the only way left."""
    root, conf = site
    build_node(str(root / "n1" / "sys"), "p5.48xlarge")
    hook("prolog", slurm_env(conf))
    os.makedirs(root / "n1" / "state", exist_ok=True)  # the prolog made it (durable copy)
    (root / "n1" / "state" / "outbox").write_text("")
    (root / "n1" / "run" / "outbox").write_text("")
    one_line(hook("epilog", epilog_env(conf)), "epilog job 42 failed", "File exists")
    assert os.path.exists(root / "n1" / "run" / "active" / "42.json")


# -- the environment parser, in-process -------------------------------------------------------
def cfg(cluster="default", node="n1"):
    return build_config({"cluster": cluster} if cluster != "default" else {}, env={}, node=node)


@pytest.mark.parametrize("env,field,expected", [
    ({"SLURM_JOB_NODELIST": "n[1-4]", "SLURM_NODELIST": "old"}, "nodelist", "n[1-4]"),  # 23.02+
    ({"SLURM_NODELIST": "n[1-2]"}, "nodelist", "n[1-2]"),  # 22.05
    ({"SLURM_NODELIST": "n1;rm -rf /"}, "nodelist", None),
    ({"SLURM_JOB_UID": "abc"}, "uid", None),
    ({"SLURM_JOB_UID": "1000"}, "uid", 1000),
    ({"SLURM_JOB_USER": "bob\nx"}, "user", None),
    ({"SLURM_JOB_ACCOUNT": "proj-1"}, "account", "proj-1"),
    ({"SLURM_JOB_NUM_NODES": "x"}, "num_nodes", None),
    ({"SLURM_ARRAY_JOB_ID": "7", "SLURM_ARRAY_TASK_ID": "8"}, "array_task_id", "8"),
    ({"SLURM_ARRAY_JOB_ID": "7"}, "array_job_id", None),
    ({"SLURM_HET_JOB_ID": "8", "SLURM_HET_JOB_OFFSET": "1"}, "het_job_offset", "1"),
    ({"SLURM_JOB_START_TIME": "1700000000"}, "start_wall", 1700000000.0),
    ({"SLURM_JOB_RESTART_COUNT": "2"}, "key", "10.2"),
    ({"SLURM_JOB_EXIT_CODE": "256"}, "exit_code", None),  # prolog: no exit codes
    ({"SLURM_JOB_NAME": "train llama-7b"}, "job_name", "train llama-7b"),
    ({"SLURM_JOB_NAME": "x\x1b[2Jy"}, "job_name", None),  # a terminal escape: refused
    ({"SLURM_JOB_NAME": "n" * 1025}, "job_name", None),
    ({}, "job_name", None),  # slurmd's 22.05 hooks: no SLURM_JOB_NAME
    ({"SLURM_JOB_WORK_DIR": "/home/bob/run 1"}, "work_dir", "/home/bob/run 1"),
    ({"SLURM_JOB_WORK_DIR": "relative/dir"}, "work_dir", None),
    ({"SLURM_JOB_WORK_DIR": "/home/bob\nx"}, "work_dir", None),
])
def test_identity_from_env(env, field, expected):
    ident = identity_from_env(dict({"SLURM_JOB_ID": "10"}, **env), cfg())
    assert getattr(ident, field) == expected
    assert ident.job_id == "10"  # always SLURM_JOB_ID: 22.05 hooks get no array/het ids


def test_identity_epilog_exit_codes():
    env = {"SLURM_JOB_ID": "10", "SLURM_JOB_EXIT_CODE": "15", "SLURM_JOB_DERIVED_EC": "512"}
    ident = identity_from_env(env, cfg(), epilog=True)
    assert (ident.exit_code, ident.derived_exit_code) == ("0:15", "2:0")


@pytest.mark.parametrize("configured,slurm,expected", [
    ("default", "prod", "prod"), ("mine", "prod", "mine"), ("default", None, "default"),
    ("default", "../x", "default"),
])
def test_cluster_name(configured, slurm, expected):
    env = {"SLURM_CLUSTER_NAME": slurm} if slurm else {}
    assert resolve_cluster(cfg(configured), env) == expected


def test_identity_rejects_bad_ids():
    for env in ({}, {"SLURM_JOB_ID": "1/2"}, {"SLURM_JOB_ID": "1", "SLURM_JOB_RESTART_COUNT": "x"}):
        with pytest.raises(UsageError):
            identity_from_env(env, cfg())


# -- delivery without a daemon never blocks the epilog ----------------------------------------
def test_deliver_detached_gives_up_waiting_but_delivery_continues(site, monkeypatch):
    root, _ = site
    cfg = cfg_for(site)
    write_outbox(cfg, build_record(JobIdentity("c1", "5", 0, "n1"), None, None, prolog_seen=False,
                                   end_wall=1.0))
    import efajob.hooks.outbox as outbox

    real = outbox.deliver_pending
    gate = os.path.join(str(root), "gate")

    def held(c, **kw):  # in the child: deliver only once the test opens the gate
        deadline = time.monotonic() + 300
        while not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.01)
        return real(c, **kw)

    monkeypatch.setattr(outbox, "deliver_pending", held)
    # The child cannot deliver before the gate opens: False means the parent stopped waiting.
    assert deliver_detached(cfg, wait=0.1, first="5@n1@c1.json") is False
    assert list(store_records(root)) == [] and len(load_outbox(cfg)) == 1
    open(gate, "w").close()
    deadline = time.monotonic() + 120  # bounds a hang only
    # The child renames into the store, fsyncs, and only then empties the outbox.
    while (not store_records(root) or load_outbox(cfg)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(store_records(root)) == ["5/n1.json"] and load_outbox(cfg) == []
    monkeypatch.setattr(outbox, "deliver_pending", real)
    assert deliver_detached(cfg, wait=120) is True  # nothing left: a quick, clean exit


# -- efajob install hooks -----------------------------------------------------------------------
def test_install_hooks_and_run_them_like_slurmd(site, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from efajob.cli.main import main

    root, conf = site
    node = build_node(str(root / "n1" / "sys"), "p4d.24xlarge")
    scripts = tmp_path / "scripts"
    res = CliRunner().invoke(main, ["install", "hooks", "--slurm-scripts-dir", str(scripts),
                                    "--config", conf])
    assert res.exit_code == 0, res.output
    prolog, epilog = scripts / "prolog.d" / "00_efajob", scripts / "epilog.d" / "99_efajob"
    for path in (prolog, epilog):
        assert stat_mode(path) == 0o755 and path.read_text().startswith("#!/bin/sh\n")
        assert f"PY={PY}\n" in path.read_text() and f"EFAJOB_CONFIG={conf}\n" in path.read_text()
    assert "Prolog=" in res.output and "PrologFlags=Alloc" in res.output
    # Slurm's reverse lexical order: our prolog sorts first (runs last), our epilog last (first).
    assert "00_efajob" < "90_pcluster_health_check_manager" < "99_efajob"
    # Run them as slurmd does: no PATH, no HOME, no EFAJOB_CONFIG.
    env = {k: v for k, v in slurm_env(conf).items() if k != "EFAJOB_CONFIG"}
    p = subprocess.run([str(prolog)], env=env, capture_output=True, text=True, timeout=120)
    assert (p.returncode, p.stderr) == (0, "")
    inj = node.traffic(20, 10, 5)
    p = subprocess.run([str(epilog)], env=dict(env, SLURM_SCRIPT_CONTEXT="epilog_slurmd"),
                       capture_output=True, text=True, timeout=120)
    assert (p.returncode, p.stderr) == (0, "")
    assert store_records(root)["42/n1.json"]["totals"]["tx_bytes"] == inj.totals["tx_bytes"]
    # Installing again replaces the wrappers in place (and records them in this state dir, not
    # the real /var/lib/efajob).
    monkeypatch.setenv("EFAJOB_STATE_DIR", str(tmp_path / "other-state"))
    assert CliRunner().invoke(main, ["install", "hooks", "--slurm-scripts-dir", str(scripts)]).exit_code == 0
    assert "EFAJOB_CONFIG" not in prolog.read_text()


def stat_mode(path):
    import stat

    return stat.S_IMODE(os.stat(path).st_mode)


def test_wrapper_exits_0_when_the_interpreter_is_gone(tmp_path):
    from efajob.cli.hooks import render_wrapper

    script = tmp_path / "00_efajob"
    script.write_text(render_wrapper("prolog", "/nonexistent/venv/bin/python3", "/etc/x y.toml"))
    script.chmod(0o755)
    p = subprocess.run([str(script)], env={"SLURM_JOB_ID": "7"}, capture_output=True, text=True,
                       timeout=10)
    assert p.returncode == 0
    assert p.stderr == "efajob-hook: /nonexistent/venv/bin/python3 is missing: no efajob prolog for job 7\n"
    assert "EFAJOB_CONFIG='/etc/x y.toml'" in script.read_text()  # quoted for sh


@pytest.mark.parametrize("args,message", [
    (["--python", "python3"], "absolute path"),
    (["--python", "/nonexistent/python"], "not an executable"),
    (["--config", "/nonexistent/efajob.toml"], "does not exist"),
])
def test_install_hooks_refuses(tmp_path, args, message):
    from click.testing import CliRunner

    from efajob.cli.main import main

    res = CliRunner().invoke(main, ["install", "hooks", "--slurm-scripts-dir", str(tmp_path / "s")] + args)
    assert res.exit_code == 2 and message in res.output
    assert not (tmp_path / "s" / "prolog.d" / "00_efajob").exists()


def test_failure_also_goes_to_the_config_log_file(site):
    """slurmd throws a hook's stderr away and a node may have no /dev/log: the config's
    log_file is where an operator finds why a job has no record."""
    root, conf = site
    log_file = root / "hooks.log"
    with open(conf, "a") as f:
        f.write(f'log_file = "{log_file}"\n')
    build_node(str(root / "n1" / "sys"), "p4d.24xlarge")
    (root / "n1" / "run").write_text("not a directory\n")
    p = hook("prolog", slurm_env(conf))
    assert p.returncode == 0
    text = log_file.read_text()
    assert "prolog job 42 failed" in text and "Not a directory" in text and "ERROR" in text


def test_epilog_uses_the_instance_type_the_daemon_cached(site):
    root, conf = site
    text = open(conf).read().replace('instance_type = "p5.48xlarge"\n', "")
    open(conf, "w").write(text)
    build_node(str(root / "n1" / "sys"), "p5en.48xlarge")
    os.makedirs(root / "n1" / "state", exist_ok=True)  # the prolog made it (durable copy)
    (root / "n1" / "state" / "instance-type").write_text("p5en.48xlarge\n")
    assert hook("prolog", slurm_env(conf)).returncode == 0
    assert hook("epilog", epilog_env(conf)).returncode == 0
    rec = store_records(root)["42/n1.json"]
    # The instance table's 16 x 200 Gb/s, not ports/1/rate's 100 Gb/s of kernels < 6.13.
    assert rec["instance_type"] == "p5en.48xlarge" and rec["link_gbps"] == 3200.0
