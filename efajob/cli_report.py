"""`efajob report`, `efajob jobs` and `efajob demo`: what people read.

The library does the work (jobstore.py reads, report.py measures, findings.py judges,
render_*.py format); this module picks options, asks Slurm through efajob.slurm when it can,
prints warnings and chooses exit codes (errors.py: 5 unknown job, 6 ambiguous, 4 store).
"""
from __future__ import annotations

import contextlib
import gc
import json
import os
import sys
import time
from typing import Any, List, Optional, Tuple

import click

from .cli_common import config_option, format_option, get_config, handle_errors
from .errors import SlurmError


# -- Slurm (optional) -------------------------------------------------------------------------
def slurm_lookup(job_id: str, timeout: float = 10.0) -> Tuple[Any, Optional[str]]:
    """(JobInfo or None, a note for the report). Never raises: no Slurm is a normal case."""
    try:
        from .slurm import get_backend

        info = get_backend(timeout=timeout).job(job_id)
    except SlurmError as e:
        return None, f"Slurm not reachable ({e}): header from the job records"
    if info is None:
        return None, f"Slurm does not know job {job_id} (purged, no accounting): header from the job records"
    return info, None


def check_slurm(info: Any, files, hosts: List[str]) -> Tuple[Any, bool, Optional[str]]:
    """(info or None, use Slurm's times, note): refuse metadata of another job with the same id."""
    if info is None:
        return None, True, None
    cl = getattr(info, "cluster", None)
    if cl and cl != files.cluster:
        return None, True, (f"Slurm's job {files.job_id} belongs to cluster {cl}, not {files.cluster}: "
                            "header from the job records")
    nodes = set(getattr(info, "nodes", None) or ())
    if nodes and hosts and not nodes & set(hosts):
        return None, True, (f"Slurm's job {files.job_id} ran on other nodes than these records (a "
                            "reused job id?): header from the job records")
    restarts = getattr(info, "restarts", None)
    if isinstance(restarts, int) and restarts != files.restart:
        return info, False, (f"Slurm describes restart {restarts}, this report restart "
                             f"{files.restart}: start, end and state come from the records")
    return info, True, None


def _store_has(store: str, cluster: Optional[str], job_id: str) -> bool:
    from .jobstore import JOBS_DIR, list_clusters

    return any(os.path.isdir(os.path.join(store, c, JOBS_DIR, job_id))
               for c in ([cluster] if cluster else list_clusters(store)))


def build_job_report(cfg, job_id: str, *, cluster: Optional[str] = None,
                     restart: Optional[int] = None, use_slurm: bool = True,
                     now: Optional[float] = None, warn=None):
    """Everything `efajob report` does short of rendering. Raises EfajobError."""
    from .jobid import validate_job_id

    validate_job_id(job_id)
    now = time.time() if now is None else now
    info, note = slurm_lookup(job_id) if use_slurm else (None, None)
    with _no_gc():
        return _build(cfg, job_id, info, note, cluster, restart, now, warn)


