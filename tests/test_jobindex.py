"""The job index (efajob/index/, docs/jobindex.md) and `efajob jobs`' sacct-style filters:
the index lists what the scan lists, an update indexes only what is new, one writer, read-only
readers, versions checked. Everything counted on a simulated store, nothing timed."""
from __future__ import annotations

import json
import os
import sqlite3
import stat
from dataclasses import replace

import pytest
from conftest import cli_runner

from efajob.cli.main import main
from efajob.config import Config, build_config
from efajob.errors import ConfigError, JobIndexError, UsageError
from efajob.index import db
from efajob.index.listing import recent_jobs
from efajob.index.update import SETTLE, rebuild, update
from efajob.report.jobfilter import JobFilter, parse_slurm_time, parse_states
from efajob.sim.jobstore import T0, build_store, job_spec, write_job, _template

JOBS, NODES = 80, 16
NOW = T0 + 60.0 * JOBS + 600.0  # every job landed within the last 90 minutes: none settled


@pytest.fixture
def cfg(tmp_path):
    store = str(tmp_path / "store")
    build_store(store, jobs=JOBS, status_nodes=NODES, now=NOW)
    return Config(store=store, state_dir=str(tmp_path / "state"))


def ids(rows):
    return [r["job_id"] for r in rows]


FILTERS = [JobFilter(), JobFilter(users=frozenset({"bob", "dave"})),
           JobFilter(partitions=frozenset({"gpu-long"})), JobFilter(states=frozenset({"FAILED"})),
           JobFilter(states=frozenset({"RUNNING"})),
           JobFilter(start=T0 + 60 * 30, end=T0 + 60 * 40),
           JobFilter(users=frozenset({"carol"}), states=frozenset({"COMPLETED"}), end=T0 + 60 * 50),
           JobFilter(names=frozenset({"eval"})),
           JobFilter(names=frozenset({"pretrain", "nosuchname"}), users=frozenset({"alice"})),
           JobFilter(accounts=frozenset({"ml"})), JobFilter(accounts=frozenset({"physics"})),
           JobFilter(nodes=frozenset({"n3", "n10"})),
           JobFilter(nodes=frozenset({"n5", "n6"}), users=frozenset({"bob"}))]


@pytest.mark.parametrize("flt", FILTERS)
def test_index_lists_what_the_scan_lists(cfg, flt):
    update(cfg, now=NOW)
    for limit in (5, 200):
        indexed, how = recent_jobs(cfg, flt, limit=limit, now=NOW)
        scanned, how2 = recent_jobs(cfg, flt, limit=limit, now=NOW, use_index=False)
        assert (how, how2) == ("index", "scan")
        assert ids(indexed) == ids(scanned)
        keys = ("user", "partition", "name", "state", "start", "end", "num_nodes", "tx_bytes",
                "verdict", "findings", "running")
        assert [[r[k] for k in keys] for r in indexed] == [[r[k] for k in keys] for r in scanned]
        assert all(flt.match(r) for r in indexed)
        assert all(set(a) == set(b) for a, b in zip(indexed, scanned))  # the same JSON keys


def test_filters_select_the_jobs_the_builder_wrote(cfg):
    update(cfg, now=NOW)
    rows, _ = recent_jobs(cfg, JobFilter(users=frozenset({"bob"}), states=parse_states("F")),
                          limit=100, now=NOW)
    # bob is job i % 4 == 1, FAILED every i % 5 == 4: i = 9, 29, 49, 69.
    assert ids(rows) == ["1069", "1049", "1029", "1009"]
    truth = [job_spec(i) for i in range(JOBS)]
    rows, _ = recent_jobs(cfg, JobFilter(partitions=frozenset({"gpu"}), start=T0 + 600,
                                         end=T0 + 1200), limit=100, now=NOW)
    want = [j.job_id for j in reversed(truth) if j.partition == "gpu"
            and j.end >= T0 + 600 and j.start <= T0 + 1200]
    assert ids(rows) == want and len(want) == 5


