"""`efajob install systemd|dashboard|all|native` and the helpers every install command shares.
`install hooks` (the Slurm Prolog/Epilog wrappers) lives in hooks.py and is added to the group
by main.py; `efajob uninstall` in uninstall.py. The file texts come from efajob/deploy/units.py,
the record of what was written from efajob/deploy/manifest.py."""
from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, List, Optional

import click

from efajob.cli.common import config_option, handle_errors, node_option
from efajob.cli.hooks import plan_wrappers, python_option, slurm_scripts_option
from efajob.cli.installing import (config_on_node, dry_run_option, load_node_config, root_option,
                                   write_specs)
from efajob.config import Config
from efajob.deploy.units import (DASHBOARD_PORT, DASHBOARD_UNIT_NAME, INDEX_SERVICE_NAME,
                                 INDEX_TIMER_NAME, LOGROTATE_NAME, UNIT_NAME,
                                 render_dashboard_unit, render_index_units, render_logrotate,
                                 render_unit)

if TYPE_CHECKING:
    from efajob.deploy.manifest import FileSpec

__all__ = ["install", "render_unit", "write_specs"]  # render_unit: tests and older imports

UNIT_DIR = "/etc/systemd/system"
LOGROTATE_DIR = "/etc/logrotate.d"
UNIT_MODE = 0o644


@click.group()
def install() -> None:
    """Install efajob on this node: Slurm hooks, systemd units, logrotate rule.

    Every file written is recorded (with its checksum) in the state dir's installed.json;
    `efajob uninstall` removes exactly those. --dry-run prints each file instead.
    """


unit_dir_option = click.option("--unit-dir", type=click.Path(file_okay=False), default=UNIT_DIR,
                               show_default=True, help="Where systemd units go.")
logrotate_dir_option = click.option("--logrotate-dir", type=click.Path(file_okay=False),
                                    default=LOGROTATE_DIR, show_default=True,
                                    help="Where the logrotate rule goes (when `log_file` is set).")
bind_option = click.option("--bind", default="127.0.0.1", show_default=True,
                           help="Address the dashboard listens on (see `dashboard serve`).")
port_option = click.option("--port", type=click.IntRange(min=1, max=65535),
                           default=DASHBOARD_PORT, show_default=True,
                           help="The dashboard's TCP port.")


def _config_named(config_path: Optional[str], root: Optional[str], cfg: Config) -> Optional[str]:
    """The config file the units name: the node's path (not the --root copy)."""
    if root:
        return config_on_node(config_path, root)
    if config_path:
        return os.path.abspath(config_path)
    return os.path.abspath(cfg.source) if cfg.source else None


def plan_systemd(cfg: Config, *, python: str, config_file: Optional[str], node: Optional[str],
                 unit_path: str, logrotate_dir: str) -> List["FileSpec"]:
    """The daemon's unit, and the logrotate rule when the config sets `log_file`."""
    from efajob.deploy.manifest import FileSpec

    specs = [FileSpec(unit_path, render_unit(cfg, python=python, config_file=config_file,
                                             node=node).encode(), UNIT_MODE, "systemd")]
    if cfg.log_file:
        specs.append(FileSpec(os.path.join(logrotate_dir, LOGROTATE_NAME),
                              render_logrotate(cfg.log_file).encode(), UNIT_MODE, "logrotate"))
    return specs


def plan_dashboard(cfg: Config, *, python: str, config_file: Optional[str], unit_dir: str,
                   bind: str, port: int) -> List["FileSpec"]:
    """The head node's units: the dashboard, and the job index's service and timer."""
    from efajob.deploy.manifest import FileSpec

    text = render_dashboard_unit(python=python, config_file=config_file, bind=bind, port=port)
    service, timer = render_index_units(cfg, python=python, config_file=config_file)
    return [FileSpec(os.path.join(unit_dir, DASHBOARD_UNIT_NAME), text.encode(), UNIT_MODE,
                     "dashboard"),
            FileSpec(os.path.join(unit_dir, INDEX_SERVICE_NAME), service.encode(), UNIT_MODE,
                     "index"),
            FileSpec(os.path.join(unit_dir, INDEX_TIMER_NAME), timer.encode(), UNIT_MODE,
                     "index")]


def _python(python: Optional[str]) -> str:
    from efajob.errors import UsageError

    py = python or sys.executable
    if not os.path.isabs(py):
        raise UsageError(f"--python must be an absolute path, got {py!r}")
    return py


@install.command("systemd")
@config_option
@node_option
@python_option
@click.option("--output", type=click.Path(dir_okay=False), default=None,
              help=f"Where to write the unit ('-': print it, nothing else) [default: "
              f"UNIT_DIR/{UNIT_NAME}].")
