"""The node status document: what the daemon publishes for the head-node dashboard, and what
`efajob status` shows on the node itself.

Published as `<store>/<cluster>/nodes/<node>.json` (atomic: temp file + rename) every
`status_interval` seconds by the daemon's worker thread. Schema (docs/daemon.md):

    {"schema": "efajob/node-status", "version": 1, "cluster", "node", "instance_type",
     "time": epoch s, "boot_id",
     "daemon": {"pid", "version", "started", "interval", "healthy", "last_sample": epoch s,
                "last_sample_age": s, "ticks", "skipped_ticks", "errors": {kind: n},
                "store": "ok" | <error>, "store_pending"},
     "rates": {port counter: per second}, "tx_gbps", "rx_gbps",
     "error_rates": {device error counter: per second, summed over devices},
     "expected_devices": the instance type's EFA device count or null,
     "link_gbps": the devices' link rates summed or null,
     "devices": [{"name", "state", "link_gbps", "tx_gbps", "rx_gbps", "port_counters",
                  "errors": {port or device error counter: per second, only those that rose}}],
     "jobs": [{"key", "job_id", "user", "partition", "start"}],
     "efa_driver": AWS driver version from module/efa/version ("2.17.0g") | null (in-tree),
     "recent": {"seconds", "counters", "devices", "resets", "vanished", "appeared"},
     "verdict": {"rules": "<efajob version>:<thresholds digest>", "devices": [[kind, message,
                 null]], "live": [[kind, message, severity]]}}

The keys are written sorted, then `devices` and `recent` last (encode_node_status).

`recent` is the last minute (efajob/daemon/recent.py): what a running job's report and the
dashboard judge the node by. Absent before the daemon has two samples. A job that started
inside that minute has its own `recent` in its `jobs` entry, from its start on (null while it
is younger than one anchor step), so that it is not charged with what came before it.

`state` is the port state as sysfs shows it, kept for display only: the EFA driver hard-codes
it to ACTIVE, so nothing judges by it. What shows a sick device: its error counters rising
(`errors`, `error_rates`: `*_wr_err`, `cmds_err`, `no_completion_cmds`, verbs `*_err`), its
port counters unreadable (`port_counters` 0: a closed admin queue fails every stats query),
fewer devices than `expected_devices`.

With `private_records = true` the file is still world-readable (the dashboard and live reports
read it) but says only which job ids run here, as squeue does: `user` and `partition` are null.

Pure builders and a renderer, plus two thin file functions.
"""
from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from efajob.config import validate_name
from efajob.node.counters import bytes_to_gbps, is_device_error, is_wr_error
from efajob.node.instances import lookup, unsupported_counters
from efajob.node.render import render_driver
from efajob.values import loads_checked

if TYPE_CHECKING:  # pragma: no cover
    from efajob.node.localstore import SampleRow
    from efajob.hooks.runfiles import ActiveJob
    from efajob.sinks.base import Tick
    from efajob.node.sysfs import DeviceInfo
    from efajob.node.readings import DeviceReading, Snapshot

NODE_STATUS_SCHEMA = "efajob/node-status"
NODE_STATUS_VERSION = 1
# A daemon whose newest sample is older than this many intervals is reported unhealthy.
STALE_INTERVALS = 3.0
# `efajob status`'s states and exit codes (docs/cli.md): health checks and scripts test them.
# Degraded: the daemon samples, but something it should do or see is missing.
STATE_EXIT = {"healthy": 0, "degraded": 1, "stale": 2, "not running": 2}


def node_status_path(store: str, cluster: str, node: str) -> str:
    """`<store>/<cluster>/nodes/<node>.json`; names are validated (they become paths)."""
    validate_name("cluster", cluster)
    validate_name("node", node)
    return os.path.join(store, cluster, "nodes", node + ".json")


def _gbps(bps: Optional[float]) -> Optional[float]:
    return None if bps is None else bytes_to_gbps(bps, 1.0)


def _jobs(jobs: Iterable["ActiveJob"], private: bool = False,
          recent: Optional[Mapping[str, Optional[dict]]] = None) -> List[dict]:
    out = []
    for j in sorted(jobs, key=lambda j: j.key):
        entry: Dict[str, object] = {
            "key": j.key, "job_id": j.job_id, "user": None if private else j.user,
            "partition": None if private else j.partition, "start": j.start_wall}
        if recent is not None and j.key in recent:
            entry["recent"] = recent[j.key]
        out.append(entry)
    return out


