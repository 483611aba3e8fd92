"""EFA device discovery and the fast counter sampler.

Facts this follows (shared/notes/efa-sysfs.md):
- traffic counters are rdma hw_counters: `<dev>/ports/<n>/hw_counters/<name>`; device-level
  admin counters are `<dev>/hw_counters/<name>` (kernel >= 5.15; before that both directories
  hold one common list). EFA has no `ports/<n>/counters/` (IB PMA) directory: never read it.
- names are read open-endedly and kept verbatim: the kernel keeps adding counters.
- `lifespan` is the counter cache lifetime in ms, not a counter.
- a missing, unreadable or garbage file is *absent*, never zero.
- EFA devices are told from other RDMA devices (mlx5 on some p6) by PCI vendor 0x1d0f, or by
  the `efa` driver when the vendor file is unreadable.

Speed: the sampler keeps one descriptor per counter file open and `pread`s them at offset 0
(sysfs regenerates an attribute on every read at offset 0), so a sample costs one syscall per
counter. Opening and closing each file costs about 25x more (docs/performance.md). The read
loop runs in C (`_fastread.c`, built with the package when a compiler exists) or, without it or
with EFAJOB_NO_NATIVE=1 in the environment, in Python: the same files, the same rules, the
same values (tests run both).

This module is on the hook import path: standard library only (and the optional extension).
"""
from __future__ import annotations

import errno
import os
import time

from efajob.errors import SysfsError
from efajob.frozen import Frozen
from efajob.node.flatlayout import DEV, NET, PORT, Layout
from efajob.node.readings import DeviceReading, Snapshot, _parse_all, _Values, natural_key
from efajob.node.instances import EFA_VENDOR

# The interface version of _fastread.c this module speaks (its API constant). A module built
# by `efajob install native` for an older efajob can outlive an upgrade: then it is not used.
NATIVE_API = 1
try:
    from efajob.node import _fastread  # built only where a C compiler was (pyproject.toml)
except ImportError:
    _fastread = None  # type: ignore[assignment]
if (os.environ.get("EFAJOB_NO_NATIVE", "") not in ("", "0")
        or getattr(_fastread, "API", None) != NATIVE_API):
    _fastread = None  # type: ignore[assignment]
# Whether samplers read through the C loop (bench/sampler.py prints which).
NATIVE = _fastread is not None
# native_reader()'s reason when Python reads were asked for, not a fault (efajob doctor).
NATIVE_OFF = "turned off by EFAJOB_NO_NATIVE in the environment"


def native_reader() -> Tuple[Optional[str], Optional[str]]:
    """(the C reader's module file, None) when samplers in this process read through it, else
    (None, why not): what `efajob doctor` reports. Asked again here, not kept from the import
    above, so that the hooks' import path pays nothing for the explanation."""
    if _fastread is not None:
        return getattr(_fastread, "__file__", None) or "efajob.node._fastread", None
    if os.environ.get("EFAJOB_NO_NATIVE", "") not in ("", "0"):
        return None, NATIVE_OFF
    try:
        from efajob.node import _fastread as mod
    except ImportError as e:
        here = os.path.dirname(os.path.abspath(__file__))
        built = [n for n in _listdir(here) if n.startswith("_fastread.") and n != "_fastread.c"]
        return None, (f"cannot be loaded: {e}" if built else
                      f"not built: no _fastread module in {here}")
    return None, (f"{getattr(mod, '__file__', '_fastread')} speaks interface "
                  f"{getattr(mod, 'API', None)!r}, this efajob needs {NATIVE_API}: built for "
                  "another version")

TYPE_CHECKING = False
if TYPE_CHECKING:  # no `typing` (nor `re`, `dataclasses`) at run time: the hooks import this
    from typing import Callable, Dict, List, Optional, Tuple

    from efajob.node.flatlayout import Group

# Counter files hold at most 20 digits and a newline; 64 bytes also takes in the longest
# garbage we need to recognise ("N/A (no PMA)") without a second read.
_READ_SIZE = 64
NOT_COUNTERS = frozenset(("lifespan",))
# Errors after which a descriptor must be reopened: the file was replaced or its device went
# away (kernfs answers ENODEV on an open file whose node was removed).
_REOPEN_ERRNOS = frozenset((errno.ENOENT, errno.ESTALE, errno.ENODEV))


