"""`efajob index update|rebuild`: the job index's one writer (efajob/index/, docs/jobindex.md).
Run on the head node, as root when private_records is on (it must read every record)."""
from __future__ import annotations

import sys
from typing import Optional

import click

from efajob.cli.common import config_option, get_config, handle_errors
from efajob.store.watchdog import call_watched

store_option = click.option("--store", type=click.Path(file_okay=False),
                            help="Job store directory (default: config `store`).")


@click.group()
def index() -> None:
    """The job index on the head node: `efajob jobs` reads it instead of scanning the store."""


no_slurm_option = click.option("--no-slurm", is_flag=True, help="Do not ask Slurm for the "
                               "names of jobs whose records carry none.")


def _names(no_slurm: bool):
    from efajob.index.names import scontrol_lookup

    return None if no_slurm else scontrol_lookup()


def _summary(verb: str, path: str, s) -> str:
    out = (f"{verb} {path}: {s.dirs_indexed} job directories indexed ({s.rows} rows, "
           f"{s.records} records) of {s.dirs_seen} in {s.clusters} cluster(s); "
           f"{s.removed} removed")
    if s.named or s.kept_names:
        out += f"; {s.named} named from Slurm" + (f", {s.kept_names} names kept"
                                                   if s.kept_names else "")
    if s.restated:
        out += f"; {s.restated} given Slurm's state (CANCELLED, TIMEOUT, ...)"
    if s.slurm_error:
        out += f"\nwarning: job names not asked of Slurm: {s.slurm_error}"
    return out


@index.command()
@click.option("--full", is_flag=True, help="Look at every job directory again, also those "
              "settled (nothing landed for a day): picks up records that landed late.")
@no_slurm_option
@click.option("--no-accounting", is_flag=True, help="Do not write job summaries into Slurm's "
              "accounting (AdminComment) after indexing: `efajob accounting sync`.")
@store_option
@config_option
@handle_errors
def update(full: bool, no_slurm: bool, no_accounting: bool, store: Optional[str],
           config_path: Optional[str]) -> None:
    """Index the records that landed since the last run (creates the index if missing).

    Cheap enough for a systemd timer every minute or two: one directory listing per
    cluster, a stat of each job directory still receiving records, and a report built for
    each job whose directory changed, and one `scontrol show job` for the names of the
    jobs it indexed (slurmd's hooks do not see them). Then, when Slurm keeps accounting in
    slurmdbd, the summaries of finished jobs go into their AdminComment (`efajob
    accounting sync`). Exit 4 when another `efajob index` is writing.
    """
    from efajob.index.update import update as run_update

    cfg = get_config(config_path, store=store)
    s = call_watched(lambda: run_update(cfg, full=full, names=_names(no_slurm)), store=cfg.store,
                     timeout=cfg.store_timeout)
    click.echo(_summary("updated", cfg.job_index_path, s), err=True)
    if not no_slurm and not no_accounting:
        _accounting(cfg)


def _accounting(cfg) -> None:
    """The summaries of jobs just indexed into Slurm's accounting (efajob/accounting/): a
    failure there is a warning, the index update stands. Silent when Slurm keeps no
    accounting in slurmdbd or the config turns it off."""
    from efajob.accounting.sync import run
    from efajob.cli.accounting import sync_line
    from efajob.errors import EfajobError
    from efajob.slurm.adapter import CommandBackend

    try:
        stats, _why = run(cfg, CommandBackend())
    except EfajobError as e:
        click.echo(f"warning: job summaries not written to Slurm's accounting: {e}", err=True)
        return
    if stats is not None and stats.pending:
        click.echo(sync_line(stats), err=True)


@index.command()
@no_slurm_option
@store_option
@config_option
@handle_errors
def rebuild(no_slurm: bool, store: Optional[str], config_path: Optional[str]) -> None:
    """Build the index afresh from the whole store (progress on stderr).

    The new index replaces the old one only when complete: `efajob jobs` keeps reading the
    old one meanwhile. Job names the old index had from Slurm are kept.
    """
    from efajob.index.update import rebuild as run_rebuild

    cfg = get_config(config_path, store=store)
    shown = {"bar": None}

    def progress(done: int, total: int) -> None:
        bar = shown["bar"]
        if bar is None:
            bar = shown["bar"] = click.progressbar(length=total, label="indexing job directories",
                                                   file=sys.stderr, show_pos=True)
            bar.__enter__()
        bar.update(done - bar.pos)

    try:
        s = call_watched(lambda: run_rebuild(cfg, progress=progress, names=_names(no_slurm)), store=cfg.store,
                         timeout=cfg.store_timeout)
    finally:
        if shown["bar"] is not None:
            shown["bar"].__exit__(None, None, None)
    click.echo(_summary("rebuilt", cfg.job_index_path, s), err=True)


@index.command()
@click.option("--apply", is_flag=True, help="Remove the directories (without it: a dry run "
              "that lists what would go).")
@click.option("--max-age-days", type=click.FloatRange(min=0), default=None,
              help="Remove job directories whose last record landed longer ago (default: "
              "config store_retention.max_age_days; 0: no age bound).")
@click.option("--max-gb", type=click.FloatRange(min=0), default=None,
              help="Then remove the oldest until the records fit in this many GB (default: "
              "config store_retention.max_gb; 0: no size bound).")
@click.option("-v", "--verbose", is_flag=True, help="List every directory removed.")
@store_option
@config_option
@handle_errors
def prune(apply: bool, max_age_days: Optional[float], max_gb: Optional[float], verbose: bool,
          store: Optional[str], config_path: Optional[str]) -> None:
    """Retention: remove old job directories from the store, and their rows from the index.

    A dry run unless --apply. The plan comes from the job index (brought up to date first;
    exit 4 without one, or while another `efajob index` writes): directories past the age
    bound, then the oldest until the store's records fit the size bound. A directory that
    received a record in the last day is never removed.
    """
    import time

    from efajob.fmt import fmt_bytes, fmt_time
    from efajob.index.prune import bounds, prune as run_prune

    cfg = get_config(config_path, store=store)
    age_s, max_bytes = bounds(cfg, max_age_days, max_gb)

    def removed(d) -> None:
        if verbose:
            click.echo(f"removed {d.cluster}/{d.job_id} ({fmt_bytes(d.nbytes)}, landed "
                       f"{fmt_time(d.landed)})", err=True)

    plan = call_watched(lambda: run_prune(cfg, max_age_s=age_s, max_bytes=max_bytes,
                                          apply=apply, now=time.time(), on_removed=removed),
                        store=cfg.store, timeout=cfg.store_timeout)
    if not apply and verbose:
        for d in plan.remove:
            click.echo(f"would remove {d.cluster}/{d.job_id} ({fmt_bytes(d.nbytes)}, landed "
                       f"{fmt_time(d.landed)})")
    span = (f", landed {fmt_time(plan.remove[0].landed)} to {fmt_time(plan.remove[-1].landed)}"
            if plan.remove else "")
    verb = "removed" if apply else "would remove (dry run: --apply removes)"
    click.echo(f"{verb} {len(plan.remove)} job directories ({fmt_bytes(plan.removed_bytes)} of "
               f"records{span}); {plan.kept} kept ({fmt_bytes(plan.kept_bytes)})")
