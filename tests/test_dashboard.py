"""The head-node dashboard: the model from node status documents (fresh, stale, garbage,
hostile), the page (escaped, self-contained, no script), the read-only server (routes, 404,
405, traversal, Host check, store errors, SIGTERM) and the page in headless Chromium."""
from __future__ import annotations

import gzip
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
from click.testing import CliRunner

from efajob.cli.main import main
from efajob.config import build_config
from efajob.dashboard.model import build_dashboard, jobs_to_dict, nodes_to_dict, parse_node_view
from efajob.dashboard.server import Collector, DashboardServer, job_href, max_status_age
from efajob.daemon.nodestatus import write_node_status
from efajob.dashboard.page import render_dashboard

from conftest import chromium_dump_dom, wait_until
from jobsim import NodePool, NodeSpec, healthy, job_records, write_store

NOW = 1_800_000_000.0
HOSTILE_USER = "\"><img src=x onerror=\"document.title='pwned-user'\">"
HOSTILE_PART = "<script>document.title='pwned-part'</script>"
HOSTILE_DEV = "<svg onload=alert(1)>"


def doc(host, *, age=2.0, tx=100.0, rx=90.0, jobs=(), devices=4, link=100.0, rates=None,
        healthy=True, cluster="c1", **extra):
    """A node status document as efajob/daemon/nodestatus.py writes it (schema v1)."""
    d = {"schema": "efajob/node-status", "version": 1, "cluster": cluster, "node": host,
         "instance_type": "p5.48xlarge", "time": NOW - age, "boot_id": "b",
         "daemon": {"pid": 1, "version": "0.1.0", "interval": 1.0, "healthy": healthy,
                    "last_sample": NOW - age, "last_sample_age": 0.1, "store": "ok"},
         "rates": {"rx_drops": 0.0, "retrans_pkts": 0.0} if rates is None else rates,
         "tx_gbps": tx, "rx_gbps": rx,
         "devices": [{"name": f"rdmap{i}s0", "state": "4: ACTIVE", "link_gbps": link,
                      "tx_gbps": None if tx is None else tx / devices,
                      "rx_gbps": None if rx is None else rx / devices} for i in range(devices)],
         "jobs": [{"key": k, "job_id": k.split(".")[0], "user": u, "partition": "gpu",
                   "start": NOW - 600} for k, u in jobs]}
    d.update(extra)
    return d


def build(docs, recent=(), max_age=60.0):
    return build_dashboard([(d.get("cluster", "c1") if isinstance(d, dict) else "c1", d) for d in docs],
                           list(recent), now=NOW, max_status_age=max_age)


# -- the model ---------------------------------------------------------------------------------
def test_fresh_stale_totals_and_running_jobs():
    d = build([doc("n2", jobs=[("7", "alice"), ("8", "bob")]), doc("n1", jobs=[("7", "alice")]),
               doc("n10", age=125.0, tx=999.0, rx=999.0, jobs=[("9", "eve")])])
    assert [n.host for n in d.nodes] == ["n1", "n2", "n10"]  # natural order
    assert [n.state for n in d.nodes] == ["ok", "ok", "stale"]
    assert d.nodes[2].problems == ["no status for 00:02:05"]
    t = d.totals
    # The stale node's old numbers are out of the totals and of the running jobs.
    assert (t.nodes, t.fresh, t.stale, t.warn) == (3, 2, 1, 0)
    assert (t.tx_gbps, t.rx_gbps, t.link_gbps) == (200.0, 180.0, 800.0)
    assert t.util == pytest.approx(0.25)
    assert (t.running_jobs, t.users) == (2, 2)
    run = {r.key: r for r in d.running}
    assert set(run) == {"7", "8"}
    assert run["7"].hosts == ["n1", "n2"] and run["7"].users == ["alice"]
    assert run["7"].tx_gbps == 200.0 and run["7"].shared_hosts == ["n2"]
    assert run["8"].hosts == ["n2"] and run["8"].start == NOW - 600
    assert d.nodes[0].util == pytest.approx(100 / 400)


