"""The CloudWatch sink without a server: backoff on throttling (botocore Stubber), the spool
(bounded, counted drops, survives a restart), invalid datums isolated by bisection, flush,
a sampling loop that never waits, identity and config rules."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import threading

import pytest

from efajob.sinks.cloudwatch.sink import (CloudWatchSink, classify_error, resolve_identity,
                                          validate_period)
from efajob.config import build_config
from efajob.sinks.cloudwatch.metrics import Identity
from efajob.sinks.cloudwatch.spool import Spool
from efajob.errors import ConfigError
from tests.test_cw_metrics import Node, T0

IDENT = Identity("c1", "i-0123456789abcdef0", "p5.48xlarge")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_cfg(tmp_path, **cw):
    section = {"enabled": True, "region": "us-east-1", "instance_id": IDENT.instance_id,
               "instance_type": "p5.48xlarge"}
    section.update(cw)
    return build_config({"cluster": "c1", "state_dir": str(tmp_path / "state"),
                         "cloudwatch": section}, env={}, node="n1")


def client_error(code, status=400, op="PutMetricData"):
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": code},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, op)


class FakeCW:
    """put_metric_data recorder; `fail` decides per call (returns an exception or None)."""

    def __init__(self, fail=None):
        self.calls = []
        self.fail = fail or (lambda kw: None)
        self.attempts = 0

    def put_metric_data(self, **kw):
        self.attempts += 1
        err = self.fail(kw)
        if err is not None:
            raise err
        self.calls.append(copy.deepcopy(kw))
        return {}

    def datums(self):
        return [d for c in self.calls for d in c["MetricData"]]


class FakeLogs:
    def __init__(self):
        self.groups, self.events, self.rejected = {}, [], None

    def create_log_group(self, logGroupName):
        if logGroupName in self.groups:
            raise client_error("ResourceAlreadyExistsException", op="CreateLogGroup")
        self.groups[logGroupName] = set()

    def create_log_stream(self, logGroupName, logStreamName):
        self.groups[logGroupName].add(logStreamName)

    def put_log_events(self, logGroupName, logStreamName, logEvents):
        if logStreamName not in self.groups.get(logGroupName, ()):
            raise client_error("ResourceNotFoundException", op="PutLogEvents")
        self.events.extend(logEvents)
        return {"rejectedLogEventsInfo": self.rejected} if self.rejected else {}


class FakeClock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def sink_for(tmp_path, cw=None, logs=None, **kw):
    kw.setdefault("start", False)
    kw.setdefault("sleep", lambda s: None)
    kw.setdefault("rng", lambda: 0.5)
    cfg = kw.pop("cfg", None) or make_cfg(tmp_path)
    return CloudWatchSink(cfg, identity=IDENT, region="us-east-1", wall=lambda: T0 + 600,
                          clients={"cloudwatch": cw or FakeCW(), "logs": logs or FakeLogs()}, **kw)


def feed(sink, node, seconds, tx=1000):
    sent = 0
    for _ in range(seconds):
        sink.on_tick(node.step(1.0, {"tx_bytes": tx}))
        sent += tx * len(node.values)
    return sent


def node_sum(datums, name="tx_bytes"):
    return sum(d["StatisticValues"]["Sum"] for d in datums if d["MetricName"] == name
               and [x["Name"] for x in d["Dimensions"]] == ["ClusterName", "InstanceId"])


# -- throttling and backoff ------------------------------------------------------------------
def test_throttling_backs_off_with_jitter_and_loses_nothing_stubber(tmp_path):
    import boto3
    from botocore.stub import Stubber

    client = boto3.client("cloudwatch", region_name="us-east-1", aws_access_key_id="x",
                          aws_secret_access_key="x")
    got = []
    client.meta.events.register("before-parameter-build.cloudwatch.PutMetricData",
                                lambda params, **_: got.append(copy.deepcopy(params)))
    stub = Stubber(client)
    for _ in range(2):
        stub.add_client_error("put_metric_data", service_error_code="Throttling",
                              service_message="Rate exceeded", http_status_code=400)
    stub.add_response("put_metric_data", {})
    rolls = iter([0.0, 1.0])
    delays = []
    with stub:
        sink = sink_for(tmp_path, cw=client, rng=lambda: next(rolls), sleep=delays.append,
                        backoff_base=0.2)
        sent = feed(sink, Node(), 15)  # within one minute: one request
        sink.close_period()
        sink.process()
        stub.assert_no_pending_responses()
    # Attempt 1 waits base*[0.5, 1] (jitter 0 -> 0.1), attempt 2 base*2*[0.5, 1] (jitter 1 -> 0.4).
    assert delays == pytest.approx([0.1, 0.4])
    assert sink.counts["retries"] == 2 and sink.counts["spooled_items"] == 0
    assert len(got) == 3 and got[0] == got[2]  # the same request, resent whole
    assert node_sum(got[-1]["MetricData"]) == sent


def test_persistent_throttling_spools_then_drains_in_order(tmp_path):
    clock = FakeClock()
    down = {"on": True}
    cw = FakeCW(lambda kw: client_error("Throttling") if down["on"] else None)
    sink = sink_for(tmp_path, cw=cw, clock=clock, backoff_base=1.0, backoff_cap=8.0)
    node = Node()
    sent = 0
    for _minute in range(5):
        sent += feed(sink, node, 60)
        sink.process()
        clock.t += 60
    # 40 s into a minute: five periods closed in five minutes, all spooled.
    assert sink.counts["outages"] == 1 and sink.stats()["spooled_now"] == 5
    assert cw.calls == []
    # Two inline retries (base 1 s: 0.75, 1.5), then the spool is retried once a minute here,
    # each time after a longer wait, capped at 8 s (equal jitter, rng 0.5: 3/4 of the step).
    assert sink.delays == [0.75, 1.5, 1.5, 3.0, 6.0, 6.0]
    down["on"] = False
    clock.t += 10
    sink.process()
    sink.close_period()
    sink.process()
    st = sink.stats()
    assert st["spooled_now"] == 0 and not sink._outage
    stamps = [c["MetricData"][0]["Timestamp"] for c in cw.calls]
    assert stamps == sorted(stamps)  # oldest first
    assert node_sum(cw.datums()) == sent


def test_connection_errors_are_retried(tmp_path):
    from botocore.exceptions import EndpointConnectionError

    errs = [EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), client_error("x", 503)]
    cw = FakeCW(lambda kw: errs.pop(0) if errs else None)
    sink = sink_for(tmp_path, cw=cw, inline_attempts=5)
    sent = feed(sink, Node(), 61)
    sink.process()
    assert sink.counts["retries"] == 2 and node_sum(cw.datums()) > 0
    sink.flush(1.0)
    assert node_sum(cw.datums()) == sent


@pytest.mark.parametrize("exc, kind", [
    (client_error("Throttling"), "retry"),
    (client_error("ThrottlingException"), "retry"),
    (client_error("InternalServiceFault", 500), "retry"),
    (client_error("Whatever", 502), "retry"),
    (client_error("InvalidParameterValue"), "fatal"),
    (client_error("ResourceNotFoundException"), "missing"),
    (ValueError("bug"), "fatal"),
])
def test_classify_error(exc, kind):
    assert classify_error(exc) == kind


def test_classify_connection_and_credentials():
    from botocore.exceptions import (ConnectTimeoutError, EndpointConnectionError,
                                     NoCredentialsError, ReadTimeoutError)

    for e in (EndpointConnectionError(endpoint_url="u"), ConnectTimeoutError(endpoint_url="u"),
              ReadTimeoutError(endpoint_url="u"), NoCredentialsError()):
        assert classify_error(e) == "retry"


# -- invalid data ----------------------------------------------------------------------------
def test_an_invalid_datum_is_isolated_by_bisection(tmp_path):
    cw = FakeCW(lambda kw: client_error("InvalidParameterValue") if any(
        d["MetricName"] == "bad" for d in kw["MetricData"]) else None)
    sink = sink_for(tmp_path, cw=cw)
    datums = [{"MetricName": "bad" if i == 13 else f"m{i}", "Value": 1.0, "Timestamp": T0}
              for i in range(40)]
    sink._enqueue([{"kind": "metrics", "namespace": "EFAJob", "datums": datums, "count": 40}])
    sink.process()
    assert len(cw.datums()) == 39 and sink.counts["rejected_datums"] == 1
    assert sink.counts.get("spooled_items", 0) == 0


def test_datums_that_would_break_a_request_are_not_sent(tmp_path):
    cw = FakeCW()
    sink = sink_for(tmp_path, cw=cw)
    good = {"MetricName": "ok", "Value": 1.0, "Timestamp": T0 + 600}
    sink._enqueue_datums([good, dict(good, Value=float("nan")),
                          dict(good, Timestamp=T0 - 20 * 86400)])
    sink.process()
    assert [d["MetricName"] for d in cw.datums()] == ["ok"]
    assert sink.counts["rejected_datums"] == 2


# -- the spool -------------------------------------------------------------------------------
def item(n, size=0):
    return {"kind": "metrics", "namespace": "N", "datums": [{"pad": "x" * size}], "count": n}


def test_spool_is_bounded_and_counts_what_it_drops(tmp_path, caplog):
    ns = iter(range(1, 10**6))
    sp = Spool(str(tmp_path / "sp"), 3000, wall_ns=lambda: next(ns))
    for k in range(10):
        assert sp.put(item(k + 1, 900))
    assert sp.bytes <= 3000 and len(sp) < 10
    dropped = 10 - len(sp)
    assert sp.dropped_items == dropped and sp.dropped_count == sum(range(1, dropped + 1))
    assert "spool is full" in caplog.text
    name, oldest = sp.oldest()
    assert oldest["count"] == dropped + 1  # the oldest left is the next one
    # Too large for the whole spool: refused, counted.
    assert not sp.put(item(5, 5000)) and sp.dropped_count == sum(range(1, dropped + 1)) + 5
    # A new Spool over the same directory (daemon restart) sees the same requests.
    again = Spool(str(tmp_path / "sp"), 3000)
    assert len(again) == len(sp) and again.bytes == sp.bytes


def test_spool_drops_unreadable_files(tmp_path):
    sp = Spool(str(tmp_path / "sp"), 10_000)
    sp.put(item(1))
    sp.put(item(2))
    first = sorted(os.listdir(tmp_path / "sp"))[0]
    (tmp_path / "sp" / first).write_text("{not json")
    name, got = sp.oldest()
    assert got["count"] == 2 and sp.dropped_items == 1 and len(sp) == 1


def test_spool_survives_a_restart_and_is_sent_first(tmp_path):
    from botocore.exceptions import EndpointConnectionError

    dead = FakeCW(lambda kw: EndpointConnectionError(endpoint_url="http://127.0.0.1:1"))
    node = Node()
    s1 = sink_for(tmp_path, cw=dead, inline_attempts=1)
    sent = feed(s1, node, 150)  # 40 s into a minute: 20 + 60 + 60 + 10 s, four periods
    s1.process()
    s1.flush(1.0)
    s1.close()
    assert s1.stats()["spooled_now"] == 4 and dead.calls == []
    spool_dir = tmp_path / "state" / "cloudwatch-spool"
    assert len(os.listdir(spool_dir)) == 4
    live = FakeCW()
    s2 = sink_for(tmp_path, cw=live)
    s2.process()
    assert node_sum(live.datums()) == sent and os.listdir(spool_dir) == []
    assert s2.counts["unspooled_items"] == 4


# -- threads: the sampling loop never waits, flush sends the open period -----------------------
def test_on_tick_never_waits_on_a_slow_endpoint(tmp_path):
    # The endpoint hangs until released. Had on_tick waited on it, the ticks could not all
    # return while it still hangs: that is the check, not a wall-clock bound (which a busy CI
    # machine breaks). The 120 s join only bounds a hang.
    release = threading.Event()
    entered = threading.Event()

    def hang(kw):
        entered.set()
        return None if release.wait(300) else client_error("x", 500)

    cw = FakeCW(hang)
    sink = sink_for(tmp_path, cw=cw, start=True)
    node = Node()
    sent = []

    def ticks():
        for _ in range(200):  # several periods while the endpoint hangs
            sink.on_tick(node.step(1.0, {"tx_bytes": 7}))
            sent.append(7 * 2)

    try:
        t = threading.Thread(target=ticks, daemon=True)
        t.start()
        t.join(120)
        assert not t.is_alive() and len(sent) == 200
        assert entered.wait(120)  # the worker did reach the endpoint, and is stuck there
        assert not release.is_set() and cw.calls == []
        release.set()
        sink.flush(5.0)
        assert node_sum(cw.datums()) == sum(sent)
    finally:
        release.set()
        sink.close()


def test_flush_sends_the_open_period_and_spools_what_fails(tmp_path):
    from botocore.exceptions import EndpointConnectionError

    cw = FakeCW()
    sink = sink_for(tmp_path, cw=cw, start=True, backoff_base=3600.0)
    sent = feed(sink, Node(), 10)
    sink.flush(120.0)  # returns once the queue is empty: the timeout only bounds a hang
    assert node_sum(cw.datums()) == sent
    # Endpoint down at SIGTERM: no backoff (an hour here), straight to the spool. flush()
    # returns when nothing is queued or in flight, so the spool holds the batch by then; a
    # sink that backed off would still hold it in its queue.
    cw.fail = lambda kw: EndpointConnectionError(endpoint_url="u")
    feed(sink, Node(), 10)
    sink.flush(120.0)
    st = sink.stats()
    sink.close()
    assert st["spooled_now"] == 1 and not st["queued"]


# -- job records -----------------------------------------------------------------------------
RECORD = {"cluster": "c1", "job_id": "77", "restart": 0, "host": "n1", "user": "alice",
          "partition": "gpu", "start": T0, "end": T0 + 300, "elapsed_s": 300.0,
          "totals": {"tx_bytes": 123, "rx_bytes": 456, "rx_drops": 0}, "complete": True,
          "rates": {"avg_tx_gbps": 1.0, "peak_tx_gbps": 2.0}, "shared": []}


def test_record_becomes_an_emf_event_and_the_stream_is_created(tmp_path):
    logs = FakeLogs()
    sink = sink_for(tmp_path, logs=logs)
    sink.on_record(RECORD)
    sink.process()
    assert logs.groups == {"/efajob/c1": {"n1"}}
    (ev,) = logs.events
    doc = json.loads(ev["message"])
    assert ev["timestamp"] == int((T0 + 300) * 1000) == doc["_aws"]["Timestamp"]
    assert doc["totals"] == RECORD["totals"] and doc["JobId"] == "77" and doc["User"] == "alice"
    assert doc["job_tx_bytes"] == 123 and "job_retrans_pkts" not in doc  # absent, not 0
    names = {m["Name"] for m in doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert "JobId" not in doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0]
    assert names == {"job_tx_bytes", "job_rx_bytes", "job_rx_drops", "job_peak_tx_gbps",
                     "job_seconds"}
    assert sink.counts["published_events"] == 1


def test_rejected_log_events_are_counted(tmp_path):
    logs = FakeLogs()
    logs.create_log_group("/custom")
    logs.create_log_stream("/custom", "n1")
    logs.rejected = {"tooOldLogEventEndIndex": 0}
    sink = sink_for(tmp_path, logs=logs, cfg=make_cfg(tmp_path, log_group="/custom"))
    sink.on_record(RECORD)
    sink.process()
    assert sink.counts["rejected_events"] == 1 and sink.counts.get("published_events", 0) == 0


# -- config and identity ---------------------------------------------------------------------
def test_identity_from_config_without_imds(tmp_path):
    def no_imds():
        raise AssertionError("IMDS must not be asked when the config says everything")

    ident, region = resolve_identity(make_cfg(tmp_path), fetch=no_imds)
    assert ident == IDENT and region == "us-east-1"


def test_identity_from_imds_then_fallbacks(tmp_path):
    cfg = make_cfg(tmp_path, instance_id=None, instance_type=None, region=None)
    found = {"instance_id": "i-0aaaaaaaaaaaaaaaa", "instance_type": "p5en.48xlarge",
             "region": "eu-north-1"}
    ident, region = resolve_identity(cfg, fetch=lambda: found, env={})
    assert (ident.instance_id, ident.instance_type, region) == (
        "i-0aaaaaaaaaaaaaaaa", "p5en.48xlarge", "eu-north-1")
    # Off EC2: the node name, the environment's region; no region at all is a config error.
    ident, region = resolve_identity(cfg, fetch=dict, env={"AWS_REGION": "us-west-2"})
    assert (ident.instance_id, ident.instance_type, region) == ("n1", None, "us-west-2")
    with pytest.raises(ConfigError, match="region"):
        resolve_identity(cfg, fetch=dict, env={})


@pytest.mark.parametrize("period, ok", [(60, True), (300, True), (10, True), (1, True),
                                        (45, False), (90, False), (0, False)])
def test_period_must_be_one_cloudwatch_can_aggregate(period, ok):
    if ok:
        assert validate_period(period) == period
    else:
        with pytest.raises(ConfigError, match="period"):
            validate_period(period)


def test_build_sinks_builds_cloudwatch_and_botocore_is_lazy(tmp_path):
    code = f"""
