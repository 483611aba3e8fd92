"""`efajob report`, `efajob jobs` and `efajob demo`: what people read.

The library does the work (store/reader.py reads, report/model.py measures, report/findings.py judges,
render_*.py format); this module picks options, asks Slurm through efajob.slurm.adapter when it can,
prints warnings and chooses exit codes (errors.py: 5 unknown job, 6 ambiguous, 4 store).
"""
from __future__ import annotations

import gc
import json
import shlex
import time
from typing import Iterable, Optional, Union

import click

from efajob.cli.common import (color_option, config_option, format_option, get_config,
                               handle_errors, output_width, resolve_color, setup_logging,
                               wide_option)
from efajob.errors import JobIndexError, JobNotFoundError, UsageError
from efajob.report.assemble import build_job_report
from efajob.store.watchdog import call_watched


def _emit(text: Union[str, Iterable[str]], output: Optional[str]) -> None:
    """Write the report (a string, or pieces of one: the JSON of a huge job is written as it
    is made, never held whole)."""
    pieces = [text] if isinstance(text, str) else text
    if output:
        try:
            with open(output, "w", encoding="utf-8") as f:
                f.writelines(pieces)
        except OSError as e:
            from efajob.errors import UsageError

            raise UsageError(f"cannot write {output}: {e.strerror}") from None
        click.echo(f"wrote {output}", err=True)
    else:
        for piece in pieces:
            click.echo(piece, nl=False)


def _warn(msg: str) -> None:
    click.echo(f"warning: {msg}", err=True)


store_option = click.option("--store", type=click.Path(file_okay=False),
                            help="Job store directory (default: config `store`).")
cluster_option = click.option("--cluster", help="Cluster name in the store (default: any; "
                              "required when the job id exists in several).")


@click.command()
@click.argument("job_id")
@format_option("text", "json", "csv", "html")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write to FILE instead of stdout.")
@click.option("-v", "--verbose", is_flag=True, help="Text: add a row per EFA device under each node.")
@wide_option
@color_option
@store_option
@cluster_option
@click.option("--restart", type=click.IntRange(min=0), default=None,
              help="Which run of a requeued job (default: the latest).")
@click.option("--no-slurm", is_flag=True, help="Do not ask Slurm for the header (records only).")
@click.option("--debug", is_flag=True, help="Debug log on stderr, with the full text of Slurm's "
              "errors (the report's note has one line).")
@config_option
@handle_errors
def report(job_id: str, fmt: str, output: Optional[str], verbose: bool, wide: bool, color: str,
           no_color: bool, store: Optional[str], cluster: Optional[str], restart: Optional[int],
           no_slurm: bool, debug: bool, config_path: Optional[str]) -> None:
    """Report one job's EFA traffic: totals, per node and device, health, findings, verdict.

    JOB_ID as Slurm shows it: 123, an array task 123_4, a het component 123+1. The text fits
    the terminal ($COLUMNS; 80 for a pipe or a file): the per-node table drops its least
    needed columns first (--wide keeps them all). Exit codes: 0 report printed (whatever the
    verdict), 2 bad job id, 4 store unreadable (or another user's private records or
    running job), 5 no such job, 6 ambiguous (several clusters: use --cluster; an array or
    het job asked by its plain id, 123: its tasks or components are listed, report one).
    """
    gc.disable()  # a short-lived process that builds one big acyclic tree: see _no_gc()
    if debug:
        setup_logging(verbose=True)
    cfg = get_config(config_path, store=store)
    try:
        r = call_watched(lambda: build_job_report(cfg, job_id, cluster=cluster, restart=restart,
                                                  use_slurm=not no_slurm, warn=_warn),
                         store=cfg.store, timeout=cfg.store_timeout)
    except JobNotFoundError as e:
        if no_slurm or fmt not in ("text", "json") or restart:
            raise
        _emit(_from_accounting(job_id, cluster, fmt, e) + "\n", output)
        return
    # Each renderer imported when asked for: the others (csv, html and the modules they pull
    # in) cost every text report their import time.
    if fmt == "json":
        from efajob.report.render.json import iter_json

        text: Union[str, Iterable[str]] = iter_json(r)
    elif fmt == "csv":
        from efajob.report.render.csv import iter_csv

        text = iter_csv(r)
    elif fmt == "html":
        from efajob.report.render.html import render_html

        text = render_html(r)
    else:
        from efajob.report.render.text import render_text

        text = render_text(r, verbose=verbose, color=resolve_color(color, no_color, output),
                           width=output_width(wide, output))
        text += _history_section(cfg, r, output_width(wide, output))
    _emit(text, output)


