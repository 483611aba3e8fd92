"""The command reference, generated from the click tree: the command sections of docs/cli.md
and the man page docs/man/efajob.1. tests/test_reference.py regenerates both and fails when
the files in the repository differ, so the documentation cannot drift from the code.

    python -m efajob.cli.reference          # rewrite docs/cli.md's generated part and the man page

Help is laid out at 100 columns whatever the terminal, so the output is the same everywhere.
"""
from __future__ import annotations

import os
import sys
from typing import Iterator, List, Optional, Tuple

import click

WIDTH = 100
MARKER = "<!-- Generated from the click tree by `python -m efajob.cli.reference`: edit the " \
         "commands' help, not this part. -->"


def walk(cmd: click.Command, name: str = "efajob",
         parent: Optional[click.Context] = None) -> Iterator[Tuple[str, click.Command, click.Context]]:
    """(full name, command, context) for the group and every command below it, depth first,
    in the order the commands were registered (the order of `efajob --help`'s sections)."""
    # As `COLUMNS=100 efajob ... --help` lays it out: click keeps two columns free.
    settings = dict(cmd.context_settings, terminal_width=WIDTH - 2, max_content_width=WIDTH)
    ctx = click.Context(cmd, info_name=name, parent=parent, **settings)
    yield ctx.command_path, cmd, ctx
    if isinstance(cmd, click.Group):
        # A lazy group (cli/main.py) loads its commands only when asked: all of them here.
        subs = cmd.all_commands(ctx) if hasattr(cmd, "all_commands") else cmd.commands
        for sub_name, sub in subs.items():
            if not sub.hidden:
                yield from walk(sub, sub_name, ctx)


# -- Markdown (docs/cli.md) -----------------------------------------------------------------------
def render_markdown(root: click.Command) -> str:
    """One section per command: its `--help`, as a console block."""
    out: List[str] = []
    for path, cmd, ctx in walk(root):
        out += [f"## {path}", "", "```console", f"$ {path} --help",
                cmd.get_help(ctx).rstrip(), "```", ""]
    return "\n".join(out)


def splice_markdown(current: str, generated: str) -> str:
    """docs/cli.md: its hand-written head (up to MARKER), then the generated sections."""
    head = current.split(MARKER, 1)[0].rstrip("\n")
    return f"{head}\n\n{MARKER}\n\n{generated}"


# -- roff (docs/man/efajob.1) -------------------------------------------------------------------
def _roff(text: str) -> str:
    """Text safe in a roff paragraph: backslashes escaped, no line starting a request."""
    text = text.replace("\\", "\\e")
    return "\n".join(("\\&" + ln if ln.startswith((".", "'")) else ln) for ln in text.split("\n"))


def _paragraphs(text: str) -> List[str]:
    return [" ".join(p.split()) for p in (text or "").split("\n\n") if p.strip()]


MAN_TAIL = """.SH EXIT STATUS
0 success; 1 unexpected error; 2 usage or configuration error; 3 the sysfs root is unusable;
4 local store, job store or record error; 5 job not found; 6 job id ambiguous (use
\\-\\-cluster); 7 Slurm command failed or timed out; 8 sink error; 9 simulator error;
130 interrupted (Ctrl-C).
.B efajob status
exits 0 healthy, 1 degraded, 2 not running or stale.
.B efajob doctor
exits 0 when every check passes, 1 on a warning, 2 on a failure.
.B efajob\\-hook
always exits 0.
.SH ENVIRONMENT
.TP
.B EFAJOB_CONFIG
The config file (default /etc/efajob/config.toml).
.TP
.B EFAJOB_<KEY>
Overrides the config's top-level key (upper case), e.g. EFAJOB_STORE.
.TP
.B COLUMNS
Width of text output (else the terminal's, 80 for a pipe or a file).
.TP
.B NO_COLOR
Any non-empty value turns colour off (as does TERM=dumb); \\-\\-color=always overrides.
.TP
.B _EFAJOB_COMPLETE
Shell completion: eval "$(_EFAJOB_COMPLETE=bash_source efajob)" in ~/.bashrc
(zsh_source for zsh; fish_source for fish).
.SH FILES
.TP
.I /etc/efajob/config.toml
The configuration (TOML).
.SH SEE ALSO
The project's docs/ directory: cli.md, report.md, daemon.md, hooks.md, dashboard.md.
"""


def render_man(root: click.Command, version: str) -> str:
    """The whole CLI as one man page: every command's synopsis, description and options."""
    out = [f'.TH EFAJOB 1 "" "efajob {version}" "User Commands"', ".SH NAME",
           "efajob \\- " + _roff(root.get_short_help_str(limit=200).rstrip(".").split(": ", 1)[-1]),
           ".SH SYNOPSIS",
           ".B efajob", "[\\fIOPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR]...", ".SH DESCRIPTION"]
    for p in _paragraphs(root.help or ""):
        out += [_roff(p), ".PP"]
    out[-1] = ".SH COMMANDS"
    for path, cmd, ctx in walk(root):
        if path == "efajob":
            continue
        usage = " ".join(cmd.collect_usage_pieces(ctx))
        out.append(f'.SS "{_roff(path)} {_roff(usage)}"')
        for p in _paragraphs(cmd.help or ""):
            out += [_roff(p), ".PP"]
        # Options only: arguments are in the synopsis (and click >= 8.2 gives them a record
        # of their own where 8.1 does not: the page must not depend on click's version).
        for param in cmd.get_params(ctx):
            rec = param.get_help_record(ctx) if isinstance(param, click.Option) else None
            if rec is None:
                continue
            opts, help_ = rec
            out += [".TP", "\\fB" + _roff(opts).replace("-", "\\-") + "\\fR",
                    _roff(" ".join(help_.split())) if help_ else ""]
        if out[-1] == ".PP":
            out.pop()
    return "\n".join(ln for ln in out if ln != "") + "\n" + MAN_TAIL


def main(argv: Optional[List[str]] = None) -> int:
    from efajob import __version__
    from efajob.cli.main import main as root

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    cli_md = os.path.join(repo, "docs", "cli.md")
    with open(cli_md, encoding="utf-8") as f:
        current = f.read()
    os.makedirs(os.path.join(repo, "docs", "man"), exist_ok=True)
    for path, text in ((cli_md, splice_markdown(current, render_markdown(root))),
                       (os.path.join(repo, "docs", "man", "efajob.1"), render_man(root, __version__))):
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
