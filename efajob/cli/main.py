"""The `efajob` command. The only place that prints and chooses exit codes (library raises).

Exit codes (docs/cli.md): 0 ok, 1 unexpected error, 2 usage or config error, 3 sysfs root
unusable, 4 store or record error, 5 job not found, 6 ambiguous job, 7 Slurm error,
8 sink error, 9 simulator error, 130 interrupted.
"""
from __future__ import annotations

import importlib
from typing import Dict, List, Optional

import click

from efajob import __version__

# name -> "module:attribute", in the order of docs/cli.md's sections. A command's module is
# imported only when that command runs (or for help listing every command): importing all of
# them cost every `efajob ...` about 20 ms (the simulator, the HTML renderer, the installer).
# None of these modules imports this one back.
COMMANDS = (
    ("devices", "efajob.cli.node:devices"), ("snapshot", "efajob.cli.node:snapshot"),
    ("top", "efajob.cli.top:top"), ("daemon", "efajob.cli.node:daemon"),
    ("status", "efajob.cli.node:status"), ("install", "efajob.cli.install:install"),
    ("uninstall", "efajob.cli.uninstall:uninstall"), ("doctor", "efajob.cli.doctor:doctor"),
    ("simulate", "efajob.cli.simulate:simulate"), ("report", "efajob.cli.report:report"),
    ("jobs", "efajob.cli.report:jobs"), ("demo", "efajob.cli.report:demo"),
    ("cloudwatch", "efajob.cli.cloudwatch:cloudwatch"),
    ("prometheus", "efajob.cli.prometheus:prometheus"),
    ("dashboard", "efajob.cli.dashboard:dashboard"), ("index", "efajob.cli.index:index"),
    ("compare", "efajob.cli.compare:compare"), ("accounting", "efajob.cli.accounting:accounting"),
    ("nodes", "efajob.cli.fabric:nodes"), ("check-node", "efajob.cli.fabric:check_node"),
)
# Subcommands defined in another module than their group's (that module imports the group's).
SUBCOMMANDS = {"install": ("efajob.cli.hooks:install_hooks",)}


def _resolve(target: str) -> click.Command:
    module, _, attr = target.partition(":")
    cmd = getattr(importlib.import_module(module), attr)
    assert isinstance(cmd, click.Command), target
    return cmd


class LazyGroup(click.Group):  # type: ignore[misc]  # click is Any to mypy (pyproject.toml)
    """A click group that imports a command's module when the command is looked up."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> Optional[click.Command]:
        if cmd_name not in self.commands:
            target = dict(COMMANDS).get(cmd_name)
            if target is None:
                return None
            cmd = _resolve(target)
            for sub in SUBCOMMANDS.get(cmd_name, ()):
                if isinstance(cmd, click.Group):
                    cmd.add_command(_resolve(sub))
            self.add_command(cmd, cmd_name)
        return self.commands.get(cmd_name)

    def list_commands(self, ctx: click.Context) -> List[str]:
        return sorted(dict(COMMANDS))

    def all_commands(self, ctx: click.Context) -> Dict[str, click.Command]:
        """Every command, loaded, in COMMANDS' order (the reference's sections)."""
        got = {name: self.get_command(ctx, name) for name, _ in COMMANDS}
        return {k: v for k, v in got.items() if v is not None}


@click.group(cls=LazyGroup,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="efajob")
def main() -> None:
    """efajob: exact, job-scoped EFA network accounting for Slurm clusters on AWS.

    Every Slurm job gets a per-node, per-device account of its EFA traffic (through the
    Prolog/Epilog hooks `efajob-hook`), a node daemon keeps the baseline, and `efajob report`
    says what went wrong. Start with `efajob demo`, or `efajob devices` on an EFA node.
    """


if __name__ == "__main__":  # pragma: no cover
    main()
