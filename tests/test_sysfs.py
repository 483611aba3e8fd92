from __future__ import annotations

import errno
import os
import shutil
import types

import pytest

from efajob.node import sysfs
from efajob.errors import SysfsError
from efajob.node.readings import parse_counter
from efajob.node.sysfs import Sampler, discover_devices, parse_rate_gbps, read_snapshot
from conftest import require
from tests.sysfs_tree import make_device, set_counter, write

PORT = {"tx_bytes": "1000\n", "rx_bytes": "2000\n", "tx_pkts": "10\n", "rx_pkts": "20\n", "rx_drops": "0\n"}
DEV = {"submitted_cmds": "5\n", "cmds_err": "0\n"}


@pytest.mark.parametrize("raw,want", [
    (b"0\n", 0),
    (b"123456789\n", 123456789),
    (b"18446744073709551615\n", 2**64 - 1),
    (b"18446744073709551616\n", None),  # overflows u64: garbage
    (b"", None),
    (b"\n", None),
    (b"N/A (no PMA)\n", None),  # what old kernels put in counters/ for EFA
    (b"-1\n", None),
    (b"+5\n", None),
    (b"1_000\n", None),  # int() would accept it; the kernel never writes it
    (b"abc\n", None),
    (b"12 34\n", None),
    (b"7", 7),  # no newline: still a number
    (b"5   \n", 5),  # the simulator's in-place shrink leaves padding for an instant
    ("١٢\n".encode(), None),  # non-ASCII digits
])
def test_parse_counter(raw, want):
    assert parse_counter(raw) == want


@pytest.mark.parametrize("text,want", [
    ("100 Gb/sec (4X EDR)", 100.0),
    ("200 Gb/sec (4X HDR)", 200.0),
    ("400 Gb/sec (8X HDR)", 400.0),
    ("25.78125 Gb/sec (1X EDR)", 25.78125),
    ("", None), (None, None), ("garbage", None),
])
def test_parse_rate(text, want):
    assert parse_rate_gbps(text) == want


def test_discovery_filters_by_vendor_and_driver(tmp_path):
    root = str(tmp_path)
    make_device(root, "rdmap79s0", PORT, DEV)
    make_device(root, "efa_1", PORT, DEV)
    make_device(root, "mlx5_0", PORT, DEV, vendor="0x15b3", driver="mlx5_core")
    # Vendor file unreadable (absent): fall back to the driver link.
    make_device(root, "efa_2", PORT, DEV, vendor=None)
    make_device(root, "other_3", PORT, DEV, vendor=None, driver="irdma")
    names = [d.name for d in discover_devices(root)]
    assert names == ["efa_1", "efa_2", "rdmap79s0"]
    d = discover_devices(root)[0]
    assert d.port_counter_names == ("rx_bytes", "rx_drops", "rx_pkts", "tx_bytes", "tx_pkts")
    assert "lifespan" not in d.device_counter_names and d.device_counter_names == ("cmds_err", "submitted_cmds")
    assert d.rate_gbps == 100.0 and d.ports == (1,)


def test_no_infiniband_class_means_no_devices(tmp_path):
    assert discover_devices(str(tmp_path)) == []
    assert read_snapshot(str(tmp_path)).devices == {}


def test_missing_root_is_an_error(tmp_path):
    with pytest.raises(SysfsError, match="not a directory"):
        Sampler(str(tmp_path / "nope"))


def test_counters_dir_is_never_read(tmp_path):
    root = str(tmp_path)
    d = make_device(root, "rdmap79s0", PORT, DEV)
    # Old kernels created the IB PMA counters/ dir for EFA with "N/A (no PMA)" in every file.
    write(os.path.join(d, "ports", "1", "counters", "port_rcv_data"), "N/A (no PMA)\n")
    snap = read_snapshot(root)
    assert "port_rcv_data" not in snap.devices["rdmap79s0"].port_counters


