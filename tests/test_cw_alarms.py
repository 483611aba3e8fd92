"""`efajob cloudwatch alarms`: the alarms name only metrics the sink publishes per cluster,
take their thresholds from the config, cost what is stated; put into moto's server over HTTP,
and put again (replaced, not duplicated)."""
from __future__ import annotations

import json

import pytest

from conftest import cli_runner
from efajob.cli.main import main
from efajob.config import DEFAULT_THRESHOLDS
from efajob.sinks.cloudwatch.alarms import alarm_metric_count, build_alarms, monthly_cost
from efajob.sinks.cloudwatch.metrics import CLUSTER, CLUSTER_METRICS, catalogue


def metrics_of(alarm):
    if "MetricName" in alarm:
        return [alarm]
    return [m["MetricStat"]["Metric"] for m in alarm["Metrics"] if "MetricStat" in m]


def test_alarms_name_published_cluster_metrics_with_the_config_thresholds():
    th = dict(DEFAULT_THRESHOLDS, retrans_ratio_warning=5e-4)
    alarms = build_alarms(cluster="pc1", namespace="EFAJob", thresholds=th)
    assert [a["AlarmName"] for a in alarms] == [
        "efajob-pc1-rx-drops", "efajob-pc1-rx-drops-high", "efajob-pc1-retransmits",
        "efajob-pc1-retransmits-high"]
    published = {(s.name, s.dimensions) for s in catalogue() if s.scope == "cluster"}
    for a in alarms:
        for m in metrics_of(a):
            assert m["Namespace"] == "EFAJob" and m["MetricName"] in CLUSTER_METRICS
            assert (m["MetricName"], tuple(d["Name"] for d in m["Dimensions"])) in published
            assert m["Dimensions"] == [{"Name": CLUSTER[0], "Value": "pc1"}]
        assert a["TreatMissingData"] == "notBreaching" and not a["ActionsEnabled"]
        assert "AlarmActions" not in a
    assert [a["Threshold"] for a in alarms] == [0.0, 1e-3, 5e-4, 1e-2]
    assert [alarm_metric_count(a) for a in alarms] == [1, 2, 2, 2]
    assert monthly_cost(alarms) == 0.70


def test_actions_are_set_on_every_alarm():
    arn = "arn:aws:sns:us-east-1:123456789012:efa"
    for a in build_alarms(cluster="c", namespace="N", thresholds=DEFAULT_THRESHOLDS,
                          actions=[arn]):
        assert a["ActionsEnabled"] and a["AlarmActions"] == [arn]


def test_dry_run_prints_the_alarms_and_their_cost(tmp_path):
    conf = tmp_path / "c.toml"
    conf.write_text('cluster = "pc1"\n[thresholds]\nretrans_ratio_critical = 0.05\n')
    r = cli_runner().invoke(main, ["cloudwatch", "alarms", "--config", str(conf), "--dry-run"])
    assert r.exit_code == 0, r.output
    body, cost = r.stdout.rsplit("]\n", 1)
    alarms = json.loads(body + "]")
    assert alarms[-1]["Threshold"] == 0.05
    assert cost == ("4 alarms on 7 alarm metrics (standard resolution): $0.70/month at $0.10 "
                    "per alarm metric (US East list price; docs/cloudwatch.md)\n")


@pytest.mark.integration
@pytest.mark.moto
def test_alarms_put_into_moto_and_replaced_on_a_second_run(tmp_path, monkeypatch):
    import boto3

    from tests.test_cw_moto import MotoServer

    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    server = MotoServer(tmp_path)
    server.start()
    try:
        conf = tmp_path / "c.toml"
        conf.write_text(f'cluster = "pc1"\n[cloudwatch]\nregion = "us-east-1"\n'
                        f'endpoint_url = "{server.url}"\n')
        for _ in range(2):
            r = cli_runner().invoke(main, ["cloudwatch", "alarms", "--config", str(conf),
                                           "--action", "arn:aws:sns:us-east-1:123456789012:t"])
            assert r.exit_code == 0, r.output
            assert r.stdout.splitlines()[0] == "alarm efajob-pc1-rx-drops put in us-east-1"
        cw = boto3.client("cloudwatch", region_name="us-east-1", endpoint_url=server.url)
        got = {a["AlarmName"]: a for a in cw.describe_alarms(AlarmNamePrefix="efajob-")["MetricAlarms"]}
        assert sorted(got) == ["efajob-pc1-retransmits", "efajob-pc1-retransmits-high",
                               "efajob-pc1-rx-drops", "efajob-pc1-rx-drops-high"]
        assert got["efajob-pc1-rx-drops"]["MetricName"] == "rx_drops"
        assert got["efajob-pc1-rx-drops"]["AlarmActions"] == ["arn:aws:sns:us-east-1:123456789012:t"]
        ratio = got["efajob-pc1-retransmits"]
        assert [m["Id"] for m in ratio["Metrics"]] == ["num", "den", "ratio"]
        assert ratio["Metrics"][2]["Expression"] == "num / den" and ratio["Threshold"] == 1e-4
    finally:
        server.stop()


def test_alarms_say_why_they_fail(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    conf = tmp_path / "c.toml"
    conf.write_text('[cloudwatch]\nregion = "us-east-1"\nendpoint_url = "http://127.0.0.1:9"\n')
    r = cli_runner().invoke(main, ["cloudwatch", "alarms", "--config", str(conf)])
    assert r.exit_code != 0
    assert "PutMetricAlarm efajob-default-rx-drops failed: Could not connect" in r.stderr
