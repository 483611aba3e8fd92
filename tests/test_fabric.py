"""`efajob nodes` (efajob/fabric/, docs/fabric.md): the ranking of nodes across their jobs, on a
simulated fleet with planted bad nodes; the index's node_jobs table against the scan; the
daemon baseline; the maths. Counted, never timed."""
from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil

import pytest
from conftest import cli_runner

from efajob.cli.main import main
from efajob.config import Config
from efajob.fabric.betainc import betainc
from efajob.fabric.gather import gather, parse_baseline, read_baselines
from efajob.fabric.score import (CATEGORIES, FLOOR, SUSPECT, Baseline, NodeJob, confidence,
                                 rank_history, rank_nodes)
from efajob.index import db
from efajob.index.update import rebuild, update
from efajob.sim.fleet import Fleet, build_fleet
from efajob.sim.jobstore import T0

BAD = {"n5": ("straggler", 0.9), "n17": ("idle", 0.3)}  # n17: intermittent
UNLUCKY = "n99"  # one job, a straggler in it
CODE = {"straggler": "straggler", "idle": "device_idle"}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    root = tmp_path_factory.mktemp("fleet")
    cfg = Config(store=str(root / "store"), state_dir=str(root / "state"))
    jobs = build_fleet(cfg.store, jobs=200, nodes=32, nodes_per_job=8, bad=BAD, noise=0.02)
    jobs.append(Fleet(cfg.store).write("5000", jobs[-1].end + 100,
                                       {"n3": "ok", UNLUCKY: "straggler", "n4": "ok"}))
    rebuild(cfg, now=jobs[-1].end + 600)
    return cfg, jobs


def _rank(cfg, **kw):
    history, bases, source = gather(cfg, since=None, cluster=None, now=T0, **kw)
    return rank_history(history, bases), history, source


def test_planted_bad_nodes_rank_first_with_their_evidence(fleet):
    cfg, jobs = fleet
    r, history, source = _rank(cfg)
    assert source == "index" and history.runs == 200 * 8 + 3
    assert [n.node for n in r.nodes[:2]] == ["n5", "n17"]
    assert {n.node for n in r.suspects} == {"n5", "n17"}  # no healthy node among them
    assert len({n.node for n in r.nodes}) == 33
    for host, (variant, _) in BAD.items():
        node = next(n for n in r.nodes if n.node == host)
        truth = [j.job_id for j in sorted(jobs, key=lambda j: -j.end) if j.kinds.get(host) == variant]
        cat = node.categories[CODE[variant]]
        assert cat.evidence == truth[:len(cat.evidence)] and cat.jobs_with == len(truth)
        assert cat.jobs == sum(host in j.kinds for j in jobs)
        assert cat.confidence >= SUSPECT and node.score > max(
            n.score for n in r.nodes if n.node not in BAD)
    # the intermittent node was marked in under half its jobs and is still caught
    n17 = next(n for n in r.nodes if n.node == "n17").categories["device_idle"]
    assert n17.jobs_with < n17.jobs / 2


def test_one_unlucky_job_is_not_a_suspect(fleet):
    cfg, _ = fleet
    r, _, _ = _rank(cfg)
    n99 = next(n for n in r.nodes if n.node == UNLUCKY)
    assert n99.jobs == 1 and n99.categories["straggler"].jobs_with == 1
    assert not n99.suspect and n99.rank > 2


def test_scan_gives_the_index_rows(fleet):
    cfg, _ = fleet
    by_index = _rank(cfg)
    by_scan = _rank(cfg, use_index=False)
    assert by_scan[2] == "scan" and by_scan[1].totals == by_index[1].totals
    assert set(by_scan[1].marked) == set(by_index[1].marked) and by_index[1].marked
    assert [n.to_dict() for n in by_scan[0].nodes] == [n.to_dict() for n in by_index[0].nodes]


def test_index_update_keeps_node_jobs_in_step(tmp_path):
    cfg = Config(store=str(tmp_path / "store"), state_dir=str(tmp_path / "state"))
    jobs = build_fleet(cfg.store, jobs=6, nodes=4, nodes_per_job=2, bad={"n1": ("errors", 1.0)})
    now = jobs[-1].end + 60
    update(cfg, now=now)
    conn = db.open_reader(cfg.job_index_path)
    rows = db.query_node_jobs(conn)
    assert len(rows) == 12 and db.VERSION == 4
    assert {r[1] for r in rows if "wr_errors" in r[6].split()} == {"n1"}
    assert len(db.query_node_jobs(conn, since=jobs[3].end)) == 6
    conn.close()
    shutil.rmtree(os.path.join(cfg.store, "sim", "jobs", jobs[0].job_id))
    os.utime(os.path.join(cfg.store, "sim", "jobs"), (now - 10, now - 10))
    update(cfg, now=now)
    conn = db.open_reader(cfg.job_index_path)
    assert {r[2] for r in db.query_node_jobs(conn)} == {j.job_id for j in jobs[1:]}
    conn.close()


