"""CloudWatch I/O: botocore clients, error classes, and sending one queued request.

A request ("item") is what the sink queues and spools:
`{"kind": "metrics", "namespace", "datums": [...], "count"}` or
`{"kind": "logs", "group", "stream", "events": [...], "count"}`. `send_item()` sends one and
returns what to count; it raises botocore's exception when the call fails, and
`classify_error()` says whether retrying can help.

botocore is imported inside functions: this module is imported by the sink, which the daemon
builds only when `[cloudwatch] enabled = true`.
"""
from __future__ import annotations

import datetime as _dt
import logging
from typing import Any, Dict, Iterable

from efajob import __version__
from efajob.sinks.cloudwatch.limits import check_datum, check_log_event
from efajob.errors import ConfigError

log = logging.getLogger("efajob.cloudwatch")

CONNECT_TIMEOUT, READ_TIMEOUT = 2.0, 3.0  # one attempt fits in the daemon's 5 s flush
THROTTLE_CODES = frozenset((
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled",
    "RequestThrottledException", "TooManyRequestsException", "RequestLimitExceeded",
    "SlowDown", "LimitExceededException", "ServiceUnavailable", "ServiceUnavailableException",
    "InternalFailure", "InternalError", "InternalServiceError", "InternalServiceFault",
    "RequestTimeout", "RequestTimeoutException", "PriorRequestNotComplete",
))


def make_clients(cfg, region: str, services: Iterable[str] = ("cloudwatch", "logs")
                 ) -> Dict[str, Any]:
    """botocore clients with our timeouts, botocore's retries off (the sink's backoff is the
    only one) and gzip for request bodies above 4 KB.

    botocore rather than boto3: same credential chain, 3 MB less. The session parses ~7 MB of
    endpoint data to build a client and keeps it; the clients do not need it, so the session
    is dropped and the freed heap handed back to the OS (docs/performance.md, "CloudWatch").
    """
    try:
        import botocore.session
        from botocore.config import Config as BotoConfig
    except ImportError as e:  # pragma: no cover - boto3 (and botocore) is a dependency
        raise ConfigError(f"CloudWatch needs boto3/botocore: {e}") from None
    bc = BotoConfig(region_name=region, connect_timeout=CONNECT_TIMEOUT,
                    read_timeout=READ_TIMEOUT, retries={"mode": "standard", "total_max_attempts": 1},
                    request_min_compression_size_bytes=4096,
                    user_agent_extra=f"efajob/{__version__}")
    kw = {"endpoint_url": cfg.cloudwatch.endpoint_url} if cfg.cloudwatch.endpoint_url else {}
    session = botocore.session.Session()
    clients = {s: session.create_client(s, config=bc, **kw) for s in services}
    del session
    _release_heap()
    return clients


def make_client(cfg, region: str, service: str) -> Any:
    return make_clients(cfg, region, (service,))[service]


def _release_heap() -> None:
    import gc

    gc.collect()
    try:  # glibc only; elsewhere the memory is simply reused later
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def classify_error(exc: BaseException) -> str:
    """'retry' (throttling, 5xx, connection, credentials not there yet), 'missing' (log group
    or stream), or 'fatal' (the request itself is bad: retrying cannot help)."""
    try:
        from botocore import exceptions as bx
    except ImportError:  # pragma: no cover
        return "fatal"
    if isinstance(exc, bx.ClientError):
        err = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        code = err.get("Code", "")
        if code == "ResourceNotFoundException":
            return "missing"
        if code in THROTTLE_CODES or status >= 500 or status == 429:
            return "retry"
        return "fatal"
    if isinstance(exc, (bx.ConnectionError, bx.HTTPClientError, bx.NoCredentialsError,
                        bx.PartialCredentialsError, bx.CredentialRetrievalError)):
        return "retry"
    return "fatal"


def boto_datum(d: dict) -> dict:
    """A queued datum (Timestamp in epoch seconds) as botocore takes it."""
    out = dict(d)
    if "Timestamp" in out:
        out["Timestamp"] = _dt.datetime.fromtimestamp(out["Timestamp"], _dt.timezone.utc)
    return out


def send_item(clients: Dict[str, Any], item: dict, now: float) -> Dict[str, int]:
    """Send one request; return the counts to add. Raises what botocore raises."""
    if item["kind"] == "metrics":
        return _send_metrics(clients["cloudwatch"], item, now)
    return _send_logs(clients["logs"], item, now)


def _send_metrics(cw: Any, item: dict, now: float) -> Dict[str, int]:
    datums, expired = [], 0
    for d in item["datums"]:
        if check_datum(d, now):  # spooled too long: CloudWatch would refuse the whole request
            expired += 1
        else:
            datums.append(boto_datum(d))
    if datums:
        cw.put_metric_data(Namespace=item["namespace"], MetricData=datums)
    return {"requests": 1 if datums else 0, "published_datums": len(datums),
            "expired_datums": expired}


def _send_logs(logs: Any, item: dict, now: float) -> Dict[str, int]:
    now_ms = int(now * 1000)
    events = [e for e in item["events"] if not check_log_event(e, now_ms)]
    counts = {"expired_events": len(item["events"]) - len(events)}
    if not events:
        return counts
    kw = dict(logGroupName=item["group"], logStreamName=item["stream"], logEvents=events)
    try:
        resp = logs.put_log_events(**kw)
    except Exception as e:
        if classify_error(e) != "missing":
            raise
        create_stream(logs, item["group"], item["stream"])
        resp = logs.put_log_events(**kw)
    bad = rejected_count(resp.get("rejectedLogEventsInfo") or {}, len(events))
    if bad:
        log.warning("cloudwatch: %d job event(s) refused by Logs: %s", bad,
                    resp.get("rejectedLogEventsInfo"))
    counts.update(requests=1, published_events=len(events) - bad, rejected_events=bad)
    return counts


def rejected_count(info: dict, n: int) -> int:
    """Events PutLogEvents refused: from tooNewLogEventStartIndex on, and up to (inclusive)
    tooOldLogEventEndIndex and expiredLogEventEndIndex (API reference, RejectedLogEventsInfo)."""
    too_new = info.get("tooNewLogEventStartIndex")
    old = max((info[k] for k in ("tooOldLogEventEndIndex", "expiredLogEventEndIndex")
               if info.get(k) is not None), default=-1)
    return sum(1 for i in range(n) if i <= old or (too_new is not None and i >= too_new))


def create_stream(logs: Any, group: str, stream: str) -> None:
    for call, kw in ((logs.create_log_group, {"logGroupName": group}),
                     (logs.create_log_stream, {"logGroupName": group, "logStreamName": stream})):
        try:
            call(**kw)
        except Exception as e:
            code = getattr(e, "response", {}).get("Error", {}).get("Code")
            if code != "ResourceAlreadyExistsException":
                raise
    log.info("cloudwatch: created log stream %s in %s", stream, group)


def short(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return text if len(text) < 200 else text[:200] + "..."
