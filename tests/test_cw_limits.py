"""Every CloudWatch limit, enforced by our code, checked against the botocore service model and
the serializers botocore would use (moto enforces none of them)."""
from __future__ import annotations

import datetime as dt
import json
import math
from urllib.parse import urlencode

import pytest

from efajob.sinks.cloudwatch import limits as L
from efajob.sinks.cloudwatch.emf import (build_emf_documents, build_job_events, parse_emf,
                                         render_event)
from efajob.errors import SinkError

NOW = 1_790_000_000.0


def datum(i: int = 0, ndims: int = 2, **kw) -> dict:
    d = {
        "MetricName": f"metric_{i % 50}",
        "Dimensions": [{"Name": f"Dim{k}", "Value": f"value-{i}-{k}"} for k in range(ndims)],
        "Timestamp": NOW - 60,
        "StatisticValues": {"SampleCount": 60.0, "Sum": 123456789.0 + i, "Minimum": 0.5,
                            "Maximum": 9.87654321e10},
        "Unit": "Bytes/Second",
        "StorageResolution": 60,
    }
    d.update(kw)
    return d


# -- the service model ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def models():
    import botocore.session

    s = botocore.session.get_session()
    return s.get_service_model("cloudwatch"), s.get_service_model("logs")


def test_constants_match_the_botocore_model(models):
    cw, logs = models
    md = cw.operation_model("PutMetricData").input_shape.members["MetricData"].member
    assert md.members["Dimensions"].metadata["max"] == L.MAX_DIMENSIONS
    dim = md.members["Dimensions"].member
    assert dim.members["Name"].metadata["max"] == L.MAX_NAME_CHARS
    assert dim.members["Value"].metadata["max"] == L.MAX_DIMENSION_VALUE_CHARS
    assert md.members["MetricName"].metadata["max"] == L.MAX_NAME_CHARS
    # PutMetricData accepts gzip bodies (what `request_min_compression_size_bytes` relies on).
    assert "gzip" in cw.operation_model("PutMetricData").request_compression["encodings"]
    ev = logs.operation_model("PutLogEvents").input_shape.members["logEvents"]
    assert ev.metadata["max"] == L.MAX_LOG_EVENTS


def _serialized_sizes(models, datums):
    import botocore.serialize as bs

    op = models[0].operation_model("PutMetricData")
    params = {"Namespace": "EFAJob", "MetricData": [
        dict(d, Timestamp=dt.datetime.fromtimestamp(d["Timestamp"], dt.timezone.utc))
        for d in datums]}
    sizes = {}
    for proto in ("query", "json", "smithy-rpc-v2-cbor"):
        body = bs.SERIALIZERS[proto]().serialize_to_request(params, op)["body"]
        sizes[proto] = len(urlencode(body)) if isinstance(body, dict) else len(body)
    return sizes


@pytest.mark.parametrize("kind", ["stats", "values", "value", "long_dims"])
def test_size_estimate_bounds_every_protocol(models, kind):
    if kind == "stats":
        ds = [datum(i) for i in range(50)]
    elif kind == "values":
        ds = [datum(i, Values=[i * 1.1 + k for k in range(150)], Counts=[1.0] * 150)
              for i in range(5)]
        for d in ds:
            del d["StatisticValues"]
    elif kind == "value":
        ds = [datum(i, Value=float(i) / 3) for i in range(50)]
        for d in ds:
            del d["StatisticValues"]
    else:
        ds = [datum(i, ndims=30) for i in range(10)]
        for d in ds:
            for dim in d["Dimensions"]:
                dim["Value"] = "x/é&=" * 200  # url-escaping makes these ~3x longer in query
    estimate = sum(L.estimate_datum_bytes(d) for d in ds)
    sizes = _serialized_sizes(models, ds)
    assert all(estimate >= s for s in sizes.values()), (estimate, sizes)
    # ... and not absurdly pessimistic (batches would be needlessly small).
    assert estimate < 2 * max(sizes.values()), (estimate, sizes)


