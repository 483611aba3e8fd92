"""Retention (efajob/index/prune.py, `efajob index prune`): the plan table-tested, then real
removals on a simulated store with the index kept in step. Clocks injected; nothing timed."""
from __future__ import annotations

import os
import sqlite3

import pytest
from conftest import cli_runner

from efajob.cli.main import main
from efajob.config import Config, StoreRetention, build_config
from efajob.errors import ConfigError, JobIndexError, UsageError
from efajob.index import db
from efajob.index.listing import recent_jobs
from efajob.index.prune import GB, JobDir, bounds, plan_prune, prune, read_dirs
from efajob.index.update import SETTLE, update
from efajob.report.jobfilter import JobFilter
from efajob.sim.jobstore import T0, build_store

DAY = 86400.0


def d(job_id, age_days, nbytes=100):
    return JobDir("c", job_id, 100 * DAY - age_days * DAY, nbytes)


NOW = 100 * DAY
DIRS = [d("1", 40), d("2", 30), d("3", 20), d("4", 10), d("5", 0.5)]  # 5: not settled


@pytest.mark.parametrize("age, size, gone", [
    (25, 0, ["1", "2"]),                # the age bound alone
    (0, 250, ["1", "2", "3"]),          # the size bound: oldest first until 200 <= 250
    (35, 250, ["1", "2", "3"]),         # both
    (0, 50, ["1", "2", "3", "4"]),      # 5 landed within a day: kept, even over the bound
    (0.1, 0, ["1", "2", "3", "4"]),     # likewise under a tiny age bound
    (50, 1000, []),
])
def test_plan(age, size, gone):
    plan = plan_prune(DIRS, now=NOW, max_age_s=age * DAY, max_bytes=size, settle_s=SETTLE)
    assert [x.job_id for x in plan.remove] == gone
    assert (plan.kept, plan.kept_bytes, plan.removed_bytes) == (5 - len(gone), 100 * (5 - len(gone)),
                                                                100 * len(gone))


def test_bounds_from_options_else_config():
    cfg = Config(store_retention=StoreRetention(max_age_days=90, max_gb=0))
    assert bounds(cfg, None, None) == (90 * DAY, 0)
    assert bounds(cfg, 0, 2.5) == (0, 2.5 * GB)
    with pytest.raises(UsageError, match="no retention bound"):
        bounds(Config(), None, None)


def test_config_section_is_validated():
    cfg = build_config({"store_retention": {"max_age_days": 180, "max_gb": 500}}, env={}, node="n")
    assert cfg.store_retention == StoreRetention(max_age_days=180.0, max_gb=500.0)
    with pytest.raises(ConfigError, match="unknown config key store_retention.max_days"):
        build_config({"store_retention": {"max_days": 1}}, env={}, node="n")
    with pytest.raises(ConfigError, match="'store_retention.max_gb' must be between 0 and"):
        build_config({"store_retention": {"max_gb": -1}}, env={}, node="n")
    with pytest.raises(ConfigError, match="store_retention.max_age_days"):
        build_config({"store_retention": {"max_age_days": "90d"}}, env={}, node="n")


# -- on a simulated store ----------------------------------------------------------------------
JOBS = 30
LATER = T0 + 2 * DAY  # job i landed at T0 + 60 i + 50: all settled by then


@pytest.fixture
def cfg(tmp_path):
    store = str(tmp_path / "store")
    build_store(store, jobs=JOBS, now=LATER)
    return Config(store=store, state_dir=str(tmp_path / "state"))


def dirs_in(cfg):
    return sorted(os.listdir(os.path.join(cfg.store, "sim", "jobs")))


def sizes(cfg):
    root = os.path.join(cfg.store, "sim", "jobs")
    return {j: sum(os.path.getsize(os.path.join(root, j, f)) for f in os.listdir(os.path.join(root, j)))
            for j in os.listdir(root)}


