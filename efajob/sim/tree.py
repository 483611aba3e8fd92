"""Simulated sysfs trees for EFA nodes: building, opening, copying (the layouts per driver and
kernel are layout.py's).

`build_node()` writes, under any directory, the part of `/sys` efajob reads on an EFA node:
`class/infiniband/<dev>` (EFA devices and, optionally, an mlx5 neighbour), `class/net/eth0`
(ENA, with its `ethtool -S` statistics as a file) and `class/net/lo`, laid out as the kernel
lays them out (class entries and `device`/`driver` are relative symlinks into `devices/` and
`bus/pci/drivers/`, so the tree has the same symlink cycles as the real one). Traffic on a
tree is traffic.py's job (`SimNode.traffic()` calls it); the public API of both is
`efajob.sim`. Facts followed: shared/notes/efa-sysfs.md; the user guide is
docs/simulator.md.

Standard library only.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

from efajob.errors import SimulatorError
from efajob.node.ethtool import ALLOWANCE_COUNTERS as ENA_ALLOWANCE_COUNTERS
from efajob.node.ethtool import render_ethtool_text
from efajob.node.instances import EFA_VENDOR, InstanceType
from efajob.sim.layout import (DEFAULT_DRIVER, IN_TREE, MARKER, NETDEV_STATS, PAYLOAD_BYTES,
                               RDMA_WR_BYTES, SEND_PERCENT, SEND_WR_BYTES, _ENA_GLOBAL_STATS,
                               _FORMAT, _MLX5_HW_COUNTERS, _MLX5_PMA_COUNTERS, _RDMAP_RE,
                               _ceil_div, _frac, _hash, _instance, _kernel_key,
                               _rdma_write_capable, _write, aws_version, counter_layout,
                               ethtool_path, module_version, rate_text, supported_counters)

from efajob.sim.traffic import Injected, _Plan, run_plans

# Faults of the tree itself, applied when it is built (`build_node(fault=...)`, `efajob
# simulate init --fault`); the traffic's faults are traffic.FAULTS.
TREE_FAULTS = ("missing-device",)


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
    # Registered but never fetched (SRD on Nitro v3; rdma_write_* above): they read 0.
    supported = set(supported_counters(it, names))
    submitted = int(uptime * (1 + _frac(seed, node, dev, "cmds"))) + 4_000
    no_completion = int(3 * _frac(seed, node, dev, "nc"))
    v.update({
        "submitted_cmds": submitted,
        "completed_cmds": submitted - no_completion,
        "cmds_err": int(4 * _frac(seed, node, dev, "cerr")),
        "no_completion_cmds": no_completion,
        "keep_alive_rcvd": uptime,
    })
    return {n: v.get(n, 0) if n in supported else 0 for n in names}


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
    driver: str = IN_TREE
    missing: Tuple[str, ...] = ()  # devices of the instance type left out (fault missing-device)

    @property
    def layout(self) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
        return counter_layout(self.kernel, self.instance_type.name, self.driver)

    def device_path(self, device: str) -> str:
        return os.path.join(self.root, "class", "infiniband", device)

    def present_devices(self) -> List[str]:
        """EFA devices currently in the tree (a vanished one is gone), in instance order."""
        return [d for d in self.device_order if os.path.isdir(self.device_path(d))]

    def counter_files(self) -> List[str]:
        """Every EFA counter file of the tree (not `lifespan`), as paths."""
        out: List[str] = []
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
               driver: str = DEFAULT_DRIVER, mlx5: bool = False, ena: bool = True,
               efa_names: bool = False, seed: int = 0, device_limit: Optional[int] = None,
               name: Optional[str] = None, fault: Optional[str] = None) -> SimNode:
    """Write a simulated node's sysfs under `root` (missing or empty) and return it.

    `driver` is `in-tree` (the layout follows `kernel`) or an AWS driver version
    (`aws-2.17.0`; layout.DRIVERS lists where the layout changes); `efa_names` uses the
    kernel's names (efa_0..) instead of rdma-core's (rdmap<bus>s<slot>); `device_limit` keeps
    only the first N devices (small fixtures); `seed` (and `name`) pick the deterministic
    starting values of the counters; `fault="missing-device"` leaves out the instance type's
    last EFA device, as on a node where one failed to attach.
    """
    it = _instance(instance_type)
    port_names, dev_names = counter_layout(kernel, instance_type, driver)
    if device_limit is not None and device_limit < 1:
        raise SimulatorError(f"device_limit must be at least 1, not {device_limit}")
    if fault is not None and fault not in TREE_FAULTS:
        raise SimulatorError(f"unknown tree fault {fault!r}: use {', '.join(TREE_FAULTS)} "
                             "(traffic faults go to traffic())")
    _check_empty(root)
    node = name or ""
    pci_names = list(it.device_names[:device_limit] if device_limit else it.device_names)
    missing: List[str] = []
    if fault == "missing-device":
        if len(pci_names) < 2:
            raise SimulatorError("fault missing-device needs at least two devices")
        missing = [pci_names.pop()]
    lifespan = "12\n" if _hash(seed, node, "hz") % 2 else "10\n"
    efa_driver = _driver_dir(root, "efa")
    names = []
    for i, pci_name in enumerate(pci_names):
        m = _RDMAP_RE.match(pci_name)
        if m is None:  # pragma: no cover - node/instances.py only has rdmap names
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
        _write(os.path.join(port, "rate"), rate_text(kernel, it.gbps_per_device, driver) + "\n")
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
    version = module_version(driver)
    if version is not None:
        # What a loaded module shows; the readers look only at `version`.
        _write(os.path.join(root, "module", "efa", "version"), version + "\n")
        _write(os.path.join(root, "module", "efa", "initstate"), "live\n")
    if mlx5:
        _build_mlx5(root, seed, node)
    if ena:
        _build_ena(root, seed, node)
    _build_lo(root, seed, node)
    meta = {
        "efajob_sim": _FORMAT, "instance_type": instance_type, "kernel": kernel, "seed": seed,
        "devices": names, "mlx5": mlx5, "ena": ena, "efa_names": efa_names,
    }
    if driver != IN_TREE:  # trees without the key (older ones, in-tree fixtures) are in-tree
        meta["driver"] = driver
    if missing:
        meta["missing"] = missing
    if name:
        meta["name"] = name
    if device_limit:
        meta["device_limit"] = device_limit
    _write(os.path.join(root, MARKER), json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return SimNode(root=root, name=name or os.path.basename(os.path.abspath(root)),
                   instance_type=it, kernel=kernel, seed=seed, device_order=tuple(names),
                   mlx5=mlx5, ena=ena, driver=driver, missing=tuple(missing))


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
        driver = str(meta.get("driver", IN_TREE))
        aws_version(driver)
        return SimNode(root=root, name=str(meta.get("name") or os.path.basename(os.path.abspath(root))),
                       instance_type=it, kernel=kernel, seed=int(meta["seed"]),
                       device_order=tuple(str(d) for d in meta["devices"]),
                       mlx5=bool(meta.get("mlx5")), ena=bool(meta.get("ena")), driver=driver,
                       missing=tuple(str(d) for d in meta.get("missing", ())))
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

