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

from efajob import __version__
from efajob.node.counters import diff_snapshots
from efajob.node.instances import lookup
from efajob.slurm.jobid import JobIdentity as JobIdentity  # part of this module's API
from efajob.slurm.jobid import format_exit_code as format_exit_code
from efajob.node.readings import Snapshot

TYPE_CHECKING = False
if TYPE_CHECKING:  # no `typing` at run time: the epilog imports this (bench/hooks.py)
    from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

RECORD_SCHEMA = "efajob/job-node-record"
RECORD_VERSION = 1
MAX_SERIES_POINTS = 500
SOURCES = ("epilog", "reconcile")
_GBPS = 8 / 1e9  # bytes/s -> Gb/s (decimal, as link rates are quoted)


# -- link rates --------------------------------------------------------------------------------
def link_rates(instance_type: Optional[str], device_names: Iterable[str],
               device_rates: Optional[Mapping[str, Optional[float]]] = None
               ) -> Tuple[Optional[float], Dict[str, Optional[float]]]:
    """(node total Gb/s, per device Gb/s). The instance table wins: before kernel 6.13
    `ports/1/rate` reads 100 Gb/sec even on 200/400G cards (node/instances.py)."""
    names = sorted(device_names)
    itype = lookup(instance_type)
    if itype is not None:
        per: Dict[str, Optional[float]] = {n: itype.gbps_per_device for n in names}
        return itype.total_gbps, per
    per = {n: (device_rates or {}).get(n) for n in names}
    known = [v for v in per.values() if v is not None]
    return (sum(known) if known and len(known) == len(names) else None), per


def _expected_devices(instance_type: Optional[str], given: Optional[int]) -> Optional[int]:
    if given is not None:
        return given
    itype = lookup(instance_type)
    return itype.devices if itype is not None else None


# -- rows -> peaks and series -----------------------------------------------------------------
def _gbps(nbytes: Optional[int], seconds: float) -> Optional[float]:
    if nbytes is None or seconds <= 0:
        return None
    return nbytes / seconds * _GBPS


def _round(v: Optional[float], nd: int = 6) -> Optional[float]:
    return None if v is None else round(v, nd)


