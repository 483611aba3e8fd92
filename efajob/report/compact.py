"""Compact forms of what a report keeps of every record: device counters and time series.

A 4,096-node p5 job has 131,072 devices, each with two counter dicts, and 4,096 series of
1,350 points. As parsed JSON (a dict per device, an int object per count, a float object per
point) that was ~150 kB a node and 630 MB for the job (bench/report.py). Here a device's
counters are one machine array of values beside a key tuple shared by every device with the
same counter names, and a series column is an array of doubles: the same numbers, about a
fifth of the memory, and the parsed record can be dropped as soon as it is read.

`Counters` reads like the dict it replaces (a Mapping: `get`, `items`, `==` against a dict);
`plain()` turns one back into a dict for json.dumps. Values that do not fit (a negative or a
number beyond 64 bits in a hand-edited record, a None in a series) keep the parsed form:
compaction never changes a number. Pure: no I/O.
"""
from __future__ import annotations

import struct
from array import array
from itertools import chain
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

# Key tuples already seen -> (the shared tuple, {name: position}). Bounded: a store can only
# hold so many distinct counter sets, but a hostile one could try more.
_KEYS: Dict[Tuple[str, ...], Tuple[Tuple[str, ...], Dict[str, int]]] = {}
_MAX_KEY_SETS = 256


class Counters(Mapping[str, int]):
    """An immutable {counter name: non-negative int} stored as a shared key tuple and a slice
    of an unsigned 64-bit array (`off`: where it starts; a node's devices share one array)."""

    __slots__ = ("_keys", "_index", "_vals", "_off")

    def __init__(self, keys: Tuple[str, ...], index: Dict[str, int], vals: "array[int]",
                 off: int = 0):
        self._keys, self._index, self._vals, self._off = keys, index, vals, off

    def __getitem__(self, name: str) -> int:
        return self._vals[self._off + self._index[name]]

    def get(self, name: str, default: Any = None) -> Any:  # the hot path: no exception
        i = self._index.get(name)
        return default if i is None else self._vals[self._off + i]

    def _slice(self) -> "array[int]":
        return self._vals[self._off:self._off + len(self._keys)]

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def items(self) -> Any:  # a plain iterator of pairs, at C speed (not an ItemsView)
        return zip(self._keys, self._slice())

    def values(self) -> Any:
        return iter(self._slice())

    def __repr__(self) -> str:
        return f"Counters({dict(self.items())!r})"


def _shared(keys: Tuple[str, ...]) -> Optional[Tuple[Tuple[str, ...], Dict[str, int]]]:
    shared = _KEYS.get(keys)
    if shared is None and len(_KEYS) < _MAX_KEY_SETS:
        shared = _KEYS.setdefault(keys, (keys, {k: i for i, k in enumerate(keys)}))
    return shared


def compact_block(dicts: Sequence[object]) -> Optional[List[Counters]]:
    """Counters for each of `dicts` sharing one array, when they all have the same names in
    the same order and every value is an int in [0, 2**64) (the devices of a record, as the
    hooks write them); None otherwise (compact_counters then takes them one by one). One
    pass at C speed for a node's 32 devices instead of 32 small ones."""
    if not dicts or not all(type(d) is dict for d in dicts):
        return None
    first: Tuple[str, ...] = tuple(dicts[0])  # type: ignore[arg-type]  # checked: dicts
    if not first or any(tuple(d) != first for d in dicts[1:]):  # type: ignore[arg-type]
        return None
    shared = _shared(first)
    if shared is None:
        return None

    def vals() -> Iterator[Any]:
        return chain.from_iterable(d.values() for d in dicts)  # type: ignore[attr-defined]

    if not set(map(type, vals())) <= _INT:  # a bool is an int to array('Q'): not a count
        return None
    n = len(first)
    try:  # struct packs at C speed; array("Q", iterable) converts item by item, twice as slow
        block = array("Q", struct.pack(f"{n * len(dicts)}Q", *vals()))
    except struct.error:  # negative, >= 2**64: the per-dict path filters those out
        return None
    keys, index = shared
    return [Counters(keys, index, block, i * n) for i in range(len(dicts))]


_INT = {int}


def compact_counters(d: Mapping[str, int]) -> Mapping[str, int]:
    """`d` (non-negative ints, as maths.ints returns) as Counters, or `d` itself when a
    value does not fit in 64 bits or the key sets are too many."""
    if not isinstance(d, dict) or not d:
        return d
    shared = _shared(tuple(d))
    if shared is None:
        return d
    try:
        vals = array("Q", d.values())
    except (OverflowError, TypeError):  # >= 2**64 (or not an int): keep what was parsed
        return d
    return Counters(shared[0], shared[1], vals)


def plain(d: Mapping[str, int]) -> Dict[str, int]:
    """A real dict of `d`, in its order (json.dumps takes no other Mapping)."""
    return dict(d.items()) if isinstance(d, Counters) else d  # type: ignore[return-value]


