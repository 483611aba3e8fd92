"""`efajob compare JOBID`: this run beside the previous runs of its name and user
(report/compare.py measures, index/history.py finds the runs, render/compare.py writes)."""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Callable, Optional, Tuple

import click

from efajob.cli.common import (config_option, format_option, get_config, handle_errors,
                               output_width, wide_option)
from efajob.store.watchdog import call_watched

if TYPE_CHECKING:  # pragma: no cover
    from efajob.report.compare import Comparison


def _warn(msg: str) -> None:
    click.echo(f"warning: {msg}", err=True)


def comparison_of(cfg, r, *, limit: int, scan: bool,
                  warn: Callable[[str], None]) -> Tuple["Comparison", str]:
    """(Comparison, where the history came from) for the JobReport `r`."""
    from efajob.index.history import indexed_name, previous_runs
    from efajob.report.assemble import jobs_row
    from efajob.report.compare import build_comparison

    row = jobs_row(r)
    if not row.get("name"):  # slurmd's hooks do not see it: `index update` asked Slurm
        row["name"] = indexed_name(cfg, row["cluster"], row["job_id"], row["restart"] or 0)
    previous, source = previous_runs(cfg, row, limit=limit, scan=scan, warn=warn)
    return build_comparison(row, previous), source


@click.command()
@click.argument("job_id")
@format_option("text", "json")
@click.option("--limit", "-n", type=click.IntRange(min=1, max=1000), default=None,
              help="Previous runs shown and behind the median (default: 20).")
@click.option("--store", type=click.Path(file_okay=False),
              help="Job store directory (default: config `store`).")
@click.option("--cluster", help="Cluster name in the store (default: any; required when the "
              "job id exists in several).")
@click.option("--restart", type=click.IntRange(min=0), default=None,
              help="Which run of a requeued job (default: the latest).")
@click.option("--no-slurm", is_flag=True, help="Do not ask Slurm (the job's name then comes "
              "from its records or the job index).")
@wide_option
@config_option
@handle_errors
def compare(job_id: str, fmt: str, limit: Optional[int], store: Optional[str],
            cluster: Optional[str], restart: Optional[int], no_slurm: bool, wide: bool,
            config_path: Optional[str]) -> None:
    """This job beside its previous runs of the same name and user: bytes per node-second,
    peak, verdict, findings, and whether this run is much slower than its history (under
    0.5x the median of at least 3 previous runs).

    The previous runs come from the job index (`efajob index update`), else from a scan of
    the store (a warning says so). Exit codes as `efajob report`'s.
    """
    from efajob.report.assemble import build_job_report
    from efajob.report.compare import HISTORY
    from efajob.report.render.compare import render_comparison

    cfg = get_config(config_path, store=store)

    def work():
        r = build_job_report(cfg, job_id, cluster=cluster, restart=restart,
                             use_slurm=not no_slurm, warn=_warn)
        return comparison_of(cfg, r, limit=limit or HISTORY, scan=True, warn=_warn)

    c, _ = call_watched(work, store=cfg.store, timeout=cfg.store_timeout)
    if fmt == "json":
        click.echo(json.dumps(c.to_dict(), indent=2))
    else:
        click.echo(render_comparison(c, width=output_width(wide)), nl=False)
