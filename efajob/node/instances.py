"""Per-instance-type facts about EFA: device names, counts, link rates, Nitro generation.

Source: AWS EC2 docs (EFA-supported instance types, network specs) as collected in
shared/notes/efa-sysfs.md. The per-type link rate is preferred over `ports/1/rate`, which
before kernel 6.13 reads "100 Gb/sec (4X EDR)" even on 200/400G cards.
"""
from __future__ import annotations

import os

from efajob.frozen import Frozen

TYPE_CHECKING = False
if TYPE_CHECKING:  # no `typing`, `re` or `dataclasses` at run time: the hooks import this
    from typing import Dict, Optional, Tuple

EFA_VENDOR = "0x1d0f"


def _rdmap(buses, slot: int = 0) -> Tuple[str, ...]:
    # rdma-core's udev rule names devices rdmap<bus>s<slot> with the PCI bus in decimal.
    return tuple(f"rdmap{b}s{slot}" for b in buses)


def _groups(*starts: int, width: int = 4) -> Tuple[int, ...]:
    return tuple(b for s in starts for b in range(s, s + width))


class InstanceType(Frozen):
    name: str
    device_names: Tuple[str, ...]
    gbps_per_device: float
    nitro: int
    pci_device_id: str

    @property
    def devices(self) -> int:
        return len(self.device_names)

    @property
    def total_gbps(self) -> float:
        return self.gbps_per_device * self.devices

    @property
    def srd_counters(self) -> bool:
        # The five SRD retransmission/connection counters exist on Nitro v4 and later only.
        return self.nitro >= 4

    @property
    def rdma_write(self) -> bool:
        # EFA RDMA write comes with Nitro v4 (p5, p5en, p6, trn1, trn2); p4d/p4de (Nitro v3) do
        # RDMA read only. The driver registers the rdma_write_* names whatever the device, but
        # fetches their values only when the device reports the RDMA-write capability
        # (efa_fill_port_stats: EFA_DEV_CAP(dev, RDMA_WRITE)), so elsewhere they read 0.
        return self.nitro >= 4


# Port counters whose files exist on types that cannot count them (they read 0 there).
SRD_COUNTERS = ("retrans_bytes", "retrans_pkts", "retrans_timeout_events",
                "unresponsive_remote_events", "impaired_remote_conn_events")
RDMA_WRITE_COUNTERS = ("rdma_write_wrs", "rdma_write_bytes", "rdma_write_wr_err",
                       "rdma_write_recv_bytes")


def unsupported_counters(itype: Optional[InstanceType]) -> Dict[str, str]:
    """{port counter: why it is not supported} on this instance type: such a counter reads 0
    whatever happens, so it must be shown as "not supported", never as a measured 0. An
    unknown type: nothing is known to be unsupported."""
    if itype is None:
        return {}
    out: Dict[str, str] = {}
    if not itype.srd_counters:
        why = f"SRD counters need Nitro v4 or later; {itype.name} is Nitro v{itype.nitro}"
        out.update((n, why) for n in SRD_COUNTERS)
    if not itype.rdma_write:
        why = f"{itype.name} (Nitro v{itype.nitro}) has no EFA RDMA write"
        out.update((n, why) for n in RDMA_WRITE_COUNTERS)
    return out


