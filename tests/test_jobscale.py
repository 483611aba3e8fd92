"""`efajob jobs` and `efajob report` cost what they show (issue 16): node status files are
read once per command, and a user filter does not build a report of every other job. Counted,
never timed: the simulated store (efajob/sim/jobstore.py) is the one bench/jobs.py times."""
from __future__ import annotations

import collections

import pytest

import efajob.store.reader as reader
from efajob.config import Config
from efajob.report.assemble import build_job_report, list_jobs
from efajob.sim.jobstore import T0, USERS, build_store

JOBS, NODES = 60, 24
NOW = T0 + 60.0 * JOBS + 600.0


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = str(tmp_path_factory.mktemp("scale") / "store")
    build_store(s, jobs=JOBS, status_nodes=NODES, now=NOW)
    return s


@pytest.fixture
def reads(monkeypatch):
    """Paths read_regular opened, by kind (node status file or record)."""
    seen: collections.Counter = collections.Counter()
    real = reader.read_regular

    def counting(path, limit):
        seen["status" if "/nodes/" in path else "record"] += 1
        return real(path, limit)

    monkeypatch.setattr(reader, "read_regular", counting)
    return seen


def test_jobs_reads_each_status_file_once(store, reads):
    rows = list_jobs(Config(store=store), limit=20, now=NOW)
    assert len(rows) == 20
    # 24 nodes, 8 a job: 3 running jobs first, then the newest finished ones.
    assert [r["state"] for r in rows[:3]] == ["RUNNING"] * 3
    assert [r["job_id"] for r in rows[3:6]] == ["1059", "1058", "1057"]
    assert reads["status"] == NODES
    assert reads["record"] == 2 * 17  # two nodes a job, 17 finished jobs shown


def test_user_filter_reads_one_record_of_other_users_jobs(store, reads):
    rows = list_jobs(Config(store=store), user="bob", limit=5, now=NOW)
    assert {r["user"] for r in rows} == {"bob"} and len(rows) == 5
    assert reads["status"] == NODES
    # bob has one running job (900001) and every 4th finished one (1057, 1053, ...): 4 shown,
    # reached through 15 job directories; the 11 others cost one record each, bob's their
    # two records and the one peeked at first.
    finished = [r for r in rows if r["state"] != "RUNNING"]
    assert len(finished) == 4 and USERS[1] == "bob"
    assert reads["record"] == 3 * 4 + 11


def test_report_parses_only_the_status_files_naming_the_job(store, monkeypatch):
    parsed = []
    real = reader.parse_node_status
    monkeypatch.setattr(reader, "parse_node_status",
                        lambda d, path="": parsed.append(path) or real(d, path))
    r = build_job_report(Config(store=store), "1010", use_slurm=False, now=NOW)
    assert r.meta.job_id == "1010" and parsed == []
    r = build_job_report(Config(store=store), "900001", use_slurm=False, now=NOW)
    assert r.running and len(parsed) == 8 and len(r.nodes) == 8


def test_finished_states_on_the_index_read_no_status_file(store, reads, tmp_path):
    from efajob.index.listing import recent_jobs
    from efajob.index.update import update
    from efajob.report.jobfilter import JobFilter

    cfg = Config(store=store, state_dir=str(tmp_path / "state"))
    update(cfg, now=NOW)
    reads.clear()
    rows, how = recent_jobs(cfg, JobFilter(states=frozenset({"COMPLETED"})), limit=5, now=NOW)
    assert how == "index" and len(rows) == 5 and dict(reads) == {}
    rows, how = recent_jobs(cfg, JobFilter(), limit=5, now=NOW)
    assert how == "index" and dict(reads) == {"status": NODES}  # and not one record


def test_jobs_parses_the_windows_of_the_nodes_it_shows_only(store, monkeypatch):
    """A status file's `recent` window (~99% of its bytes) is parsed for the nodes of the
    running jobs listed, not for every node read (store/reader.py load_status)."""
    parsed = []
    real = reader._Window.parse
    monkeypatch.setattr(reader._Window, "parse", lambda w: parsed.append(1) or real(w))
    rows = list_jobs(Config(store=store), limit=2, now=NOW)
    assert [r["state"] for r in rows] == ["RUNNING"] * 2
    assert len(parsed) == 2 * 8  # two jobs of 8 nodes, of the 24 status files read
    parsed.clear()
    list_jobs(Config(store=store), state="COMPLETED", limit=5, now=NOW)
    assert parsed == []
