"""`efajob nodes`: every node ranked by suspicion across its jobs (efajob/fabric/, docs/fabric.md)."""
from __future__ import annotations

import time
from typing import Optional

import click

from efajob.cli.common import config_option, format_option, get_config, handle_errors
from efajob.store.watchdog import call_watched


def _warn(msg: str) -> None:
    click.echo(f"warning: {msg}", err=True)


@click.command()
@click.option("--since", default="7d", show_default=True,
              help="Only job runs that ended after: 6h, 7d, 2024-05-01, epoch.")
@format_option("text", "json", "csv")
@click.option("--limit", "-n", type=click.IntRange(min=1), default=None,
              help="Show the first N nodes of the ranking (default: all).")
@click.option("--no-index", is_flag=True, help="Scan the store even when the job index exists.")
@click.option("--no-baseline", is_flag=True, help="Leave out what the nodes' daemons see now "
              "(their status files).")
@click.option("--store", type=click.Path(file_okay=False),
              help="Job store directory (default: config `store`).")
@click.option("--cluster", help="Only this cluster's nodes (default: every cluster in the store).")
@config_option
@handle_errors
def nodes(since: str, fmt: str, limit: Optional[int], no_index: bool, no_baseline: bool,
          store: Optional[str], cluster: Optional[str], config_path: Optional[str]) -> None:
    """Every node ranked by suspicion: how often its jobs' reports named it (straggler, idle
    device, rx drops, retransmits, errors, device missing) against the cluster's rate, with a
    confidence that grows with the jobs it ran, and what its daemon sees now.

    A node is a SUSPECT at confidence 0.95 that its rate in some kind of trouble is at least
    twice the cluster's (one bad job never makes a suspect). Evidence: the job ids. Read from
    the job index (`efajob index update`) when there is one, else by scanning the store.
    Exit 0 whatever the ranking.
    """
    from efajob.fabric.gather import gather
    from efajob.fabric.render import render_csv, render_json, render_text
    from efajob.fabric.score import rank_history
    from efajob.store.reader import parse_since

    cfg = get_config(config_path, store=store)
    now = time.time()
    t = parse_since(since, now)
    history, bases, source = call_watched(
        lambda: gather(cfg, since=t, cluster=cluster, now=now, use_index=not no_index,
                       baseline=not no_baseline, warn=_warn),
        store=cfg.store, timeout=cfg.store_timeout)
    ranking = rank_history(history, bases)
    if fmt == "json":
        text = render_json(ranking, source=source, since=t, limit=limit)
    elif fmt == "csv":
        text = render_csv(ranking, limit=limit)
    else:
        multi = len({n.cluster for n in ranking.nodes}) > 1
        text = render_text(ranking, source=source, since=t, limit=limit, cluster_column=multi)
    click.echo(text, nl=False)


@click.command("check-node", context_settings={"ignore_unknown_options": True,
                                               "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def check_node(args) -> None:
    """Health check of this node's EFA devices for Slurm's HealthCheckProgram or NHC (the
    same as `efajob-check-node`, which starts faster: use that one in HealthCheckProgram).

    Exit 0 silent when fit; 1 with one line `efajob: <reason>` when a device is missing,
    erroring, or idle in jobs while its siblings moved traffic; 2 usage or config error.
    Options: --drain (print the scontrol drain line), --run (with --drain: run it; never
    from a Prolog/Epilog), --node, --window SECONDS, --sysfs-root, --config, -v. `--help`
    lists them.
    """
    import sys

    from efajob.cli.checknode import main

    sys.exit(main(list(args)))