def test_prune_needs_the_index(cfg):
    with pytest.raises(JobIndexError, match="no job index"):
        prune(cfg, max_age_s=DAY, max_bytes=0, apply=True, now=LATER)
    assert len(dirs_in(cfg)) == JOBS


def test_dry_run_then_apply_by_age(cfg):
    update(cfg, now=LATER)
    age = LATER - (T0 + 900)  # jobs 0..14 landed before T0 + 900
    plan = prune(cfg, max_age_s=age, max_bytes=0, apply=False, now=LATER)
    assert [x.job_id for x in plan.remove] == [str(1000 + i) for i in range(15)]
    assert len(dirs_in(cfg)) == JOBS  # a dry run removes nothing
    seen = []
    prune(cfg, max_age_s=age, max_bytes=0, apply=True, now=LATER, on_removed=seen.append)
    assert dirs_in(cfg) == [str(1000 + i) for i in range(15, JOBS)] and len(seen) == 15
    # The index is in step: it lists what the scan lists, without another update.
    indexed, _ = recent_jobs(cfg, JobFilter(), limit=100, now=LATER)
    scanned, _ = recent_jobs(cfg, JobFilter(), limit=100, now=LATER, use_index=False)
    assert [r["job_id"] for r in indexed] == [r["job_id"] for r in scanned] == [
        str(1000 + i) for i in reversed(range(15, JOBS))]
    assert update(cfg, now=LATER).removed == 0


def test_size_bound_removes_the_oldest_until_the_records_fit(cfg):
    update(cfg, now=LATER)
    size = sizes(cfg)
    total = sum(size.values())
    limit = total - sum(size[str(1000 + i)] for i in range(10))  # room for the newest 20
    plan = prune(cfg, max_age_s=0, max_bytes=limit, apply=True, now=LATER)
    assert dirs_in(cfg) == [str(1000 + i) for i in range(10, JOBS)]
    assert plan.removed_bytes == sum(size[str(1000 + i)] for i in range(10))
    assert plan.kept_bytes == total - plan.removed_bytes <= limit


def test_rows_without_a_size_are_weighed_from_the_files(cfg):
    update(cfg, now=LATER)
    conn = sqlite3.connect(cfg.job_index_path)
    conn.execute("UPDATE jobs SET bytes = NULL WHERE job_id = '1003'")  # as a v1 row migrated
    conn.commit()
    conn.close()
    conn = db.open_reader(cfg.job_index_path)
    got = {x.job_id: x.nbytes for x in read_dirs(conn, cfg.store)}
    conn.close()
    assert got == sizes(cfg)


def test_a_young_directory_is_never_removed(cfg):
    update(cfg, now=LATER)
    soon = T0 + 60 * 20 + 50 + SETTLE  # job i landed at T0 + 60 i + 50: 0..19 settled
    prune(cfg, max_age_s=1.0, max_bytes=0, apply=True, now=soon)
    assert dirs_in(cfg) == [str(1000 + i) for i in range(20, JOBS)]


def run(cfg, *args):
    env = {"EFAJOB_CONFIG": "", "EFAJOB_STORE": cfg.store, "EFAJOB_STATE_DIR": cfg.state_dir}
    return cli_runner().invoke(main, ["index", "prune", *args], env=env)


def test_cli(cfg):
    r = run(cfg, "--max-age-days", "1")
    assert r.exit_code == 4 and "no job index" in r.stderr
    update(cfg)
    r = run(cfg)
    assert r.exit_code == 2 and "no retention bound" in r.stderr
    r = run(cfg, "--max-age-days", "1", "-v")  # the simulated jobs landed in 2024
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[-1].startswith(f"would remove (dry run: --apply removes) {JOBS} "
                                                "job directories (")
    assert r.stdout.count("would remove sim/") == JOBS and len(dirs_in(cfg)) == JOBS
    r = run(cfg, "--max-age-days", "1", "--apply")
    assert r.exit_code == 0 and r.stdout.startswith(f"removed {JOBS} job directories")
    assert dirs_in(cfg) == [] and recent_jobs(cfg, JobFilter(), limit=5)[0] == []
