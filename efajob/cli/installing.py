"""What every `efajob install` command shares: --dry-run, --root, and writing the files with
their record in the manifest (efajob/deploy/manifest.py). Apart from install.py so that
hooks.py (`install hooks`) can use it without importing install.py, which imports hooks.py."""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence

import click

if TYPE_CHECKING:
    from efajob.config import Config
    from efajob.deploy.manifest import FileSpec

dry_run_option = click.option("--dry-run", is_flag=True, help="Print every file it would "
                              "write, with its content; write nothing.")
root_option = click.option("--root", type=click.Path(file_okay=False), default=None,
                           help="Install under this directory instead of / (image builds, "
                           "tests); the files still name the paths they will have on the node.")


def config_on_node(config_path: Optional[str], root: Optional[str]) -> Optional[str]:
    """The config file as the node names it. With --root and no --config: the root's
    /etc/efajob/config.toml when it has one (never this machine's), else none (defaults)."""
    import os

    from efajob.config import DEFAULT_PATH
    from efajob.deploy.manifest import rooted

    if config_path:
        return os.path.abspath(config_path)
    if root:
        return DEFAULT_PATH if os.path.isfile(rooted(root, DEFAULT_PATH)) else None
    return None


def load_node_config(config_path: Optional[str], node: Optional[str],
                     root: Optional[str]) -> "Config":
    """The config as the node will read it: with --root, the copy under the root, or the
    defaults when the root has none (never this machine's own config file)."""
    import os

    from efajob.cli.common import get_config
    from efajob.config import build_config
    from efajob.deploy.manifest import rooted

    named = config_on_node(config_path, root)
    if named is None and root:
        return build_config({}, env=os.environ, node=node)
    return get_config(rooted(root, named) if named else None, node=node)


def write_specs(specs: Sequence["FileSpec"], *, state_dir: str, root: Optional[str],
                dry_run: bool) -> None:
    """Print (dry run) or write and record the files."""
    from efajob.deploy.manifest import install_files, manifest_path, render_plan
    from efajob.errors import EfajobError

    if dry_run:
        click.echo(render_plan(specs), nl=False)
        click.echo(f"--- would record them in {manifest_path(state_dir)} (nothing written)")
        return
    try:
        install_files(specs, state_dir=state_dir, root=root)
    except OSError as e:
        raise EfajobError(f"cannot write {e.filename or 'a file'}: {e.strerror}") from None
    for s in specs:
        click.echo(f"wrote {s.path}")
    click.echo(f"recorded in {manifest_path(state_dir)} (efajob uninstall removes them)")
