"""ENA allowance counters from ethtool statistics (`ethtool -S <if>`), without `ethtool`.

The ENA driver (>= 2.2.10) reports how often an instance went over its network allowances as
ethtool statistics, not in sysfs: `bw_in_allowance_exceeded bw_out_allowance_exceeded
pps_allowance_exceeded conntrack_allowance_exceeded linklocal_allowance_exceeded` (cumulative
packet counts) and `conntrack_allowance_available` (a level: tracked connections still
available). docs/ena.md explains what they mean and where they go.

Two sources, one contract (`reader(ifname) -> {name: value}`, only the cumulative names;
`reader.read(ifname)` also gives the levels):
- `IoctlReader`: the SIOCETHTOOL ioctl, as `ethtool -S` does it, on one AF_INET datagram socket
  kept open: ETHTOOL_GSSET_INFO for the number of statistics, ETHTOOL_GSTRINGS once per
  interface for their names (cached until the number changes), ETHTOOL_GSTATS per read. No
  subprocess: the hooks must stay within a few milliseconds and `ethtool` may not be installed.
  None of the three commands needs CAP_NET_ADMIN.
- `FileReader`: a directory holding one file per interface in `ethtool -S` text format (the
  simulator writes these; tests and the demo read them).

Any failure (no such interface, a driver without statistics or without these names, EPERM,
a short or inconsistent answer) makes the interface's allowances *absent* for that read: never
zero, never an exception out of a sample.

Parsing of the ioctl buffers is pure (`parse_*`, table-tested with packed bytes) and separate
from the three calls. On the hook import path: standard library only, and `_socket` rather
than `socket` (whose enum set-up costs the hooks milliseconds).
"""
from __future__ import annotations

import os
import struct

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover - names for annotations; array is imported lazily where used
    # (no `typing` at run time: the hooks import this module, and typing costs them ms)
    import array
    from typing import Callable, Dict, List, Mapping, NamedTuple, Optional, Protocol, Sequence, Tuple, Union

    # What the parsers read: the answered ioctl buffer, or bytes in the tests.
    Buffer = Union[bytes, bytearray, "array.array[int]"]

    class _Socket(Protocol):
        def fileno(self) -> int: ...
        def close(self) -> None: ...

# Names verbatim from the ENA driver (amzn-drivers kernel/linux/ena/ena_ethtool.c, ENI stats).
ALLOWANCE_COUNTERS: Tuple[str, ...] = (
    "bw_in_allowance_exceeded", "bw_out_allowance_exceeded", "pps_allowance_exceeded",
    "conntrack_allowance_exceeded", "linklocal_allowance_exceeded",
)
# A level, not a count: it goes up and down, so it must never be delta'd like a counter.
ALLOWANCE_LEVELS: Tuple[str, ...] = ("conntrack_allowance_available",)
ALLOWANCE_NAMES: Tuple[str, ...] = ALLOWANCE_COUNTERS + ALLOWANCE_LEVELS
_COUNTER_SET = frozenset(ALLOWANCE_COUNTERS)
_WANTED = frozenset(ALLOWANCE_NAMES)

# include/uapi/linux/sockios.h and include/uapi/linux/ethtool.h
SIOCETHTOOL = 0x8946
ETHTOOL_GSTRINGS = 0x1B
ETHTOOL_GSTATS = 0x1D
ETHTOOL_GSSET_INFO = 0x37
ETH_SS_STATS = 1
ETH_GSTRING_LEN = 32
IFNAMSIZ = 16
_MAX_U64 = (1 << 64) - 1
# The kernel writes as many strings/values as the driver has NOW, whatever size we announce
# (net/ethtool/ioctl.c ignores the caller's n_stats). Buffers get room for more than the count
# we just read, so a queue-count change between two calls cannot write past them.
_SLACK = 256
# A driver with more statistics than this is not one we should be allocating buffers for.
_MAX_STATS = 1 << 16

# struct ethtool_sset_info {u32 cmd; u32 reserved; u64 sset_mask; u32 data[];}: data at 16.
_SSET = struct.Struct("=IIQ")
_SSET_SIZE = _SSET.size + 4 * 1
# struct ethtool_gstrings {u32 cmd; u32 string_set; u32 len; u8 data[];}
_GSTR = struct.Struct("=III")
# struct ethtool_stats {u32 cmd; u32 n_stats; u64 data[];}
_GSTATS = struct.Struct("=II")
_U64 = struct.Struct("=Q")
_U32 = struct.Struct("=I")
# struct ifreq: 16 bytes of name, then a union whose first member we use is `void *ifr_data`;
# the whole struct is 40 bytes on 64-bit Linux (32 on 32-bit): pad to the larger.
_IFREQ = struct.Struct("16sP")
_IFREQ_SIZE = 40


