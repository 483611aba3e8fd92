"""Reports that stream: records are made into nodes as they are read and dropped
(report/build.py ingest), kept compact (report/compact.py), the JSON written a node at a time,
and the series of a huge job's HTML sampled (report/sampling.py). Nothing here is timed."""
from __future__ import annotations

import gc
import json
import tracemalloc
import weakref
from typing import Dict, Iterator, List

import pytest

from efajob.report.build import build_report, ingest
from efajob.report.compact import (Counters, any_nonzero, compact_block, compact_counters,
                                   compact_series, plain, plain_series, sum_over, values_of)
from efajob.node.counters import is_wr_error
from efajob.report.render.html import render_html
from efajob.report.render.json import iter_json, render_json, report_to_dict
from efajob.report.render.text import render_text
from efajob.report.sampling import SERIES_LIMIT, describe, series_sample
from efajob.sim.jobstore import _template

DEVICES = 32
POINTS = 450


class Rec(dict):
    """A record that can be watched with a weak reference (a plain dict cannot)."""

    __slots__ = ("__weakref__",)


def record(i: int, nodes: int, *, slow: bool = False) -> dict:
    """A p5-like record: 32 devices, a 450-point series; node `i` of a `nodes`-node job."""
    base = _template("sim")
    dev0 = base["devices"][0]
    scale = 4 if slow else 1
    devs = [dict(dev0, name=f"rdmap{k}s0",
                 counters={c: v // scale + (k if c.endswith("bytes") else 0)
                           for c, v in dev0["counters"].items()})
            for k in range(DEVICES)]
    rec = dict(base, host=f"n{i}", job_id="77", key="77", nodelist=f"n[0-{nodes - 1}]",
               num_nodes=nodes, devices=devs, complete=True, instance_type="p5.48xlarge",
               expected_devices=DEVICES,
               series={"interval_s": 8.0, "t": [8.0 * p for p in range(1, POINTS + 1)],
                       "tx_gbps": [1.5 + (p % 7) / 10 + i / 1000 for p in range(POINTS)],
                       "rx_gbps": [1.25 + (p % 5) / 10 for p in range(POINTS)]})
    rec["totals"] = {c: sum(d["counters"][c] for d in devs) for c in dev0["counters"]}
    return rec


def test_ingest_drops_each_record_after_use():
    alive: List[weakref.ref] = []
    most = 0

    def records() -> Iterator[dict]:
        nonlocal most
        for i in range(40):
            gc.collect()
            most = max(most, sum(1 for w in alive if w() is not None))
            r = Rec(record(i, 40))
            alive.append(weakref.ref(r))
            yield r

    r = build_report(records(), job_id="77", cluster="sim")
    gc.collect()
    assert len(r.nodes) == 40 and len(alive) == 40
    # When a record is asked for, at most the previous one is still referenced (by the
    # generator's own frame); none survives the report.
    assert most <= 1
    assert sum(1 for w in alive if w() is not None) == 0


def test_streamed_report_equals_the_report_of_a_list():
    recs = [record(i, 12, slow=i == 11) for i in range(12)]
    listed = build_report(recs, job_id="77", cluster="sim", now=1e9)
    streamed = build_report(iter(json.loads(json.dumps(r)) for r in recs), job_id="77",
                            cluster="sim", now=1e9)
    assert render_text(streamed) == render_text(listed)
    assert render_json(streamed) == render_json(listed)
    assert [f.code for f in streamed.findings] == ["straggler_node"]
    # Everything the JSON says about counters and series is what the records said.
    d = json.loads(render_json(streamed))
    byhost = {r["host"]: r for r in recs}
    for node in d["nodes"]:
        src = byhost[node["host"]]
        assert [dv["counters"] for dv in node["devices"]] == [dv["counters"] for dv in src["devices"]]
        assert {k: v for k, v in node["series"].items() if k != "above_link"} == src["series"]


def test_memory_of_a_report_is_a_fraction_of_its_records():
    """tracemalloc's peak while a 200-node report is built from records parsed one at a time
    against what the same records take parsed and held (bench/report.py measures the RSS)."""
    n = 200
    blobs = [json.dumps(record(i, n)).encode() for i in range(n)]
    gc.collect()
    tracemalloc.start()
    try:
        held = [json.loads(b) for b in blobs]
        all_records = tracemalloc.get_traced_memory()[0]
        del held
        gc.collect()
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        r = build_report((json.loads(b) for b in blobs), job_id="77", cluster="sim")
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert len(r.data_nodes) == n
    # Holding the parsed records would be all of it (and more: the model on top); the
    # compact nodes are ~40 kB of a record's ~117 kB, series and counters included.
    assert peak < all_records / 2, (peak, all_records)