def _from_accounting(job_id: str, cluster: Optional[str], fmt: str,
                     missing: JobNotFoundError) -> str:
    """A job no longer in the store (pruned) whose summary efajob wrote into Slurm's
    accounting: that summary (efajob/accounting/show.py). Without one, the store's own
    "no such job" error stands."""
    from efajob.accounting.show import render, summary_of
    from efajob.errors import SlurmError
    from efajob.slurm.adapter import CommandBackend

    try:
        found = summary_of(CommandBackend(), job_id, cluster)
    except (JobNotFoundError, SlurmError):
        raise missing from None
    return render(found, job_id, fmt == "json", pruned=True)


def _history_section(cfg, r, width: Optional[int]) -> str:
    """The text report's last section: this run beside its previous ones (`efajob
    compare`), from the job index only (a scan would make the report's cost grow with the
    store): empty without an index or a job name."""
    from efajob.cli.compare import comparison_of
    from efajob.errors import EfajobError
    from efajob.report.render.compare import render_comparison

    if r.running:
        return ""
    try:
        c, source = comparison_of(cfg, r, limit=5, scan=False, warn=_warn)
    except EfajobError:
        return ""
    if source != "index" or not c.previous:
        return ""
    return ("\nHistory (same name and user; `efajob compare` for more)\n"
            + render_comparison(c, width=width, title=False))


@click.command()
@click.option("--user", "-u", help="Only these users' jobs (comma-separated, as sacct -u).")
@click.option("--partition", "-p", help="Only jobs in these partitions (comma-separated).")
@click.option("--account", "-A", help="Only jobs charged to these accounts (comma-separated, "
              "as sacct -A; needs Slurm accounting, which puts the account in the records).")
@click.option("--nodelist", "-N", help="Only jobs that ran on any of these nodes (a hostlist, "
              "as sacct -N: n[1-4],gpu7; -w is --wide here).")
@click.option("--name", help="Only jobs with these job names (comma-separated, exact, as sacct "
              "--name; from the records, or from Slurm through `efajob index update`).")
@click.option("--state", "-s", help="Only jobs in these states, Slurm's names or abbreviations "
              "(comma-separated: CD, F, R, TO, OOM, CA ...; ED: ended, no exit code in the records).")
@click.option("--starttime", "-S", help="Only jobs that ran after this time (sacct's forms: "
              "2024-05-01, 2024-05-01T10:00, 05/01, 10:00, now-2days, today).")
@click.option("--endtime", "-E", help="Only jobs that ran before this time (same forms).")
@click.option("--since", help="Only jobs that ended (or run) after: 6h, 2d, 2024-05-01, epoch.")
@click.option("--limit", "-n", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--no-index", is_flag=True, help="Scan the store even when the job index exists "
              "(--source scan).")
@click.option("--source", type=click.Choice(["auto", "index", "scan", "sacct"]), default="auto",
              show_default=True, help="Where the list comes from: the job index (auto: when "
              "there is one, else a scan of the store), or Slurm's accounting (sacct, the "
              "filters passed to it; Slurm's own states; EFA columns from the summaries efajob "
              "wrote into AdminComment, so jobs pruned from the store are there too).")