if TYPE_CHECKING:
    class EthtoolStats(NamedTuple):
        """One interface's allowances at one instant: cumulative `counters` and `levels`. Only
        the names the driver reported are keys (absent is not zero)."""

        counters: Dict[str, int]
        levels: Dict[str, int]
else:  # the same named tuple without importing `typing`
    from collections import namedtuple

    EthtoolStats = namedtuple("EthtoolStats", ("counters", "levels"))


# -- pure: building and parsing the ioctl buffers ------------------------------------------------
def build_ifreq(ifname: str, data_addr: int) -> Optional[bytes]:
    """`struct ifreq` naming `ifname` and pointing at `data_addr`; None for a name the kernel
    cannot hold (empty, too long, non-ASCII, with NUL or '/')."""
    try:
        raw = ifname.encode("ascii")
    except UnicodeEncodeError:
        return None
    if not raw or len(raw) >= IFNAMSIZ or b"\0" in raw or b"/" in raw:
        return None
    return _IFREQ.pack(raw, data_addr).ljust(_IFREQ_SIZE, b"\0")


def build_sset_info_request() -> bytes:
    """ETHTOOL_GSSET_INFO asking for the size of the ETH_SS_STATS string set."""
    return _SSET.pack(ETHTOOL_GSSET_INFO, 0, 1 << ETH_SS_STATS) + b"\0" * 4


def parse_sset_info(buf: Buffer) -> Optional[int]:
    """The ETH_SS_STATS count from an answered ETHTOOL_GSSET_INFO, or None when the driver has
    no statistics (the kernel clears the mask bit of a set the driver does not answer)."""
    if len(buf) < _SSET_SIZE:
        return None
    cmd, _reserved, mask = _SSET.unpack_from(buf, 0)
    if cmd != ETHTOOL_GSSET_INFO or not mask & (1 << ETH_SS_STATS):
        return None
    # Only one bit was asked for, so its count is data[0].
    (count,) = _U32.unpack_from(buf, _SSET.size)
    return count if 0 < count <= _MAX_STATS else None


def build_gstrings_request(count: int) -> bytes:
    """ETHTOOL_GSTRINGS for ETH_SS_STATS with room for `count` (+ slack) names."""
    return _GSTR.pack(ETHTOOL_GSTRINGS, ETH_SS_STATS, count) + b"\0" * (
        (count + _SLACK) * ETH_GSTRING_LEN)


def parse_gstrings(buf: Buffer, expected: int) -> Optional[List[str]]:
    """The names from an answered ETHTOOL_GSTRINGS, or None when the answer is not the
    `expected` number of names (the driver changed between the calls: ask again later)."""
    if len(buf) < _GSTR.size:
        return None
    cmd, sset, n = _GSTR.unpack_from(buf, 0)
    if cmd != ETHTOOL_GSTRINGS or sset != ETH_SS_STATS or n != expected:
        return None
    if len(buf) < _GSTR.size + n * ETH_GSTRING_LEN:
        return None
    names = []
    for i in range(n):
        off = _GSTR.size + i * ETH_GSTRING_LEN
        raw = bytes(buf[off:off + ETH_GSTRING_LEN]).split(b"\0", 1)[0]
        names.append(raw.decode("ascii", "replace"))
    return names


def build_gstats_request(count: int) -> bytes:
    """ETHTOOL_GSTATS with room for `count` (+ slack) values."""
    return _GSTATS.pack(ETHTOOL_GSTATS, count) + b"\0" * ((count + _SLACK) * 8)


def parse_gstats(buf: Buffer, expected: int, positions: Sequence[int]) -> Optional[List[int]]:
    """The values at `positions` from an answered ETHTOOL_GSTATS, or None when the answer does
    not hold the `expected` number of values (the names we cached no longer match them)."""
    if len(buf) < _GSTATS.size:
        return None
    cmd, n = _GSTATS.unpack_from(buf, 0)
    if cmd != ETHTOOL_GSTATS or n != expected or len(buf) < _GSTATS.size + 8 * n:
        return None
    unpack = _U64.unpack_from
    return [unpack(buf, _GSTATS.size + 8 * i)[0] for i in positions]


def allowance_positions(names: Sequence[str]) -> Tuple[Tuple[str, int], ...]:
    """(name, index) of every allowance statistic in the driver's list (first of duplicates)."""
    out: Dict[str, int] = {}
    for i, n in enumerate(names):
        if n in _WANTED and n not in out:
            out[n] = i
    return tuple(out.items())


