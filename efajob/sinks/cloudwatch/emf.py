"""Job-node records as CloudWatch Embedded Metric Format (EMF) log events (pure).

Why EMF: a JobId dimension makes one billed custom metric per job (shared/notes/cloudwatch.md:
a 16-node job with per-device JobId metrics costs ~$111 a day). In an EMF event JobId, user,
host and partition ride as *properties* (searchable with Logs Insights) while only the
declared dimension set, {ClusterName}, becomes metrics: a handful per cluster, whatever the
number of jobs.

One event per record: `_aws` directive + the low-cardinality metrics at the root + the record's
fields as properties (its `totals` and `rates` whole, so a query has the exact numbers).
Per-device detail is reduced to the main counters; if an event would still pass the 1 MB limit,
the bulkiest properties are dropped (named in `trimmed`) before the metrics would be.

Standard library only.
"""
from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Sequence, Tuple

from efajob.sinks.cloudwatch.limits import (EMF_MAX_DIMENSIONS, EMF_MAX_EVENT_BYTES,
                                            EMF_MAX_METRICS, EMF_MAX_VALUES, MAX_AGE_SECONDS,
                                            MAX_AHEAD_SECONDS, TIME_MARGIN_SECONDS, chunks)
from efajob.errors import SinkError

EMF_DIMENSIONS: Tuple[Tuple[str, ...], ...] = (("ClusterName",),)
# (metric name, unit, where in the record)
JOB_METRICS: Tuple[Tuple[str, str, Tuple[str, ...]], ...] = (
    ("job_tx_bytes", "Bytes", ("totals", "tx_bytes")),
    ("job_rx_bytes", "Bytes", ("totals", "rx_bytes")),
    ("job_rx_drops", "Count", ("totals", "rx_drops")),
    ("job_retrans_pkts", "Count", ("totals", "retrans_pkts")),
    ("job_peak_tx_gbps", "Gigabits/Second", ("rates", "peak_tx_gbps")),
    ("job_peak_rx_gbps", "Gigabits/Second", ("rates", "peak_rx_gbps")),
    ("job_seconds", "Seconds", ("elapsed_s",)),
)
DEVICE_KEYS = ("tx_bytes", "rx_bytes", "rx_drops", "retrans_pkts")
# Dropped in this order when an event is too large (never the metrics or the identity).
TRIM_ORDER = ("series", "devices", "ena", "resets", "appeared_devices", "vanished_devices",
              "nodelist", "shared", "incomplete_reasons")


def _get(record: dict, path: Sequence[str]) -> Any:
    v: Any = record
    for p in path:
        if not isinstance(v, dict):
            return None
        v = v.get(p)
    return v


def event_timestamp_ms(record: dict, now: float) -> int:
    """The job's end, or `now` when the end is unknown or outside what Logs accepts (a record
    delivered weeks late after a long outage still gets published, stamped now)."""
    end = record.get("end")
    lo = now - MAX_AGE_SECONDS + TIME_MARGIN_SECONDS
    hi = now + MAX_AHEAD_SECONDS - TIME_MARGIN_SECONDS
    if isinstance(end, (int, float)) and not isinstance(end, bool) and lo <= end <= hi:
        return int(end * 1000)
    return int(now * 1000)