def test_absent_is_not_zero():
    d = build([doc("n1", tx=None, rx=None, rates={}), doc("n2", rates={"rx_drops": 0.0})])
    n1, n2 = d.nodes
    assert n1.tx_gbps is None and n1.util is None and n1.rates == {}
    assert n2.rates == {"rx_drops": 0.0}
    assert d.totals.rates == {"rx_drops": 0.0}  # retrans_pkts: nobody reported it
    page = render_dashboard(d)
    row1 = re.search(r'<tr class="ok" data-host="n1">(.*?)</tr>', page).group(1)
    assert row1.count("n/a") >= 4 and ">0.0<" not in row1


def test_problems_device_errors_unhealthy_skew_store_error():
    bad = doc("n1", healthy=False)
    bad["devices"][1]["errors"] = {"cmds_err": 0.5, "no_completion_cmds": 0.1}
    bad["daemon"]["store"] = "database is locked"
    skew = doc("n2", age=-120.0)
    d = build([bad, skew])
    n1, n2 = d.nodes
    assert n1.state == "warn" and n1.problems == [
        "daemon unhealthy (last sample 0 s old)", "local store: database is locked",
        "EFA errors on rdmap1s0: cmds_err, no_completion_cmds"]
    assert n2.state == "warn" and n2.problems == ["node clock 00:02:00 ahead"] and n2.age_at(d.generated) == 0.0
    assert d.totals.warn == 2
    assert 'fill="#c62828"' in render_dashboard(d)  # the erring device's bar is red


def test_port_state_is_no_health_signal_but_unreadable_counters_and_missing_devices_are():
    """efa_query_port hard-codes ACTIVE: a "DOWN" in a status file is shown, never judged."""
    down = doc("n1")
    down["devices"][1]["state"] = "1: DOWN"
    sick = doc("n2", expected_devices=8)
    sick["devices"][2]["port_counters"] = 0
    d = build([down, sick])
    n1, n2 = d.nodes
    assert n1.state == "ok" and n1.problems == []
    assert n2.problems == ["port counters unreadable: rdmap2s0", "4 of 8 EFA devices"]
    assert 'fill="#c62828"' not in render_dashboard(build([down]))
    hot = render_dashboard(build([doc("n1", rates={"rx_drops": 5440.0, "retrans_pkts": 0.0})]))
    assert '<td class="n hot">5,440/s</td><td class=n>0</td>' in hot
    assert "}.ok{" not in hot and "\n.ok{" not in hot and ".badge.ok{" in hot  # rows are not painted


@pytest.mark.parametrize("bad", [
    None, [], "n1", {"node": "../../etc"}, {"node": ""}, {"node": "<b>x</b>"}, {"host": 5},
])
def test_unusable_documents_are_counted_not_raised(bad):
    d = build([bad, doc("n1")])
    assert [n.host for n in d.nodes] == ["n1"]
    assert d.notes == ["1 node status file(s) unusable (no valid node name)"]


def test_wrong_types_are_absent():
    g = doc("n1", tx="100", rx=float("nan"), rates={"rx_drops": "5", "retrans_pkts": -1.0},
            devices=0, jobs=[("1", "u")])
    g.update(time=10 ** 400, instance_type=["x"], devices="many", daemon=[1])
    g["jobs"] += [{"key": "../../x"}, {"job_id": 5}, "12", 7, {"key": "13.1", "user": 5, "start": 1e400}]
    n = parse_node_view(g, "c1", now=NOW, max_status_age=60)
    assert n is not None and n.tx_gbps is None and n.rx_gbps is None and n.time is None
    assert n.stale and n.problems == ["status file has no time"]
    assert n.rates == {} and n.devices == [] and n.instance_type is None
    assert [(j.key, j.user, j.start) for j in n.jobs] == [("1", "u", NOW - 600), ("12", None, None),
                                                         ("13.1", None, None)]
    assert build([dict(doc("n1"), time=float("inf"))]).nodes[0].stale


def test_duplicate_host_newest_wins_and_bad_cluster_dropped():
    d = build_dashboard([("c1", doc("n1", age=30, tx=1.0)), ("c1", doc("n1", age=3, tx=2.0)),
                         ("c2", doc("n1", tx=3.0)), ("../x", doc("n9"))],
                        [], now=NOW, max_status_age=60)
    assert [(n.cluster, n.host, n.tx_gbps) for n in d.nodes] == [("c1", "n1", 2.0), ("c2", "n1", 3.0)]
    assert d.clusters == ["c1", "c2"] and d.notes
    two = build_dashboard([("c1", doc("n1", rates={"rx_drops": 2.0})), ("c2", doc("n1"))], [],
                          now=NOW, max_status_age=60)
    page = render_dashboard(two)
    assert "<th>Cluster</th><th>Node</th>" in page
    assert '<td>c1</td><td><b>n1</b></td>' in page and '<td class="n hot">2.0/s</td>' in page