def test_snapshot_values_and_absent_counters(tmp_path):
    root = str(tmp_path)
    port = dict(PORT, rx_drops="garbage\n", tx_pkts="")
    make_device(root, "rdmap79s0", port, DEV)
    # An unreadable counter: as root chmod does not stop reads, so use a directory (EISDIR).
    os.makedirs(os.path.join(root, "class/infiniband/rdmap79s0/ports/1/hw_counters/weird"))
    snap = read_snapshot(root)
    pc = snap.devices["rdmap79s0"].port_counters
    assert pc == {"tx_bytes": 1000, "rx_bytes": 2000, "rx_pkts": 20}
    assert snap.devices["rdmap79s0"].device_counters == {"submitted_cmds": 5, "cmds_err": 0}


def test_kernel_before_5_15_same_names_in_both_dirs(tmp_path):
    root = str(tmp_path)
    both = dict(PORT, **DEV)
    make_device(root, "efa_0", both, both)
    snap = read_snapshot(root)
    d = snap.devices["efa_0"]
    assert d.port_counters == d.device_counters == {k: int(v) for k, v in both.items()}


def test_sampler_keeps_descriptors_and_sees_in_place_updates(tmp_path):
    root = str(tmp_path)
    d = make_device(root, "rdmap79s0", PORT, DEV)
    with Sampler(root, include_net=False) as s:
        a = s.sample()
        fds = list(s._fds)
        set_counter(d, "tx_bytes", 5000)
        b = s.sample()
        assert s._fds == fds  # no reopen on the fast path
    assert a.devices["rdmap79s0"].port_counters["tx_bytes"] == 1000
    assert b.devices["rdmap79s0"].port_counters["tx_bytes"] == 5000
    assert b.mono >= a.mono


def test_device_vanishing_mid_run_yields_sample_without_it(tmp_path):
    root = str(tmp_path)
    make_device(root, "rdmap79s0", PORT, DEV)
    d2 = make_device(root, "rdmap80s0", PORT, DEV)
    with Sampler(root, include_net=False, rediscover_interval=3600) as s:
        assert set(s.sample().devices) == {"rdmap79s0", "rdmap80s0"}
        # What the simulator's `vanish` fault does: open descriptors read EOF, then the dir goes.
        for dirpath, _, files in os.walk(d2):
            for f in files:
                os.truncate(os.path.join(dirpath, f), 0)
        shutil.rmtree(d2)
        assert set(s.sample().devices) == {"rdmap79s0"}
        s.sample()  # the vanished device triggered a rediscovery before this one
        assert [x.name for x in s.devices] == ["rdmap79s0"]


def test_device_appearing_late_is_found_at_rediscovery(tmp_path):
    clock = [0.0]
    root = str(tmp_path)
    make_device(root, "rdmap79s0", PORT, DEV)
    with Sampler(root, include_net=False, rediscover_interval=30, clock=lambda: clock[0]) as s:
        s.sample()
        make_device(root, "rdmap80s0", PORT, DEV)
        clock[0] = 10.0
        assert set(s.sample().devices) == {"rdmap79s0"}
        clock[0] = 31.0
        assert set(s.sample().devices) == {"rdmap79s0", "rdmap80s0"}