def build_emf_documents(namespace: str, timestamp_ms: int, dimensions: Dict[str, str],
                        metrics: Sequence[Tuple[str, str, Any]],
                        properties: Dict[str, Any]) -> List[Dict[str, Any]]:
    """EMF documents for `metrics` [(name, unit, value or list of values)], split so that no
    directive has more than 100 metrics and no value array more than 100 values: a metric with
    more values continues in the next document, with the same properties."""
    if len(dimensions) > EMF_MAX_DIMENSIONS:
        raise SinkError(f"EMF dimension set of {len(dimensions)} keys (at most {EMF_MAX_DIMENSIONS})")
    # Expand value lists into rounds of at most EMF_MAX_VALUES values per metric.
    rounds: List[List[Tuple[str, str, Any]]] = []
    for name, unit, value in metrics:
        parts = [value] if not isinstance(value, list) else [
            list(c) for c in chunks(value, EMF_MAX_VALUES)] or [[]]
        for i, part in enumerate(parts):
            while len(rounds) <= i:
                rounds.append([])
            rounds[i].append((name, unit, part))
    docs = []
    for rnd in rounds:
        for group in chunks(rnd, EMF_MAX_METRICS):
            doc: Dict[str, Any] = dict(properties)
            doc.update(dimensions)
            doc["_aws"] = {"Timestamp": timestamp_ms, "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": [list(ds) for ds in [tuple(dimensions)]],
                "Metrics": [{"Name": n, "Unit": u} for n, u, _ in group],
            }]}
            for n, _, v in group:
                doc[n] = v
            docs.append(doc)
    return docs


def _compact_devices(devices: Any) -> Any:
    if not isinstance(devices, list):
        return devices
    out = []
    for d in devices:
        if not isinstance(d, dict):
            continue
        c = d.get("counters") or {}
        item = {"name": d.get("name")}
        item.update({k: c[k] for k in DEVICE_KEYS if k in c})
        for k in ("peak_tx_gbps", "peak_rx_gbps"):
            if d.get(k) is not None:
                item[k] = d[k]
        out.append(item)
    return out


def render_event(doc: Dict[str, Any], max_bytes: int = EMF_MAX_EVENT_BYTES) -> Tuple[str, List[str]]:
    """JSON text of an EMF document within `max_bytes`, dropping TRIM_ORDER properties as
    needed; returns (text, dropped keys). SinkError if it cannot fit."""
    trimmed: List[str] = []
    doc = dict(doc)
    while True:
        text = json.dumps(doc, separators=(",", ":"), allow_nan=False, default=str)
        if len(text.encode("utf-8")) <= max_bytes:
            return text, trimmed
        key = next((k for k in TRIM_ORDER if k in doc), None)
        if key is None:
            raise SinkError(f"EMF event of {len(text)} bytes cannot be cut under {max_bytes}")
        del doc[key]
        trimmed.append(key)
        doc["trimmed"] = list(trimmed)


PRIVATE_FIELDS = ("user", "uid", "account")  # left out with private_records


def build_job_events(record: dict, namespace: str, now: float,
                     max_bytes: int = EMF_MAX_EVENT_BYTES,
                     private: bool = False) -> List[Dict[str, Any]]:
    """The PutLogEvents events [{"timestamp", "message"}] of one job-node record. `private`
    (private_records): no user, uid or account in the event."""
    ts = event_timestamp_ms(record, now)
    metrics = []
    for name, unit, path in JOB_METRICS:
        v = _get(record, path)
        # Absent is not zero: a counter the node does not have is not published as 0.
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            metrics.append((name, unit, v))
    props: Dict[str, Any] = {k: v for k, v in record.items()
                             if not k.startswith("_") and not (private and k in PRIVATE_FIELDS)}
    props["devices"] = _compact_devices(record.get("devices"))
    tags = {"JobId": record.get("job_id"), "User": record.get("user"),
            "Host": record.get("host"), "Partition": record.get("partition")}
    if private:
        del tags["User"]
    props.update(tags)
    dims = {"ClusterName": str(record.get("cluster") or "unknown")}
    events = []
    for doc in build_emf_documents(namespace, ts, dims, metrics, props):
        text, _ = render_event(doc, max_bytes)
        events.append({"timestamp": ts, "message": text})
    return events


def parse_emf(message: str) -> Optional[Dict[str, Any]]:
    """An EMF document's directive summary, for tests and the dashboard check:
    {"namespace", "dimensions": [[...]], "metrics": {name: unit}, "doc": parsed}."""
    try:
        doc = json.loads(message)
        d = doc["_aws"]["CloudWatchMetrics"][0]
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    return {"namespace": d["Namespace"], "dimensions": d["Dimensions"],
            "metrics": {m["Name"]: m.get("Unit") for m in d["Metrics"]}, "doc": doc}
