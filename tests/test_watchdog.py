"""Head-node commands on a store that stops answering (issue 13, case 1): `report`, `jobs` and
`dashboard build` once hung forever on a FIFO in the store, and still would on a hung NFS
mount (a blocked stat or read, where no timeout reaches). A FIFO is now refused at open; a
read that never returns is given up on once no store read has completed for `store_timeout`.

The blocked reads here block until the test releases them, so no verdict depends on speed:
a store that never answers times out at any machine speed; a moving one never does."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest
from click.testing import CliRunner

from efajob.cli.main import main
from efajob.errors import StoreError
from efajob.store.watchdog import call_watched
from jobsim import NodePool, healthy, job_records, write_store


def test_a_read_that_never_returns_is_given_up():
    release = threading.Event()
    try:
        with pytest.raises(StoreError, match="answered nothing for 0.2 s"):
            call_watched(release.wait, store="/s", timeout=0.2, poll=0.05, progress=lambda: 7)
    finally:
        release.set()


def test_a_slow_read_that_keeps_moving_is_never_cut():
    """Fake clock: 10 s pass per poll, 50 times the timeout in all, but every poll sees a read
    completed since the last: the work goes on to the end."""
    calls = {"n": 0}
    done = threading.Event()

    def progress():
        calls["n"] += 1
        if calls["n"] >= 50:
            done.set()
        return calls["n"]

    def work():
        done.wait()
        return "all read"

    t = iter(range(0, 10_000, 10))
    assert call_watched(work, store="/s", timeout=1.0, poll=0.001, progress=progress,
                        clock=lambda: float(next(t))) == "all read"


def test_errors_of_the_read_reach_the_caller():
    def bad():
        raise StoreError("job store /s is not a directory")

    with pytest.raises(StoreError, match="not a directory"):
        call_watched(bad, store="/s", timeout=60)


@pytest.fixture
def store(tmp_path):
    s = str(tmp_path / "store")
    write_store(s, job_records(NodePool(str(tmp_path / "sim")), healthy(2), job_id="5",
                               cluster="c1"))
    return s


@pytest.mark.parametrize("args", [["report", "5", "--no-slurm"], ["jobs"],
                                  ["dashboard", "build", "-o", "PAGE"]])
def test_commands_give_up_on_a_hung_store_with_exit_4(store, tmp_path, monkeypatch, args):
    """The store's first listing blocks (a hung mount) for 300 s, or until the command ends:
    each command says so and exits 4 after store_timeout instead of waiting it out (without
    the watchdog it did, and then exited 0)."""
    from efajob.store import reader

    release = threading.Event()
    real = reader._listdir

    def hung(path, what):
        release.wait()
        return real(path, what)

    monkeypatch.setattr(reader, "_listdir", hung)
    monkeypatch.setenv("EFAJOB_STORE_TIMEOUT", "0.3")
    args = [str(tmp_path / "page.html") if a == "PAGE" else a for a in args]
    bound = threading.Timer(300, release.set)
    bound.start()
    try:
        r = CliRunner().invoke(main, args + ["--store", store])
    finally:
        release.set()
        bound.cancel()
    assert r.exit_code == 4, r.output
    assert "answered nothing for 0.3 s" in r.output and "Traceback" not in r.output


def test_fifos_in_the_store_do_not_hang_the_commands(store, tmp_path):
    """FIFOs where a record, a node status file and a job directory's record would be: the
    commands finish (in a subprocess with a generous bound: a regression fails, not hangs)."""
    jobdir = os.path.join(store, "c1", "jobs", "5")
    os.mkfifo(os.path.join(jobdir, "n9.json"))
    os.makedirs(os.path.join(store, "c1", "nodes"))
    os.mkfifo(os.path.join(store, "c1", "nodes", "n9.json"))
    os.makedirs(os.path.join(store, "c1", "jobs", "6"))
    os.mkfifo(os.path.join(store, "c1", "jobs", "6", "n1.json"))
    env = dict(os.environ, EFAJOB_STORE_TIMEOUT="3600")
    page = str(tmp_path / "page.html")
    for args in (["report", "5", "--no-slurm", "--format", "json"], ["jobs", "--format", "json"],
                 ["dashboard", "build", "-o", page]):
        p = subprocess.run([sys.executable, "-m", "efajob", *args, "--store", store], env=env,
                           capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, (args, p.stderr)
        assert "Traceback" not in p.stderr
    p = subprocess.run([sys.executable, "-m", "efajob", "report", "5", "--no-slurm", "--format",
                        "json", "--store", store], env=env, capture_output=True, text=True,
                       timeout=300)
    assert json.loads(p.stdout)["job_id"] == "5" and "not a regular file" in p.stderr
