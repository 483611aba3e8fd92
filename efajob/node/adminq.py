"""What sampling costs the EFA device: admin-queue commands per read of a counter group.

Reading a `hw_counters` file makes the IB core refresh the whole group it belongs to
(drivers/infiniband/core/sysfs.c `update_hw_stats`) unless the group was refreshed less than
`lifespan` ms ago (10 by default; the cache window starts when the refresh returns). The EFA
driver's refresh of a *port* group (amzn-drivers and Linux `efa_verbs.c`
`efa_fill_port_stats`) sends one GET_STATS admin command per statistics type: basic (tx/rx,
drops), messages (send/recv), RDMA read, RDMA write (only when the device has the RDMA-write
capability), network (the SRD counters: AWS driver >= 2.17.0, kernel >= 6.17). A *device*
group's refresh (`efa_fill_device_stats`) only copies driver-side atomics: no command. Before
the split (in-tree kernel < 5.15, AWS driver < 1.14.0) one function fills a combined list in
both directories and sends the basic, messages and RDMA read commands for each of the two
groups.

So a sample that reads each group's files back to back (efajob's Sampler does: one directory's
descriptors are contiguous) costs exactly one refresh per group. Pure arithmetic, no I/O;
bench/adminq.py measures the read time and prints these figures for a simulated node.
"""
from __future__ import annotations

from typing import Sequence

# The first counter each GET_STATS type fills: a group holding it pays for that command.
_BASIC, _MESSAGES, _RDMA_READ = "tx_bytes", "send_bytes", "rdma_read_bytes"
_RDMA_WRITE, _NETWORK = "rdma_write_bytes", "retrans_pkts"
_DEVICE_ONLY = "submitted_cmds"  # a device-level name: in a port group only before the split


def commands_per_refresh(names: Sequence[str], rdma_write_capable: bool) -> int:
    """Admin commands one refresh of a group with these counter names sends.

    A device-level group (no traffic counters) sends none; a port group (or a combined list)
    one per statistics type it holds, RDMA write only on a device that has the capability
    (the driver registers the names everywhere but asks only then)."""
    present = set(names)
    n = sum(1 for k in (_BASIC, _MESSAGES, _RDMA_READ) if k in present)
    if _RDMA_WRITE in present and rdma_write_capable:
        n += 1
    if _NETWORK in present:
        n += 1
    return n


def commands_per_second(devices: int, port_cmds: int, device_cmds: int, interval: float,
                        device_counter_interval: float) -> float:
    """Admin commands a second for a daemon that reads every port group each `interval` s and
    every device group each `device_counter_interval` s (0: each sample, as the hooks do),
    with each group read inside one refresh."""
    if interval <= 0:
        raise ValueError(f"interval must be > 0, not {interval}")
    dev_every = max(interval, device_counter_interval)
    return devices * (port_cmds / interval + device_cmds / dev_every)


def is_combined(port_names: Sequence[str]) -> bool:
    """A combined list (the device names shown in the port group too): before the split."""
    return _DEVICE_ONLY in port_names