def _devices(infos: Sequence["DeviceInfo"], link: Mapping[str, Optional[float]],
             tx: Mapping[str, float], rx: Mapping[str, float]) -> List[dict]:
    return [{"name": d.name, "state": d.state, "link_gbps": link.get(d.name, d.rate_gbps),
             "tx_gbps": _gbps(tx.get(d.name)), "rx_gbps": _gbps(rx.get(d.name))} for d in infos]


def _link_sum(devices: Sequence[dict]) -> Optional[float]:
    """The devices' link rates summed (null when none is known): the dashboard's utilisation
    without parsing the devices."""
    known = [d["link_gbps"] for d in devices if d.get("link_gbps") is not None]
    return sum(known) if known else None


def _error_counters(reading: "DeviceReading") -> Dict[str, int]:
    out = {k: v for k, v in reading.port_counters.items() if is_wr_error(k)}
    out.update((k, v) for k, v in reading.device_counters.items() if is_device_error(k))
    return out


def device_errors(snapshot: "Snapshot", previous: Optional["Snapshot"]) -> Dict[str, Dict[str, float]]:
    """Per device, the error counters that rose between `previous` (the snapshot of the last
    status written) and `snapshot`, per second: port `*_wr_err` and device-level
    `*_err`/`no_completion_cmds`. Over the status interval, not the last tick: the daemon reads
    device counters only every `device_counter_interval` seconds, so one tick's delta would
    show 0 most of the time and a burst once."""
    if previous is None or snapshot.mono <= previous.mono:
        return {}
    secs = snapshot.mono - previous.mono
    out: Dict[str, Dict[str, float]] = {}
    fa, fb = previous.flat, snapshot.flat
    if fa is not None and fb is not None and fa[0] is fb[0] and len(fa[1]) == len(fb[1]):
        # The daemon's snapshots, read with one layout: the error counters' positions come
        # from it, and no device's dictionaries are built for a test of 1,500 names.
        a, b = fa[1], fb[1]
        for name, slots in fb[0].picked(is_wr_error, is_device_error):
            errs = _rising(((k, a[i], b[i]) for k, i in slots), secs)
            if errs:
                out[name] = errs
        return out
    for name, cur in snapshot.devices.items():
        prev = previous.devices.get(name)
        if prev is None:
            continue
        before = _error_counters(prev)
        errs = _rising(((k, before[k], v) for k, v in _error_counters(cur).items() if k in before),
                       secs)
        if errs:
            out[name] = errs
    return out


def _rising(counters: Iterable[Tuple[str, int, int]], secs: float) -> Dict[str, float]:
    """{name: rise per second}, sorted by name, of the (name, before, now) counters that rose
    (one that went down was reset: counted from 0)."""
    rates = ((k, (v - was if v > was else v) / secs) for k, was, v in counters if v != was)
    return dict(sorted((k, r) for k, r in rates if r > 0))


def _error_rates(errors: Mapping[str, Mapping[str, float]]) -> Dict[str, float]:
    """Device-level error counters per second, summed over devices (port `*_wr_err` rates are
    in `rates` already)."""
    out: Dict[str, float] = {}
    for errs in errors.values():
        for k, v in errs.items():
            if is_device_error(k):
                out[k] = out.get(k, 0.0) + v
    return dict(sorted(out.items()))


