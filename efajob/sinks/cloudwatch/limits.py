"""Every CloudWatch limit the sink must respect, enforced here with pure functions.

moto accepts requests that AWS would reject (1,001 datums, 31 dimensions, 1.3 MB bodies:
shared/notes/cloudwatch.md), so nothing downstream will catch a mistake: we split or drop
before sending. Sources: the CloudWatch API reference (PutMetricData), the CloudWatch Logs API
reference (PutLogEvents), the Embedded Metric Format specification, and the botocore service
model (tests/test_cw_limits.py checks these constants against it where it states them).

Datums are the dicts boto3's `put_metric_data(MetricData=[...])` takes, except that
`Timestamp` is epoch seconds (a float), so they can go to the JSON spool unchanged.
Log events are `{"timestamp": epoch ms, "message": str}`.

Standard library only.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, TypeVar
from urllib.parse import quote

# -- PutMetricData ---------------------------------------------------------------------------
MAX_DATUMS_PER_REQUEST = 1000
# "1 MB per request": counted on the uncompressed body, in decimal megabytes, so gzip or the
# protocol botocore picks can only make the real request smaller.
MAX_REQUEST_BYTES = 1_000_000
MAX_DIMENSIONS = 30
MAX_VALUES_PER_DATUM = 150  # distinct values in Values (and as many Counts)
MAX_NAME_CHARS = 255  # metric names, namespaces, dimension names
MAX_DIMENSION_VALUE_CHARS = 1024
# CloudWatch rejects values outside these magnitudes (API reference, MetricDatum.Value):
# smaller non-zero values are stored as 0 by us, larger ones are dropped.
MIN_VALUE = 8.515920e-109
MAX_VALUE = 1.174271e108
MAX_AGE_SECONDS = 14 * 86400  # datums older than two weeks are rejected
MAX_AHEAD_SECONDS = 2 * 3600  # ... and more than two hours ahead
# A margin inside both bounds: a datum that is valid when checked must still be when it lands.
TIME_MARGIN_SECONDS = 300
# Request overhead outside MetricData (Action, Version, Namespace, headers are not counted by
# AWS but cost nothing to reserve).
_REQUEST_OVERHEAD = 1024

# -- CloudWatch Logs PutLogEvents ------------------------------------------------------------
MAX_LOG_EVENTS = 10_000
MAX_LOG_BATCH_BYTES = 1_048_576  # sum of UTF-8 message bytes + 26 per event
LOG_EVENT_OVERHEAD = 26
MAX_LOG_EVENT_BYTES = MAX_LOG_BATCH_BYTES - LOG_EVENT_OVERHEAD  # one event alone must fit
MAX_LOG_SPAN_MS = 24 * 3600 * 1000  # first to last event of a batch

# -- Embedded Metric Format ------------------------------------------------------------------
EMF_MAX_METRICS = 100  # per metric directive
EMF_MAX_DIMENSIONS = 30  # keys per dimension set
EMF_MAX_VALUES = 100  # values in one metric's array
EMF_MAX_EVENT_BYTES = MAX_LOG_EVENT_BYTES

T = TypeVar("T")


def chunks(seq: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    if size < 1:
        raise ValueError("chunk size must be >= 1")
    for i in range(0, len(seq), size):
        yield seq[i:i + size]


# -- values ----------------------------------------------------------------------------------
def clean_value(v: Any) -> Optional[float]:
    """A number CloudWatch accepts, or None: NaN, infinities and |v| > MAX_VALUE cannot be sent;
    |v| < MIN_VALUE becomes 0 (CloudWatch would reject it, and it is 0 for any purpose here)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    f = float(v)
    if not math.isfinite(f) or abs(f) > MAX_VALUE:
        return None
    if f != 0.0 and abs(f) < MIN_VALUE:
        return 0.0
    return f