def test_update_indexes_only_what_landed(cfg):
    s = update(cfg, now=NOW)
    assert (s.dirs_seen, s.dirs_indexed, s.rows, s.records) == (JOBS, JOBS, JOBS, 2 * JOBS)
    s = update(cfg, now=NOW + 60)
    # No directory came or went: no listing, a stat of each unsettled one, nothing read.
    assert (s.dirs_seen, s.dirs_stated, s.dirs_indexed, s.records) == (0, JOBS, 0, 0)
    template = _template("sim")
    for i in range(JOBS, JOBS + 3):
        write_job(cfg.store, "sim", template, job_spec(i))
    os.utime(os.path.join(cfg.store, "sim", "jobs"), (NOW, NOW))  # as a real landing moves it
    s = update(cfg, now=NOW + 120)
    assert (s.dirs_seen, s.dirs_indexed, s.rows, s.records) == (JOBS + 3, 3, 3, 6)
    rows, _ = recent_jobs(cfg, JobFilter(states=frozenset({"COMPLETED", "FAILED"})), limit=1,
                          now=NOW + 120)
    assert ids(rows) == [str(1000 + JOBS + 2)]


def test_settled_directories_are_not_looked_at_until_full(cfg):
    later = NOW + SETTLE + 3600
    update(cfg, now=later)  # every directory is older than a day: settled
    # A record lands late in job 1010's directory (its mtime moves): not seen, not stat'ed...
    job = job_spec(10)
    d = os.path.join(cfg.store, "sim", "jobs", job.job_id)
    with open(os.path.join(d, "n999.json"), "w") as f:
        json.dump(dict(json.load(open(os.path.join(d, f"{job.hosts[0]}.json"))), host="n999"), f)
    s = update(cfg, now=later + 60)
    assert (s.dirs_stated, s.dirs_indexed) == (0, 0)
    # ...until --full.
    s = update(cfg, full=True, now=later + 120)
    assert (s.dirs_stated, s.dirs_indexed, s.records) == (JOBS, 1, 3)
    conn = db.open_reader(cfg.job_index_path)
    assert conn.execute("SELECT records FROM jobs WHERE job_id = '1010'").fetchone() == (3,)


def test_removed_directories_leave_the_index(cfg):
    import shutil

    update(cfg, now=NOW)
    shutil.rmtree(os.path.join(cfg.store, "sim", "jobs", "1079"))
    assert update(cfg, now=NOW + 60).removed == 1
    rows, _ = recent_jobs(cfg, JobFilter(states=frozenset({"FAILED", "COMPLETED"})), limit=1,
                          now=NOW + 60)
    assert ids(rows) == ["1078"]


def test_restarts_are_rows_and_jobs_lists_the_latest(cfg):
    d = os.path.join(cfg.store, "sim", "jobs", "1005")
    rec = json.load(open(os.path.join(d, "n5.json")))
    with open(os.path.join(d, "n5.1.json"), "w") as f:
        json.dump(dict(rec, restart=1, key="1005.1", exit_code="1:0"), f)
    update(cfg, now=NOW)
    conn = db.open_reader(cfg.job_index_path)
    assert conn.execute("SELECT restart, latest, records, state FROM jobs WHERE job_id = '1005' "
                        "ORDER BY restart").fetchall() == [(0, 0, 2, "COMPLETED"), (1, 1, 1, "FAILED")]
    rows, _ = recent_jobs(cfg, JobFilter(), limit=200, now=NOW)
    assert [(r["restart"], r["state"]) for r in rows if r["job_id"] == "1005"] == [(1, "FAILED")]


def test_one_writer_and_read_only_readers(cfg):
    update(cfg, now=NOW)
    path = cfg.job_index_path
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    with db.writer_lock(path):
        with pytest.raises(JobIndexError, match="another `efajob index` is writing"):
            update(cfg, now=NOW)
    conn = db.open_reader(path)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        conn.execute("DELETE FROM jobs")
    os.chmod(path, 0o444)  # a reader needs no write access to the file
    assert db.open_reader(path).execute("SELECT COUNT(*) FROM jobs").fetchone() == (JOBS,)


def test_private_records_make_the_index_root_only(cfg):
    update(cfg.replace(private_records=True), now=NOW)
    assert stat.S_IMODE(os.stat(cfg.job_index_path).st_mode) == 0o600
    warned = []
    rows, how = recent_jobs(cfg.replace(private_records=True), JobFilter(), limit=5, now=NOW,
                            euid=4242, warn=warned.append)
    assert how == "scan" and warned == ["private_records: the job index is root's; scanning "
                                        "the store (only the jobs whose records you can read)"]


