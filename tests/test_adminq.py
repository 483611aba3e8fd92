"""The admin-queue cost of sampling: commands per group refresh for each driver layout, the
rate a daemon causes, and that the Sampler reads each counter directory back to back (so one
sample costs one refresh per group)."""
from __future__ import annotations

import os

import pytest

from efajob import sim
from efajob.node import adminq
from efajob.node.instances import INSTANCE_TYPES
from efajob.node.sysfs import Sampler

FIX = os.path.join(os.path.dirname(__file__), "fixtures")


@pytest.mark.parametrize("itype,kernel,driver,port_cmds,dev_cmds", [
    # efa_fill_port_stats: basic, messages, RDMA read, RDMA write (capable devices), network
    ("p5.48xlarge", "6.17", "aws-2.17.0", 5, 0),
    ("p5.48xlarge", "6.17", "in-tree", 5, 0),
    ("p4d.24xlarge", "6.17", "aws-2.17.0", 4, 0),  # names registered, RDMA write not asked
    ("p5.48xlarge", "6.6", "in-tree", 4, 0),
    ("p5.48xlarge", "5.15", "aws-2.13.0", 4, 0),
    ("p5.48xlarge", "5.15", "in-tree", 3, 0),
    ("p5.48xlarge", "5.10", "aws-1.14.0", 3, 0),  # split: device counters are driver atomics
    ("p5.48xlarge", "5.10", "in-tree", 3, 3),  # combined list: both groups send commands
])
def test_commands_per_refresh(itype, kernel, driver, port_cmds, dev_cmds):
    port, dev = sim.counter_layout(kernel, itype, driver)
    write = INSTANCE_TYPES[itype].nitro >= 4
    assert adminq.commands_per_refresh(port, write) == port_cmds
    assert adminq.commands_per_refresh(dev, write) == dev_cmds
    assert adminq.is_combined(port) == (kernel == "5.10" and driver == "in-tree")


@pytest.mark.parametrize("devices,port,dev,interval,dev_interval,rate", [
    (32, 5, 0, 1.0, 10.0, 160.0),  # p5, current drivers, the defaults
    (32, 5, 0, 5.0, 10.0, 32.0),  # interval = 5
    (4, 4, 0, 1.0, 10.0, 16.0),  # p4d
    (32, 3, 3, 1.0, 10.0, 105.6),  # combined lists: device groups every 10 s
    (32, 3, 3, 1.0, 0.0, 192.0),  # ... or every sample (device_counter_interval = 0)
    (32, 3, 3, 20.0, 10.0, 9.6),  # device groups never more often than the samples
])
def test_commands_per_second(devices, port, dev, interval, dev_interval, rate):
    assert adminq.commands_per_second(devices, port, dev, interval, dev_interval) == pytest.approx(rate)


def test_commands_per_second_rejects_zero_interval():
    with pytest.raises(ValueError):
        adminq.commands_per_second(32, 5, 0, 0, 10)


@pytest.mark.parametrize("tree", ["k5.10-p4d", "k6.17-p5", "aws2.17-k5.15-p5", "mlx5-neighbour"])
def test_sampler_reads_each_directory_back_to_back(tree):
    # One refresh per group per sample needs each directory's files read in one run of
    # preads: the Sampler's slots hold each (kind, device, port) group contiguously, each
    # group is exactly one directory's counter files, and a sample reads the slots in order.
    root = os.path.join(FIX, tree)
    with Sampler(root, rediscover_interval=float("inf")) as s:
        keys = [(g[0], g[1], g[2]) for g in s._groups]
        assert len(keys) == len(set(keys))  # no directory split over two runs
        for _kind, _owner, _port, start, end, names in s._groups:
            dirs = {os.path.dirname(p) for p in s._paths[start:end]}
            assert len(dirs) == 1, dirs
            (d,) = dirs
            on_disk = sorted(n for n in os.listdir(d) if n != "lifespan")
            assert sorted(names) == on_disk
