"""The command reference stays in step with the click tree: docs/cli.md's generated sections
and the man page docs/man/efajob.1 are what `python -m efajob.cli.reference` writes now; shell
completion (click's `_EFAJOB_COMPLETE`, as docs/cli.md documents it) completes commands."""
from __future__ import annotations

import os

from click.testing import CliRunner

from efajob import __version__
from efajob.cli.main import main
from efajob.cli.reference import MARKER, render_man, render_markdown, splice_markdown, walk

DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")
FIX = "run `python -m efajob.cli.reference` and commit the result"


def read(*parts: str) -> str:
    with open(os.path.join(DOCS, *parts), encoding="utf-8") as f:
        return f.read()


def test_cli_md_is_generated_from_the_commands():
    current = read("cli.md")
    assert MARKER in current
    assert current == splice_markdown(current, render_markdown(main)), f"docs/cli.md is stale: {FIX}"


def test_man_page_is_generated_from_the_commands():
    assert read("man", "efajob.1") == render_man(main, __version__), f"docs/man/efajob.1 is stale: {FIX}"


def test_every_command_is_documented_once():
    paths = [p for p, _, _ in walk(main)]
    md, man = read("cli.md"), read("man", "efajob.1")
    assert {"efajob report", "efajob top", "efajob status", "efajob dashboard serve"} <= set(paths)
    for p in paths:
        assert md.count(f"\n## {p}\n") == 1, p
        if p != "efajob":
            assert f'.SS "{p} ' in man, p
    assert "2 not running" in md and "_EFAJOB_COMPLETE" in md and "_EFAJOB_COMPLETE" in man
    assert not any(ln.startswith((".", "'")) and not ln[1:2].isalpha() and not ln.startswith(".\\")
                   for ln in man.splitlines() if ln), "a text line that roff reads as a request"


def test_shell_completion_as_documented():
    r = CliRunner().invoke(main, [], prog_name="efajob", env={"_EFAJOB_COMPLETE": "bash_source"})
    assert r.exit_code == 0 and "_efajob_completion" in r.output
    r = CliRunner().invoke(main, [], prog_name="efajob",
                           env={"_EFAJOB_COMPLETE": "bash_complete", "COMP_WORDS": "efajob rep",
                                "COMP_CWORD": "1"})
    assert r.exit_code == 0 and "plain,report" in r.output.split()
    r = CliRunner().invoke(main, [], prog_name="efajob",
                           env={"_EFAJOB_COMPLETE": "bash_complete",
                                "COMP_WORDS": "efajob report 1 --color ", "COMP_CWORD": "4"})
    assert {"plain,auto", "plain,always", "plain,never"} <= set(r.output.split())