def nonzero(d: Mapping[str, int], wanted: Callable[[str], bool]) -> Dict[str, int]:
    """{name: value} of the counters of `d` whose name `wanted` accepts and whose value is not
    0, in `d`'s order. For Counters the names are chosen once per key set (the finding rules
    ask this of every device of a job: 131,072 times at 4,096 nodes)."""
    if isinstance(d, Counters):
        picked = _picked(d._keys, wanted)
        vals, off = d._vals, d._off
        return {k: vals[off + i] for i, k in picked if vals[off + i]}
    return {k: v for k, v in d.items() if v and wanted(k)}


def total(d: Mapping[str, int], wanted: Callable[[str], bool]) -> Optional[int]:
    """Sum of the counters of `d` that `wanted` names; None when `d` has none of them."""
    if isinstance(d, Counters):
        picked = _picked(d._keys, wanted)
        vals, off = d._vals, d._off
        return sum(vals[off + i] for i, _ in picked) if picked else None
    got = [v for k, v in d.items() if wanted(k)]
    return sum(got) if got else None


_PICKED: Dict[Tuple[int, Callable[[str], bool]], List[Tuple[int, str]]] = {}


def _picked(keys: Tuple[str, ...], wanted: Callable[[str], bool]) -> List[Tuple[int, str]]:
    # Keyed by the shared tuple's id: it lives in _KEYS for the life of the process.
    key = (id(keys), wanted)
    got = _PICKED.get(key)
    if got is None:
        got = _PICKED[key] = [(i, k) for i, k in enumerate(keys) if wanted(k)]
    return got


# -- a node's devices at once ----------------------------------------------------------------
def _block(seq: Sequence[Mapping[str, int]]) -> Optional[Counters]:
    """The first of `seq` when `seq` is exactly the Counters of one compact_block, in order
    (the usual node): then counter k of every device is the C-speed slice vals[i::n]."""
    if not seq:
        return None
    c0 = seq[0]
    if not isinstance(c0, Counters) or c0._off != 0:
        return None
    vals, n = c0._vals, len(c0._keys)
    if len(vals) != n * len(seq):
        return None
    for j, c in enumerate(seq):
        if not isinstance(c, Counters) or c._vals is not vals or c._off != j * n:
            return None
    return c0


def any_nonzero(seq: Sequence[Mapping[str, int]], wanted: Callable[[str], bool]) -> bool:
    """Whether any of `seq` holds a non-zero counter that `wanted` names (a node with no
    error counts skips the per-device look)."""
    b = _block(seq)
    if b is None:
        return any(nonzero(d, wanted) for d in seq)
    n = len(b._keys)
    return any(any(b._vals[i::n]) for i, _ in _picked(b._keys, wanted))


def sum_over(seq: Sequence[Mapping[str, int]], wanted: Callable[[str], bool]) -> Optional[int]:
    """Sum over every one of `seq` of the counters `wanted` names; None when none has one."""
    b = _block(seq)
    if b is not None:
        picked, n = _picked(b._keys, wanted), len(b._keys)
        return sum(sum(b._vals[i::n]) for i, _ in picked) if picked else None
    out: Optional[int] = None
    for d in seq:
        t = total(d, wanted)
        if t is not None:
            out = (out or 0) + t
    return out


def values_of(seq: Sequence[Mapping[str, int]], name: str) -> List[Optional[int]]:
    """Counter `name` of each of `seq` (None where absent)."""
    b = _block(seq)
    if b is not None:
        i = b._index.get(name)
        if i is None:
            return [None] * len(seq)
        return list(b._vals[i::len(b._keys)].tolist())
    return [d.get(name) for d in seq]


# -- series ---------------------------------------------------------------------------------
def compact_series(series: Mapping[str, Any]) -> Dict[str, Any]:
    """A record's series with every all-float column as array('d') and every all-int column
    as array('q') (a double holds a float exactly; ints stay ints); other values as parsed."""
    out: Dict[str, Any] = {}
    for k, v in series.items():
        if isinstance(v, list) and v:
            kinds = set(map(type, v))
            if kinds == {float}:  # (struct: see compact_block)
                v = array("d", struct.pack(f"{len(v)}d", *v))
            elif kinds == {int} and -(1 << 62) < min(v) and max(v) < (1 << 62):
                v = array("q", v)
        out[k] = v
    return out


def column(v: object) -> Optional[list]:
    """A series column as a list (from an array or a list); None if it is not one."""
    if isinstance(v, list):
        return v
    if isinstance(v, array):
        return v.tolist()
    return None


def is_column(v: object) -> bool:
    return isinstance(v, (list, array))


def columns(*vals: object) -> List[Sequence[Any]]:
    """Those of `vals` that are series columns (lists or arrays)."""
    return [v for v in vals if isinstance(v, (list, array))]


def plain_series(series: Mapping[str, Any]) -> Dict[str, Any]:
    """The series as parsed JSON again (lists), for json.dumps."""
    return {k: (v.tolist() if isinstance(v, array) else v) for k, v in series.items()}

