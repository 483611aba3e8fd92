"""`efajob top` full screen in a real terminal: tmux at 80x24 and 200x50, driven with send-keys
and read with capture-pane. The header is visible, `q` quits with 0, Ctrl-C exits 130, and the
sort keys change the order.

Every check polls the pane until the expected text appears (wait_until, 120 s): how fast top
draws on a busy machine never decides the verdict. Traffic comes from `efajob simulate traffic
--realtime` on the last device only, so "busiest first" and "by name" disagree.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from conftest import require, wait_until

from efajob.sim import build_node

EFAJOB = [sys.executable, "-c", "from efajob.cli.main import main; main()"]
TIMEOUT = 120.0  # bounds a hang only


class Pane:
    """One tmux server of our own (-L: never the user's), one session running `argv`."""

    def __init__(self, name: str, argv, width: int, height: int, env):
        self.tmux = ["tmux", "-L", name]
        # The shell traps SIGINT (a handler, not an ignore: top gets the default back at exec)
        # so that Ctrl-C, which tmux sends to the whole foreground group, leaves it alive to
        # print top's exit code.
        shell = "trap true INT; " + " ".join(_quote(a) for a in argv) + '; echo "EXIT=$?"; exec sleep 3600'
        subprocess.run(self.tmux + ["-f", "/dev/null", "new-session", "-d", "-s", "t", "-x",
                                    str(width), "-y", str(height), "sh", "-c", shell],
                       check=True, env=env, timeout=60)

    def keys(self, *keys: str) -> None:
        subprocess.run(self.tmux + ["send-keys", "-t", "t", *keys], check=True, timeout=60)

    def text(self) -> str:
        p = subprocess.run(self.tmux + ["capture-pane", "-p", "-t", "t"], capture_output=True,
                           text=True, timeout=60)
        return p.stdout

    def wait(self, pred, what: str) -> str:
        seen = [""]

        def ok() -> bool:
            seen[0] = self.text()
            return pred(seen[0])

        assert wait_until(ok, TIMEOUT), f"never saw {what}; the pane:\n{seen[0]}"
        return seen[0]

    def close(self) -> None:
        subprocess.run(self.tmux + ["kill-server"], capture_output=True, timeout=60)


def _quote(s: str) -> str:
    import shlex

    return shlex.quote(s)


def device_rows(text: str):
    lines = text.splitlines()
    at = next(i for i, ln in enumerate(lines) if ln.startswith("DEVICE"))
    return [ln.split() for ln in lines[at + 1:] if ln.startswith("rdmap")]


def busy_first(text: str, sort: str) -> bool:
    """The title says `sort` and the busy device leads the table with traffic on it."""
    if f"sort {sort}" not in text or "DEVICE" not in text:
        return False
    rows = device_rows(text)
    return bool(rows) and rows[0][0] == "rdmap201s0" and float(rows[0][1].replace(",", "")) > 0


def by_name_with_traffic(text: str) -> bool:
    if "sort name" not in text or "DEVICE" not in text:
        return False
    rows = device_rows(text)
    busy = [r for r in rows if r[0] == "rdmap201s0" and float(r[1].replace(",", "")) > 0]
    return bool(rows) and rows[0][0] == "rdmap79s0" and busy == [rows[-1]]


@pytest.fixture
def node(tmp_path):
    require("tmux", shutil.which("tmux") is not None, "not on PATH (apt-get install tmux)")
    root = str(tmp_path / "n1")
    build_node(root, "p5.48xlarge")
    env = dict(os.environ, EFAJOB_CONFIG="", EFAJOB_INSTANCE_TYPE="p5.48xlarge")
    traffic = subprocess.Popen(EFAJOB + ["simulate", "traffic", "--root", root, "--tx-gbps", "40",
                                         "--rx-gbps", "20", "--seconds", "3600", "--realtime",
                                         "--step", "0.25", "--devices", "31"],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    yield root, env
    traffic.kill()
    traffic.wait(timeout=60)


def start(node, width: int, height: int) -> Pane:
    root, env = node
    env = dict(env, TERM="xterm-256color")
    return Pane(f"efajob-test-{os.getpid()}-{width}", EFAJOB + ["top", "--sysfs-root", root,
                                                               "--interval", "0.5"],
                width, height, env)


@pytest.mark.integration
def test_top_80x24_header_sort_and_q(node):
    pane = start(node, 80, 24)
    try:
        text = pane.wait(by_name_with_traffic, "the table sorted by name with traffic")
        lines = text.splitlines()
        assert lines[0].startswith("efajob top on ") and "p5.48xlarge" in lines[0]
        assert lines[1].startswith("32 EFA devices  tx ")
        assert all(len(ln) <= 80 for ln in lines) and len(lines) <= 24
        assert "20 of 32 devices (the busiest)" in text
        pane.keys("t")
        pane.wait(lambda t: busy_first(t, "tx"), "the busy device first after `t`")
        pane.keys("q")
        pane.wait(lambda t: "EXIT=0" in t, "top to exit 0 on q")
    finally:
        pane.close()


@pytest.mark.integration
def test_top_200x50_every_device_sort_and_ctrl_c(node):
    pane = start(node, 200, 50)
    try:
        text = pane.wait(by_name_with_traffic, "the table sorted by name with traffic")
        assert text.splitlines()[0].startswith("efajob top on ")
        assert len(device_rows(text)) == 32 and "of 32 devices" not in text
        assert "TX_PPS" in text and "q quit  sort: n name" in text
        pane.keys("r")
        pane.wait(lambda t: busy_first(t, "rx"), "the busy device first after `r`")
        pane.keys("n")
        pane.wait(by_name_with_traffic, "name order again after `n`")
        pane.keys("C-c")
        pane.wait(lambda t: "EXIT=130" in t, "top to exit 130 on Ctrl-C")
    finally:
        pane.close()
