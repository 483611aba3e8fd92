"""slurm/grafana/efajob-dashboard.json: every query names series and labels a live exporter
serves, parses (promtool), and returns data from a real Prometheus scraping a live exporter
on a simulated node running a job; each legend names labels the query's result has."""
from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from conftest import require_binary
from promlive import check_names, live_series

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DASHBOARD = os.path.join(REPO, "slurm", "grafana", "efajob-dashboard.json")
# Grafana's variables as a query reaches Prometheus: $__rate_interval is at least four scrape
# intervals (15 s scrapes: 1 m); $job_id "All" is the variable's allValue.
VARIABLES = {"$__rate_interval": "1m", "$job_id": ".*"}


def load():
    with open(DASHBOARD) as f:
        return json.load(f)


def queries(scrape_interval: str = "1m"):
    """(panel title, PromQL as sent, legendFormat) of every panel target, and the variables."""
    out = []
    for p in load()["panels"]:
        for t in p.get("targets", ()):
            expr = t["expr"]
            for var, value in {**VARIABLES, "$__rate_interval": scrape_interval}.items():
                expr = expr.replace(var, value)
            assert "$" not in expr, (p["title"], expr)
            out.append((p["title"], expr, t.get("legendFormat", "")))
    return out


def test_dashboard_shape():
    d = load()
    assert d["uid"] == "efajob"
    titles = [p["title"] for p in d["panels"]]
    assert len(titles) == len(set(titles))
    for want in ("EFA throughput, whole cluster", "EFA transmit per node (heat map)",
                 "Receive drops per node", "SRD retransmitted share of packets sent",
                 "RDMA work-request errors", "Job EFA throughput (sum over its nodes)"):
        assert want in titles
    (job_var,) = [v for v in d["templating"]["list"] if v["name"] == "job_id"]
    assert job_var["definition"] == "label_values(efajob_job_active, job_id)"
    assert len(queries()) >= 20
    # Panels on the 24-wide grid, none overlapping.
    cells = set()
    for p in d["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, p["title"]
                cells.add((x, y))


def test_every_query_names_series_and_labels_the_exporter_serves(tmp_path):
    live = live_series(tmp_path)
    for _, expr, _ in queries():
        check_names(expr, live)
    check_names("efajob_job_active", live)  # the job_id variable's query


@pytest.mark.prometheus
def test_every_query_parses(tmp_path):
    # promtool parses PromQL only in rule files: each query as a recording rule.
    promtool = require_binary("promtool")
    rules = {"groups": [{"name": "grafana", "rules": [
        {"record": f"efajob_grafana:query{i}", "expr": expr}
        for i, (_, expr, _) in enumerate(queries())]}]}
    (tmp_path / "q.yml").write_text(json.dumps(rules))  # JSON is YAML
    p = subprocess.run([promtool, "check", "rules", str(tmp_path / "q.yml")],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr


@pytest.mark.integration
@pytest.mark.prometheus
def test_every_query_returns_data_from_a_real_prometheus(tmp_path):
    from test_prometheus_server import Driver, PrometheusServer, exporter_node, wait_for

    require_binary("prometheus")
    d, node, port, mono = exporter_node(tmp_path, "n1", [("77", "bob")], devices=4)
    drv = Driver([(d, node, mono, 400, 200)])
    drv.thread.start()
    prom = PrometheusServer(tmp_path, [port])
    try:
        prom.wait_up(1)
        # Scrapes every second here: a 10 s window holds the two samples rate() needs.
        for title, expr, legend in queries("10s"):
            got = wait_for(lambda q=expr: prom.query(q), 120)  # bounds a hang only
            assert got, f"{title}: no data for {expr}"
            for label in re.findall(r"\{\{\s*([a-z_]+)\s*\}\}", legend):
                assert all(label in r["metric"] for r in got), (title, label, got[0]["metric"])
    finally:
        drv.close()
        prom.close()