def build_node_status(tick: "Tick", *, interval: float, pid: int, version: str,
                      now_mono: float, now_wall: float,
                      link_gbps: Optional[Mapping[str, Optional[float]]] = None,
                      private: bool = False, efa_driver: Optional[str] = None,
                      recent: Optional[dict] = None,
                      job_recent: Optional[Mapping[str, Optional[dict]]] = None,
                      previous: Optional["Snapshot"] = None,
                      thresholds: Optional[Mapping[str, float]] = None) -> dict:
    """The document the daemon publishes, from its latest tick (`private`: private_records;
    `efa_driver`: sysfs.read_efa_driver_version's answer; `recent`: RecentWindow.summary(),
    node counters only, so private_records leaves it in; `job_recent`:
    RecentWindow.job_windows(), the window of a job younger than it; `previous`: the snapshot
    of the status written before, for the error rates; `thresholds`: the config's, for the
    verdict)."""
    from efajob.report.nodeverdict import node_verdict

    h = tick.health
    age = max(0.0, now_mono - tick.snapshot.mono)
    dev_tx = {d: r["tx_bytes"] for d, r in tick.device_rates.items() if "tx_bytes" in r}
    dev_rx = {d: r["rx_bytes"] for d, r in tick.device_rates.items() if "rx_bytes" in r}
    devices = _devices(tick.devices, link_gbps or {}, dev_tx, dev_rx)
    errors = device_errors(tick.snapshot, previous)
    for dev in devices:
        reading = tick.snapshot.devices.get(dev["name"])
        dev["port_counters"] = len(reading.port_counters) if reading is not None else 0
        dev["errors"] = errors.get(dev["name"], {})
    itype = lookup(tick.instance_type)
    # Counters the type cannot count (they read 0) are not rates: left out, as everywhere.
    unsupported = unsupported_counters(itype)
    rates = dict(sorted((k, v) for k, v in tick.rates.items() if k not in unsupported))
    expected = itype.devices if itype is not None else None
    doc = {
        "schema": NODE_STATUS_SCHEMA,
        "version": NODE_STATUS_VERSION,
        "cluster": tick.cluster,
        "node": tick.node,
        "instance_type": tick.instance_type,
        "time": now_wall,
        "boot_id": tick.boot_id,
        "daemon": {
            "pid": pid,
            "version": version,
            "started": h.started_wall,
            "interval": interval,
            "healthy": age <= STALE_INTERVALS * interval and h.store_ok,
            "last_sample": tick.snapshot.wall,
            "last_sample_age": round(age, 3),
            "ticks": h.ticks,
            "skipped_ticks": h.skipped_ticks,
            "errors": dict(h.errors),
            "store": "ok" if h.store_ok else (h.store_error or "unavailable"),
            "store_pending": h.store_pending,
        },
        "rates": rates,
        "tx_gbps": _gbps(tick.rates.get("tx_bytes")),
        "rx_gbps": _gbps(tick.rates.get("rx_bytes")),
        "error_rates": _error_rates(errors),
        "expected_devices": expected,
        "link_gbps": _link_sum(devices),
        "devices": devices,
        "jobs": _jobs(tick.jobs, private, job_recent),
        "efa_driver": efa_driver,
    }
    if recent is not None:
        doc["recent"] = recent
    # The health rules' answer, once here rather than by the dashboard for every file it
    # re-reads (10,000 nodes: 1,333 files per 2 s refresh; report/nodeverdict.py).
    doc["verdict"] = node_verdict(
        tick.node, [(d["name"], d["errors"], d["port_counters"]) for d in devices],
        expected, recent, rates, thresholds, tick.instance_type)
    return doc


def build_local_status(*, cluster: str, node: str, instance_type: Optional[str],
                       interval: float, rows: Sequence["SampleRow"], boot_id: str,
                       now_mono: float, now_wall: float, devices: Sequence["DeviceInfo"],
                       jobs: Sequence["ActiveJob"], store_error: Optional[str],
                       link_gbps: Optional[Mapping[str, Optional[float]]] = None,
                       private_jobs: Sequence[str] = (),
                       daemon_running: Optional[bool] = None,
                       expected_devices: Optional[int] = None,
                       delivery_error: Optional[str] = None, outbox_pending: int = 0,
                       efa_driver: Optional[str] = None) -> dict:
    """What `efajob status` shows, from the local store's newest rows (no daemon needed).

    `state` (STATE_EXIT) and `problems` judge them: "not running" (no samples, or no daemon
    holds the lock: `daemon_running` False), "stale" (the newest sample is older than
    STALE_INTERVALS intervals), "degraded" (fewer EFA devices than `expected_devices`, none
    at all, or the outbox cannot deliver to the job store: `delivery_error`), else
    "healthy". `daemon.healthy` keeps its meaning: a fresh sample. `private_jobs`: keys of
    active-job files we may not read (private_records): listed by key only, marked private.
    `efa_driver`: the AWS driver's version from module/efa/version (None: in-tree)."""
    last = rows[-1] if rows else None
    age: Optional[float] = None
    if last is not None:
        # Same boot: the monotonic clock is exact; otherwise fall back to wall time.
        age = now_mono - last.mono if last.boot_id == boot_id else now_wall - last.wall
        age = max(0.0, age)
    secs = last.seconds if last else 0.0
    rates: Dict[str, float] = ({k: v / secs for k, v in sorted(last.deltas.items())}
                               if last and secs > 0 else {})
    dev_tx = {d: v / secs for d, v in last.device_tx_bytes.items()} if last and secs > 0 else {}
    dev_rx = {d: v / secs for d, v in last.device_rx_bytes.items()} if last and secs > 0 else {}
    healthy = age is not None and age <= STALE_INTERVALS * interval
    state, problems = _judge(last is not None, healthy, age, interval, store_error, daemon_running,
                             len(devices), expected_devices, delivery_error, outbox_pending)
    return {
        "schema": NODE_STATUS_SCHEMA,
        "version": NODE_STATUS_VERSION,
        "cluster": cluster,
        "node": node,
        "instance_type": instance_type,
        "time": now_wall,
        "boot_id": boot_id,
        "daemon": {
            "healthy": healthy,
            "interval": interval,
            "last_sample": last.wall if last else None,
            "last_sample_age": None if age is None else round(age, 3),
            "store": store_error or "ok",
        },
        "rates": rates,
        "tx_gbps": _gbps(rates.get("tx_bytes")),
        "rx_gbps": _gbps(rates.get("rx_bytes")),
        "devices": _devices(devices, link_gbps or {}, dev_tx, dev_rx),
        "jobs": sorted(_jobs(jobs) + [{"key": k, "job_id": None, "user": None, "partition": None,
                                        "start": None, "private": True} for k in private_jobs],
                       key=lambda j: j["key"]),
        "state": state,
        "problems": problems,
        "efa_driver": efa_driver,
    }