def test_json_views_are_plain_json():
    d = build([doc("n1", jobs=[("7", "alice")]), doc("n2", age=100)],
              recent=[{"cluster": "c1", "job_id": "5", "verdict": "Healthy", "running": False}])
    nodes = json.loads(json.dumps(nodes_to_dict(d)))
    assert nodes["schema"] == "efajob/dashboard-nodes" and nodes["totals"]["fresh"] == 1
    assert [(n["host"], n["state"]) for n in nodes["nodes"]] == [("n1", "ok"), ("n2", "stale")]
    assert nodes["nodes"][0]["devices"][0] == {"name": "rdmap0s0", "state": "ACTIVE",
                                               "link_gbps": 100.0, "tx_gbps": 25.0, "rx_gbps": 22.5,
                                               "errors": {}, "port_counters": None}
    jobs = json.loads(json.dumps(jobs_to_dict(d)))
    assert [r["key"] for r in jobs["running"]] == ["7"] and jobs["recent"][0]["job_id"] == "5"


def test_json_floats_rounded():
    nodes = nodes_to_dict(build([doc("n1", tx=1 / 3, rx=2 / 3)]))
    assert nodes["nodes"][0]["tx_gbps"] == 0.3333 and nodes["totals"]["util"] == 0.0017


def test_max_status_age():
    assert max_status_age(15.0) == 60.0 and max_status_age(30.0) == 120.0


# -- the page ----------------------------------------------------------------------------------
def hostile_dashboard():
    n = doc("n1", jobs=[("7", HOSTILE_USER)], instance_type=HOSTILE_PART)
    n["jobs"][0]["partition"] = HOSTILE_PART
    n["devices"][0]["name"] = HOSTILE_DEV
    n["daemon"]["store"] = HOSTILE_PART
    recent = [{"cluster": "c1", "job_id": "5", "restart": 1, "user": HOSTILE_USER,
               "state": HOSTILE_PART, "num_nodes": 2, "verdict": "<b>Failure</b>",
               "findings": [HOSTILE_PART], "tx_bytes": 10 ** 12, "start": NOW - 60},
              {"cluster": "c1", "job_id": "../../etc/passwd", "verdict": "Healthy"},
              {"cluster": "<x>", "job_id": "6", "verdict": "Warning"}]
    return build([n], recent)


def test_page_escapes_everything_and_has_no_script():
    page = render_dashboard(hostile_dashboard(), refresh=10, job_href=job_href)
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page.lower() and "<img" not in page and "<b>Failure" not in page
    assert re.search(r"<[^>]*\b(onerror|onload)=", page) is None
    assert "&quot;&gt;&lt;img src=x onerror=&quot;document.title=&#x27;pwned-user&#x27;&quot;&gt;" in page
    assert "&lt;script&gt;document.title=&#x27;pwned-part&#x27;&lt;/script&gt;" in page
    assert "&lt;b&gt;Failure&lt;/b&gt;" in page
    # Device names are in the node page (the table's rows name only erring devices).
    from efajob.dashboard.detail import render_node_page
    from efajob.dashboard.server import LINKS

    d = hostile_dashboard()
    node = render_node_page(d, d.nodes[0], LINKS)
    assert "&lt;svg onload=alert(1)&gt;" in node and "<svg onload" not in node and "<script" not in node
    # Only links to job reports, and only for valid ids and clusters; no other resource.
    assert set(re.findall(r'<a href="([^"]*)"', page)) == {"/job/7?cluster=c1",
                                                           "/job/5?cluster=c1&amp;restart=1"}
    assert re.search(r"<[^>]*\bsrc=", page) is None
    assert "default-src &#x27;none&#x27;" not in page and "default-src 'none'" in page
    assert '<meta http-equiv="refresh" content="10">' in page


def test_static_page_has_no_links_and_no_refresh():
    page = render_dashboard(hostile_dashboard())
    assert "<a " not in page and 'http-equiv="refresh"' not in page
    assert "static: does not refresh" in page


