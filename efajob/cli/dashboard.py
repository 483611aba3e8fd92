"""`efajob dashboard serve|build`: the head node's web page of every node and job.

The library does the work (dashboard/model.py builds the model, dashboard/page.py the page,
dashboard/server.py reads the store and serves); this module picks options and logs.
"""
from __future__ import annotations

import logging
import time
from typing import Optional

import click

from efajob.cli.common import config_option, get_config, handle_errors, setup_logging

store_option = click.option("--store", type=click.Path(file_okay=False),
                            help="Job store directory (default: config `store`).")
cluster_option = click.option("--cluster", help="Only this cluster of the store (default: every "
                              "cluster in it).")
limit_option = click.option("--limit", "-n", type=click.IntRange(min=0, max=1000), default=20,
                            show_default=True, help="Recent jobs shown.")


@click.group()
def dashboard() -> None:
    """The head-node dashboard: every node's EFA traffic, running and recent jobs.

    Reads the job store the node daemons write to (node status files and job records);
    read-only. `serve` answers on 127.0.0.1 (reach it through an SSH tunnel); `build` writes
    the same page to a file.
    """


def _check_cluster(cluster: Optional[str]) -> None:
    if cluster is not None:
        from efajob.config import validate_name

        validate_name("cluster", cluster)


@dashboard.command()
@config_option
@store_option
@cluster_option
@click.option("--bind", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but loopback exposes job and user names "
              "without authentication.")
@click.option("--port", type=click.IntRange(min=0, max=65535), default=9815, show_default=True,
              help="TCP port (0: any free port, printed at start).")
@click.option("--refresh", type=click.IntRange(min=0, max=3600), default=10, show_default=True,
              help="Seconds between page reloads (0: never).")
@limit_option
@click.option("--slurm/--no-slurm", default=True, show_default=True,
              help="Ask Slurm, when it answers: job report headers (/job/<id>) and its node "
              "list (sinfo, every 30 s: nodes without efajob, powered-down cloud nodes).")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@handle_errors
def serve(config_path: Optional[str], store: Optional[str], cluster: Optional[str], bind: str,
          port: int, refresh: int, limit: int, slurm: bool, verbose: bool) -> None:
    """Serve the dashboard over HTTP until SIGTERM or Ctrl-C.

    GET / (the page; its query string is the node table's view), /node/<cluster>/<host>,
    /jobs/<cluster>/<key>, /api/nodes, /api/problems, /api/node/..., /api/job/... and
    /api/jobs (JSON), /job/<jobid> (a job's HTML report), /healthz. Other paths 404, other
    methods 405. One log line per request on stderr.
    """
    from efajob.dashboard.server import Collector, DashboardServer, is_loopback, run

    setup_logging(verbose=verbose)
    log = logging.getLogger("efajob.dashboard")
    cfg = get_config(config_path, store=store)
    _check_cluster(cluster)
    collector = Collector(cfg, cluster=cluster, limit=limit, use_slurm=slurm,
                          ttl=min(2.0, refresh or 2.0))
    server = DashboardServer(bind, port, collector, refresh=refresh)
    if not is_loopback(bind):
        log.warning("listening on %s: anyone who can reach it sees job and user names "
                    "(no authentication)", bind)
    log.info("dashboard on %s (store %s, %s)", server.url, cfg.store,
             f"cluster {cluster}" if cluster else "every cluster")
    run(server)


@dashboard.command()
@config_option
@store_option
@cluster_option
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True,
              help="Write the page to FILE (replaced atomically: safe to serve while rebuilt).")
@click.option("--refresh", type=click.IntRange(min=0, max=3600), default=0, show_default=True,
              help="Seconds between reloads in the browser (for a file rebuilt by cron).")
@limit_option
@handle_errors
def build(config_path: Optional[str], store: Optional[str], cluster: Optional[str], output: str,
          refresh: int, limit: int) -> None:
    """Write the dashboard page to a file (no links to job reports: there is no server)."""
    import os

    from efajob.dashboard.server import Collector
    from efajob.store.watchdog import call_watched
    from efajob.errors import UsageError
    from efajob.dashboard.page import render_dashboard
    from efajob.hooks.runfiles import atomic_write

    cfg = get_config(config_path, store=store)
    _check_cluster(cluster)
    d = call_watched(Collector(cfg, cluster=cluster, limit=limit, clock=time.time).collect,
                     store=cfg.store, timeout=cfg.store_timeout)
    page = render_dashboard(d, refresh=refresh, store=cfg.store)
    try:
        os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
        atomic_write(output, page.encode("utf-8"))
    except OSError as e:
        raise UsageError(f"cannot write {output}: {e.strerror}") from None
    click.echo(f"wrote {output}: {len(d.nodes)} node(s), {len(d.running)} running and "
               f"{len(d.recent)} recent job(s)", err=True)
