"""`efajob uninstall`: remove exactly what `efajob install` wrote (its manifest in the state
dir, efajob/deploy/manifest.py); a file edited since is kept and named. Data (the state dir,
the run dir, the job store) stays unless --purge."""
from __future__ import annotations

import os
from typing import Optional

import click

from efajob.cli.common import config_option, handle_errors, node_option
from efajob.cli.installing import dry_run_option, load_node_config, root_option

_SAY = {"remove": ("removed", "would remove"),
        "keep": ("kept (edited since install)", "would keep (edited since install)"),
        "gone": ("already gone", "already gone")}


@click.command()
@config_option
@node_option
@click.option("--purge", is_flag=True, help="Also remove this node's data: the state dir "
              "(local store, outbox, a job store inside it) and the run dir. A job store "
              "elsewhere is shared with other nodes and is kept.")
@dry_run_option
@root_option
@handle_errors
def uninstall(config_path: Optional[str], node: Optional[str], purge: bool, dry_run: bool,
              root: Optional[str]) -> None:
    """Remove the hooks, units and logrotate rule `efajob install` wrote.

    Stop the units first (systemctl disable --now efajob-node efajob-dashboard); slurm.conf's
    Prolog/Epilog lines and the prolog.d/epilog.d directories are left as they are.
    """
    from efajob.deploy import manifest as m

    cfg = load_node_config(config_path, node, root)
    mpath = m.manifest_path(cfg.state_dir)
    entries = m.read_manifest(m.rooted(root, mpath))
    if not entries:
        click.echo(f"nothing recorded in {mpath}: no file to remove")
    plan = m.plan_uninstall(entries, root)
    if not dry_run and plan:
        m.apply_uninstall(plan, state_dir=cfg.state_dir, root=root)
    for r in plan:
        click.echo(f"{_SAY[r.action][dry_run]}: {r.path} ({r.component})")
    if not dry_run and any(r.action == "remove" and r.path.endswith(".service") for r in plan):
        click.echo("next: systemctl daemon-reload")
    if any(r.action == "keep" for r in plan):
        click.echo("edited files: remove them by hand"
                   + ("" if purge else f" (they stay recorded in {mpath})"))
    if not purge:
        click.echo(f"kept data: {cfg.state_dir} {cfg.run_dir} {cfg.store} (--purge removes "
                   "this node's)")
        return
    targets = m.purge_targets(state_dir=cfg.state_dir, run_dir=cfg.run_dir)
    if dry_run:
        for t in targets:
            if os.path.isdir(m.rooted(root, t)):
                click.echo(f"would remove: {t}")
    else:
        waiting = _undelivered(m.rooted(root, cfg.outbox_dir))
        for t in m.purge(targets, root):
            click.echo(f"removed: {t}")
        if waiting:
            click.echo(f"warning: {waiting} record(s) in the outbox had not reached the job "
                       "store and are gone", err=True)
    if m.store_is_shared(state_dir=cfg.state_dir, store=cfg.store):
        click.echo(f"kept: {cfg.store} (the job store, shared with other nodes)")


def _undelivered(outbox: str) -> int:
    try:
        return sum(1 for n in os.listdir(outbox) if n.endswith(".json") and not n.startswith("."))
    except OSError:
        return 0
