"""Helpers shared by every `efajob` command module: error handling, common options, config.

They live apart from main.py so that the command modules can import them without importing
main.py, which imports those modules to register their commands.
"""
from __future__ import annotations

import functools
import logging
import sys
from typing import Callable, Optional

import click

from efajob.config import Config, load_config
from efajob.errors import EfajobError

log = logging.getLogger("efajob")


def setup_logging(level: str = "info", verbose: bool = False) -> None:
    lvl = logging.DEBUG if verbose else getattr(logging, level.upper(), logging.INFO)
    logging.basicConfig(level=lvl, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        stream=sys.stderr)


def handle_errors(fn: Callable) -> Callable:
    """Turn library errors into one `error:` line and the error's exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except EfajobError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            sys.exit(130)
        except BrokenPipeError:  # `efajob ... | head`
            sys.exit(0)

    return wrapper


def config_option(fn: Callable) -> Callable:
    fn = click.option("--config", "config_path", type=click.Path(dir_okay=False),
                      help="Config file (default: $EFAJOB_CONFIG, else /etc/efajob/config.toml).")(fn)
    return fn


def sysfs_option(fn: Callable) -> Callable:
    return click.option("--sysfs-root", type=click.Path(file_okay=False),
                        help="Root of the sysfs tree to read (default: config `sysfs_root`, /sys).")(fn)


def format_option(*choices: str) -> Callable:
    return click.option("--format", "fmt", type=click.Choice(choices), default=choices[0],
                        show_default=True, help="Output format.")


def get_config(config_path: Optional[str] = None, node: Optional[str] = None, **overrides) -> Config:
    from dataclasses import replace

    cfg = load_config(config_path, node=node)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if cfg.cluster == "default" and "cluster" not in overrides:
        # As the hooks take SLURM_CLUSTER_NAME: the daemon's status files and metrics, and the
        # CLI, must name the cluster the records are filed under.
        from efajob.config import validate_name
        from efajob.errors import ConfigError
        from efajob.slurm.conf import read_cluster_name

        name = read_cluster_name()
        if name:
            try:
                overrides["cluster"] = validate_name("cluster", name)
            except ConfigError:
                pass  # a name efajob cannot use in paths: keep "default", as the hooks do
    return replace(cfg, **overrides) if overrides else cfg


node_option = click.option("--node", help="This node's name (default: $EFAJOB_NODE, else the "
                           "short host name); fills `{node}` in config paths.")