def test_batches_respect_count_and_bytes_under_real_serializers(models):
    ds = [datum(i, ndims=30) for i in range(600)]
    for d in ds:
        for dim in d["Dimensions"]:
            dim["Value"] = "v" * 60
    batches = L.batch_datums(ds)
    assert [d for b in batches for d in b] == ds  # order kept, nothing lost
    assert len(batches) > 3  # the byte limit, not just the count, split them
    for b in batches:
        assert len(b) <= L.MAX_DATUMS_PER_REQUEST
        assert max(_serialized_sizes(models, b).values()) <= L.MAX_REQUEST_BYTES


def test_count_limit_splits_at_1000():
    batches = L.batch_datums([datum(i, ndims=0) for i in range(2001)])
    assert [len(b) for b in batches] == [1000, 1000, 1]


def test_our_datums_pass_botocore_validation(models):
    from botocore.validate import ParamValidator

    from efajob.sinks.cloudwatch.client import boto_datum

    op = models[0].operation_model("PutMetricData")
    ds = [boto_datum(d) for d in L.batch_datums([datum(i, ndims=30) for i in range(3)])[0]]
    report = ParamValidator().validate({"Namespace": "EFAJob", "MetricData": ds}, op.input_shape)
    assert not report.has_errors(), report.generate_report()


def test_values_over_150_are_split_into_several_datums():
    d = datum(1, Values=[float(v) for v in range(400)], Counts=[2.0] * 400)
    del d["StatisticValues"]
    parts = L.split_values(d)
    assert [len(p["Values"]) for p in parts] == [150, 150, 100]
    assert [v for p in parts for v in p["Values"]] == d["Values"]
    assert all(len(p["Counts"]) == len(p["Values"]) for p in parts)
    assert all(L.check_datum(p, NOW) is None for p in parts)
    assert "values" in L.check_datum(d, NOW)


@pytest.mark.parametrize("change, words", [
    (lambda d: d["Dimensions"].extend({"Name": f"X{k}", "Value": "v"} for k in range(29)),
     "31 dimensions"),
    (lambda d: d.update(MetricName=""), "metric name"),
    (lambda d: d.update(MetricName="m" * 256), "metric name"),
    (lambda d: d["Dimensions"][0].update(Value=""), "empty or too long"),
    (lambda d: d["Dimensions"][0].update(Value="v" * 1025), "empty or too long"),
    (lambda d: d["Dimensions"].append(dict(d["Dimensions"][0])), "given twice"),
    (lambda d: d["StatisticValues"].update(Sum=math.nan), "Sum"),
    (lambda d: d["StatisticValues"].update(Maximum=math.inf), "Maximum"),
    (lambda d: d["StatisticValues"].update(SampleCount=0.0), "inconsistent"),
    (lambda d: d["StatisticValues"].update(Minimum=1e12), "inconsistent"),
    (lambda d: d.update(Timestamp=NOW - 15 * 86400), "two weeks"),
    (lambda d: d.update(Timestamp=NOW + 3 * 3600), "two hours"),
    (lambda d: d.update(Value=1.0), "exactly one"),
])
def test_check_datum_names_each_problem(change, words):
    d = datum(3)
    assert L.check_datum(d, NOW) is None
    change(d)
    assert words in L.check_datum(d, NOW)


def test_clean_value():
    assert L.clean_value(1e-200) == 0.0
    assert L.clean_value(-1e-200) == 0.0
    assert L.clean_value(1e200) is None
    assert L.clean_value(math.nan) is None
    assert L.clean_value(True) is None
    assert L.clean_value(5) == 5.0


# -- PutLogEvents ---------------------------------------------------------------------------
def ev(ts_ms: int, size: int = 10) -> dict:
    return {"timestamp": ts_ms, "message": "x" * size}


def test_log_batches_are_time_ordered_and_within_count():
    base = int(NOW * 1000)
    events = [ev(base - i) for i in range(25_000)]  # newest first: must come out sorted
    batches = L.batch_log_events(events)
    assert [len(b) for b in batches] == [10_000, 10_000, 5_000]
    flat = [e["timestamp"] for b in batches for e in b]
    assert flat == sorted(flat) and len(flat) == 25_000


