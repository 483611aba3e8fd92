"""The `efajob` command. The only place that prints and chooses exit codes (library raises).

Exit codes (docs/cli.md): 0 ok, 1 unexpected error, 2 usage or config error, 3 sysfs root
unusable, 4 store or record error, 5 job not found, 6 ambiguous job, 7 Slurm error,
8 sink error, 9 simulator error, 130 interrupted.
"""
from __future__ import annotations

import click

from efajob import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="efajob")
def main() -> None:
    """efajob: exact, job-scoped EFA network accounting for Slurm clusters on AWS.

    Every Slurm job gets a per-node, per-device account of its EFA traffic (through the
    Prolog/Epilog hooks `efajob-hook`), a node daemon keeps the baseline, and `efajob report`
    says what went wrong. Start with `efajob demo`, or `efajob devices` on an EFA node.
    """


def _register() -> None:
    """The commands, one module per group (main.py only builds the group: none of the command
    modules imports it back)."""
    from efajob.cli.node import daemon, devices, snapshot, status
    from efajob.cli.top import top

    for cmd in (devices, snapshot, top, daemon, status):
        main.add_command(cmd)
    from efajob.cli.install import install
    from efajob.cli.hooks import install_hooks

    main.add_command(install)
    install.add_command(install_hooks)
    from efajob.cli.uninstall import uninstall

    main.add_command(uninstall)
    from efajob.cli.doctor import doctor

    main.add_command(doctor)
    from efajob.cli.simulate import simulate

    main.add_command(simulate)
    from efajob.cli.report import demo, jobs, report

    main.add_command(report)
    main.add_command(jobs)
    main.add_command(demo)
    from efajob.cli.cloudwatch import cloudwatch
    from efajob.cli.prometheus import prometheus

    main.add_command(cloudwatch)
    main.add_command(prometheus)
    from efajob.cli.dashboard import dashboard

    main.add_command(dashboard)
    from efajob.cli.index import index

    main.add_command(index)
    from efajob.cli.accounting import accounting
    from efajob.cli.compare import compare

    main.add_command(compare)
    main.add_command(accounting)
    from efajob.cli.fabric import check_node, nodes

    main.add_command(nodes)
    main.add_command(check_node)


_register()

if __name__ == "__main__":  # pragma: no cover
    main()
