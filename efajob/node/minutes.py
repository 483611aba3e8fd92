"""What an epilog needs of a long job window's minute rollups, without a Rollup per minute.

A 24-hour job's epilog used to decode its 1,440 minute rollups whole (every counter's sum,
zlib-packed; the rate arrays; each device's fastest rate) to use a few numbers of each: ~25 ms,
a third of the hook (docs/performance.md). A MinuteWindow holds just those: per minute its
samples, seconds, tx and rx bytes and fastest node rates (plain columns since local-store
schema 3, read without decoding a blob), the job keys of the window, each device's fastest
rate over the window (from the hour rollups for whole hours, the minutes' own for the rest),
and, only when asked, every counter's sum (a job without a start snapshot counts from those).

`from_rollups` builds the same from decoded Rollups (a store of an older schema; tests), and
the two are compared in tests/test_minutes.py: a record must not depend on which was used.

Pure: no I/O. On the hook import path: standard library only.
"""
from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from array import array
    from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

    # (tx device names, rx device names, their fastest rates in bytes/s: tx then rx)
    PeakArrays = Tuple[Tuple[str, ...], Tuple[str, ...], array]
    # (minute, samples, seconds, tx_bytes, rx_bytes, fastest tx B/s, fastest rx B/s); None: absent
    Minute = Tuple[int, int, float, Optional[int], Optional[int], Optional[float], Optional[float]]


class MinuteWindow:
    """Fields:
    - minutes: one tuple per minute rollup, ascending (see `Minute` above);
    - samples: the raw rows they hold;
    - tx_max, rx_max: the fastest node tx/rx rate of any minute (bytes/s), None when absent;
    - jobs: every job key seen in those minutes; None when some minute did not keep them;
    - device_peaks: (tx, rx) dicts of each device's fastest rate (bytes/s) in the minutes that
      kept it; peaks_complete: every minute did (some rolled up before local-store schema 2
      did not: their peaks are then looked for in raw rows, hooks/finish.py);
    - sums: every port counter summed (node totals), or None when not asked for."""

    __slots__ = ("minutes", "samples", "tx_max", "rx_max", "jobs", "device_peaks",
                 "peaks_complete", "sums")

    def __init__(self, minutes: "List[Minute]", jobs: "Optional[Set[str]]",
                 device_peaks: "Tuple[Dict[str, float], Dict[str, float]]",
                 peaks_complete: bool, sums: "Optional[Dict[str, int]]" = None):
        self.minutes = minutes
        self.samples = sum(m[1] for m in minutes)
        tx = [m[5] for m in minutes if m[5] is not None]
        rx = [m[6] for m in minutes if m[6] is not None]
        self.tx_max = max(tx) if tx else None
        self.rx_max = max(rx) if rx else None
        self.jobs = jobs
        self.device_peaks = device_peaks
        self.peaks_complete = peaks_complete
        self.sums = sums

    def __len__(self) -> int:
        return len(self.minutes)

    def covered(self) -> "Set[int]":
        return {m[0] for m in self.minutes}

    def busiest(self, n: int) -> "List[int]":
        """The `n` minutes of the fastest node rate (tx + rx): where per-device peaks are
        looked for in raw rows when the minutes did not keep them."""
        return [m[0] for m in sorted(self.minutes, key=lambda m: -((m[5] or 0.0) + (m[6] or 0.0)))[:n]]

    def __repr__(self) -> str:
        return (f"MinuteWindow({len(self.minutes)} minutes, {self.samples} samples, "
                f"jobs={self.jobs!r})")


def max_peaks(groups: "Iterable[PeakArrays]") -> "Tuple[Dict[str, float], Dict[str, float]]":
    """Each device's fastest tx and rx rate over many minutes' (names, names, values): a
    column's max at C speed per group of minutes with the same devices."""
    by_layout: Dict[tuple, list] = {}
    for tx_names, rx_names, values in groups:
        if len(values):
            by_layout.setdefault((tx_names, rx_names), []).append(values)
    tx: Dict[str, float] = {}
    rx: Dict[str, float] = {}
    for (tx_names, rx_names), arrays in by_layout.items():
        names = [(tx, d) for d in tx_names] + [(rx, d) for d in rx_names]
        for (into, d), column in zip(names, zip(*arrays)):
            v = max(column)
            if v > into.get(d, -1.0):
                into[d] = v
    return tx, rx


def raise_peaks(into: "Dict[str, float]", other: "Dict[str, float]") -> None:
    for d, v in other.items():
        if v > into.get(d, -1.0):
            into[d] = v


def from_rollups(rollups: "Sequence", with_sums: bool = False) -> MinuteWindow:
    """The window of decoded Rollups (localstore.Rollup), ascending by minute."""
    minutes = [(ro.minute, ro.samples, ro.seconds, ro.sums.get("tx_bytes"), ro.sums.get("rx_bytes"),
                ro.rate_max.get("tx_bytes"), ro.rate_max.get("rx_bytes")) for ro in rollups]
    jobs = None
    if all(ro.jobs is not None for ro in rollups):
        jobs = {j for ro in rollups for j in ro.jobs}
    peaks = max_peaks(ro.device_peaks for ro in rollups if ro.device_peaks is not None)
    complete = all(ro.device_peaks is not None for ro in rollups)
    sums: Optional[Dict[str, int]] = None
    if with_sums:
        sums = {}
        for ro in rollups:
            for k, v in ro.sums.items():
                sums[k] = sums.get(k, 0) + v
    return MinuteWindow(minutes, jobs, peaks, complete, sums)
