"""`efajob prometheus targets`: the node exporters as a Prometheus file_sd file, from Slurm's
node list (efajob/deploy/promtargets.py). Scrape config and rules: slurm/prometheus/."""
from __future__ import annotations

import os
from typing import Optional

import click

from efajob.cli.common import config_option, get_config, handle_errors


@click.group("prometheus")
def prometheus() -> None:
    """Prometheus: the scrape targets of the node exporters (docs/prometheus.md)."""


@prometheus.command()
@config_option
@click.option("--out", "out", type=click.Path(dir_okay=False), default=None,
              help="Write the file_sd JSON here (atomically: Prometheus may read it at any "
              "time) instead of printing it.")
@click.option("--port", type=click.IntRange(min=1, max=65535), default=None,
              help="The exporters' port (default: the config's [prometheus] port).")
@click.option("--partition", default="", help="Only the nodes of this Slurm partition.")
@handle_errors
def targets(config_path: Optional[str], out: Optional[str], port: Optional[int],
            partition: str) -> None:
    """Every running Slurm node as a scrape target (file_sd JSON), from `sinfo`.

    Nodes powered off or powering up or down are left out; down nodes stay (so the exporter-
    down alert fires). Run it from cron on the head node to follow dynamic nodes.
    """
    from efajob.deploy.promtargets import build_file_sd, read_sinfo_nodes, render_file_sd

    port = port or get_config(config_path).prometheus.port
    nodes = read_sinfo_nodes(partition)
    text = render_file_sd(build_file_sd(nodes, port))
    if out is None:
        click.echo(text, nl=False)
        return
    from efajob.errors import EfajobError
    from efajob.hooks.runfiles import atomic_write

    try:
        atomic_write(os.path.abspath(out), text.encode(), mode=0o644)
    except OSError as e:
        raise EfajobError(f"cannot write {out}: {e.strerror}") from None
    click.echo(f"wrote {out}: {len(nodes)} target(s)")