def parse_rate_gbps(text: Optional[str]) -> Optional[float]:
    """`ports/<n>/rate` ("100 Gb/sec (4X EDR)") -> 100.0; None when absent or unparsable."""
    if not text:
        return None
    # ^\s*(\d+(?:\.\d+)?)\s*Gb/sec, with string methods
    t = text.lstrip()
    i = 0
    while i < len(t) and "0" <= t[i] <= "9":
        i += 1
    if i == 0:
        return None
    j = i + 1
    while i < len(t) and t[i] == "." and j < len(t) and "0" <= t[j] <= "9":
        j += 1
    if j > i + 1:
        i = j
    return float(t[:i]) if t[i:].lstrip().startswith("Gb/sec") else None


def _read_text(path: str) -> Optional[str]:
    # os.open/os.read, not open(): a Python file object costs twice the syscalls' time, and
    # discovery reads five of these per device (a third of efajob-check-node's sysfs time).
    # Non-blocking: a FIFO where an attribute should be must not hang discovery.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        return os.read(fd, 4096).decode("ascii", "replace").strip()
    except OSError:
        return None
    finally:
        os.close(fd)


def _listdir(path: str) -> List[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


class DeviceInfo(Frozen):
    """What discovery learns about one EFA device (static between rediscoveries)."""

    name: str
    path: str
    vendor: Optional[str]
    device_id: Optional[str]
    driver: Optional[str]
    ports: Tuple[int, ...]
    rate: Optional[str]
    state: Optional[str]
    port_counter_names: Tuple[str, ...]
    device_counter_names: Tuple[str, ...]

    @property
    def port(self) -> int:
        return self.ports[0] if self.ports else 1

    @property
    def rate_gbps(self) -> Optional[float]:
        return parse_rate_gbps(self.rate)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "vendor": self.vendor,
            "device_id": self.device_id,
            "driver": self.driver,
            "ports": list(self.ports),
            "rate": self.rate,
            "rate_gbps": self.rate_gbps,
            "state": self.state,
            "port_counters": list(self.port_counter_names),
            "device_counters": list(self.device_counter_names),
        }


def _is_efa(devpath: str) -> Tuple[bool, Optional[str], Optional[str], Optional[str]]:
    vendor = _read_text(os.path.join(devpath, "device", "vendor"))
    device_id = _read_text(os.path.join(devpath, "device", "device"))
    driver = None
    try:
        driver = os.path.basename(os.readlink(os.path.join(devpath, "device", "driver")))
    except OSError:
        pass
    if vendor is not None:
        return vendor.lower() == EFA_VENDOR, vendor, device_id, driver
    return driver == "efa", vendor, device_id, driver


def discover_listing(root: str = "/sys") -> List[str]:
    """Every RDMA device name under `<root>/class/infiniband` (EFA or not), sorted: what a
    discovery starts from, and what says whether a cached one still holds (node/devcache.py)."""
    return _listdir(os.path.join(root, "class", "infiniband"))


def discover_devices(root: str = "/sys", listing: Optional[List[str]] = None) -> List[DeviceInfo]:
    """Every EFA device under `<root>/class/infiniband` (or of `listing`, its names), in
    natural name order (rdmap79s0 before rdmap113s0). Other RDMA devices (mlx5 and friends) are
    skipped. A missing `class/infiniband` means no devices, not an error."""
    ib = os.path.join(root, "class", "infiniband")
    found = []
    for name in sorted(discover_listing(root) if listing is None else listing, key=natural_key):
        devpath = os.path.join(ib, name)
        efa, vendor, device_id, driver = _is_efa(devpath)
        if not efa:
            continue
        ports = tuple(sorted(int(p) for p in _listdir(os.path.join(devpath, "ports")) if p.isdigit()))
        first = ports[0] if ports else 1
        portdir = os.path.join(devpath, "ports", str(first))
        port_names = tuple(
            n for n in _listdir(os.path.join(portdir, "hw_counters")) if n not in NOT_COUNTERS
        )
        dev_names = tuple(
            n for n in _listdir(os.path.join(devpath, "hw_counters")) if n not in NOT_COUNTERS
        )
        found.append(
            DeviceInfo(
                name=name,
                path=devpath,
                vendor=vendor,
                device_id=device_id,
                driver=driver,
                ports=ports,
                rate=_read_text(os.path.join(portdir, "rate")),
                state=_read_text(os.path.join(portdir, "state")),
                port_counter_names=port_names,
                device_counter_names=dev_names,
            )
        )
    return found


