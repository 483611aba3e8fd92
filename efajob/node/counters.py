"""Pure counter maths: deltas, resets, rates and node sums. No I/O.

Rules (shared/notes/efa-sysfs.md, DESIGN invariant 3):
- counters are cumulative unsigned 64-bit; `cur < prev` means the driver reset them (the
  delta is then `cur`, what was counted since the reset) and is *flagged*, never negative;
- a counter absent on either side has no delta (absent is not zero);
- rates are computed on the monotonic clock, never on wall time (NTP steps would corrupt them).
"""
from __future__ import annotations

from operator import itemgetter, sub

from efajob.node.flatlayout import Layout
from efajob.node.readings import Snapshot

TYPE_CHECKING = False
if TYPE_CHECKING:  # no `typing` at run time: the epilog imports this (bench/hooks.py)
    from typing import Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Tuple

BITS_PER_BYTE = 8


def is_wr_error(name: str) -> bool:
    """Port counters of RDMA work requests that completed in error: `rdma_read_wr_err`,
    `rdma_write_wr_err` and any future `*_wr_err` (the device's own count)."""
    return name.endswith("_wr_err")


def is_device_error(name: str) -> bool:
    """Device-level counters that count failures: `no_completion_cmds` and every `*_err` (the
    kernel adds more of that shape); `*_wr_err` are port counters, repeated in the device
    directory on kernels < 5.15, and judged as work-request errors."""
    return name == "no_completion_cmds" or (name.endswith("_err") and not is_wr_error(name))


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


if TYPE_CHECKING:
    class DeviceDelta(NamedTuple):
        """One device's counter deltas (a named tuple: the daemon may build 32 a second)."""

        name: str
        port_counters: Dict[str, int]
        device_counters: Dict[str, int]
        resets: Tuple[str, ...] = ()
else:  # the same named tuple without importing `typing`
    from collections import namedtuple

    DeviceDelta = namedtuple("DeviceDelta", ("name", "port_counters", "device_counters", "resets"),
                             defaults=((),))


class SnapshotDelta:
    """The difference between two snapshots of one node. Treat as read-only.

    - `devices`: per-device deltas (devices present on both sides);
    - `net`: per-interface deltas of the ENA statistics;
    - `resets`: "device/counter" (or "net:if/counter") that went down;
    - `appeared`/`vanished`: devices present on one side only (listed, not counted).

    From two snapshots of the daemon's sampler (`flat`), `devices` is built on first use and
    `port_totals()`/`port_column()` come straight from the flat delta list.
    """

    __slots__ = ("seconds", "_devices", "net", "resets", "appeared", "vanished", "flat", "_totals")

    def __init__(self, seconds: float, devices: Optional[Dict[str, DeviceDelta]] = None,
                 net: Optional[Dict[str, Dict[str, int]]] = None, resets: Tuple[str, ...] = (),
                 appeared: Tuple[str, ...] = (), vanished: Tuple[str, ...] = (), *,
                 flat: Optional[Tuple[Layout, List[int]]] = None):
        if devices is None and flat is None:
            devices = {}
        self.seconds, self._devices, self.flat = seconds, devices, flat
        self.net: Dict[str, Dict[str, int]] = {} if net is None else net
        self.resets, self.appeared, self.vanished = resets, appeared, vanished
        self._totals: Optional[Dict[str, int]] = None

    @property
    def devices(self) -> Dict[str, DeviceDelta]:
        if self._devices is None:
            layout, values = self.flat  # type: ignore[misc]  # set when _devices is not (__init__)
            self._devices = {t[0]: DeviceDelta(t[0], t[2], t[3]) for t in layout.per_device(values)}
        return self._devices

    def port_sum(self, name: str) -> Optional[int]:
        return sum_counter(self.devices.values(), name)

    def port_totals(self) -> Dict[str, int]:
        """Node totals of every port counter (computed once; treat as read-only)."""
        if self._totals is None:
            self._totals = sum_port_counters(self)
        return self._totals

    def device_totals(self, names: Sequence[str]) -> Dict[str, int]:
        """Node totals of the device-level counters in `names` (absent ones left out)."""
        if self._devices is None and self.flat is not None:
            return self.flat[0].device_totals(self.flat[1], names)
        out: Dict[str, int] = {}
        for d in self.devices.values():
            for k in names:
                if k in d.device_counters:
                    out[k] = out.get(k, 0) + d.device_counters[k]
        return out

    def port_column(self, name: str) -> Dict[str, int]:
        """One port counter's delta per device (devices without it left out)."""
        if self._devices is None:
            got = self.flat[0].port_column(self.flat[1], name)  # type: ignore[index]  # as above
            if got is not None:
                return got
        return {n: d.port_counters[name] for n, d in self.devices.items() if name in d.port_counters}


def diff_snapshots(a: Snapshot, b: Snapshot) -> SnapshotDelta:
    """b - a. Devices present on one side only are listed, not counted."""
    seconds = max(0.0, b.mono - a.mono)
    net: Dict[str, Dict[str, int]] = {}
    resets: List[str] = []
    for ifname, cur_stats in b.net.items():
        prev_stats = a.net.get(ifname)
        if prev_stats is None:
            continue
        net[ifname], nr = diff_counters(prev_stats, cur_stats)
        resets.extend(f"net:{ifname}/{r}" for r in nr)
    fa, fb = a.flat, b.flat
    if fa is not None and fb is not None and fa[0] is fb[0] and len(fa[1]) == len(fb[1]):
        # The daemon's case: same layout, so same devices and counters in the same positions.
        d = list(map(sub, fb[1], fa[1]))
        if not d or min(d) >= 0:  # a reset takes the general path, which names it
            return SnapshotDelta(seconds, net=net, resets=tuple(resets), flat=(fb[0], d))
    devices: Dict[str, DeviceDelta] = {}
    dev_resets_all: List[str] = []
    for name, cur in b.devices.items():
        prev = a.devices.get(name)
        if prev is None:
            continue
        pc, pr = diff_counters(prev.port_counters, cur.port_counters)
        dc, dr = diff_counters(prev.device_counters, cur.device_counters)
        # Port and device counter names overlap on kernels < 5.15: keep their namespaces apart.
        dev_resets = tuple(pr) + tuple("device:" + n for n in dr)
        devices[name] = DeviceDelta(name, pc, dc, dev_resets)
        dev_resets_all.extend(f"{name}/{r}" for r in dev_resets)
    return SnapshotDelta(
        seconds=seconds,
        devices=devices,
        net=net,
        resets=tuple(dev_resets_all + resets),
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
    if delta.flat is not None:
        got = delta.flat[0].port_totals(delta.flat[1])
        if got is not None:
            return got
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


def rate(delta: Optional[float], seconds: float) -> Optional[float]:
    """Per-second rate; None when the counter is absent or no time passed."""
    if delta is None or seconds <= 0:
        return None
    return delta / seconds


def bytes_to_gbps(nbytes: Optional[float], seconds: float) -> Optional[float]:
    """Bytes over a duration -> gigabits per second (decimal, as link rates are quoted)."""
    r = rate(nbytes, seconds) if nbytes is not None else None
    return None if r is None else r * BITS_PER_BYTE / 1e9
