"""Helpers shared by every `efajob` command module: error handling, common options, config.

They live apart from main.py so that the command modules can import them without importing
main.py, which imports those modules to register their commands.
"""
from __future__ import annotations

import functools
import logging
import os
import sys
from typing import Callable, Mapping, Optional

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
    return cfg.replace(**overrides) if overrides else cfg


node_option = click.option("--node", help="This node's name (default: $EFAJOB_NODE, else the "
                           "short host name); fills `{node}` in config paths.")


# -- terminal: width and colour ----------------------------------------------------------------
DEFAULT_WIDTH = 80


def terminal_width(env: Optional[Mapping[str, str]] = None, stream=None) -> int:
    """The columns text output may use: $COLUMNS when it is a number (ps and sacct honour it
    too), else the terminal's width when `stream` (stdout) is one, else 80: a pipe, a file or
    an e-mail gets the classic terminal."""
    env = os.environ if env is None else env
    value = env.get("COLUMNS", "")
    if value.isdigit() and int(value) > 0:
        return int(value)
    stream = sys.stdout if stream is None else stream
    try:
        if stream.isatty():
            return os.get_terminal_size(stream.fileno()).columns or DEFAULT_WIDTH
    except (AttributeError, OSError, ValueError):  # no fileno (a test's buffer), closed
        pass
    return DEFAULT_WIDTH


def want_color(choice: str, *, isatty: bool, env: Optional[Mapping[str, str]] = None) -> bool:
    """--color: `always` and `never` say it; `auto` colours a terminal unless NO_COLOR is set
    (no-color.org: any non-empty value) or TERM=dumb (a terminal that cannot show them)."""
    if choice != "auto":
        return choice == "always"
    env = os.environ if env is None else env
    return isatty and not env.get("NO_COLOR") and env.get("TERM") != "dumb"


def color_option(fn: Callable) -> Callable:
    """--color=auto|always|never, and the older --no-color (kept hidden, as --color=never)."""
    fn = click.option("--no-color", "no_color", is_flag=True, hidden=True,
                      help="Same as --color=never.")(fn)
    return click.option("--color", "color", type=click.Choice(["auto", "always", "never"]),
                        default="auto", show_default=True,
                        help="ANSI colours; auto: on for a terminal, off for NO_COLOR, "
                        "TERM=dumb, a pipe or a file.")(fn)


def resolve_color(color: str, no_color: bool, output: Optional[str] = None) -> bool:
    """The colour decision of a command that prints to stdout (or writes `output`)."""
    if no_color:
        return False
    return want_color(color, isatty=not output and sys.stdout.isatty())


def wide_option(fn: Callable) -> Callable:
    return click.option("-w", "--wide", is_flag=True,
                        help="Every column, whatever the terminal's width (default: the "
                        "columns that fit $COLUMNS or the terminal, 80 for a pipe).")(fn)


def output_width(wide: bool, output: Optional[str] = None) -> Optional[int]:
    """None (no limit) for --wide; 80 for a file; else the terminal's width."""
    if wide:
        return None
    return DEFAULT_WIDTH if output else terminal_width()
