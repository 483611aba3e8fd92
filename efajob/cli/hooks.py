"""`efajob install hooks`: Slurm Prolog/Epilog wrappers for this installation (docs/hooks.md).

Why wrappers: slurmd runs hooks with no PATH and no HOME (shared/notes/slurm.md), so
`#!/usr/bin/env python3` would find the system Python, not this installation. A wrapper names
this interpreter by absolute path and, when given, the config file (slurmd passes no
EFAJOB_CONFIG either).

Why these names: with `Prolog=/dir/prolog.d/*` Slurm runs the scripts in REVERSE lexical order.
The prolog's snapshot should be taken as late as possible (after site checks such as
ParallelCluster's `90_pcluster_health_check_manager`), so it must run last: the lexically
smallest name, `00_efajob`. The epilog's snapshot should be taken as early as possible (before
cleanup scripts spend time), so it must run first: the lexically largest name, `99_efajob`.
"""
from __future__ import annotations

import json
import os
import shlex
import sys
from typing import TYPE_CHECKING, List, Optional, Tuple

import click

from efajob.cli.installing import dry_run_option, root_option
from efajob.errors import UsageError

if TYPE_CHECKING:
    from efajob.deploy.manifest import FileSpec

# No import of cli/main.py: it imports this module to register the command, and
# the pure helpers below must be importable on their own (bench/hooks.py, tests).

PROLOG_NAME = "00_efajob"  # runs LAST of prolog.d/* (reverse lexical order)
EPILOG_NAME = "99_efajob"  # runs FIRST of epilog.d/*
SCRIPT_MODE = 0o755


def render_wrapper(kind: str, python: str, config_file: Optional[str],
                   paths: Optional[List[str]] = None) -> str:
    """The wrapper script (pure). It exits 0 even when the interpreter is gone or crashes:
    a failing Prolog/Epilog drains the node, and efajob must never do that.

    With `paths` (where efajob and its site-packages live) the interpreter runs with `-S`:
    no `site` module, no .pth files. That skips most of the interpreter's start-up (with an
    editable install, `site` alone costs more than the whole prolog; bench/hooks.py) and
    leaves nothing on the hook's import path but the standard library and those directories.
    """
    if kind not in ("prolog", "epilog"):
        raise UsageError(f"hook kind {kind!r} is not prolog or epilog")
    lines = [
        "#!/bin/sh",
        f"# efajob {kind} hook, written by `efajob install hooks` (docs/hooks.md).",
        "# Slurm gives hooks no PATH: every path here is absolute. Always exits 0: a failing",
        "# hook would drain the node.",
    ]
    if config_file:
        lines += [f"EFAJOB_CONFIG={shlex.quote(config_file)}", "export EFAJOB_CONFIG"]
    if paths:
        code = (f"import sys; sys.path[:0] = {json.dumps(list(paths))}; "
                "from efajob.hooks.entry import main; sys.exit(main())")
        run = f'    "$PY" -I -S -c {shlex.quote(code)} {kind}'
    else:
        run = f'    "$PY" -I -m efajob.hooks.entry {kind}'
    lines += [
        f"PY={shlex.quote(python)}",
        'if [ -x "$PY" ]; then',
        # -I: ignore PYTHON* variables and the user site (root runs this for every job).
        run,
        "else",
        f'    echo "efajob-hook: $PY is missing: no efajob {kind} for job $SLURM_JOB_ID" >&2',
        "fi",
        "exit 0",
        "",
    ]
    return "\n".join(lines)


_PATHS_PROBE = ("import json, os, sysconfig, efajob; "
                "print(json.dumps([os.path.dirname(os.path.dirname(os.path.abspath(efajob.__file__))), "
                "sysconfig.get_paths()['purelib']]))")


def import_paths(python: str, timeout: float = 30.0) -> List[str]:
    """Where `python` finds efajob and its site-packages (asked of that interpreter, which
    may not be this one). Raises UsageError when it cannot import efajob."""
    import subprocess

    try:
        p = subprocess.run([python, "-I", "-c", _PATHS_PROBE], capture_output=True, text=True,
                           timeout=timeout, env={})
    except (OSError, subprocess.TimeoutExpired) as e:
        raise UsageError(f"cannot run {python}: {e}") from None
    if p.returncode != 0:
        raise UsageError(f"{python} cannot import efajob: "
                         f"{(p.stderr.strip().splitlines() or ['?'])[-1]}")
    paths = json.loads(p.stdout)
    return list(dict.fromkeys(x for x in paths if x))