@format_option("text", "json", "csv")
@wide_option
@color_option
@store_option
@cluster_option
@config_option
@handle_errors
def jobs(user: Optional[str], partition: Optional[str], account: Optional[str],
         nodelist: Optional[str], name: Optional[str], state: Optional[str],
         starttime: Optional[str], endtime: Optional[str], since: Optional[str], limit: int,
         no_index: bool, source: str, fmt: str, wide: bool, color: str, no_color: bool,
         store: Optional[str], cluster: Optional[str], config_path: Optional[str]) -> None:
    """Recent jobs in the job store with their EFA totals and verdicts (newest first).

    Read from the job index (`efajob index update`) when there is one, else by scanning the
    store (a warning says so). States come from the records (the exit codes the epilogs
    saw), not from Slurm: COMPLETED, FAILED, RUNNING, or ENDED; a --state only Slurm knows
    (TO, OOM, CA, ...) is asked of Slurm's accounting when there is one. With --source sacct the list
    is Slurm's accounting's, with Slurm's states and the EFA columns of the summaries efajob
    wrote there (docs/accounting.md); exit 7 when sacct fails.
    """
    from efajob.index.listing import recent_jobs
    from efajob.report.jobfilter import (JobFilter, parse_list, parse_nodelist,
                                         parse_slurm_time, parse_states)
    from efajob.store.reader import parse_since
    from efajob.report.render.text import render_jobs

    cfg = get_config(config_path, store=store)
    now = time.time()
    flt = JobFilter(users=parse_list(user), partitions=parse_list(partition),
                    accounts=parse_list(account), nodes=parse_nodelist(nodelist),
                    names=parse_list(name), states=parse_states(state),
                    start=parse_slurm_time(starttime, now, "-S") if starttime else None,
                    end=parse_slurm_time(endtime, now, "-E") if endtime else None)
    t = parse_since(since, now) if since else None
    rows = None
    if source == "auto" and not no_index and flt.states - RECORD_STATES \
            and "ENDED" not in flt.states:
        # States only Slurm knows (TIMEOUT, OUT_OF_MEMORY, CANCELLED, ...): the records would
        # match nothing, so ask Slurm's accounting when there is one.
        from efajob.errors import SlurmError

        try:
            rows = _from_sacct(flt, nodelist, starttime, endtime, t, cluster, limit, now)
        except SlurmError as e:
            _warn(f"--state {','.join(sorted(flt.states - RECORD_STATES))}: only Slurm's "
                  f"accounting knows that state, and it could not be asked ({e}); listing "
                  "from the records, which hold no job in it")
    if rows is None and source == "sacct":
        rows = _from_sacct(flt, nodelist, starttime, endtime, t, cluster, limit, now)
    elif rows is None:
        if source == "index" and no_index:
            raise UsageError("--no-index and --source index contradict each other")
        use_index = not no_index and source != "scan"
        rows, how = call_watched(lambda: recent_jobs(cfg, flt, limit=limit, cluster=cluster,
                                                     since=t, now=now, use_index=use_index,
                                                     warn=_warn),
                                 store=cfg.store, timeout=cfg.store_timeout)
        if source == "index" and how != "index":
            raise JobIndexError("--source index: the job index could not be read (above)")
    if fmt == "json":
        click.echo(json.dumps({"store": cfg.store, "jobs": rows}, indent=2))
    elif fmt == "csv":
        click.echo(render_jobs_csv(rows), nl=False)
    else:
        click.echo(render_jobs(rows, color=resolve_color(color, no_color),
                               width=output_width(wide)), nl=False)


# The states the records can hold (report/jobfilter.py): any other is Slurm's alone.
RECORD_STATES = frozenset({"COMPLETED", "FAILED", "RUNNING", "ENDED"})


def _from_sacct(flt, nodelist: Optional[str], starttime: Optional[str], endtime: Optional[str],
                since: Optional[float], cluster: Optional[str], limit: int, now: float):
    """`jobs --source sacct` (efajob/accounting/listing.py): the filters as sacct takes them
    (validated above), --since as -S."""
    from datetime import datetime

    from efajob.accounting.listing import list_from_sacct, sacct_argv
    from efajob.slurm.adapter import CommandBackend

    if starttime is None and since is not None:
        starttime = datetime.fromtimestamp(since).strftime("%Y-%m-%dT%H:%M:%S")
    argv = sacct_argv(users=flt.users, accounts=flt.accounts, partitions=flt.partitions,
                      names=flt.names, states=flt.states, nodes=[nodelist] if nodelist else (),
                      start=starttime, end=endtime, cluster=cluster)
    return list_from_sacct(CommandBackend(timeout=60), argv, limit=limit,
                           start_given=starttime is not None, now=now)


