"""The EFA devices of the last full discovery, kept in the run dir for the hooks.

A p5's discovery (32 devices: vendor, driver link, ports, rate, state and three counter
listings each) is ~3 ms of a hook that the targets give ~40 (docs/performance.md), and the
daemon has just done it. So whoever discovers in full (the daemon at start and at each
rediscovery, a hook that found no usable cache) writes what it found to
`<run_dir>/devices.json`, and the hooks read it instead, when it still describes this node:
the same sysfs root, the same names under `class/infiniband` (EFA or not) and the same EFA
driver version as at that discovery. The Sampler then opens the cached counter files, and
any that will not open sends it back to a full discovery (sysfs.Sampler). What a cache could
miss, a counter a reloaded driver of the same version added, the daemon's next rediscovery
(`rediscover_interval`) writes; and prolog and epilog read the same cache, so their snapshots
agree on what they count.

The file is root's (the run dir is) but is parsed as untrusted: anything malformed, or a
name that is not a plain file name, and it is ignored. Pure encode/decode; `load` and `save`
are the thin I/O. On the hook import path: standard library only.
"""
from __future__ import annotations

import os
import time

from efajob import fastjson
from efajob.atomicfile import atomic_write
from efajob.node.sysfs import DeviceInfo, Sampler, discover_listing, read_efa_driver_version
from efajob.values import read_regular

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Dict, List, Optional, Sequence, Tuple

    from efajob.node.readings import Snapshot

FILE_NAME = "devices.json"
VERSION = 1
MAX_BYTES = 1 << 20


def cache_path(run_dir: str) -> str:
    return os.path.join(run_dir, FILE_NAME)


def encode(root: str, listing: "Sequence[str]", driver: "Optional[str]",
           devices: "Sequence[DeviceInfo]") -> bytes:
    """Counter-name lists are stored once (a p5's 32 devices share two)."""
    lists: List[List[str]] = []
    index: Dict[Tuple[str, ...], int] = {}
    out = []
    for d in devices:
        refs = []
        for names in (d.port_counter_names, d.device_counter_names):
            k = index.get(names)
            if k is None:
                k = index[names] = len(lists)
                lists.append(list(names))
            refs.append(k)
        out.append([d.name, d.vendor, d.device_id, d.driver, list(d.ports), d.rate, d.state] + refs)
    return fastjson.dumps({"version": VERSION, "root": root, "listing": list(listing),
                           "driver": driver, "names": lists, "devices": out}).encode()


def _plain(name: object) -> bool:
    # A name is opened relative to its directory: nothing that could walk out of it.
    return (isinstance(name, str) and 0 < len(name) <= 255 and "/" not in name
            and "\x00" not in name and name not in (".", ".."))


def _text(v: object) -> bool:
    return v is None or (isinstance(v, str) and len(v) <= 4096)


def decode(data: bytes, root: str, listing: "Sequence[str]", driver: "Optional[str]"
           ) -> "Optional[Tuple[DeviceInfo, ...]]":
    """The cached devices when the file describes this node now; None otherwise."""
    try:
        doc = fastjson.loads(data)
    except ValueError:
        return None
    if (not isinstance(doc, dict) or doc.get("version") != VERSION or doc.get("root") != root
            or doc.get("listing") != list(listing) or doc.get("driver") != driver):
        return None
    lists, rows = doc.get("names"), doc.get("devices")
    if not isinstance(lists, list) or not isinstance(rows, list):
        return None
    if not all(isinstance(ns, list) and all(_plain(n) for n in ns) for ns in lists):
        return None
    names_of = [tuple(ns) for ns in lists]
    ib = os.path.join(root, "class", "infiniband")
    found = []
    for row in rows:
        if not isinstance(row, list) or len(row) != 9:
            return None
        name, vendor, device_id, drv, ports, rate, state, pk, dk = row
        if (not _plain(name) or name not in listing or not all(map(_text, (vendor, device_id, drv, rate, state)))
                or not isinstance(ports, list)
                or not all(isinstance(p, int) and not isinstance(p, bool) and 0 <= p < 1 << 16
                           for p in ports)
                or not all(isinstance(k, int) and not isinstance(k, bool) and 0 <= k < len(names_of)
                           for k in (pk, dk))):
            return None
        found.append(DeviceInfo(name=name, path=os.path.join(ib, name), vendor=vendor,
                                device_id=device_id, driver=drv, ports=tuple(ports), rate=rate,
                                state=state, port_counter_names=names_of[pk],
                                device_counter_names=names_of[dk]))
    return tuple(found)


def load(path: str, root: str) -> "Optional[Tuple[DeviceInfo, ...]]":
    """The cached devices, or None (no file, unreadable, stale, malformed): discover then."""
    try:
        data = read_regular(path, MAX_BYTES)
    except OSError:
        return None
    if len(data) > MAX_BYTES:
        return None
    return decode(data, root, discover_listing(root), read_efa_driver_version(root))


def save(path: str, root: str, listing: "Sequence[str]", devices: "Sequence[DeviceInfo]") -> bool:
    """Write the cache (temp file + rename) unless it already says the same; True when
    written. Raises OSError (callers log it: a cache that cannot be written costs time only)."""
    data = encode(root, listing, read_efa_driver_version(root), devices)
    try:
        if read_regular(path, MAX_BYTES) == data:
            return False
    except OSError:
        pass
    atomic_write(path, data)
    return True


def read_once(root: str, *, cache: "Optional[str]" = None, include_net: bool = True,
              ethtool: "Optional[Callable[[str], Optional[Dict[str, int]]]]" = None,
              clock: "Callable[[], float]" = time.monotonic,
              wall_clock: "Callable[[], float]" = time.time
              ) -> "Tuple[Snapshot, Tuple[DeviceInfo, ...]]":
    """(snapshot, devices) of one reading, as the hooks take it (sysfs.read_snapshot's job):
    from the cached discovery at `cache` when it still holds, else discovering in full and
    writing the cache (one that cannot be written costs time only: never an error here)."""
    cached = load(cache, root) if cache else None
    with Sampler(root, include_net=include_net, ethtool=ethtool, clock=clock,
                 wall_clock=wall_clock, rediscover_interval=float("inf"), devices=cached) as s:
        snap = s.sample()
        if cache and s.listing is not None:
            try:
                save(cache, root, s.listing, s.devices)
            except OSError:
                pass
        return snap, s.devices