def read_efa_driver_version(root: str = "/sys") -> Optional[str]:
    """The loaded EFA driver's version from `<root>/module/efa/version`: AWS's out-of-tree
    driver (amzn-drivers efa_main.c) declares MODULE_VERSION as "<major>.<minor>.<sub>g"
    ("2.17.3g"); the in-tree driver declares none, so None means in-tree (or efa not loaded
    as a module). One small read: for discovery and status output, not for every sample."""
    text = _read_text(os.path.join(root, "module", "efa", "version"))
    return text if text and len(text) <= 64 and text.isprintable() else None


def discover_netdevs(root: str = "/sys") -> List[str]:
    """Network interfaces worth sampling beside EFA: physical ones (with a `device` link), which on
    EC2 are ENA. Virtual interfaces (lo, docker0, veth) have no `device` and carry no fabric data."""
    net = os.path.join(root, "class", "net")
    return [n for n in _listdir(net) if os.path.exists(os.path.join(net, n, "device"))]


def _dir_inodes(fd: int) -> Dict[str, int]:
    """{name: inode number} of a directory's entries, from one listing (the d_ino getdents
    gives: kernfs, tmpfs and disk filesystems give the inode's own number); {} when the
    directory cannot be read."""
    if fd < 0:
        return {}
    try:
        with os.scandir(fd) as it:
            return {e.name: e.inode() for e in it}
    except OSError:
        return {}


def _fd_inode(fd: int) -> Optional[int]:
    try:
        return os.fstat(fd).st_ino
    except OSError:
        return None


def _group_slots(slots: List[Tuple[int, int, int, str]]) -> List[Group]:
    groups: List[Group] = []
    start = 0
    for k in range(1, len(slots) + 1):
        if k == len(slots) or slots[k][:3] != slots[start][:3]:
            kind, owner, port, _ = slots[start]
            groups.append((kind, owner, port, start, k, tuple(s[3] for s in slots[start:k])))
            start = k
    return groups


_OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_DIRECTORY", 0)
_NOATIME = getattr(os, "O_NOATIME", 0)

# Slot kinds in the flat descriptor table.
_PORT, _DEV, _NET = PORT, DEV, NET


class _DirFds:
    """Directory descriptors for one rediscovery, opened once each (-1: cannot be opened)."""

    __slots__ = ("_fds",)

    def __init__(self) -> None:
        self._fds: Dict[str, int] = {}

    def get(self, directory: str) -> int:
        fd = self._fds.get(directory)
        if fd is None:
            try:
                fd = os.open(directory, _DIR_FLAGS)
            except OSError:
                fd = -1
            self._fds[directory] = fd
        return fd

    def close(self) -> None:
        for fd in self._fds.values():
            if fd >= 0:
                os.close(fd)
        self._fds.clear()