def test_since_keeps_recent_runs_only(fleet):
    cfg, jobs = fleet
    cut = jobs[150].end
    for use_index in (True, False):
        history, _, _ = gather(cfg, since=cut, cluster=None, now=T0, use_index=use_index)
        recent = [j for j in jobs if j.end >= cut]
        assert history.runs == sum(len(j.kinds) for j in recent)
        assert {r.job_id for r in history.marked} == {
            j.job_id for j in recent if set(j.kinds.values()) != {"ok"}}


# -- the maths --------------------------------------------------------------------------------
@pytest.mark.parametrize("a,b,x,want", [
    (1, 1, 0.3, 0.3), (2, 1, 0.5, 0.25), (1, 3, 0.2, 1 - 0.8 ** 3), (0.5, 0.5, 0.5, 0.5),
    (5, 5, 0.5, 0.5), (2, 3, 0.4, 0.5248), (300, 700, 0.3, 0.503671182860768), (0.1, 9.9, 0.0, 0.0)])
def test_betainc_known_values(a, b, x, want):
    # integer shapes: I_x(a, b) = P(Binomial(a + b - 1, x) >= a), computed exactly beforehand
    assert betainc(a, b, x) == pytest.approx(want, abs=2e-4)


def test_betainc_symmetry_and_monotony():
    for a, b in ((0.2, 9.8), (3.0, 40.0), (41.0, 12.0)):
        xs = [i / 50 for i in range(51)]
        vals = [betainc(a, b, x) for x in xs]
        assert all(v2 >= v1 for v1, v2 in zip(vals, vals[1:]))
        for x in xs[1:-1]:
            assert betainc(a, b, x) == pytest.approx(1 - betainc(b, a, 1 - x), abs=1e-9)


def test_one_mark_never_makes_a_suspect():
    for rate in (0.0, 0.001, FLOOR, 0.03, 0.1, 0.4):
        for n in (1, 2, 3, 5, 10, 50, 500):
            assert confidence(1, n, rate) < SUSPECT, (rate, n)
    assert confidence(0, 10, 0.1) == 0.0


def test_repeated_marks_do():
    assert confidence(2, 2, 0.005) >= SUSPECT
    assert confidence(15, 50, 0.05) >= SUSPECT
    assert confidence(3, 50, 0.05) < 0.5  # a little above the cluster is not a suspect
    assert confidence(8, 50, 0.1) < 0.5


def test_straggler_counts_multi_node_jobs_only():
    rows = [NodeJob("c", "a", str(i), 0, 1.0, 1 if i < 5 else 2,
                    ("straggler_node", "rx_drops") if i == 7 else ()) for i in range(10)]
    r = rank_nodes(rows)
    cats = r.nodes[0].categories
    assert (cats["straggler"].jobs, cats["rx_drops"].jobs) == (5, 10)
    assert set(CATEGORIES) >= set(cats)
    # a job restarted shows its restart in the evidence
    r2 = rank_nodes([NodeJob("c", "a", "9", 2, 1.0, 2, ("rx_drops",))])
    assert r2.nodes[0].categories["rx_drops"].evidence == ["9 (restart 2)"]


# -- the daemon's baseline ----------------------------------------------------------------------
def _status(node, *, devices=4, expected=4, errors=None, t=T0):
    return {"schema": "efajob/node-status", "version": 1, "cluster": "sim", "node": node,
            "time": t, "expected_devices": expected,
            "devices": [{"name": f"d{k}", "errors": (errors or {}) if k == 0 else {},
                         "port_counters": 20} for k in range(devices)], "error_rates": {},
            "recent": {"devices": {f"d{k}": {"counters": {}} for k in range(devices)}}}


@pytest.mark.parametrize("doc,want", [
    (_status("a"), Baseline("sim", "a", 4, 4, ())),
    (_status("a", devices=3), Baseline("sim", "a", 3, 4, ())),
    (_status("a", errors={"cmds_err": 0.5, "rdma_read_wr_err": 0}),
     Baseline("sim", "a", 4, 4, ("cmds_err",))),
    (_status("a", expected=None), Baseline("sim", "a", 4, None, ())),
    (_status("a", t=T0 - 3600), None),  # stale: its daemon stopped
    (dict(_status("a"), schema="other"), None), ([], None), (dict(_status("a"), node=7), None)])
