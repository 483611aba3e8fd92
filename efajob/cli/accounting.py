"""`efajob accounting sync|show`: job summaries in Slurm's accounting (AdminComment), from the
job index on the head node (efajob/accounting/, docs/accounting.md)."""
from __future__ import annotations

from typing import Optional

import click

from efajob.cli.common import config_option, get_config, handle_errors


@click.group()
def accounting() -> None:
    """Job summaries in Slurm's accounting: each finished job's AdminComment in slurmdbd."""


def sync_line(s) -> str:
    out = (f"accounting: {s.written} summaries written to slurmdbd (cluster {s.cluster}), "
           f"{s.unchanged} unchanged, {s.skipped} skipped, {s.waiting} waiting for slurmdbd")
    if s.errors:
        out += f", {len(s.errors)} failed (retried later): " + "; ".join(s.errors[:3])
    return out


@accounting.command()
@config_option
@handle_errors
def sync(config_path: Optional[str]) -> None:
    """Write the summaries of the jobs the index holds into their AdminComment in slurmdbd.

    `efajob index update` does this after indexing; this runs it alone. A job is written
    once every node's record is in (or accounting.settle_s after its last one), through
    `sacctmgr modify job` (root on the head node). A site's own AdminComment text is kept:
    ours goes after it (accounting.admin_comment = "append") or the job is left alone
    ("skip"). Exit 7 when Slurm cannot be asked, 0 with a note when Slurm keeps no
    accounting in slurmdbd.
    """
    from efajob.accounting.sync import run
    from efajob.slurm.adapter import CommandBackend

    cfg = get_config(config_path)
    stats, why = run(cfg, CommandBackend())
    if stats is None:
        click.echo(f"accounting: nothing written: {why}", err=True)
        return
    click.echo(sync_line(stats), err=True)


@accounting.command()
@click.argument("job_id")
@click.option("--cluster", help="Slurm cluster (default: sacct's, the local one).")
@click.option("--json", "as_json", is_flag=True, help="The summary as JSON.")
@config_option
@handle_errors
def show(job_id: str, cluster: Optional[str], as_json: bool, config_path: Optional[str]) -> None:
    """The efajob summary of JOB_ID as slurmdbd holds it (its AdminComment). Exit 5 when the
    job is unknown to slurmdbd or carries no efajob summary."""
    from efajob.accounting.show import render, summary_of
    from efajob.slurm.adapter import CommandBackend
    from efajob.slurm.jobid import validate_job_id

    get_config(config_path)
    validate_job_id(job_id)
    click.echo(render(summary_of(CommandBackend(), job_id, cluster), job_id, as_json))