def test_empty_store_page():
    page = render_dashboard(build([]))
    assert "No node status files yet" in page and "No job records in the store yet" in page


# -- the server --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A store with real job records (jobsim, through the hooks' record builder) and node status
    files written by nodestatus.write_node_status, the daemon's writer."""
    root = tmp_path_factory.mktemp("dash")
    pool = NodePool(str(root / "sim"))
    specs = healthy(2)
    specs["n2"] = NodeSpec(tx_gbps=50, rx_gbps=50, fault="dead-device")
    write_store(str(root / "store"), job_records(pool, specs, job_id="66", cluster="c1",
                                                 user=HOSTILE_USER, device_limit=4))
    write_store(str(root / "store"), job_records(pool, healthy(2), job_id="67", cluster="c1",
                                                 user="alice", device_limit=4))
    now = time.time()
    for host, jobs in (("n1", [("70", "carol")]), ("n2", [("70", "carol")]), ("n3", [])):
        d = doc(host, jobs=jobs)
        d["time"] = now
        d["jobs"] = [dict(j, start=now - 90) for j in d["jobs"]]
        write_node_status(os.path.join(root, "store", "c1", "nodes", f"{host}.json"), d)
    old = doc("n4", tx=5.0, jobs=[("71", "dave")])
    old["time"] = now - 12 * 3600  # stale however long this module takes to run (not expired: 1 day)
    write_node_status(os.path.join(root, "store", "c1", "nodes", "n4.json"), old)
    gone = doc("n6")
    gone["time"] = now - 30 * 86400  # older than status_expiry: a node that left
    write_node_status(os.path.join(root, "store", "c1", "nodes", "n6.json"), gone)
    with open(os.path.join(root, "store", "c1", "nodes", "n5.json"), "w") as f:
        f.write("{half a file")
    return str(root / "store")


@pytest.fixture
def server(store):
    # Node status written once for the module: a long interval keeps n1-n3 fresh (age under
    # 4 x 3600 s) however slowly the tests run, while n4, 30 days old, stays stale.
    cfg = build_config({"cluster": "c1", "store": store, "status_interval": 3600.0}, env={},
                       node="head")
    srv = DashboardServer("127.0.0.1", 0, Collector(cfg, ttl=0.0), refresh=5)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    t.join(120)


