"""Pure counter maths: deltas, resets, rates and node sums. No I/O.

Rules (shared/notes/efa-sysfs.md, DESIGN invariant 3):
- counters are cumulative unsigned 64-bit; `cur < prev` means the driver reset them (the
  delta is then `cur`, what was counted since the reset) and is *flagged*, never negative;
- a counter absent on either side has no delta (absent is not zero);
- rates are computed on the monotonic clock, never on wall time (NTP steps would corrupt them).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from operator import itemgetter, sub
from typing import Dict, Iterable, List, Mapping, Optional, Tuple

from .sysfs import Snapshot

BITS_PER_BYTE = 8


def counter_delta(prev: int, cur: int) -> Tuple[int, bool]:
    """(delta, reset) of one cumulative counter."""
    if cur < prev:
        return cur, True
    return cur - prev, False


def diff_counters(prev: Mapping[str, int], cur: Mapping[str, int]) -> Tuple[Dict[str, int], List[str]]:
    """Deltas of the counters present on both sides, and the names that were reset."""
    # The daemon runs this ~70 times a second on a p5. The sampler builds its dicts in the same
    # order every time, so the usual case (same names, same order, nothing reset) is a few
    # C-level calls; the general path handles the rest.
    if list(cur) == list(prev):
        vals = list(map(sub, cur.values(), prev.values()))
        if not vals or min(vals) >= 0:
            return dict(zip(cur, vals)), []
    out = {k: c - prev[k] for k, c in cur.items() if k in prev}
    if not out or min(out.values()) >= 0:
        return out, []
    resets = [k for k, v in out.items() if v < 0]
    for k in resets:
        out[k] = cur[k]  # what was counted since the reset
    return out, resets


@dataclass(frozen=True)
class DeviceDelta:
    name: str
    port_counters: Dict[str, int]
    device_counters: Dict[str, int]
    resets: Tuple[str, ...] = ()


@dataclass(frozen=True)
class SnapshotDelta:
    """The difference between two snapshots of one node."""

    seconds: float
    devices: Dict[str, DeviceDelta]
    net: Dict[str, Dict[str, int]] = field(default_factory=dict)
    resets: Tuple[str, ...] = ()  # "device/counter" (or "net:if/counter") that went down
    appeared: Tuple[str, ...] = ()
    vanished: Tuple[str, ...] = ()

    def port_sum(self, name: str) -> Optional[int]:
        return sum_counter(self.devices.values(), name)

    def port_totals(self) -> Dict[str, int]:
        return sum_port_counters(self)


def diff_snapshots(a: Snapshot, b: Snapshot) -> SnapshotDelta:
    """b - a. Devices present on one side only are listed, not counted."""
    devices: Dict[str, DeviceDelta] = {}
    resets: List[str] = []
    for name, cur in b.devices.items():
        prev = a.devices.get(name)
        if prev is None:
            continue
        pc, pr = diff_counters(prev.port_counters, cur.port_counters)
        dc, dr = diff_counters(prev.device_counters, cur.device_counters)
        # Port and device counter names overlap on kernels < 5.15: keep their namespaces apart.
        dev_resets = tuple(pr) + tuple("device:" + n for n in dr)
        devices[name] = DeviceDelta(name, pc, dc, dev_resets)
        resets.extend(f"{name}/{r}" for r in dev_resets)
    net: Dict[str, Dict[str, int]] = {}
    for ifname, cur_stats in b.net.items():
        prev_stats = a.net.get(ifname)
        if prev_stats is None:
            continue
        net[ifname], nr = diff_counters(prev_stats, cur_stats)
        resets.extend(f"net:{ifname}/{r}" for r in nr)
    return SnapshotDelta(
        seconds=max(0.0, b.mono - a.mono),
        devices=devices,
        net=net,
        resets=tuple(resets),
        appeared=tuple(sorted(set(b.devices) - set(a.devices))),
        vanished=tuple(sorted(set(a.devices) - set(b.devices))),
    )


def sum_counter(devices: Iterable[DeviceDelta], name: str) -> Optional[int]:
    """Sum of one port counter over devices; None when no device has it (absent, not zero)."""
    total = None
    for d in devices:
        v = d.port_counters.get(name)
        if v is not None:
            total = v if total is None else total + v
    return total


def sum_port_counters(delta: SnapshotDelta) -> Dict[str, int]:
    """Node totals of every port counter any device reported.

    Port counters only: on kernels < 5.15 the device-level directory repeats the same names and
    values (tx_bytes included), so adding device counters would count traffic twice.
    """
    dicts = [d.port_counters for d in delta.devices.values()]
    if not dicts:
        return {}
    keys = list(dicts[0])
    if len(keys) > 1 and all(list(d) == keys for d in dicts):
        # Every device has the same counters (the usual case): sum columns at C speed.
        return dict(zip(keys, map(sum, zip(*map(itemgetter(*keys), dicts)))))
    out: Dict[str, int] = {}
    for c in dicts:
        for k, v in c.items():
            out[k] = out.get(k, 0) + v
    return out


def sum_net(delta: SnapshotDelta) -> Dict[str, int]:
    out: Dict[str, int] = {}
    for stats in delta.net.values():
        for k, v in stats.items():
            out[k] = out.get(k, 0) + v
    return out


def rate(delta: Optional[int], seconds: float) -> Optional[float]:
    """Per-second rate; None when the counter is absent or no time passed."""
    if delta is None or seconds <= 0:
        return None
    return delta / seconds


def bytes_to_gbps(nbytes: Optional[float], seconds: float) -> Optional[float]:
    """Bytes over a duration -> gigabits per second (decimal, as link rates are quoted)."""
    r = rate(nbytes, seconds) if nbytes is not None else None
    return None if r is None else r * BITS_PER_BYTE / 1e9
