"""`efajob simulate`: build simulated EFA sysfs trees and drive traffic through them.

The main CLI adds this group (`from efajob.cli.simulate import simulate`); `efajob.cli.main`'s
`handle_errors` turns the `SimulatorError`s raised here into `error: <message>` and exit code 9.
"""
from __future__ import annotations

import functools
import json
import os
from typing import Any, Callable, Dict, List, Optional

import click

from efajob import sim
from efajob.errors import SimulatorError
from efajob.node.instances import SIMULATED_TYPES


def _handle_errors(fn: Callable) -> Callable:
    # efajob.cli.main imports this module to register the group: importing it here at module level
    # would be circular when this module is imported first, so look it up at call time.
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from efajob.cli.common import handle_errors

        return handle_errors(fn)(*args, **kwargs)

    return wrapper


@click.group(name="simulate")
def simulate() -> None:
    """Simulated EFA nodes for tests, demos and development without EFA hardware.

    `init` writes a fake /sys tree (EFA devices, counters, ENA) that efajob's readers cannot
    tell from the kernel's; `traffic` then advances its counters and prints exactly what it
    injected. Point any efajob command at the tree with its sysfs-root option.
    """


@simulate.command()
@click.option("--instance-type", type=click.Choice(SIMULATED_TYPES), default="p5.48xlarge",
              show_default=True, help="EC2 instance type: sets the number, names, PCI id and link "
              "rate of the EFA devices and whether SRD counters exist (Nitro v4+).")
@click.option("--kernel", type=click.Choice(sim.KERNELS), default="6.17", show_default=True,
              help="Kernel whose counter layout the in-tree driver follows: 5.10 (one combined "
              "list in both hw_counters dirs), 5.15 (split), 6.6 (+rdma_write_*), 6.17 (+SRD "
              "counters; real link rate from 6.13).")
@click.option("--driver", callback=lambda _ctx, _param, value: _check_driver(value),
              default=sim.DEFAULT_DRIVER, show_default=True, metavar="in-tree|aws-X.Y.Z",
              help="EFA driver: in-tree (follows --kernel) or AWS's out-of-tree driver, whose "
              "layout follows its version on any kernel: aws-1.14.0 (split), aws-2.5.0 "
              "(+rdma_write_*), aws-2.12.0 (+alloc_mr_err, get_dma_mr_err), aws-2.13.0 (real "
              "link rate), aws-2.17.0 (+SRD counters), up to aws-3.1.0. AWS's driver also "
              "shows module/efa/version.")
@click.option("--root", "root", required=True, type=click.Path(file_okay=False),
              help="Directory to build into (missing or empty). It plays the role of /sys.")
@click.option("--nodes", type=click.IntRange(min=1), default=None,
              help="Build a cluster of N nodes as DIR/n1 .. DIR/nN instead of one node in DIR.")
@click.option("--mlx5", is_flag=True, help="Add an mlx5_0 ConnectX neighbour (not EFA: readers "
              "must skip it).")
@click.option("--no-ena", "no_ena", is_flag=True, help="Leave out the ENA interface eth0.")
@click.option("--efa-names", is_flag=True, help="Name devices as the kernel does (efa_0, efa_1, "
              "..) instead of rdma-core's udev names (rdmap79s0, ..).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the deterministic starting counter values.")
@click.option("--fault", "tree_fault", type=click.Choice(sim.TREE_FAULTS), default=None,
              help="Build a faulty node: missing-device leaves out the instance type's last EFA "
              "device (one fewer than the type has).")
@click.option("--force", is_flag=True, help="Replace DIR if it already holds a simulated tree "
              "(never deletes anything else).")
@_handle_errors
def init(instance_type: str, kernel: str, driver: str, root: str, nodes: Optional[int], mlx5: bool,
         no_ena: bool, efa_names: bool, seed: int, tree_fault: Optional[str], force: bool) -> None:
    """Build a simulated node (or --nodes N of them) under --root."""
    if force and os.path.exists(os.path.join(root, sim.MARKER)):
        sim.remove_tree(root)
    kw: Dict[str, Any] = dict(instance_type=instance_type, kernel=kernel, driver=driver,
                              mlx5=mlx5, ena=not no_ena, efa_names=efa_names, seed=seed,
                              fault=tree_fault)
    if nodes is None:
        built = {"": sim.build_node(root, **kw)}
    else:
        built = sim.build_cluster(root, nodes, **kw)
    for node in built.values():
        click.echo(render_node_line(node))


def _check_driver(value: str) -> str:
    try:
        sim.aws_version(value)
    except SimulatorError as e:
        raise click.BadParameter(str(e)) from None
    return value


def render_node_line(node: sim.SimNode) -> str:
    devs = node.present_devices()
    span = devs[0] if len(devs) == 1 else f"{devs[0]}..{devs[-1]}"
    extra = []
    if node.mlx5:
        extra.append("+mlx5_0")
    extra.append("+eth0" if node.ena else "no ENA")
    if node.missing:
        extra.append(f"missing {', '.join(node.missing)}")
    return (f"{node.root}: {node.instance_type.name} kernel {node.kernel} driver {node.driver}, "
            f"{len(devs)} EFA devices ({span}), {len(node.counter_files())} counter files, "
            f"{' '.join(extra)}")


def _parse_devices(text: Optional[str]) -> Optional[List[str]]:
    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise click.UsageError("--devices needs at least one device name or index")
    return items


