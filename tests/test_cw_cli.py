"""`efajob cloudwatch cost` and `efajob cloudwatch dashboard --dry-run` (no AWS needed)."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from efajob.cli.main import main
from efajob.config import CloudWatchConfig
from efajob.sinks.cloudwatch.cost import estimate_cost, metric_month_cost
from efajob.sinks.cloudwatch.dashboard import check_dashboard, metric_refs, published_specs


@pytest.fixture
def conf(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for k in ("AWS_REGION", "AWS_DEFAULT_REGION", "EFAJOB_CONFIG"):
        monkeypatch.delenv(k, raising=False)

    def write(**cw):
        lines = ['cluster = "prod.a"', f'state_dir = "{tmp_path}"', "[cloudwatch]"]
        lines += [f"{k} = {json.dumps(v)}" for k, v in cw.items()]
        p = tmp_path / "config.toml"
        p.write_text("\n".join(lines) + "\n")
        return str(p)

    return write


def run(*args):
    return CliRunner().invoke(main, ["cloudwatch", *args])


def test_cost_default_config(conf):
    res = run("cost", "--config", conf(), "--nodes", "16", "--instance-type", "p5.48xlarge",
              "--format", "json")
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    # 17 per node x 16 + 6 per cluster + 2 per type + 7 EMF job metrics.
    assert d["metric_count"] == 17 * 16 + 6 + 2 + 7
    assert d["metrics_usd"] == pytest.approx(0.30 * 287, abs=0.01)
    put = d["other"]["PutMetricData (1 per node per 60 s)"]
    assert put["count"] == 16 * 730 * 60  # one request per node per minute
    assert put["usd"] == pytest.approx(16 * 730 * 60 / 1000 * 0.01, abs=0.01)
    text = run("cost", "--config", conf(), "--nodes", "16").output
    assert "per node (17 x 16)" in text and "estimated total" in text and "$93.11/month" in text


def test_cost_shows_the_per_device_and_job_cardinality(conf):
    res = run("cost", "--config", conf(per_device=True, job_metrics=True), "--nodes", "16",
              "--jobs-per-month", "730", "--job-hours", "2", "--format", "json")
    d = json.loads(res.output)
    assert d["metrics"]["per device (4 x 32 devices x 16)"] == 4 * 32 * 16
    # 2 JobId metrics, each billed for 2 of the month's 730 hours, 730 times.
    assert d["metrics"]["JobId (2 per job x 730 jobs x 2 h)"] == pytest.approx(4.0)
    p4d = json.loads(run("cost", "--config", conf(), "--instance-type", "p4d.24xlarge",
                         "--format", "json").output)
    # No SRD counters and no rdma_write_wr_err on Nitro v3: 5 EFA + 3 error + 5 ENA.
    assert p4d["metrics"]["per node (13 x 1)"] == 13


def test_cost_errors(conf):
    res = run("cost", "--config", conf(), "--instance-type", "m5.large")
    assert res.exit_code == 2 and "unknown instance type 'm5.large'" in res.output
    res = run("cost", "--config", conf(period=45))
    assert res.exit_code == 2 and "cloudwatch.period 45" in res.output


def test_metric_tiers():
    assert metric_month_cost(10_000) == pytest.approx(3000.0)
    assert metric_month_cost(20_000) == pytest.approx(3000.0 + 1000.0)
    assert metric_month_cost(2_000_000) == pytest.approx(
        3000 + 240_000 * 0.10 + 750_000 * 0.05 + 1_000_000 * 0.02)


def test_many_datums_per_node_cost_more_requests():
    est = estimate_cost(CloudWatchConfig(per_device=True, period=60), nodes=1,
                        instance_type="p5.48xlarge")
    (line, _), = [x for x in est.other_lines if x[0].what.startswith("PutMetricData")]
    assert line.what == "PutMetricData (1 per node per 60 s)"  # 149 datums still fit in one


def test_dashboard_dry_run(conf):
    res = run("dashboard", "--config", conf(per_device=True), "--region", "eu-west-1",
              "--dry-run")
    assert res.exit_code == 0, res.output
    body = json.loads(res.output)
    assert check_dashboard(body, published_specs(per_device=True), "EFAJob") == []
    refs = metric_refs(body)
    assert all(dict(r.values)["ClusterName"] == "prod.a" for r in refs)
    assert any(r.dimensions == ("ClusterName", "InstanceId", "Device") for r in refs)
    assert not any("JobId" in r.dimensions for r in refs)  # job_metrics off
    for w in body["widgets"]:
        assert 0 <= w["x"] and w["x"] + w["width"] <= 24
        if w["type"] == "metric":
            assert w["properties"]["region"] == "eu-west-1"
            assert len(w["properties"]["metrics"]) <= 500


def test_dashboard_cluster_option_and_missing_region(conf):
    res = run("dashboard", "--config", conf(), "--cluster", "other", "--region", "us-east-1",
              "--dry-run")
    assert {dict(r.values)["ClusterName"] for r in metric_refs(json.loads(res.output))} == {"other"}
    res = run("dashboard", "--config", conf(), "--dry-run")
    assert res.exit_code == 2 and "no region" in res.output
    res = run("dashboard", "--config", conf(), "--cluster", "../x", "--region", "r", "--dry-run")
    assert res.exit_code == 2


def test_check_dashboard_finds_a_widget_without_dimensions():
    body = {"widgets": [{"type": "metric", "properties": {"title": "seed", "metrics": [
        ["EFAJob", "tx_bytes"]]}}]}  # the seed's dashboard: no dimensions, an empty widget
    (problem,) = check_dashboard(body, published_specs(), "EFAJob")
    assert "tx_bytes with dimensions []" in problem
