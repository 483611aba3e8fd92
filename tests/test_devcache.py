"""The discovery cache the hooks read (node/devcache.py): the same snapshot as a full
discovery, used only while it still describes the node, never trusted for what it names."""
from __future__ import annotations

import json
import os

import pytest

from efajob.node import devcache, sysfs
from efajob.node.devcache import cache_path, read_once
from efajob.sim import build_node, vanish_device


@pytest.fixture
def node(tmp_path):
    n = build_node(str(tmp_path / "sys"), "p5.48xlarge", device_limit=4, mlx5=True)
    (tmp_path / "run").mkdir()
    return n


def _no_discovery(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("discovered in full")
    monkeypatch.setattr(sysfs, "discover_devices", refuse)


def test_the_cached_reading_equals_a_full_one(node, tmp_path, monkeypatch):
    path = cache_path(str(tmp_path / "run"))
    full = sysfs.read_snapshot(node.root)
    snap, devices = read_once(node.root, cache=path)  # no cache yet: discovers, writes it
    assert os.path.exists(path) and len(devices) == 4
    _no_discovery(monkeypatch)
    again, cached = read_once(node.root, cache=path)
    assert cached == devices
    assert {d: r.port_counters for d, r in again.devices.items()} == \
        {d: r.port_counters for d, r in full.devices.items()}
    assert {d: r.device_counters for d, r in again.devices.items()} == \
        {d: r.device_counters for d, r in snap.devices.items()}
    assert json.loads(open(path).read())["listing"] == sorted(os.listdir(node.root + "/class/infiniband"))


def test_a_vanished_device_is_not_read_from_the_cache(node, tmp_path):
    path = cache_path(str(tmp_path / "run"))
    read_once(node.root, cache=path)
    gone = node.present_devices()[-1]
    vanish_device(node, gone)
    assert devcache.load(path, node.root) is None  # the listing changed
    snap, devices = read_once(node.root, cache=path)
    assert gone not in snap.devices and len(devices) == 3
    assert [d.name for d in devcache.load(path, node.root)] == [d.name for d in devices]


def test_a_counter_file_that_will_not_open_means_a_full_discovery(node, tmp_path):
    path = cache_path(str(tmp_path / "run"))
    read_once(node.root, cache=path)
    dev = node.present_devices()[0]
    victim = os.path.join(node.device_path(dev), "ports", "1", "hw_counters", "rdma_read_bytes")
    os.unlink(victim)  # a driver that no longer has the counter (same version, same devices)
    assert devcache.load(path, node.root) is not None  # still looks valid...
    snap, devices = read_once(node.root, cache=path)
    assert "rdma_read_bytes" not in snap.devices[dev].port_counters  # ...but was not used
    assert "rdma_read_bytes" not in devcache.load(path, node.root)[0].port_counter_names


def test_another_driver_version_or_root_is_not_this_cache(node, tmp_path):
    path = cache_path(str(tmp_path / "run"))
    _, devices = read_once(node.root, cache=path)
    data = open(path, "rb").read()
    listing = sysfs.discover_listing(node.root)
    driver = sysfs.read_efa_driver_version(node.root)
    assert devcache.decode(data, node.root, listing, driver) == devices
    assert devcache.decode(data, node.root, listing, "2.99.0g") is None
    assert devcache.decode(data, node.root + "/", listing, driver) is None
    assert devcache.decode(data, node.root, listing[:-1], driver) is None


@pytest.mark.parametrize("hostile", [
    b"", b"not json", b"[]", b'{"version": 2}',
    "names", "device name", "ports", "refs", "row length", "name outside listing",
])
def test_a_malformed_or_hostile_cache_is_ignored(node, tmp_path, hostile):
    path = cache_path(str(tmp_path / "run"))
    read_once(node.root, cache=path)
    listing = sysfs.discover_listing(node.root)
    driver = sysfs.read_efa_driver_version(node.root)
    if isinstance(hostile, bytes):
        data = hostile
    else:
        doc = json.loads(open(path).read())
        row = doc["devices"][0]
        if hostile == "names":
            doc["names"][0][0] = "../../../../etc/shadow"
        elif hostile == "device name":
            row[0] = "../x"
        elif hostile == "ports":
            row[4] = ["1"]
        elif hostile == "refs":
            row[7] = 99
        elif hostile == "row length":
            row.append(1)
        else:
            row[0] = "rdmap9s0"
        data = json.dumps(doc).encode()
    assert devcache.decode(data, node.root, listing, driver) is None
    with open(path, "wb") as f:
        f.write(data)
    snap, devices = read_once(node.root, cache=path)  # discovers, and mends the file
    assert len(snap.devices) == 4 and devcache.load(path, node.root) == devices


def test_an_unwritable_cache_costs_time_only(node, tmp_path):
    snap, devices = read_once(node.root, cache=str(tmp_path / "no-such-dir" / "devices.json"))
    assert len(devices) == 4 and len(snap.devices) == 4


def test_save_writes_only_what_changed(node, tmp_path):
    path = cache_path(str(tmp_path / "run"))
    devices = tuple(sysfs.discover_devices(node.root))
    listing = sysfs.discover_listing(node.root)
    assert devcache.save(path, node.root, listing, devices) is True
    assert devcache.save(path, node.root, listing, devices) is False
    assert devcache.save(path, node.root, listing, devices[:2]) is True
    assert [n for n in os.listdir(tmp_path / "run")] == ["devices.json"]  # no temp files left


def test_a_device_that_appeared_is_not_missed(node, tmp_path):
    """A device late to probe (p5en is known for it) after the cache was written."""
    path = cache_path(str(tmp_path / "run"))
    read_once(node.root, cache=path)
    ib = os.path.join(node.root, "class", "infiniband")
    first = node.present_devices()[0]
    os.symlink(os.path.realpath(os.path.join(ib, first)), os.path.join(ib, "rdmap250s0"))
    assert devcache.load(path, node.root) is None
    snap, devices = read_once(node.root, cache=path)
    assert "rdmap250s0" in snap.devices and len(devices) == 5
