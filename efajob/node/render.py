"""Text renderers for this node's devices and snapshots (`top`: topview.py). Pure: data in, str out."""
from __future__ import annotations

from typing import Iterable, List, Optional, Sequence

from efajob.fmt import table
from efajob.node.readings import Snapshot, natural_key
from efajob.node.sysfs import DeviceInfo


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], right: Sequence[bool]) -> str:
    return "\n".join(table(headers, rows, right, indent="")) + "\n"


def render_driver(version: Optional[str]) -> str:
    """One line naming the EFA driver (sysfs.read_efa_driver_version's answer)."""
    if version is None:
        return "EFA driver: in-tree (no module/efa/version)"
    return f"EFA driver: AWS out-of-tree {version} (module/efa/version)"


def render_devices(devices: Sequence[DeviceInfo], netdevs: Sequence[str], root: str,
                   driver: Optional[str] = None) -> str:
    """`efajob devices` as text; `driver` is the driver version (None: in-tree)."""
    if not devices:
        return (f"No EFA devices under {root}/class/infiniband "
                "(EFA is told by PCI vendor 0x1d0f; other RDMA devices are not listed).\n"
                + (f"Network interfaces sampled beside EFA: {', '.join(netdevs)}\n" if netdevs else ""))
    rows = []
    for d in devices:
        rows.append([
            d.name,
            d.device_id or "-",
            ",".join(str(p) for p in d.ports) or "-",
            d.rate or "-",
            d.state or "-",
            str(len(d.port_counter_names)),
            str(len(d.device_counter_names)),
        ])
    out = _table(["DEVICE", "PCI_ID", "PORTS", "RATE", "STATE", "PORT_CTRS", "DEV_CTRS"], rows,
                 [False, False, False, False, False, True, True])
    names = sorted({n for d in devices for n in d.port_counter_names})
    srd = [n for n in ("retrans_pkts", "impaired_remote_conn_events") if n in names]
    out += f"\n{len(devices)} EFA device(s). Port counters present: {', '.join(names) or 'none'}\n"
    if not srd:
        out += ("SRD retransmit/connection counters: absent (in-tree driver on kernel < 6.17, "
                "or AWS driver < 2.17.0)\n")
    out += render_driver(driver) + "\n"
    if netdevs:
        out += f"Network interfaces sampled beside EFA: {', '.join(netdevs)}\n"
    return out


def render_snapshot(snap: Snapshot) -> str:
    lines: List[str] = []
    for name in sorted(snap.devices, key=natural_key):
        d = snap.devices[name]
        lines.append(f"{name} port {d.port}")
        for k in sorted(d.port_counters):
            lines.append(f"  {k:<30} {d.port_counters[k]:>22}")
        if d.device_counters:
            lines.append(f"{name} device")
            for k in sorted(d.device_counters):
                lines.append(f"  {k:<30} {d.device_counters[k]:>22}")
    for ifname in sorted(snap.net):
        lines.append(f"{ifname} (netdev statistics)")
        for k in sorted(snap.net[ifname]):
            lines.append(f"  {k:<30} {snap.net[ifname][k]:>22}")
    if not lines:
        lines.append("No EFA devices found.")
    return "\n".join(lines) + "\n"