def build_stats(pairs: Sequence[Tuple[str, int]]) -> Optional[EthtoolStats]:
    """Allowance (name, value) pairs -> EthtoolStats; None when there are none."""
    counters: Dict[str, int] = {}
    levels: Dict[str, int] = {}
    for name, value in pairs:
        if name in _COUNTER_SET:
            counters[name] = value
        elif name in _WANTED:
            levels[name] = value
    return EthtoolStats(counters, levels) if counters or levels else None


def parse_ethtool_text(text: str) -> Dict[str, int]:
    """`ethtool -S <if>` output -> {statistic: value}. Lines that are not `name: <u64>`
    (the "NIC statistics:" header, blank lines, garbage) are skipped; the first of duplicate
    names wins, as `allowance_positions` does for the ioctl."""
    out: Dict[str, int] = {}
    for line in text.splitlines():
        name, sep, value = line.rpartition(":")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value.isdigit() or not value.isascii() or len(value) > 20:
            continue
        v = int(value)
        if v <= _MAX_U64 and name not in out:
            out[name] = v
    return out


def render_ethtool_text(stats: Mapping[str, int]) -> str:
    """{statistic: value} -> `ethtool -S` text (the simulator writes this)."""
    return "NIC statistics:\n" + "".join(f"     {k}: {v}\n" for k, v in stats.items())


# -- readers ----------------------------------------------------------------------------------
class _Reader:
    """Common interface: `read(ifname)` -> EthtoolStats or None; calling the reader gives the
    cumulative counters only ({} when absent), which is what `sysfs.Sampler` merges."""

    def read(self, ifname: str) -> Optional[EthtoolStats]:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, ifname: str) -> Dict[str, int]:
        got = self.read(ifname)
        return got.counters if got is not None else {}

    def close(self) -> None:
        pass


def _default_socket() -> _Socket:
    try:
        import _socket as sockmod  # the C module: `socket` builds enums at import (ms)
    except ImportError:  # pragma: no cover - every CPython has it
        import socket as sockmod  # type: ignore[no-redef]  # the same API under the same name
    return sockmod.socket(sockmod.AF_INET, sockmod.SOCK_DGRAM)


def _default_ifindex(ifname: str) -> Optional[int]:
    try:
        import _socket as sockmod  # the C module: `socket` builds enums at import (ms)
    except ImportError:  # pragma: no cover
        import socket as sockmod  # type: ignore[no-redef]  # the same API under the same name
    try:
        return sockmod.if_nametoindex(ifname)
    except OSError:
        return None


class _IfCache:
    """What one interface's names told us (a plain class: NamedTuple creation costs the hooks'
    import time)."""

    __slots__ = ("count", "names", "positions", "request")

    def __init__(self, count: int, names: Tuple[str, ...], positions: Tuple[Tuple[str, int], ...],
                 request: bytes):
        self.count = count
        self.names = names
        self.positions = positions
        self.request = request  # a zeroed GSTATS request of the right size, copied per read


