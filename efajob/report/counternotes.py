"""What the finding rules say about counters: what each driver error counter means (read in
the driver source) and the note a finding gets when its counts come from a device that reset.
Pure text helpers for report/findings.py.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, List

if TYPE_CHECKING:  # pragma: no cover
    from efajob.report.model import NodeReport


# What each device-level error counter counts, from the driver source (amzn-drivers
# kernel/linux/efa/src, the same in the kernel's drivers/infiniband/hw/efa).
DEVICE_ERROR_MEANINGS = {
    "no_completion_cmds": (
        "admin commands the device never completed within the admin timeout; the driver then "
        "closes the device's admin queue, so every later admin command on it fails (creating "
        "queue pairs, memory regions, address handles, reading port counters) until the "
        "driver is reloaded or the device reset"),
    "cmds_err": (
        "admin commands that failed: refused because the admin queue was closed, timed out, or "
        "answered with an error status by the device (every no_completion_cmds counts here "
        "too, and so does each counter read while the queue is closed)"),
    "create_qp_err": "queue pairs an application could not create",
    "create_cq_err": "completion queues an application could not create",
    "create_ah_err": "address handles (peer addresses) an application could not create",
    "alloc_pd_err": "protection domains an application could not allocate",
    "reg_mr_err": ("memory registrations that failed: pinning the memory (locked-memory "
                   "limit, GPU memory through dma-buf or peermem) or the device's command"),
    "alloc_ucontext_err": "processes that could not open the device (user context)",
    "mmap_err": "mappings of device queues into a process that failed",
    "alloc_mr_err": "memory regions kernel users (kernel verbs) could not allocate",
    "get_dma_mr_err": "DMA memory regions kernel users (kernel verbs) could not get",
}


def reset_note(devices: List[str]) -> str:
    """The sentence a finding gets when its counts come from devices whose counters reset."""
    if not devices:
        return ""
    return (f" Counters of {', '.join(devices)} were reset during the job (see counter_reset): "
            "these counts are what the device counted after its reset, which may be the reset's "
            "own recovery rather than the job's traffic.")


def reset_devices(n: "NodeReport", counters: Iterable[str], device: bool = False) -> List[str]:
    """Devices of `n` on which one of `counters` reset (device-level names when `device`)."""
    want = {("device:" + c) if device else c for c in counters}
    return [d.name for d in n.devices if want & set(d.resets)]


def wr_kind(name: str) -> str:
    # rdma_read_wr_err -> "RDMA read"; a future foo_wr_err -> "foo"
    base = name[:-len("_wr_err")]
    return base.replace("rdma_", "RDMA ").replace("_", " ")