@simulate.command()
@click.option("--root", "root", required=True, type=click.Path(file_okay=False),
              help="A simulated node (built by `init`) or a cluster root (then every node gets "
              "the same traffic).")
@click.option("--tx-gbps", type=click.FloatRange(min=0), required=True,
              help="Node-wide EFA send rate in Gbit/s (1e9 bits), spread evenly over the devices.")
@click.option("--rx-gbps", type=click.FloatRange(min=0), required=True,
              help="Node-wide EFA receive rate in Gbit/s.")
@click.option("--seconds", type=click.FloatRange(min=0, min_open=True), required=True,
              help="Duration of the simulated traffic.")
@click.option("--pattern", type=click.Choice(sim.PATTERNS), default="steady", show_default=True,
              help="Shape over time (matters with --realtime; totals are the same): steady, "
              "bursty (on/off phases), allreduce (tx and rx together, with compute gaps).")
@click.option("--devices", "devices", default=None, metavar="A,B",
              help="Comma-separated device names or indexes (instance order) to carry the traffic; "
              "default all.")
@click.option("--fault", type=click.Choice(sim.FAULTS), default=None,
              help="Inject a fault: drops (rx_drops rise), retrans (SRD retransmissions), impaired "
              "(remote connection events), reset (one device's counters go down), dead-device "
              "(first device moves nothing), vanish (last device disappears), garbage (a counter "
              "file becomes unparsable), ena-allowance (eth0's bw_out/pps allowance counters "
              "rise in the tree's ethtool file), wr-errors (rdma_read_wr_err and "
              "rdma_write_wr_err rise on the first device), admin-errors (cmds_err and "
              "no_completion_cmds rise on the first device), missing-device (the node's last "
              "device is removed before the traffic).")
@click.option("--ena-tx-gbps", type=click.FloatRange(min=0), default=0.0,
              help="ENA (eth0) send rate in Gbit/s: TCP traffic, e.g. NCCL fallen back to sockets.")
@click.option("--ena-rx-gbps", type=click.FloatRange(min=0), default=0.0,
              help="ENA (eth0) receive rate in Gbit/s.")
@click.option("--realtime", is_flag=True, help="Take --seconds of wall time, moving the counters "
              "every --step seconds (for live tools and the daemon); default: write the end "
              "state at once.")
@click.option("--step", type=click.FloatRange(min=0, min_open=True), default=1.0,
              show_default=True, help="Seconds between counter updates with --realtime.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the fault details (reset values).")
@click.option("--format", "fmt", type=click.Choice(("text", "json")), default="text",
              show_default=True, help="json prints Injected.to_dict() (per node for a cluster).")
@_handle_errors
def traffic(root: str, tx_gbps: float, rx_gbps: float, seconds: float, pattern: str,
            devices: Optional[str], fault: Optional[str], ena_tx_gbps: float, ena_rx_gbps: float,
            realtime: bool, step: float, seed: int, fmt: str) -> None:
    """Advance the counters of a simulated tree and print what was injected."""
    nodes = sim.open_tree(root)
    cluster = _is_cluster(root)
    injected = sim.cluster_traffic(
        nodes, tx_gbps, rx_gbps, seconds, realtime=realtime, pattern=pattern,
        devices=_parse_devices(devices), fault=fault, ena_tx_gbps=ena_tx_gbps,
        ena_rx_gbps=ena_rx_gbps, step=step, seed=seed)
    if fmt == "json":
        if cluster:
            out = {n: i.to_dict() for n, i in injected.items()}
        else:
            out = next(iter(injected.values())).to_dict()
        click.echo(json.dumps(out, indent=2))
        return
    click.echo("\n".join(render_injected(i, nodes[n]) for n, i in injected.items()), nl=False)


def _is_cluster(root: str) -> bool:
    try:
        with open(os.path.join(root, sim.MARKER)) as f:
            return "cluster" in json.load(f)
    except (OSError, ValueError):  # open_tree() has already reported a bad root
        raise SimulatorError(f"{root} is not a simulated tree") from None


def render_injected(inj: sim.Injected, node: sim.SimNode) -> str:
    """Human summary of an Injected: nonzero totals with their rate, then faults and notes."""
    lines = [f"{inj.node}: {inj.seconds:g} s of {inj.pattern} traffic"
             + (f", fault {inj.fault}" if inj.fault else "")
             + f" ({node.instance_type.name}, kernel {node.kernel}, driver {node.driver}, "
             f"{len(inj.devices)} devices)"]
    width = max([len(k) for k in inj.totals] + [8])
    for k, v in inj.totals.items():
        if not v:
            continue
        rate = f"  {v * 8 / inj.seconds / 1e9:10.3f} Gbps" if k.endswith("bytes") else ""
        lines.append(f"  {k:<{width}} {v:>18,}{rate}")
    for ifname, stats in inj.ena.items():
        for k, v in stats.items():
            if v:
                lines.append(f"  {ifname + ' ' + k:<{width}} {v:>18,}")
    rows: Dict[str, List[str]] = {"reset": inj.resets, "vanished": inj.vanished,
                                  "garbage": inj.garbage, "missing": inj.missing}
    for label, items in rows.items():
        if items:
            lines.append(f"  {label}: {', '.join(items)}")
    for n in inj.notes:
        lines.append(f"  note: {n}")
    return "\n".join(lines) + "\n"
