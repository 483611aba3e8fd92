"""Shared test helpers.

`require(name, ok, why)`: a test that needs a component this machine may lack (Slurm,
Prometheus, moto, Chromium) is skipped locally but FAILS in CI (`CI=true`), where `.ci/run`
installs every component: a green CI must never hide a missing install step.
"""
from __future__ import annotations

import os
import shutil
import sys

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"
HOOK_WAIT_ENV = {"EFAJOB_HOOK_WAIT": "120"}  # see _utc()


def require(name: str, ok: bool, why: str = "") -> None:
    if ok:
        return
    msg = f"{name} is not available{': ' + why if why else ''}"
    if IN_CI:
        pytest.fail(f"{msg} (required in CI: .ci/run must install it)")
    pytest.skip(msg)


def wait_until(pred, timeout: float = 120.0) -> bool:
    """Poll `pred` until true; False after `timeout`. The timeout only bounds a hang: a test's
    verdict must never depend on how fast the machine got there."""
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def require_binary(binary: str) -> str:
    path = shutil.which(binary) or next(
        (p for p in (f"/usr/sbin/{binary}", f"/usr/bin/{binary}") if os.path.exists(p)), None)
    require(binary, path is not None, "not on PATH")
    return path  # type: ignore[return-value]


CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")


def _chromium() -> str:
    exe = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
                if os.path.exists(p)), None)
    require("chromium", exe is not None, "no chromium binary")
    return exe  # type: ignore[return-value]


def chromium_dump_dom(url: str, profile_dir: str, timeout: float = 90):
    """The DOM headless Chromium built from `url` (a completed subprocess: `.stdout` holds it).
    The flags keep it off the network: this machine reaches only 127.0.0.1."""
    import subprocess

    exe = _chromium()
    argv = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}", "--dump-dom", url]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def chromium_screenshot(url: str, profile_dir: str, png: str, size: str = "1400,1800",
                        timeout: float = 90):
    """A PNG of `url` as headless Chromium lays it out in a `size` window (a completed
    subprocess; the file is at `png`)."""
    import subprocess

    exe = _chromium()
    argv = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}", "--hide-scrollbars",
            f"--window-size={size}", f"--screenshot={png}", url]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(autouse=True)
def _utc(monkeypatch):
    # Reports print times: keep them independent of the machine's zone.
    monkeypatch.setenv("TZ", "UTC")
    # Text output fits $COLUMNS (else the terminal, else 80): tests choose their width, the
    # terminal that runs them must not.
    monkeypatch.delenv("COLUMNS", raising=False)
    # Never ask the EC2 instance metadata service from a test (daemons started by tests
    # without an instance type would, from their worker thread): tests reach 127.0.0.1 only.
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    # The CLI takes the cluster name from slurm.conf when the config leaves it at "default":
    # never from this machine's (tests that want one point SLURM_CONF at their own).
    monkeypatch.setenv("SLURM_CONF", "/nonexistent/efajob-tests/slurm.conf")
    # A hook waits at most `hook_wait` (1 s) for its record's delivery and for the run-dir
    # lock; a busy machine can exceed that and leave a record in the outbox where a test
    # expects it in the store. 120 s only bounds a hang (hooks in explicit environments set
    # it too: HOOK_WAIT_ENV).
    monkeypatch.setenv("EFAJOB_HOOK_WAIT", HOOK_WAIT_ENV["EFAJOB_HOOK_WAIT"])


def pytest_addoption(parser):
    # Golden report outputs (tests/golden/): `pytest --update-golden` rewrites them from the
    # current code; review the diff before committing.
    parser.addoption("--update-golden", action="store_true", default=False,
                     help="rewrite tests/golden/ files instead of comparing against them")


@pytest.fixture
def update_golden(request) -> bool:
    return bool(request.config.getoption("--update-golden"))


@pytest.fixture(autouse=True)
def _efajob_logger_restored():
    """The daemon's and the hook's logging setup change the process-wide "efajob" logger
    (propagate off, their own handlers): put it back after each test, so a test that ran one in
    process cannot hide log records from a later test's caplog."""
    import logging

    lg = logging.getLogger("efajob")
    saved = (lg.propagate, list(lg.handlers), lg.level)
    yield
    lg.propagate, lg.level = saved[0], saved[2]
    for h in list(lg.handlers):
        if h not in saved[1]:
            lg.removeHandler(h)
            h.close()


def pytest_terminal_summary(terminalreporter):
    """The fault suite's table (tests/faults), when any of its scenarios ran."""
    ledger = sys.modules.get("fault_ledger")
    if ledger is not None and ledger.ROWS:
        terminalreporter.write_sep("=", "fault suite (docs/reliability.md)")
        terminalreporter.write(ledger.write_table())


def mount_tmpfs(path, size: str):
    """A small tmpfs at `path` (root and mount(2)): a disk that fills up. A context manager;
    require()s the mount, so CI (root) fails where a laptop skips."""
    import contextlib
    import subprocess

    @contextlib.contextmanager
    def mounted():
        p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                           capture_output=True, timeout=120)
        require("tmpfs mount", p.returncode == 0, p.stderr.decode().strip())
        try:
            yield path
        finally:
            subprocess.run(["umount", str(path)], capture_output=True, timeout=120)

    return mounted()


def fill_disk(path) -> None:
    """Write `<path>/filler` until the file system says ENOSPC."""
    fd = os.open(os.path.join(str(path), "filler"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        while True:
            os.write(fd, b"x" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)


def cli_runner():
    """A click CliRunner whose results keep `stdout` and `stderr` apart while `output` has
    both, as click >= 8.2 does. Click < 8.2 (what Python 3.9 gets) mixes stderr into stdout
    unless told `mix_stderr=False`, and then leaves stderr out of `output`; 8.2 dropped the
    argument."""
    from click.testing import CliRunner, Result

    class _Result(Result):
        @property
        def output(self) -> str:
            return self.stdout + self.stderr

    class _Runner(CliRunner):
        def invoke(self, *args, **kwargs):
            r = super().invoke(*args, **kwargs)
            r.__class__ = _Result
            return r

    try:
        return _Runner(mix_stderr=False)  # type: ignore[call-arg]
    except TypeError:
        return CliRunner()
