"""The daemon's verdict and the dashboard's short parse (report/nodeverdict.py,
store/reader.py split_status, dashboard/model.py node_base_from_bytes): a status file laid out
as the daemon writes it is parsed up to its devices only and judged by the verdict in it, and
that must say exactly what the dashboard's own judgement of the whole file says; a verdict by
other rules or thresholds, a forged or malformed one, or another layout is judged again."""
from __future__ import annotations

import json
import os

import pytest

from efajob.daemon.nodestatus import encode_node_status
from efajob.dashboard.model import node_at, node_base_from_bytes, parse_node_base
from efajob.dashboard.server import Collector
from efajob.config import build_config
from efajob.report.nodeverdict import node_verdict, parse_verdict, rules_key
from efajob.sim.statusfleet import fleet_doc
from efajob.store.reader import split_status

from test_dashboard import HOSTILE_USER
from test_live import node, proc, sample_minute  # noqa: F401 - fixtures

NOW = 1_800_000_000.0
RULES = rules_key(None)


def judged(doc: dict, thresholds=None) -> dict:
    """`doc` with the verdict the daemon would write for it (build_node_status)."""
    doc = {k: v for k, v in doc.items() if k != "verdict"}
    doc["verdict"] = node_verdict(doc["node"], [(d["name"], d["errors"], d["port_counters"])
                                                for d in doc["devices"]],
                                  doc.get("expected_devices"), doc.get("recent"), doc["rates"],
                                  thresholds, doc.get("instance_type"))
    return doc


def faulty(kind: str) -> dict:
    d = fleet_doc("c1", "gpu-dy-p5-7", NOW, job=("500000", "alice"), gbps=1200.0,
                  drops=50.0 if kind == "drops" else 0.0, devices=31 if kind == "missing" else 32)
    if kind == "errors":
        d["devices"][3]["errors"] = {"rdma_read_wr_err": 2.5}
        d["devices"][30]["errors"] = {"cmds_err": 0.1}
    if kind == "unreadable":
        d["devices"][0]["port_counters"] = 0
    if kind == "unhealthy":
        d["daemon"] = dict(d["daemon"], healthy=False, last_sample_age=42.0, store="disk full")
    if kind == "over_link":
        d["tx_gbps"] = 5000.0
    if kind == "hostile":
        d["jobs"][0]["user"] = HOSTILE_USER + '","devices":[{"name":"x"}],"z":"'
    return judged(d)


KINDS = ("none", "drops", "missing", "errors", "unreadable", "unhealthy", "over_link", "hostile")


def view(base, now=NOW + 5.0):
    n = node_at(base, now, 60.0)
    return (n.state, n.problems, n.kinds, n.link_gbps, n.util, n.jobs,
            [(d.name, d.tx_gbps, d.link_gbps, d.errors, d.port_counters) for d in n.devices])


@pytest.mark.parametrize("kind", KINDS)
def test_the_short_parse_and_the_verdict_say_what_a_whole_judgement_says(kind):
    doc = faulty(kind)
    data = encode_node_status(doc)
    head, devices = split_status(data)
    assert json.loads(devices) == doc["devices"] and "devices" not in head and "recent" not in head
    assert head == {k: v for k, v in doc.items() if k not in ("devices", "recent")}
    short = node_base_from_bytes(data, "c1", rules=RULES)
    assert short.view.device_list is None and short.view.device_src  # devices not parsed yet
    whole = parse_node_base({k: v for k, v in doc.items() if k != "verdict"}, "c1")
    assert view(short) == view(whole)
    assert view(short, NOW + 3600.0) == view(whole, NOW + 3600.0)  # stale: device problems only
    assert view(short)[0] == ("ok" if kind in ("none", "hostile") else "warn")


@pytest.mark.parametrize("layout", ["json", "sorted", "indented"])
def test_other_layouts_are_parsed_whole(layout):
    doc = faulty("drops")
    text = {"json": json.dumps(doc), "sorted": json.dumps(doc, sort_keys=True),
            "indented": json.dumps(doc, indent=1)}[layout]
    data = text.encode()
    assert split_status(data) is None
    base = node_base_from_bytes(data, "c1", rules=RULES)
    assert base.view.device_list is not None  # parsed whole
    assert view(base) == view(parse_node_base(doc, "c1"))


def test_a_verdict_by_other_thresholds_is_judged_again():
    doc = faulty("drops")
    data = encode_node_status(doc)
    mine = {"rx_drops": 1e12, "rx_drops_critical_ratio": 1.0}  # this dashboard ignores drops
    base = node_base_from_bytes(data, "c1", thresholds=mine, rules=rules_key(mine))
    assert base.view.device_list is not None and view(base)[0] == "ok"
    # ... and a daemon judging by those thresholds writes a verdict this dashboard takes.
    quiet = judged(doc, thresholds=mine)
    base = node_base_from_bytes(encode_node_status(quiet), "c1", thresholds=mine, rules=rules_key(mine))
    assert base.view.device_list is None and view(base)[0] == "ok"


