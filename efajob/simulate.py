"""Simulated sysfs trees for EFA nodes, and simulated traffic on them.

`build_node()` writes, under any directory, the part of `/sys` efajob reads on an EFA node:
`class/infiniband/<dev>` (EFA devices and, optionally, an mlx5 neighbour), `class/net/eth0`
(ENA) and `class/net/lo`, laid out as the kernel lays them out (class entries and `device`
/`driver` are relative symlinks into `devices/` and `bus/pci/drivers/`, so the tree has the
same symlink cycles as the real one). `SimNode.traffic()` then advances the counters as if a
job had moved data, and returns exactly what it injected, so tests can compare a reader's
numbers with the truth. Facts followed: shared/notes/efa-sysfs.md; the user guide is
docs/simulator.md.

Counter files are always updated in place (see `_write_in_place`): readers keep descriptors
open and `pread` them, as on sysfs where an attribute's inode never changes.

Standard library only.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

from .errors import SimulatorError
from .ethtool import ALLOWANCE_COUNTERS as ENA_ALLOWANCE_COUNTERS
from .ethtool import parse_ethtool_text, render_ethtool_text
from .instances import EFA_VENDOR, INSTANCE_TYPES, InstanceType

KERNELS = ("5.10", "5.15", "6.6", "6.17")
PATTERNS = ("steady", "bursty", "allreduce")
FAULTS = ("drops", "retrans", "impaired", "reset", "dead-device", "vanish", "garbage",
          "ena-allowance")

MARKER = ".efajob-sim.json"
_FORMAT = 1

# -- counter names (shared/notes/efa-sysfs.md), in the kernel's order -------------------------
DEVICE_COUNTERS = (
    "submitted_cmds", "completed_cmds", "cmds_err", "no_completion_cmds", "keep_alive_rcvd",
    "alloc_pd_err", "create_qp_err", "create_cq_err", "reg_mr_err", "alloc_ucontext_err",
    "create_ah_err", "mmap_err",
)
_BASIC = ("tx_bytes", "tx_pkts", "rx_bytes", "rx_pkts", "rx_drops")
_MESSAGES = ("send_bytes", "send_wrs", "recv_bytes", "recv_wrs")
_RDMA_READ = ("rdma_read_wrs", "rdma_read_bytes", "rdma_read_wr_err", "rdma_read_resp_bytes")
_RDMA_WRITE = ("rdma_write_wrs", "rdma_write_bytes", "rdma_write_wr_err", "rdma_write_recv_bytes")
SRD_COUNTERS = (
    "retrans_bytes", "retrans_pkts", "retrans_timeout_events", "unresponsive_remote_events",
    "impaired_remote_conn_events",
)
PORT_COUNTERS = _BASIC + _MESSAGES + _RDMA_READ + _RDMA_WRITE + SRD_COUNTERS  # the 22 current

# The standard netdev statistics (include/uapi/linux/if_link.h rtnl_link_stats64, as exposed
# in /sys/class/net/<if>/statistics/).
NETDEV_STATS = (
    "collisions", "multicast", "rx_bytes", "rx_compressed", "rx_crc_errors", "rx_dropped",
    "rx_errors", "rx_fifo_errors", "rx_frame_errors", "rx_length_errors", "rx_missed_errors",
    "rx_nohandler", "rx_over_errors", "rx_packets", "tx_aborted_errors", "tx_bytes",
    "tx_carrier_errors", "tx_compressed", "tx_dropped", "tx_errors", "tx_fifo_errors",
    "tx_heartbeat_errors", "tx_packets", "tx_window_errors",
)
_MLX5_HW_COUNTERS = (
    "duplicate_request", "implied_nak_seq_err", "local_ack_timeout_err", "out_of_buffer",
    "out_of_sequence", "packet_seq_err", "rnr_nak_retry_err", "rx_read_requests",
    "rx_write_requests", "np_cnp_sent", "rp_cnp_handled",
)
_MLX5_PMA_COUNTERS = ("port_rcv_data", "port_xmit_data", "port_rcv_packets", "port_xmit_packets")
# ENA's ethtool statistics are not in sysfs: the tree keeps them as `ethtool -S` text files in
# <root>/ETHTOOL_DIR/<ifname>, read by efajob.ethtool.FileReader (config `ethtool`). A few of
# the driver's global stats, then its ENI allowance counters (ena_ethtool.c names).
ETHTOOL_DIR = os.path.join(".efajob-sim", "ethtool")
_ENA_GLOBAL_STATS = ("tx_timeout", "suspend", "resume", "wd_expired", "interface_up",
                     "interface_down", "admin_q_pause")

# Traffic model constants. They shape the split between counters, not the totals, which are
# always exactly what was asked for.
# SRD packets carry at most ~8,800 bytes of payload on EFA's 8,9xx-byte MTU: packets are
# ceil(bytes / 8,800) per device and per step.
PAYLOAD_BYTES = 8_800
# ENA on EC2 uses a 9,001-byte jumbo MTU inside a VPC.
ENA_PACKET_BYTES = 9_001
# fault "ena-allowance": packets shaped per second over the bandwidth and PPS allowances.
ENA_BW_OUT_EXCEEDED_PER_S = 1_000
ENA_PPS_EXCEEDED_PER_S = 250
# aws-ofi-nccl moves bulk data as RDMA operations of a few hundred KiB and control messages as
# small two-sided sends: 2 % of the bytes go as send/recv in 8 KiB work requests, the rest as
# RDMA in 256 KiB work requests.
SEND_PERCENT = 2
SEND_WR_BYTES = 8 * 1024
RDMA_WR_BYTES = 256 * 1024
GARBAGE_COUNTER = "rdma_read_wr_err"  # present in every layout, never moved by traffic
GARBAGE_TEXT = b"N/A (no PMA)\n"
_MAX_U64 = (1 << 64) - 1

_RDMAP_RE = re.compile(r"^rdmap(\d+)s(\d+)(?:f(\d+))?$")


# -- layout --------------------------------------------------------------------------------------
def _ceil_div(a: int, b: int) -> int:
    # Integer ceil: math.ceil(a / b) goes through a float and is wrong past ~2**50 bytes.
    return -(-a // b)


def _kernel_key(kernel: str) -> Tuple[int, int]:
    if kernel not in KERNELS:
        raise SimulatorError(f"unknown kernel {kernel!r}: the simulator knows {', '.join(KERNELS)}")
    major, minor = kernel.split(".")
    return int(major), int(minor)


def _instance(instance_type: str) -> InstanceType:
    it = INSTANCE_TYPES.get(instance_type)
    if it is None:
        raise SimulatorError(
            f"unknown instance type {instance_type!r}: the simulator knows "
            f"{', '.join(sorted(INSTANCE_TYPES))}")
    return it


def counter_layout(kernel: str, instance_type: str) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
    """(port counter names, device counter names) of an EFA device, in the kernel's order.

    Before 5.15 the driver had a single list, shown in BOTH `hw_counters/` and
    `ports/1/hw_counters/`: both tuples are then that combined list (device names first).
    `rdma_write_*` appear in 6.6; the five SRD names in 6.17 and only on Nitro v4 and later.
    `lifespan` is not a counter and is not listed.
    """
    version = _kernel_key(kernel)
    it = _instance(instance_type)
    port = _BASIC + _MESSAGES + _RDMA_READ
    if version >= (6, 6):
        port += _RDMA_WRITE
    if version >= (6, 17) and it.srd_counters:
        port += SRD_COUNTERS
    if version < (5, 15):
        combined = DEVICE_COUNTERS + port
        return combined, combined
    return port, DEVICE_COUNTERS


def rate_text(kernel: str, gbps: float) -> str:
    """`ports/1/rate` as the EFA driver prints it: before 6.13 always 100 Gb/sec (4X EDR)."""
    if _kernel_key(kernel) < (6, 13) or gbps <= 100:
        return "100 Gb/sec (4X EDR)"
    if gbps <= 200:
        return "200 Gb/sec (4X HDR)"
    return "400 Gb/sec (8X HDR)"


def _rdma_write_capable(it: InstanceType) -> bool:
    # EFA RDMA write exists on Nitro v4 and later (p5, p5en, p6, trn1, trn2); on p4d the
    # rdma_write_* files exist from kernel 6.6 but stay 0.
    return it.nitro >= 4


# -- deterministic "random" numbers --------------------------------------------------------------
def _hash(*parts: object) -> int:
    # A hash, not random.Random: values stay the same across Python versions and do not depend
    # on the order in which they are drawn (a device's values do not depend on device_limit).
    h = hashlib.blake2b(repr(parts).encode(), digest_size=8)
    return int.from_bytes(h.digest(), "big")


def _frac(*parts: object) -> float:
    return _hash(*parts) / float(1 << 64)


# -- building ------------------------------------------------------------------------------------
def _write(path: str, text: Union[str, bytes]) -> None:
    data = text.encode() if isinstance(text, str) else text
    try:
        f = open(path, "wb")
    except FileNotFoundError:  # create parents only when needed: mkdir is not free
        os.makedirs(os.path.dirname(path), exist_ok=True)
        f = open(path, "wb")
    with f:
        f.write(data)


def _symlink(target: str, link: str) -> None:
    # Relative, as sysfs's own links are: the tree can be moved or copied (symlinks=True).
    os.makedirs(os.path.dirname(link), exist_ok=True)
    os.symlink(os.path.relpath(target, os.path.dirname(link)), link)


def _driver_dir(root: str, driver: str) -> str:
    d = os.path.join(root, "bus", "pci", "drivers", driver)
    if not os.path.isdir(d):
        # Real driver directories hold write-only bind/unbind/uevent files; having files here
        # also keeps the directory in git (fixtures).
        for n in ("bind", "unbind", "uevent"):
            _write(os.path.join(d, n), "")
    return d


def _pci_dir(root: str, bus: int, slot: int = 0, fn: int = 0) -> str:
    return os.path.join(root, "devices", "pci0000:00", f"0000:{bus:02x}:{slot:02x}.{fn}")


def _initial_efa_values(it: InstanceType, names: Sequence[str], kernel: str, seed: int,
                        node: str, dev: str) -> Dict[str, int]:
    """Cumulative counters of a device some days after instance launch (deterministic)."""
    uptime = int(86_400 * (2 + 58 * _frac(seed, node, "uptime")))
    line = it.gbps_per_device * 1e9 / 8
    tx = int(line * uptime * (0.02 + 0.18 * _frac(seed, node, dev, "tx")))
    rx = int(tx * (0.9 + 0.2 * _frac(seed, node, dev, "rx")))
    send = tx * SEND_PERCENT // 100
    recv = rx * SEND_PERCENT // 100
    write = "rdma_write_bytes" in names and _rdma_write_capable(it)
    # Part of the history predates RDMA write (older kernel or plugin): split the bulk.
    wshare = (0.5 + 0.4 * _frac(seed, node, dev, "w")) if write else 0.0
    tx_write = int((tx - send) * wshare)
    rx_write = int((rx - recv) * wshare)
    v = {
        "tx_bytes": tx,
        "tx_pkts": _ceil_div(tx, PAYLOAD_BYTES) + int(uptime * 40 * _frac(seed, node, dev, "tp")),
        "rx_bytes": rx,
        "rx_pkts": _ceil_div(rx, PAYLOAD_BYTES) + int(uptime * 40 * _frac(seed, node, dev, "rp")),
        "rx_drops": int(60 * _frac(seed, node, dev, "drops")),
        "send_bytes": send,
        "send_wrs": _ceil_div(send, SEND_WR_BYTES),
        "recv_bytes": recv,
        "recv_wrs": _ceil_div(recv, SEND_WR_BYTES),
        "rdma_read_bytes": rx - recv - rx_write,
        "rdma_read_wrs": _ceil_div(rx - recv - rx_write, RDMA_WR_BYTES),
        "rdma_read_wr_err": int(3 * _frac(seed, node, dev, "rerr")),
        "rdma_read_resp_bytes": tx - send - tx_write,
        "rdma_write_bytes": tx_write,
        "rdma_write_wrs": _ceil_div(tx_write, RDMA_WR_BYTES),
        "rdma_write_wr_err": int(2 * _frac(seed, node, dev, "werr")) if write else 0,
        "rdma_write_recv_bytes": rx_write,
        "retrans_bytes": int(tx * 1e-5 * _frac(seed, node, dev, "rb")),
        "retrans_timeout_events": int(20 * _frac(seed, node, dev, "rto")),
        "unresponsive_remote_events": int(5 * _frac(seed, node, dev, "unr")),
        "impaired_remote_conn_events": int(10 * _frac(seed, node, dev, "imp")),
    }
    v["retrans_pkts"] = _ceil_div(v["retrans_bytes"], PAYLOAD_BYTES)
    submitted = int(uptime * (1 + _frac(seed, node, dev, "cmds"))) + 4_000
    no_completion = int(3 * _frac(seed, node, dev, "nc"))
    v.update({
        "submitted_cmds": submitted,
        "completed_cmds": submitted - no_completion,
        "cmds_err": int(4 * _frac(seed, node, dev, "cerr")),
        "no_completion_cmds": no_completion,
        "keep_alive_rcvd": uptime,
    })
    return {n: v.get(n, 0) for n in names}


@dataclass
class SimNode:
    """A simulated node tree. Get one from `build_node()` or `open_node()`; the tree on disk is
    the state (counters are read back from the files), so several `SimNode`s of one root agree."""

    root: str
    name: str
    instance_type: InstanceType
    kernel: str
    seed: int
    device_order: Tuple[str, ...]
    mlx5: bool = False
    ena: bool = True

    @property
    def layout(self) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
        return counter_layout(self.kernel, self.instance_type.name)

    def device_path(self, device: str) -> str:
        return os.path.join(self.root, "class", "infiniband", device)

    def present_devices(self) -> List[str]:
        """EFA devices currently in the tree (a vanished one is gone), in instance order."""
        return [d for d in self.device_order if os.path.isdir(self.device_path(d))]

    def counter_files(self) -> List[str]:
        """Every EFA counter file of the tree (not `lifespan`), as paths."""
        out = []
        for dev in self.present_devices():
            base = self.device_path(dev)
            for sub in (os.path.join("ports", "1", "hw_counters"), "hw_counters"):
                d = os.path.join(base, sub)
                if os.path.isdir(d):
                    out.extend(os.path.join(d, n) for n in sorted(os.listdir(d)) if n != "lifespan")
        return out

    def traffic(self, tx_gbps: float, rx_gbps: float, seconds: float, *, pattern: str = "steady",
                devices: Optional[Sequence[Union[str, int]]] = None, fault: Optional[str] = None,
                ena_tx_gbps: float = 0, ena_rx_gbps: float = 0, realtime: bool = False,
                step: float = 1.0, seed: int = 0, clock: Callable[[], float] = time.monotonic,
                sleep: Callable[[float], None] = time.sleep) -> "Injected":
        """Advance the counters as if `seconds` of traffic happened; return what was injected.

        `tx_gbps`/`rx_gbps` are node-wide, spread over `devices` (names or indexes in instance
        order; default all). With `realtime=True` the counters move every `step` seconds of
        wall time (`clock`/`sleep` are injectable for tests); otherwise the end state is
        written at once, one write per changed file. See docs/simulator.md for patterns and
        faults.
        """
        plan = _Plan(self, tx_gbps, rx_gbps, seconds, pattern=pattern, devices=devices,
                     fault=fault, ena_tx_gbps=ena_tx_gbps, ena_rx_gbps=ena_rx_gbps,
                     realtime=realtime, step=step, seed=seed)
        run_plans([plan], realtime=realtime, clock=clock, sleep=sleep)
        return plan.injected


def build_node(root: str, instance_type: str = "p5.48xlarge", kernel: str = "6.17", *,
               mlx5: bool = False, ena: bool = True, efa_names: bool = False, seed: int = 0,
               device_limit: Optional[int] = None, name: Optional[str] = None) -> SimNode:
    """Write a simulated node's sysfs under `root` (missing or empty) and return it.

    `efa_names` uses the kernel's names (efa_0..) instead of rdma-core's (rdmap<bus>s<slot>);
    `device_limit` keeps only the first N devices (small fixtures); `seed` (and `name`) pick
    the deterministic starting values of the counters.
    """
    it = _instance(instance_type)
    port_names, dev_names = counter_layout(kernel, instance_type)
    if device_limit is not None and device_limit < 1:
        raise SimulatorError(f"device_limit must be at least 1, not {device_limit}")
    _check_empty(root)
    node = name or ""
    pci_names = list(it.device_names[:device_limit] if device_limit else it.device_names)
    lifespan = "12\n" if _hash(seed, node, "hz") % 2 else "10\n"
    efa_driver = _driver_dir(root, "efa")
    names = []
    for i, pci_name in enumerate(pci_names):
        m = _RDMAP_RE.match(pci_name)
        if m is None:  # pragma: no cover - instances.py only has rdmap names
            raise SimulatorError(f"cannot derive a PCI address from {pci_name!r}")
        bus, slot, fn = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
        dev = f"efa_{i}" if efa_names else pci_name
        names.append(dev)
        pci = _pci_dir(root, bus, slot, fn)
        _write(os.path.join(pci, "vendor"), EFA_VENDOR + "\n")
        _write(os.path.join(pci, "device"), it.pci_device_id + "\n")
        _write(os.path.join(pci, "numa_node"), "%d\n" % (0 if i < len(it.device_names) // 2 else 1))
        _symlink(efa_driver, os.path.join(pci, "driver"))
        ibdir = os.path.join(pci, "infiniband", dev)
        _write(os.path.join(ibdir, "node_type"), "1: CA\n")
        _symlink(pci, os.path.join(ibdir, "device"))
        port = os.path.join(ibdir, "ports", "1")
        _write(os.path.join(port, "state"), "4: ACTIVE\n")
        _write(os.path.join(port, "phys_state"), "5: LinkUp\n")
        _write(os.path.join(port, "link_layer"), "Unknown\n")
        _write(os.path.join(port, "rate"), rate_text(kernel, it.gbps_per_device) + "\n")
        _write(os.path.join(port, "lid"), "0x0\n")
        _write(os.path.join(port, "sm_lid"), "0x0\n")
        # Values follow the PCI name, not the kernel name: efa_names trees hold the same numbers.
        values = _initial_efa_values(it, tuple(dict.fromkeys(dev_names + port_names)), kernel,
                                     seed, node, pci_name)
        for sub, counters in ((os.path.join(port, "hw_counters"), port_names),
                              (os.path.join(ibdir, "hw_counters"), dev_names)):
            for n in counters:
                _write(os.path.join(sub, n), "%d\n" % values[n])
            _write(os.path.join(sub, "lifespan"), lifespan)
        _symlink(ibdir, os.path.join(root, "class", "infiniband", dev))
    if mlx5:
        _build_mlx5(root, seed, node)
    if ena:
        _build_ena(root, seed, node)
    _build_lo(root, seed, node)
    meta = {
        "efajob_sim": _FORMAT, "instance_type": instance_type, "kernel": kernel, "seed": seed,
        "devices": names, "mlx5": mlx5, "ena": ena, "efa_names": efa_names,
    }
    if name:
        meta["name"] = name
    if device_limit:
        meta["device_limit"] = device_limit
    _write(os.path.join(root, MARKER), json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return SimNode(root=root, name=name or os.path.basename(os.path.abspath(root)),
                   instance_type=it, kernel=kernel, seed=seed, device_order=tuple(names),
                   mlx5=mlx5, ena=ena)


def _build_mlx5(root: str, seed: int, node: str) -> None:
    # A ConnectX-7 as found beside EFA on some p6 nodes: not EFA (vendor 0x15b3, mlx5_core);
    # it has the IB PMA `counters/` directory EFA lacks, and its own hw_counters.
    pci = _pci_dir(root, 0x3C)
    _write(os.path.join(pci, "vendor"), "0x15b3\n")
    _write(os.path.join(pci, "device"), "0x1021\n")
    _symlink(_driver_dir(root, "mlx5_core"), os.path.join(pci, "driver"))
    ibdir = os.path.join(pci, "infiniband", "mlx5_0")
    _write(os.path.join(ibdir, "node_type"), "1: CA\n")
    _symlink(pci, os.path.join(ibdir, "device"))
    port = os.path.join(ibdir, "ports", "1")
    _write(os.path.join(port, "state"), "4: ACTIVE\n")
    _write(os.path.join(port, "phys_state"), "5: LinkUp\n")
    _write(os.path.join(port, "link_layer"), "Ethernet\n")
    _write(os.path.join(port, "rate"), "400 Gb/sec (4X NDR)\n")
    for n in _MLX5_HW_COUNTERS:
        _write(os.path.join(port, "hw_counters", n), "%d\n" % (_hash(seed, node, "mlx5", n) % 100_000))
    _write(os.path.join(port, "hw_counters", "lifespan"), "10\n")
    for n in _MLX5_PMA_COUNTERS:
        _write(os.path.join(port, "counters", n), "%d\n" % (_hash(seed, node, "pma", n) % 10**12))
    _symlink(ibdir, os.path.join(root, "class", "infiniband", "mlx5_0"))


def _build_ena(root: str, seed: int, node: str) -> None:
    pci = _pci_dir(root, 0, 5)
    _write(os.path.join(pci, "vendor"), EFA_VENDOR + "\n")  # Amazon's vendor id, as on EC2
    _write(os.path.join(pci, "device"), "0xec20\n")
    _symlink(_driver_dir(root, "ena"), os.path.join(pci, "driver"))
    ifdir = os.path.join(pci, "net", "eth0")
    _symlink(pci, os.path.join(ifdir, "device"))
    _write(os.path.join(ifdir, "mtu"), "9001\n")
    _write(os.path.join(ifdir, "operstate"), "up\n")
    rx = 10**9 + _hash(seed, node, "ena", "rx") % 10**12
    tx = 10**9 + _hash(seed, node, "ena", "tx") % 10**12
    stats = dict.fromkeys(NETDEV_STATS, 0)
    stats.update(rx_bytes=rx, tx_bytes=tx, rx_packets=rx // 1400, tx_packets=tx // 1400,
                 rx_dropped=_hash(seed, node, "ena", "drop") % 50,
                 multicast=_hash(seed, node, "ena", "mc") % 5_000)
    for n, v in stats.items():
        _write(os.path.join(ifdir, "statistics", n), "%d\n" % v)
    _symlink(ifdir, os.path.join(root, "class", "net", "eth0"))
    ethtool = dict.fromkeys(_ENA_GLOBAL_STATS, 0)
    ethtool.update(interface_up=1, tx_timeout=_hash(seed, node, "ena", "txto") % 3)
    ethtool.update({n: _hash(seed, node, "ena", n) % 100 for n in ENA_ALLOWANCE_COUNTERS[:3]})
    ethtool.update(conntrack_allowance_exceeded=0, linklocal_allowance_exceeded=0,
                   conntrack_allowance_available=300_000 + _hash(seed, node, "ena", "ct") % 50_000)
    ethtool.update({f"queue_0_{k}": v for k, v in (("tx_cnt", tx // 1400), ("rx_cnt", rx // 1400))})
    _write(ethtool_path(root, "eth0"), render_ethtool_text(ethtool))


def ethtool_path(root: str, ifname: str) -> str:
    """The simulated `ethtool -S <ifname>` file of the tree at `root`."""
    return os.path.join(root, ETHTOOL_DIR, ifname)


def _read_ethtool(path: str) -> Optional[Dict[str, int]]:
    try:
        with open(path, "rb") as f:
            return parse_ethtool_text(f.read().decode("utf-8", "replace"))
    except OSError:
        return None


def _build_lo(root: str, seed: int, node: str) -> None:
    # Virtual: no `device` link, so readers skip it.
    ifdir = os.path.join(root, "devices", "virtual", "net", "lo")
    _write(os.path.join(ifdir, "mtu"), "65536\n")
    _write(os.path.join(ifdir, "operstate"), "unknown\n")
    b = _hash(seed, node, "lo") % 10**10
    stats = dict.fromkeys(NETDEV_STATS, 0)
    stats.update(rx_bytes=b, tx_bytes=b, rx_packets=b // 600, tx_packets=b // 600)
    for n, v in stats.items():
        _write(os.path.join(ifdir, "statistics", n), "%d\n" % v)
    _symlink(ifdir, os.path.join(root, "class", "net", "lo"))


def _check_empty(root: str) -> None:
    if os.path.exists(root) and (not os.path.isdir(root) or os.listdir(root)):
        raise SimulatorError(f"{root} is not an empty directory: the simulator builds into an "
                             "empty or missing directory")


def build_cluster(root: str, nodes: Union[int, Sequence[str]] = 2, **kw) -> Dict[str, SimNode]:
    """One simulated node per name under `<root>/<name>/` (names n1..nN when `nodes` is an int).
    Keyword arguments go to `build_node`; each node's counters start at its own values."""
    if isinstance(nodes, int):
        if nodes < 1:
            raise SimulatorError(f"a cluster needs at least one node, not {nodes}")
        names = [f"n{i}" for i in range(1, nodes + 1)]
    else:
        names = [str(n) for n in nodes]
        bad = [n for n in names if not n or "/" in n or n.startswith(".")]
        if bad or not names or len(set(names)) != len(names):
            raise SimulatorError(f"bad or duplicate node names: {names}")
    _check_empty(root)
    out = {n: build_node(os.path.join(root, n), name=n, **kw) for n in names}
    meta = {"efajob_sim": _FORMAT, "cluster": names}
    _write(os.path.join(root, MARKER), json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return out


def _read_marker(root: str) -> dict:
    path = os.path.join(root, MARKER)
    try:
        with open(path) as f:
            meta = json.load(f)
    except FileNotFoundError:
        raise SimulatorError(f"{root} is not a simulated tree (no {MARKER}; build one with "
                             "`efajob simulate init`)") from None
    except (OSError, ValueError) as e:
        raise SimulatorError(f"{path} is unreadable: {e}") from None
    if not isinstance(meta, dict) or meta.get("efajob_sim") != _FORMAT:
        raise SimulatorError(f"{path} is not a simulator marker of format {_FORMAT}")
    return meta


def open_node(root: str) -> SimNode:
    """The simulated node at `root` (built earlier by `build_node`)."""
    meta = _read_marker(root)
    if "cluster" in meta:
        raise SimulatorError(f"{root} is a simulated cluster ({', '.join(meta['cluster'])}), "
                             "not a node: open one of its nodes or use open_tree()")
    try:
        it = _instance(str(meta["instance_type"]))
        kernel = str(meta["kernel"])
        _kernel_key(kernel)
        return SimNode(root=root, name=str(meta.get("name") or os.path.basename(os.path.abspath(root))),
                       instance_type=it, kernel=kernel, seed=int(meta["seed"]),
                       device_order=tuple(str(d) for d in meta["devices"]),
                       mlx5=bool(meta.get("mlx5")), ena=bool(meta.get("ena")))
    except (KeyError, TypeError, ValueError) as e:
        raise SimulatorError(f"{os.path.join(root, MARKER)} is malformed: {e}") from None


def open_tree(root: str) -> Dict[str, SimNode]:
    """{name: SimNode} for a simulated node or cluster root."""
    meta = _read_marker(root)
    if "cluster" in meta:
        return {str(n): open_node(os.path.join(root, str(n))) for n in meta["cluster"]}
    node = open_node(root)
    return {node.name: node}


def remove_tree(root: str) -> None:
    """Delete a simulated tree (refuses a directory that is not one)."""
    _read_marker(root)
    shutil.rmtree(root)


def copy_tree(src: str, dst: str) -> None:
    """Copy a simulated tree (or a fixture). Symlinks are copied as links: like real sysfs the
    tree has symlink cycles (`<dev>/device/infiniband/<dev>/device/...`), which
    `shutil.copytree`'s default would follow forever."""
    shutil.copytree(src, dst, symlinks=True)


# -- traffic -------------------------------------------------------------------------------------
@dataclass
class Injected:
    """What a `traffic()` call did. `devices[dev][counter]` is the delta a reader sees between a
    snapshot before and after, for every counter of every device present at the end (0 when
    unmoved); `totals` sums them; `ena[if][stat]` likewise for netdevs with a `device` link
    (sysfs statistics; with fault "ena-allowance" also the five ethtool allowance counters).
    Exceptions, listed: `resets` (devices whose counters went down: their delta here is what
    they moved after the reset, from `reset_bases`), `vanished` (devices removed: absent from
    `devices`), `garbage` ("dev/counter" made unparsable: absent from `devices`)."""

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
        }