@unit_dir_option
@logrotate_dir_option
@dry_run_option
@root_option
@handle_errors
def install_systemd(config_path: Optional[str], node: Optional[str], python: Optional[str],
                    output: Optional[str], unit_dir: str, logrotate_dir: str, dry_run: bool,
                    root: Optional[str]) -> None:
    """Write the efajob-node.service unit (and the logrotate rule when `log_file` is set).

    The unit names this interpreter by its absolute path. Then: systemctl daemon-reload &&
    systemctl enable --now efajob-node.
    """
    cfg = load_node_config(config_path, node, root)
    py = _python(python)
    if output == "-":
        click.echo(render_unit(cfg, python=py, config_file=_config_named(config_path, root, cfg),
                               node=node), nl=False)
        return
    specs = plan_systemd(cfg, python=py, config_file=_config_named(config_path, root, cfg), node=node,
                         unit_path=output or os.path.join(unit_dir, UNIT_NAME),
                         logrotate_dir=logrotate_dir)
    write_specs(specs, state_dir=cfg.state_dir, root=root, dry_run=dry_run)
    if not dry_run:
        click.echo(f"next: systemctl daemon-reload && systemctl enable --now {UNIT_NAME}")


@install.command("dashboard")
@config_option
@python_option
@bind_option
@port_option
@unit_dir_option
@dry_run_option
@root_option
@handle_errors
def install_dashboard(config_path: Optional[str], python: Optional[str], bind: str, port: int,
                      unit_dir: str, dry_run: bool, root: Optional[str]) -> None:
    """Write the head node's units: efajob-dashboard.service (DynamicUser, read-only system)
    and efajob-index.service with its timer (`efajob index update` every minute, as root:
    the job index `efajob jobs` reads, and the job summaries in Slurm's accounting).

    Then: systemctl daemon-reload && systemctl enable --now efajob-dashboard efajob-index.timer.
    """
    cfg = load_node_config(config_path, None, root)
    specs = plan_dashboard(cfg, python=_python(python),
                           config_file=_config_named(config_path, root, cfg), unit_dir=unit_dir,
                           bind=bind, port=port)
    write_specs(specs, state_dir=cfg.state_dir, root=root, dry_run=dry_run)
    if not dry_run:
        click.echo(f"next: systemctl daemon-reload && systemctl enable --now "
                   f"{DASHBOARD_UNIT_NAME} {INDEX_TIMER_NAME}")


@install.command("all")
@slurm_scripts_option
@config_option
@node_option
@python_option
@click.option("--dashboard/--no-dashboard", default=True, show_default=True,
              help="Also the head node's units: the dashboard's, and the job index's service "
              "and timer (--no-dashboard on compute nodes).")
@bind_option
@port_option
@unit_dir_option
@logrotate_dir_option
@dry_run_option
@root_option
@handle_errors
def install_all(slurm_scripts_dir: str, config_path: Optional[str], node: Optional[str],
                python: Optional[str], dashboard: bool, bind: str, port: int, unit_dir: str,
                logrotate_dir: str, dry_run: bool, root: Optional[str]) -> None:
    """Everything a plain-Slurm node needs: hooks, the daemon's unit, the logrotate rule
    (when `log_file` is set) and the head node's units (dashboard, job index timer).

    Nothing is written unless every file could be built (a missing interpreter or config
    stops it before the first write).
    """
    cfg = load_node_config(config_path, node, root)
    py = _python(python)
    named = _config_named(config_path, root, cfg)
    specs = plan_wrappers(slurm_scripts_dir, py, config_on_node(config_path, root) if root
                          else config_path, root)
    specs += plan_systemd(cfg, python=py, config_file=named, node=node,
                          unit_path=os.path.join(unit_dir, UNIT_NAME), logrotate_dir=logrotate_dir)
    if dashboard:
        specs += plan_dashboard(cfg, python=py, config_file=named, unit_dir=unit_dir, bind=bind,
                                port=port)
    write_specs(specs, state_dir=cfg.state_dir, root=root, dry_run=dry_run)
    if dry_run:
        return
    d = os.path.abspath(slurm_scripts_dir)
    units = UNIT_NAME + (f" {DASHBOARD_UNIT_NAME} {INDEX_TIMER_NAME}" if dashboard else "")
    click.echo(f"slurm.conf: Prolog={d}/prolog.d/*  Epilog={d}/epilog.d/*  PrologFlags=Alloc")
    click.echo(f"next: systemctl daemon-reload && systemctl enable --now {units}; "
               "then efajob doctor")


@install.command("native")
@dry_run_option
@handle_errors
def install_native(dry_run: bool) -> None:
    """Build the sampler's optional C reader into this efajob install.

    `pip install` from source builds it when a compiler exists; a pure wheel (what
    slurm/parallelcluster/upload.sh builds) ships only its C source. This compiles that source
    with the system's C compiler ($CC, else cc) and this interpreter's headers, checks in a
    fresh interpreter that it loads, and puts it beside the package's modules; the daemon
    uses it from its next start. Without it the sampler reads the same counters in Python,
    about 1.8x slower per sample (docs/performance.md). Exit 10 when it cannot be built (no
    compiler, no Python headers): efajob keeps working without it.
    """
    from efajob.deploy.native import build, package_dir, plan

    p = plan(package_dir())
    if dry_run:
        click.echo(" ".join(p.argv))
        click.echo(f"then: check that it loads, and move it to {p.output}")
        return
    build(p)
    click.echo(f"built {p.output}: the sampler reads counters in C (restart efajob-node to "
               "use it in the daemon)")