def _judge(sampled: bool, fresh: bool, age: Optional[float], interval: float,
           store_error: Optional[str], running: Optional[bool], found: int,
           expected: Optional[int], delivery_error: Optional[str], pending: int):
    if not sampled:
        return "not running", ["no samples in the local store" + (f" ({store_error})" if store_error
                                                                  else "")]
    if running is False:
        return "not running", ["no daemon holds the state dir's lock: it exited or was never "
                               "started (systemctl status efajob-node)"]
    if not fresh:
        return "stale", [f"the newest sample is {age:.0f} s old, more than {STALE_INTERVALS:g} "
                         f"intervals of {interval:g} s: the daemon is stuck or stopped sampling"]
    problems = []
    if found == 0:
        problems.append("no EFA devices found under the sysfs root")
    elif expected is not None and found < expected:
        problems.append(f"{found} of the instance type's {expected} EFA devices found")
    if delivery_error:
        problems.append(f"records cannot reach the job store ({delivery_error}): {pending} "
                        "waiting in the outbox")
    return ("degraded" if problems else "healthy"), problems


def _fmt_gbps(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:.2f}"


def _fmt_time(t: Optional[float]) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def render_status(doc: dict) -> str:
    """`efajob status` as text."""
    d = doc["daemon"]
    lines = [f"node {doc['node']} (cluster {doc['cluster']}"
             + (f", {doc['instance_type']}" if doc.get("instance_type") else "") + ")"]
    if doc.get("state"):
        lines.append(f"state: {doc['state']}" + "".join(f"\n  - {p}" for p in doc.get("problems", ())))
    if "efa_driver" in doc:
        lines.append(render_driver(doc["efa_driver"]))
    if d.get("last_sample") is None:
        state = "no samples" + (f" ({d['store']})" if d.get("store") != "ok" else "")
    else:
        state = f"last sample {d['last_sample_age']:.1f} s ago ({_fmt_time(d['last_sample'])})"
        if d.get("store") not in (None, "ok"):
            state += f"; store: {d['store']}"
    lines.append(f"daemon: {state}")
    lines.append(f"node rates: tx {_fmt_gbps(doc['tx_gbps'])} Gbps, rx {_fmt_gbps(doc['rx_gbps'])} Gbps")
    r = doc["rates"]
    extras = [(n, r[n]) for n in ("tx_pkts", "rx_pkts", "rx_drops", "retrans_pkts") if n in r]
    if extras:
        lines.append("            " + ", ".join(f"{n} {v:,.0f}/s" for n, v in extras))
    errs = [(n, v) for n, v in sorted(r.items()) if is_wr_error(n) and v] + \
        [(n, v) for n, v in sorted((doc.get("error_rates") or {}).items()) if v]
    if errs:  # the driver's failure signals (docs/report.md: wr_errors, device_errors)
        lines.append("  EFA errors: " + ", ".join(f"{n} {v:,.2f}/s" for n, v in errs))
    lines.append("")
    devs = doc["devices"]
    lines.append(f"devices ({len(devs)}):" if devs else "devices: none found")
    if devs:
        w = max(len(x["name"]) for x in devs)
        lines.append(f"  {'name':<{w}}  {'state':<10} {'link':>6} {'tx Gbps':>8} {'rx Gbps':>8}")
        for x in devs:
            link = "-" if x["link_gbps"] is None else f"{x['link_gbps']:g}"
            state = (x["state"] or "-").split(":")[-1].strip()
            lines.append(f"  {x['name']:<{w}}  {state:<10} {link:>6} "
                         f"{_fmt_gbps(x['tx_gbps']):>8} {_fmt_gbps(x['rx_gbps']):>8}")
    lines.append("")
    jobs = doc["jobs"]
    lines.append(f"active jobs ({len(jobs)}):" if jobs else "active jobs: none")
    for j in jobs:
        user = j["user"] or ("(private)" if j.get("private") else "-")
        lines.append(f"  {j['key']:<14} user {user:<12} partition "
                     f"{j['partition'] or '-':<10} since {_fmt_time(j['start'])}")
    return "\n".join(lines) + "\n"