@pytest.mark.parametrize("native", [False, True], ids=["python", "c"])
def test_reopen_on_enodev_and_absent_on_eio(tmp_path, monkeypatch, native):
    root = str(tmp_path)
    make_device(root, "rdmap79s0", PORT, DEV)
    real_pread = os.pread
    enodev: set = set()
    eio: set = set()

    def failure(fd):
        e = errno.EIO if fd in eio else errno.ENODEV if fd in enodev else None
        enodev.discard(fd)  # the reopened descriptor works
        return e

    def fake_pread(fd, n, off):
        e = failure(fd)
        if e:
            raise OSError(e, os.strerror(e))
        return real_pread(fd, n, off)

    if native:
        real = sysfs._fastread
        require("the C reader (efajob/node/_fastread.c)", real is not None, "not built")

        class FailingReader:
            """The C reader's answer with chosen descriptors failing as the kernel would."""

            def __init__(self, fds):
                self.fds, self.reader = list(fds), real.Reader(fds)

            def read(self, n=-1):
                clean, items = self.reader.read(n)
                errs = [failure(fd) for fd in self.fds[:len(items)]]
                if not any(errs):
                    return clean, items
                raws = [b"%d\n" % x if isinstance(x, int) and clean else x for x in items]
                return False, [e or r for e, r in zip(errs, raws)]

        monkeypatch.setattr(sysfs, "_fastread", types.SimpleNamespace(Reader=FailingReader))
    else:
        monkeypatch.setattr(sysfs.os, "pread", fake_pread)
    with Sampler(root, include_net=False, rediscover_interval=3600, native=native) as s:
        assert s.native is native
        idx = {p.rsplit("/", 1)[1]: k for k, p in enumerate(s._paths)}
        enodev.add(s._fds[idx["tx_bytes"]])
        eio.add(s._fds[idx["rx_bytes"]])
        if native:
            monkeypatch.setattr(sysfs.os, "pread", fake_pread)  # the retry after ENODEV
        snap = s.sample()
        pc = snap.devices["rdmap79s0"].port_counters
        assert pc["tx_bytes"] == 1000  # reopened and read again
        assert "rx_bytes" not in pc  # EIO: absent this time
        eio.clear()
        assert s.sample().devices["rdmap79s0"].port_counters["rx_bytes"] == 2000


def test_netdevs_need_a_device_link(tmp_path):
    root = str(tmp_path)
    write(str(tmp_path / "class/net/eth0/statistics/rx_bytes"), "77\n")
    os.makedirs(tmp_path / "devices/pci/ena")
    os.symlink(str(tmp_path / "devices/pci/ena"), str(tmp_path / "class/net/eth0/device"))
    write(str(tmp_path / "class/net/lo/statistics/rx_bytes"), "5\n")
    snap = read_snapshot(root)
    assert snap.net == {"eth0": {"rx_bytes": 77}}
    assert read_snapshot(root, include_net=False).net == {}


def test_snapshot_json_round_trip(tmp_path):
    root = str(tmp_path)
    make_device(root, "rdmap79s0", PORT, DEV)
    snap = read_snapshot(root)
    again = sysfs.Snapshot.from_dict(snap.to_dict())
    assert again == snap


def test_device_removed_and_readded_is_read_afresh(tmp_path):
    root = str(tmp_path)
    make_device(root, "rdmap79s0", PORT, DEV)
    d2 = make_device(root, "rdmap80s0", PORT, DEV)
    with Sampler(root, include_net=False, rediscover_interval=3600) as s:
        s.sample()
        for dirpath, _, files in os.walk(d2):
            for f in files:
                os.truncate(os.path.join(dirpath, f), 0)
        shutil.rmtree(d2)
        assert set(s.sample().devices) == {"rdmap79s0"}
        # A driver reload brings it back under the same name, with new files (new inodes).
        make_device(root, "rdmap80s0", dict(PORT, tx_bytes="7\n"), DEV)
        s.rediscover()
        snap = s.sample()
        assert snap.devices["rdmap80s0"].port_counters["tx_bytes"] == 7