@pytest.mark.parametrize("verdict", [
    {"rules": "0.0.1:000000000000", "devices": [], "live": []},  # another version's rules
    {"rules": RULES, "devices": [], "live": "none"},
    {"rules": RULES, "devices": [["x", "y"]], "live": []},
    {"rules": RULES, "devices": [], "live": [["rx_drops", "m", "fatal"]]},
    {"rules": RULES, "devices": [], "live": [[1, "m", None]]},
    {"rules": RULES, "devices": [], "live": [["k", "m", None]] * 65},
    "ok",
])
def test_a_forged_or_malformed_verdict_is_judged_again(verdict):
    doc = dict(faulty("drops"), verdict=verdict)
    assert parse_verdict(verdict, RULES) is None
    base = node_base_from_bytes(encode_node_status(doc), "c1", rules=RULES)
    assert base.view.device_list is not None
    assert any(k == "rx_drops" for k, _ in node_at(base, NOW + 5.0, 60.0).kinds)


def test_garbled_devices_after_a_good_head_show_no_devices_not_a_crash():
    doc = faulty("none")
    data = encode_node_status(doc).replace(b'"name":"rdmap1s0"', b'"name":rdmap1s0"')
    base = node_base_from_bytes(data, "c1", rules=RULES)
    assert base is not None and node_at(base, NOW, 60.0).devices == []


def test_the_daemon_writes_its_verdict_and_link_rate(tmp_path, proc, node):  # noqa: F811
    cfg, now, drops, doc = sample_minute(tmp_path, proc, node, fault="drops")
    assert drops > 0 and doc["verdict"]["rules"] == rules_key(cfg.thresholds)
    assert doc["link_gbps"] == sum(d["link_gbps"] for d in doc["devices"])
    assert [k for k, _, _ in doc["verdict"]["live"]] == ["rx_drops"]
    data = (tmp_path / "store" / "c1" / "nodes" / "n1.json").read_bytes()
    assert list(json.loads(data))[-2:] == ["devices", "recent"]
    short = node_base_from_bytes(data, "c1", thresholds=cfg.thresholds, rules=rules_key(cfg.thresholds))
    whole = parse_node_base({k: v for k, v in doc.items() if k != "verdict"}, "c1",
                            thresholds=cfg.thresholds)
    assert short.view.device_list is None
    assert view(short, now) == view(whole, now)


def test_a_refresh_reads_only_the_files_that_changed(tmp_path, monkeypatch):
    import efajob.dashboard.statusdir as statusdir

    d = tmp_path / "store" / "c1" / "nodes"
    d.mkdir(parents=True)
    for i in range(1, 6):
        (d / f"n{i}.json").write_bytes(encode_node_status(judged(
            fleet_doc("c1", f"n{i}", NOW, job=None, gbps=0.0))))
    cfg = build_config({"cluster": "c1", "store": str(tmp_path / "store")}, env={}, node="head")
    col = Collector(cfg, ttl=0.0, clock=lambda: NOW + 1.0)
    reads = []
    real = statusdir.read_regular_stat
    monkeypatch.setattr(statusdir, "read_regular_stat",
                        lambda p, n, **kw: reads.append(os.path.basename(p)) or real(p, n, **kw))
    first = col.collect()
    assert sorted(reads) == [f"n{i}.json" for i in range(1, 6)] and first.totals.fresh == 5
    reads.clear()
    tmp = d / ".n3.json.tmp"
    tmp.write_bytes(encode_node_status(judged(dict(faulty("drops"), node="n3"))))
    os.replace(tmp, d / "n3.json")
    (d / "n5.json").unlink()
    second = col.collect()
    assert reads == ["n3.json"] and [n.host for n in second.nodes] == ["n1", "n2", "n3", "n4"]
    assert second.by_host[("c1", "n3")].state == "warn" and first.by_host[("c1", "n3")].state == "ok"
    assert sorted(col._dirs["c1"].parsed) == ["n1.json", "n2.json", "n3.json", "n4.json"]


def test_a_file_without_its_window_yet_is_cut_before_its_devices_too():
    doc = judged({k: v for k, v in faulty("drops").items() if k != "recent"})
    data = encode_node_status(doc)
    head, devices = split_status(data)
    assert json.loads(devices) == doc["devices"] and head["verdict"] == doc["verdict"]
    short = node_base_from_bytes(data, "c1", rules=RULES)
    assert short.view.device_list is None
    assert view(short) == view(parse_node_base({k: v for k, v in doc.items() if k != "verdict"}, "c1"))
