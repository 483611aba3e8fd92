"""The dashboard in real headless Chromium against 1,000 simulated node status files (issue 17):
problems on top, a filter narrows the table, a live update is seen, hostile names render as
text; a screenshot is kept (its path printed). 10,000 nodes are in bench/dashboard.py: writing
their files alone takes longer than a test may on a loaded 2-core machine.

No timing verdicts: the browser runs as long as it needs (bounded only against a hang), and
the update is waited for as a condition."""
from __future__ import annotations

import json
import os
import re
import threading
import time

import pytest

from conftest import chromium_dump_dom, chromium_screenshot, wait_until
from efajob.config import build_config
from efajob.dashboard.server import Collector, DashboardServer
from efajob.sim.statusfleet import fleet_doc, write_fleet

from test_dashboard import HOSTILE_PART, HOSTILE_USER, request

pytestmark = [pytest.mark.integration, pytest.mark.chromium]
NODES = 1000


@pytest.fixture(scope="module")
def fleet_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("fleet")
    store = str(root / "store")
    now = time.time()
    fleet = write_fleet(store, "c1", NODES, now, drop_every=37, missing_every=101, stale_every=211)
    # One node's running job carries hostile user and partition names (from the prolog's
    # environment, through the daemon's status file).
    hostile = fleet_doc("c1", "gpu-dy-p5-5", now, job=("500000", HOSTILE_USER), gbps=1000.0)
    hostile["jobs"][0]["partition"] = HOSTILE_PART
    with open(os.path.join(store, "c1", "nodes", "gpu-dy-p5-5.json"), "w") as f:
        json.dump(hostile, f)
    # status_interval 600 s: stale after 40 min, so the fleet's hour-old files are stale and
    # the others stay fresh however slowly this module runs.
    cfg = build_config({"cluster": "c1", "store": store, "status_interval": 600.0}, env={},
                       node="head")
    srv = DashboardServer("127.0.0.1", 0, Collector(cfg, ttl=0.0), refresh=5)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield srv, fleet, store
    srv.shutdown()
    srv.server_close()
    t.join(120)


def dom(srv, path, tmp_path):
    p = chromium_dump_dom(f"http://127.0.0.1:{srv.server_address[1]}{path}", str(tmp_path / "profile"),
                          timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    return p.stdout


def test_problems_on_top_and_every_node_on_the_map(fleet_server, tmp_path):
    srv, fleet, _ = fleet_server
    page = dom(srv, "/", tmp_path)
    alerts, mapped, table = (page.index('id="alerts"'), page.index('id="nodemap"'),
                             page.index('<table id="nodes"'))
    assert alerts < mapped < table
    lines = re.findall(r'<p class="(critical|warning)" data-kind="(\w+)"><b>([^<]*)</b>', page)
    # Worst first: the critical kind (devices missing) leads however many nodes drop packets.
    assert lines == [("critical", "device_missing", f"{len(fleet.missing)} nodes: device missing"),
                     ("warning", "rx_drops", f"{len(fleet.dropping)} nodes: rx drops"),
                     ("warning", "stale", f"{len(fleet.stale)} nodes: no recent status (stale)")]
    assert len(re.findall(r'<a class="\w+" href="/node/c1/gpu-dy-p5-\d+"', page)) == NODES
    assert page.count('<tr class="') == 100 and "1,000 nodes" in page  # one page of the table
    assert '<a href="/jobs/c1/500000">job 500000' in page  # the map's job groups link their page


def test_a_filter_narrows_the_table(fleet_server, tmp_path):
    srv, fleet, _ = fleet_server
    page = dom(srv, "/?problem=rx_drops&sort=host", tmp_path)
    hosts = re.findall(r'<tr class="warn" data-host="([\w-]+)">', page)
    assert hosts == fleet.dropping and f"{len(fleet.dropping)} of 1,000 nodes match" in page
    page = dom(srv, "/?q=gpu-dy-p5-[10-19]&state=ok", tmp_path)
    hosts = re.findall(r'<tr class="ok" data-host="([\w-]+)">', page)
    assert hosts == [f"gpu-dy-p5-{i}" for i in range(10, 20) if f"gpu-dy-p5-{i}" not in fleet.dropping]
    assert 'value="gpu-dy-p5-[10-19]"' in page  # the form shows the view the URL holds


def test_a_live_update_is_seen(fleet_server, tmp_path):
    srv, fleet, store = fleet_server
    host = "gpu-dy-p5-2"
    assert f'<tr class="ok" data-host="{host}">' in dom(srv, f"/?q={host}", tmp_path)
    path = os.path.join(store, "c1", "nodes", f"{host}.json")
    with open(path + ".tmp", "w") as f:  # the daemon's next write: now dropping
        json.dump(fleet_doc("c1", host, time.time(), job=("500000", "alice"), gbps=1000.0, drops=80.0), f)
    os.replace(path + ".tmp", path)
    assert wait_until(lambda: "rx_drops" in request(srv, "GET", f"/api/node/c1/{host}")[2])
    page = dom(srv, f"/?q={host}", tmp_path)
    assert f'<tr class="warn" data-host="{host}">' in page
    assert f"Live, last 60 s: {host} dropped" in dom(srv, f"/node/c1/{host}", tmp_path)


def test_hostile_names_render_as_text(fleet_server, tmp_path):
    srv, _, _ = fleet_server
    for path in ("/?q=gpu-dy-p5-5", "/node/c1/gpu-dy-p5-5", "/jobs/c1/500000"):
        page = dom(srv, path, tmp_path)
        assert "<img" not in page and "<script>document" not in page, path
        assert "pwned" not in page.split("<title>")[1].split("</title>")[0]  # no script ran
        assert "&lt;img src=x onerror=\"document.title='pwned-user'\"&gt;" in page, path


def test_screenshot_kept(fleet_server, tmp_path):
    srv, _, _ = fleet_server
    png = str(tmp_path / "dashboard-1000-nodes.png")
    p = chromium_screenshot(f"http://127.0.0.1:{srv.server_address[1]}/", str(tmp_path / "profile"),
                            png, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    print(f"screenshot: {png}")
