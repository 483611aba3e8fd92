"""`efajob compare` and the report's history section (report/compare.py, index/history.py):
a run beside the previous runs of its name and user, on a simulated store with exact bytes."""
from __future__ import annotations

import json
import os

import pytest
from conftest import cli_runner

from efajob.cli.main import main
from efajob.config import Config
from efajob.index.update import update
from efajob.report.compare import MIN_HISTORY, SLOW_RATIO, build_comparison, bytes_per_node_second
from efajob.sim.jobstore import T0, _template, build_store, job_records, job_spec

JOBS = 48
NOW = T0 + 60.0 * 70
# Jobs i and i + 12 share a name (i % 3) and a user (i % 4): job 1047 (eval, dave) has the
# previous runs 1035, 1023 and 1011; every simulated job moves 2 GB per node in 45 s.
RATE = 2e9 / 45


def row(job_id, start, tx=2e9 * 2, nodes=2, secs=45.0, name="eval", user="dave", **kw):
    return dict(cluster="sim", job_id=job_id, restart=0, name=name, user=user, start=start,
                tx_bytes=tx, num_nodes=nodes, elapsed_s=secs, verdict="healthy", findings=[],
                **kw)


def test_bytes_per_node_second():
    assert bytes_per_node_second(row("1", 0)) == pytest.approx(RATE)
    # The same bytes on twice the nodes in half the time: the same rate.
    assert bytes_per_node_second(row("1", 0, nodes=4, secs=22.5)) == pytest.approx(RATE)
    for bad in (dict(tx=None), dict(nodes=None), dict(secs=0.0), dict(nodes=0)):
        assert bytes_per_node_second(row("1", 0, **bad)) is None


@pytest.mark.parametrize("previous, factor, slower, ratio", [
    (3, 0.49, True, 0.49),
    (3, SLOW_RATIO, False, 0.5),   # at the threshold: not "much slower"
    (MIN_HISTORY - 1, 0.1, False, 0.1),  # too few runs to judge, however slow
    (5, 1.0, False, 1.0),
    (4, 3.0, False, 3.0),
])
def test_slower_only_under_the_ratio_with_enough_history(previous, factor, slower, ratio):
    prev = [row(str(10 - k), T0 - 100 * k) for k in range(1, previous + 1)]
    c = build_comparison(row("10", T0, tx=2e9 * 2 * factor), prev)
    assert (c.slower, c.ratio, c.rated_runs) == (slower, ratio, previous)
    assert c.median_bytes_per_node_s == pytest.approx(RATE)
    if previous < MIN_HISTORY:
        assert "too few to judge (at least 3 needed)" in c.summary
    elif slower:
        assert c.summary == ("21.8 MB/node-s: 0.49x the median of 3 previous runs "
                             "(44.4 MB/node-s): much slower than its history (under 0.5x)")


def test_median_of_an_even_count_and_unrated_runs_left_out():
    prev = [row("3", 3, tx=4e9), row("2", 2, tx=8e9), row("1", 1, tx=None), row("0", 0, tx=16e9),
            row("9", -1, tx=12e9)]
    c = build_comparison(row("4", 4, tx=4e9), prev)
    assert c.rated_runs == 4 and c.median_bytes_per_node_s == pytest.approx(10e9 / 90)
    assert c.ratio == pytest.approx(0.4) and c.slower


def test_no_name_nothing_to_compare():
    c = build_comparison(row("4", 4, name=None), [row("3", 3)])
    assert not c.slower and c.ratio is None and c.summary.startswith("no job name known")


# -- on a simulated store --------------------------------------------------------------------
@pytest.fixture
def cfg(tmp_path):
    store = str(tmp_path / "store")
    build_store(store, jobs=JOBS, now=NOW)
    return Config(store=store, state_dir=str(tmp_path / "state"))


def add_job(cfg, i, factor):
    """Job i with `factor` times the simulated bytes on every device counter."""
    job = job_spec(i)
    d = os.path.join(cfg.store, "sim", "jobs", job.job_id)
    os.makedirs(d)
    for rec in job_records(_template("sim"), job):
        rec = json.loads(json.dumps(rec))
        for dev in rec["devices"]:
            dev["counters"] = {k: int(v * factor) if k.endswith("bytes") else v
                               for k, v in dev["counters"].items()}
        rec["totals"] = {k: int(v * factor) if k.endswith("bytes") else v
                         for k, v in rec["totals"].items()}
        rec["rates"] = {k: v * factor if k.endswith("gbps") else v
                        for k, v in rec["rates"].items()}
        with open(os.path.join(d, rec["host"] + ".json"), "w") as f:
            json.dump(rec, f)
    os.utime(d, (job.landed, job.landed))
    os.utime(os.path.dirname(d), (job.landed, job.landed))
    return job


def run(cfg, *args):
    env = {"EFAJOB_CONFIG": "", "EFAJOB_STORE": cfg.store, "EFAJOB_STATE_DIR": cfg.state_dir}
    return cli_runner().invoke(main, list(args), env=env)


@pytest.mark.parametrize("indexed", [True, False])
def test_compare_a_slow_run_with_its_history(cfg, indexed):
    add_job(cfg, 59, 0.4)  # eval, dave: after 1047, 1035, 1023, 1011
    if indexed:
        update(cfg, now=NOW)
    r = run(cfg, "compare", "1059", "--no-slurm", "--format", "json")
    assert r.exit_code == 0, r.output
    c = json.loads(r.stdout)
    assert [p["job_id"] for p in c["previous"]] == ["1047", "1035", "1023", "1011"]
    assert c["ratio"] == 0.4 and c["much_slower"] is True and c["rated_runs"] == 4
    assert c["job"]["bytes_per_node_s"] == pytest.approx(RATE * 0.4, abs=1e-3)
    assert c["previous"][0]["peak_gbps_per_node"] == pytest.approx(RATE * 8 / 1e9, abs=1e-3)
    assert ("scanning the store" in r.stderr) is not indexed
    text = run(cfg, "compare", "1059", "--no-slurm").stdout
    assert text.splitlines()[0] == ("Job 1059 (eval, user dave) beside its previous runs of "
                                    "the same name and user")
    assert "1059 *" in text and "much slower than its history (under 0.5x)" in " ".join(text.split())
    assert run(cfg, "compare", "1059", "--no-slurm", "-n", "2", "--format",
               "json").stdout.count('"job_id"') == 3


def test_a_run_in_line_with_its_history_and_one_without(cfg):
    add_job(cfg, 59, 0.9)
    update(cfg, now=NOW)
    c = json.loads(run(cfg, "compare", "1059", "--no-slurm", "--format", "json").stdout)
    assert c["much_slower"] is False and "in line with its history" in c["summary"]
    c = json.loads(run(cfg, "compare", "1011", "--no-slurm", "--format", "json").stdout)
    assert c["previous"] == [] and "0 previous runs with a rate: too few" in c["summary"]
    assert run(cfg, "compare", "9999", "--no-slurm").exit_code == 5


def test_report_has_a_history_section_from_the_index_only(cfg):
    add_job(cfg, 59, 0.4)
    r = run(cfg, "report", "1059", "--no-slurm")
    assert r.exit_code == 0 and "History" not in r.stdout  # no index: no scan either
    update(cfg, now=NOW)
    out = run(cfg, "report", "1059", "--no-slurm").stdout
    section = out[out.index("\nHistory (same name and user"):]
    assert "1047" in section and "much slower than its history" in " ".join(section.split())
    assert "History" not in run(cfg, "report", "1059", "--no-slurm", "--format", "json").stdout