def test_counters_read_like_the_dict():
    d = {"tx_bytes": 5, "rx_bytes": 0, "rdma_read_wr_err": 2, "big": 2**64 - 1}
    c = compact_counters(d)
    assert isinstance(c, Counters)
    assert c == d and dict(c.items()) == d and list(c) == list(d) and len(c) == 4
    assert c["tx_bytes"] == 5 and c.get("nope") is None and c.get("nope", 7) == 7
    assert "rx_bytes" in c and "nope" not in c
    assert plain(c) == d and type(plain(c)) is dict
    with pytest.raises(KeyError):
        c["nope"]


@pytest.mark.parametrize("bad", [{"a": 2**64}, {"a": -1}, {"a": True}, {"a": 1.5}, {"a": None}])
def test_what_does_not_fit_keeps_its_parsed_form(bad):
    assert compact_block([{"a": 1}, bad]) is None
    if bad["a"] == 2**64:  # ints() let it through: kept as the dict it was
        assert compact_counters(bad) is bad


def test_block_helpers_agree_with_the_per_device_path():
    dicts = [{"tx_bytes": k, "rx_bytes": 2 * k, "rdma_read_wr_err": k % 3 == 1 and 4 or 0}
             for k in range(6)]
    block = compact_block(dicts)
    assert block is not None and [dict(b.items()) for b in block] == dicts
    singles = [compact_counters(dict(d)) for d in dicts]  # separate arrays: the slow path
    for seq in (block, singles, dicts):
        assert any_nonzero(seq, is_wr_error)
        assert sum_over(seq, is_wr_error) == 8
        assert values_of(seq, "rx_bytes") == [0, 2, 4, 6, 8, 10]
        assert values_of(seq, "nope") == [None] * 6
    zero = compact_block([{"x_wr_err": 0}, {"x_wr_err": 0}])
    assert zero is not None and not any_nonzero(zero, is_wr_error)
    assert sum_over([{"tx_bytes": 1}], is_wr_error) is None


def test_series_round_trip():
    s = {"interval_s": 8.0, "t": [1, 2, 3], "tx_gbps": [0.5, 1.25], "rx_gbps": [1.0, None],
         "odd": [1, 2.0], "empty": []}
    c = compact_series(s)
    out = plain_series(c)
    assert out == s
    assert [type(v) for v in out["t"]] == [int] * 3  # ints stay ints, floats floats
    assert [type(v) for v in out["odd"]] == [int, float]
    assert out["rx_gbps"] is s["rx_gbps"]  # a gap: left as parsed


def nodes_report(n: int, flagged: Dict[int, str] = {}):  # noqa: B006  (read only)
    recs = [record(i, n) for i in range(n)]
    r = build_report(recs, job_id="77", cluster="sim")
    for i, code in flagged.items():
        r.data_nodes[i].marks.append(code)
    return r


def test_a_small_job_draws_every_series():
    r = nodes_report(SERIES_LIMIT)
    s = series_sample(r)
    assert s.complete and len(s.nodes) == SERIES_LIMIT and describe(s) == ""
    page = render_html(r)
    assert page.count('<svg class="series"') == SERIES_LIMIT and "series-sample" not in page


def test_a_huge_job_draws_a_sample_and_says_so():
    n = 100
    flagged = {i: "straggler_node" for i in (10, 20, 30, 60, 70)}
    r = nodes_report(n, flagged)
    s = series_sample(r)
    ranks = [x.rank for x in s.nodes]
    assert len(s.nodes) == 4 + 4 + 8 + 5 and ranks == sorted(ranks)
    assert {1, 2, 3, 4, 97, 98, 99, 100} <= set(ranks)  # fastest and slowest
    assert set(range(47, 55)) <= set(ranks)  # around the median
    assert {11, 21, 31, 61, 71} <= set(ranks)  # every node with a finding
    assert describe(s) == ("Series shown for 21 of 100 nodes: the 4 fastest, the 4 slowest, "
                           "8 around the median and every node with a finding (5) "
                           "(--format json has every node's series).")
    page = render_html(r)
    assert page.count('<svg class="series"') == 21
    assert "Series shown for 21 of 100 nodes" in page
    # JSON keeps every node's series.
    assert all(x["series"] for x in report_to_dict(r)["nodes"])


def test_more_flagged_nodes_than_room():
    n = 100
    r = nodes_report(n, {i: "straggler_node" for i in range(20, 60)})
    s = series_sample(r)
    assert len(s.nodes) == SERIES_LIMIT
    assert "24 of the 40 with findings" in describe(s)


def test_iter_json_is_the_json_in_pieces():
    r = nodes_report(5)
    pieces = list(iter_json(r))
    assert len(pieces) > 5 and "".join(pieces) == render_json(r)
    assert json.loads("".join(pieces))["nodes"][0]["host"]
    empty = build_report([], job_id="77", cluster="sim", expected_hosts=())
    assert json.loads(render_json(empty))["nodes"] == []


def test_ingest_keeps_the_last_record_of_a_host():
    a, b = record(0, 1), record(0, 1)
    b["devices"] = b["devices"][:2]
    ing = ingest(iter([a, b]))
    assert len(ing.nodes) == 1 and len(ing.nodes["n0"].devices) == 2 and len(ing.headers) == 2