@contextlib.contextmanager
def _no_gc():
    """Parsing a 1,024-node job creates millions of small acyclic objects (JSON dicts, lists):
    the cyclic collector runs again and again and finds nothing. Off while we build, it saves
    a third of the time (bench/report.py); back on afterwards."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _build(cfg, job_id: str, info: Any, note: Optional[str], cluster: Optional[str],
           restart: Optional[int], now: float, warn):
    from .jobstore import find_job, load_job
    from .report import build_report

    target = job_id
    sid = getattr(info, "slurm_job_id", None)
    if sid and sid != job_id and not _store_has(cfg.store, cluster, job_id):
        target = sid  # the hooks file an array task 7_8 under its SLURM_JOB_ID
    files = find_job(cfg.store, target, cluster=cluster, restart=restart, now=now,
                     max_status_age=max(60.0, 4 * cfg.status_interval))
    loaded = load_job(files)
    for path, why in loaded.skipped:
        if warn:
            warn(f"skipped {path}: {why}")
    hosts = [r["host"] for r in loaded.records] + list(files.live)
    info, times, note2 = check_slurm(info, files, hosts)
    return build_report(
        loaded.records, job_id=files.job_id, cluster=files.cluster, restart=files.restart,
        restarts=files.restarts, restart_defaulted=files.restart_defaulted, job_info=info,
        slurm_note=note2 or note, slurm_times=times, live=files.live, skipped=loaded.skipped,
        thresholds=cfg.thresholds, now=now)


def _use_color(no_color: bool, output: Optional[str]) -> bool:
    if no_color or output or os.environ.get("NO_COLOR"):
        return False
    return sys.stdout.isatty()


def _emit(text: str, output: Optional[str]) -> None:
    if output:
        try:
            with open(output, "w", encoding="utf-8") as f:
                f.write(text)
        except OSError as e:
            from .errors import UsageError

            raise UsageError(f"cannot write {output}: {e.strerror}") from None
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(text, nl=False)


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
@click.option("--no-color", is_flag=True, help="Text: no ANSI colours (also: NO_COLOR, not a tty).")
@store_option
@cluster_option
@click.option("--restart", type=click.IntRange(min=0), default=None,
              help="Which run of a requeued job (default: the latest).")
@click.option("--no-slurm", is_flag=True, help="Do not ask Slurm for the header (records only).")
@config_option
@handle_errors
def report(job_id: str, fmt: str, output: Optional[str], verbose: bool, no_color: bool,
           store: Optional[str], cluster: Optional[str], restart: Optional[int], no_slurm: bool,
           config_path: Optional[str]) -> None:
    """Report one job's EFA traffic: totals, per node and device, health, findings, verdict.

    JOB_ID as Slurm shows it: 123, an array task 123_4, a het component 123+1. Exit codes:
    0 report printed (whatever the verdict), 2 bad job id, 4 store unreadable, 5 no such job,
    6 ambiguous (several clusters: use --cluster).
    """
    from .render_csv import render_csv
    from .render_html import render_html
    from .render_text import render_text
    from .render_json import render_json

    gc.disable()  # a short-lived process that builds one big acyclic tree: see _no_gc()
    cfg = get_config(config_path, store=store)
    r = build_job_report(cfg, job_id, cluster=cluster, restart=restart, use_slurm=not no_slurm,
                         warn=_warn)
    if fmt == "json":
        text = render_json(r)
    elif fmt == "csv":
        text = render_csv(r)
    elif fmt == "html":
        text = render_html(r)
    else:
        text = render_text(r, verbose=verbose, color=_use_color(no_color, output))
    _emit(text, output)


# -- efajob jobs ------------------------------------------------------------------------------
def job_summary(r) -> dict:
    """One `efajob jobs` row from a JobReport."""
    m, o = r.meta, r.overall
    busier = [v for v in (o.avg_tx_gbps, o.avg_rx_gbps) if v is not None]
    return {"cluster": m.cluster, "job_id": m.job_id, "restart": m.restart, "alias": m.alias,
            "user": m.user, "state": m.state, "num_nodes": m.num_nodes, "start": m.start,
            "end": m.end, "elapsed_s": m.elapsed_s, "tx_bytes": o.totals.get("tx_bytes"),
            "rx_bytes": o.totals.get("rx_bytes"),
            "avg_gbps_per_node": round(max(busier), 3) if busier else None,
            "verdict": r.verdict, "findings": sorted({f.code for f in r.findings if f.severity != "info"}),
            "running": r.running}


def list_jobs(cfg, *, user: Optional[str] = None, since: Optional[float] = None,
              state: Optional[str] = None, limit: int = 20, cluster: Optional[str] = None,
              now: Optional[float] = None) -> List[dict]:
    """Recent jobs, newest first (by when their records arrived), with totals and verdicts.
    Reports are built from the records only (no Slurm: one query per job would be slow)."""
    from .jobstore import (find_job, list_clusters, list_job_dirs, load_job, read_node_statuses)
    from .report import build_report

    now = time.time() if now is None else now
    max_age = max(60.0, 4 * cfg.status_interval)
    out: List[dict] = []

    def keep(row: dict) -> bool:
        if user and row.get("user") != user:
            return False
        if state and (row.get("state") or "").upper() != state.upper():
            return False
        if since is not None and (row.get("end") or row.get("start") or now) < since:
            return False
        return True

    # Running jobs first: in node status files but without a job directory yet.
    seen = set()
    for c in ([cluster] if cluster else list_clusters(cfg.store)):
        for st in read_node_statuses(cfg.store, c).values():
            if not st.fresh(now, max_age):
                continue
            for j in st.jobs:
                if (c, j.job_id) in seen or os.path.isdir(os.path.join(cfg.store, c, "jobs", j.job_id)):
                    continue
                seen.add((c, j.job_id))
                files = find_job(cfg.store, j.job_id, cluster=c, now=now, max_status_age=max_age)
                row = job_summary(build_report([], job_id=j.job_id, cluster=c, restart=files.restart,
                                               restarts=files.restarts, live=files.live, now=now,
                                               thresholds=cfg.thresholds))
                if not row.get("user"):
                    row["user"] = j.user
                if keep(row):
                    out.append(row)
    for d in list_job_dirs(cfg.store, cluster=cluster, since=since):
        if len(out) >= limit:
            break
        files = find_job(cfg.store, d.job_id, cluster=d.cluster, now=now, max_status_age=max_age)
        loaded = load_job(files)
        r = build_report(loaded.records, job_id=files.job_id, cluster=files.cluster,
                         restart=files.restart, restarts=files.restarts, live=files.live,
                         skipped=loaded.skipped, thresholds=cfg.thresholds, now=now)
        row = job_summary(r)
        if keep(row):
            out.append(row)
    return out[:limit]


@click.command()
@click.option("--user", "-u", help="Only this user's jobs.")
@click.option("--since", help="Only jobs that ended (or run) after: 6h, 2d, 2024-05-01, epoch.")
@click.option("--state", help="Only jobs in this state (COMPLETED, FAILED, RUNNING, ENDED).")
@click.option("--limit", "-n", type=click.IntRange(min=1), default=20, show_default=True)
@format_option("text", "json")
@click.option("--no-color", is_flag=True, help="No ANSI colours.")
@store_option
@cluster_option
@config_option
@handle_errors
def jobs(user: Optional[str], since: Optional[str], state: Optional[str], limit: int, fmt: str,
         no_color: bool, store: Optional[str], cluster: Optional[str],
         config_path: Optional[str]) -> None:
    """Recent jobs in the job store with their EFA totals and verdicts (newest first).

    States come from the records (the exit codes the epilogs saw), not from Slurm.
    """
    from .jobstore import parse_since
    from .render_text import render_jobs

    cfg = get_config(config_path, store=store)
    now = time.time()
    t = parse_since(since, now) if since else None
    rows = list_jobs(cfg, user=user, since=t, state=state, limit=limit, cluster=cluster, now=now)
    if fmt == "json":
        click.echo(json.dumps({"store": cfg.store, "jobs": rows}, indent=2))
    else:
        click.echo(render_jobs(rows, color=_use_color(no_color, None)), nl=False)


# -- efajob demo ------------------------------------------------------------------------------
@click.command()
@click.option("--keep", type=click.Path(file_okay=False), default=None,
              help="Build everything in DIR (missing or empty) and keep it: the store, the "
              "simulated nodes, the config and the logs.")
@click.option("--nodes", type=click.IntRange(min=2, max=16), default=4, show_default=True,
              help="Simulated p5.48xlarge nodes.")
@click.option("--seconds", type=click.FloatRange(min=1.0, max=60.0), default=3.0, show_default=True,
              help="Seconds of simulated traffic per job.")
@click.option("-v", "--verbose", is_flag=True, help="Per-device rows in the reports.")
@click.option("--no-color", is_flag=True, help="No ANSI colours.")
@handle_errors
def demo(keep: Optional[str], nodes: int, seconds: float, verbose: bool, no_color: bool) -> None:
    """See efajob work in ~20 s: no root, no Slurm, no AWS.

    Builds a simulated cluster of p5.48xlarge nodes in a temporary directory, starts a real
    `efajob daemon` per node, runs three jobs through the real Slurm hooks (a healthy
    all-reduce; a straggler node with a dead EFA device; a job whose traffic went over ENA
    instead of EFA) and prints their reports. Stops every process it started, also on Ctrl-C.
    """
    from .demo import run_demo
    from .render_text import render_text

    color = _use_color(no_color, None)
    res = run_demo(keep=keep, nodes=nodes, seconds=seconds, say=lambda s: click.echo(s, err=True))
    for r in res.reports:
        click.echo("")
        click.echo(render_text(r, verbose=verbose, color=color), nl=False)
    click.echo("")
    for r in res.reports:
        click.echo(f"job {r.meta.job_id}: {r.verdict:<8} "
                   + (", ".join(sorted({f.code for f in r.findings if f.severity != 'info'})) or "no findings"))
    if res.kept:
        click.echo(f"\nKept in {res.root}. Try:\n"
                   f"  efajob jobs --store {res.store}\n"
                   f"  efajob report 102 --store {res.store} --no-slurm -v\n"
                   f"  efajob report 102 --store {res.store} --no-slurm --format html -o report.html")