class Sampler:
    """Keeps every counter file open and reads them all with one `pread` each per sample.

    Never raises on bad files: a counter that cannot be read or parsed is absent from the sample.
    A device whose files all vanish is left out of the sample and triggers a rediscovery.
    Devices are rediscovered every `rediscover_interval` seconds (devices can appear late after
    boot, p5en being known for it) and whenever one vanishes.

    `device_counter_interval`: read the device-level admin counters (`<dev>/hw_counters`: a
    third of a p5's files, error counters that move rarely) only every that many seconds and
    repeat their last values in between. 0 (the default, what the hooks use) reads them every
    sample; the daemon sets it to cut its per-second cost (docs/performance.md).

    `ethtool`: a reader (`ifname -> {name: value}`, efajob/node/ethtool.py) whose counters (the ENA
    allowance counters) are merged into `Snapshot.net[ifname]` for each sampled netdev; None
    reads none. The Sampler owns it: `close()` closes it. Its failures are absent counters.

    `devices`: a cached discovery (node/devcache.py) to open instead of discovering; if any of
    its counter files cannot be opened, the Sampler discovers in full after all. `listing`
    is then the class/infiniband listing of the last full discovery (None when the cache was
    used), and `discoveries` counts full discoveries (the daemon rewrites the cache on each).

    `native`: read through the C loop when it is built (module NATIVE); False reads in Python.
    """

    def __init__(
        self,
        root: str = "/sys",
        *,
        rediscover_interval: float = 30.0,
        include_net: bool = True,
        device_counter_interval: float = 0.0,
        ethtool: Optional[Callable[[str], Optional[Dict[str, int]]]] = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        devices: Optional[Tuple[DeviceInfo, ...]] = None,
        native: bool = True,
    ):
        if not os.path.isdir(root):
            raise SysfsError(f"sysfs root {root!r} is not a directory")
        self.root = root
        self.rediscover_interval = rediscover_interval
        self.include_net = include_net
        self.device_counter_interval = device_counter_interval
        self._ethtool = ethtool
        self._clock = clock
        self._wall = wall_clock
        self._fds: List[int] = []
        self._paths: List[str] = []
        # Per slot: (kind, owner index, port number, counter name).
        self._slots: List[Tuple[int, int, int, str]] = []
        # Contiguous runs of slots of one (kind, owner, port): (kind, owner, port, start, end, names).
        self._groups: List[Tuple[int, int, int, int, int, Tuple[str, ...]]] = []
        self._devices: Tuple[DeviceInfo, ...] = ()
        self._netdevs: Tuple[str, ...] = ()
        self._discovered_at: Optional[float] = None
        self._dead: set = set()  # slot indexes parked on /dev/null until the next rediscovery
        # Slots [0, _split) are port and netdev counters, [_split, end) device counters.
        self._split = 0
        self._dev_read_at: Optional[float] = None
        self._last_devc: List[Dict[str, int]] = []
        self._last_dev_values: Optional[List[int]] = None  # the flat path's _last_devc
        self._layout: Optional[Layout] = None
        self.listing: Optional[List[str]] = None
        self.discoveries = 0
        self._expected = 0  # counter files the last discovery wanted (the cached path checks)
        # What the last discovery saw, to tell at the next whether anything moved: the files
        # it wanted and each directory's {name: inode} (None: not listed; a descriptor kept
        # from then is asked its inode).
        self._wanted: List[Tuple[str, str, Tuple[int, int, int, str]]] = []
        self._inodes: Optional[Dict[str, Dict[str, int]]] = None
        self._native = native and _fastread is not None
        # A _fastread.Reader over _fds, rebuilt whenever _fds changes (None: read in Python).
        self._reader: "Optional[_fastread.Reader]" = None
        if devices is None or not self._open_cached(devices):
            self.rediscover()

    # -- discovery -------------------------------------------------------------------------
    @property
    def devices(self) -> Tuple[DeviceInfo, ...]:
        return self._devices

    @property
    def netdevs(self) -> Tuple[str, ...]:
        return self._netdevs

    @property
    def native(self) -> bool:
        """True when samples are read by the C loop (_fastread), False in Python."""
        return self._native

    def _set_fds(self, fds: List[int]) -> None:
        self._fds = fds
        # The C reader copies the descriptors: a stale one would read a closed (or reused) fd.
        self._reader = _fastread.Reader(fds) if self._native and fds else None

    def _open_cached(self, devices: Tuple[DeviceInfo, ...]) -> bool:
        """Open a cached discovery's files; False (nothing kept open) when one will not open."""
        self._discover(devices, None)
        if len(self._fds) == self._expected:
            return True
        for fd in self._fds:
            self._close_fd(fd)
        self._set_fds([])
        self._paths, self._slots = [], []
        return False

    def rediscover(self) -> None:
        """Re-list devices and counter files; keep descriptors of files that are still there."""
        listing = discover_listing(self.root)
        self._discover(tuple(discover_devices(self.root, listing)), listing)
        self.discoveries += 1

    def _discover(self, devices: Tuple[DeviceInfo, ...], listing: Optional[List[str]]) -> None:
        netdevs = tuple(discover_netdevs(self.root)) if self.include_net else ()
        # (directory, name, slot): a p5 has 1,088 files in 96 directories. Paths are joined
        # with "/" (names come from listing their directory) and files are opened relative to
        # their directory's descriptor: os.path.join and the kernel's walk of a 9-component
        # path for each file were a fifth of an epilog's snapshot.
        wanted: List[Tuple[str, str, Tuple[int, int, int, str]]] = []
        # Device counters last, so a sample that skips them reads one contiguous prefix.
        last: List[Tuple[str, str, Tuple[int, int, int, str]]] = []
        for i, dev in enumerate(devices):
            for port in dev.ports or (1,):
                pdir = os.path.join(dev.path, "ports", str(port), "hw_counters")
                names = dev.port_counter_names if port == dev.port else tuple(
                    n for n in _listdir(pdir) if n not in NOT_COUNTERS
                )
                wanted += [(pdir, n, (_PORT, i, port, n)) for n in names]
            ddir = os.path.join(dev.path, "hw_counters")
            last += [(ddir, n, (_DEV, i, 0, n)) for n in dev.device_counter_names]
        for i, ifname in enumerate(netdevs):
            sdir = os.path.join(self.root, "class", "net", ifname, "statistics")
            wanted += [(sdir, n, (_NET, i, 0, n)) for n in _listdir(sdir)]
        wanted += last
        self._expected = len(wanted)
        old = dict(zip(self._paths, self._fds))
        dirs = _DirFds()
        try:
            # Whether a kept descriptor still reads the file its path names, from one listing
            # per directory (the inode numbers it gives) instead of a stat of every path and
            # every descriptor: 2,176 system calls and most of a p5 rediscovery's ~10 ms,
            # every 30 s. The first discovery (and the hooks', from the device cache) keeps
            # nothing, so it lists nothing.
            inodes = ({d: _dir_inodes(dirs.get(d)) for d in dict.fromkeys(w[0] for w in wanted)}
                      if old else None)
            if (inodes is not None and inodes == self._inodes and not self._dead
                    and wanted == self._wanted and len(self._fds) == len(wanted)):
                # Nothing moved (the periodic rediscovery's usual answer): every descriptor
                # is kept as it is, and only what discovery read (port state, rate) is new.
                self._devices, self._netdevs = devices, netdevs
                self._dev_read_at = None
                self.listing = listing
                self._discovered_at = self._clock()
                return
            for k in self._dead:
                # Slots parked on /dev/null after their file vanished: never reuse those.
                if k < len(self._fds):
                    old.pop(self._paths[k], None)
                    self._close_fd(self._fds[k])
            self._dead = set()
            fds, paths, slots = [], [], []
            known = self._inodes
            for directory, name, slot in wanted:
                path = f"{directory}/{name}"
                now = inodes[directory].get(name) if inodes is not None else None
                fd = old.pop(path, None)
                if fd is not None:
                    was = known.get(directory, {}).get(name) if known is not None else None
                    if (was if was is not None else _fd_inode(fd)) != now:
                        # The path names another file now, or none (a device removed and
                        # re-added: on sysfs its old descriptor would answer ENODEV; on a
                        # plain tree it would read stale data).
                        self._close_fd(fd)
                        fd = None
                if fd is None:
                    fd = self._open(name, dirs.get(directory))
                    if fd is None:
                        continue
                fds.append(fd)
                paths.append(path)
                slots.append(slot)
        finally:
            dirs.close()
        self._inodes, self._wanted = inodes, wanted
        for fd in old.values():
            self._close_fd(fd)
        self._set_fds(fds)
        self._paths, self._slots = paths, slots
        self._groups = _group_slots(slots)
        layout = Layout(self._groups, [(d.name, d.port) for d in devices])
        if self._layout is None or self._layout.key != layout.key:
            # Keep the old one when nothing moved, so the periodic rediscovery does not push
            # the next diff off the flat path (diff_snapshots compares layouts by identity).
            self._layout = layout
        self._split = sum(1 for sl in slots if sl[0] != _DEV)
        self._dev_read_at = None  # read the device counters at the next sample
        self._devices, self._netdevs = devices, netdevs
        self.listing = listing
        self._discovered_at = self._clock()

    @staticmethod
    def _open(path: str, dir_fd: Optional[int] = None) -> Optional[int]:
        """A descriptor of `path` (relative to `dir_fd` when given), None when it cannot be
        opened (or `dir_fd` is -1: its directory could not be)."""
        if dir_fd == -1:
            return None
        # O_NOATIME: reading a counter must not write inode metadata. sysfs never updates atime
        # anyway; on a simulated tree on a disk filesystem every read after a write would
        # otherwise dirty (and on ext4 journal) the inode, a cost real nodes do not have.
        # Only the file's owner or root may ask for it (EPERM otherwise): then open plainly.
        for flags in (_OPEN_FLAGS | _NOATIME, _OPEN_FLAGS):
            try:
                return os.open(path, flags, dir_fd=dir_fd)
            except PermissionError:
                continue
            except OSError:
                return None
        return None

    @staticmethod
    def _close_fd(fd: int) -> None:
        try:
            os.close(fd)
        except OSError:
            pass

    # -- sampling --------------------------------------------------------------------------
    def _read_all(self, limit: Optional[int] = None) -> List[Optional[bytes]]:
        pread = os.pread
        fds = self._fds if limit is None else self._fds[:limit]
        try:
            # The fast path: one list comprehension of preads, nothing else.
            return [pread(fd, _READ_SIZE, 0) for fd in fds]
        except OSError:
            pass
        out: List[Optional[bytes]] = []
        for k, fd in enumerate(fds):
            try:
                out.append(pread(fd, _READ_SIZE, 0))
            except OSError as e:
                out.append(self._retry(k, e))
        return out

    def _read_native(self, limit: Optional[int]) -> Tuple[_Values, Optional[List[Optional[bytes]]]]:
        """The C loop's reading: (values, None) when every file was clean, else (values, raws)
        with the failed reads retried or reopened as in `_read_all`."""
        clean, items = self._reader.read(-1 if limit is None else limit)  # type: ignore[union-attr]  # callers check
        if clean:
            return _Values(items), None
        raws: List[Optional[bytes]] = []
        for k, item in enumerate(items):
            if isinstance(item, int):  # a failed pread's errno
                raws.append(self._retry(k, OSError(item, os.strerror(item))))
            else:
                raws.append(item)
        return _parse_all(raws), raws

    def _retry(self, k: int, err: OSError) -> Optional[bytes]:
        # EIO/EINVAL/EPERM: the counter is unreadable now; keep the descriptor, report absent.
        if err.errno not in _REOPEN_ERRNOS:
            return None
        self._close_fd(self._fds[k])
        fd = self._open(self._paths[k])
        if fd is None:
            # Gone for good (device vanished): keep a dead slot until the next rediscovery.
            self._fds[k] = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            self._set_fds(self._fds)
            self._dead.add(k)
            self._discovered_at = None
            return None
        self._fds[k] = fd
        self._set_fds(self._fds)
        try:
            return os.pread(fd, _READ_SIZE, 0)
        except OSError:
            return None

    def sample(self) -> Snapshot:
        now = self._clock()
        if self._discovered_at is None or now - self._discovered_at >= self.rediscover_interval:
            self.rediscover()
        wall = self._wall()
        mono = self._clock()
        every = self.device_counter_interval
        full = every <= 0 or self._dev_read_at is None or mono - self._dev_read_at >= every
        limit = None if full else self._split
        raws: Optional[List[Optional[bytes]]]
        if self._reader is not None:
            values, raws = self._read_native(limit)
        else:
            raws = self._read_all(limit)
            values = _parse_all(raws)
        if not values.absent and self._layout is not None and self._layout.complete:
            flat = self._flat(values, full, mono)
            if flat is not None:
                net: Dict[str, Dict[str, int]] = {}
                for kind, owner, _, start, end, names in self._groups:
                    if kind == _NET:
                        net[self._netdevs[owner]] = dict(zip(names, values[start:end]))
                if self._ethtool is not None and self._netdevs:
                    self._merge_ethtool(net)
                return Snapshot(mono=mono, wall=wall, net=net, flat=(self._layout, flat))

        ndev = len(self._devices)
        ports: List[Dict[int, Dict[str, int]]] = [{} for _ in range(ndev)]
        devc: List[Dict[str, int]] = [{} for _ in range(ndev)]
        seen = [False] * ndev
        net = {}
        for kind, owner, port, start, end, names in self._groups:
            if kind == _DEV and not full:
                continue
            vals = values[start:end]
            if values.absent:
                counters = {n: v for n, v in zip(names, vals) if v is not None}
                # absent values come only from a reading with raws (a clean one has none)
                if kind != _NET and any(raws[start:end]):  # type: ignore[index]
                    seen[owner] = True
            else:
                counters = dict(zip(names, vals))
                if kind != _NET:
                    seen[owner] = True
            if kind == _PORT:
                ports[owner][port] = counters
            elif kind == _DEV:
                devc[owner] = counters
            elif counters:
                net[self._netdevs[owner]] = counters
        if self._ethtool is not None and self._netdevs:
            self._merge_ethtool(net)

        if full:
            self._last_devc, self._dev_read_at = devc, mono
            self._last_dev_values = None
        elif len(self._last_devc) == ndev:
            devc = self._last_devc  # repeated until the next full read (treat as read-only)
        elif self._last_dev_values is not None and self._layout is not None:
            # The last full read took the flat path: its device counters, as dictionaries.
            pad = [0] * self._split + self._last_dev_values
            self._last_devc = devc = [t[3] for t in self._layout.per_device(pad)]
        devices: Dict[str, DeviceReading] = {}
        for i, dev in enumerate(self._devices):
            if not seen[i]:
                # Every file read empty or failed: the device is gone or going (a vanishing
                # device's files empty out before its directory goes). Leave it out; when the
                # directory is gone, look again next sample.
                if not os.path.isdir(dev.path):
                    self._discovered_at = None
                continue
            p = ports[i]
            first = dev.port
            pc = p.pop(first, None)
            devices[dev.name] = DeviceReading(dev.name, first, {} if pc is None else pc, devc[i], p)
        return Snapshot(mono=mono, wall=wall, devices=devices, net=net)

    def _flat(self, values: List[int], full: bool, mono: float) -> Optional[List[int]]:
        """Every file read and parsed: the whole slot list, with the device counters of the last
        full read repeated on the samples that skip them (None: no such read to repeat)."""
        if full:
            self._last_dev_values, self._dev_read_at = values[self._split:], mono
            self._last_devc = []
            return values
        if self._last_dev_values is None or len(values) + len(self._last_dev_values) != len(self._fds):
            return None
        return values + self._last_dev_values

    def _merge_ethtool(self, net: Dict[str, Dict[str, int]]) -> None:
        reader = self._ethtool
        for ifname in self._netdevs:
            try:
                extra = reader(ifname)  # type: ignore[misc]  # callers check it is not None
            except Exception:  # noqa: BLE001 - a reader bug must not cost the EFA sample
                extra = None
            if not extra:
                continue
            stats = net.get(ifname)
            if stats is None:
                net[ifname] = dict(extra)
            else:
                for k, v in extra.items():
                    stats.setdefault(k, v)  # sysfs names win; the two sets do not overlap

    def close(self) -> None:
        for fd in self._fds:
            self._close_fd(fd)
        self._set_fds([])
        self._paths, self._slots, self._groups = [], [], []
        close = getattr(self._ethtool, "close", None)
        if close is not None:
            try:
                close()
            except OSError:
                pass

    def __enter__(self) -> "Sampler":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):  # pragma: no cover - best effort if a caller forgot close()
        try:
            self.close()
        except Exception:
            pass


def read_snapshot(root: str = "/sys", *, include_net: bool = True,
                  ethtool: Optional[Callable[[str], Optional[Dict[str, int]]]] = None,
                  clock: Callable[[], float] = time.monotonic,
                  wall_clock: Callable[[], float] = time.time) -> Snapshot:
    """One-shot reading: discover, read every counter once, close (`ethtool` too, see
    Sampler). The hooks read through node/devcache.read_once, which skips the discovery."""
    with Sampler(root, include_net=include_net, ethtool=ethtool, clock=clock,
                 wall_clock=wall_clock, rediscover_interval=float("inf")) as s:
        return s.sample()