def test_a_rediscovery_keeps_descriptors_and_reopens_only_files_replaced_since(tmp_path):
    """Whether a descriptor still reads its path's file comes from each directory's listing
    (inode numbers), not a stat of every path: the first rediscovery asks the descriptors,
    the next ones compare listings, and a file replaced by rename (a new inode under the same
    name) is reopened, and only it."""
    root = str(tmp_path)
    d = make_device(root, "rdmap79s0", PORT, DEV)
    with Sampler(root, include_net=False, rediscover_interval=3600) as s:
        s.sample()
        fds = list(s._fds)
        for _ in range(3):  # descriptors asked once, then listings equal: nothing reopened
            s.rediscover()
            assert s._fds == fds
        tx = next(i for i, p in enumerate(s._paths) if p.endswith("/ports/1/hw_counters/tx_bytes"))
        path = os.path.join(d, "ports", "1", "hw_counters", "tx_bytes")
        write(path + ".new", "99\n")
        os.rename(path + ".new", path)
        assert s.sample().devices["rdmap79s0"].port_counters["tx_bytes"] != 99  # the old file
        s.rediscover()
        assert s.sample().devices["rdmap79s0"].port_counters["tx_bytes"] == 99
        assert [f for i, f in enumerate(s._fds) if i != tx] == [f for i, f in enumerate(fds) if i != tx]
        set_counter(d, "rx_bytes", 5)  # rewritten in place, as sysfs does: same file, kept
        s.rediscover()
        assert s.sample().devices["rdmap79s0"].port_counters["rx_bytes"] == 5
        assert [f for i, f in enumerate(s._fds) if i != tx] == [f for i, f in enumerate(fds) if i != tx]


def test_device_with_no_readable_counter_is_left_out(tmp_path):
    root = str(tmp_path)
    make_device(root, "rdmap79s0", PORT, DEV)
    d2 = make_device(root, "rdmap80s0", PORT, DEV)
    with Sampler(root, include_net=False) as s:
        for dirpath, _, files in os.walk(d2):
            for f in files:
                os.truncate(os.path.join(dirpath, f), 0)
        assert set(s.sample().devices) == {"rdmap79s0"}


def test_device_counters_read_every_interval_and_repeated_between(tmp_path):
    clock = [100.0]
    root = str(tmp_path)
    d = make_device(root, "rdmap79s0", PORT, DEV)
    with Sampler(root, include_net=False, device_counter_interval=10, clock=lambda: clock[0]) as s:
        a = s.sample()
        set_counter(d, "submitted_cmds", 9, port=False)
        set_counter(d, "tx_bytes", 2000)
        clock[0] = 101.0
        b = s.sample()  # port counters fresh, device counters repeated
        assert b.devices["rdmap79s0"].port_counters["tx_bytes"] == 2000
        assert b.devices["rdmap79s0"].device_counters == a.devices["rdmap79s0"].device_counters
        clock[0] = 110.0
        c = s.sample()  # due again
        assert c.devices["rdmap79s0"].device_counters["submitted_cmds"] == 9
    with Sampler(root, include_net=False) as s:  # the default (hooks): every sample
        assert s.sample().devices["rdmap79s0"].device_counters["submitted_cmds"] == 9


def test_reading_counters_leaves_atime_alone(tmp_path):
    """O_NOATIME: on a disk-backed simulated tree a read after a write would otherwise update
    (and journal) the inode every second; sysfs itself never does."""
    root = str(tmp_path)
    d = make_device(root, "rdmap0s0", PORT)
    path = os.path.join(d, "ports", "1", "hw_counters", "tx_bytes")
    with Sampler(root, include_net=False) as s:
        set_counter(d, "tx_bytes", 5)
        os.utime(path, (1_000_000, os.stat(path).st_mtime))  # atime older than mtime: relatime would update it
        assert s.sample().devices["rdmap0s0"].port_counters["tx_bytes"] == 5
    assert os.stat(path).st_atime == 1_000_000


def test_without_the_right_to_o_noatime_counters_open_plainly(tmp_path, monkeypatch):
    root = str(tmp_path)
    make_device(root, "rdmap0s0", PORT)
    real_open = os.open

    def open_(path, flags, *a, **k):
        if flags & getattr(os, "O_NOATIME", 0):
            raise PermissionError(errno.EPERM, "not the owner", path)
        return real_open(path, flags, *a, **k)

    monkeypatch.setattr(sysfs.os, "open", open_)
    with Sampler(root) as s:
        assert s.sample().devices["rdmap0s0"].port_counters["tx_bytes"] == 1000