# What is confirmed and what is not (readers never rely on names, only on the vendor id):
# - names: p5/p5e (rdmap79s0..rdmap201s0) and p4d/p4de (rdmap16s27 rdmap32s27 rdmap144s27
#   rdmap160s27, slot 27: PCI 0000:10:1b.0 etc.) are real, from public fi_info/ibv_devices
#   output (notes/efa-sysfs.md). No public listing of trn1/trn1n/trn2, p5en or p6 device names
#   was found: theirs follow the same scheme with plausible bus numbers.
# - PCI device ids: the driver's table (amzn-drivers efa_main.c, and Linux's) lists exactly
#   0xefa0..0xefa3 and says nothing of instance types. The mapping below follows when AWS added
#   each id against when the types launched: 0xefa1 in 2020-07, before p4d (Nitro v3, 2020-11);
#   0xefa2 in 2022-10, with trn1 (2022-10) and before p5 (2023-07), both Nitro v4; 0xefa3 in
#   2024-07, before p5en and trn2 (2024-12, Nitro v5) and p6 (2025). So trn1/trn1n are 0xefa2
#   (not 0xefa1) and trn2 0xefa3 (not 0xefa2): inferred, not confirmed by a public lspci.
INSTANCE_TYPES: Dict[str, InstanceType] = {
    t.name: t
    for t in (
        InstanceType("p4d.24xlarge", _rdmap((16, 32, 144, 160), slot=27), 100.0, 3, "0xefa1"),
        InstanceType("p4de.24xlarge", _rdmap((16, 32, 144, 160), slot=27), 100.0, 3, "0xefa1"),
        InstanceType(
            "p5.48xlarge", _rdmap(_groups(79, 96, 113, 130, 147, 164, 181, 198)), 100.0, 4, "0xefa2"
        ),
        InstanceType(
            "p5e.48xlarge", _rdmap(_groups(79, 96, 113, 130, 147, 164, 181, 198)), 100.0, 4, "0xefa2"
        ),
        InstanceType(
            "p5en.48xlarge", _rdmap(_groups(80, 98, 116, 134, 152, 170, 188, 206, width=2)), 200.0, 5,
            "0xefa3",
        ),
        InstanceType("p6-b200.48xlarge", _rdmap((76, 98, 120, 142, 162, 184, 206, 228)), 400.0, 6, "0xefa3"),
        InstanceType("trn1.32xlarge", _rdmap((16, 32, 48, 64, 144, 160, 176, 192)), 100.0, 4, "0xefa2"),
        InstanceType("trn1n.32xlarge", _rdmap(_groups(16, 48, 144, 176)), 100.0, 4, "0xefa2"),
        InstanceType("trn2.48xlarge", _rdmap(_groups(16, 48, 144, 176)), 200.0, 5, "0xefa3"),
    )
}

# The types `efajob simulate init` offers (the list); the table above knows a few more.
SIMULATED_TYPES = (
    "p4d.24xlarge", "p5.48xlarge", "p5en.48xlarge", "p6-b200.48xlarge", "trn1n.32xlarge",
    "trn2.48xlarge",
)


def lookup(name: Optional[str]) -> Optional[InstanceType]:
    if not name:
        return None
    return INSTANCE_TYPES.get(name)


# The daemon learns the instance type from IMDSv2 when the config does not name it, and leaves
# it here for the hooks, which must never touch the network (docs/hooks.md).
INSTANCE_TYPE_FILE = "instance-type"
_TYPE_FIRST = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
_TYPE_CHARS = _TYPE_FIRST | frozenset(".-")


def is_instance_type_name(text: str) -> bool:
    """[a-z0-9][a-z0-9.-]{1,40}, the whole string."""
    return 2 <= len(text) <= 41 and text[0] in _TYPE_FIRST and not (set(text) - _TYPE_CHARS)


def read_cached_instance_type(state_dir: str) -> Optional[str]:
    """The instance type the daemon cached in `state_dir`, or None (absent or malformed)."""
    try:
        with open(os.path.join(state_dir, INSTANCE_TYPE_FILE), "rb") as f:
            text = f.read(64).decode("ascii", "replace").strip()
    except OSError:
        return None
    return text if is_instance_type_name(text) else None


def write_cached_instance_type(state_dir: str, instance_type: str) -> None:
    """Atomic (temp + rename). Raises ValueError for a malformed type, OSError on I/O."""
    if not is_instance_type_name(instance_type):
        raise ValueError(f"malformed instance type {instance_type!r}")
    os.makedirs(state_dir, exist_ok=True)
    path = os.path.join(state_dir, INSTANCE_TYPE_FILE)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(instance_type + "\n")
    os.replace(tmp, path)
