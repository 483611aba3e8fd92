"""`efajob check-node`'s judgement, pure: the node's EFA devices now, what its daemon recorded
over the last minutes (the local store) and the error counters at the previous check ->
the problems that make the node unfit for jobs, and the one-line reason Slurm shows.

What counts (docs/operations.md):
- a device **missing**: fewer EFA devices than the instance type has, or a device the local
  store saw in the window that is gone now;
- a device **erroring**: error counters (`*_wr_err`, `cmds_err`, `no_completion_cmds`, every
  `*_err`) that rose since the previous check (same boot; the driver's counters are cumulative
  since boot, so only a rise says anything), RDMA work requests completed in error in the
  window (the local store's node totals), or port counters that cannot be read at all (a
  closed admin queue fails every stats query);
- a device **idle in jobs**: while jobs ran in the window it moved nothing and its siblings'
  median moved at least `busy_bytes` (NCCL spreads a job's traffic over every device it can use).
Port state is not looked at: the EFA driver hard-codes ACTIVE.
"""
from __future__ import annotations

from efajob.frozen import Frozen
from efajob.node.counters import is_device_error, is_wr_error

# No `typing`, `dataclasses` or `re` at run time: efajob-check-node runs every HealthCheck
# interval on every node, and those imports were a third of its cost (docs/operations.md).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Set

REASON_MAX = 200  # characters of Slurm's drain reason: enough for three problems, short in sinfo


class DeviceNow(Frozen):
    name: str
    port_counters: Mapping[str, int]
    device_counters: Mapping[str, int]


class Window:
    """The local store's last minutes (window_from_sums)."""

    __slots__ = ("seconds", "busy_seconds", "devices_seen", "busy_bytes", "wr_errors")

    def __init__(self, seconds: float = 0.0, busy_seconds: float = 0.0,
                 devices_seen: Optional[Set[str]] = None,
                 busy_bytes: Optional[Dict[str, int]] = None,
                 wr_errors: Optional[Dict[str, int]] = None):
        self.seconds = seconds  # covered by samples
        self.busy_seconds = busy_seconds  # of which with a job running
        self.devices_seen: Set[str] = set() if devices_seen is None else devices_seen
        # device -> tx + rx while busy; node totals of *_wr_err deltas
        self.busy_bytes: Dict[str, int] = {} if busy_bytes is None else busy_bytes
        self.wr_errors: Dict[str, int] = {} if wr_errors is None else wr_errors

    def __repr__(self) -> str:
        return "Window(" + ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__) + ")"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Window) and all(getattr(self, k) == getattr(other, k)
                                                 for k in self.__slots__)


class Problem(Frozen):
    kind: str  # missing | erroring | idle
    device: Optional[str]
    text: str


def error_counters(d: DeviceNow) -> Dict[str, int]:
    """The device's error counters now (port and device level), by name."""
    out = {k: v for k, v in d.port_counters.items() if is_wr_error(k)}
    out.update((k, v) for k, v in d.device_counters.items() if is_device_error(k))
    return out


def judge(devices: Sequence[DeviceNow], *, expected: Optional[int], instance_type: Optional[str],
          window: Window, previous: Optional[Mapping[str, Mapping[str, int]]],
          busy_bytes: float) -> List[Problem]:
    """Every problem, missing devices first. `previous`: {device: {error counter: value}} at
    the previous check of this boot, or None."""
    out: List[Problem] = []
    now = {d.name for d in devices}
    if expected is not None and len(now) < expected:
        out.append(Problem("missing", None, f"{len(now)} of {expected} EFA devices "
                           f"({instance_type or 'instance type'})"))
    # A device seen in the window and gone now, when the count dropped (a udev rename,
    # efa_0 -> rdmap79s0, changes a name and keeps the count).
    gone = window.devices_seen - now if len(now) < len(window.devices_seen) else set()
    for name in sorted(gone):
        out.append(Problem("missing", name, f"{name} gone (seen in the last "
                           f"{span(window.seconds)})"))
    for d in devices:
        if not d.port_counters:
            out.append(Problem("erroring", d.name, f"{d.name} port counters unreadable"))
            continue
        prev = (previous or {}).get(d.name)
        if prev is None:
            continue
        rose = {k: v - prev[k] for k, v in error_counters(d).items()
                if k in prev and v > prev[k]}
        if rose:
            listed = ", ".join(f"{k} +{v}" for k, v in sorted(rose.items()))
            out.append(Problem("erroring", d.name, f"{d.name} errors rising ({listed})"))
    wr = {k: v for k, v in window.wr_errors.items() if v > 0}
    if wr and not any(p.kind == "erroring" and "_wr_err" in p.text for p in out):
        listed = ", ".join(f"{k} +{v}" for k, v in sorted(wr.items()))
        out.append(Problem("erroring", None, f"work requests in error in the last "
                           f"{span(window.seconds)} ({listed})"))
    out.extend(_idle(window, now, busy_bytes))
    return out