JOBS_CSV = ("cluster", "job_id", "restart", "alias", "user", "account", "partition", "name",
            "state", "num_nodes", "start", "end", "elapsed_s", "tx_bytes", "rx_bytes",
            "avg_gbps_per_node", "verdict", "findings", "running")


def render_jobs_csv(rows) -> str:
    """`efajob jobs --format csv`: one line per job, findings joined with ';'."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(JOBS_CSV)
    for r in rows:
        w.writerow(["" if r.get(c) is None else
                    (";".join(r[c]) if c == "findings" else r[c]) for c in JOBS_CSV])
    return buf.getvalue()


# -- efajob demo ------------------------------------------------------------------------------
@click.command()
@click.option("--keep", type=click.Path(file_okay=False), default=None,
              help="Build everything in DIR (missing or empty) and keep it: the store, the "
              "simulated nodes, the config and the logs, a cluster to explore afterwards.")
@click.option("--nodes", type=click.IntRange(min=2, max=16), default=4, show_default=True,
              help="Simulated p5.48xlarge nodes.")
@click.option("--seconds", type=click.FloatRange(min=1.0, max=60.0), default=3.0, show_default=True,
              help="Seconds of simulated traffic per job.")
@click.option("-v", "--verbose", is_flag=True, help="Per-device rows in the reports.")
@wide_option
@color_option
@handle_errors
def demo(keep: Optional[str], nodes: int, seconds: float, verbose: bool, wide: bool, color: str,
         no_color: bool) -> None:
    """See efajob work in ~20 s: no root, no Slurm, no AWS.

    Builds a simulated cluster of p5.48xlarge nodes in a temporary directory (deleted at the
    end; --keep DIR keeps it), starts a real `efajob daemon` per node, runs three jobs through
    the real Slurm hooks (a healthy all-reduce; a straggler node with a dead EFA device; a job
    whose traffic went over ENA instead of EFA) and prints their reports, then the commands to
    try next. Stops every process it started, also on Ctrl-C.
    """
    from efajob.sim.demo import run_demo
    from efajob.report.render.text import render_text

    on = resolve_color(color, no_color)
    width = output_width(wide)
    res = run_demo(keep=keep, nodes=nodes, seconds=seconds, say=lambda s: click.echo(s, err=True))
    for r in res.reports:
        click.echo("")
        click.echo(render_text(r, verbose=verbose, color=on, width=width), nl=False)
    click.echo("")
    for r in res.reports:
        click.echo(f"job {r.meta.job_id}: {r.verdict:<8} "
                   + (", ".join(sorted({f.code for f in r.findings if f.severity != 'info'})) or "no findings"))
    click.echo("")
    click.echo(next_steps(res.root, res.kept), nl=False)


def next_steps(root: str, kept: bool) -> str:
    """What to run after the demo: with --keep, commands on the kept cluster; without, how to
    keep one."""
    if not kept:
        return (f"The demo's files were in {root} and are deleted now.\n"
                "To keep a cluster to explore: efajob demo --keep ./efajob-demo\n")
    q = shlex.quote
    # Paths relative to the kept directory: commands short enough to copy from 80 columns.
    return (f"Kept in {root}:\n"
            "  config.toml, store/ (the job store), sys/n1.. (the simulated nodes), log/\n"
            f"Next, in that directory (cd {q(root)}):\n"
            "  efajob jobs --store store\n"
            "  efajob report 102 --store store --no-slurm -v\n"
            "  efajob report 102 --store store --no-slurm --format html -o report.html\n"
            "  efajob dashboard serve --store store --no-slurm    # http://127.0.0.1:9815/\n"
            "  efajob devices --sysfs-root sys/n1\n"
            "  efajob simulate traffic --root sys/n1 --tx-gbps 800 --rx-gbps 800 \\\n"
            "      --seconds 120 --realtime &\n"
            "  efajob top --sysfs-root sys/n1\n")
