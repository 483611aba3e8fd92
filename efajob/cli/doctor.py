"""`efajob doctor`: check this node's setup, one line per check (efajob/deploy/doctor.py),
exit 0 / 1 / 2 for pass / warnings / failures."""
from __future__ import annotations

import sys
from typing import Optional

import click

from efajob.cli.common import config_option, format_option, get_config, handle_errors, node_option


@click.command()
@config_option
@node_option
@click.option("--slurm-scripts-dir", type=click.Path(file_okay=False), default=None,
              help="Check the hooks in DIR/prolog.d and DIR/epilog.d (default: where the "
              "running Slurm's Prolog and Epilog point).")
@format_option("text", "json")
@handle_errors
def doctor(config_path: Optional[str], node: Optional[str], slurm_scripts_dir: Optional[str],
           fmt: str) -> None:
    """Check this node: EFA devices and counters, the daemon, the hooks and their order,
    PrologFlags=Alloc, the job store, the clock, Prometheus, and whether counters are read
    by the C reader (`efajob install native`) or in Python.

    One line per check: pass, warn, fail (each with its fix) or skip (not checked). Exit
    status: 0 all pass, 1 warnings, 2 failures. Slurm is asked with `scontrol show config`;
    nothing here calls AWS.
    """
    from efajob.deploy.doctor import exit_code, render_json, render_text, run_checks
    from efajob.deploy.doctorfacts import gather

    checks = run_checks(gather(get_config(config_path, node=node),
                               slurm_scripts_dir=slurm_scripts_dir))
    click.echo(render_json(checks) if fmt == "json" else render_text(checks), nl=False)
    sys.exit(exit_code(checks))