def request(srv, method, path, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", srv.server_address[1], timeout=60)
    try:
        # The path is sent as is (not normalised); a Host header given replaces http.client's.
        c.putrequest(method, path, skip_host="Host" in (headers or {}), skip_accept_encoding=True)
        for k, v in (headers or {}).items():
            c.putheader(k, v)
        c.endheaders()
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read().decode("utf-8", "replace")
    finally:
        c.close()


@pytest.mark.integration
def test_routes(server):
    code, h, page = request(server, "GET", "/")
    assert code == 200 and h["Content-Type"] == "text/html; charset=utf-8"
    assert "default-src 'none'" in h["Content-Security-Policy"] and h["Cache-Control"] == "no-store"
    for host in ("n1", "n2", "n3", "n4"):
        assert f'data-host="{host}"' in page
    assert '<tr class="stale" data-host="n4">' in page and "n5.json unreadable" in page
    assert '<a href="/jobs/c1/70">70</a>' in page  # running (fresh status files): its job page
    assert '<a href="/job/70?cluster=c1">report</a>' in page  # and its report
    assert '<a href="/jobs/c1/71' not in page and ">71</span> (dave)" in page  # only a stale node lists it
    assert 'data-host="n6"' not in page and "1 node status file(s) of nodes that left" in page
    assert '<a class="s" href="/node/c1/n4"' in page  # the node map: stale n4, a link to its page
    assert '<a href="/job/66?cluster=c1">66</a>' in page and "&lt;img src=x" in page
    assert "<script" not in page.lower()

    code, h, body = request(server, "GET", "/api/nodes")
    nodes = json.loads(body)
    assert code == 200 and h["Content-Type"].startswith("application/json")
    assert [(n["host"], n["state"]) for n in nodes["nodes"]] == [
        ("n1", "ok"), ("n2", "ok"), ("n3", "ok"), ("n4", "stale")]
    assert nodes["totals"]["tx_gbps"] == 300.0 and nodes["max_status_age"] == 4 * 3600.0
    jobs = json.loads(request(server, "GET", "/api/jobs")[2])
    assert [(r["key"], r["hosts"]) for r in jobs["running"]] == [("70", ["n1", "n2"])]
    assert {r["job_id"]: r["verdict"] for r in jobs["recent"]} == {"66": "Failure", "67": "Healthy"}

    code, _, node = request(server, "GET", "/node/c1/n1")
    assert code == 200 and "Node n1 (c1)" in node and '<a href="/jobs/c1/70">70</a> (carol)' in node
    assert json.loads(request(server, "GET", "/api/node/c1/n4")[2])["node"]["state"] == "stale"
    code, _, job = request(server, "GET", "/jobs/c1/70")
    assert code == 200 and '<a href="/job/70?cluster=c1">Full report (HTML)</a>' in job
    assert job.count('<tr class="ok">') == 2  # its two nodes, with their rates
    api = json.loads(request(server, "GET", "/api/job/c1/70")[2])
    assert [n["host"] for n in api["nodes"]] == ["n1", "n2"] and api["running"]["tx_gbps"] == 200.0
    code, _, recent = request(server, "GET", "/jobs/c1/66")  # recent, not running: its summary
    assert code == 200 and "Failure" in recent and "Not running now" in recent
    for path in ("/node/c1/n9", "/node/c1/..", "/node/c1", "/jobs/c1/99", "/api/job/c1/../x",
                 "/node/%3Cx%3E/n1"):
        assert request(server, "GET", path)[0] == 404, path
    code, _, body = request(server, "GET", "/api/nodes?state=stale")
    assert json.loads(body)["matched"] == 1 and [n["host"] for n in json.loads(body)["nodes"]] == ["n4"]
    probs = json.loads(request(server, "GET", "/api/problems")[2])["problems"]
    assert probs[0]["kind"] == "stale" and probs[0]["hosts"] == ["n4"]

    code, h, rep = request(server, "GET", "/job/66?cluster=c1")
    assert code == 200 and "EFA job report: job 66, cluster c1" in rep and "<script" not in rep
    assert request(server, "GET", "/job/66")[0] == 200
    assert request(server, "GET", "/job/70")[0] == 200  # running: from the node status files
    assert request(server, "GET", "/healthz")[:3:2] == (200, "ok\n")
    # History: the refreshes so far left points (at most one per 30 s of the models' clock, so
    # one here), their values the totals the page shows; node and job pages carry theirs.
    hist = json.loads(request(server, "GET", "/api/history")[2])
    assert hist["schema"] == "efajob/dashboard-history" and hist["kind"] == "cluster"
    assert hist["points"] == 240 and hist["step"] == 30.0
    assert len(hist["series"]["t"]) >= 1 and hist["series"]["tx_gbps"][-1] == 300.0
    node_hist = json.loads(request(server, "GET", "/api/node/c1/n1")[2])["history"]
    assert node_hist["tx_gbps"][-1] == 100.0
    assert json.loads(request(server, "GET", "/api/job/c1/70")[2])["history"]["tx_gbps"][-1] == 200.0
    assert 'class="history"' in request(server, "GET", "/")[2]
    assert "Last hours" in request(server, "GET", "/node/c1/n1")[2]
    code, h, body = request(server, "HEAD", "/")
    assert code == 200 and body == "" and int(h["Content-Length"]) > 1000
    c = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=60)
    c.request("GET", "/", headers={"Accept-Encoding": "gzip, deflate"})
    r = c.getresponse()
    raw = r.read()
    c.close()
    assert r.getheader("Content-Encoding") == "gzip" and int(r.getheader("Content-Length")) == len(raw)
    assert 'data-host="n4"' in gzip.decompress(raw).decode() and len(raw) < len(page) / 3


@pytest.mark.integration
@pytest.mark.parametrize("path", [
    "/job/999", "/job/..%2F..%2Fetc", "/job/..%2f..%2fetc%2fpasswd", "/job/../../etc/passwd",
    "/job/66/../../../etc/passwd", "/job/%2e%2e", "/job/66%00", "/job/66?cluster=..%2F..",
    "/job/66?cluster=c1&restart=x", "/job/66?restart=3", "/job/", "/job", "/..%2F..%2Fetc/passwd",
    "/../../etc/passwd", "/static/x.css", "/api/nodes/../../etc/passwd", "/favicon.ico",
    "/index.html/..", "//etc/passwd",
])
def test_not_found_and_no_traversal(server, path):
    code, _, body = request(server, "GET", path)
    assert code == 404, (path, code, body)
    assert "root:" not in body


