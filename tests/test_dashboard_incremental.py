"""The dashboard's refresh by difference (dashboard/statusdir.py, dashboard/incremental.py, dashboard/model.py
Tally, dashboard/tally.py): a refresh reads only the files whose inode changed (and a rotating
few by stat), reuses each unchanged fresh node's view, and moves the totals and running jobs
by the nodes that changed. Whatever happened before, the model must be the one a build from
scratch makes of the same files at the same time, and an earlier snapshot must stay as it was."""
from __future__ import annotations

import json
import math
import os
import random
from fractions import Fraction

import pytest

from efajob.config import build_config
from efajob.daemon.nodestatus import encode_node_status
from efajob.dashboard.model import (build_from_bases, jobs_to_dict, node_base_from_bytes,
                                    nodes_to_dict, problems_to_dict)
from efajob.dashboard.server import Collector
from efajob.dashboard.statusdir import RECHECK
from efajob.dashboard.tally import Sums, items
from efajob.report.nodeverdict import rules_key
from efajob.sim.statusfleet import fleet_doc

from test_dashboard_verdict import judged

NOW = 1_800_000_000.0


def model_json(d) -> str:
    return json.dumps([nodes_to_dict(d), jobs_to_dict(d), problems_to_dict(d)], sort_keys=True)


def write(d, host: str, t: float, **kw) -> None:
    doc = judged(fleet_doc("c1", host, t, job=kw.pop("job", ("500000", "alice")),
                           gbps=kw.pop("gbps", 800.0), drops=kw.pop("drops", 0.0)))
    doc.update(kw)
    tmp = d / f".{host}.json.tmp"
    tmp.write_bytes(encode_node_status(doc))
    os.replace(tmp, d / f"{host}.json")  # as the daemon writes: a new inode


def scratch(cfg, store, now: float):
    """The model a fresh reader makes of the store now: every file read and judged."""
    d = os.path.join(store, "c1", "nodes")
    rules = rules_key(cfg.thresholds)
    bases = []
    for name in sorted(os.listdir(d)):
        if name.endswith(".json") and not name.startswith("."):
            with open(os.path.join(d, name), "rb") as f:
                bases.append(("c1", node_base_from_bytes(f.read(), "c1", rules=rules)))
    return build_from_bases(bases, [], now=now, max_status_age=60.0)


def fleet(tmp_path, count: int):
    """`count` nodes n1.. written at NOW, and a Collector that has read them once."""
    d = tmp_path / "store" / "c1" / "nodes"
    d.mkdir(parents=True)
    for i in range(1, count + 1):
        write(d, f"n{i}", NOW)
    cfg = build_config({"cluster": "c1", "store": str(tmp_path / "store")}, env={}, node="head")
    col = Collector(cfg, ttl=0.0, clock=lambda: NOW + 2.0)
    col.collect()
    return d, col


def test_exact_sums_are_the_correctly_rounded_sum_whatever_was_added_and_taken_away():
    rng = random.Random(7)
    values = [rng.choice([0.0, 1e-300, 5e-324, 0.1, 3200.0, 1e15, 1e300]) * rng.random()
              for _ in range(400)]
    s = Sums(["x", "absent", "big"])
    for v in values:
        s.add(items([v, None, None]))
    gone = rng.sample(range(len(values)), 150)
    for i in gone:
        s.take(items([values[i], None, None]))
    left = [v for i, v in enumerate(values) if i not in set(gone)]
    assert s.total("x") == math.fsum(left) == float(sum(Fraction(v) for v in left))
    assert s.total("absent") is None
    s.add(items([None, None, 1.7e308]))
    s.add(items([None, None, 1.7e308]))
    assert s.total("big") == math.inf  # past the largest double, as a float sum says
    s.add(items([0.0, None, None]))
    assert s.total("x") == math.fsum(left)


