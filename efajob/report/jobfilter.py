"""`efajob jobs` filters as sacct takes them: users, accounts, partitions, job names, nodes,
states (Slurm's names and abbreviations), a time window (`-S/-E`, sacct's time forms). Pure: parsing raises UsageError
(an unknown state or a bad time is an error, never silently zero rows), `JobFilter.match`
judges one `efajob jobs` row, and efajob/index/db.py turns the same filter into SQL.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import FrozenSet, Mapping, Optional

from efajob.errors import UsageError

# Slurm's job states and their short forms (squeue(1) and sacct(1), "JOB STATE CODES",
# Slurm 22.05 to 24.11). The records know only what the epilogs saw: COMPLETED, FAILED,
# RUNNING and efajob's own ENDED (no exit code in the records); the others are accepted
# because sacct accepts them, and match no record-derived row.
STATES: Mapping[str, str] = {
    "BF": "BOOT_FAIL", "CA": "CANCELLED", "CD": "COMPLETED", "CF": "CONFIGURING",
    "CG": "COMPLETING", "DL": "DEADLINE", "F": "FAILED", "NF": "NODE_FAIL",
    "OOM": "OUT_OF_MEMORY", "PD": "PENDING", "PR": "PREEMPTED", "R": "RUNNING",
    "RQ": "REQUEUED", "RS": "RESIZING", "RV": "REVOKED", "S": "SUSPENDED", "TO": "TIMEOUT",
    "ED": "ENDED",  # efajob's: the job ended, its records carry no exit code
}
_FULL = frozenset(STATES.values())


def parse_list(text: Optional[str]) -> FrozenSet[str]:
    """`a,b` -> {"a", "b"}; empty items dropped."""
    return frozenset(p.strip() for p in (text or "").split(",") if p.strip())


def parse_nodelist(text: Optional[str]) -> FrozenSet[str]:
    """`-N n[1-3],gpu7` -> {"n1", "n2", "n3", "gpu7"} (Slurm's hostlist syntax); a malformed
    hostlist is a UsageError."""
    from efajob.slurm.hostlist import expand

    return frozenset(expand(text))


def parse_states(text: Optional[str]) -> FrozenSet[str]:
    """`CD,F,timeout` -> {"COMPLETED", "FAILED", "TIMEOUT"}; an unknown state is a UsageError."""
    out = set()
    for item in parse_list(text):
        s = item.upper()
        s = STATES.get(s, "CANCELLED" if s.startswith("CANCELLED") else s)
        if s not in _FULL:
            raise UsageError(f"--state {item!r} is not a Slurm job state (e.g. CD, F, TO, OOM, "
                             f"CA, R, or their names: COMPLETED, FAILED, ...)")
        out.add(s)
    return frozenset(out)


_REL_RE = re.compile(r"now(?:([+-])([0-9]+)(seconds|minutes|hours|days|weeks|[smhdw])?)?")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_FORMS = ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d", "%m/%d/%y", "%m/%d")


def parse_slurm_time(text: str, now: float, option: str = "-S") -> float:
    """sacct's time forms -> epoch seconds, local time: `YYYY-MM-DD[THH:MM[:SS]]`,
    `MM/DD[/YY]`, `HH:MM[:SS]` (today), `now[{+|-}N[seconds|minutes|hours|days|weeks]]`
    (seconds by default, as sacct), `today`, `midnight`, `noon`. Anything else: UsageError."""
    t = text.strip().lower()
    base = datetime.fromtimestamp(now)
    m = _REL_RE.fullmatch(t)
    if m:
        sign, count, unit = m.groups()
        secs = 0 if count is None else int(count) * _UNIT_S[(unit or "s")[0]]
        return now + (secs if sign == "+" else -secs)
    day = base.replace(hour=0, minute=0, second=0, microsecond=0)
    if t in ("today", "midnight"):
        return day.timestamp()
    if t == "noon":
        return (day + timedelta(hours=12)).timestamp()
    for form in ("%H:%M:%S", "%H:%M"):
        try:
            clock = datetime.strptime(t, form)
        except ValueError:
            continue
        return day.replace(hour=clock.hour, minute=clock.minute, second=clock.second).timestamp()
    for form in _FORMS:
        try:
            dt = datetime.strptime(t.upper(), form)
        except ValueError:
            continue
        if form == "%m/%d":
            dt = dt.replace(year=base.year)
        return dt.timestamp()
    raise UsageError(f"{option} {text!r}: expected a time as sacct takes it, e.g. 2024-05-01, "
                     "2024-05-01T10:00, 05/01, 10:00, now-2days, today")


@dataclass(frozen=True)
class JobFilter:
    """What `efajob jobs` keeps. Empty sets keep everything. The window is sacct's: a job is
    kept when it ran at some time in [start, end] (started before `end`, and ended after
    `start` or still runs)."""

    users: FrozenSet[str] = frozenset()
    partitions: FrozenSet[str] = frozenset()
    states: FrozenSet[str] = frozenset()
    names: FrozenSet[str] = frozenset()  # Slurm's job names, exact (as sacct --name)
    accounts: FrozenSet[str] = frozenset()
    nodes: FrozenSet[str] = frozenset()  # jobs on any of these nodes (-N, a hostlist expanded)
    start: Optional[float] = None
    end: Optional[float] = None

    def match(self, row: Mapping) -> bool:
        if self.users and row.get("user") not in self.users:
            return False
        if self.partitions and row.get("partition") not in self.partitions:
            return False
        if self.states and (row.get("state") or "").upper() not in self.states:
            return False
        if self.names and row.get("name") not in self.names:
            return False
        # A row without the key does not know (a running job's first look, from the status
        # files): kept, and judged again on the full row.
        if self.accounts and "account" in row and row["account"] not in self.accounts:
            return False
        if self.nodes and "nodes" in row and not self.nodes & set(row["nodes"] or ()):
            return False
        began, ended = row.get("start"), row.get("end")
        if self.start is not None and ended is not None and ended < self.start:
            return False
        if self.end is not None and began is not None and began > self.end:
            return False
        return True
