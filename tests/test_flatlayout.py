"""The daemon's flat hot path (node/flatlayout.py) against the general one it stands in for: same
readings, same deltas, node totals and per-device columns, and a fall back to the general
path (which names resets and vanished devices) whenever the flat lists do not line up."""
from dataclasses import dataclass

import pytest

from efajob.node.counters import diff_snapshots, sum_port_counters
from efajob.node.flatlayout import Layout, PORT, DEV
from efajob.sim import build_node, vanish_device
from efajob.node.readings import Snapshot
from efajob.node.sysfs import Sampler


@dataclass
class Clock:
    t: float = 100.0

    def __call__(self):
        return self.t


def general(snap):
    """The same snapshot without the flat list: what the hooks' JSON round trip gives."""
    return Snapshot.from_dict(snap.to_dict())


@pytest.fixture(params=[("p5.48xlarge", "6.17"), ("p4d.24xlarge", "5.10"), ("trn1.32xlarge", "6.6")])
def node(request, tmp_path):
    itype, kernel = request.param
    return build_node(str(tmp_path / "sys"), itype, kernel)


def sampler(node, clock, every=0.0):
    return Sampler(node.root, device_counter_interval=every, clock=clock, wall_clock=clock)


def test_flat_snapshots_and_deltas_equal_the_general_path(node):
    clock = Clock()
    with sampler(node, clock, every=10.0) as s:
        a = s.sample()
        assert a.flat is not None and a._devices is None  # nothing built yet
        node.traffic(400, 300, 1.0, pattern="allreduce", fault="retrans", seed=5)
        clock.t += 1.0
        b = s.sample()  # device counters repeated from the full read
        node.traffic(100, 900, 1.0, fault="drops", seed=6)
        clock.t += 10.0
        c = s.sample()  # a full read again
    moved = 0  # device-level counts summed: the full reads saw some
    for x, y in ((a, b), (b, c), (a, c)):
        flat, slow = diff_snapshots(x, y), diff_snapshots(general(x), general(y))
        assert flat.flat is not None and slow.flat is None
        assert sum_port_counters(flat) == sum_port_counters(slow) == flat.port_totals()
        assert flat.port_totals()["tx_bytes"] > 0
        for name in ("tx_bytes", "rx_bytes", "retrans_pkts", "no_such_counter"):
            assert flat.port_column(name) == slow.port_column(name)
        # Device-level sums from list positions (found once per layout, asked twice here).
        for names in (("cmds_err", "no_completion_cmds"), ["keep_alive_rcvd", "completed_cmds",
                                                           "no_such_counter"], ()):
            for _ in range(2):
                got = flat.device_totals(names)
                assert got == slow.device_totals(names)
                assert set(got) <= set(names) - {"no_such_counter"}
                moved += sum(got.values())
        assert flat._devices is None  # the sums built no per-device dictionaries
        assert flat.devices == slow.devices
        assert flat.net == slow.net and flat.resets == slow.resets == ()
        assert (flat.appeared, flat.vanished) == (slow.appeared, slow.vanished) == ((), ())
    assert moved > 0
    assert b == general(b) and c.to_dict() == general(c).to_dict()
    # Between full reads the device-level counters repeat: no delta; the full read has it.
    assert all(set(v.values()) <= {0} for d in diff_snapshots(a, b).devices.values()
               for v in (d.device_counters,))


def test_a_reset_falls_back_to_the_general_path_and_is_named(node):
    clock = Clock()
    with sampler(node, clock) as s:
        node.traffic(400, 400, 5.0)
        a = s.sample()
        node.traffic(0, 0, 1.0, fault="reset", devices=[0])
        clock.t += 1.0
        b = s.sample()
    delta = diff_snapshots(a, b)
    assert delta.flat is None and delta.resets
    assert delta.resets == diff_snapshots(general(a), general(b)).resets


def test_unreadable_counters_take_the_general_path(node):
    clock = Clock()
    with sampler(node, clock) as s:
        a = s.sample()
        node.traffic(100, 100, 1.0, fault="garbage", devices=[0])
        clock.t += 1.0
        b = s.sample()  # one counter absent: per-device dictionaries, no flat list
    assert a.flat is not None and b.flat is None
    missing = [n for n, r in b.devices.items() if "rdma_read_wr_err" not in r.port_counters]
    assert len(missing) == 1
    d = diff_snapshots(a, b)
    assert d.flat is None and "rdma_read_wr_err" not in d.devices[missing[0]].port_counters
    assert d.devices == diff_snapshots(general(a), general(b)).devices


def test_layout_without_common_port_names_gives_no_columns():
    groups = [(PORT, 0, 1, 0, 2, ("tx_bytes", "rx_bytes")), (PORT, 1, 1, 2, 3, ("tx_bytes",)),
              (DEV, 0, 0, 3, 4, ("cmds_err",))]
    lay = Layout(groups, [("a", 1), ("b", 1)])
    assert lay.complete
    assert lay.port_totals([1, 2, 3, 4]) is None and lay.port_column([1, 2, 3, 4], "tx_bytes") is None
    assert lay.per_device([1, 2, 3, 4]) == [("a", 1, {"tx_bytes": 1, "rx_bytes": 2}, {"cmds_err": 4}, {}),
                                            ("b", 1, {"tx_bytes": 3}, {}, {})]
    # A device with no counter file at all is not complete: the sampler leaves it out instead.
    assert not Layout(groups, [("a", 1), ("b", 1), ("c", 1)]).complete


def test_replace_keeps_the_flat_list_unless_devices_change(node):
    with sampler(node, Clock()) as s:
        a = s.sample()
    moved = a.replace(mono=1.0, wall=2.0)
    assert moved.flat is a.flat and (moved.mono, moved.wall) == (1.0, 2.0)
    assert moved.devices == a.devices and moved.net == a.net
    emptied = a.replace(devices={})
    assert emptied.flat is None and emptied.devices == {} and emptied.mono == a.mono


def test_a_rediscovery_that_finds_the_same_files_keeps_the_flat_path(node):
    clock = Clock()
    with sampler(node, clock) as s:
        a = s.sample()
        s.rediscover()  # what the sampler does every rediscover_interval
        b = s.sample()
        assert b.flat[0] is a.flat[0] and diff_snapshots(a, b).flat is not None
        vanish_device(node, node.present_devices()[0])
        s.rediscover()
        c = s.sample()
    assert c.flat[0] is not a.flat[0]
    d = diff_snapshots(b, c)
    assert d.flat is None and len(d.vanished) == 1


def test_status_error_rates_from_the_layout_equal_the_general_path(node):
    """The status file's per-device error rates (nodestatus.device_errors): from the flat
    lists' positions, the same as from the per-device dictionaries."""
    from efajob.daemon.nodestatus import device_errors

    clock = Clock()
    with sampler(node, clock) as s:
        a = s.sample()
        node.traffic(400, 300, 3.0, fault="wr-errors", seed=5)
        node.traffic(100, 100, 2.0, fault="admin-errors", seed=6)
        clock.t += 5.0
        b = s.sample()
    got = device_errors(b, a)
    assert b._devices is None and a._devices is None  # no dictionaries built for it
    assert got == device_errors(general(b), general(a))
    kinds = {k for errs in got.values() for k in errs}
    assert "rdma_read_wr_err" in kinds and "cmds_err" in kinds  # a port and a device counter
    assert device_errors(b, b) == device_errors(a, b) == {}  # no time passed / going back