def plan_wrappers(scripts_dir: str, python: str, config_file: Optional[str],
                  root: Optional[str] = None) -> List["FileSpec"]:
    """The two wrappers, `<dir>/prolog.d/00_efajob` and `<dir>/epilog.d/99_efajob` (mode
    0755), not yet written. `root` prefixes the paths checked here (a fake root), not the
    paths the wrappers name. Raises UsageError."""
    from efajob.deploy.manifest import FileSpec, rooted

    if not os.path.isabs(python):
        raise UsageError(f"--python must be an absolute path (hooks get no PATH), got {python!r}")
    if not (os.path.isfile(python) and os.access(python, os.X_OK)):
        raise UsageError(f"--python {python} is not an executable file")
    paths = import_paths(python)
    if config_file is not None:
        config_file = os.path.abspath(config_file)
        if not os.path.isfile(rooted(root, config_file)):
            raise UsageError(f"--config {config_file} does not exist")
    out = []
    for kind, name in (("prolog", PROLOG_NAME), ("epilog", EPILOG_NAME)):
        path = os.path.join(os.path.abspath(scripts_dir), f"{kind}.d", name)
        out.append(FileSpec(path, render_wrapper(kind, python, config_file, paths).encode(),
                            SCRIPT_MODE, "hooks"))
    return out


def install_wrappers(scripts_dir: str, python: str, config_file: Optional[str]) -> List[Tuple[str, str]]:
    """Write the wrappers (plan_wrappers) atomically, without a manifest (bench/hooks.py).
    Returns [(kind, path)]. Raises UsageError / OSError."""
    from efajob.hooks.runfiles import atomic_write, ensure_dir

    out = []
    for kind, spec in zip(("prolog", "epilog"), plan_wrappers(scripts_dir, python, config_file)):
        ensure_dir(os.path.dirname(spec.path), 0o755)
        atomic_write(spec.path, spec.content, mode=spec.mode)
        out.append((kind, spec.path))
    return out


slurm_scripts_option = click.option(
    "--slurm-scripts-dir", required=True, type=click.Path(file_okay=False),
    help="Directory holding prolog.d/ and epilog.d/ (ParallelCluster: /opt/slurm/etc/scripts).")
python_option = click.option(
    "--python", "python", default=None, type=click.Path(dir_okay=False),
    help="Interpreter the hooks and units run (default: the one running this command; "
    "named by its absolute path).")


@click.command("hooks")
@slurm_scripts_option
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="Config file the hooks read (baked into the wrappers: slurmd passes no "
                   "EFAJOB_CONFIG). Default: none, i.e. /etc/efajob/config.toml.")
@python_option
@dry_run_option
@root_option
def install_hooks(slurm_scripts_dir: str, config_path: Optional[str], python: Optional[str],
                  dry_run: bool, root: Optional[str]) -> None:
    """Write the Slurm Prolog/Epilog wrappers: prolog.d/00_efajob and epilog.d/99_efajob.

    slurm.conf then needs `Prolog=DIR/prolog.d/*`, `Epilog=DIR/epilog.d/*` and
    `PrologFlags=Alloc` (without it the Prolog runs only where a job step starts; see
    docs/hooks.md). What it writes is recorded for `efajob uninstall`.
    """
    from efajob.cli.common import handle_errors

    handle_errors(_install_hooks)(slurm_scripts_dir, config_path, python, dry_run, root)


def _install_hooks(slurm_scripts_dir: str, config_path: Optional[str], python: Optional[str],
                   dry_run: bool, root: Optional[str]) -> None:
    from efajob.cli.installing import config_on_node, load_node_config, write_specs

    named = config_on_node(config_path, root) if root else config_path
    specs = plan_wrappers(slurm_scripts_dir, python or sys.executable, named, root)
    # The manifest goes to the state dir the hooks' config names.
    cfg = load_node_config(config_path, None, root)
    write_specs(specs, state_dir=cfg.state_dir, root=root, dry_run=dry_run)
    d = os.path.abspath(slurm_scripts_dir)
    click.echo(f"slurm.conf: Prolog={d}/prolog.d/*  Epilog={d}/epilog.d/*  PrologFlags=Alloc")
