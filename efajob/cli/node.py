"""This node's commands: `efajob devices`, `snapshot` (sysfs, no daemon needed), `daemon` and
`status`; `top` has a module of its own (top.py)."""
from __future__ import annotations

import json
import sys
from typing import Optional

import click

from efajob.cli.common import (config_option, format_option, get_config, handle_errors,
                               node_option, sysfs_option)


@click.command()
@config_option
@node_option
@click.option("--once", is_flag=True, help="Sample one interval, store it, publish the status "
              "file, deliver the outbox once, and exit.")
@handle_errors
def daemon(config_path: Optional[str], node: Optional[str], once: bool) -> None:
    """Run the node daemon: sample every `interval`, keep the local baseline, serve metrics.

    SIGTERM flushes and exits 0; SIGHUP reloads the config. Under systemd (Type=notify) it
    reports READY and pings the watchdog. See docs/daemon.md.
    """
    from efajob.daemon.loop import Daemon, configure_logging

    cfg = get_config(config_path, node=node)
    configure_logging(cfg)
    d = Daemon(cfg, load_config=lambda: get_config(config_path, node=node), worker=not once,
               manage_logging=True)
    d.install_signal_handlers()
    d.start()
    try:
        if once:
            d.run(max_ticks=2)  # two readings one interval apart: one stored row
            d.run_worker_once()
        else:
            d.run()
    finally:
        d.close()


@click.command()
@config_option
@node_option
@format_option("text", "json")
@handle_errors
def status(config_path: Optional[str], node: Optional[str], fmt: str) -> None:
    """This node: daemon health, devices, live rates and active jobs.

    Reads the daemon's local store (read-only, safe while it runs), sysfs and the run dir.
    Exit codes, for health checks: 0 healthy; 1 degraded (the daemon samples, but EFA devices
    are missing or records cannot reach the job store); 2 not running (no daemon, or no
    samples) or stale (the newest sample is older than three intervals).
    """
    from efajob.daemon.nodestatus import STATE_EXIT, read_local_status, render_status

    doc = read_local_status(get_config(config_path, node=node))
    if fmt == "json":
        click.echo(json.dumps(doc, indent=2, sort_keys=True))
    else:
        click.echo(render_status(doc), nl=False)
    sys.exit(STATE_EXIT[doc["state"]])


# -- this node's devices and counters --------------------------------------------------------
@click.command()
@sysfs_option
@config_option
@format_option("text", "json")
@handle_errors
def devices(sysfs_root: Optional[str], config_path: Optional[str], fmt: str) -> None:
    """List this node's EFA devices: link rate, state and which counters are present.

    Other RDMA devices (mlx5) are left out: EFA is told by PCI vendor 0x1d0f.
    """
    from efajob.node.render import render_devices
    from efajob.node.sysfs import discover_devices, discover_netdevs, read_efa_driver_version
    from efajob.errors import SysfsError
    import os

    cfg = get_config(config_path, sysfs_root=sysfs_root)
    if not os.path.isdir(cfg.sysfs_root):
        raise SysfsError(f"sysfs root {cfg.sysfs_root!r} is not a directory")
    devs = discover_devices(cfg.sysfs_root)
    nets = discover_netdevs(cfg.sysfs_root)
    driver = read_efa_driver_version(cfg.sysfs_root)
    if fmt == "json":
        click.echo(json.dumps({"sysfs_root": cfg.sysfs_root, "devices": [d.to_dict() for d in devs],
                               "netdevs": nets, "efa_driver_version": driver}, indent=2))
    else:
        click.echo(render_devices(devs, nets, cfg.sysfs_root, driver), nl=False)


@click.command()
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
    from efajob.node.render import render_snapshot
    from efajob.node.ethtool import ethtool_reader_from_config
    from efajob.node.sysfs import read_snapshot

    cfg = get_config(config_path, sysfs_root=sysfs_root)
    snap = read_snapshot(cfg.sysfs_root, include_net=not no_net,
                         ethtool=None if no_net else ethtool_reader_from_config(cfg))
    if fmt == "json":
        d = snap.to_dict()
        d["sysfs_root"] = cfg.sysfs_root
        click.echo(json.dumps(d, indent=2))
    else:
        click.echo(render_snapshot(snap), nl=False)