def test_parse_baseline(doc, want):
    assert parse_baseline(doc, T0, 60.0) == want


def test_a_device_missing_now_makes_a_suspect(tmp_path):
    store = tmp_path / "store"
    (store / "sim" / "nodes").mkdir(parents=True)
    for name, doc in (("a", _status("a", devices=3)), ("b", _status("b")),
                      ("c", _status("c", errors={"no_completion_cmds": 2.0}))):
        (store / "sim" / "nodes" / f"{name}.json").write_text(
            json.dumps(doc, separators=(",", ":"), sort_keys=True))
    (store / "sim" / "nodes" / "junk.json").write_text("{not json")
    bases = read_baselines(str(store), None, T0, 60.0)
    assert set(bases) == {("sim", "a"), ("sim", "b"), ("sim", "c")}
    r = rank_nodes([NodeJob("sim", "b", "1", 0, T0, 2, ())], bases)
    assert [(n.node, n.suspect) for n in r.nodes] == [("c", True), ("a", True), ("b", False)] or \
        [(n.node, n.suspect) for n in r.nodes] == [("a", True), ("c", True), ("b", False)]
    a = next(n for n in r.nodes if n.node == "a")
    assert a.now == ["3 of 4 EFA devices now"] and a.jobs == 0


STATUSES = {"ok": _status("ok"), "short": _status("short", devices=3),
            "err": _status("err", errors={"cmds_err": 1.5}),
            "untyped": _status("untyped", expected=None),
            "daemon": dict(_status("daemon"), daemon={"errors": {"sample": 2}}),
            "stale": _status("stale", t=T0 - 3600)}


@pytest.mark.parametrize("pretty", [False, True])
def test_quick_baselines_are_the_parsed_ones(tmp_path, pretty):
    d = tmp_path / "sim" / "nodes"
    d.mkdir(parents=True)
    for name, doc in STATUSES.items():
        (d / f"{name}.json").write_text(json.dumps(doc, indent=1 if pretty else None,
                                                   separators=None if pretty else (",", ":"),
                                                   sort_keys=True))
    old = T0 - 7200
    os.utime(d / "stale.json", (old, old))
    now = T0 + 30
    quick = read_baselines(str(tmp_path), None, now, 60.0)
    assert quick == read_baselines(str(tmp_path), None, now, 60.0, quick=False)
    assert set(quick) == {("sim", n) for n in STATUSES if n != "stale"}
    assert quick[("sim", "err")].errors == ("cmds_err",)


# -- the command --------------------------------------------------------------------------------
def _run(cfg, *args):
    res = cli_runner().invoke(main, ["nodes", "--store", cfg.store, "--since", "2024-01-01",
                                     *args], env={"EFAJOB_CONFIG": "", "EFAJOB_STATE_DIR":
                                                  cfg.state_dir})
    assert res.exit_code == 0, res.output
    return res


def test_cli_text_json_csv(fleet):
    cfg, _ = fleet
    text = _run(cfg, "-n", "5").stdout
    lines = text.splitlines()
    assert lines[0] == "33 nodes, 1603 node-job runs (from the index); 2 suspect"
    assert lines[3].split()[:3] == ["RANK", "NODE", "JOBS"]
    assert lines[4].split()[:2] == ["1", "n5"] and lines[5].split()[:2] == ["2", "n17"]
    assert any(line.startswith("  n5: straggler in ") for line in lines)
    assert "(28 more nodes not shown: --limit)" in text
    doc = json.loads(_run(cfg, "--format", "json").stdout)
    assert doc["schema"] == "efajob/nodes" and doc["suspects"] == ["n5", "n17"]
    assert len(doc["nodes"]) == 33 and doc["nodes"][0]["categories"]["straggler"]["evidence"]
    rows = list(csv.DictReader(io.StringIO(_run(cfg, "--format", "csv").stdout)))
    assert [r["node"] for r in rows[:2]] == ["n5", "n17"] and rows[0]["suspect"] == "1"
    assert rows[0]["evidence"].startswith("straggler:")
    assert not math.isnan(float(rows[2]["score"]))


def test_cli_scans_without_an_index_and_says_so(fleet, tmp_path):
    cfg, _ = fleet
    other = Config(store=cfg.store, state_dir=str(tmp_path / "none"))
    res = _run(other, "--format", "json")
    assert json.loads(res.stdout)["source"] == "scan"
    assert "no job index at" in res.stderr and "scanning the store instead" in res.stderr
    res = cli_runner().invoke(main, ["nodes", "--store", cfg.store, "--since", "soon"],
                              env={"EFAJOB_CONFIG": ""})
    assert res.exit_code == 2
