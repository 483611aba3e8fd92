"""The optional C read loop (efajob/node/_fastread.c) against the pure-Python one.

What must hold: the C Reader calls a file clean exactly when readings._parse_all's fast path
would (every file "<digits>\\n" within 64 bits), hands back the bytes read (or the errno) of
every file otherwise, and a Sampler gives the same snapshots with and without it, garbage
files included. CI builds the extension (`pip install -e`), so there a missing build fails.
"""
from __future__ import annotations

import errno
import os
import random
import subprocess
import sys

import pytest

from conftest import require
from efajob.node import sysfs
from efajob.node.readings import _parse_all
from efajob.node.sysfs import Sampler
from tests.sysfs_tree import make_device

CLEAN = [b"0\n", b"7\n", b"007\n", b"18446744073709551615\n", b"1" * 19 + b"\n",
         b"0" * 40 + b"42\n"]
DIRTY = [b"", b"\n", b"12", b" 12\n", b"12 \n", b"12\n\n", b"-1\n", b"+1\n", b"1_0\n",
         b"18446744073709551616\n", b"99999999999999999999\n", b"9" * 70 + b"\n",
         b"N/A (no PMA)\n", b"\xff\n", b"\x00\n", b"1\n2\n", b"\t5\n", b"\xd9\xa3\n"]


@pytest.fixture
def fastread():
    require("the C reader (efajob/node/_fastread.c)", sysfs._fastread is not None,
            "not built: no C compiler or Python headers at install time")
    return sysfs._fastread


def _open_files(tmp_path, contents):
    fds = []
    for k, data in enumerate(contents):
        p = tmp_path / f"c{k}"
        p.write_bytes(data)
        fds.append(os.open(p, os.O_RDONLY))
    return fds


def _close(fds):
    for fd in fds:
        os.close(fd)


def test_clean_files_read_as_ints(tmp_path, fastread):
    fds = _open_files(tmp_path, CLEAN)
    try:
        clean, items = fastread.Reader(fds).read()
        assert clean is True
        assert items == [int(c) for c in CLEAN]
        assert all(type(x) is int for x in items)
        # The same files through the Python path: its fast path, the same numbers.
        py = _parse_all([os.pread(fd, 64, 0) for fd in fds])
        assert list(py) == items and not py.absent
    finally:
        _close(fds)


@pytest.mark.parametrize("bad", DIRTY, ids=repr)
def test_one_unclean_file_returns_every_files_bytes(tmp_path, fastread, bad):
    contents = CLEAN[:2] + [bad] + CLEAN[2:]
    fds = _open_files(tmp_path, contents)
    try:
        clean, items = fastread.Reader(fds).read()
        assert clean is False
        assert items == [c[:64] for c in contents]  # 64 bytes a file, as sysfs.py reads
        # what the Python path makes of those bytes is then the same as of its own reads
        assert list(_parse_all(items)) == list(_parse_all([os.pread(fd, 64, 0) for fd in fds]))
    finally:
        _close(fds)


def test_failed_reads_come_back_as_errno(tmp_path, fastread):
    fds = _open_files(tmp_path, [b"5\n"])
    dirfd = os.open(tmp_path, os.O_RDONLY)
    closed = os.open(tmp_path / "c0", os.O_RDONLY)
    os.close(closed)
    try:
        clean, items = fastread.Reader([fds[0], dirfd, closed]).read()
        assert clean is False
        assert items == [b"5\n", errno.EISDIR, errno.EBADF]
    finally:
        _close(fds + [dirfd])


def test_limit_reads_a_prefix(tmp_path, fastread):
    fds = _open_files(tmp_path, [b"1\n", b"2\n", b"garbage"])
    try:
        r = fastread.Reader(fds)
        assert len(r) == 3
        assert r.read(2) == (True, [1, 2])
        assert r.read(0) == (True, [])
        assert r.read(99)[0] is False and r.read(-1) == r.read()
    finally:
        _close(fds)


def test_bad_arguments_are_errors_not_crashes(fastread):
    assert fastread.Reader([]).read() == (True, [])
    with pytest.raises(TypeError):
        fastread.Reader(["3"])
    with pytest.raises(TypeError):
        fastread.Reader(3)
    with pytest.raises(ValueError):
        fastread.Reader([-1])
    with pytest.raises((ValueError, OverflowError)):
        fastread.Reader([1 << 40])
    r = fastread.Reader([0])
    with pytest.raises(TypeError, match="fixed"):
        r.__init__([1])  # its buffers may be in use by a read in another thread


