"""`efajob jobs --source sacct`: the job list from Slurm's accounting, the filters passed to
sacct as given, the EFA columns from each job's AdminComment summary. Slurm's own states
(TIMEOUT, OUT_OF_MEMORY, CANCELLED, which the records cannot know) and jobs pruned from the
store are there. The argv and the parsing are pure; `list_from_sacct` is the one call.

sacct without -S lists today's jobs only: with no -S the window widens (1 day, 7, 30, 365)
until `limit` jobs are found, so `-n 20` costs one or two sacct calls, not a year's jobs.
"""
from __future__ import annotations

import time
from datetime import datetime
from typing import Dict, List, Optional, Sequence

from efajob.accounting.slurmdb import SEP, split_rows
from efajob.accounting.summary import decode
from efajob.errors import SlurmError, UsageError
from efajob.slurm.adapter import parse_slurm_time

FIELDS = ("JobIDRaw", "JobID", "Cluster", "User", "Account", "Partition", "JobName", "State",
          "Start", "End", "ElapsedRaw", "NNodes", "AdminComment")
WIDEN_DAYS = (1, 7, 30, 365)


def sacct_argv(*, users=(), accounts=(), partitions=(), names=(), states=(), nodes=(),
               start: Optional[str] = None, end: Optional[str] = None,
               cluster: Optional[str] = None) -> List[str]:
    """sacct's argv for these filters (without -S when `start` is None: the caller widens)."""
    if "ENDED" in states:
        raise UsageError("--state ED is efajob's own (a job the records saw end without an exit "
                         "code): Slurm's accounting has no such state")
    argv = ["sacct", "-X", "-n", "-P", f"--delimiter={SEP}", "-o", ",".join(FIELDS)]
    for opt, values in (("-u", users), ("-A", accounts), ("-r", partitions),
                        ("--name", names), ("-s", states), ("-N", nodes)):
        if values:
            argv += [opt, ",".join(sorted(values))]
    if start:
        argv += ["-S", start]
    if end or states:
        argv += ["-E", end or "now"]  # with -s, sacct looks at the instant -S only without -E
    if cluster:
        argv += ["-M", cluster]
    return argv


def _int(text: str) -> Optional[int]:
    return int(text) if text.isascii() and text.isdigit() else None


def parse_rows(text: str) -> List[dict]:
    """sacct's output (FIELDS, SEP-delimited; slurmdb.split_rows) -> `efajob jobs` rows, the
    EFA columns from the AdminComment summary (None without one)."""
    out = []
    for parts in split_rows(text, len(FIELDS)):
        f = dict(zip(FIELDS, parts))
        s = decode(f["AdminComment"])
        state = (f["State"].split() or [""])[0]
        out.append({
            "cluster": f["Cluster"] or None, "job_id": f["JobIDRaw"], "restart": s.restart if s else 0,
            "alias": f["JobID"] if f["JobID"] != f["JobIDRaw"] else None, "user": f["User"] or None,
            "account": f["Account"] or None, "partition": f["Partition"] or None,
            "name": f["JobName"] or None, "state": state, "num_nodes": _int(f["NNodes"]),
            "start": parse_slurm_time(f["Start"]), "end": parse_slurm_time(f["End"]),
            "elapsed_s": _int(f["ElapsedRaw"]),
            "tx_bytes": s.tx_bytes if s else None, "rx_bytes": s.rx_bytes if s else None,
            "avg_gbps_per_node": s.avg_gbps_per_node if s else None,
            "verdict": s.verdict if s else None, "findings": list(s.findings) if s else [],
            "running": state in ("RUNNING", "COMPLETING", "SUSPENDED"),
            "peak_gbps_per_node": s.peak_gbps_per_node if s else None,
        })
    return out


def newest(rows: Sequence[dict], limit: int) -> List[dict]:
    """The `limit` most recent: running first, then by end, newest first (as `jobs` orders)."""
    def key(r: dict):
        return (not r["running"], -(r["end"] or r["start"] or 0), -int(r["job_id"]))
    return sorted(rows, key=key)[:limit]


def list_from_sacct(backend, argv: List[str], *, limit: int, start_given: bool,
                    now: Optional[float] = None) -> List[dict]:
    """Run sacct (through the Slurm adapter's runner), widening the window when -S was not
    given. SlurmError when sacct fails (no slurmdbd: says so)."""
    now = time.time() if now is None else now
    windows = [None] if start_given else WIDEN_DAYS
    rows: Dict[str, dict] = {}
    for days in windows:
        cmd = list(argv)
        if days is not None:
            cmd += ["-S", datetime.fromtimestamp(now - days * 86400).strftime("%Y-%m-%dT%H:%M:%S")]
            if "-E" not in cmd:
                cmd += ["-E", "now"]
        p = backend._cmd(cmd)
        if p.returncode != 0:
            err = (p.stderr or "").strip().splitlines()
            raise SlurmError("sacct failed (does Slurm keep accounting in slurmdbd here?): "
                             + (err[-1] if err else f"exit {p.returncode}"))
        rows = {r["job_id"]: r for r in parse_rows(p.stdout)}
        if len(rows) >= limit:
            break
    return newest(list(rows.values()), limit)
