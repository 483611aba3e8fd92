"""The `efajob` command. The only place that prints and chooses exit codes (library raises).

Exit codes (docs/cli.md): 0 ok, 1 unexpected error, 2 usage or config error, 3 sysfs root
unusable, 4 store or record error, 5 job not found, 6 ambiguous job, 7 Slurm error,
8 sink error, 9 simulator error, 130 interrupted.
"""
from __future__ import annotations

import json
import sys
import time
from typing import Optional

import click

from . import __version__
from .cli_common import config_option, format_option, get_config, handle_errors, sysfs_option

@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="efajob")
def main() -> None:
    """efajob: exact, job-scoped EFA network accounting for Slurm clusters on AWS.

    Every Slurm job gets a per-node, per-device account of its EFA traffic (through the
    Prolog/Epilog hooks `efajob-hook`), a node daemon keeps the baseline, and `efajob report`
    says what went wrong. Start with `efajob demo`, or `efajob devices` on an EFA node.
    """


# -- this node's devices and counters --------------------------------------------------------
@main.command()
@sysfs_option
@config_option
@format_option("text", "json")
@handle_errors
def devices(sysfs_root: Optional[str], config_path: Optional[str], fmt: str) -> None:
    """List this node's EFA devices: link rate, state and which counters are present.

    Other RDMA devices (mlx5) are left out: EFA is told by PCI vendor 0x1d0f.
    """
    from .render_node import render_devices
    from .sysfs import discover_devices, discover_netdevs
    from .errors import SysfsError
    import os

    cfg = get_config(config_path, sysfs_root=sysfs_root)
    if not os.path.isdir(cfg.sysfs_root):
        raise SysfsError(f"sysfs root {cfg.sysfs_root!r} is not a directory")
    devs = discover_devices(cfg.sysfs_root)
    nets = discover_netdevs(cfg.sysfs_root)
    if fmt == "json":
        click.echo(json.dumps({"sysfs_root": cfg.sysfs_root, "devices": [d.to_dict() for d in devs],
                               "netdevs": nets}, indent=2))
    else:
        click.echo(render_devices(devs, nets, cfg.sysfs_root), nl=False)


@main.command()
@sysfs_option
@config_option
@format_option("text", "json")
@click.option("--no-net", is_flag=True, help="Leave out ENA/netdev statistics.")
@handle_errors
def snapshot(sysfs_root: Optional[str], config_path: Optional[str], fmt: str, no_net: bool) -> None:
    """One reading of every EFA counter on this node (and ENA netdev statistics).

    JSON: {"devices": [{"name", "port", "port_counters", "device_counters"}], "net", "mono",
    "wall"}. A counter that is missing, unreadable or garbage is a missing key, never 0.
    `net` holds each ENA interface's sysfs statistics and, where the driver has them, its
    allowance counters (`ethtool -S` names, read with the ethtool ioctl).
    """
    from .render_node import render_snapshot
    from .ethtool import ethtool_reader_from_config
    from .sysfs import read_snapshot

    cfg = get_config(config_path, sysfs_root=sysfs_root)
    snap = read_snapshot(cfg.sysfs_root, include_net=not no_net,
                         ethtool=None if no_net else ethtool_reader_from_config(cfg))
    if fmt == "json":
        d = snap.to_dict()
        d["sysfs_root"] = cfg.sysfs_root
        click.echo(json.dumps(d, indent=2))
    else:
        click.echo(render_snapshot(snap), nl=False)


@main.command()
@sysfs_option
@config_option
@click.option("--interval", type=click.FloatRange(min=0.05), default=1.0, show_default=True,
              help="Seconds between readings.")
@click.option("--count", type=click.IntRange(min=1), default=None,
              help="Stop after this many tables (default: until Ctrl-C).")
@click.option("--no-clear", is_flag=True, help="Do not clear the screen between tables.")
@handle_errors
def top(sysfs_root: Optional[str], config_path: Optional[str], interval: float,
        count: Optional[int], no_clear: bool) -> None:
    """Live per-device rates: Gbps, packets/s, drops and retransmits, refreshed every interval."""
    from .counters import diff_snapshots
    from .ethtool import ethtool_reader_from_config
    from .instances import lookup
    from .render_node import render_top
    from .sysfs import Sampler

    cfg = get_config(config_path, sysfs_root=sysfs_root)
    itype = lookup(cfg.instance_type)
    clear = sys.stdout.isatty() and not no_clear
    with Sampler(cfg.sysfs_root, rediscover_interval=cfg.rediscover_interval,
                 ethtool=ethtool_reader_from_config(cfg)) as sampler:
        prev = sampler.sample()
        shown = 0
        next_at = prev.mono + interval
        try:
            while count is None or shown < count:
                time.sleep(max(0.0, next_at - time.monotonic()))
                next_at += interval
                cur = sampler.sample()
                table = render_top(diff_snapshots(prev, cur), sampler.devices, itype)
                if clear:
                    click.echo("\x1b[H\x1b[2J", nl=False)
                click.echo(table, nl=False)
                if not clear:
                    click.echo("")
                prev = cur
                shown += 1
        except KeyboardInterrupt:
            pass


def _register() -> None:
    """Command groups that live in their own modules."""
    from .cli_simulate import simulate

    main.add_command(simulate)
    from .cli_node import daemon, install, status

    main.add_command(daemon)
    main.add_command(status)
    main.add_command(install)
    from .cli_hooks import install_hooks

    install.add_command(install_hooks)
    from .cli_report import demo, jobs, report

    main.add_command(report)
    main.add_command(jobs)
    main.add_command(demo)
    from .cli_cloudwatch import cloudwatch

    main.add_command(cloudwatch)
    from .cli_dashboard import dashboard

    main.add_command(dashboard)


_register()

if __name__ == "__main__":  # pragma: no cover
    main()
