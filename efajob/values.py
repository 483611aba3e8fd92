"""Checks for what is read from files other processes wrote (records, node status files, the
run dir and the outbox): regular files only, JSON parsed within bounds, numbers that are
finite and in range.

Standard library only: the hooks use it.
"""
from __future__ import annotations

import errno
import math
import os
import stat

from efajob.fastjson import loads as _loads

TYPE_CHECKING = False
if TYPE_CHECKING:  # no `typing` or `json` at run time: the hooks import this (bench/hooks.py)
    from typing import NoReturn, Optional, Tuple

# Counters are u64: 20 digits at most, and any integer of 20 digits converts to a float. A
# longer run of digits, an exponent of 100 or more, or NaN/Infinity (Python's json accepts
# them) sends the text through the checking parser below; everything else takes json's C fast
# path untouched. The test maps every byte through one table (digits -> 0, e/E/+ -> e, N/I ->
# N, the rest -> space) and looks for three substrings: ~60 us on a 32 kB p5 snapshot, a third
# of json.loads (a regex was 1.5 ms). Only a text with a capital N or I is then searched for
# the tokens `NaN` and `Infinity` themselves: every status file holds "4: ACTIVE", which alone
# had sent all of them through the checking parser (1,100 parse_int calls for a p5's file). A
# false alarm (`NaN` inside a name) only costs the slower parse.
MAX_INT_DIGITS = 20
_CLASSES = {**dict.fromkeys(b"0123456789", ord("0")), **dict.fromkeys(b"eE+", ord("e")),
            **dict.fromkeys(b"NI", ord("N"))}
_MAP = bytes(_CLASSES.get(c, ord(" ")) for c in range(256))
_LONG_INT = b"0" * (MAX_INT_DIGITS + 1)


def _suspect(data: bytes) -> bool:
    m = data.translate(_MAP)
    if _LONG_INT in m or b"e000" in m:
        return True
    return b"N" in m and (b"NaN" in data or b"Infinity" in data)


def _int(s: str) -> int:
    if len(s.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"integer of {len(s.lstrip('-'))} digits out of range")
    return int(s)


def _float(s: str) -> float:
    v = float(s)
    if not math.isfinite(v):
        raise ValueError(f"number {s[:40]} out of range")
    return v


def _constant(s: str) -> NoReturn:
    raise ValueError(f"{s} is not a number")


def loads_checked(data: bytes) -> object:
    """json.loads for a file someone else wrote: ValueError (never RecursionError or a number
    that later overflows) for nesting deeper than the interpreter's recursion limit, integers
    of more than 20 digits (u64 has 20), non-finite numbers. The caller bounds the size when it reads."""
    try:
        if not _suspect(data):
            return _loads(data)
        return _loads(data, parse_int=_int, parse_float=_float, parse_constant=_constant)
    except RecursionError:
        raise ValueError("nested too deeply") from None


_INF = math.inf


def as_number(v: object) -> Optional[float]:
    """A finite, non-negative JSON number, else None (rates, times and link speeds are never
    negative; NaN, infinity and 400-digit integers are corruption, not data)."""
    if type(v) is float:  # most of them (a dashboard refresh asks ~15 per changed file)
        return v if 0.0 <= v < _INF else None  # NaN fails both comparisons
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    try:
        f = float(v)
    except OverflowError:
        return None
    return f if math.isfinite(f) and f >= 0 else None


def as_object(v: object) -> dict:
    """A JSON object as it is, anything else (absent, a list, a string) an empty one."""
    return v if isinstance(v, dict) else {}


# Store reads completed by this process: a watchdog (store/watchdog.py) tells a slow store
# from a hung one by whether this still moves. A list, so the increment needs no global.
_READS = [0]


def reads_done() -> int:
    return _READS[0]


def note_read() -> None:
    """One more read of the store completed (a listing, say: read_regular counts itself)."""
    _READS[0] += 1


def read_regular(path: str, max_bytes: int) -> bytes:
    """At most `max_bytes` + 1 bytes of a file someone else may have planted. Opened
    non-blocking and refused unless it is a regular file: a FIFO (or a device) in the store
    would otherwise block the open forever, and with it `report`, `jobs`, the dashboard or
    the daemon. OSError("not a regular file") for those."""
    return read_regular_stat(path, max_bytes)[0]


def read_regular_stat(path: str, max_bytes: int, dir_fd: Optional[int] = None,
                      first: int = 0) -> Tuple[bytes, os.stat_result]:
    """read_regular, with the file's fstat (the size and mtime of what was read, not of
    whatever the name points at a moment later); `path` relative to `dir_fd` when given.
    `first` > 0: only the file's first `first` bytes (all of it when shorter than that)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        if first > 0:
            _READS[0] += 1
            return os.read(fd, min(first, max_bytes + 1)), st
        chunks, left = [], max_bytes + 1
        # First read the size fstat gave (+1 to see the end): a fixed 1 MB request made every
        # 40 kB record cost a fresh 1 MB buffer (mmap'd, faulted in, shrunk), ~0.3 ms each,
        # half of json.loads (bench/report.py). A file that grows is read on in 1 MB pieces.
        ask = st.st_size + 1 if 0 < st.st_size < (1 << 20) else 1 << 20
        while left > 0:
            want = min(left, ask)
            chunk = os.read(fd, want)
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
            if len(chunk) < want:  # a regular file reads short only at its end: no read for EOF
                break
            ask = 1 << 20
        _READS[0] += 1
        return b"".join(chunks), st
    finally:
        os.close(fd)