def test_a_refresh_by_difference_is_a_build_from_scratch(tmp_path):
    """Random rewrites, new nodes, deleted files, jobs that move, nodes going stale and coming
    back, two files naming one host: after each refresh the incremental model is the model
    made from scratch."""
    store = tmp_path / "store"
    d = store / "c1" / "nodes"
    d.mkdir(parents=True)
    rng = random.Random(11)
    hosts = [f"gpu-dy-p5-{i}" for i in range(1, 41)]
    t = NOW
    for h in hosts:
        write(d, h, t - rng.uniform(0, 10), job=(str(500000 + rng.randrange(4)), "alice"))
    cfg = build_config({"cluster": "c1", "store": str(store)}, env={}, node="head")
    clock = [t]
    col = Collector(cfg, ttl=0.0, clock=lambda: clock[0])
    earlier = []
    for step in range(25):
        clock[0] = t = t + rng.choice([2.0, 2.0, 30.0])  # 30 s now and then: files go stale
        for h in rng.sample(hosts, rng.randrange(0, 12)):
            roll = rng.random()
            if roll < 0.1 and (d / f"{h}.json").exists():
                (d / f"{h}.json").unlink()
            elif roll < 0.15:  # a second file naming the host, newer or older
                doc = judged(fleet_doc("c1", h, t + rng.choice([-1.0, 1.0]), job=None, gbps=5.0))
                (d / ".copy.tmp").write_bytes(encode_node_status(doc))
                os.replace(d / ".copy.tmp", d / f"{h}-copy.json")  # by rename, as writers do
            else:
                job = None if roll < 0.3 else (str(500000 + rng.randrange(5)), rng.choice(["alice", "bob"]))
                write(d, h, t - rng.uniform(0, 3), job=job, gbps=rng.uniform(0, 3200),
                      drops=rng.choice([0.0, 0.0, 40.0]))
        got = col.collect()
        earlier.append((got, model_json(got)))
        assert model_json(got) == model_json(scratch(cfg, str(store), t)), f"refresh {step}"
    for snap, as_built in earlier:  # no later refresh changed an earlier snapshot
        assert model_json(snap) == as_built


@pytest.mark.parametrize("slurm", [False, True])
@pytest.mark.parametrize("expiry", [0, 100])
def test_a_refresh_moved_by_what_changed_is_a_build_from_scratch(tmp_path, monkeypatch, slurm, expiry):
    """The refresh that makes again only the nodes that may have changed (dashboard/
    incremental.py: one file per host, so its fast path runs): rewrites, new and deleted
    files, unreadable ones, nodes going stale, ahead of the clock, expiring, Slurm's node list
    (nodes without efajob, powered-down cloud nodes, a list that changes now and then).
    After each refresh the model is the one made from scratch, and most refreshes took the
    fast path."""
    import efajob.dashboard.incremental as incremental

    full = []
    real_full = incremental.build_from_bases
    monkeypatch.setattr(incremental, "build_from_bases",
                        lambda *a, **kw: full.append(1) or real_full(*a, **kw))
    store = tmp_path / "store"
    d = store / "c1" / "nodes"
    d.mkdir(parents=True)
    rng = random.Random(23 + slurm + expiry)
    hosts = [f"gpu-dy-p5-{i}" for i in range(1, 41)]
    t = NOW
    for h in hosts[:30]:
        write(d, h, t - rng.uniform(0, 10), job=(str(500000 + rng.randrange(4)), "alice"))
    cfg = build_config({"cluster": "c1", "store": str(store), "status_expiry": expiry}, env={},
                       node="head")
    clock = [t]
    col = Collector(cfg, ttl=0.0, clock=lambda: clock[0], use_slurm=slurm)

    def slurm_list():
        listed = rng.sample(hosts, 30) + ["gpu-st-p5-99"]  # one node with no efajob at all
        return {h: rng.choice(["alloc", "idle", "idle~", "down~", "mixed"]) for h in listed}

    smap = slurm_list() if slurm else None
    lists = 0  # refreshes given another node-list object: each builds in full
    for step in range(40):
        clock[0] = t = t + rng.choice([2.0, 2.0, 2.0, 30.0, 0.0])  # now and then files go stale
        if slurm:
            roll = rng.random()
            if roll < 0.1:
                smap, lists = slurm_list(), lists + 1  # Slurm's list changed
            elif roll < 0.2:
                smap, lists = dict(smap), lists + 1  # another object (Collector._node_list keeps an equal one)
            col._slurm_nodes = (col.mono() + 1e9, smap)
        for h in rng.sample(hosts, rng.randrange(0, 8)):
            roll = rng.random()
            if roll < 0.1 and (d / f"{h}.json").exists():
                (d / f"{h}.json").unlink()
            elif roll < 0.15:
                (d / ".cut.tmp").write_bytes(b'{"node": "' + h.encode() + b'", "time": ')
                os.replace(d / ".cut.tmp", d / f"{h}.json")  # cut short (by rename, as writers do)
            else:
                when = t + 120.0 if roll < 0.2 else t - rng.uniform(0, 3)  # a clock ahead, or now
                job = None if roll < 0.3 else (str(500000 + rng.randrange(5)), rng.choice(["alice", "bob"]))
                write(d, h, when, job=job, gbps=rng.uniform(0, 3200), drops=rng.choice([0.0, 0.0, 40.0]))
        got = col.collect()
        bases, notes = [], []
        rules = rules_key(cfg.thresholds)
        for name in sorted(os.listdir(d)):
            data = (d / name).read_bytes()
            try:
                bases.append(("c1", node_base_from_bytes(data, "c1", rules=rules)))
            except ValueError:  # unreadable: a note (read again each refresh), no node
                notes.append(f"node status c1/{name} unreadable (not valid JSON)")
        want = build_from_bases(bases, [], now=t, max_status_age=60.0, notes=notes,
                                slurm_nodes=smap, slurm_cluster="c1", expire_after=expiry or None)
        assert model_json(got) == model_json(want), f"refresh {step}"
    assert len(full) == 1 + lists, "the fast path was not taken"