def check_datum(d: Dict[str, Any], now: float) -> Optional[str]:
    """Why CloudWatch would reject this datum (and with it the whole request), or None."""
    name = d.get("MetricName")
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME_CHARS:
        return f"metric name {name!r} is empty or longer than {MAX_NAME_CHARS} characters"
    dims = d.get("Dimensions") or []
    if len(dims) > MAX_DIMENSIONS:
        return f"{name}: {len(dims)} dimensions (at most {MAX_DIMENSIONS})"
    seen = set()
    for dim in dims:
        dn, dv = dim.get("Name"), dim.get("Value")
        if not isinstance(dn, str) or not 1 <= len(dn) <= MAX_NAME_CHARS:
            return f"{name}: bad dimension name {dn!r}"
        if not isinstance(dv, str) or not 1 <= len(dv) <= MAX_DIMENSION_VALUE_CHARS:
            return f"{name}: dimension {dn} has an empty or too long value"
        if dn in seen:
            return f"{name}: dimension {dn} given twice"
        seen.add(dn)
    kinds = [k for k in ("Value", "StatisticValues", "Values") if k in d]
    if len(kinds) != 1:
        return f"{name}: needs exactly one of Value, StatisticValues, Values (has {kinds})"
    if "Value" in d and clean_value(d["Value"]) != d["Value"]:
        return f"{name}: value {d['Value']!r} cannot be sent"
    if "StatisticValues" in d:
        sv = d["StatisticValues"]
        for k in ("SampleCount", "Sum", "Minimum", "Maximum"):
            if k not in sv or clean_value(sv[k]) != sv[k]:
                return f"{name}: StatisticValues.{k} {sv.get(k)!r} cannot be sent"
        if sv["SampleCount"] <= 0 or sv["Minimum"] > sv["Maximum"]:
            return f"{name}: inconsistent StatisticValues {sv}"
    if "Values" in d:
        values, counts = d["Values"], d.get("Counts")
        if len(values) > MAX_VALUES_PER_DATUM:
            return f"{name}: {len(values)} values (at most {MAX_VALUES_PER_DATUM})"
        if counts is not None and len(counts) != len(values):
            return f"{name}: {len(counts)} counts for {len(values)} values"
        if any(clean_value(v) != v for v in list(values) + list(counts or ())):
            return f"{name}: a value or count cannot be sent"
    ts = d.get("Timestamp")
    if ts is not None:
        if ts < now - MAX_AGE_SECONDS + TIME_MARGIN_SECONDS:
            return f"{name}: timestamp more than two weeks old"
        if ts > now + MAX_AHEAD_SECONDS - TIME_MARGIN_SECONDS:
            return f"{name}: timestamp more than two hours ahead"
    return None


def split_values(d: Dict[str, Any]) -> List[Dict[str, Any]]:
    """A datum with more than 150 Values (and Counts) becomes several datums: the value
    distribution is the same, CloudWatch merges datums of one metric and timestamp."""
    values = d.get("Values")
    if values is None or len(values) <= MAX_VALUES_PER_DATUM:
        return [d]
    counts = d.get("Counts")
    out = []
    for i in range(0, len(values), MAX_VALUES_PER_DATUM):
        part = dict(d)
        part["Values"] = list(values[i:i + MAX_VALUES_PER_DATUM])
        if counts is not None:
            part["Counts"] = list(counts[i:i + MAX_VALUES_PER_DATUM])
        out.append(part)
    return out


# -- request size ----------------------------------------------------------------------------
def _num(v: Any) -> str:
    return repr(float(v)) if isinstance(v, float) else str(v)


def _field(path: str, value: str) -> int:
    # "&MetricData.member.1000.<path>=<urlencoded value>": the query protocol, the wordiest of
    # the three botocore can use (query, json, smithy-rpc-v2-cbor).
    return len("&MetricData.member.1000.") + len(path) + 1 + len(quote(value, safe="")) + 8


