"""Simulated traffic on a simulated sysfs tree (sim/tree.py): patterns, faults, exact deltas.

`SimNode.traffic()` and `cluster_traffic()` advance the counters as if a job had moved data,
and return exactly what they injected (`Injected`), so tests can compare a reader's numbers
with the truth. The tree on disk is the state: a plan reads the current values back, computes
every step up front, then writes. The public API is `efajob.sim`; the user guide is
docs/simulator.md.

Counter files are always updated in place (see `_write_in_place`): readers keep descriptors
open and `pread` them, as on sysfs where an attribute's inode never changes.

Standard library only.
"""
from __future__ import annotations

import fcntl
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from efajob.node.readings import parse_counter
from efajob.errors import SimulatorError
from efajob.node.ethtool import ALLOWANCE_COUNTERS as ENA_ALLOWANCE_COUNTERS
from efajob.node.ethtool import parse_ethtool_text, render_ethtool_text
from efajob.sim.layout import (DEVICE_COUNTERS, ETHTOOL_DIR, MARKER, PAYLOAD_BYTES, PORT_COUNTERS,
                             RDMA_WR_BYTES, SEND_PERCENT, SEND_WR_BYTES, NodeTree, _ceil_div, _hash,
                             _rdma_write_capable, _write, ethtool_path)

PATTERNS = ("steady", "bursty", "allreduce")
FAULTS = ("drops", "retrans", "impaired", "reset", "dead-device", "vanish", "garbage",
          "ena-allowance", "wr-errors", "admin-errors", "missing-device")

# ENA on EC2 uses a 9,001-byte jumbo MTU inside a VPC.
ENA_PACKET_BYTES = 9_001
# fault "ena-allowance": packets shaped per second over the bandwidth and PPS allowances.
ENA_BW_OUT_EXCEEDED_PER_S = 1_000
ENA_PPS_EXCEEDED_PER_S = 250
# fault "wr-errors": work requests that completed in error, per second on one device
# (rdma_write_wr_err only where the device has RDMA write: elsewhere it reads 0).
RDMA_READ_WR_ERR_PER_S = 5
RDMA_WRITE_WR_ERR_PER_S = 3
# fault "admin-errors": admin commands that completed with an error status (cmds_err, counted
# as completed too) and that timed out (no_completion_cmds: submitted, never completed), as
# efa_com.c counts them, on one device.
CMDS_ERR_PER_S = 1
NO_COMPLETION_EVERY_S = 5
GARBAGE_COUNTER = "rdma_read_wr_err"  # present in every layout, never moved by traffic
GARBAGE_TEXT = b"N/A (no PMA)\n"
_MAX_U64 = (1 << 64) - 1


def _read_ethtool(path: str) -> Optional[Dict[str, int]]:
    try:
        with open(path, "rb") as f:
            return parse_ethtool_text(f.read().decode("utf-8", "replace"))
    except OSError:
        return None


# -- traffic -------------------------------------------------------------------------------------
@dataclass
class Injected:
    """What a `traffic()` call did. `devices[dev][counter]` is the delta a reader sees between a
    snapshot before and after, for every counter of every device present at the end (0 when
    unmoved); `totals` sums them; `ena[if][stat]` likewise for netdevs with a `device` link
    (sysfs statistics; with fault "ena-allowance" also the five ethtool allowance counters).
    Exceptions, listed: `resets` (devices whose counters went down: their delta here is what
    they moved after the reset, from `reset_bases`), `vanished` (devices removed: absent from
    `devices`), `garbage` ("dev/counter" made unparsable: absent from `devices`), `missing`
    (fault missing-device: removed before the traffic, absent from `devices`)."""

    node: str = ""
    seconds: float = 0.0
    pattern: str = "steady"
    fault: Optional[str] = None
    devices: Dict[str, Dict[str, int]] = field(default_factory=dict)
    totals: Dict[str, int] = field(default_factory=dict)
    ena: Dict[str, Dict[str, int]] = field(default_factory=dict)
    resets: List[str] = field(default_factory=list)
    reset_bases: Dict[str, Dict[str, int]] = field(default_factory=dict)
    vanished: List[str] = field(default_factory=list)
    garbage: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "node": self.node,
            "seconds": self.seconds,
            "pattern": self.pattern,
            "fault": self.fault,
            "devices": {d: dict(c) for d, c in self.devices.items()},
            "totals": dict(self.totals),
            "ena": {i: dict(c) for i, c in self.ena.items()},
            "resets": list(self.resets),
            "reset_bases": {d: dict(c) for d, c in self.reset_bases.items()},
            "vanished": list(self.vanished),
            "garbage": list(self.garbage),
            "notes": list(self.notes),
            "missing": list(self.missing),
        }


