"""Slurm hostlists, folded and expanded without Slurm (what `scontrol show hostnames` and
ClusterShell's NodeSet do): `n[1-4,7]`, `gpu-[01-12]`, `rack[1-2]-n[01-02]`, `a,b[3-4],c`.

Rules (Slurm's hostlist.c): a range's zero padding is the width of its first number as written
(`[01-12]` -> n01..n12); several bracket groups in one name multiply; commas inside brackets
separate ranges, outside they separate names. Folding groups names on their last number, as
Slurm prints them.

Pure: no I/O. Errors are UsageError (a hostlist usually comes from the user or a record).
"""
from __future__ import annotations

import re
from itertools import product
from typing import Dict, Iterable, List, Optional, Tuple

from efajob.errors import UsageError

MAX_HOSTS = 1_000_000  # a hostlist like n[0-999999999] must not eat the machine
_NAME_CHARS = re.compile(r"[A-Za-z0-9_.\-]*")
_RANGE = re.compile(r"([0-9]+)(?:-([0-9]+))?")
_LAST_NUMBER = re.compile(r"^(.*?)([0-9]+)([^0-9]*)$")


def _split_top(expr: str) -> List[str]:
    """Split on commas outside brackets."""
    parts: List[str] = []
    cur: List[str] = []
    depth = 0
    for ch in expr:
        if ch == "[":
            if depth:
                raise UsageError(f"hostlist {expr!r}: nested '['")
            depth = 1
        elif ch == "]":
            if not depth:
                raise UsageError(f"hostlist {expr!r}: ']' without '['")
            depth = 0
        elif ch == "," and not depth:
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    if depth:
        raise UsageError(f"hostlist {expr!r}: '[' without ']'")
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


def _expand_ranges(body: str, expr: str) -> List[str]:
    out: List[str] = []
    for item in body.split(","):
        m = _RANGE.fullmatch(item.strip())
        if m is None:
            raise UsageError(f"hostlist {expr!r}: bad range {item!r}")
        lo_s, hi_s = m.group(1), m.group(2)
        lo, hi = int(lo_s), int(hi_s) if hi_s is not None else int(lo_s)
        if hi < lo:
            raise UsageError(f"hostlist {expr!r}: range {item!r} goes backwards")
        if hi - lo + 1 > MAX_HOSTS:
            raise UsageError(f"hostlist {expr!r}: more than {MAX_HOSTS} hosts")
        width = len(lo_s)
        out.extend(f"{n:0{width}d}" for n in range(lo, hi + 1))
    return out


def _expand_one(name: str, expr: str) -> List[str]:
    pieces: List[List[str]] = []
    pos = 0
    for m in re.finditer(r"\[([^\]]*)\]", name):
        literal = name[pos:m.start()]
        if not _NAME_CHARS.fullmatch(literal):
            raise UsageError(f"hostlist {expr!r}: bad characters in {literal!r}")
        pieces.append([literal])
        pieces.append(_expand_ranges(m.group(1), expr))
        pos = m.end()
    tail = name[pos:]
    if not _NAME_CHARS.fullmatch(tail):
        raise UsageError(f"hostlist {expr!r}: bad characters in {tail!r}")
    pieces.append([tail])
    total = 1
    for p in pieces:
        total *= len(p)
    if total > MAX_HOSTS:
        raise UsageError(f"hostlist {expr!r}: more than {MAX_HOSTS} hosts")
    return ["".join(t) for t in product(*pieces)]


def expand(expr: Optional[str], limit: int = MAX_HOSTS) -> List[str]:
    """`n[1-3],m` -> ["n1", "n2", "n3", "m"], in order, duplicates removed. None/"" -> []."""
    if not expr:
        return []
    seen: Dict[str, None] = {}
    for part in _split_top(expr):
        for host in _expand_one(part, expr):
            seen.setdefault(host, None)
            if len(seen) > limit:
                raise UsageError(f"hostlist {expr!r}: more than {limit} hosts")
    return list(seen)


def _runs(numbers: List[int]) -> List[Tuple[int, int]]:
    runs: List[Tuple[int, int]] = []
    for n in sorted(set(numbers)):
        if runs and n == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], n)
        else:
            runs.append((n, n))
    return runs


def fold(hosts: Iterable[str]) -> str:
    """["n1", "n2", "n3", "n7"] -> "n[1-3,7]" (sorted, as Slurm prints). Inverse of expand()."""
    plain: List[str] = []
    # (prefix, suffix, width) -> numbers; width 0 = unpadded.
    groups: Dict[Tuple[str, str, int], List[int]] = {}
    unpadded: List[Tuple[str, str, str]] = []
    for h in dict.fromkeys(hosts):
        if not h:
            continue
        if "[" in h or "]" in h or "," in h:
            raise UsageError(f"host name {h!r} cannot be folded")
        m = _LAST_NUMBER.match(h)
        if m is None:
            plain.append(h)
            continue
        prefix, digits, suffix = m.groups()
        if len(digits) > 1 and digits[0] == "0":
            groups.setdefault((prefix, suffix, len(digits)), []).append(int(digits))
        else:
            unpadded.append((prefix, digits, suffix))
    for prefix, digits, suffix in unpadded:
        # "10" joins a padded group of width 2 ("n[09-10]"); otherwise it is unpadded.
        key = (prefix, suffix, len(digits))
        if key not in groups:
            key = (prefix, suffix, 0)
        groups.setdefault(key, []).append(int(digits))
    items: List[Tuple[str, str, int, str]] = []
    for (prefix, suffix, width), numbers in groups.items():
        runs = _runs(numbers)
        fmt = [f"{a:0{width}d}" if a == b else f"{a:0{width}d}-{b:0{width}d}" for a, b in runs]
        if len(runs) == 1 and runs[0][0] == runs[0][1]:
            text = f"{prefix}{fmt[0]}{suffix}"
        else:
            text = f"{prefix}[{','.join(fmt)}]{suffix}"
        items.append((prefix, suffix, min(numbers), text))
    items.extend((h, "", -1, h) for h in plain)
    return ",".join(t[3] for t in sorted(items, key=lambda t: (t[0], t[1], t[2])))