def parse_value(raw: bytes) -> Optional[int]:
    """A counter file's bytes -> value, None when it is not an unsigned 64-bit decimal."""
    text = raw.strip()
    if not text.isdigit() or len(text) > 20:
        return None
    value = int(text)
    return value if value <= _MAX_U64 else None


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

    def __init__(self, node: SimNode, tx_gbps: float, rx_gbps: float, seconds: float, *,
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
        if fault in ("dead-device", "vanish") and len(selected) < 2:
            raise SimulatorError(f"fault {fault} needs at least two selected devices "
                                 "(the others carry the traffic)")
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
        srd = it.srd_counters and _kernel_key(self.node.kernel) >= (6, 17)
        if fault in ("retrans", "impaired") and not srd:
            self.notes.append(f"fault {fault} changes nothing: this tree has no SRD counters "
                              f"({it.name}, kernel {self.node.kernel}; they need Nitro v4+ and "
                              "kernel >= 6.17)")
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
            for acc in self.ena_steps:
                for k, v in acc.items():
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
        """Faults that happen before any traffic: garbage content, a reset (realtime)."""
        self._reset_pending = self.reset_dev is not None
        with _locked(self.node.root):
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
            for s in self.ena_steps[self._done:upto + 1]:
                for path in self.ena_paths:
                    delta = s.get(os.path.basename(path), 0)
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
    out = []
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


def vanish_device(node: SimNode, device: str) -> None:
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
    """Apply planned traffic to one or more nodes; in realtime, in lockstep, step by step."""
    for p in plans:
        p.start()
    if not realtime:
        for p in plans:
            p.write_through(len(p.steps) - 1)
            p.maybe_vanish(len(p.steps) - 1)
        return
    t0 = clock()
    elapsed = 0.0
    nsteps = max(len(p.steps) for p in plans)
    for i in range(nsteps):
        elapsed += max(p.durations[i] for p in plans if i < len(p.durations))
        delay = t0 + elapsed - clock()
        if delay > 0:
            sleep(delay)
        for p in plans:
            if i < len(p.steps):
                p.write_through(i)
                p.maybe_vanish(i)


def cluster_traffic(nodes: Dict[str, SimNode], tx_gbps: float, rx_gbps: float, seconds: float,
                    *, realtime: bool = False, clock: Callable[[], float] = time.monotonic,
                    sleep: Callable[[float], None] = time.sleep, **kw) -> Dict[str, Injected]:
    """The same traffic on every node (in lockstep when realtime); {name: Injected}."""
    plans = {n: _Plan(node, tx_gbps, rx_gbps, seconds, realtime=realtime,
                      **{**_PLAN_DEFAULTS, **kw}) for n, node in nodes.items()}
    run_plans(list(plans.values()), realtime=realtime, clock=clock, sleep=sleep)
    return {n: p.injected for n, p in plans.items()}


_PLAN_DEFAULTS = dict(pattern="steady", devices=None, fault=None, ena_tx_gbps=0, ena_rx_gbps=0,
                      step=1.0, seed=0)
