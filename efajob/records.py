"""The job-node record: one job's exact account on one node (docs/records.md), built purely.

`build_record()` takes what the epilog (or reconcile) gathered — the job's identity, the start
snapshot (or None), the end snapshot (or None), the daemon's rows for the window, the keys of
overlapping jobs, the instance type or the devices' sysfs link rates — and returns the record
as a plain dict. No I/O, no clock: table-tested in tests/test_records.py.

Rules:
- totals come from the start and end snapshots (exact); the daemon's rows only add peaks and
  the time series (DESIGN invariant 2). Without a start snapshot the rows are the only source:
  the record says so (`complete: false`, `incomplete_reasons`);
- absent counters stay absent (no key), resets are flagged (`resets`) and never negative;
- the daemon's rows are node totals: when jobs share a node (`shared` non-empty) peaks and the
  series include the other jobs' traffic, while totals do too (counters are per device, not per
  job): the report says so (finding `shared_node`).

On the hook import path: standard library only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from . import __version__
from .counters import diff_snapshots
from .instances import lookup
from .jobid import job_key
from .sysfs import Snapshot

RECORD_SCHEMA = "efajob/job-node-record"
RECORD_VERSION = 1
MAX_SERIES_POINTS = 500
SOURCES = ("epilog", "reconcile")
_GBPS = 8 / 1e9  # bytes/s -> Gb/s (decimal, as link rates are quoted)


@dataclass(frozen=True)
class JobIdentity:
    """Who the job is, as the hooks learn it from Slurm's environment (or the active file)."""

    cluster: str
    job_id: str  # SLURM_JOB_ID: the unique numeric id (array/het forms below when known)
    restart: int
    host: str  # SLURMD_NODENAME
    user: Optional[str] = None
    uid: Optional[int] = None
    partition: Optional[str] = None
    account: Optional[str] = None
    nodelist: Optional[str] = None
    num_nodes: Optional[int] = None
    array_job_id: Optional[str] = None
    array_task_id: Optional[str] = None
    het_job_id: Optional[str] = None
    het_job_offset: Optional[str] = None
    exit_code: Optional[str] = None  # "exit:signal" as sacct prints it
    derived_exit_code: Optional[str] = None
    # When there is no start snapshot: the start from the active file (mono + wall) or from
    # SLURM_JOB_START_TIME (wall only, Slurm 23.02+).
    start_wall: Optional[float] = None
    start_mono: Optional[float] = None

    @property
    def key(self) -> str:
        return job_key(self.job_id, self.restart)


def format_exit_code(raw: Optional[str], code2: Optional[str] = None) -> Optional[str]:
    """Slurm's exit code as sacct shows it ("1:0", "0:9"). `code2` is SLURM_JOB_EXIT_CODE2
    (already "exit:signal"); `raw` is a wait(2) status (SLURM_JOB_EXIT_CODE, _DERIVED_EC)."""
    if code2:
        parts = code2.strip().split(":")
        if len(parts) == 2 and all(p.isascii() and p.isdigit() and len(p) < 6 for p in parts):
            return f"{int(parts[0])}:{int(parts[1])}"
    if raw is None or not (raw.strip().isascii() and raw.strip().isdigit()) or len(raw.strip()) > 10:
        return None
    status = int(raw)
    # WIFEXITED / WEXITSTATUS / WTERMSIG, as slurmctld computes EXIT_CODE2.
    if status & 0x7F == 0:
        return f"{(status >> 8) & 0xFF}:0"
    return f"0:{status & 0x7F}"


# -- link rates --------------------------------------------------------------------------------
def link_rates(instance_type: Optional[str], device_names: Iterable[str],
               device_rates: Optional[Mapping[str, Optional[float]]] = None
               ) -> Tuple[Optional[float], Dict[str, Optional[float]]]:
    """(node total Gb/s, per device Gb/s). The instance table wins: before kernel 6.13
    `ports/1/rate` reads 100 Gb/sec even on 200/400G cards (instances.py)."""
    names = sorted(device_names)
    itype = lookup(instance_type)
    if itype is not None:
        per = {n: itype.gbps_per_device for n in names}
        return itype.total_gbps, per
    per = {n: (device_rates or {}).get(n) for n in names}
    known = [v for v in per.values() if v is not None]
    return (sum(known) if known and len(known) == len(names) else None), per