def test_fresh_unchanged_nodes_keep_their_view_and_the_age_comes_from_the_snapshot(tmp_path):
    d = tmp_path / "store" / "c1" / "nodes"
    d.mkdir(parents=True)
    write(d, "n1", NOW)
    write(d, "n2", NOW)
    cfg = build_config({"cluster": "c1", "store": str(tmp_path / "store")}, env={}, node="head")
    clock = [NOW + 1.0]
    col = Collector(cfg, ttl=0.0, clock=lambda: clock[0])
    first = col.collect()
    clock[0] = NOW + 9.0
    write(d, "n2", NOW + 8.0)
    second = col.collect()
    assert second.by_host[("c1", "n1")] is first.by_host[("c1", "n1")]  # not copied
    assert second.by_host[("c1", "n2")] is not first.by_host[("c1", "n2")]
    ages = [{n["host"]: n["age_s"] for n in nodes_to_dict(x)["nodes"]} for x in (first, second)]
    assert ages == [{"n1": 1.0, "n2": 1.0}, {"n1": 9.0, "n2": 1.0}]
    clock[0] = NOW + 65.0  # n1 goes stale: a view of its own, the shared one untouched
    third = col.collect()
    assert third.by_host[("c1", "n1")].stale and not first.by_host[("c1", "n1")].stale
    assert third.totals.fresh == 1 and first.totals.fresh == 2


def test_a_file_rewritten_in_place_is_read_within_recheck_refreshes(tmp_path, monkeypatch):
    """Same inode, new content (another writer, or an inode the filesystem reused): the
    listing cannot tell, the rotating stat does."""
    d, col = fleet(tmp_path, 4 * RECHECK)
    path = d / "n5.json"
    ino = path.stat().st_ino
    doc = json.loads(path.read_bytes())
    doc["tx_gbps"] = doc["rx_gbps"] = 1.5
    with open(path, "r+b") as f:  # in place: the same inode, another size
        f.write(encode_node_status(doc))
        f.truncate()
    assert path.stat().st_ino == ino
    seen = []
    for _ in range(RECHECK):
        seen.append(col.collect().by_host[("c1", "n5")].tx_gbps)
    assert seen[-1] == 1.5 and seen.count(1.5) >= 1 and seen[0] in (800.0, 1.5)
    assert seen == sorted(seen, key=lambda v: v == 1.5)  # once read, it stays read


def test_a_job_listed_twice_by_a_node_runs_once_on_it():
    doc = judged(fleet_doc("c1", "n1", NOW, job=("77", "alice"), gbps=10.0))
    doc["jobs"] = doc["jobs"] * 2
    base = node_base_from_bytes(encode_node_status(doc), "c1", rules=rules_key(None))
    d = build_from_bases([("c1", base)], [], now=NOW + 1.0, max_status_age=60.0)
    assert [r.hosts for r in d.running] == [["n1"]] and len(d.by_host[("c1", "n1")].jobs) == 1


@pytest.mark.parametrize("private", [False, True])
def test_unchanged_jobs_are_reused_from_the_files_last_parse_only_when_equal(private):
    a = judged(fleet_doc("c1", "n1", NOW, job=("77", "alice"), gbps=10.0))
    first = node_base_from_bytes(encode_node_status(a), "c1", private=private, rules=rules_key(None))
    a2 = dict(a, time=NOW + 15.0)
    same = node_base_from_bytes(encode_node_status(a2), "c1", private=private,
                                rules=rules_key(None), previous=first)
    assert same.view.jobs is first.view.jobs
    b = dict(a2, jobs=[dict(a["jobs"][0], user="bob")])
    other = node_base_from_bytes(encode_node_status(b), "c1", private=private,
                                 rules=rules_key(None), previous=first)
    assert [j.user for j in other.view.jobs] == [None if private else "bob"]