def write_node_status(path: str, doc: dict) -> None:
    """Atomically replace the status file (OSError propagates: the daemon logs and retries)."""
    from efajob.hooks.runfiles import atomic_write

    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_write(path, encode_node_status(doc))


# Written after the sorted head, in this order, so that a reader can stop before them:
# `recent` is ~90% of a 32-device node's file, `devices` most of the rest.
TAIL_KEYS = ("devices", "recent")


def encode_node_status(doc: dict) -> bytes:
    """Compact JSON: the keys sorted, except `devices` then `recent`, which go last. A reader
    listing 2,000 nodes parses the part before `recent` only (store/reader.py load_status),
    the window of the few nodes whose jobs it shows; the dashboard the part before `devices`
    (the verdict says what it judges by them), and a node's devices when it draws them."""
    head = {k: v for k, v in doc.items() if k not in TAIL_KEYS}
    text = json.dumps(head, separators=(",", ":"), sort_keys=True)[:-1]
    for k in TAIL_KEYS:
        if k in doc:
            text += ("," if len(text) > 1 else "") + json.dumps(k) + ":" + json.dumps(
                doc[k], separators=(",", ":"), sort_keys=True)
    return (text + "}").encode()


def read_node_status(path: str) -> object:
    with open(path, "rb") as f:
        return loads_checked(f.read(1 << 20))


def read_local_status(cfg, *, now_mono: Optional[float] = None,
                      now_wall: Optional[float] = None) -> dict:
    """build_local_status over this node's files (thin I/O): the local store's newest row
    (read-only, safe while the daemon runs), sysfs, the run dir and the outbox. What
    `efajob status` prints and `efajob doctor` judges the daemon by."""
    from efajob.errors import StoreError
    from efajob.hooks.outbox import daemon_alive, delivery_error, pending
    from efajob.hooks.runfiles import ActiveJobsReader
    from efajob.node.localstore import LocalStore, current_boot_id
    from efajob.node.sysfs import discover_devices, read_efa_driver_version

    rows: list = []
    store_error = None
    try:
        with LocalStore.open(cfg.db_path, readonly=True) as store:
            rows = store.last_samples(1)
    except StoreError as e:
        store_error = str(e)
    present = os.path.isdir(cfg.sysfs_root)
    devices = discover_devices(cfg.sysfs_root) if present else []
    itype = lookup(cfg.instance_type)
    active = ActiveJobsReader(cfg.run_dir)
    failing = delivery_error(cfg)
    return build_local_status(
        cluster=cfg.cluster, node=cfg.node, instance_type=cfg.instance_type,
        interval=cfg.interval, rows=rows, boot_id=current_boot_id(),
        now_mono=time.monotonic() if now_mono is None else now_mono,
        now_wall=time.time() if now_wall is None else now_wall, devices=devices,
        jobs=active.read(), private_jobs=active.private, store_error=store_error,
        link_gbps={d.name: itype.gbps_per_device for d in devices} if itype else None,
        daemon_running=daemon_alive(cfg), expected_devices=itype.devices if itype else None,
        delivery_error=failing, outbox_pending=len(pending(cfg)) if failing else 0,
        efa_driver=read_efa_driver_version(cfg.sysfs_root) if present else None)