def test_version_store_and_absence_fall_back_with_a_warning(cfg, tmp_path):
    warned = []
    rows, how = recent_jobs(cfg, JobFilter(), limit=3, now=NOW, warn=warned.append)
    assert how == "scan" and "no job index at" in warned[0] and len(rows) == 3
    rebuild(cfg, now=NOW)
    conn = sqlite3.connect(cfg.job_index_path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    warned.clear()
    assert recent_jobs(cfg, JobFilter(), limit=3, now=NOW, warn=warned.append)[1] == "scan"
    assert f"has version 99, this efajob reads {db.VERSION}: run `efajob index rebuild`" in warned[0]
    with pytest.raises(JobIndexError, match="version 99"):
        update(cfg, now=NOW)
    rebuild(cfg, now=NOW)  # the migration is a rebuild
    assert recent_jobs(cfg, JobFilter(), limit=3, now=NOW)[1] == "index"
    other = cfg.replace(store=str(tmp_path / "other"))
    os.makedirs(other.store)
    warned.clear()
    assert recent_jobs(other, JobFilter(), limit=3, now=NOW, warn=warned.append)[1] == "scan"
    assert "is of the store" in warned[0]
    with pytest.raises(JobIndexError, match="indexes the store"):
        update(other, now=NOW)
    warned.clear()
    recent_jobs(cfg, JobFilter(), limit=3, now=NOW + 3600, warn=warned.append)
    assert warned and "last updated 60 min ago" in warned[0]


def test_rebuild_reports_progress_and_replaces_the_file(cfg):
    update(cfg, now=NOW)
    before = os.stat(cfg.job_index_path).st_ino
    seen = []
    s = rebuild(cfg, now=NOW, progress=lambda done, total: seen.append((done, total)))
    assert s.rows == JOBS and seen[-1] == (JOBS, JOBS)
    assert os.stat(cfg.job_index_path).st_ino != before  # renamed into place
    assert not [n for n in os.listdir(cfg.state_dir) if ".new-" in n]


def test_index_path_may_not_be_in_the_store():
    with pytest.raises(ConfigError, match="'index_path' .* is inside the job store"):
        build_config({"store": "/shared/efajob", "index_path": "/shared/efajob/index.db"},
                     env={}, node="n1")
    cfg = build_config({"store": "/shared/efajob", "state_dir": "/var/lib/x"}, env={}, node="n1")
    assert cfg.job_index_path == "/var/lib/x/jobindex.db"
    with pytest.raises(ConfigError, match="absolute"):
        build_config({"index_path": "index.db"}, env={}, node="n1")


@pytest.mark.parametrize("text, want", [("CD,F", {"COMPLETED", "FAILED"}),
                                        ("to,oom,CA", {"TIMEOUT", "OUT_OF_MEMORY", "CANCELLED"}),
                                        ("running", {"RUNNING"}), ("ED", {"ENDED"}), ("", set())])
def test_states_take_slurm_names_and_abbreviations(text, want):
    assert parse_states(text) == want


def test_unknown_state_and_bad_time_are_usage_errors():
    with pytest.raises(UsageError, match="'DONE' is not a Slurm job state"):
        parse_states("CD,DONE")
    for bad in ("yesterday", "2024-13-01", "now-2fortnights", "10:61"):
        with pytest.raises(UsageError, match="sacct takes it"):
            parse_slurm_time(bad, T0)


def test_slurm_time_forms():
    # conftest pins TZ=UTC; T0 is 2024-05-01 10:00.
    assert parse_slurm_time("2024-05-01", T0) == T0 - 10 * 3600
    assert parse_slurm_time("2024-05-01T10:30", T0) == T0 + 1800
    assert parse_slurm_time("2024-05-01T10:30:15", T0) == T0 + 1815
    assert parse_slurm_time("05/01", T0) == parse_slurm_time("05/01/24", T0) == T0 - 36000
    assert parse_slurm_time("09:15", T0) == T0 - 2700
    assert parse_slurm_time("now", T0) == T0
    assert parse_slurm_time("now-2days", T0) == T0 - 2 * 86400
    assert parse_slurm_time("now-90", T0) == T0 - 90  # seconds by default, as sacct
    assert parse_slurm_time("now+1hours", T0) == T0 + 3600
    assert parse_slurm_time("today", T0) == parse_slurm_time("midnight", T0) == T0 - 36000
    assert parse_slurm_time("noon", T0) == T0 + 7200


def run(*args, env):
    return cli_runner().invoke(main, list(args), env=dict(env, EFAJOB_CONFIG=""))


def test_cli_index_and_jobs(cfg):
    env = {"EFAJOB_STORE": cfg.store, "EFAJOB_STATE_DIR": cfg.state_dir}
    r = run("index", "rebuild", env=env)
    assert r.exit_code == 0 and f"rebuilt {cfg.job_index_path}: {JOBS} job directories" in r.stderr
    r = run("jobs", "-u", "bob,dave", "-p", "gpu", "--state", "CD", "-n", "3", "--format", "json",
            env=env)
    assert r.exit_code == 0 and r.stderr == "", r.output
    rows = json.loads(r.stdout)["jobs"]
    want = [j.job_id for j in (job_spec(i) for i in reversed(range(JOBS)))
            if j.user in ("bob", "dave") and j.partition == "gpu" and j.state == "COMPLETED"]
    assert ids(rows) == want[:3] and {j["user"] for j in rows} == {"bob"}  # dave: gpu-long only
    r = run("jobs", "-s", "F", "-n", "2", "--format", "csv", env=env)
    lines = r.stdout.splitlines()
    assert lines[0].startswith("cluster,job_id,restart,alias,user") and len(lines) == 3
    assert lines[1].split(",")[:2] == ["sim", "1079"]
    r = run("jobs", "-s", "DONE", env=env)
    assert r.exit_code == 2 and "not a Slurm job state" in r.output
    r = run("jobs", "-S", "last week", env=env)
    assert r.exit_code == 2 and "-S 'last week'" in r.output
    r = run("index", "update", env=env)
    assert r.exit_code == 0 and "0 job directories indexed" in r.stderr


# -- job names: from the records, else from Slurm at update time -------------------------------
def _nameless(cfg, i, user="alice"):
    job = replace(job_spec(i), name="", user=user)
    write_job(cfg.store, "sim", _template("sim"), job)
    t = NOW - 300 + i  # the jobs directory's mtime moves with each directory made
    os.utime(os.path.join(cfg.store, "sim", "jobs"), (t, t))
    return job


def _fake_slurm(jobs, cluster="sim", calls=None):
    from efajob.slurm.adapter import JobInfo

    def lookup():
        if calls is not None:
            calls.append(1)
        return [JobInfo(job_id=j, slurm_job_id=j, name=n, user=u) for j, n, u in jobs], cluster
    return lookup


def names_of(cfg):
    conn = db.open_reader(cfg.job_index_path)
    try:
        return dict(conn.execute("SELECT job_id, name FROM jobs"))
    finally:
        conn.close()


def test_records_name_the_rows_and_jobs_filters_by_name(cfg):
    update(cfg, now=NOW)
    rows, how = recent_jobs(cfg, JobFilter(names=frozenset({"finetune"})), limit=500, now=NOW)
    assert how == "index" and ids(rows) == [str(1000 + i) for i in reversed(range(JOBS))
                                            if i % 3 == 1]
    assert {r["name"] for r in rows} == {"finetune"}


def test_update_asks_slurm_once_for_the_names_the_records_lack(cfg):
    calls = []
    update(cfg, now=NOW, names=_fake_slurm([], calls=calls))
    assert calls == []  # every record has a name: Slurm is not asked
    _nameless(cfg, JOBS), _nameless(cfg, JOBS + 1), _nameless(cfg, JOBS + 2, user="bob")
    slurm = [("1080", "bert", "alice"), ("1082", "gpt", "mallory"),  # 1082: bob's, id reused
             ("1081", "t5", "alice")]
    s = update(cfg, now=NOW, names=_fake_slurm(slurm, calls=calls))
    assert calls == [1] and s.named == 2 and s.slurm_error is None
    names = names_of(cfg)
    assert (names["1080"], names["1081"], names["1082"], names["1000"]) == ("bert", "t5", None,
                                                                           "pretrain")
    # Another cluster's Slurm names nothing here.
    _nameless(cfg, JOBS + 3)
    assert update(cfg, now=NOW, names=_fake_slurm([("1083", "x", "alice")], "other")).named == 0
    assert "1083" in names_of(cfg) and names_of(cfg)["1083"] is None
    # A rebuild keeps what Slurm said (slurmctld has forgotten the jobs by then).
    s = rebuild(cfg, now=NOW, names=_fake_slurm([]))
    assert s.kept_names == 2 and names_of(cfg)["1080"] == "bert" and names_of(cfg)["1083"] is None


def test_slurm_unreachable_is_reported_not_raised(cfg):
    from efajob.errors import SlurmError

    def down():
        raise SlurmError("scontrol not found (is Slurm installed here?)")
    _nameless(cfg, JOBS)
    s = update(cfg, now=NOW, names=down)
    assert s.named == 0 and s.slurm_error == "scontrol not found (is Slurm installed here?)"
    assert names_of(cfg)["1080"] is None


def test_a_version_1_index_is_migrated_by_the_writer(cfg):
    v1 = (db._SCHEMA.replace("    peak_gbps_per_node REAL,   -- version 2: after the others, "
                             "where a migration adds them\n", "")
          .replace("    bytes INTEGER,             -- version 2: the size of the record files "
                   "behind the row\n", "")
          .replace("CREATE INDEX jobs_name ON jobs (name, user, landed DESC);\n", "")
          .replace(db._SCHEMA[db._SCHEMA.index("-- One row per node per job run"):
                            db._SCHEMA.index("PRAGMA user_version")], "")
          .replace(f"user_version = {db.VERSION}", "user_version = 1"))
    assert "node_jobs" not in v1 and "user_version = 1" in v1
    assert "peak_gbps_per_node" not in v1 and "jobs_name" not in v1 and "    bytes INTEGER" not in v1
    os.makedirs(cfg.state_dir)
    conn = sqlite3.connect(cfg.job_index_path)
    conn.executescript(v1)
    conn.close()
    warned = []
    assert recent_jobs(cfg, JobFilter(), limit=3, now=NOW, warn=warned.append)[1] == "scan"
    assert (f"has version 1, this efajob reads {db.VERSION}: `efajob index update` migrates it"
            in warned[0])
    update(cfg, now=NOW)  # 1 -> 2 -> 3 -> 4: the name index, node_jobs, then acct
    conn = db.open_reader(cfg.job_index_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == db.VERSION == 4
    assert conn.execute("SELECT COUNT(*) FROM node_jobs").fetchone()[0] > 0
    assert conn.execute("SELECT COUNT(*) FROM acct").fetchone()[0] == 0
    plan = conn.execute("EXPLAIN QUERY PLAN SELECT job_id FROM jobs WHERE account = 'bio' "
                        "ORDER BY landed DESC").fetchall()
    assert "jobs_account" in str(plan)
    conn.close()
    rows, how = recent_jobs(cfg, JobFilter(states=frozenset({"COMPLETED"})), limit=3, now=NOW)
    assert how == "index" and rows[0]["peak_gbps_per_node"] == rows[0]["avg_gbps_per_node"] > 0
    conn = db.open_reader(cfg.job_index_path)
    plan = conn.execute("EXPLAIN QUERY PLAN SELECT job_id FROM jobs WHERE name = 'eval' AND "
                        "user = 'bob' ORDER BY landed DESC").fetchall()
    conn.close()
    assert "jobs_name" in str(plan)


def test_slurm_gives_the_states_the_records_cannot_tell(cfg):
    """A cancelled or timed-out job's epilog sees 0:0 or a signal: the records say COMPLETED
    or FAILED. The index takes Slurm's CANCELLED/TIMEOUT/... when it asks Slurm for names, and
    keeps the records' COMPLETED/FAILED otherwise."""
    from efajob.slurm.adapter import JobInfo

    update(cfg, now=NOW)
    _nameless(cfg, JOBS), _nameless(cfg, JOBS + 1), _nameless(cfg, JOBS + 2)
    said = [JobInfo(job_id="1080", slurm_job_id="1080", name="a", user="alice", state="CANCELLED"),
            JobInfo(job_id="1081", slurm_job_id="1081", name="b", user="alice", state="COMPLETED"),
            JobInfo(job_id="1082", slurm_job_id="1082", user="alice", state="TIMEOUT")]
    s = update(cfg, now=NOW, names=lambda: (said, "sim"))
    assert s.restated == 2 and s.named == 2
    conn = db.open_reader(cfg.job_index_path)
    states = dict(conn.execute("SELECT job_id, state FROM jobs WHERE job_id IN "
                               "('1080', '1081', '1082')"))
    conn.close()
    assert states["1080"] == "CANCELLED" and states["1082"] == "TIMEOUT"
    assert states["1081"] in ("COMPLETED", "FAILED")  # the records' own
    rows, how = recent_jobs(cfg, JobFilter(states=parse_states("CA,TO")), limit=10, now=NOW)
    assert how == "index" and sorted(ids(rows)) == ["1080", "1082"]
