"""What every `efajob install` command shares: --dry-run, --root, and writing the files with
their record in the manifest (efajob/deploy/manifest.py). Apart from install.py so that
hooks.py (`install hooks`) can use it without importing install.py, which imports hooks.py."""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence

import click

if TYPE_CHECKING:
    from efajob.deploy.manifest import FileSpec

dry_run_option = click.option("--dry-run", is_flag=True, help="Print every file it would "
                              "write, with its content; write nothing.")
root_option = click.option("--root", type=click.Path(file_okay=False), default=None,
                           help="Install under this directory instead of / (image builds, "
                           "tests); the files still name the paths they will have on the node.")


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
