"""The sampler's flat value list and what each position means, for the daemon's hot path.

A sample is ~1,100 integers in the sampler's slot order (port counters device by device, the
netdev statistics, then the device-level counters). While the devices and files stay the same,
that order is fixed, so the daemon can diff two samples with one `map(sub)` over the lists and
sum a counter over devices from list positions, and build the per-device dictionaries only
when something asks for them (a scrape, the status file, the hooks' JSON). At 1 Hz that is a
fifth of the daemon's CPU (docs/performance.md). Pure: no I/O.
"""
from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # no `typing` at run time: the hooks import this
    from typing import Callable, Dict, List, Optional, Sequence, Tuple

    Group = Tuple[int, int, int, int, int, Tuple[str, ...]]  # kind, owner, port, start, end, names
    Span = Tuple[int, int, Tuple[str, ...]]  # start, end, names

# Slot kinds in the sampler's descriptor table.
PORT, DEV, NET = 0, 1, 2


class Layout:
    """Built by the sampler at each rediscovery; shared (by identity) by every snapshot read
    with it, which is how `counters.diff_snapshots` knows two flat lists line up."""

    def __init__(self, groups: Sequence[Group], devices: Sequence[Tuple[str, int]]):
        self.key = (tuple(groups), tuple(devices))  # equal keys: the same positions mean the same
        per: List[Tuple[str, int, Optional[Span], Optional[Span], List[Tuple[int, Span]]]] = []
        for i, (name, first) in enumerate(devices):
            pc = dc = None
            others: List[Tuple[int, Span]] = []
            for kind, owner, port, start, end, names in groups:
                if owner != i or kind == NET:
                    continue
                if kind == DEV:
                    dc = (start, end, names)
                elif port == first:
                    pc = (start, end, names)
                else:
                    others.append((port, (start, end, names)))
            per.append((name, first, pc, dc, others))
        self.devices = per
        self.complete = all(pc or dc or others for _, _, pc, dc, others in per)
        spans = [pc for _, _, pc, _, _ in per if pc is not None]
        port_names = {pc[2] for pc in spans}
        # Every device has the same port counters (the usual case): node totals are column sums.
        self._columns: Optional[Tuple[Tuple[str, ...], List[Tuple[int, int]]]] = (
            spans[0][2], [(s, e) for s, e, _ in spans]) if (
            spans and len(spans) == len(per) and len(port_names) == 1) else None
        self._index = {name: k for k, name in enumerate(self._columns[0])} if self._columns else {}
        self._device_at: Dict[Tuple[str, ...], List[Tuple[str, List[int]]]] = {}
        self._picked: Dict[tuple, List[Tuple[str, List[Tuple[str, int]]]]] = {}

    def per_device(self, values: Sequence[int]):
        """(name, first port, port counters, device counters, other ports) per device."""
        out = []
        for name, first, pc, dc, others in self.devices:
            out.append((name, first,
                        dict(zip(pc[2], values[pc[0]:pc[1]])) if pc else {},
                        dict(zip(dc[2], values[dc[0]:dc[1]])) if dc else {},
                        {p: dict(zip(sp[2], values[sp[0]:sp[1]])) for p, sp in others}))
        return out

    def port_totals(self, values: Sequence[int]) -> Optional[Dict[str, int]]:
        """Sum over devices of every first-port counter; None when devices differ in names."""
        if self._columns is None:
            return None
        names, spans = self._columns
        return dict(zip(names, map(sum, zip(*[values[s:e] for s, e in spans]))))

    def device_totals(self, values: Sequence[int], names: Sequence[str]) -> Dict[str, int]:
        """Sum over devices of the device-level counters in `names` that some device has."""
        key = tuple(names)
        at = self._device_at.get(key)
        if at is None:  # where each counter sits on each device, found once per layout
            found: Dict[str, List[int]] = {}
            for _, _, _, dc, _ in self.devices:
                if dc is not None:
                    for k, name in enumerate(dc[2]):
                        if name in key:
                            found.setdefault(name, []).append(dc[0] + k)
            at = self._device_at[key] = list(found.items())
        # The CloudWatch sink asks every tick: a walk over 32 devices' dozen names each was
        # two thirds of its per-tick cost.
        return {name: sum(map(values.__getitem__, where)) for name, where in at}

    def picked(self, port: "Callable[[str], bool]",
               device: "Callable[[str], bool]") -> "List[Tuple[str, List[Tuple[str, int]]]]":
        """Per device, (counter, position) of its first port's counters that `port` picks,
        then of its device-level counters that `device` picks: found once per layout and
        pair of tests, then a lookup for every snapshot."""
        key = (port, device)
        got = self._picked.get(key)
        if got is None:
            got = []
            for name, _, pc, dc, _ in self.devices:
                at = [(n, pc[0] + k) for k, n in enumerate(pc[2]) if port(n)] if pc else []
                if dc:
                    at += [(n, dc[0] + k) for k, n in enumerate(dc[2]) if device(n)]
                got.append((name, at))
            self._picked[key] = got
        return got

    def port_column(self, values: Sequence[int], name: str) -> Optional[Dict[str, int]]:
        """One first-port counter per device; None when devices differ in names."""
        if self._columns is None:
            return None
        k = self._index.get(name)
        if k is None:
            return {}
        return {d[0]: values[s + k] for d, (s, _) in zip(self.devices, self._columns[1])}