def estimate_datum_bytes(d: Dict[str, Any]) -> int:
    """An upper bound of the datum's share of a PutMetricData body under any protocol."""
    n = _field("MetricName", d.get("MetricName", ""))
    for i, dim in enumerate(d.get("Dimensions") or (), 1):
        n += _field(f"Dimensions.member.{i}.Name", dim.get("Name", ""))
        n += _field(f"Dimensions.member.{i}.Value", dim.get("Value", ""))
    if "Timestamp" in d:
        n += _field("Timestamp", "2026-01-01T00:00:00.000000Z")
    if "Value" in d:
        n += _field("Value", _num(d["Value"]))
    for k, v in (d.get("StatisticValues") or {}).items():
        n += _field(f"StatisticValues.{k}", _num(v))
    for key in ("Values", "Counts"):
        for i, v in enumerate(d.get(key) or (), 1):
            n += _field(f"{key}.member.{i}", _num(v))
    for key in ("Unit", "StorageResolution"):
        if key in d:
            n += _field(key, str(d[key]))
    return n


def batch_datums(datums: Iterable[Dict[str, Any]], *, max_datums: int = MAX_DATUMS_PER_REQUEST,
                 max_bytes: int = MAX_REQUEST_BYTES) -> List[List[Dict[str, Any]]]:
    """Split datums into requests of at most `max_datums` datums and `max_bytes` bytes, in
    order. Datums with too many values are split first (`split_values`)."""
    out: List[List[Dict[str, Any]]] = []
    cur: List[Dict[str, Any]] = []
    size = _REQUEST_OVERHEAD
    for d in datums:
        for part in split_values(d):
            n = estimate_datum_bytes(part)
            if cur and (len(cur) >= max_datums or size + n > max_bytes):
                out.append(cur)
                cur, size = [], _REQUEST_OVERHEAD
            cur.append(part)
            size += n
    if cur:
        out.append(cur)
    return out


# -- PutLogEvents ----------------------------------------------------------------------------
def log_event_bytes(e: Dict[str, Any]) -> int:
    return len(e["message"].encode("utf-8")) + LOG_EVENT_OVERHEAD


def check_log_event(e: Dict[str, Any], now_ms: int) -> Optional[str]:
    """Why PutLogEvents would reject this event, or None."""
    if not e.get("message"):
        return "empty message"
    if log_event_bytes(e) > MAX_LOG_BATCH_BYTES:
        return f"event of {log_event_bytes(e)} bytes (at most {MAX_LOG_EVENT_BYTES})"
    ts = e.get("timestamp")
    if not isinstance(ts, int) or isinstance(ts, bool):
        return f"timestamp {ts!r} is not epoch milliseconds"
    if ts < now_ms - (MAX_AGE_SECONDS - TIME_MARGIN_SECONDS) * 1000:
        return "event more than two weeks old"
    if ts > now_ms + (MAX_AHEAD_SECONDS - TIME_MARGIN_SECONDS) * 1000:
        return "event more than two hours ahead"
    return None


def batch_log_events(events: Iterable[Dict[str, Any]], *, max_events: int = MAX_LOG_EVENTS,
                     max_bytes: int = MAX_LOG_BATCH_BYTES,
                     max_span_ms: int = MAX_LOG_SPAN_MS) -> List[List[Dict[str, Any]]]:
    """Sort events by timestamp (a batch must be in time order) and split them into batches
    of at most `max_events` events, `max_bytes` bytes (26 per event included) and a span under
    `max_span_ms`. Events are assumed checked (`check_log_event`)."""
    out: List[List[Dict[str, Any]]] = []
    cur: List[Dict[str, Any]] = []
    size = 0
    for e in sorted(events, key=lambda x: x["timestamp"]):
        n = log_event_bytes(e)
        if cur and (len(cur) >= max_events or size + n > max_bytes
                    or e["timestamp"] - cur[0]["timestamp"] >= max_span_ms):
            out.append(cur)
            cur, size = [], 0
        cur.append(e)
        size += n
    if cur:
        out.append(cur)
    return out
