"""The store of issue 16's targets, built by a fixture: 100,000 finished jobs and 2,000 live
node status files (efajob/sim/jobstore.py, the store bench/jobs.py times). Counted, never
timed: with the job index, `efajob jobs -n 20` reads no record and each status file once
(parsing the windows of the shown jobs' nodes only), the same with `-u`; `report` of one job
reads its own records; an index update with nothing new looks at no job directory. About a
minute to build (writing the store, then the index) on two busy cores."""
from __future__ import annotations

import collections

import pytest

import efajob.store.reader as reader
from efajob.config import Config
from efajob.index.listing import recent_jobs
from efajob.index.update import update
from efajob.report.assemble import build_job_report
from efajob.report.jobfilter import JobFilter
from efajob.sim.jobstore import T0, build_store

JOBS, NODES = 100_000, 2_000
NOW = T0 + 60.0 * JOBS + 600.0


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    root = tmp_path_factory.mktemp("store100k")
    cfg = Config(store=str(root / "store"), state_dir=str(root / "state"))
    build_store(cfg.store, jobs=JOBS, nodes_per_job=1, status_nodes=NODES, now=NOW)
    s = update(cfg, now=NOW)
    assert s.rows == JOBS and s.dirs_seen == JOBS
    return cfg


@pytest.fixture
def reads(monkeypatch):
    seen: collections.Counter = collections.Counter()
    real_read, real_parse = reader.read_regular, reader._Window.parse

    def counting(path, limit):
        seen["status" if "/nodes/" in path else "record"] += 1
        return real_read(path, limit)

    def parse(w):
        seen["window"] += 1
        return real_parse(w)

    monkeypatch.setattr(reader, "read_regular", counting)
    monkeypatch.setattr(reader._Window, "parse", parse)
    return seen


@pytest.mark.parametrize("flt", [JobFilter(), JobFilter(users=frozenset({"bob"}))],
                         ids=["all", "-u bob"])
def test_jobs_reads_no_record_and_each_status_file_once(big, reads, flt):
    rows, how = recent_jobs(big, flt, limit=20, now=NOW)
    assert how == "index" and len(rows) == 20
    assert reads["record"] == 0 and reads["status"] == NODES
    running = [r for r in rows if r["state"] == "RUNNING"]
    assert running and reads["window"] == 8 * len(running)  # 8 nodes a running job
    if flt.users:
        assert {r["user"] for r in rows} == {"bob"}


def test_finished_jobs_only_read_nothing_but_the_index(big, reads):
    rows, _ = recent_jobs(big, JobFilter(states=frozenset({"COMPLETED"})), limit=20, now=NOW)
    assert len(rows) == 20 and dict(reads) == {}  # no status file can hold a finished job


def test_report_of_one_job_reads_its_records(big, reads):
    r = build_job_report(big, "1500", use_slurm=False, now=NOW)
    assert r.meta.job_id == "1500" and reads["record"] == 1
    assert reads["window"] == 0


def test_update_with_nothing_new_looks_at_no_job_directory(big):
    s = update(big, now=NOW + 60)
    assert s.dirs_indexed == 0 and s.rows == 0 and s.dirs_seen == 0
