"""The JSON report (`efajob report --format json`): a JobReport (report/model.py) -> one JSON object.

Schema "efajob/job-report", version SCHEMA_VERSION, documented key by key in docs/report.md
("JSON"): keys are stable, absent values are null.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Iterator, Optional

from efajob.report.compact import plain, plain_series

if TYPE_CHECKING:  # pragma: no cover
    from efajob.report.model import DeviceReport, JobReport, NodeReport

SCHEMA = "efajob/job-report"
SCHEMA_VERSION = 1


def _r(v: Optional[float], nd: int = 3) -> Optional[float]:
    return None if v is None else round(v, nd)


# Counter dicts go out in the record's order (the store's writer sorts keys), not re-sorted:
# 70,000 sorts were a fifth of a 1,024-node JSON report. Device counters are kept compact
# (report/compact.py) and become dicts one node at a time, as the node's line is written.
def device_to_dict(d: DeviceReport) -> dict:
    return {"name": d.name, "link_gbps": d.link_gbps, "tx_bytes": d.tx_bytes,
            "rx_bytes": d.rx_bytes, "peak_tx_gbps": _r(d.peak_tx_gbps),
            "peak_rx_gbps": _r(d.peak_rx_gbps), "counters": plain(d.counters),
            "device_counters": plain(d.device_counters), "resets": list(d.resets),
            "peak_above_link": d.peak_above_link}


def node_to_dict(n: NodeReport) -> dict:
    return {
        "host": n.host, "rank": n.rank, "status": n.status, "complete": n.complete,
        "tx_bytes": n.tx_bytes, "rx_bytes": n.rx_bytes,
        "avg_tx_gbps": _r(n.avg_tx_gbps), "peak_tx_gbps": _r(n.peak_tx_gbps),
        "avg_rx_gbps": _r(n.avg_rx_gbps), "peak_rx_gbps": _r(n.peak_rx_gbps),
        "peak_source": n.peak_source, "link_gbps": n.link_gbps,
        "util_avg": _r(n.util_avg, 4), "util_peak": _r(n.util_peak, 4),
        "rx_drops": n.rx_drops, "retrans_pkts": n.retrans_pkts,
        "shared": list(n.shared), "incomplete_reasons": list(n.incomplete_reasons),
        "source": n.source, "daemon_samples": n.daemon_samples, "exit_code": n.exit_code,
        "start": n.start, "end": n.end, "elapsed_s": n.elapsed_s,
        "resets": list(n.resets), "vanished_devices": list(n.vanished_devices),
        "appeared_devices": list(n.appeared_devices),
        "live_tx_gbps": _r(n.live_tx_gbps), "live_rx_gbps": _r(n.live_rx_gbps),
        "live_age_s": _r(n.live_age_s, 1), "findings": list(n.marks),
        "counters": n.counters, "ena": n.ena,
        "devices": [device_to_dict(d) for d in n.devices],
        "series": _series(n),
        "link_source": n.link_source, "expected_devices": n.expected_devices,
        "peak_above_link": n.peak_above_link,
        "unsupported": dict(n.unsupported),
    }


def _series(n: NodeReport) -> Optional[dict]:
    """The record's series, plus `above_link`: the indices of points faster than the link
    (finding rate_above_link), so a plot can mark them."""
    if not n.series:
        return None
    return dict(plain_series(n.series), above_link=list(n.above_link))


def report_to_dict(r: JobReport) -> dict:
    """The whole report as one dict (every node's devices and series as plain JSON)."""
    d = _report_dict(r)
    d["nodes"] = list(d["nodes"])
    return d


def _report_dict(r: JobReport) -> dict:
    """The report's keys in order, `nodes` a generator: iter_json writes one node's line
    before the next node's dicts are made."""
    m, o = r.meta, r.overall
    return {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION,
        "job_id": m.job_id, "alias": m.alias, "cluster": m.cluster, "restart": m.restart,
        "restarts": list(r.restarts), "state": m.state, "running": r.running,
        "exit_code": m.exit_code, "name": m.name, "user": m.user, "account": m.account,
        "partition": m.partition, "nodelist": m.nodelist, "num_nodes": m.num_nodes,
        "instance_type": m.instance_type, "start": m.start, "end": m.end,
        "elapsed_s": _r(m.elapsed_s), "time_limit": m.time_limit, "metadata_source": m.source,
        # A counter the instance type cannot count is null here, its reason in
        # `unsupported_counters`: "not supported", never a measured 0.
        "totals": dict(sorted(dict({k: None for k in o.unsupported}, **o.totals).items())),
        "unsupported_counters": dict(sorted(o.unsupported.items())),
        "ena_totals": dict(sorted(o.ena.items())),
        "overall": {
            "nodes_with_data": o.nodes_with_data,
            "tx_bytes": o.totals.get("tx_bytes"), "rx_bytes": o.totals.get("rx_bytes"),
            "tx_pkts": o.totals.get("tx_pkts"), "rx_pkts": o.totals.get("rx_pkts"),
            "avg_tx_gbps_per_node": _r(o.avg_tx_gbps), "avg_rx_gbps_per_node": _r(o.avg_rx_gbps),
            "peak_tx_gbps_per_node": _r(o.peak_tx_gbps), "peak_rx_gbps_per_node": _r(o.peak_rx_gbps),
            "link_gbps_per_node": o.link_gbps, "link_source": o.link_source, "util_avg": _r(o.util_avg, 4),
            "util_peak": _r(o.util_peak, 4), "rdma_read_share": _r(o.rdma_read_share, 4),
            "rdma_write_share": _r(o.rdma_write_share, 4), "send_share": _r(o.send_share, 4),
            "resets": list(o.resets),
        },
        "nodes": (node_to_dict(n) for n in r.nodes),
        "findings": [f.to_dict() for f in r.findings],
        "verdict": r.verdict,
        "notes": list(r.notes),
        "skipped": [{"path": p, "why": w} for p, w in r.skipped],
        "generated": r.generated,
    }


def render_json(r: JobReport) -> str:
    """The JSON report as one string (iter_json's pieces joined)."""
    return "".join(iter_json(r))


def _dumps(v: Any) -> str:
    return json.dumps(v, separators=(", ", ": "))


def iter_json(r: JobReport) -> Iterator[str]:
    """The JSON report in pieces, one node's line at a time: a 4,096-node report is ~150 MB
    of JSON, written out piece by piece instead of held whole (bench/report.py). One
    top-level key per line, and one line per node, finding or skipped file: readable,
    diff-able, and fast (json's C encoder only runs without `indent`; with it, a 1,024-node
    report took seconds)."""
    sep = "{\n"
    for k, v in _report_dict(r).items():
        if not isinstance(v, list) and k == "nodes":
            v = iter(v)
            first = next(v, None)
            if first is None:
                yield f"{sep}  {_dumps(k)}: []"
            else:
                yield f"{sep}  {_dumps(k)}: [\n    {_dumps(first)}"
                for x in v:
                    yield f",\n    {_dumps(x)}"
                yield "\n  ]"
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            inner = ",\n".join("    " + _dumps(x) for x in v)
            yield f"{sep}  {_dumps(k)}: [\n{inner}\n  ]"
        else:
            yield f"{sep}  {_dumps(k)}: {_dumps(v)}"
        sep = ",\n"
    yield "\n}\n"