def _tree_with(root, rng, forms):
    make_device(root, "rdmap79s0", {"tx_bytes": "1\n", "rx_bytes": "2\n", "tx_pkts": "3\n"},
                {"alloc_pd_err": "0\n", "cmds_err": "0\n"})
    make_device(root, "rdmap80s0", {"tx_bytes": "4\n", "rx_bytes": "5\n", "tx_pkts": "6\n"},
                {"cmds_err": "1\n"})
    names = []
    for dev in ("rdmap79s0", "rdmap80s0"):
        base = os.path.join(root, "class", "infiniband", dev)
        names += [os.path.join(base, "ports", "1", "hw_counters", n)
                  for n in ("tx_bytes", "rx_bytes", "tx_pkts")]
        names.append(os.path.join(base, "hw_counters", "cmds_err"))
    for path in names:
        with open(path, "wb") as f:
            f.write(rng.choice(forms))
    return names


@pytest.mark.parametrize("seed", range(40))
def test_a_sampler_reads_the_same_with_and_without_c(tmp_path, fastread, seed):
    rng = random.Random(seed)
    root = str(tmp_path)
    # Mostly clean trees (the flat path), some with garbage (per-file parsing, absences).
    forms = CLEAN if seed % 3 == 0 else CLEAN + DIRTY
    _tree_with(root, rng, forms)
    kw = dict(include_net=False, rediscover_interval=3600, clock=lambda: 5.0,
              wall_clock=lambda: 1.7e9)
    with Sampler(root, native=True, **kw) as c, Sampler(root, native=False, **kw) as py:
        assert c.native and not py.native
        for _ in range(2):
            a, b = c.sample(), py.sample()
            assert a == b
            assert a.to_dict() == b.to_dict()


def test_native_can_be_turned_off_by_environment(tmp_path):
    code = "from efajob.node import sysfs; print(sysfs.NATIVE, sysfs._fastread)"
    env = dict(os.environ, EFAJOB_NO_NATIVE="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, timeout=60).stdout.split()
    assert out == ["False", "None"]


def test_native_reader_names_the_module_it_loaded(fastread):
    path, why = sysfs.native_reader()
    assert why is None and path == fastread.__file__ and os.path.isfile(path)
    assert os.path.basename(path).startswith("_fastread.")


def test_native_reader_says_why_samples_are_read_in_python(monkeypatch, tmp_path):
    # Not loaded, and no module file next to sysfs.py: "not built".
    monkeypatch.setattr(sysfs, "_fastread", None)
    monkeypatch.delenv("EFAJOB_NO_NATIVE", raising=False)
    import efajob.node

    monkeypatch.setitem(sys.modules, "efajob.node._fastread", None)  # import fails
    monkeypatch.delattr(efajob.node, "_fastread", raising=False)
    monkeypatch.setattr(sysfs, "_listdir", lambda d: ["_fastread.c", "sysfs.py"])
    assert sysfs.native_reader() == (None, "not built: no _fastread module in "
                                     + os.path.dirname(os.path.abspath(sysfs.__file__)))
    # A module file that does not load (built for another Python, a missing symbol).
    monkeypatch.setattr(sysfs, "_listdir", lambda d: ["_fastread.c", "_fastread.abi3.so"])
    path, why = sysfs.native_reader()
    assert path is None and why.startswith("cannot be loaded: ")
    # One that loads but speaks another interface.
    old = type(sys)("efajob.node._fastread")
    old.API, old.__file__ = sysfs.NATIVE_API + 1, "/x/_fastread.so"
    monkeypatch.setitem(sys.modules, "efajob.node._fastread", old)
    monkeypatch.setattr(efajob.node, "_fastread", old, raising=False)
    assert sysfs.native_reader() == (None, f"/x/_fastread.so speaks interface "
                                     f"{sysfs.NATIVE_API + 1}, this efajob needs "
                                     f"{sysfs.NATIVE_API}: built for another version")
    monkeypatch.setenv("EFAJOB_NO_NATIVE", "1")
    assert sysfs.native_reader() == (None, "turned off by EFAJOB_NO_NATIVE in the environment")