@pytest.mark.integration
@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "FOO"])
def test_read_only(server, method):
    code, h, body = request(server, method, "/")
    assert code == 405 and h["Allow"] == "GET, HEAD" and "read-only" in body


@pytest.mark.integration
def test_loopback_only_answers_to_loopback_names(server):
    port = server.server_address[1]
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", "[::1]:9815", "LOCALHOST"):
        assert request(server, "GET", "/healthz", {"Host": host})[0] == 200, host
    for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example"):
        assert request(server, "GET", "/", {"Host": host})[0] == 421, host


@pytest.mark.integration
def test_store_error_is_503_and_server_keeps_serving(tmp_path):
    not_a_dir = tmp_path / "store"
    not_a_dir.write_text("x")
    cfg = build_config({"cluster": "c1", "store": str(not_a_dir)}, env={}, node="head")
    srv = DashboardServer("127.0.0.1", 0, Collector(cfg, ttl=0.0))
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        code, _, body = request(srv, "GET", "/")
        assert code == 503 and "not a directory" in body
        assert request(srv, "GET", "/healthz")[0] == 200
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.mark.integration
def test_port_in_use_is_a_usage_error(tmp_path):
    from efajob.errors import UsageError

    cfg = build_config({"cluster": "c1", "store": str(tmp_path)}, env={}, node="head")
    a = DashboardServer("127.0.0.1", 0, Collector(cfg))
    try:
        with pytest.raises(UsageError, match="cannot listen on 127.0.0.1"):
            DashboardServer("127.0.0.1", a.server_address[1], Collector(cfg))
    finally:
        a.server_close()


def test_summaries_are_cached_until_the_job_dir_changes(store, monkeypatch):
    import efajob.report.build as report

    cfg = build_config({"cluster": "c1", "store": store}, env={}, node="head")
    col = Collector(cfg, ttl=0.0)
    calls = []
    real = report.build_report
    monkeypatch.setattr(report, "build_report", lambda *a, **k: calls.append(k["job_id"]) or real(*a, **k))
    first = col.collect().recent
    assert sorted(calls) == ["66", "67"]
    assert col.collect().recent == first and sorted(calls) == ["66", "67"]  # no rebuild
    d = os.path.join(store, "c1", "jobs", "67")
    st = os.stat(d)
    os.utime(d, (st.st_atime, st.st_mtime + 1))  # a record arrived
    col.collect()
    assert sorted(calls) == ["66", "67", "67"]


def config_file(tmp_path, store) -> str:
    p = tmp_path / "config.toml"
    p.write_text(f'cluster = "c1"\nstore = "{store}"\nstatus_interval = 3600.0\n')  # see server()
    return str(p)


def test_build_command_writes_the_page(store, tmp_path):
    out = tmp_path / "sub" / "dash.html"
    env = {"EFAJOB_CONFIG": config_file(tmp_path, store)}
    r = CliRunner().invoke(main, ["dashboard", "build", "--cluster", "c1", "-o", str(out)], env=env)
    assert r.exit_code == 0, r.output
    assert "4 node(s), 1 running and 2 recent job(s)" in r.output
    page = out.read_text()
    assert 'data-host="n3"' in page and "<a " not in page and "<script" not in page.lower()
    bad = CliRunner().invoke(main, ["dashboard", "build", "--cluster", "../x", "-o", str(out)], env=env)
    assert bad.exit_code == 2 and "cluster" in bad.output