# The simulator reads back what it wrote with the sampler's own parser: one rule for what a
# counter file may hold.
parse_value = parse_counter


def _write_in_place(path: str, data: bytes) -> None:
    """Replace a counter file's content WITHOUT changing its inode.

    Readers (efajob's Sampler, node_exporter, ...) keep each counter file open and `pread` it at
    offset 0, which is right on sysfs: an attribute's inode never changes and each read at
    offset 0 regenerates the value. A write-temp-then-rename would give the path a new inode and
    leave every open descriptor reading the old one forever, so we never rename: one
    `pwrite(fd, data, 0)` of the whole value. Counters only grow, so the new text is normally
    as long or longer and no reader can see a mix of lengths. When it is shorter (a reset, or
    garbage), we first pwrite the new text padded with spaces to the old length (the readers'
    parsers strip whitespace, so "123\\n        " already reads 123), then ftruncate to the
    new length: at no point can a reader parse a wrong number.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        old = os.fstat(fd).st_size
        if len(data) >= old:
            os.pwrite(fd, data, 0)
        else:
            os.pwrite(fd, data + b" " * (old - len(data)), 0)
            os.ftruncate(fd, len(data))
    finally:
        os.close(fd)


def _bytes_total(gbps: float, seconds: float) -> int:
    # Exact decimal arithmetic: 1.5 Gbps for 3 s is 562,500,000 bytes, not 562,499,999.
    if gbps < 0 or not math.isfinite(gbps):
        raise SimulatorError(f"a rate must be a finite number >= 0, not {gbps}")
    return int(Fraction(repr(float(gbps))) * 10**9 / 8 * Fraction(repr(float(seconds))))


def _split(total: int, weights: Sequence[Fraction]) -> List[int]:
    """Integer shares of `total` proportional to `weights`, summing exactly to `total`."""
    w = sum(weights, Fraction(0))
    if total == 0 or w == 0:
        return [0] * len(weights)
    out, acc, prev = [], Fraction(0), 0
    for x in weights:
        acc += x
        cur = math.floor(total * acc / w)
        out.append(cur - prev)
        prev = cur
    return out


def _phase_weights(pattern: str, durations: Sequence[Fraction]) -> Tuple[List[Fraction], List[Fraction]]:
    """(tx weights, rx weights) per step."""
    n = len(durations)
    if pattern == "steady":
        tx = rx = list(durations)
    elif pattern == "bursty":
        # On/off in cycles of four steps; tx and rx bursts overlap by one step.
        tx = [d if i % 4 in (0, 1) else Fraction(0) for i, d in enumerate(durations)]
        rx = [d if i % 4 in (1, 2) else Fraction(0) for i, d in enumerate(durations)]
    else:
        # allreduce: tx and rx move together (ring all-reduce sends what it receives), four
        # steps of communication then one of compute.
        tx = rx = [d if i % 5 != 4 or n == 1 else Fraction(0) for i, d in enumerate(durations)]
    if sum(tx) == 0:
        tx = list(durations)
    if sum(rx) == 0:
        rx = list(durations)
    return tx, rx


def _durations(seconds: float, step: Optional[float]) -> List[Fraction]:
    """Step lengths: one per `step` seconds, the last possibly shorter; one step when None."""
    sec = Fraction(repr(float(seconds)))
    if step is None:
        return [sec]
    stp = Fraction(repr(float(step)))
    n = max(1, math.ceil(sec / stp))
    if n > 100_000:
        raise SimulatorError(f"{seconds} s in steps of {step} s is {n} steps: too many")
    return [stp] * (n - 1) + [sec - stp * (n - 1)]


_ORDER = {n: i for i, n in enumerate(PORT_COUNTERS + DEVICE_COUNTERS)}


def _counter_order(name: str) -> Tuple[int, str]:
    return _ORDER.get(name, len(_ORDER)), name


def _read_value(path: str) -> Optional[int]:
    try:
        with open(path, "rb") as f:
            return parse_value(f.read(64))
    except OSError:
        return None


class _Plan:
    """One node's traffic, computed up front (no file is written until `start()`): per-step,
    per-device counter deltas, the faults' file edits, and the `Injected` a reader will see."""

    def __init__(self, node: NodeTree, tx_gbps: float, rx_gbps: float, seconds: float, *,
                 pattern: str, devices: Optional[Sequence[Union[str, int]]], fault: Optional[str],
                 ena_tx_gbps: float, ena_rx_gbps: float, realtime: bool, step: float, seed: int):
        if pattern not in PATTERNS:
            raise SimulatorError(f"unknown pattern {pattern!r}: use one of {', '.join(PATTERNS)}")
        if fault is not None and fault not in FAULTS:
            raise SimulatorError(f"unknown fault {fault!r}: use one of {', '.join(FAULTS)}")
        if not (seconds > 0 and math.isfinite(seconds)):
            raise SimulatorError(f"seconds must be > 0, not {seconds}")
        if not (step > 0 and math.isfinite(step)):
            raise SimulatorError(f"step must be > 0, not {step}")
        self.node = node
        self.realtime = realtime
        self.notes: List[str] = []
        present = node.present_devices()
        if not present:
            raise SimulatorError(f"{node.root} has no EFA device left")
        selected = self._select(present, devices)
        durations = _durations(seconds, step if realtime else None)
        self.durations = [float(d) for d in durations]

        # Fault targets: dead and vanishing devices carry nothing, the others carry the total.
        self.dead = self.reset_dev = self.vanish_dev = self.garbage_dev = None
        self.error_dev: Optional[str] = None
        self.missing_dev: Optional[str] = None
        if fault in ("dead-device", "vanish") and len(selected) < 2:
            raise SimulatorError(f"fault {fault} needs at least two selected devices "
                                 "(the others carry the traffic)")
        if fault == "missing-device":
            # The node's last device goes before any traffic: from then on the node has one
            # device fewer than its instance type (to have it missing before a first snapshot,
            # build the tree with build_node(fault="missing-device")).
            if len(present) < 2:
                raise SimulatorError("fault missing-device needs a node with at least two devices")
            self.missing_dev = present[-1]
            selected = [d for d in selected if d != self.missing_dev]
            if not selected:
                raise SimulatorError(f"fault missing-device removes {self.missing_dev}, the only "
                                     "selected device: select another one")
            self.notes.append(f"{self.missing_dev} is missing: removed before the traffic, the "
                              f"node has {len(present) - 1} of its instance type's "
                              f"{node.instance_type.devices} devices")
            present = present[:-1]
        if fault == "dead-device":
            self.dead = selected[0]
            self.notes.append(f"{self.dead} is dead: it moves nothing, the other selected devices "
                              "carry the total")
        elif fault == "vanish":
            self.vanish_dev = selected[-1]
            self.notes.append(f"{self.vanish_dev} vanishes: its files are emptied then its "
                              "directory removed")
        elif fault == "reset":
            self.reset_dev = selected[0]
        elif fault == "garbage":
            self.garbage_dev = selected[0]
        elif fault in ("wr-errors", "admin-errors"):
            self.error_dev = selected[0]
        self.vanish_at = len(durations) // 2 if realtime else 0
        carriers = [d for d in selected if d not in (self.dead, self.vanish_dev)]

        self._read_state(present)
        self._plan_efa(carriers, tx_gbps, rx_gbps, seconds, pattern, fault, durations)
        self._plan_file_faults(seed)
        self._plan_ena(ena_tx_gbps, ena_rx_gbps, seconds, durations)
        self._plan_allowance(fault == "ena-allowance", durations)
        self.injected = self._injected(seconds, pattern, fault)
        self._done = 0
        self._reset_pending = False

    def _read_state(self, present: List[str]) -> None:
        """Current values, read back from the tree (the tree is the state)."""
        self.files: Dict[str, List[Tuple[str, int]]] = {}  # dev -> [(path, value)]
        self.names: Dict[str, List[str]] = {}  # dev -> counter names (a name may have 2 files)
        for dev in present:
            if dev == self.vanish_dev:
                continue
            files: List[Tuple[str, int]] = []
            for path in _device_counter_files(self.node.device_path(dev)):
                value = _read_value(path)
                if value is not None:  # garbage or unreadable: left alone, absent for readers too
                    files.append((path, value))
            self.files[dev] = files
            self.names[dev] = list(dict.fromkeys(os.path.basename(p) for p, _ in files))

    def _plan_efa(self, carriers: List[str], tx_gbps: float, rx_gbps: float, seconds: float,
                  pattern: str, fault: Optional[str], durations: List[Fraction]) -> None:
        """self.steps[i][dev][counter]: what each step adds."""
        it = self.node.instance_type
        cap = it.gbps_per_device * len(carriers)
        if max(tx_gbps, rx_gbps) > cap:
            self.notes.append(f"{max(tx_gbps, rx_gbps):g} Gbps exceeds the {cap:g} Gbps of "
                              f"{len(carriers)} x {it.gbps_per_device:g} Gbps devices: no real node could")
        if pattern == "allreduce" and abs(tx_gbps - rx_gbps) > 0.1 * max(tx_gbps, rx_gbps):
            self.notes.append("allreduce normally sends about what it receives; tx and rx differ here")
        has_srd = any("retrans_pkts" in names for names in self.names.values())
        srd = it.srd_counters and has_srd
        if fault in ("retrans", "impaired") and not srd:
            why = (f"{it.name} is Nitro v{it.nitro}: its SRD counter files exist but read 0 "
                   "(supported on Nitro v4+ only)" if has_srd else
                   f"this tree has no SRD counters ({it.name}, kernel {self.node.kernel}, driver "
                   f"{self.node.driver}; they need kernel >= 6.17 or AWS "
                   "driver >= 2.17.0)")
            self.notes.append(f"fault {fault} changes nothing: {why}")
        if fault == "wr-errors" and not _rdma_write_capable(it):
            self.notes.append(f"rdma_write_wr_err does not move: {it.name} has no RDMA write "
                              "(the file, where the driver has it, reads 0)")
        tx_w, rx_w = _phase_weights(pattern, durations)
        even = [Fraction(1)] * len(carriers)
        tx_dev = dict(zip(carriers, _split(_bytes_total(tx_gbps, seconds), even)))
        rx_dev = dict(zip(carriers, _split(_bytes_total(rx_gbps, seconds), even)))
        whole = float(sum(durations))
        self.steps: List[Dict[str, Dict[str, int]]] = [{d: {} for d in self.files} for _ in durations]
        for dev, names in self.names.items():
            if dev == self.dead:
                continue
            write = "rdma_write_bytes" in names and _rdma_write_capable(it)
            for acc, tx, rx in zip(self.steps, _split(tx_dev.get(dev, 0), tx_w),
                                   _split(rx_dev.get(dev, 0), rx_w)):
                _add_traffic(acc[dev], tx, rx, write)
            # Admin commands tick on every live device: stats polling, keep-alives (1/s).
            extra = {"submitted_cmds": 2 * math.ceil(whole), "completed_cmds": 2 * math.ceil(whole),
                     "keep_alive_rcvd": int(whole)}
            if dev in carriers:
                if fault == "drops":  # 0.1 % of the received packets
                    rx_pkts = sum(acc[dev].get("rx_pkts", 0) for acc in self.steps)
                    extra["rx_drops"] = max(1, rx_pkts // 1000)
                elif fault == "retrans" and srd:  # 1 % of the sent bytes
                    rb = max(PAYLOAD_BYTES, tx_dev.get(dev, 0) // 100)
                    extra.update(retrans_bytes=rb, retrans_pkts=_ceil_div(rb, PAYLOAD_BYTES),
                                 retrans_timeout_events=max(1, math.ceil(whole / 10)))
                elif fault == "impaired" and srd:
                    extra.update(impaired_remote_conn_events=max(1, math.ceil(whole / 5)),
                                 unresponsive_remote_events=max(1, math.ceil(whole / 10)))
            if dev == self.error_dev and fault == "wr-errors":
                extra["rdma_read_wr_err"] = RDMA_READ_WR_ERR_PER_S * math.ceil(whole)
                if _rdma_write_capable(it):
                    extra["rdma_write_wr_err"] = RDMA_WRITE_WR_ERR_PER_S * math.ceil(whole)
            elif dev == self.error_dev and fault == "admin-errors":
                nc = max(1, math.ceil(whole / NO_COMPLETION_EVERY_S))
                extra.update(cmds_err=CMDS_ERR_PER_S * math.ceil(whole), no_completion_cmds=nc,
                             completed_cmds=extra["completed_cmds"] - nc)
            for counter, total in extra.items():
                for acc, v in zip(self.steps, _split(total, durations)):
                    if v:
                        acc[dev][counter] = acc[dev].get(counter, 0) + v
            # Counters this layout does not have move nothing (e.g. rdma_write_* before 6.6).
            for acc in self.steps:
                for k in [k for k in acc[dev] if k not in names]:
                    del acc[dev][k]

    def _plan_file_faults(self, seed: int) -> None:
        self.reset_bases: Dict[str, int] = {}
        if self.reset_dev is not None:
            # Small values below the old ones, so every nonzero counter visibly goes down.
            for path, value in self.files[self.reset_dev]:
                n = os.path.basename(path)
                self.reset_bases[n] = _hash(seed, self.reset_dev, n) % min(value, 4096) if value else 0
            b = self.reset_bases
            if "completed_cmds" in b and "submitted_cmds" in b:  # keep completed <= submitted
                b["completed_cmds"] = min(b["completed_cmds"], b["submitted_cmds"])
            self.notes.append(f"{self.reset_dev} was reset: its counters restarted from small "
                              "values (reset_bases) and its deltas are what it moved after the reset")
        self.garbage_paths: List[str] = []
        dev = self.garbage_dev
        if dev is not None:
            self.garbage_paths = [p for p, _ in self.files[dev] if os.path.basename(p) == GARBAGE_COUNTER]
            self.files[dev] = [(p, v) for p, v in self.files[dev] if p not in self.garbage_paths]
            if GARBAGE_COUNTER in self.names[dev]:
                self.names[dev].remove(GARBAGE_COUNTER)
            for acc in self.steps:
                acc[dev].pop(GARBAGE_COUNTER, None)

    def _plan_ena(self, ena_tx_gbps: float, ena_rx_gbps: float, seconds: float,
                  durations: List[Fraction]) -> None:
        self.ena_paths: Dict[str, int] = {}
        self.ena_steps: List[Dict[str, int]] = [{} for _ in durations]
        ena_dir = os.path.join(self.node.root, "class", "net", "eth0", "statistics")
        ena_tx, ena_rx = _bytes_total(ena_tx_gbps, seconds), _bytes_total(ena_rx_gbps, seconds)
        if not os.path.isdir(ena_dir):
            if ena_tx or ena_rx:
                raise SimulatorError(f"{self.node.root} has no ENA interface (built with ena=False): "
                                     "cannot inject ENA traffic")
            return
        for n in sorted(os.listdir(ena_dir)):
            value = _read_value(os.path.join(ena_dir, n))
            if value is not None:
                self.ena_paths[os.path.join(ena_dir, n)] = value
        for i, (t, r) in enumerate(zip(_split(ena_tx, durations), _split(ena_rx, durations))):
            self.ena_steps[i] = {"tx_bytes": t, "tx_packets": _ceil_div(t, ENA_PACKET_BYTES),
                                 "rx_bytes": r, "rx_packets": _ceil_div(r, ENA_PACKET_BYTES)}

    def _plan_allowance(self, on: bool, durations: List[Fraction]) -> None:
        """fault ena-allowance: eth0's bw_out and pps allowance counters rise (ethtool file)."""
        self.ethtool_file: Optional[str] = None
        self.ethtool_steps: List[Dict[str, int]] = [{} for _ in durations]
        if not on:
            return
        path = ethtool_path(self.node.root, "eth0")
        if _read_ethtool(path) is None:
            raise SimulatorError(f"{self.node.root} has no ENA ethtool statistics ({ETHTOOL_DIR}/eth0): "
                                 "cannot inject fault ena-allowance")
        self.ethtool_file = path
        secs = math.ceil(float(sum(durations)))
        for name, per_s in (("bw_out_allowance_exceeded", ENA_BW_OUT_EXCEEDED_PER_S),
                            ("pps_allowance_exceeded", ENA_PPS_EXCEEDED_PER_S)):
            for acc, v in zip(self.ethtool_steps, _split(per_s * secs, durations)):
                if v:
                    acc[name] = v
        self.notes.append("eth0 went over its bandwidth and PPS allowances (ethtool statistics "
                          f"in {ETHTOOL_DIR}/eth0: read them with config ethtool = that directory)")

    def _injected(self, seconds: float, pattern: str, fault: Optional[str]) -> "Injected":
        """What a reader will see between a snapshot before and one after."""
        inj = Injected(node=self.node.name, seconds=float(seconds), pattern=pattern, fault=fault,
                       notes=self.notes)
        for dev, names in self.names.items():
            moved = dict.fromkeys(sorted(names, key=_counter_order), 0)
            for acc in self.steps:
                for k, v in acc[dev].items():
                    moved[k] += v
            inj.devices[dev] = moved
        totals: Dict[str, int] = {}
        for moved in inj.devices.values():
            for k, v in moved.items():
                totals[k] = totals.get(k, 0) + v
        inj.totals = {k: totals[k] for k in sorted(totals, key=_counter_order)}
        if self.ena_paths:
            d = {os.path.basename(p): 0 for p in self.ena_paths}
            for ena_acc in self.ena_steps:
                for k, v in ena_acc.items():
                    if k in d:
                        d[k] += v
            inj.ena = {"eth0": d}
        if self.ethtool_file is not None:
            d = inj.ena.setdefault("eth0", {})
            for n in ENA_ALLOWANCE_COUNTERS:
                d[n] = sum(acc.get(n, 0) for acc in self.ethtool_steps)
        if self.reset_dev is not None:
            inj.resets = [self.reset_dev]
            inj.reset_bases = {self.reset_dev: {n: self.reset_bases[n]
                                                for n in inj.devices[self.reset_dev]}}
        if self.vanish_dev is not None:
            inj.vanished = [self.vanish_dev]
        if self.garbage_paths:
            inj.garbage = [f"{self.garbage_dev}/{GARBAGE_COUNTER}"]
        if self.missing_dev is not None:
            inj.missing = [self.missing_dev]
        return inj

    def _select(self, present: List[str], devices: Optional[Sequence[Union[str, int]]]) -> List[str]:
        if devices is None:
            return list(present)
        out: List[str] = []
        for d in devices:
            if isinstance(d, int) or (isinstance(d, str) and d.isdigit()):
                k, count = int(d), len(self.node.device_order)
                if not 0 <= k < count:
                    raise SimulatorError(f"device index {k} is out of range: {self.node.name} has "
                                         f"{count} devices (0..{count - 1})")
                name = self.node.device_order[k]
            else:
                name = str(d)
            if name not in present:
                raise SimulatorError(
                    f"unknown device {name!r} on {self.node.name}"
                    + (" (it vanished)" if name in self.node.device_order else "")
                    + f": devices are {', '.join(present)}")
            if name not in out:
                out.append(name)
        if not out:
            raise SimulatorError("no device selected")
        return out

    # -- writing --------------------------------------------------------------------------------
    # Every write re-reads the current value and adds this call's step delta, under a lock on
    # the node: two traffic calls on one node at once (two jobs sharing a node) add up, as real
    # counters do, and each call's Injected stays exactly its own contribution.
    def start(self) -> None:
        """Faults that happen before any traffic: a missing device, garbage content, a reset
        (realtime)."""
        self._reset_pending = self.reset_dev is not None
        with _locked(self.node.root):
            if self.missing_dev is not None:
                vanish_device(self.node, self.missing_dev)
            for path in self.garbage_paths:
                _write_in_place(path, GARBAGE_TEXT)
            if self.realtime and self.reset_dev is not None:
                # Readers see the drop before the traffic resumes.
                for path, _ in self.files[self.reset_dev]:
                    _set_value(path, self.reset_bases[os.path.basename(path)])
                self._reset_pending = False

    def write_through(self, upto: int) -> None:
        """Advance by steps [done, upto]: one read and one write per file that moves."""
        steps = self.steps[self._done:upto + 1]
        with _locked(self.node.root):
            for dev, files in self.files.items():
                cum: Dict[str, int] = {}
                for s in steps:
                    for k, v in s[dev].items():
                        cum[k] = cum.get(k, 0) + v
                reset = dev == self.reset_dev and self._reset_pending
                for path, _ in files:
                    name = os.path.basename(path)
                    if reset:  # not realtime: the reset and the traffic in one write
                        _set_value(path, self.reset_bases[name] + cum.get(name, 0))
                    elif cum.get(name):
                        _add_value(path, cum[name])
            self._reset_pending = False
            for ena_step in self.ena_steps[self._done:upto + 1]:
                for path in self.ena_paths:
                    delta = ena_step.get(os.path.basename(path), 0)
                    if delta:
                        _add_value(path, delta)
            self._write_ethtool(self.ethtool_steps[self._done:upto + 1])
        self._done = upto + 1

    def _write_ethtool(self, steps: List[Dict[str, int]]) -> None:
        cum: Dict[str, int] = {}
        for s in steps:
            for k, v in s.items():
                cum[k] = cum.get(k, 0) + v
        if self.ethtool_file is None or not cum:
            return
        stats = _read_ethtool(self.ethtool_file)
        if stats is None:
            return
        for k, v in cum.items():
            stats[k] = stats.get(k, 0) + v
        # Readers open this file per read (no descriptor kept), so temp + rename is safe here
        # and no reader ever sees half a file.
        tmp = self.ethtool_file + ".tmp"
        _write(tmp, render_ethtool_text(stats))
        os.replace(tmp, self.ethtool_file)

    def maybe_vanish(self, i: int) -> None:
        if self.vanish_dev is not None and i == self.vanish_at:
            with _locked(self.node.root):
                vanish_device(self.node, self.vanish_dev)


class _locked:
    """An exclusive flock on the node's marker file (simulator writers only; readers never lock)."""

    def __init__(self, root: str):
        self.path = os.path.join(root, MARKER)
        self.fd = -1

    def __enter__(self) -> "_locked":
        try:
            self.fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise SimulatorError(f"cannot lock {self.path}: {e.strerror}") from None
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc) -> None:
        os.close(self.fd)  # releases the lock


def _set_value(path: str, value: int) -> None:
    try:
        _write_in_place(path, b"%d\n" % value)
    except FileNotFoundError:  # the device vanished meanwhile
        pass


def _add_value(path: str, delta: int) -> None:
    value = _read_value(path)
    if value is not None:  # garbage or unreadable meanwhile: leave it alone
        _set_value(path, value + delta)


def _device_counter_files(devpath: str) -> List[str]:
    out: List[str] = []
    ports = os.path.join(devpath, "ports")
    for p in sorted(os.listdir(ports)) if os.path.isdir(ports) else []:
        d = os.path.join(ports, p, "hw_counters")
        if os.path.isdir(d):
            out.extend(os.path.join(d, n) for n in sorted(os.listdir(d)) if n != "lifespan")
    d = os.path.join(devpath, "hw_counters")
    if os.path.isdir(d):
        out.extend(os.path.join(d, n) for n in sorted(os.listdir(d)) if n != "lifespan")
    return out


def _add_traffic(acc: Dict[str, int], tx: int, rx: int, write: bool) -> None:
    def add(k: str, v: int) -> None:
        if v:
            acc[k] = acc.get(k, 0) + v

    # tx: what this node sends. With RDMA write it initiates writes (rdma_write_bytes/wrs);
    # with RDMA read its peers read from it and the bytes show as rdma_read_resp_bytes.
    send = tx * SEND_PERCENT // 100
    add("tx_bytes", tx)
    add("tx_pkts", _ceil_div(tx, PAYLOAD_BYTES))
    add("send_bytes", send)
    add("send_wrs", _ceil_div(send, SEND_WR_BYTES))
    if write:
        add("rdma_write_bytes", tx - send)
        add("rdma_write_wrs", _ceil_div(tx - send, RDMA_WR_BYTES))
    else:
        add("rdma_read_resp_bytes", tx - send)
    # rx: with RDMA write peers write into us (rdma_write_recv_bytes); with RDMA read this node
    # initiates the reads (rdma_read_bytes/wrs).
    recv = rx * SEND_PERCENT // 100
    add("rx_bytes", rx)
    add("rx_pkts", _ceil_div(rx, PAYLOAD_BYTES))
    add("recv_bytes", recv)
    add("recv_wrs", _ceil_div(recv, SEND_WR_BYTES))
    if write:
        add("rdma_write_recv_bytes", rx - recv)
    else:
        add("rdma_read_bytes", rx - recv)
        add("rdma_read_wrs", _ceil_div(rx - recv, RDMA_WR_BYTES))


def vanish_device(node: NodeTree, device: str) -> None:
    """Remove a device as a driver unbind does. First every file is truncated to 0 bytes in
    place, so descriptors readers hold open read b"" (on sysfs they would get ENODEV; a regular
    file cannot do that, and an unlinked file keeps its old content for open descriptors);
    then the device directory and its class link are removed."""
    link = node.device_path(device)
    if not os.path.isdir(link):
        raise SimulatorError(f"unknown device {device!r} on {node.name}")
    real = os.path.realpath(link)
    for dirpath, _dirs, files in os.walk(real):  # does not follow the `device` link
        for n in files:
            p = os.path.join(dirpath, n)
            if not os.path.islink(p):
                fd = os.open(p, os.O_WRONLY | os.O_CLOEXEC)
                try:
                    os.ftruncate(fd, 0)
                finally:
                    os.close(fd)
    os.unlink(link)
    shutil.rmtree(real)


def run_plans(plans: Sequence[_Plan], *, realtime: bool,
              clock: Callable[[], float] = time.monotonic,
              sleep: Callable[[float], None] = time.sleep) -> None:
    """Apply planned traffic to one or more nodes; in realtime, in lockstep, step by step.

    In realtime a step is written no sooner than its duration after the previous one was:
    when the simulator falls behind (a busy machine, a slow filesystem), the schedule slips
    instead of catching up in a burst. A burst would put two steps' bytes into one reader's
    interval, a rate above what the link can carry (reports showed 118 Gbps on 100 Gbps
    links). So a late run takes longer than `seconds` of wall time, and every step, and the
    totals in Injected, stay exactly as planned."""
    for p in plans:
        p.start()
    if not realtime:
        for p in plans:
            p.write_through(len(p.steps) - 1)
            p.maybe_vanish(len(p.steps) - 1)
        return
    last = clock()  # when the previous step was written (the start, before step 0)
    nsteps = max(len(p.steps) for p in plans)
    for i in range(nsteps):
        duration = max(p.durations[i] for p in plans if i < len(p.durations))
        delay = last + duration - clock()
        if delay > 0:
            sleep(delay)
        last = clock()
        for p in plans:
            if i < len(p.steps):
                p.write_through(i)
                p.maybe_vanish(i)


def cluster_traffic(nodes: Mapping[str, NodeTree], tx_gbps: float, rx_gbps: float, seconds: float,
                    *, realtime: bool = False, clock: Callable[[], float] = time.monotonic,
                    sleep: Callable[[float], None] = time.sleep, **kw) -> Dict[str, Injected]:
    """The same traffic on every node (in lockstep when realtime); {name: Injected}."""
    plans = {n: _Plan(node, tx_gbps, rx_gbps, seconds, realtime=realtime,
                      **{**_PLAN_DEFAULTS, **kw}) for n, node in nodes.items()}
    run_plans(list(plans.values()), realtime=realtime, clock=clock, sleep=sleep)
    return {n: p.injected for n, p in plans.items()}


_PLAN_DEFAULTS = dict(pattern="steady", devices=None, fault=None, ena_tx_gbps=0, ena_rx_gbps=0,
                      step=1.0, seed=0)