# -- rows -> peaks and series -----------------------------------------------------------------
def _gbps(nbytes: Optional[int], seconds: float) -> Optional[float]:
    if nbytes is None or seconds <= 0:
        return None
    return nbytes / seconds * _GBPS


def _max(values: Iterable[Optional[float]]) -> Optional[float]:
    vals = [v for v in values if v is not None]
    return max(vals) if vals else None


def _round(v: Optional[float], nd: int = 6) -> Optional[float]:
    return None if v is None else round(v, nd)


def build_series(rows: Sequence, start_mono: float, max_points: int = MAX_SERIES_POINTS) -> dict:
    """Node tx/rx Gb/s over the job, at most `max_points` points whatever the job length.

    Consecutive rows are merged `k` at a time (k = ceil(rows / max_points)); a merged point is
    bytes / seconds over its rows, so the series keeps the volume (a mean of rates would not,
    when intervals differ). `t` is the end of each point's interval in seconds since the start.
    """
    n = len(rows)
    if n == 0:
        return {"interval_s": None, "t": [], "tx_gbps": [], "rx_gbps": []}
    k = max(1, math.ceil(n / max_points))
    secs = sorted(r.seconds for r in rows if r.seconds > 0)
    base = secs[len(secs) // 2] if secs else 0.0
    t: List[float] = []
    tx: List[Optional[float]] = []
    rx: List[Optional[float]] = []
    for i in range(0, n, k):
        group = rows[i:i + k]
        t.append(round(group[-1].mono - start_mono, 3))
        for name, out in (("tx_bytes", tx), ("rx_bytes", rx)):
            num, den = 0, 0.0
            for r in group:
                v = r.deltas.get(name)
                if v is not None and r.seconds > 0:
                    num += v
                    den += r.seconds
            out.append(_round(num / den * _GBPS) if den > 0 else None)
    return {"interval_s": round(base * k, 3), "t": t, "tx_gbps": tx, "rx_gbps": rx}


def _row_peaks(rows: Sequence) -> Tuple[Optional[float], Optional[float],
                                         Dict[str, Optional[float]], Dict[str, Optional[float]]]:
    node_tx = _max(_gbps(r.deltas.get("tx_bytes"), r.seconds) for r in rows)
    node_rx = _max(_gbps(r.deltas.get("rx_bytes"), r.seconds) for r in rows)
    dev_tx: Dict[str, Optional[float]] = {}
    dev_rx: Dict[str, Optional[float]] = {}
    for r in rows:
        for src, dst in ((r.device_tx_bytes, dev_tx), (r.device_rx_bytes, dev_rx)):
            for name, v in src.items():
                g = _gbps(v, r.seconds)
                if g is not None and (dst.get(name) is None or g > dst[name]):  # type: ignore[operator]
                    dst[name] = g
    return node_tx, node_rx, dev_tx, dev_rx


def _sum_rows(rows: Sequence) -> Tuple[Dict[str, int], Dict[str, Dict[str, int]], List[str]]:
    """Counters from daemon rows alone (no start snapshot): node totals, per-device tx/rx."""
    totals: Dict[str, int] = {}
    devices: Dict[str, Dict[str, int]] = {}
    resets: List[str] = []
    for r in rows:
        for k, v in r.deltas.items():
            totals[k] = totals.get(k, 0) + v
        for counter, src in (("tx_bytes", r.device_tx_bytes), ("rx_bytes", r.device_rx_bytes)):
            for name, v in src.items():
                d = devices.setdefault(name, {})
                d[counter] = d.get(counter, 0) + v
        resets.extend(x for x in r.resets if x not in resets)
    return totals, devices, resets


# -- the record --------------------------------------------------------------------------------
def build_record(
    ident: JobIdentity,
    start: Optional[Snapshot],
    end: Optional[Snapshot],
    rows: Sequence = (),
    *,
    shared: Iterable[str] = (),
    instance_type: Optional[str] = None,
    device_rates: Optional[Mapping[str, Optional[float]]] = None,
    source: str = "epilog",
    prolog_seen: bool = True,
    epilog_seen: bool = True,
    end_wall: Optional[float] = None,
    end_mono: Optional[float] = None,
    reasons: Iterable[str] = (),
    efajob_version: str = __version__,
) -> dict:
    """Assemble one job-node record (schema v1, docs/records.md). Pure.

    `rows` are the daemon's SampleRows of this boot (anything with the SampleRow attributes);
    only those inside the job window are used. `end_wall`/`end_mono` stand in for the end
    snapshot when there is none (reconcile after a reboot: the last row of the old boot).
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}")
    key = ident.key
    why: List[str] = list(reasons)

    # The window, on the monotonic clock (rates) and the wall clock (display).
    t1_mono = end.mono if end is not None else end_mono
    t1_wall = end.wall if end is not None else end_wall
    start_source: Optional[str] = None
    if start is not None:
        t0_mono, t0_wall, start_source = start.mono, start.wall, "prolog"
    elif ident.start_mono is not None:
        t0_mono, t0_wall, start_source = ident.start_mono, ident.start_wall, "active_file"
    elif ident.start_wall is not None and t1_mono is not None and t1_wall is not None:
        # SLURM_JOB_START_TIME: mapped onto this boot's monotonic clock through the end reading.
        t0_mono, t0_wall, start_source = t1_mono - (t1_wall - ident.start_wall), ident.start_wall, "slurm"
    else:
        t0_mono = t0_wall = None

    if t0_mono is not None:
        window = [r for r in rows if t0_mono < r.mono and (t1_mono is None or r.mono <= t1_mono)]
    else:
        # No idea when the job started: only rows the daemon tagged with this job belong to it.
        window = [r for r in rows if key in r.jobs]
    window.sort(key=lambda r: r.mono)

    devices: Dict[str, dict] = {}
    totals: Dict[str, int] = {}
    resets: List[str] = []
    ena: Dict[str, Dict[str, int]] = {}
    appeared: Tuple[str, ...] = ()
    vanished: Tuple[str, ...] = ()
    measured = window  # rows whose deltas the counters cover (for rates)
    if start is not None and end is not None:
        delta = diff_snapshots(start, end)
        for name, d in delta.devices.items():
            devices[name] = {"counters": dict(d.port_counters),
                             "device_counters": dict(d.device_counters), "resets": list(d.resets)}
            for k, v in d.port_counters.items():
                totals[k] = totals.get(k, 0) + v
        resets = list(delta.resets)
        ena = {i: dict(s) for i, s in delta.net.items()}
        appeared, vanished = delta.appeared, delta.vanished
        if vanished:
            why.append("device_vanished")
    elif window:
        # No end (reboot) or no start: the daemon's rows are all there is.
        if t0_mono is None:
            # Nothing says when the job started: count from the first row tagged with it. That
            # row's own delta covers time before it (possibly before the job): left out.
            t0_mono, t0_wall, start_source = window[0].mono, window[0].wall, "daemon"
            measured = window[1:]
        totals, per_dev, resets = _sum_rows(measured)
        for name, c in per_dev.items():
            devices[name] = {"counters": c, "device_counters": {}, "resets": [
                r.split("/", 1)[1] for r in resets if r.startswith(name + "/")]}
        for snap in (start, end):
            for name in (snap.devices if snap is not None else ()):
                devices.setdefault(name, {"counters": {}, "device_counters": {}, "resets": []})
        if t1_mono is None:
            t1_mono, t1_wall = window[-1].mono, window[-1].wall
    if start is None and not prolog_seen:
        why.append("no_prolog" if measured else "no_prolog_no_daemon")
    elif start is None:
        why.append("no_start_snapshot")
    if not epilog_seen:
        why.append("no_epilog")  # reconciled: the end is when we noticed, not when it ended
    elif end is None:
        why.append("no_end_snapshot")

    elapsed = None
    if t0_mono is not None and t1_mono is not None:
        elapsed = max(0.0, t1_mono - t0_mono)
    elif t0_wall is not None and t1_wall is not None:
        elapsed = max(0.0, t1_wall - t0_wall)

    total_link, per_link = link_rates(instance_type, devices, device_rates)
    _, _, dev_peak_tx, dev_peak_rx = _row_peaks(measured)
    dev_list = []
    for name in sorted(devices):
        d = devices[name]
        dev_list.append({
            "name": name, "link_gbps": per_link.get(name), "counters": d["counters"],
            "device_counters": d["device_counters"], "resets": d["resets"],
            "peak_tx_gbps": _round(dev_peak_tx.get(name)), "peak_rx_gbps": _round(dev_peak_rx.get(name)),
        })

    avg_tx = _gbps(totals.get("tx_bytes"), elapsed or 0.0)
    avg_rx = _gbps(totals.get("rx_bytes"), elapsed or 0.0)
    peak_tx, peak_rx, _, _ = _row_peaks(measured)
    peak_source = "daemon"
    if peak_tx is None and peak_rx is None:
        # No daemon: the best peak we know is the average over the whole job.
        peak_tx, peak_rx, peak_source = avg_tx, avg_rx, "snapshots"

    shared_keys = sorted({k for k in shared if k and k != key})
    complete = not why
    return {
        "schema": RECORD_SCHEMA,
        "version": RECORD_VERSION,
        "efajob_version": efajob_version,
        "cluster": ident.cluster,
        "job_id": ident.job_id,
        "restart": ident.restart,
        "key": key,
        "host": ident.host,
        "array_job_id": ident.array_job_id,
        "array_task_id": ident.array_task_id,
        "het_job_id": ident.het_job_id,
        "het_job_offset": ident.het_job_offset,
        "user": ident.user,
        "uid": ident.uid,
        "partition": ident.partition,
        "account": ident.account,
        "nodelist": ident.nodelist,
        "num_nodes": ident.num_nodes,
        "instance_type": instance_type,
        "link_gbps": total_link,
        "start": t0_wall,
        "end": t1_wall,
        "elapsed_s": _round(elapsed, 3),
        "start_source": start_source,
        "exit_code": ident.exit_code,
        "derived_exit_code": ident.derived_exit_code,
        "source": source,
        "prolog_seen": prolog_seen,
        "epilog_seen": epilog_seen,
        "daemon_samples": len(window),
        "complete": complete,
        "incomplete_reasons": why,
        "devices": dev_list,
        "totals": totals,
        "rates": {"avg_tx_gbps": _round(avg_tx), "avg_rx_gbps": _round(avg_rx),
                  "peak_tx_gbps": _round(peak_tx), "peak_rx_gbps": _round(peak_rx),
                  "peak_source": peak_source},
        "series": build_series(measured, t0_mono if t0_mono is not None else 0.0),
        "ena": ena,
        "shared": shared_keys,
        "resets": resets,
        "vanished_devices": list(vanished),
        "appeared_devices": list(appeared),
    }


def check_record(record: object) -> dict:
    """The fields delivery relies on (they become path components): raise ValueError if bad."""
    from .config import validate_name
    from .errors import ConfigError
    from .jobid import is_job_id

    if not isinstance(record, dict) or record.get("schema") != RECORD_SCHEMA:
        raise ValueError("not a job-node record")
    if record.get("version") != RECORD_VERSION:
        raise ValueError(f"record version {record.get('version')!r} is not {RECORD_VERSION}")
    if not is_job_id(record.get("job_id")):
        raise ValueError(f"record job_id {record.get('job_id')!r} is not valid")
    restart = record.get("restart")
    if isinstance(restart, bool) or not isinstance(restart, int) or restart < 0:
        raise ValueError(f"record restart {restart!r} is not valid")
    try:
        validate_name("cluster", record.get("cluster"))  # type: ignore[arg-type]
        validate_name("node", record.get("host"))  # type: ignore[arg-type]
    except ConfigError as e:
        raise ValueError(str(e)) from None
    uid = record.get("uid")
    if uid is not None and (isinstance(uid, bool) or not isinstance(uid, int) or uid < 0):
        raise ValueError(f"record uid {uid!r} is not valid")
    return record