def test_a_refresh_reads_the_start_of_a_file_and_all_of_it_only_when_needed(tmp_path, monkeypatch):
    """HEAD_BYTES of a daemon's file hold its head and devices; a file whose devices run past
    them, or one without the daemon's verdict, is read again whole: the same model either way."""
    import efajob.dashboard.server as server
    import efajob.dashboard.statusdir as statusdir

    d = tmp_path / "store" / "c1" / "nodes"
    d.mkdir(parents=True)
    write(d, "short", NOW)
    long_doc = judged(fleet_doc("c1", "long", NOW, job=("9", "alice"), gbps=10.0))
    long_doc["jobs"] = [dict(long_doc["jobs"][0], job_id=str(i), key=str(i)) for i in range(1, 90)]
    (d / "long.json").write_bytes(encode_node_status(judged(long_doc)))
    old = {k: v for k, v in fleet_doc("c1", "old", NOW, job=None, gbps=1.0, drops=30.0).items()
           if k != "verdict"}
    (d / "old.json").write_bytes(encode_node_status(old))  # an older daemon: no verdict
    for name in ("short", "long"):
        size = (d / f"{name}.json").stat().st_size
        at = (d / f"{name}.json").read_bytes().find(b'],"recent":{')
        assert size > server.HEAD_BYTES and (at < server.HEAD_BYTES) == (name == "short")
    reads = []
    real = statusdir.read_regular_stat
    monkeypatch.setattr(statusdir, "read_regular_stat", lambda p, n, **kw: reads.append(
        (p, kw.get("first", 0))) or real(p, n, **kw))
    cfg = build_config({"cluster": "c1", "store": str(tmp_path / "store")}, env={}, node="head")
    got = Collector(cfg, ttl=0.0, clock=lambda: NOW + 1.0).collect()
    assert sorted(reads) == [("long.json", 0), ("long.json", server.HEAD_BYTES),
                             ("old.json", 0), ("old.json", server.HEAD_BYTES),
                             ("short.json", server.HEAD_BYTES)]
    assert model_json(got) == model_json(scratch(cfg, str(tmp_path / "store"), NOW + 1.0))
    assert len(got.by_host[("c1", "long")].jobs) == 89 and got.by_host[("c1", "old")].kinds


def test_the_start_of_a_file_is_cut_only_where_the_window_follows_the_devices():
    from efajob.store.reader import split_status

    doc = judged(fleet_doc("c1", "n1", NOW, job=None, gbps=1.0))
    doc["devices"][0]["z_list"] = [1]  # a device ending in a list: `]}` inside the devices
    data = encode_node_status(doc)
    at = data.find(b"]}", data.find(b',"devices":['))
    assert 0 < at < data.find(b'],"recent":{')
    assert split_status(data[:at + 2], whole=False) is None  # not the end of the devices
    head, devices = split_status(data[:data.find(b'],"recent":{') + 20], whole=False)
    assert json.loads(devices) == json.loads(data)["devices"] and head["node"] == "n1"


def test_a_refresh_that_fails_half_way_leaves_no_half_moved_totals(tmp_path, monkeypatch):
    import efajob.dashboard.model as model

    d = tmp_path / "store" / "c1" / "nodes"
    d.mkdir(parents=True)
    for h in ("n1", "n2", "n3"):
        write(d, h, NOW)
    cfg = build_config({"cluster": "c1", "store": str(tmp_path / "store")}, env={}, node="head")
    clock = [NOW + 1.0]
    col = Collector(cfg, ttl=0.0, clock=lambda: clock[0])
    col.collect()
    write(d, "n1", NOW + 2.0, gbps=100.0)
    write(d, "n3", NOW + 2.0, gbps=100.0)
    real, calls = model.Tally._in, []

    def failing(self, at, n, touched):
        calls.append(at)
        if len(calls) == 2:
            raise MemoryError("in the middle of a move")
        return real(self, at, n, touched)

    monkeypatch.setattr(model.Tally, "_in", failing)
    clock[0] = NOW + 3.0
    with pytest.raises(MemoryError):
        col.collect()
    monkeypatch.setattr(model.Tally, "_in", real)
    got = col.collect()
    assert model_json(got) == model_json(scratch(cfg, str(tmp_path / "store"), NOW + 3.0))


def test_a_filesystem_that_lists_no_inodes_gets_a_stat_per_file(tmp_path, monkeypatch):
    """d_ino 0 (some FUSE filesystems): the listing cannot say what changed, so every file is
    stat'ed, and a rewrite shows at the next refresh, not within RECHECK of them."""
    import efajob.dashboard.statusdir as statusdir

    class NoInode:
        def __init__(self, entry):
            self.name = entry.name

        def inode(self):
            return 0

    real = os.scandir

    class Listing:
        def __init__(self, fd):
            self.it = real(fd)

        def __enter__(self):
            return (NoInode(e) for e in self.it)

        def __exit__(self, *exc):
            self.it.close()

    monkeypatch.setattr(statusdir.os, "scandir", Listing)
    d, col = fleet(tmp_path, 2 * RECHECK - 1)
    for i in range(1, 2 * RECHECK):
        write(d, f"n{i}", NOW + 1.0, gbps=float(i))
    got = col.collect()
    assert [got.by_host[("c1", f"n{i}")].tx_gbps for i in range(1, 2 * RECHECK)] == \
        [float(i) for i in range(1, 2 * RECHECK)]
