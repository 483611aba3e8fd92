"""The simulator's layouts: counter names per kernel and instance type, the constants both the
tree builder (tree.py) and the traffic (traffic.py) follow, deterministic "random" numbers, and
`NodeTree`, what the traffic needs of a tree. Facts followed: shared/notes/efa-sysfs.md.

Standard library only.
"""
from __future__ import annotations

import hashlib
import os
import re
from typing import List, Protocol, Tuple, Union

from efajob.errors import SimulatorError
from efajob.node.instances import INSTANCE_TYPES, InstanceType

KERNELS = ("5.10", "5.15", "6.6", "6.17")

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
# <root>/ETHTOOL_DIR/<ifname>, read by efajob.node.ethtool.FileReader (config `ethtool`). A few of
# the driver's global stats, then its ENI allowance counters (ena_ethtool.c names).
ETHTOOL_DIR = os.path.join(".efajob-sim", "ethtool")
_ENA_GLOBAL_STATS = ("tx_timeout", "suspend", "resume", "wd_expired", "interface_up",
                     "interface_down", "admin_q_pause")

# Counter-split constants, shared with sim/traffic.py (which applies them to the traffic it
# injects) and used here for the counters' starting values. They shape the split between
# counters, not the totals, which are always exactly what was asked for.
# SRD packets carry at most ~8,800 bytes of payload on EFA's 8,9xx-byte MTU: packets are
# ceil(bytes / 8,800) per device and per step.
PAYLOAD_BYTES = 8_800
# aws-ofi-nccl moves bulk data as RDMA operations of a few hundred KiB and control messages as
# small two-sided sends: 2 % of the bytes go as send/recv in 8 KiB work requests, the rest as
# RDMA in 256 KiB work requests.
SEND_PERCENT = 2
SEND_WR_BYTES = 8 * 1024
RDMA_WR_BYTES = 256 * 1024

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
    port: Tuple[str, ...] = _BASIC + _MESSAGES + _RDMA_READ
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


def ethtool_path(root: str, ifname: str) -> str:
    """The simulated `ethtool -S <ifname>` file of the tree at `root`."""
    return os.path.join(root, ETHTOOL_DIR, ifname)


class NodeTree(Protocol):
    """What the traffic module needs of a node tree (tree.SimNode is one): the layout of one
    node's files, without the builders that make them."""

    root: str
    name: str
    instance_type: InstanceType
    kernel: str
    device_order: Tuple[str, ...]

    def device_path(self, device: str) -> str: ...

    def present_devices(self) -> List[str]: ...
