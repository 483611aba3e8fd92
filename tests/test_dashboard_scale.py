"""The dashboard at cluster scale (issue 17): problems grouped by kind, the node map, the node
table's view (filter, search, sort, paging in the URL), node and job pages, Slurm's node list,
status file expiry, scaled units. Pure model and page tests; tests/test_dashboard.py has the
server, tests/test_dashboard_browser.py the browser."""
from __future__ import annotations

import re

import pytest

from efajob.dashboard.detail import render_job_page, render_node_page
from efajob.dashboard.model import build_dashboard, problems_to_dict
from efajob.dashboard.page import Links, render_dashboard
from efajob.dashboard.server import LINKS
from efajob.dashboard.view import DEFAULT, View, parse_view, select, to_query, view_to_dict
from efajob.fmt import fmt_bandwidth
from efajob.slurm.nodes import is_down, is_powered_down, parse_sinfo_nodes

from test_dashboard import HOSTILE_USER, NOW, build, doc


def cluster(n=40, dropping=range(0, 31), missing=(35, 36)):
    docs = []
    for i in range(1, n + 1):
        d = doc(f"gpu{i:03d}", jobs=[(str(100 + i // 10), f"u{i // 10}")])
        if i - 1 in dropping:
            d["rates"] = {"rx_drops": 12.0, "retrans_pkts": 0.0}
        if i - 1 in missing:
            d["expected_devices"] = 8
        docs.append(d)
    return docs


# -- units -------------------------------------------------------------------------------------
@pytest.mark.parametrize("gbps,text", [(None, "n/a"), (0.0, "0.0 Gbps"), (0.01, "<0.1 Gbps"),
                                       (42.25, "42.2 Gbps"), (312.4, "312 Gbps"),
                                       (1_000_559.0, "1.00 Pbps"), (3_200.0, "3.20 Tbps"),
                                       (999.4, "999 Gbps"), (999.6, "1.00 Tbps")])
def test_bandwidth_scales_its_unit(gbps, text):
    assert fmt_bandwidth(gbps) == text


def test_cards_read_pbps_not_a_million_gbps():
    d = build([doc(f"n{i}", tx=3200.0, rx=3200.0, link=3200.0 / 4) for i in range(400)])
    page = render_dashboard(d)
    assert "1.28 Pbps / 1.28 Pbps" in page and "1,280,000" not in page


def test_utilisation_over_the_link_rate_is_flagged_not_shown_as_fact():
    d = build([doc("n1", tx=250.0, rx=10.0, link=50.0)])  # 4 x 50 Gbps links, 250 sent
    n = d.nodes[0]
    assert n.util == 1.25 and ("util_over_link", "warning") in n.kinds
    page = render_dashboard(d)
    assert 'title="above the link rate: the link rate or a counter is wrong">125.0%?</span>' in page


# -- problems first ----------------------------------------------------------------------------
def test_problems_grouped_by_kind_worst_first_with_hostlists():
    d = build(cluster())
    groups = [(g.kind, g.severity, len(g.hosts)) for g in d.problems]
    # Critical before warning whatever the counts: 2 nodes missing a device lead 31 dropping.
    assert groups == [("device_missing", "critical", 2), ("rx_drops", "warning", 31)]
    page = render_dashboard(d, links=LINKS)
    alerts = page[page.index('id="alerts"'):page.index("Node map")]
    assert alerts.index("2 nodes: device missing") < alerts.index("31 nodes: rx drops")
    assert '<a href="/?problem=rx_drops">gpu[001-031]</a>' in alerts
    assert '<a href="/?problem=device_missing">gpu[036-037]</a>' in alerts
    assert alerts.count("<p") == 2  # one line per kind, not one per node
    api = problems_to_dict(d)["problems"]
    assert api[1]["count"] == 31 and api[1]["hosts"][:2] == ["gpu001", "gpu002"]


def test_a_fault_every_node_shares_is_one_bounded_line():
    docs = [doc(f"n{i}", rates={"rx_drops": 1.0}) for i in range(1000)]
    page = render_dashboard(build(docs), links=LINKS)
    alerts = page[page.index('id="alerts"'):page.index("Node map")]
    assert "1,000 nodes: rx drops" in alerts and alerts.count("<p") == 1 and len(alerts) < 600


# -- the node map ------------------------------------------------------------------------------
def test_node_map_one_cell_per_node_grouped_by_job_linked_to_the_node():
    docs = cluster(n=30, dropping=(0,), missing=())
    docs.append(doc("old1", age=600.0))
    d = build(docs)
    page = render_dashboard(d, links=LINKS)
    cells = re.findall(r'<a class="(\w+)" href="/node/c1/([\w.-]+)"', page)
    assert len(cells) == 31 and {h for _, h in cells} == {n.host for n in d.nodes}
    assert dict((h, c) for c, h in cells)["gpu001"] == "w" and dict((h, c) for c, h in cells)["old1"] == "s"
    heads = re.findall(r'<div class="gh">(.*?)</div>', page)
    assert heads[0] == '<a href="/jobs/c1/100">job 100 (u0), 9 node(s)</a>'
    assert heads[-1] == "idle or stale, 1 node(s)" and len(heads) == 5
    assert d.cache["map:True:True"] in page  # built once per snapshot: the next request reuses it
    static = render_dashboard(d)
    assert "<a " not in static and static.count('<i class="u') >= 30


# -- the node table's view ----------------------------------------------------------------------
def test_view_round_trips_through_the_query_string():
    v = View(q="gpu[001-004]", state="warn", sort="tx", desc=True, page=3)
    from urllib.parse import parse_qs

    assert parse_view(parse_qs(to_query(v)[1:])) == v
    assert to_query(DEFAULT) == "" and to_query(v, sort="rx").count("page") == 0  # back to page 1
    assert parse_view({"sort": ["'; drop"], "state": ["<x>"], "page": ["-4"], "per": ["10**9"]}) == DEFAULT


def test_filter_search_sort_and_page_the_table():
    docs = cluster(n=40)
    for i, d in enumerate(docs):
        d["tx_gbps"] = float(i)
    d = build(docs)
    assert select(d.nodes, View(q="gpu[001-004],gpu040"))[0] == 5
    assert select(d.nodes, View(q="gpu03"))[0] == 10  # not a hostlist: part of a name
    assert select(d.nodes, View(job="101"))[0] == 10 and select(d.nodes, View(user="u2"))[0] == 10
    assert select(d.nodes, View(state="warn", problem="rx_drops"))[0] == 31
    assert select(d.nodes, View(partition="gpu"))[0] == 40 and select(d.nodes, View(partition="x"))[0] == 0
    total, page = select(d.nodes, View(sort="tx", desc=True, per=7, page=2))
    assert total == 40 and [n.host for n in page] == [f"gpu{i:03d}" for i in range(33, 26, -1)]
    html = render_dashboard(d, links=LINKS, view=View(state="warn", per=10, page=2))
    assert html.count("<tr class=\"warn\"") == 10 and "33 of 40 nodes match" in html
    assert "page 2 of 4" in html and 'href="/?state=warn&amp;page=3&amp;per=10" rel="next"' in html
    assert '<option value="warn" selected>' in html
    api = view_to_dict(d, View(q="gpu00[1-3]"))
    assert api["matched"] == 3 and [n["host"] for n in api["nodes"]] == ["gpu001", "gpu002", "gpu003"]


def test_absent_values_sort_last_in_either_direction():
    d = build([doc("a", tx=None), doc("b", tx=5.0), doc("c", tx=9.0)])
    assert [n.host for n in select(d.nodes, View(sort="tx"))[1]] == ["b", "c", "a"]
    assert [n.host for n in select(d.nodes, View(sort="tx", desc=True))[1]] == ["c", "b", "a"]


def test_hostile_search_text_is_escaped_in_the_form():
    page = render_dashboard(build([doc("n1")]), links=LINKS, view=View(q=HOSTILE_USER, user="<b>x"))
    assert "<img" not in page and "&lt;b&gt;x" in page and "No node matches." in page


# -- Slurm's node list and expiry --------------------------------------------------------------
SINFO = """gpu001 mixed
gpu001 mixed
gpu002 idle~
gpu003 down~
gpu004 allocated
gpu005 idle%
login1 idle
bad/name idle
"""


def test_parse_sinfo_nodes_and_power_states():
    nodes = parse_sinfo_nodes(SINFO)
    assert nodes == {"gpu001": "mixed", "gpu002": "idle~", "gpu003": "down~", "gpu004": "allocated",
                     "gpu005": "idle%", "login1": "idle"}
    assert [h for h, s in nodes.items() if is_powered_down(s)] == ["gpu002", "gpu003", "gpu005"]
    assert is_powered_down("IDLE+CLOUD+POWERED_DOWN") and not is_powered_down("idle")
    assert is_down("down*") and is_down("drained") and not is_down("idle~") and is_down("idle*")


def test_slurm_node_list_reconciles_with_status_files():
    docs = [doc("gpu001"), doc("gpu002", age=7200.0), doc("gpu003", age=7200.0),
            doc("gpu009", age=7200.0), doc("gpu004", age=86400.0 * 3)]
    d = build_dashboard([("c1", x) for x in docs], [], now=NOW, max_status_age=60.0,
                        slurm_nodes=parse_sinfo_nodes(SINFO), slurm_cluster="c1", expire_after=86400.0)
    states = {n.host: n.state for n in d.nodes}
    # gpu002/3: powered down, silent as expected; gpu009: stale and unknown to Slurm (deleted);
    # gpu004: its file expired, Slurm lists it without efajob; login1 never had efajob.
    assert states == {"gpu001": "ok", "gpu002": "powered-down", "gpu003": "powered-down",
                      "gpu004": "no-efajob", "gpu005": "no-efajob", "login1": "no-efajob"}
    assert d.problems == [] and d.totals.stale == 5
    assert "2 node status file(s) of nodes that left are not shown" in d.notes
    page = render_dashboard(d, links=LINKS)
    assert '<span class="badge powered-down">powered down</span> <span class="muted">idle~</span>' in page
    assert "in Slurm, no efajob, 3 node(s)" in page


def test_a_stale_node_slurm_still_runs_is_still_an_alert():
    d = build_dashboard([("c1", doc("gpu004", age=600.0))], [], now=NOW, max_status_age=60.0,
                        slurm_nodes={"gpu004": "allocated"}, slurm_cluster="c1")
    assert d.nodes[0].state == "stale" and [g.kind for g in d.problems] == ["stale"]


# -- detail pages ------------------------------------------------------------------------------
def test_node_and_job_pages_escape_and_link():
    docs = cluster(n=12, dropping=(1,), missing=())
    docs[1]["jobs"][0]["user"] = HOSTILE_USER
    d = build(docs)
    n = d.by_host[("c1", "gpu002")]
    page = render_node_page(d, n, LINKS)
    assert "<img" not in page and "&lt;img src=x" in page and "<script" not in page
    assert '<a href="/jobs/c1/100">100</a>' in page and "rx_drops 12.0/s" in page
    r = d.by_job[("c1", "100")]
    summary = {"cluster": "c1", "job_id": "100", "verdict": "Warning", "findings": ["rx_drops"]}
    job = render_job_page(d, "c1", "100", r, summary, LINKS)
    assert '<a href="/job/100?cluster=c1">Full report (HTML)</a>' in job
    assert job.count("<tr class=") == 9 and '<a href="/node/c1/gpu002">gpu002</a></b>: ' in job
    assert "Findings now (1 node(s) with problems)" in job and "<img" not in job
    static = render_job_page(d, "c1", "100", r, None, Links())
    assert "<a " not in static.split("</p>", 1)[1]


# -- history -----------------------------------------------------------------------------------
def test_history_is_a_bounded_ring_with_a_time_axis():
    from dataclasses import replace

    from efajob.dashboard.history import History, render_chart

    h = History(step=30.0, points=4)
    base = build(cluster(n=20, dropping=(0,), missing=()))
    added = [h.add(replace(base, generated=NOW + s)) for s in (0, 10, 30, 60, 90, 120, 150)]
    assert added == [True, False, True, True, True, True, True]  # 10 s: younger than a step
    c = h.series("cluster")
    assert c["t"] == [NOW + 60, NOW + 90, NOW + 120, NOW + 150]  # the oldest dropped
    assert c["tx_gbps"] == [2000.0] * 4 and c["rx_drops"] == [12.0] * 4
    node = h.series("node", ("c1", "gpu001"))
    assert node["tx_gbps"] == [100.0] * 4 and node["rx_drops"] == [12.0] * 4
    job = h.series("job", ("c1", "100"))
    assert len(job["t"]) == 4 and job["tx_gbps"] == [900.0] * 4 and job["rx_drops"] == [12.0] * 4
    assert job["retrans_pkts"] == [0.0] * 4  # summed over its nodes (0 measured), not absent
    assert h.series("node", ("c1", "nope")) is None
    svg = render_chart(c, "cluster")
    assert svg.count("<polyline") == 2 and svg.count('fill="#c62828"') == 4
    # The time axis: first, middle and last times (UTC in tests).
    from efajob.fmt import fmt_time

    for t in (NOW + 60, NOW + 105, NOW + 150):
        assert f">{fmt_time(t)[11:16]}</text>" in svg
    assert "history starts with the server" in render_chart(None, "x")


def test_history_has_an_absent_value_as_null_not_zero():
    from efajob.dashboard.history import History

    h = History(step=1.0)
    h.add(build([doc("n1", tx=None, rates={})]))
    s = h.series("node", ("c1", "n1"))
    assert s["tx_gbps"] == [None] and s["rx_drops"] == [None] and s["rx_gbps"] == [90.0]