def test_log_batches_count_26_bytes_per_event():
    base = int(NOW * 1000)
    size = 100_000 - L.LOG_EVENT_OVERHEAD  # each event counts exactly 100,000 bytes
    batches = L.batch_log_events([ev(base + i, size) for i in range(21)])
    # 10 events = 1,000,000 bytes fit in 1,048,576; 11 would not.
    assert [len(b) for b in batches] == [10, 10, 1]
    for b in batches:
        assert sum(len(e["message"]) + 26 for e in b) <= L.MAX_LOG_BATCH_BYTES
    exact = L.MAX_LOG_BATCH_BYTES - L.LOG_EVENT_OVERHEAD
    assert L.check_log_event(ev(base, exact), base) is None
    assert "bytes" in L.check_log_event(ev(base, exact + 1), base)


def test_log_batches_span_under_24_hours():
    base = int(NOW * 1000) - 3 * 86_400_000
    hour = 3_600_000
    batches = L.batch_log_events([ev(base + h * hour) for h in range(0, 60)])
    for b in batches:
        assert b[-1]["timestamp"] - b[0]["timestamp"] < L.MAX_LOG_SPAN_MS
    assert [len(b) for b in batches] == [24, 24, 12]


def test_log_event_age_limits():
    now = int(NOW * 1000)
    assert "two weeks" in L.check_log_event(ev(now - 14 * 86_400_000), now)
    assert "two hours" in L.check_log_event(ev(now + 3 * 3_600_000), now)
    assert L.check_log_event({"timestamp": now, "message": ""}, now) == "empty message"


# -- EMF ------------------------------------------------------------------------------------
def test_emf_splits_at_100_metrics_per_directive():
    metrics = [(f"m{i}", "Count", i) for i in range(250)]
    docs = build_emf_documents("NS", 1000, {"ClusterName": "c"}, metrics, {"JobId": "7"})
    assert [len(d["_aws"]["CloudWatchMetrics"][0]["Metrics"]) for d in docs] == [100, 100, 50]
    seen = {}
    for d in docs:
        parsed = parse_emf(json.dumps(d))
        assert parsed["dimensions"] == [["ClusterName"]] and d["ClusterName"] == "c"
        assert d["JobId"] == "7"
        for name in parsed["metrics"]:
            seen[name] = d[name]
    assert seen == {f"m{i}": i for i in range(250)}


def test_emf_splits_value_arrays_at_100():
    values = list(range(250))
    docs = build_emf_documents("NS", 1000, {"ClusterName": "c"},
                               [("big", "Count", values), ("small", "Count", 3)], {})
    assert [len(d["big"]) for d in docs] == [100, 100, 50]
    assert sum((d["big"] for d in docs), []) == values
    assert sum(1 for d in docs if "small" in d) == 1  # a scalar is published once


def test_emf_dimension_set_limit():
    dims = {f"D{i}": "v" for i in range(31)}
    with pytest.raises(SinkError, match="31 keys"):
        build_emf_documents("NS", 0, dims, [("m", "Count", 1)], {})


def test_emf_event_is_trimmed_under_1mb_keeping_metrics():
    record = {"cluster": "c", "job_id": "9", "host": "n1", "end": NOW,
              "totals": {"tx_bytes": 5, "rx_bytes": 6}, "rates": {},
              "series": {"t": list(range(200_000))}, "devices": [{"name": "d", "counters": {}}]}
    events = build_job_events(record, "NS", NOW)
    assert len(events) == 1
    text = events[0]["message"]
    assert len(text.encode()) <= L.EMF_MAX_EVENT_BYTES
    doc = json.loads(text)
    assert doc["trimmed"] == ["series"] and doc["job_tx_bytes"] == 5
    assert doc["totals"] == {"tx_bytes": 5, "rx_bytes": 6}
    with pytest.raises(SinkError):
        render_event({"huge": "x" * 2_000_000})


def test_private_records_leave_user_uid_and_account_out_of_emf():
    record = {"cluster": "c", "job_id": "9", "host": "n1", "end": NOW, "user": "alice",
              "uid": 1000, "account": "proj", "partition": "gpu", "totals": {"tx_bytes": 5}}
    (public,) = build_job_events(record, "NS", NOW)
    assert "alice" in public["message"] and json.loads(public["message"])["uid"] == 1000
    (private,) = build_job_events(record, "NS", NOW, private=True)
    doc = json.loads(private["message"])
    assert not {"user", "uid", "account", "User"} & set(doc)
    assert "alice" not in private["message"] and doc["JobId"] == "9" and doc["Partition"] == "gpu"

