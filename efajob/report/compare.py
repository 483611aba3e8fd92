"""`efajob compare`: one job beside the previous runs of the same name and user. Pure: rows
(`efajob jobs` rows: assemble.jobs_row, or the index's) in, a Comparison out.

The measure is bytes per node-second: the job's `tx_bytes` over nodes x elapsed seconds.
Every byte one node sends another receives, so `tx_bytes` counts the job's traffic once;
dividing by nodes and time makes runs of different sizes and lengths comparable (a run on
twice the nodes for half the time moving the same data per node and second is the same
run, as far as the network goes).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Mapping, Optional, Sequence

# The thresholds, in one place.
# "Much slower": under half the median of the previous runs. Runs of the same job on the same
# instance type vary by tens of percent (data loading, checkpoints, neighbours); half is well
# outside that, and what the common failures cost: NCCL on sockets instead of EFA, a device
# missing, a straggler node holding every collective back.
SLOW_RATIO = 0.5
# At least 3 previous runs with a rate: the median of one or two is one outlier away from
# any value, and a user's first runs are often the ones being debugged.
MIN_HISTORY = 3
# The most recent previous runs looked at: code, data and cluster change over months, and
# the latest runs are the ones a user compares with.
HISTORY = 20


def bytes_per_node_second(row: Mapping) -> Optional[float]:
    """tx_bytes / (num_nodes x elapsed_s); None when any of them is unknown or zero."""
    tx, nodes, secs = row.get("tx_bytes"), row.get("num_nodes"), row.get("elapsed_s")
    if not isinstance(tx, (int, float)) or not nodes or not secs or secs <= 0:
        return None
    return tx / (nodes * secs)


def median(values: Sequence[float]) -> Optional[float]:
    v = sorted(values)
    n = len(v)
    if n == 0:
        return None
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2.0


@dataclass
class Comparison:
    job: dict  # this run's row, with `bytes_per_node_s`
    previous: List[dict] = field(default_factory=list)  # newest first, each with `bytes_per_node_s`
    median_bytes_per_node_s: Optional[float] = None
    rated_runs: int = 0  # previous runs with a rate (behind the median)
    ratio: Optional[float] = None  # this run / the median
    slower: bool = False  # ratio < SLOW_RATIO with at least MIN_HISTORY rated runs
    summary: str = ""

    def to_dict(self) -> dict:
        return {"job": self.job, "previous": self.previous,
                "median_bytes_per_node_s": self.median_bytes_per_node_s,
                "rated_runs": self.rated_runs, "ratio": self.ratio, "much_slower": self.slower,
                "slow_ratio": SLOW_RATIO, "min_history": MIN_HISTORY, "summary": self.summary}


def _with_rate(row: Mapping) -> dict:
    out = dict(row)
    bps = bytes_per_node_second(row)
    out["bytes_per_node_s"] = None if bps is None else round(bps, 3)
    return out


def _fmt_rate(v: float) -> str:
    from efajob.fmt import fmt_bytes

    return fmt_bytes(v) + "/node-s"


def build_comparison(job: Mapping, previous: Sequence[Mapping]) -> Comparison:
    """`job` beside `previous` (its earlier runs, newest first; running ones are not runs)."""
    c = Comparison(job=_with_rate(job), previous=[_with_rate(r) for r in previous])
    if not job.get("name") or not job.get("user"):
        c.summary = ("no job name known (the records carry none and Slurm did not say): "
                     "nothing to compare with")
        return c
    rates = [r["bytes_per_node_s"] for r in c.previous if r["bytes_per_node_s"] is not None]
    c.rated_runs = len(rates)
    c.median_bytes_per_node_s = median(rates)
    mine, med = c.job["bytes_per_node_s"], c.median_bytes_per_node_s
    if med and mine is not None:
        c.ratio = round(mine / med, 3)
    runs = f"{c.rated_runs} previous run{'s' if c.rated_runs != 1 else ''}"
    if c.rated_runs < MIN_HISTORY:
        c.summary = (f"{runs} with a rate: too few to judge (at least {MIN_HISTORY} needed)")
    elif mine is None:
        c.summary = f"this run has no rate (no bytes, nodes or elapsed time) to set beside {runs}"
    elif c.ratio is None or med is None:
        c.summary = f"the median of {runs} is 0 B/node-s: nothing to compare with"
    else:
        c.slower = c.ratio < SLOW_RATIO
        what = (f"much slower than its history (under {SLOW_RATIO:g}x)" if c.slower
                else "in line with its history" if c.ratio < 1 / SLOW_RATIO
                else "much faster than its history")
        c.summary = (f"{_fmt_rate(mine)}: {c.ratio:.2f}x the median of {runs} "
                     f"({_fmt_rate(med)}): {what}")
    return c