@pytest.mark.integration
def test_serve_logs_and_stops_on_sigterm(store, tmp_path):
    env = dict(os.environ, EFAJOB_CONFIG=config_file(tmp_path, "/nonexistent"), PYTHONUNBUFFERED="1")
    p = subprocess.Popen([sys.executable, "-m", "efajob", "dashboard", "serve", "--store", store,
                          "--port", "0", "--no-slurm"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        line = p.stderr.readline()
        m = re.search(r"dashboard on http://127\.0\.0\.1:([0-9]+)/", line)
        assert m, line
        c = http.client.HTTPConnection("127.0.0.1", int(m.group(1)), timeout=60)
        c.request("GET", "/api/nodes")
        assert c.getresponse().status == 200
        c.close()
        log_line = p.stderr.readline()
        assert re.search(r'127\.0\.0\.1 "GET /api/nodes" 200 [0-9]+ [0-9.]+ ms', log_line), log_line
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=60) == 0
        rest = p.stderr.read()
        assert "stopping" in rest and "stopped" in rest
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(60)


# -- in a browser ------------------------------------------------------------------------------
@pytest.mark.integration
@pytest.mark.chromium
def test_page_in_headless_chromium(server, tmp_path):
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    p = chromium_dump_dom(url, str(tmp_path / "profile"))
    assert p.returncode == 0, p.stderr[-2000:]
    dom = p.stdout
    # What the browser built: every node row, the running job, the recent jobs with links.
    assert len(re.findall(r'<tr class="(ok|warn|stale)" data-host="n[0-9]+">', dom)) == 4
    assert dom.count('<svg class="devs"') == 4
    assert '<a href="/jobs/c1/70">70</a>' in dom and '<a href="/job/67?cluster=c1">67</a>' in dom
    assert re.search(r'<span class="badge Failure">Failure</span>', dom)
    # The hostile user name is text: no element made of it, no script ran (title is ours).
    assert "<script" not in dom.lower() and "<img" not in dom
    assert "&lt;img src=x onerror=\"document.title='pwned-user'\"&gt;" in dom
    assert "<title>EFA dashboard: c1</title>" in dom


def test_a_fifo_among_node_status_files_is_a_note_not_a_hang(tmp_path):
    """Issue 13, case 1: one FIFO in nodes/ made `/` and `/api/*` never answer again."""
    import threading

    from efajob.dashboard.statusdir import read_status_docs

    d = tmp_path / "c1" / "nodes"
    d.mkdir(parents=True)
    (d / "n1.json").write_text(json.dumps(doc("n1")))
    os.mkfifo(d / "n2.json")
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("v", read_status_docs(str(tmp_path), "c1")),
                         daemon=True)
    t.start()
    t.join(120)  # bounds a regression: it would block in open(2) forever
    assert not t.is_alive()
    docs, notes = out["v"]
    assert [c for c, _ in docs] == ["c1"]
    assert notes == ["node status c1/n2.json unreadable (not a regular file)"]


def test_a_store_that_does_not_answer_never_wedges_the_dashboard(tmp_path):
    """Issue 13, case 1: one blocking read hung `/` and `/api/*` for good (a lock held across
    the read), while /healthz said ok. Now a request waits at most the deadline: the last
    snapshot with a note, or 503 before there is one; /healthz says the store is stuck; and
    all is well again once the store answers. The hang is an Event, not a clock: the verdict
    does not depend on the machine's speed (the 0.05 s deadline only shortens the waits)."""
    from efajob.dashboard.server import Collector

    cfg = build_config({"cluster": "c1", "store": str(tmp_path)}, env={}, node="head")
    col = Collector(cfg, ttl=0.0, deadline=0.05)
    real, gate, calls = col.collect, threading.Event(), []

    def collect():
        calls.append(1)
        if len(calls) in (1, 3):  # the first read, and the third, hang until the gate opens
            assert gate.wait(120)
        return real()

    col.collect = collect
    srv = DashboardServer("127.0.0.1", 0, col)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        code, _, body = request(srv, "GET", "/")
        assert code == 503 and "has not answered" in body
        assert request(srv, "GET", "/healthz")[0] in (200, 503)  # stuck only past the deadline
        assert request(srv, "GET", "/api/nodes")[0] == 503
        gate.set()
        assert wait_until(lambda: request(srv, "GET", "/api/nodes")[0] == 200)
        gate.clear()  # the next read (the third) hangs again: the last snapshot is served
        code, _, body = request(srv, "GET", "/api/nodes")
        assert code == 200 and "has not answered" in body and "showing what it held" in body
        assert request(srv, "GET", "/healthz")[0] == 503
        gate.set()
        assert wait_until(lambda: request(srv, "GET", "/healthz")[0] == 200)
    finally:
        gate.set()
        srv.shutdown()
        srv.server_close()

