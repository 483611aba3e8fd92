"""The simulator's layouts: counter names per driver (in-tree by kernel, AWS's by version) and
instance type, the constants both the tree builder (tree.py) and the traffic (traffic.py)
follow, deterministic "random" numbers, and `NodeTree`, what the traffic needs of a tree.
Facts followed: shared/notes/efa-sysfs.md and the driver sources named at DRIVERS.

Standard library only.
"""
from __future__ import annotations

import hashlib
import os
import re
from typing import List, Optional, Protocol, Sequence, Tuple, Union

from efajob.errors import SimulatorError
from efajob.node.instances import INSTANCE_TYPES, InstanceType

KERNELS = ("5.10", "5.15", "6.6", "6.17")

# The EFA driver a tree follows: the kernel's own (`in-tree`, whose layout follows `kernel`) or
# AWS's out-of-tree driver (amzn-drivers kernel/linux/efa, what the EFA installer puts on nearly
# every real cluster), whose layout follows its own version on any kernel. The AWS versions
# where the layout changes (checked in that driver's git history, RELEASENOTES.md and
# efa_verbs.c at each release tag):
#   1.14.0  port and device counters split into ports/1/hw_counters and hw_counters
#           (before: one combined list in both, as in-tree kernels < 5.15)
#   2.5.0   + rdma_write_* (the names are registered on every device; the values are fetched
#           only with the RDMA-write capability, so they read 0 on p4d)
#   2.12.0  + alloc_mr_err, get_dma_mr_err in the device list (kernel verbs, ENABLE_KVERBS,
#           on by default in its build)
#   2.13.0  ports/1/rate shows the device's real link speed (max_link_speed_gbps)
#   2.17.0  + the five SRD counters (network stats), registered on every device
# 3.1.0 is the newest release checked (its layout is 2.17.0's); the simulator accepts any
# aws-X.Y.Z from 1.14.0 to 3.1.0.
IN_TREE = "in-tree"
AWS_LAYOUT_VERSIONS = ("1.14.0", "2.5.0", "2.12.0", "2.13.0", "2.17.0")
AWS_NEWEST = "3.1.0"
DRIVERS = (IN_TREE,) + tuple(f"aws-{v}" for v in AWS_LAYOUT_VERSIONS + (AWS_NEWEST,))
# What real clusters run: the EFA installer's driver. 2.17.0 (2025-07) is the first with
# today's layout, which the 2.17.x and 3.x releases keep.
DEFAULT_DRIVER = "aws-2.17.0"
KVERBS_DEVICE_COUNTERS = ("alloc_mr_err", "get_dma_mr_err")
_AWS_RE = re.compile(r"^aws-(\d+)\.(\d+)\.(\d+)$")

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


def aws_version(driver: str) -> Optional[Tuple[int, int, int]]:
    """The AWS driver version of a `driver` name ("aws-2.17.0" -> (2, 17, 0)); None for the
    in-tree driver. Raises SimulatorError for a name the simulator does not model."""
    if driver == IN_TREE:
        return None
    m = _AWS_RE.match(driver)
    if m is None:
        raise SimulatorError(f"unknown driver {driver!r}: use {IN_TREE} or aws-X.Y.Z "
                             f"(layouts change at {', '.join(DRIVERS[1:-1])})")
    v = (int(m.group(1)), int(m.group(2)), int(m.group(3)))
    if not _vkey(AWS_LAYOUT_VERSIONS[0]) <= v <= _vkey(AWS_NEWEST):
        raise SimulatorError(f"AWS driver {driver[4:]} is not modelled: the simulator knows "
                             f"{AWS_LAYOUT_VERSIONS[0]} to {AWS_NEWEST}")
    return v


def _vkey(version: str) -> Tuple[int, int, int]:
    a, b, c = version.split(".")
    return int(a), int(b), int(c)


def module_version(driver: str) -> Optional[str]:
    """`/sys/module/efa/version` for a driver: AWS's efa_main.c has
    MODULE_VERSION(DRV_MODULE_VERSION), "<major>.<minor>.<subminor>g" (the "g" is part of the
    string in every release); the in-tree driver has no MODULE_VERSION, so no file."""
    v = aws_version(driver)
    return None if v is None else "%d.%d.%dg" % v


def counter_layout(kernel: str, instance_type: str,
                   driver: str = IN_TREE) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
    """(port counter names, device counter names) of an EFA device, in the driver's order.

    One combined list, shown in BOTH `hw_counters/` and `ports/1/hw_counters/` (both tuples are
    then that list, device names first), before the split: kernel 5.15 in-tree, 1.14.0 in
    AWS's driver. `rdma_write_*` from kernel 6.6 / AWS 2.5.0; the five SRD names from kernel
    6.17 / AWS 2.17.0, on every instance type (the drivers' name tables are static: on Nitro
    v3 they read 0, see `supported_counters`); `alloc_mr_err get_dma_mr_err` from AWS 2.12.0
    (no in-tree kernel has them). With an AWS driver the kernel does not change the layout.
    `lifespan` is not a counter and is not listed.
    """
    version = _kernel_key(kernel)
    _instance(instance_type)
    aws = aws_version(driver)
    if aws is None:
        combined, write, srd, kverbs = version < (5, 15), version >= (6, 6), version >= (6, 17), False
    else:
        write, srd = aws >= (2, 5, 0), aws >= (2, 17, 0)
        combined, kverbs = False, aws >= (2, 12, 0)
    port: Tuple[str, ...] = _BASIC + _MESSAGES + _RDMA_READ
    if write:
        port += _RDMA_WRITE
    if srd:
        port += SRD_COUNTERS
    dev = DEVICE_COUNTERS + (KVERBS_DEVICE_COUNTERS if kverbs else ())
    if combined:
        both = dev + port
        return both, both
    return port, dev


def supported_counters(it: InstanceType, names: Sequence[str]) -> Tuple[str, ...]:
    """The names among `names` the device really fetches: the driver registers `rdma_write_*`
    everywhere but asks for them only with the RDMA-write capability, and SRD counters are
    supported on Nitro v4 and later only (AWS docs). The others read 0 and never move."""
    return tuple(n for n in names
                 if not (n in _RDMA_WRITE and not _rdma_write_capable(it))
                 and not (n in SRD_COUNTERS and not it.srd_counters))


def rate_text(kernel: str, gbps: float, driver: str = IN_TREE) -> str:
    """`ports/1/rate` as the EFA driver prints it: the real speed from kernel 6.13 in-tree and
    from 2.13.0 in AWS's driver; before that always 100 Gb/sec (4X EDR)."""
    aws = aws_version(driver)
    real = _kernel_key(kernel) >= (6, 13) if aws is None else aws >= (2, 13, 0)
    if not real or gbps <= 100:
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
    driver: str
    device_order: Tuple[str, ...]

    def device_path(self, device: str) -> str: ...

    def present_devices(self) -> List[str]: ...
