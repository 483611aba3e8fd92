"""EFA counter readings: what a sample is (`Snapshot`, `DeviceReading`) and how counter files
are parsed. Pure data and parsing, no I/O; the sampler that produces them is in node/sysfs.py.

This module is on the hook import path: standard library only.
"""
from __future__ import annotations

from efajob.node.flatlayout import Layout

TYPE_CHECKING = False
if TYPE_CHECKING:  # no `typing` or `re` at run time: the hooks import this (bench/hooks.py)
    from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Set, Tuple

_MAX_U64 = (1 << 64) - 1


def parse_counter(raw: bytes) -> Optional[int]:
    """One counter file's bytes -> value, or None when it is not an unsigned 64-bit decimal."""
    text = raw.strip()
    # bytes.isdigit() is ASCII-only, so this rejects "-1", "+5", "1_000", "N/A (no PMA)", "".
    if not text.isdigit() or len(text) > 20:
        return None
    value = int(text)
    return value if value <= _MAX_U64 else None


def natural_key(name: str) -> tuple:
    """rdmap79s0 before rdmap113s0, n2 before n10: the order people read device and host names."""
    # re.split("([0-9]+)", name): text and ASCII digit runs alternating, text first
    parts: list = []
    run, digits = "", False
    for c in name:
        d = "0" <= c <= "9"
        if d != digits:
            parts.append(int(run) if digits else run)
            run, digits = "", d
        run += c
    parts.append(int(run) if digits else run)
    if digits:
        parts.append("")
    return tuple(parts)


if TYPE_CHECKING:
    class _DeviceReadingBase(NamedTuple):
        name: str
        port: int
        port_counters: Dict[str, int]
        device_counters: Dict[str, int]
        other_ports: Dict[int, Dict[str, int]] = {}
else:  # the same tuple, from collections: typing.NamedTuple imports `typing` (ms in the hooks)
    from collections import namedtuple

    _DeviceReadingBase = namedtuple(
        "DeviceReading", ("name", "port", "port_counters", "device_counters", "other_ports"),
        defaults=({},))


class DeviceReading(_DeviceReadingBase):
    """One device's counters at one instant. Absent counters are missing keys.

    A named tuple rather than a frozen dataclass: the sampler builds 32 of these per p5 sample
    and a frozen dataclass's __init__ costs several times more. Fields: name, port,
    port_counters, device_counters, other_ports (see _DeviceReadingBase).
    """

    __slots__ = ()

    def to_dict(self) -> dict:
        d = {
            "name": self.name,
            "port": self.port,
            "port_counters": dict(self.port_counters),
            "device_counters": dict(self.device_counters),
        }
        if self.other_ports:
            d["other_ports"] = {str(p): dict(c) for p, c in self.other_ports.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DeviceReading":
        return cls(
            name=str(d["name"]),
            port=int(d.get("port", 1)),
            port_counters={str(k): int(v) for k, v in d.get("port_counters", {}).items()},
            device_counters={str(k): int(v) for k, v in d.get("device_counters", {}).items()},
            other_ports={
                int(p): {str(k): int(v) for k, v in c.items()}
                for p, c in d.get("other_ports", {}).items()
            },
        )


class Snapshot:
    """All EFA devices (and ENA netdevs) at one instant: `mono` is CLOCK_MONOTONIC (comparable
    between processes of one boot), `wall` is the epoch time. Treat as read-only.

    The daemon's sampler passes `flat` instead of `devices`: its value list and the
    `flatlayout.Layout` that says what each position is. `devices` is then built on first use;
    `counters.diff_snapshots` diffs two such snapshots without building it at all.
    """

    __slots__ = ("mono", "wall", "_devices", "net", "flat")

    def __init__(self, mono: float, wall: float, devices: Optional[Dict[str, DeviceReading]] = None,
                 net: Optional[Dict[str, Dict[str, int]]] = None, *,
                 flat: Optional[Tuple[Layout, List[int]]] = None):
        if devices is None and flat is None:
            devices = {}
        self.mono, self.wall, self._devices, self.flat = mono, wall, devices, flat
        self.net: Dict[str, Dict[str, int]] = {} if net is None else net

    @property
    def devices(self) -> Dict[str, DeviceReading]:
        if self._devices is None:
            layout, values = self.flat  # type: ignore[misc]  # set when _devices is not (__init__)
            # Two threads may both build it (the worker's status file, a scrape): same result.
            self._devices = {t[0]: DeviceReading(*t) for t in layout.per_device(values)}
        return self._devices

    def replace(self, **changes) -> "Snapshot":
        """A copy with some of mono, wall, devices, net changed (dataclasses.replace's job)."""
        kw: Dict[str, Any] = {"mono": self.mono, "wall": self.wall, "net": self.net}
        if "devices" not in changes and self._devices is None:
            kw["flat"] = self.flat
        else:
            kw["devices"] = self._devices
        kw.update(changes)
        return Snapshot(**kw)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Snapshot):
            return NotImplemented
        return (self.mono, self.wall, self.devices, self.net) == (
            other.mono, other.wall, other.devices, other.net)

    __hash__ = None  # type: ignore[assignment]  # mutable contents, as the dataclass had

    def __repr__(self) -> str:
        return (f"Snapshot(mono={self.mono!r}, wall={self.wall!r}, "
                f"devices={sorted(self.devices, key=natural_key)!r}, net={sorted(self.net)!r})")

    def to_dict(self) -> dict:
        return {
            "mono": self.mono,
            "wall": self.wall,
            "devices": [self.devices[n].to_dict() for n in sorted(self.devices, key=natural_key)],
            "net": {i: dict(c) for i, c in sorted(self.net.items())},
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Snapshot":
        devs = [DeviceReading.from_dict(x) for x in d.get("devices", [])]
        return cls(
            mono=float(d["mono"]),
            wall=float(d["wall"]),
            devices={x.name: x for x in devs},
            net={str(i): {str(k): int(v) for k, v in c.items()} for i, c in d.get("net", {}).items()},
        )


class _Values(list):
    """Parsed counter values in slot order; `absent` tells whether any slot is None."""

    absent = False


def _parse_all(raws: List[Optional[bytes]]) -> _Values:
    """Parse every counter file's bytes at once.

    The fast path handles the normal case (every file is exactly `<digits>\n`, as the kernel
    writes it) with a handful of C-level calls over all ~1,100 files together instead of a Python
    loop per file: that keeps a full sample near the cost of its preads (docs/performance.md).
    Anything else falls back to per-file parsing, where bad files become None (absent).
    """
    out = _Values()
    n = len(raws)
    if not n:
        return out
    try:
        # TypeError when a slot is None (read failed): deliberate, the per-file path below.
        joined = b" ".join(raws)  # type: ignore[arg-type]
    except TypeError:
        joined = b""
    if joined:
        tokens = joined.split()
        # With exactly n tokens and the files joined by " " equal to the tokens joined by
        # "\n ", the n-1 separators are the only spaces, so file i is exactly tokens[i] + "\n".
        if len(tokens) == n and joined == b"\n ".join(tokens) + b"\n" and b"".join(tokens).isdigit():
            values = list(map(int, tokens))
            if max(values) <= _MAX_U64:
                out.extend(values)
                return out
    out.extend(parse_counter(r) if r else None for r in raws)
    out.absent = None in out
    return out


def counter_names(snapshots: Iterable[Snapshot]) -> List[str]:
    """Every port counter name seen in any snapshot, sorted (for table headers)."""
    names: Set[str] = set()
    for s in snapshots:
        for d in s.devices.values():
            names.update(d.port_counters)
    return sorted(names)