class IoctlReader(_Reader):
    """Allowances through SIOCETHTOOL. `sysfs_root` ties interface names to the running
    kernel: an interface is read only when `<sysfs_root>/class/net/<if>/ifindex` is the
    kernel's index for that name, so a simulated or fixture tree (whose `eth0` is not this
    machine's) never picks up the host's counters. None skips that check.

    `ioctl`, `make_socket` and `ifindex` are injectable for tests."""

    def __init__(self, sysfs_root: Optional[str] = "/sys", *,
                 ioctl: Optional[Callable[[int, int, bytes], bytes]] = None,
                 make_socket: Callable[[], _Socket] = _default_socket,
                 ifindex: Callable[[str], Optional[int]] = _default_ifindex):
        if ioctl is None:
            import fcntl

            ioctl = fcntl.ioctl
        self.sysfs_root = sysfs_root
        self._ioctl = ioctl
        self._make_socket = make_socket
        self._ifindex = ifindex
        self._sock: Optional[_Socket] = None
        self._cache: Dict[str, _IfCache] = {}
        self._not_kernel: Dict[str, bool] = {}

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def _fd(self) -> Optional[int]:
        if self._sock is None:
            try:
                self._sock = self._make_socket()
            except OSError:
                return None
        return self._sock.fileno()

    def _call(self, ifname: str, request: bytes) -> Optional[array.array[int]]:
        """One SIOCETHTOOL with `request` as the ethtool buffer; the answered buffer or None."""
        import array  # here: a hook on a node without a kernel interface to read never needs it

        fd = self._fd()
        if fd is None:
            return None
        buf = array.array("B", request)
        ifr = build_ifreq(ifname, buf.buffer_info()[0])
        if ifr is None:
            return None
        try:
            self._ioctl(fd, SIOCETHTOOL, ifr)
        except OSError:
            # ENODEV (gone), EOPNOTSUPP (no ethtool stats), EPERM, ...: absent this time.
            return None
        return buf

    def _is_kernel_if(self, ifname: str) -> bool:
        if self.sysfs_root is None:
            return True
        known = self._not_kernel.get(ifname)
        if known is not None:
            return not known
        path = os.path.join(self.sysfs_root, "class", "net", ifname, "ifindex")
        try:
            with open(path, "rb") as f:
                text = f.read(32).strip()
            ok = text.isdigit() and int(text) == self._ifindex(ifname)
        except OSError:
            ok = False
        # Remembered either way: a simulated tree stays simulated. A real interface that is
        # replaced (driver reload) is caught by the count check or an ioctl error, which drop it.
        self._not_kernel[ifname] = not ok
        return ok

    def _count(self, ifname: str) -> Optional[int]:
        buf = self._call(ifname, build_sset_info_request())
        return None if buf is None else parse_sset_info(buf)

    def _learn(self, ifname: str, count: int) -> Optional[_IfCache]:
        buf = self._call(ifname, build_gstrings_request(count))
        names = parse_gstrings(buf, count) if buf is not None else None
        if names is None:
            return None
        entry = _IfCache(count, tuple(names), allowance_positions(names),
                         build_gstats_request(count))
        self._cache[ifname] = entry
        return entry

    def read(self, ifname: str) -> Optional[EthtoolStats]:
        try:
            return self._read(ifname)
        except Exception:  # noqa: BLE001 - a sample must never fail for want of allowances
            self._forget(ifname)
            return None

    def _forget(self, ifname: str) -> None:
        self._cache.pop(ifname, None)
        self._not_kernel.pop(ifname, None)

    def _entry(self, ifname: str) -> Optional[_IfCache]:
        """The interface's cached names, checked against its count (one GSSET_INFO)."""
        if not self._is_kernel_if(ifname):
            return None
        # The count first, every time: the kernel sizes its answer by the driver's count NOW,
        # and a changed count means the cached names no longer match the values.
        count = self._count(ifname)
        if count is None:
            self._forget(ifname)
            return None
        entry = self._cache.get(ifname)
        if entry is None or entry.count != count:
            entry = self._learn(ifname, count)
            if entry is None:
                self._forget(ifname)
        return entry

    def _values(self, ifname: str, entry: _IfCache, positions: Sequence[int]) -> Optional[List[int]]:
        buf = self._call(ifname, entry.request)
        values = parse_gstats(buf, entry.count, positions) if buf is not None else None
        if values is None:
            self._forget(ifname)
        return values

    def _read(self, ifname: str) -> Optional[EthtoolStats]:
        entry = self._entry(ifname)
        if entry is None or not entry.positions:
            return None  # no statistics, not ENA, or an ENA driver older than 2.2.10
        values = self._values(ifname, entry, [i for _, i in entry.positions])
        if values is None:
            return None
        return build_stats([(n, v) for (n, _), v in zip(entry.positions, values)])

    def read_all(self, ifname: str) -> Optional[Dict[str, int]]:
        """Every ethtool statistic of `ifname` (what `ethtool -S` prints), first of duplicate
        names; None when absent. For diagnostics and tests: samples use `read`."""
        try:
            entry = self._entry(ifname)
            if entry is None:
                return None
            values = self._values(ifname, entry, range(entry.count))
        except Exception:  # noqa: BLE001 - same contract as read()
            self._forget(ifname)
            return None
        if values is None:
            return None
        out: Dict[str, int] = {}
        for n, v in zip(entry.names, values):
            out.setdefault(n, v)
        return out


class FileReader(_Reader):
    """Allowances from `<directory>/<ifname>`, a file in `ethtool -S` text format (the
    simulator's source). A missing or unreadable file is absent."""

    def __init__(self, directory: str):
        self.directory = directory

    def read(self, ifname: str) -> Optional[EthtoolStats]:
        if not ifname or "/" in ifname or ifname in (".", ".."):
            return None
        try:
            with open(os.path.join(self.directory, ifname), "rb") as f:
                text = f.read(1 << 20).decode("utf-8", "replace")
        except OSError:
            return None
        stats = parse_ethtool_text(text)
        return build_stats([(n, stats[n]) for n in ALLOWANCE_NAMES if n in stats])


def ethtool_reader_from_config(cfg) -> Optional[_Reader]:
    """The reader the config's `ethtool` key names: "ioctl" (default), "off" (None), or a
    directory of `ethtool -S` text files (`{node}` already expanded by config.py)."""
    mode = getattr(cfg, "ethtool", "ioctl") or "off"
    if mode == "off":
        return None
    if mode == "ioctl":
        return IoctlReader(getattr(cfg, "sysfs_root", "/sys"))
    return FileReader(mode)