def _column(rows: Sequence, name: str) -> List[Optional[int]]:
    return [r.deltas.get(name) for r in rows]


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
    secs = [r.seconds for r in rows]
    pos = sorted(x for x in secs if x > 0)
    base = pos[len(pos) // 2] if pos else 0.0
    t = [round(rows[min(i + k, n) - 1].mono - start_mono, 3) for i in range(0, n, k)]
    out = {}
    for name in ("tx_bytes", "rx_bytes"):
        col = _column(rows, name)
        points: List[Optional[float]] = []
        for i in range(0, n, k):
            num, den = 0, 0.0
            for v, sec in zip(col[i:i + k], secs[i:i + k]):
                if v is not None and sec > 0:
                    num += v
                    den += sec
            points.append(_round(num / den * _GBPS) if den > 0 else None)
        out[name] = points
    return {"interval_s": round(base * k, 3), "t": t, "tx_gbps": out["tx_bytes"],
            "rx_gbps": out["rx_bytes"]}


def build_series_mixed(rows: Sequence, minutes: Sequence, start_mono: float, start_wall: float,
                       end_wall: float, max_points: int = MAX_SERIES_POINTS) -> dict:
    """The series of a long window from minute rollups (MinuteWindow.minutes: minute, samples,
    seconds, tx bytes, rx bytes, ...) plus the raw rows around them, in time buckets of a whole
    number of minutes (at most `max_points`); each point is bytes / seconds of the samples
    ending in its bucket, placed at the bucket's end (seconds since start)."""
    span = max(60.0, end_wall - start_wall)
    interval = 60.0 * max(1, math.ceil(span / max_points / 60.0))
    segs = [(r.mono - start_mono, r.seconds, r.deltas.get("tx_bytes"), r.deltas.get("rx_bytes"))
            for r in rows]
    segs += [((m[0] + 1) * 60.0 - start_wall, m[2], m[3], m[4]) for m in minutes]
    buckets: Dict[int, List[float]] = {}
    for t_end, secs, tx, rx in segs:
        if secs <= 0:
            continue
        b = buckets.setdefault(max(1, math.ceil(t_end / interval)), [0.0, 0.0, 0.0, 0.0])
        if tx is not None:
            b[0] += tx
            b[1] += secs
        if rx is not None:
            b[2] += rx
            b[3] += secs
    keys = sorted(buckets)
    return {
        "interval_s": interval,
        "t": [round(min(k * interval, span), 3) for k in keys],
        "tx_gbps": [_round(buckets[k][0] / buckets[k][1] * _GBPS) if buckets[k][1] else None for k in keys],
        "rx_gbps": [_round(buckets[k][2] / buckets[k][3] * _GBPS) if buckets[k][3] else None for k in keys],
    }


def _peak_per_key(maps: Sequence[Mapping[str, int]], inv: Sequence[float]) -> Dict[str, float]:
    """max over rows of maps[i][key] * inv[i], per key, in Gb/s.

    An hour of 1 s rows on a 32-device node is 230,000 values and the epilog has tens of
    milliseconds: when every row has the same keys (nearly always) the work is done by
    itemgetter/zip/map at C speed; otherwise row by row."""
    from operator import itemgetter, mul

    pairs = [(m, f) for m, f in zip(maps, inv) if m and f > 0]
    if not pairs:
        return {}
    keys = tuple(pairs[0][0])
    n = len(keys)
    ms = [m for m, _ in pairs]
    if all(len(m) == n for m in ms):
        try:
            get = itemgetter(*keys)
            table = list(map(get, ms)) if n > 1 else [(v,) for v in map(get, ms)]
        except KeyError:
            table = None
        if table is not None:
            factors = [f for _, f in pairs]
            return {k: max(map(mul, col, factors)) * _GBPS for k, col in zip(keys, zip(*table))}
    out: Dict[str, float] = {}
    for m, f in pairs:
        for k, v in m.items():
            g = v * f * _GBPS
            if g > out.get(k, -1.0):
                out[k] = g
    return out


def _row_peaks(rows: Sequence) -> Tuple[Optional[float], Optional[float],
                                         Dict[str, float], Dict[str, float]]:
    """(node tx peak, node rx peak, per-device tx peaks, per-device rx peaks) in Gb/s."""
    inv = [1.0 / r.seconds if r.seconds > 0 else 0.0 for r in rows]
    node = []
    for name in ("tx_bytes", "rx_bytes"):
        vals = [v * f for v, f in zip(_column(rows, name), inv) if v is not None and f > 0]
        node.append(max(vals) * _GBPS if vals else None)
    node_tx, node_rx = node
    dev_tx = _peak_per_key([r.device_tx_bytes for r in rows], inv)
    dev_rx = _peak_per_key([r.device_rx_bytes for r in rows], inv)
    return node_tx, node_rx, dev_tx, dev_rx


def _fold_device_peaks(minutes, tx: Dict[str, float], rx: Dict[str, float]) -> None:
    """Raise the per-device peaks (Gb/s) to the minutes' per-device fastest rates (bytes/s)."""
    mtx, mrx = minutes.device_peaks
    for into, got in ((tx, mtx), (rx, mrx)):
        for d, v in got.items():
            g = v * _GBPS
            if g > into.get(d, -1.0):
                into[d] = g


def _sum_rows(rows: Sequence, minutes=None
              ) -> Tuple[Dict[str, int], Dict[str, Dict[str, int]], List[str]]:
    """Counters from daemon rows alone (no start snapshot): node totals, per-device tx/rx.
    Minute rollups add to the node totals only (they keep no per-device split)."""
    totals: Dict[str, int] = dict(minutes.sums or {}) if minutes else {}
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
    minutes=None,
    peak_rows: Sequence = (),
    shared: Iterable[str] = (),
    instance_type: Optional[str] = None,
    device_rates: Optional[Mapping[str, Optional[float]]] = None,
    source: str = "epilog",
    prolog_seen: bool = True,
    epilog_seen: bool = True,
    end_wall: Optional[float] = None,
    end_mono: Optional[float] = None,
    reasons: Iterable[str] = (),
    expected_devices: Optional[int] = None,
    efajob_version: str = __version__,
) -> dict:
    """Assemble one job-node record (schema v1, docs/records.md). Pure.

    `rows` are the daemon's SampleRows of this boot (anything with the SampleRow attributes);
    only those inside the job window are used. `end_wall`/`end_mono` stand in for the end
    snapshot when there is none (reconcile after a reboot: the last row of the old boot).

    Long windows (finish.RAW_WINDOW_MAX): `minutes` (node/minutes.MinuteWindow) is what the
    daemon's minute rollups say of the window's whole minutes (with `sums` when there is no
    start snapshot), `rows` then only the raw rows outside them (head and tail), and
    `peak_rows` the raw rows of the busiest minutes when the minutes did not keep per-device
    peaks.

    `expected_devices`: how many EFA devices the node should have (default: the instance
    table's count for `instance_type`, None when the type is unknown); the report compares it
    with the devices seen (finding `device_missing`).
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}")
    key = ident.key
    why: List[str] = list(reasons)

    # The window, on the monotonic clock (rates) and the wall clock (display).
    t1_mono = end.mono if end is not None else end_mono
    t1_wall = end.wall if end is not None else end_wall
    start_source: Optional[str] = None
    t0_mono: Optional[float]
    t0_wall: Optional[float]
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
        for name, dd in delta.devices.items():
            devices[name] = {"counters": dict(dd.port_counters),
                             "device_counters": dict(dd.device_counters), "resets": list(dd.resets)}
            for k, v in dd.port_counters.items():
                totals[k] = totals.get(k, 0) + v
        resets = list(delta.resets)
        ena = {i: dict(s) for i, s in delta.net.items()}
        appeared, vanished = delta.appeared, delta.vanished
        if vanished:
            why.append("device_vanished")
        if appeared:
            # Absent at the prolog (a driver reload, a device late to probe): its traffic in
            # the job is unknown, so the totals leave it out and the record says so.
            why.append("device_appeared")
    elif window or minutes:
        # No end (reboot) or no start: the daemon's rows are all there is.
        if t0_mono is None:
            # Nothing says when the job started: count from the first row tagged with it. That
            # row's own delta covers time before it (possibly before the job): left out.
            t0_mono, t0_wall, start_source = window[0].mono, window[0].wall, "daemon"
            measured = window[1:]
        totals, per_dev, resets = _sum_rows(measured, minutes)
        for name, c in per_dev.items():
            devices[name] = {"counters": c, "device_counters": {}, "resets": [
                r.split("/", 1)[1] for r in resets if r.startswith(name + "/")]}
        for snap in (start, end):
            for name in (snap.devices if snap is not None else ()):
                devices.setdefault(name, {"counters": {}, "device_counters": {}, "resets": []})
        if t1_mono is None and window:
            t1_mono, t1_wall = window[-1].mono, window[-1].wall
    if start is None and not prolog_seen:
        why.append("no_prolog" if measured or minutes else "no_prolog_no_samples")
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
    peak_tx, peak_rx, dev_peak_tx, dev_peak_rx = _row_peaks(list(measured) + list(peak_rows))
    if minutes:
        _fold_device_peaks(minutes, dev_peak_tx, dev_peak_rx)
        # A minute's fastest rate is its fastest sample's (bytes/s).
        if minutes.tx_max is not None and (peak_tx is None or minutes.tx_max * _GBPS > peak_tx):
            peak_tx = minutes.tx_max * _GBPS
        if minutes.rx_max is not None and (peak_rx is None or minutes.rx_max * _GBPS > peak_rx):
            peak_rx = minutes.rx_max * _GBPS
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
        "job_name": ident.job_name,
        "work_dir": ident.work_dir,
        "user": ident.user,
        "uid": ident.uid,
        "partition": ident.partition,
        "account": ident.account,
        "nodelist": ident.nodelist,
        "num_nodes": ident.num_nodes,
        "instance_type": instance_type,
        "link_gbps": total_link,
        "expected_devices": _expected_devices(instance_type, expected_devices),
        "start": t0_wall,
        "end": t1_wall,
        "elapsed_s": _round(elapsed, 3),
        "start_source": start_source,
        "exit_code": ident.exit_code,
        "derived_exit_code": ident.derived_exit_code,
        "source": source,
        "prolog_seen": prolog_seen,
        "epilog_seen": epilog_seen,
        "daemon_samples": len(window) + (minutes.samples if minutes else 0),
        "complete": complete,
        "incomplete_reasons": why,
        "devices": dev_list,
        "totals": totals,
        "rates": {"avg_tx_gbps": _round(avg_tx), "avg_rx_gbps": _round(avg_rx),
                  "peak_tx_gbps": _round(peak_tx), "peak_rx_gbps": _round(peak_rx),
                  "peak_source": peak_source},
        "series": (build_series_mixed(measured, minutes.minutes, t0_mono, t0_wall, t1_wall)
                   if minutes and t0_mono is not None and t0_wall is not None and t1_wall is not None
                   else build_series(measured, t0_mono if t0_mono is not None else 0.0)),
        "ena": ena,
        "shared": shared_keys,
        "resets": resets,
        "vanished_devices": list(vanished),
        "appeared_devices": list(appeared),
    }


def check_record(record: object) -> dict:
    """The fields delivery relies on (they become path components): raise ValueError if bad."""
    from efajob.config import validate_name
    from efajob.errors import ConfigError
    from efajob.slurm.jobid import is_job_id

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
        validate_name("cluster", record.get("cluster"))
        validate_name("node", record.get("host"))
    except ConfigError as e:
        raise ValueError(str(e)) from None
    uid = record.get("uid")
    if uid is not None and (isinstance(uid, bool) or not isinstance(uid, int) or uid < 0):
        raise ValueError(f"record uid {uid!r} is not valid")
    return record