import sys
from efajob.config import build_config
from efajob.sinks.registry import build_sinks
off = build_config({{"cluster": "c1", "state_dir": {str(tmp_path / 's')!r}}}, env={{}}, node="n1")
assert build_sinks(off) == []
assert "botocore" not in sys.modules and "efajob.sinks.cloudwatch.sink" not in sys.modules
on = build_config({{"cluster": "c1", "state_dir": {str(tmp_path / 's')!r}, "cloudwatch": {{
    "enabled": True, "region": "us-east-1", "instance_id": "i-0123456789abcdef0",
    "instance_type": "p5.48xlarge", "endpoint_url": "http://127.0.0.1:9"}}}}, env={{}}, node="n1")
(s,) = build_sinks(on)
assert s.name == "cloudwatch" and "botocore" in sys.modules
s.flush(1.0)
s.close()
print("ok")
"""
    env = dict(os.environ, AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x",
               PYTHONPATH=REPO)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, env=env, cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


@pytest.mark.parametrize("info, bad", [
    ({}, 0),
    ({"tooOldLogEventEndIndex": 1}, 2),
    ({"tooNewLogEventStartIndex": 3}, 2),
    ({"expiredLogEventEndIndex": 0, "tooNewLogEventStartIndex": 4}, 2),
    ({"tooOldLogEventEndIndex": 4}, 5),
])
def test_rejected_log_event_indexes(info, bad):
    from efajob.sinks.cloudwatch.client import rejected_count

    assert rejected_count(info, 5) == bad
