from __future__ import annotations

import pytest

from efajob.node.counters import (bytes_to_gbps, counter_delta, diff_counters, diff_snapshots, rate,
                                  sum_counter, sum_net)
from efajob.node.readings import DeviceReading, Snapshot


@pytest.mark.parametrize("prev,cur,want", [
    (0, 0, (0, False)),
    (10, 25, (15, False)),
    (2**64 - 1, 2**64 - 1, (0, False)),
    (1000, 7, (7, True)),  # driver reset: what counted since the reset, flagged
    (1000, 0, (0, True)),
])
def test_counter_delta(prev, cur, want):
    assert counter_delta(prev, cur) == want


def test_diff_counters_absent_is_not_zero():
    d, resets = diff_counters({"a": 5, "b": 10}, {"a": 7, "c": 3, "b": 2})
    assert d == {"a": 2, "b": 2}  # c absent before: no delta
    assert resets == ["b"]


def _snap(mono, devs, net=None):
    return Snapshot(mono=mono, wall=1e9 + mono, devices={
        n: DeviceReading(n, 1, dict(p), dict(dv)) for n, (p, dv) in devs.items()}, net=net or {})


def test_diff_snapshots_devices_resets_and_net():
    a = _snap(10.0, {"d0": ({"tx_bytes": 100, "rx_bytes": 5}, {"cmds_err": 1}),
                     "d1": ({"tx_bytes": 50}, {}),
                     "gone": ({"tx_bytes": 1}, {})},
              net={"eth0": {"rx_bytes": 10}})
    b = _snap(12.5, {"d0": ({"tx_bytes": 300, "rx_bytes": 2}, {"cmds_err": 0}),
                     "d1": ({"tx_bytes": 80}, {}),
                     "new": ({"tx_bytes": 9}, {})},
              net={"eth0": {"rx_bytes": 40}})
    d = diff_snapshots(a, b)
    assert d.seconds == 2.5
    assert d.devices["d0"].port_counters == {"tx_bytes": 200, "rx_bytes": 2}
    assert d.devices["d0"].resets == ("rx_bytes", "device:cmds_err")
    assert d.resets == ("d0/rx_bytes", "d0/device:cmds_err")
    assert d.vanished == ("gone",) and d.appeared == ("new",)
    assert d.port_sum("tx_bytes") == 230
    assert d.port_sum("retrans_pkts") is None  # absent everywhere: not zero
    assert d.port_totals() == {"tx_bytes": 230, "rx_bytes": 2}
    assert sum_net(d) == {"rx_bytes": 30}
    assert sum_counter([], "tx_bytes") is None


def test_rates():
    assert rate(100, 2.0) == 50.0
    assert rate(None, 2.0) is None and rate(5, 0) is None
    assert bytes_to_gbps(12.5e9, 1.0) == 100.0
    assert bytes_to_gbps(None, 1.0) is None


def test_fast_and_general_paths_agree():
    from efajob.node.counters import DeviceDelta, SnapshotDelta, sum_port_counters

    prev = {"a": 1, "b": 2, "c": 3}
    assert diff_counters(prev, {"a": 5, "b": 2, "c": 10}) == ({"a": 4, "b": 0, "c": 7}, [])
    assert diff_counters(prev, {"a": 5, "b": 1, "c": 10}) == ({"a": 4, "b": 1, "c": 7}, ["b"])
    assert diff_counters(prev, {"c": 10, "a": 5, "b": 2}) == ({"c": 7, "a": 4, "b": 0}, [])  # order
    assert diff_counters({}, {}) == ({}, [])
    same = {n: DeviceDelta(n, {"tx_bytes": i, "rx_bytes": 2 * i}, {}) for i, n in enumerate("xyz")}
    assert sum_port_counters(SnapshotDelta(1.0, same)) == {"tx_bytes": 3, "rx_bytes": 6}
    mixed = dict(same, w=DeviceDelta("w", {"rx_bytes": 1, "retrans_pkts": 4}, {}))
    assert sum_port_counters(SnapshotDelta(1.0, mixed)) == {"tx_bytes": 3, "rx_bytes": 7, "retrans_pkts": 4}
    one = {n: DeviceDelta(n, {"tx_bytes": 5}, {}) for n in "ab"}
    assert sum_port_counters(SnapshotDelta(1.0, one)) == {"tx_bytes": 10}
    assert sum_port_counters(SnapshotDelta(1.0, {})) == {}
