"""`efajob top`: live per-device rates, full screen on a terminal, plain tables on a pipe.

The full-screen view is curses from the standard library: it is on every Python that runs
efajob (no wheel to install on compute nodes), redraws only what changed, knows the terminal's
size and resize events, and restores the terminal on every way out (curses.wrapper). What it
shows is node/topview.py's, pure; this module only reads keys, samples on time and draws.

Ctrl-C exits 130 (handle_errors), `q` and the end of `--count` exit 0. The clock and sleep are
this module's `time` (tests give it a fake one).
"""
from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING, Optional

import click

if TYPE_CHECKING:  # pragma: no cover
    from efajob.node.counters import SnapshotDelta

from efajob.cli.common import config_option, get_config, handle_errors, sysfs_option, terminal_width

# The full screen's keys and the sort each picks: the first letters of the columns (top's own
# P and M are CPU and memory there). Here, not in node/topview.py: importing the view at
# start-up would cost every efajob command its imports (sysfs, counters).
SORT_KEYS = {"n": "name", "t": "tx", "r": "rx", "u": "util", "d": "drops", "x": "retrans"}


def _full_screen_possible() -> bool:
    """A terminal on both ends that can address the cursor: else line mode."""
    term = os.environ.get("TERM", "")
    return sys.stdout.isatty() and sys.stdin.isatty() and term not in ("", "dumb", "unknown")


@click.command()
@sysfs_option
@config_option
@click.option("--interval", type=click.FloatRange(min=0.05), default=1.0, show_default=True,
              help="Seconds between readings.")
@click.option("--count", type=click.IntRange(min=1), default=None,
              help="Stop after this many readings (default: until q or Ctrl-C).")
@click.option("--sort", type=click.Choice(tuple(SORT_KEYS.values())), default="name",
              show_default=True,
              help="Order of the devices (full screen: keys n t r u d x change it).")
@click.option("--plain", is_flag=True, help="Line mode on a terminal too: one table per "
              "interval, as on a pipe.")
@click.option("--no-clear", "plain_alias", is_flag=True, hidden=True, help="Same as --plain.")
@handle_errors
def top(sysfs_root: Optional[str], config_path: Optional[str], interval: float,
        count: Optional[int], sort: str, plain: bool, plain_alias: bool) -> None:
    """Live per-device rates: Gbps, packets/s, drops and retransmits, refreshed every interval.

    On a terminal: a full screen that fits it, with a summary line of the node's totals and,
    when not every device fits, the busiest ones. Keys: q quits; n, t, r, u, d, x sort by
    name, tx, rx, utilisation, drops, retransmits. On a pipe (or with --plain): one table per
    interval, every device and a TOTAL row. Exit codes: 0 (q, or --count reached), 130 Ctrl-C.
    """
    from efajob.node.ethtool import ethtool_reader_from_config
    from efajob.node.instances import lookup
    from efajob.node.sysfs import Sampler

    cfg = get_config(config_path, sysfs_root=sysfs_root)
    itype = lookup(cfg.instance_type)
    with Sampler(cfg.sysfs_root, rediscover_interval=cfg.rediscover_interval,
                 ethtool=ethtool_reader_from_config(cfg)) as sampler:
        if plain or plain_alias or not _full_screen_possible():
            _lines(sampler, itype, interval, count, sort)
        else:
            import curses

            curses.wrapper(_Screen(sampler, itype, interval, count, sort, cfg.node).run)


def _lines(sampler, itype, interval: float, count: Optional[int], sort: str) -> None:
    from efajob.node.counters import diff_snapshots
    from efajob.node.topview import render_top

    width = terminal_width()
    prev = sampler.sample()
    next_at = prev.mono + interval
    shown = 0
    while count is None or shown < count:
        time.sleep(max(0.0, next_at - time.monotonic()))
        next_at += interval
        cur = sampler.sample()
        if shown:
            click.echo("")
        click.echo(render_top(diff_snapshots(prev, cur), sampler.devices, itype, sort=sort,
                              width=width), nl=False)
        prev = cur
        shown += 1


class _Screen:
    """The curses loop: sample on time, redraw on a key, a resize or a new reading."""

    def __init__(self, sampler, itype, interval: float, count: Optional[int], sort: str,
                 node: str):
        self.sampler, self.itype, self.interval = sampler, itype, interval
        self.count, self.sort, self.node = count, sort, node
        self.delta: Optional["SnapshotDelta"] = None

    def run(self, scr) -> None:
        import curses

        from efajob.node.counters import diff_snapshots

        try:
            curses.curs_set(0)
        except curses.error:  # a terminal without an invisible cursor
            pass
        prev = self.sampler.sample()
        next_at = prev.mono + self.interval
        shown = 0
        self.draw(scr)
        while True:
            wait = next_at - time.monotonic()
            if wait <= 0:
                cur = self.sampler.sample()
                self.delta = diff_snapshots(prev, cur)
                prev, shown = cur, shown + 1
                # A long stall (a suspended terminal): the next reading one interval from
                # now, not a burst of catch-up readings.
                next_at = max(next_at + self.interval, cur.mono + self.interval / 2)
                self.draw(scr)
                if self.count is not None and shown >= self.count:
                    return
                continue
            scr.timeout(max(1, int(wait * 1000)))
            key = scr.getch()
            if key in (ord("q"), ord("Q")):
                return
            if key == curses.KEY_RESIZE or (0 <= key < 256 and chr(key) in SORT_KEYS):
                if key != curses.KEY_RESIZE:
                    self.sort = SORT_KEYS[chr(key)]
                self.draw(scr)

    def draw(self, scr) -> None:
        import curses

        from efajob.node.topview import render_screen

        height, width = scr.getmaxyx()
        lines, header = render_screen(self.delta, self.sampler.devices, self.itype,
                                      sort=self.sort, height=height, width=width,
                                      interval=self.interval, node=self.node)
        scr.erase()
        for y, line in enumerate(lines):
            attr = curses.A_BOLD if y == 0 else curses.A_REVERSE if y == header else 0
            try:
                # The bottom-right cell cannot be written without scrolling: one short.
                scr.addnstr(y, 0, line, width - 1 if y == height - 1 else width, attr)
            except curses.error:  # a terminal resized under us: the next draw fits
                pass
        scr.refresh()