def _idle(window: Window, now: Set[str], busy_bytes: float) -> List[Problem]:
    moved = {d: b for d, b in window.busy_bytes.items() if d in now}
    # The LOW median over all devices, as the report's device_idle rule: idle devices must be
    # a strict minority (a job on 4 of 8 GPUs uses 4 of 8 devices).
    if len(moved) < 2 or _median_low(moved.values()) < busy_bytes:
        return []
    return [Problem("idle", name, f"{name} moved nothing in jobs while its {len(moved) - 1} "
                    f"siblings moved traffic (last {span(window.busy_seconds)} of jobs)")
            for name, b in sorted(moved.items()) if b == 0]


def _median_low(values: Iterable[int]) -> int:
    # statistics.median_low, without importing statistics (and inspect with it: 10 ms of a
    # check whose budget is a few tens)
    v = sorted(values)
    return v[(len(v) - 1) // 2]


def span(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def reason(problems: Sequence[Problem]) -> str:
    """One line for Slurm's drain reason and NHC: `efajob: ` + the problems, at most
    REASON_MAX characters, printable ASCII only (the text comes from device names in sysfs)."""
    text = "; ".join(p.text for p in problems)
    text = "".join(c if " " <= c <= "~" else "?" for c in text)  # printable ASCII only
    if len(text) > REASON_MAX:
        text = text[:REASON_MAX - 3].rstrip() + "..."
    return f"efajob: {text}"


def drain_argv(node: str, why: str, scontrol: str = "scontrol") -> List[str]:
    """scontrol's arguments to drain `node` with reason `why` (one argument: no shell)."""
    return [scontrol, "update", f"nodename={node}", "state=drain", f"reason={why}"]


def drain_line(node: str, why: str) -> str:
    """The drain command as a shell line, quoted so that pasting it runs exactly drain_argv."""
    import shlex

    return shlex.join(drain_argv(node, why))


def summary(devices: Sequence[DeviceNow], window: Window,
            previous: Optional[Mapping[str, Mapping[str, int]]]) -> str:
    """The healthy line (`-v`): what was looked at."""
    parts: List[str] = [f"{len(devices)} EFA devices"]
    parts.append(f"local store {span(window.seconds)}" if window.seconds
                 else "no local store samples")
    parts.append("errors compared with the previous check" if previous is not None
                 else "first check this boot (errors compared from the next one)")
    return "efajob: ok: " + ", ".join(parts)


def state_doc(boot_id: str, wall: float, devices: Sequence[DeviceNow]) -> dict:
    return {"boot_id": boot_id, "time": wall,
            "devices": {d.name: error_counters(d) for d in devices}}


def parse_state(doc: object, boot_id: str) -> Optional[Dict[str, Dict[str, int]]]:
    """The previous check's error counters if they are of this boot, else None."""
    if not isinstance(doc, dict) or doc.get("boot_id") != boot_id:
        return None
    devs = doc.get("devices")
    if not isinstance(devs, dict):
        return None
    out: Dict[str, Dict[str, int]] = {}
    for name, counters in devs.items():
        if isinstance(name, str) and isinstance(counters, dict):
            out[name] = {k: v for k, v in counters.items()
                         if isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)}
    return out


def window_from_sums(sums) -> Window:
    """A Window from the local store's RecentSums (node/localstore.py)."""
    busy = dict(sums.busy_tx)
    for d, v in sums.busy_rx.items():
        busy[d] = busy.get(d, 0) + v
    return Window(seconds=sums.seconds, busy_seconds=sums.busy_seconds,
                  devices_seen=set(sums.devices), busy_bytes=busy,
                  wr_errors={k: v for k, v in sums.extra.items() if is_wr_error(k)})
