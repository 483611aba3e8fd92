"""Text renderers for this node's devices, snapshots and live rates. Pure: data in, str out."""
from __future__ import annotations

from typing import Iterable, List, Optional, Sequence

from efajob.fmt import table
from efajob.node.counters import SnapshotDelta, bytes_to_gbps, rate
from efajob.node.instances import InstanceType
from efajob.node.readings import Snapshot, natural_key
from efajob.node.sysfs import DeviceInfo


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], right: Sequence[bool]) -> str:
    return "\n".join(table(headers, rows, right, indent="")) + "\n"


def _num(v: Optional[float], fmt: str = "{:,.2f}") -> str:
    return "-" if v is None else fmt.format(v)


def render_devices(devices: Sequence[DeviceInfo], netdevs: Sequence[str], root: str) -> str:
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
        out += "SRD retransmit/connection counters: absent (Nitro v3 such as p4d, or kernel < 6.17)\n"
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


def render_top(delta: SnapshotDelta, devices: Sequence[DeviceInfo],
               itype: Optional[InstanceType]) -> str:
    """One table of per-device rates over `delta.seconds`."""
    secs = delta.seconds
    link = {d.name: (itype.gbps_per_device if itype else d.rate_gbps) for d in devices}
    rows = []
    for name in sorted(delta.devices, key=natural_key):
        c = delta.devices[name].port_counters
        tx = bytes_to_gbps(c.get("tx_bytes"), secs)
        rx = bytes_to_gbps(c.get("rx_bytes"), secs)
        lk = link.get(name)
        util = None if (lk is None or tx is None or rx is None) else 100.0 * max(tx, rx) / lk
        rows.append([
            name,
            _num(tx), _num(rx),
            _num(rate(c.get("tx_pkts"), secs), "{:,.0f}"),
            _num(rate(c.get("rx_pkts"), secs), "{:,.0f}"),
            _num(util, "{:.1f}%"),
            _num(c.get("rx_drops"), "{:,}"),
            _num(c.get("retrans_pkts"), "{:,}"),
            "reset" if delta.devices[name].resets else "",
        ])
    tot = delta.port_totals()
    rows.append([
        "TOTAL",
        _num(bytes_to_gbps(tot.get("tx_bytes"), secs)), _num(bytes_to_gbps(tot.get("rx_bytes"), secs)),
        _num(rate(tot.get("tx_pkts"), secs), "{:,.0f}"), _num(rate(tot.get("rx_pkts"), secs), "{:,.0f}"),
        "", _num(tot.get("rx_drops"), "{:,}"), _num(tot.get("retrans_pkts"), "{:,}"), "",
    ])
    head = f"efajob top: {len(delta.devices)} EFA device(s), interval {secs:.2f} s"
    if delta.vanished:
        head += f", vanished: {', '.join(delta.vanished)}"
    if delta.appeared:
        head += f", appeared: {', '.join(delta.appeared)}"
    return head + "\n" + _table(
        ["DEVICE", "TX_GBPS", "RX_GBPS", "TX_PPS", "RX_PPS", "UTIL", "RX_DROPS", "RETRANS", ""],
        rows, [False, True, True, True, True, True, True, True, False])
