"""The simulator: layouts, trees the sampler reads like sysfs, exact injected deltas, faults,
the CLI and the committed fixtures."""
from __future__ import annotations

import importlib.util
import json
import math
import os
import pathlib
import shutil
import tempfile

import pytest
from click.testing import CliRunner

from efajob.sim import traffic as sim_traffic
from efajob import sim
from efajob.cli.simulate import simulate as simulate_cli
from efajob.errors import SimulatorError
from efajob.node.instances import INSTANCE_TYPES
from efajob.node.readings import natural_key
from efajob.node.sysfs import Sampler, discover_devices, discover_netdevs, read_snapshot

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")

PORT22 = ("tx_bytes tx_pkts rx_bytes rx_pkts rx_drops send_bytes send_wrs recv_bytes recv_wrs "
          "rdma_read_wrs rdma_read_bytes rdma_read_wr_err rdma_read_resp_bytes rdma_write_wrs "
          "rdma_write_bytes rdma_write_wr_err rdma_write_recv_bytes retrans_bytes retrans_pkts "
          "retrans_timeout_events unresponsive_remote_events impaired_remote_conn_events").split()
DEV12 = ("submitted_cmds completed_cmds cmds_err no_completion_cmds keep_alive_rcvd alloc_pd_err "
         "create_qp_err create_cq_err reg_mr_err alloc_ucontext_err create_ah_err mmap_err").split()
WRITE = [n for n in PORT22 if n.startswith("rdma_write")]
SRD = PORT22[-5:]
PORT_510 = [n for n in PORT22 if n not in WRITE and n not in SRD]
DEV14 = DEV12 + ["alloc_mr_err", "get_dma_mr_err"]  # AWS's driver >= 2.12.0 (kernel verbs)


# -- helpers ---------------------------------------------------------------------------------
_SHM = "/dev/shm"


@pytest.fixture
def tmp_path(tmp_path_factory, request):
    """A fresh directory, on tmpfs when the machine has one. These tests create ~15,000 small
    files; on the project's VMs creating a file in /tmp (ext4 with discard) costs up to 1 ms,
    40 times tmpfs, which would make this file 4x slower. Falls back to pytest's tmp_path."""
    if os.path.isdir(_SHM) and os.access(_SHM, os.W_OK):
        d = tempfile.mkdtemp(prefix="efajob-test-simulate-", dir=_SHM)
        try:
            yield pathlib.Path(d)
        finally:
            shutil.rmtree(d, ignore_errors=True)
    else:
        yield tmp_path_factory.mktemp(request.node.name[:30], numbered=True)


def deltas(before, after):
    """{dev: {counter: after - before}} over port and device counters, as a reader sees them."""
    out = {}
    for name, a in after.devices.items():
        b = before.devices[name]
        port = {k: v - b.port_counters[k] for k, v in a.port_counters.items() if k in b.port_counters}
        dev = {k: v - b.device_counters[k] for k, v in a.device_counters.items() if k in b.device_counters}
        for k in port.keys() & dev.keys():  # kernel < 5.15: one counter shown twice
            assert port[k] == dev[k], (name, k)
        out[name] = {**port, **dev}
    return out


def net_deltas(before, after):
    return {i: {k: v - before.net[i][k] for k, v in c.items()} for i, c in after.net.items()}


class FakeTime:
    """Injected clock and sleep; `on_sleep` runs at each sleep (i.e. between steps)."""

    def __init__(self, on_sleep=None):
        self.now = 1000.0
        self.sleeps = []
        self.on_sleep = on_sleep

    def clock(self):
        return self.now

    def sleep(self, d):
        self.sleeps.append(d)
        self.now += d
        if self.on_sleep:
            self.on_sleep()


def tree_listing(root):
    """{relative path: ("d"|"l"|"f", link target or bytes)} without following symlinks."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for n in dirs + files:
            p = os.path.join(dirpath, n)
            rel = os.path.relpath(p, root)
            if os.path.islink(p):
                out[rel] = ("l", os.readlink(p))
            elif os.path.isdir(p):
                out[rel] = ("d", None)
            else:
                with open(p, "rb") as f:
                    out[rel] = ("f", f.read())
    return out


# -- layouts ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kernel,itype,port,dev", [
    ("5.10", "p4d.24xlarge", DEV12 + PORT_510, DEV12 + PORT_510),
    ("5.10", "p5.48xlarge", DEV12 + PORT_510, DEV12 + PORT_510),
    ("5.15", "p5.48xlarge", PORT_510, DEV12),
    ("5.15", "trn2.48xlarge", PORT_510, DEV12),
    ("6.6", "p4d.24xlarge", PORT_510 + WRITE, DEV12),
    ("6.6", "p5en.48xlarge", PORT_510 + WRITE, DEV12),
    ("6.17", "p4d.24xlarge", PORT22, DEV12),  # SRD names on Nitro v3 too (they read 0)
    ("6.17", "p4de.24xlarge", PORT22, DEV12),
    ("6.17", "p5.48xlarge", PORT22, DEV12),
    ("6.17", "p5en.48xlarge", PORT22, DEV12),
    ("6.17", "p6-b200.48xlarge", PORT22, DEV12),
    ("6.17", "trn1n.32xlarge", PORT22, DEV12),
    ("6.17", "trn2.48xlarge", PORT22, DEV12),
])
def test_counter_layout(kernel, itype, port, dev):
    assert sim.counter_layout(kernel, itype) == (tuple(port), tuple(dev))
    assert sim.counter_layout(kernel, itype, "in-tree") == (tuple(port), tuple(dev))


@pytest.mark.parametrize("driver,port,dev", [
    ("aws-1.14.0", PORT_510, DEV12),  # split on every kernel, even 5.10
    ("aws-2.4.1", PORT_510, DEV12),
    ("aws-2.5.0", PORT_510 + WRITE, DEV12),
    ("aws-2.12.0", PORT_510 + WRITE, DEV14),
    ("aws-2.13.0", PORT_510 + WRITE, DEV14),
    ("aws-2.15.3", PORT_510 + WRITE, DEV14),
    ("aws-2.17.0", PORT22, DEV14),
    ("aws-3.1.0", PORT22, DEV14),
])
@pytest.mark.parametrize("kernel", sim.KERNELS)
@pytest.mark.parametrize("itype", ["p4d.24xlarge", "p5.48xlarge"])
def test_counter_layout_aws_driver(driver, port, dev, kernel, itype):
    assert sim.counter_layout(kernel, itype, driver) == (tuple(port), tuple(dev))


@pytest.mark.parametrize("driver,version", [
    ("in-tree", None), ("aws-2.17.0", "2.17.0g"), ("aws-1.14.0", "1.14.0g"), ("aws-3.1.0", "3.1.0g")])
def test_module_version(tmp_path, driver, version):
    assert sim.module_version(driver) == version
    sim.build_node(str(tmp_path), "p5.48xlarge", driver=driver, device_limit=1)
    path = tmp_path / "module" / "efa" / "version"
    assert (path.read_text() if path.exists() else None) == (version and version + "\n")
    assert sim.open_node(str(tmp_path)).driver == driver


@pytest.mark.parametrize("driver", ["aws-1.13.0", "aws-3.2.0", "aws-2.17", "mlx5", "AWS-2.17.0", ""])
def test_driver_unknown(driver):
    with pytest.raises(SimulatorError, match="unknown driver|not modelled"):
        sim.counter_layout("6.17", "p5.48xlarge", driver)


def test_default_driver_is_a_recent_aws_driver():
    assert sim.DEFAULT_DRIVER == "aws-2.17.0" and sim.DEFAULT_DRIVER in sim.DRIVERS
    assert all(sim.aws_version(d) is not None for d in sim.DRIVERS[1:])


@pytest.mark.parametrize("itype,write,srd", [
    ("p4d.24xlarge", False, False), ("p4de.24xlarge", False, False),
    ("p5.48xlarge", True, True), ("trn1.32xlarge", True, True), ("p6-b200.48xlarge", True, True)])
def test_supported_counters(itype, write, srd):
    got = set(sim.supported_counters(INSTANCE_TYPES[itype], PORT22 + DEV14))
    assert set(WRITE) <= got if write else not set(WRITE) & got
    assert set(SRD) <= got if srd else not set(SRD) & got
    assert set(PORT_510 + DEV14) <= got


def test_layout_constants():
    assert list(sim.PORT_COUNTERS) == PORT22 and list(sim.DEVICE_COUNTERS) == DEV12
    assert sim.KERNELS == ("5.10", "5.15", "6.6", "6.17")


@pytest.mark.parametrize("kernel,itype", [("6.1", "p5.48xlarge"), ("6.17", "p3dn.24xlarge"), ("", "")])
def test_layout_unknown(kernel, itype):
    with pytest.raises(SimulatorError, match="unknown"):
        sim.counter_layout(kernel, itype)


@pytest.mark.parametrize("kernel,gbps,rate", [
    ("5.10", 400, "100 Gb/sec (4X EDR)"), ("6.6", 200, "100 Gb/sec (4X EDR)"),
    ("6.17", 100, "100 Gb/sec (4X EDR)"), ("6.17", 200, "200 Gb/sec (4X HDR)"),
    ("6.17", 400, "400 Gb/sec (8X HDR)"),
])
def test_rate_text(kernel, gbps, rate):
    assert sim.rate_text(kernel, gbps) == rate


@pytest.mark.parametrize("driver,gbps,rate", [
    ("aws-2.12.0", 400, "100 Gb/sec (4X EDR)"), ("aws-2.13.0", 200, "200 Gb/sec (4X HDR)"),
    ("aws-2.17.0", 400, "400 Gb/sec (8X HDR)"), ("aws-2.17.0", 100, "100 Gb/sec (4X EDR)"),
])
def test_rate_text_aws_driver(driver, gbps, rate):
    for kernel in sim.KERNELS:  # AWS's driver reports the real rate since 2.13.0, on any kernel
        assert sim.rate_text(kernel, gbps, driver) == rate


# -- building --------------------------------------------------------------------------------
@pytest.mark.parametrize("itype", sorted(INSTANCE_TYPES))
def test_build_discovered_like_sysfs(tmp_path, itype):
    kernel = "6.17"
    node = sim.build_node(str(tmp_path), itype, kernel, device_limit=3)
    it = INSTANCE_TYPES[itype]
    port, dev = sim.counter_layout(kernel, itype, sim.DEFAULT_DRIVER)
    found = discover_devices(str(tmp_path))
    assert [d.name for d in found] == sorted(it.device_names[:3], key=natural_key)
    assert node.device_order == it.device_names[:3]
    for d in found:
        assert (d.vendor, d.device_id, d.driver, d.ports) == ("0x1d0f", it.pci_device_id, "efa", (1,))
        assert d.state == "4: ACTIVE" and d.rate_gbps == it.gbps_per_device
        assert d.port_counter_names == tuple(sorted(port))
        assert d.device_counter_names == tuple(sorted(dev))
        assert not os.path.exists(os.path.join(d.path, "ports", "1", "counters"))
        for sub in ("hw_counters", "ports/1/hw_counters"):
            with open(os.path.join(d.path, sub, "lifespan")) as f:
                assert f.read() in ("10\n", "12\n")
        with open(os.path.join(d.path, "ports", "1", "link_layer")) as f:
            assert f.read() == "Unknown\n"
    snap = read_snapshot(str(tmp_path))
    for r in snap.devices.values():
        assert r.port_counters["tx_bytes"] > 10**9 and r.port_counters["rx_pkts"] > 0
        assert r.device_counters["submitted_cmds"] >= r.device_counters["completed_cmds"] > 0
        # Registered but not fetched on this type: the files read 0.
        unsupported = set(port) - set(sim.supported_counters(it, port))
        assert all(r.port_counters[k] == 0 for k in unsupported)
        assert bool(unsupported) == (it.nitro < 4)
    # Like sysfs: class entries and device/driver are symlinks (readers must follow them).
    assert os.path.islink(os.path.join(str(tmp_path), "class", "infiniband", it.device_names[0]))
    assert os.path.islink(os.path.join(found[0].path, "device", "driver"))


@pytest.mark.parametrize("kernel,driver,rate", [
    ("6.6", "in-tree", 100.0), ("6.17", "in-tree", 400.0), ("5.10", "aws-2.12.0", 100.0),
    ("5.10", "aws-2.13.0", 400.0)])
def test_rate_file_follows_kernel_or_driver(tmp_path, kernel, driver, rate):
    sim.build_node(str(tmp_path), "p6-b200.48xlarge", kernel, driver=driver, device_limit=1)
    assert discover_devices(str(tmp_path))[0].rate_gbps == rate


def test_kernel_510_lists_everything_twice(tmp_path):
    sim.build_node(str(tmp_path), "p4d.24xlarge", "5.10", driver="in-tree")
    snap = read_snapshot(str(tmp_path))
    for r in snap.devices.values():
        assert set(r.port_counters) == set(r.device_counters) == set(DEV12 + PORT_510)
        assert r.port_counters == r.device_counters


def test_efa_names_mlx5_and_netdevs(tmp_path):
    root = str(tmp_path)
    sim.build_node(root, "p6-b200.48xlarge", mlx5=True, efa_names=True)
    assert sorted(os.listdir(os.path.join(root, "class", "infiniband"))) == (
        [f"efa_{i}" for i in range(8)] + ["mlx5_0"])
    assert [d.name for d in discover_devices(root)] == [f"efa_{i}" for i in range(8)]
    assert os.path.isdir(os.path.join(root, "class", "infiniband", "mlx5_0", "ports", "1", "counters"))
    assert discover_netdevs(root) == ["eth0"]
    snap = read_snapshot(root)
    assert "mlx5_0" not in snap.devices and list(snap.net) == ["eth0"]
    assert set(snap.net["eth0"]) == set(sim.NETDEV_STATS) and snap.net["eth0"]["rx_bytes"] > 0


def test_no_ena(tmp_path):
    node = sim.build_node(str(tmp_path), "p4d.24xlarge", ena=False)
    assert discover_netdevs(str(tmp_path)) == []
    with pytest.raises(SimulatorError, match="no ENA"):
        node.traffic(1, 1, 1, ena_tx_gbps=1)


def test_values_deterministic_by_seed(tmp_path):
    def values(name, seed, limit=6):
        return read_snapshot(sim.build_node(str(tmp_path / name), seed=seed, device_limit=limit).root
                             ).to_dict()["devices"]

    a, b, c = values("a", 3), values("b", 3), values("c", 4)
    assert a == b and a != c
    # A device's values do not depend on how many devices were built.
    d = values("d", 3, 2)
    assert d == [x for x in a if x["name"] in ("rdmap79s0", "rdmap80s0")]


def test_build_errors(tmp_path):
    (tmp_path / "x").write_text("")
    with pytest.raises(SimulatorError, match="not an empty directory"):
        sim.build_node(str(tmp_path))
    with pytest.raises(SimulatorError, match="unknown instance type"):
        sim.build_node(str(tmp_path / "n"), "m5.large")
    with pytest.raises(SimulatorError, match="unknown kernel"):
        sim.build_node(str(tmp_path / "n"), kernel="4.14")
    with pytest.raises(SimulatorError, match="not a simulated tree"):
        sim.open_node(str(tmp_path))
    with pytest.raises(SimulatorError, match="not a simulated tree"):
        sim.remove_tree(str(tmp_path))


def test_open_node_reads_back(tmp_path):
    built = sim.build_node(str(tmp_path), "trn2.48xlarge", "6.6", driver="in-tree", seed=9,
                           device_limit=4)
    node = sim.open_node(str(tmp_path))
    assert (node.instance_type, node.kernel, node.seed, node.device_order, node.driver) == (
        built.instance_type, "6.6", 9, built.device_order, "in-tree")
    assert len(node.counter_files()) == 4 * (17 + 12)
    aws = sim.build_node(str(tmp_path / "aws"), "trn2.48xlarge", "6.6", seed=9, device_limit=4)
    assert sim.open_node(aws.root).driver == "aws-2.17.0"
    assert len(aws.counter_files()) == 4 * (22 + 14)


# -- traffic round trips -------------------------------------------------------------------------
ROUND_TRIPS = [
    # instance type, kernel, pattern, realtime (in steps of 0.5 s with a fake clock); in-tree
    # driver (the kernel's layouts), then AWS's (kernel "aws-...": its layouts on kernel 5.15)
    ("p4d.24xlarge", "5.10", "steady", False), ("p5.48xlarge", "5.15", "bursty", True),
    ("p5en.48xlarge", "6.6", "allreduce", True), ("p4d.24xlarge", "6.6", "bursty", False),
    ("p5.48xlarge", "6.17", "steady", True), ("p4d.24xlarge", "6.17", "allreduce", True),
    ("p6-b200.48xlarge", "6.17", "bursty", True), ("trn1n.32xlarge", "6.17", "allreduce", False),
    ("trn2.48xlarge", "5.15", "steady", True),
    ("p4d.24xlarge", "aws-1.14.0", "bursty", True), ("p5.48xlarge", "aws-2.5.0", "steady", False),
    ("p4d.24xlarge", "aws-2.17.0", "steady", True), ("p5en.48xlarge", "aws-2.17.0", "allreduce", True),
]


@pytest.mark.parametrize("itype,kernel,pattern,realtime", ROUND_TRIPS)
def test_round_trip_exact(tmp_path, itype, kernel, pattern, realtime):
    # 3 devices: the bytes do not divide evenly.
    driver = kernel if kernel.startswith("aws-") else "in-tree"
    kernel = "5.15" if driver != "in-tree" else kernel
    node = sim.build_node(str(tmp_path), itype, kernel, driver=driver, seed=5, device_limit=3)
    before = read_snapshot(node.root)
    t = FakeTime()
    inj = node.traffic(123.4, 77.7, 2.5, pattern=pattern, realtime=realtime, step=0.5,
                       clock=t.clock, sleep=t.sleep)
    after = read_snapshot(node.root)
    assert t.sleeps == ([0.5] * 5 if realtime else [])
    assert deltas(before, after) == inj.devices
    assert (inj.resets, inj.vanished, inj.garbage) == ([], [], [])
    assert inj.totals["tx_bytes"] == 123.4e9 / 8 * 2.5 == sum(d["tx_bytes"] for d in inj.devices.values())
    assert inj.totals["rx_bytes"] == 24_281_250_000
    write = "rdma_write_bytes" in inj.totals and INSTANCE_TYPES[itype].nitro >= 4
    # Packets are counted per step: ceil(bytes / payload) each time.
    steps = 5 if realtime else 1
    for d in inj.devices.values():
        assert 0 <= d["tx_pkts"] - -(-d["tx_bytes"] // sim.PAYLOAD_BYTES) < steps
        assert 0 <= d["rx_pkts"] - -(-d["rx_bytes"] // sim.PAYLOAD_BYTES) < steps
        assert 0 < d["send_bytes"] < d["tx_bytes"] // 10 and d["send_wrs"] > 0
        assert d["submitted_cmds"] == d["completed_cmds"] > 0
        if write:
            assert d["tx_bytes"] == d["send_bytes"] + d["rdma_write_bytes"]
            assert d["rx_bytes"] == d["recv_bytes"] + d["rdma_write_recv_bytes"]
            assert d["rdma_write_wrs"] > 0 and d["rdma_read_bytes"] == 0
        else:
            assert d["tx_bytes"] == d["send_bytes"] + d["rdma_read_resp_bytes"]
            assert d["rx_bytes"] == d["recv_bytes"] + d["rdma_read_bytes"]
            assert d["rdma_read_wrs"] > 0 and d.get("rdma_write_bytes", 0) == 0
        for k in set(d) - set(sim.supported_counters(INSTANCE_TYPES[itype], list(d))):
            assert d[k] == 0, k  # registered, not fetched: never moves
    assert inj.totals == {k: sum(d[k] for d in inj.devices.values()) for k in inj.totals}


def test_round_trip_full_p5(tmp_path):
    node = sim.build_node(str(tmp_path), "p5.48xlarge", mlx5=True)
    before = read_snapshot(node.root)
    inj = node.traffic(3200, 3000, 7.3, ena_tx_gbps=0.3)
    after = read_snapshot(node.root)
    assert [d.name for d in discover_devices(node.root)] == sorted(INSTANCE_TYPES["p5.48xlarge"].device_names, key=natural_key)
    assert len(inj.devices) == 32 and deltas(before, after) == inj.devices
    assert net_deltas(before, after) == inj.ena
    assert inj.totals["tx_bytes"] == 2_920_000_000_000 and inj.notes == []


def test_exact_split_and_devices(tmp_path):
    node = sim.build_node(str(tmp_path), "p5.48xlarge", device_limit=5)
    before = read_snapshot(node.root)
    # 1 byte/s short of even: the remainder is spread, the sum is exact.
    inj = node.traffic(0.000000008 * 7, 0, 1, devices=["rdmap81s0", 0, "3"])
    after = read_snapshot(node.root)
    assert deltas(before, after) == inj.devices
    tx = {d: c["tx_bytes"] for d, c in inj.devices.items() if c["tx_bytes"]}
    assert sorted(tx) == ["rdmap79s0", "rdmap81s0", "rdmap82s0"] and sum(tx.values()) == 7
    assert sorted(tx.values()) == [2, 2, 3]
    with pytest.raises(SimulatorError, match="unknown device 'rdmap1s0'"):
        node.traffic(1, 1, 1, devices=["rdmap1s0"])
    with pytest.raises(SimulatorError, match="out of range"):
        node.traffic(1, 1, 1, devices=[5])


@pytest.mark.parametrize("kw,msg", [
    (dict(pattern="spiky"), "unknown pattern"), (dict(fault="fire"), "unknown fault"),
    (dict(seconds=0), "seconds must be > 0"), (dict(tx_gbps=-1), "finite number >= 0"),
    (dict(step=0, realtime=True), "step must be > 0"),
])
def test_traffic_errors(tmp_path, kw, msg):
    node = sim.build_node(str(tmp_path), "p4d.24xlarge")
    args = dict(tx_gbps=1, rx_gbps=1, seconds=1)
    args.update(kw)
    with pytest.raises(SimulatorError, match=msg):
        node.traffic(**args)


def test_ena_traffic(tmp_path):
    node = sim.build_node(str(tmp_path), "p5.48xlarge", device_limit=2)
    before = read_snapshot(node.root)
    inj = node.traffic(0.1, 0.1, 4, ena_tx_gbps=8, ena_rx_gbps=6)
    after = read_snapshot(node.root)
    assert net_deltas(before, after) == inj.ena
    assert inj.ena["eth0"]["tx_bytes"] == 4 * 10**9 and inj.ena["eth0"]["rx_bytes"] == 3 * 10**9
    assert inj.ena["eth0"]["tx_packets"] == math.ceil(4 * 10**9 / sim.ENA_PACKET_BYTES)


def test_sampler_kept_open_sees_in_place_updates(tmp_path):
    node = sim.build_node(str(tmp_path), "p5en.48xlarge", "6.6", device_limit=4)
    path = node.counter_files()[0]
    ino = os.stat(path).st_ino
    with Sampler(node.root, rediscover_interval=float("inf")) as s:
        fds = list(s._fds)
        before = s.sample()
        inj1 = node.traffic(200, 100, 10)
        mid = s.sample()
        inj2 = node.traffic(50, 60, 3, fault="reset")
        after = s.sample()
        assert s._fds == fds  # the same descriptors throughout
    assert os.stat(path).st_ino == ino
    assert deltas(before, mid) == inj1.devices
    dev = inj2.resets[0]
    seen = deltas(mid, after)
    assert {d: c for d, c in seen.items() if d != dev} == {
        d: c for d, c in inj2.devices.items() if d != dev}
    for k, moved in inj2.devices[dev].items():
        assert after.devices[dev].port_counters.get(k, after.devices[dev].device_counters.get(k)) == (
            inj2.reset_bases[dev][k] + moved)


def test_realtime_steps_with_open_sampler(tmp_path):
    node = sim.build_node(str(tmp_path), "p5.48xlarge", device_limit=4)
    s = Sampler(node.root, rediscover_interval=float("inf"))
    snaps = [s.sample()]
    t = FakeTime(on_sleep=lambda: snaps.append(s.sample()))
    inj = node.traffic(80, 80, 8, pattern="bursty", realtime=True, step=1, clock=t.clock, sleep=t.sleep)
    snaps.append(s.sample())
    s.close()
    assert t.sleeps == [1.0] * 8 and len(snaps) == 10
    assert deltas(snaps[0], snaps[-1]) == inj.devices
    # snaps[i + 1] is the state after step i - 1: tx moves in steps 0,1,4,5 and rx in 1,2,5,6.
    tx = [sum(deltas(a, b)[d]["tx_bytes"] for d in inj.devices) for a, b in zip(snaps[1:], snaps[2:])]
    rx = [sum(deltas(a, b)[d]["rx_bytes"] for d in inj.devices) for a, b in zip(snaps[1:], snaps[2:])]
    assert [x > 0 for x in tx] == [True, True, False, False, True, True, False, False]
    assert [x > 0 for x in rx] == [False, True, True, False, False, True, True, False]
    assert sum(tx) == 80e9 and len(set(x for x in tx if x)) == 1


class LateTime(FakeTime):
    """A fake clock on which some sleeps overshoot (a busy machine): sleep number k (0-based)
    in `late` wakes up `late[k]` seconds after it was due."""

    def __init__(self, late, on_sleep=None):
        super().__init__(on_sleep)
        self.late = late

    def sleep(self, d):
        self.now += self.late.get(len(self.sleeps), 0.0)
        super().sleep(d)


def test_realtime_late_steps_slip_instead_of_bursting(tmp_path):
    # Step 2 wakes up 0.6 s late; catching up would then write step 3 only 0.4 s after step 2,
    # 2.5x the planned rate, which is the link rate here (4 x 100 Gbps on a p4d).
    node = sim.build_node(str(tmp_path), "p4d.24xlarge")
    s = Sampler(node.root, rediscover_interval=float("inf"))
    snaps = [(1000.0, s.sample())]
    t = LateTime({2: 0.6})
    t.on_sleep = lambda: snaps.append((t.now, s.sample()))
    inj = node.traffic(400, 400, 6, realtime=True, step=1, clock=t.clock, sleep=t.sleep)
    snaps.append((t.now, s.sample()))
    s.close()
    # snaps[k + 1] is taken just before step k is written (at its time), snaps[-1] after the
    # last: step k's bytes are snaps[k + 1] -> snaps[k + 2], written snaps[k + 1] - snaps[k]
    # after the previous step (or the start).
    assert len(snaps) == 8
    gaps = []
    for k in range(6):
        moved = sum(c["tx_bytes"] for c in deltas(snaps[k + 1][1], snaps[k + 2][1]).values())
        gap = snaps[k + 1][0] - snaps[k][0]
        gaps.append(round(gap, 6))
        assert moved == 50 * 10**9 and moved * 8 / gap <= 400e9, (k, gap)
    assert gaps == [1.0, 1.0, 1.6, 1.0, 1.0, 1.0]
    assert deltas(snaps[0][1], snaps[-1][1]) == inj.devices  # totals still exact
    assert inj.totals["tx_bytes"] == 400e9 / 8 * 6
    assert t.now == pytest.approx(1006.6)  # the run slipped by the lateness


def test_realtime_allreduce_and_short_last_step(tmp_path):
    node = sim.build_node(str(tmp_path), "trn2.48xlarge", device_limit=2)
    before = read_snapshot(node.root)
    t = FakeTime()
    inj = node.traffic(10, 10, 5.5, pattern="allreduce", realtime=True, step=1, clock=t.clock, sleep=t.sleep)
    assert t.sleeps == [1.0] * 5 + [0.5]
    assert deltas(before, read_snapshot(node.root)) == inj.devices
    assert inj.totals["tx_bytes"] == inj.totals["rx_bytes"] == 6_875_000_000


def test_concurrent_traffic_adds_up(tmp_path):
    # Two jobs sharing a node: two traffic calls at once; the counters get the sum of both.
    import threading

    node = sim.build_node(str(tmp_path), "p5.48xlarge", device_limit=4)
    before = read_snapshot(node.root)
    out = {}

    def run(key, tx, devices):
        out[key] = sim.open_node(node.root).traffic(tx, tx / 2, 0.06, realtime=True, step=0.01,
                                                    devices=devices)

    threads = [threading.Thread(target=run, args=("a", 40, [0, 1, 2])),
               threading.Thread(target=run, args=("b", 16, [1, 3]))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seen = deltas(before, read_snapshot(node.root))
    assert seen == {d: {k: out["a"].devices[d][k] + out["b"].devices[d][k] for k in c}
                    for d, c in out["a"].devices.items()}
    assert sum(c["tx_bytes"] for c in seen.values()) == 420_000_000  # (40 + 16) Gbps for 0.06 s


# -- faults ----------------------------------------------------------------------------------
def test_fault_drops(tmp_path):
    node = sim.build_node(str(tmp_path), "p5.48xlarge", device_limit=3)
    before = read_snapshot(node.root)
    inj = node.traffic(100, 100, 10, fault="drops", devices=[0, 1])
    assert deltas(before, read_snapshot(node.root)) == inj.devices
    d = inj.devices
    assert d["rdmap79s0"]["rx_drops"] == d["rdmap79s0"]["rx_pkts"] // 1000 > 0
    assert d["rdmap81s0"]["rx_drops"] == 0


@pytest.mark.parametrize("fault,moved", [
    ("retrans", ("retrans_bytes", "retrans_pkts", "retrans_timeout_events")),
    ("impaired", ("impaired_remote_conn_events", "unresponsive_remote_events")),
])
def test_fault_srd(tmp_path, fault, moved):
    node = sim.build_node(str(tmp_path / "p5"), "p5.48xlarge", device_limit=2)
    before = read_snapshot(node.root)
    inj = node.traffic(50, 50, 20, fault=fault)
    assert deltas(before, read_snapshot(node.root)) == inj.devices
    for c in inj.devices.values():
        assert all(c[k] > 0 for k in moved)
        assert all(c[k] == 0 for k in SRD if k not in moved)
    assert inj.notes == []
    for itype, kernel, driver in (("p5.48xlarge", "6.6", "in-tree"),
                                  ("p5.48xlarge", "6.17", "aws-2.15.3")):
        node = sim.build_node(str(tmp_path / driver), itype, kernel, driver=driver, device_limit=2)
        before = read_snapshot(node.root)
        inj = node.traffic(50, 50, 20, fault=fault)
        assert deltas(before, read_snapshot(node.root)) == inj.devices
        assert "no SRD counters" in inj.notes[0]
        assert not any(k in c for c in inj.devices.values() for k in SRD)
    # Nitro v3: the files exist (kernel 6.17, AWS 2.17.0), read 0 and stay 0.
    for driver in ("in-tree", "aws-2.17.0"):
        node = sim.build_node(str(tmp_path / ("p4d-" + driver)), "p4d.24xlarge", "6.17",
                              driver=driver, device_limit=2)
        before = read_snapshot(node.root)
        inj = node.traffic(50, 50, 20, fault=fault)
        after = read_snapshot(node.root)
        assert deltas(before, after) == inj.devices
        assert "Nitro v3" in inj.notes[0] and "read 0" in inj.notes[0]
        for r in after.devices.values():
            assert {k: r.port_counters[k] for k in SRD} == dict.fromkeys(SRD, 0)


@pytest.mark.parametrize("itype,kernel,driver,write", [
    ("p5.48xlarge", "6.17", "aws-2.17.0", True), ("p5.48xlarge", "5.10", "in-tree", False),
    ("p4d.24xlarge", "6.17", "aws-2.17.0", False), ("p4d.24xlarge", "6.17", "in-tree", False)])
def test_fault_wr_errors(tmp_path, itype, kernel, driver, write):
    node = sim.build_node(str(tmp_path), itype, kernel, driver=driver, device_limit=3)
    before = read_snapshot(node.root)
    inj = node.traffic(50, 50, 100, fault="wr-errors", devices=[1, 2])
    assert deltas(before, read_snapshot(node.root)) == inj.devices
    hit, d = node.device_order[1], inj.devices
    assert d[hit]["rdma_read_wr_err"] == sim.RDMA_READ_WR_ERR_PER_S * 100 == 500
    if write:  # only a device with RDMA write counts write errors
        assert d[hit]["rdma_write_wr_err"] == 300
    else:
        assert d[hit].get("rdma_write_wr_err", 0) == 0
        assert any("no RDMA write" in n for n in inj.notes) == (INSTANCE_TYPES[itype].nitro < 4)
    for other in (node.device_order[0], node.device_order[2]):
        assert d[other]["rdma_read_wr_err"] == d[other].get("rdma_write_wr_err", 0) == 0
    assert inj.totals["rdma_read_wr_err"] == 500


@pytest.mark.parametrize("kernel,driver", [("6.17", "aws-2.17.0"), ("5.10", "in-tree")])
def test_fault_admin_errors(tmp_path, kernel, driver):
    node = sim.build_node(str(tmp_path), "p5.48xlarge", kernel, driver=driver, device_limit=2)
    before = read_snapshot(node.root)
    inj = node.traffic(10, 10, 60, fault="admin-errors")
    after = read_snapshot(node.root)
    assert deltas(before, after) == inj.devices  # on 5.10 also: both lists agree
    hit, ok = inj.devices["rdmap79s0"], inj.devices["rdmap80s0"]
    assert (hit["cmds_err"], hit["no_completion_cmds"]) == (60, 12)
    assert hit["submitted_cmds"] - hit["completed_cmds"] == 12  # timed out: never completed
    assert (ok["cmds_err"], ok["no_completion_cmds"]) == (0, 0)
    assert ok["submitted_cmds"] == ok["completed_cmds"] > 0
    r = after.devices["rdmap79s0"]
    assert r.device_counters["cmds_err"] == before.devices["rdmap79s0"].device_counters["cmds_err"] + 60


def test_fault_missing_device_traffic(tmp_path):
    node = sim.build_node(str(tmp_path), "p4d.24xlarge", "6.17")
    before = read_snapshot(node.root)
    inj = node.traffic(40, 40, 5, fault="missing-device")
    after = read_snapshot(node.root)
    gone = "rdmap160s27"
    assert inj.missing == [gone] and gone not in inj.devices and inj.vanished == []
    assert sorted(after.devices) == ["rdmap144s27", "rdmap16s27", "rdmap32s27"]
    assert deltas(before, after) == inj.devices and inj.totals["tx_bytes"] == 25 * 10**9
    assert "3 of its instance type's 4 devices" in inj.notes[0]
    with pytest.raises(SimulatorError, match="only selected device"):
        node.traffic(1, 1, 1, fault="missing-device", devices=["rdmap144s27"])


def test_fault_missing_device_tree(tmp_path):
    node = sim.build_node(str(tmp_path), "p5.48xlarge", fault="missing-device")
    assert node.missing == ("rdmap201s0",) and len(node.device_order) == 31
    assert len(discover_devices(node.root)) == 31
    assert sim.open_node(node.root).missing == ("rdmap201s0",)
    r = CliRunner().invoke(simulate_cli, ["init", "--root", str(tmp_path / "c"), "--instance-type",
                                          "p4d.24xlarge", "--fault", "missing-device"])
    assert r.exit_code == 0, r.output
    assert r.output.endswith("3 EFA devices (rdmap16s27..rdmap144s27), 108 counter files, +eth0 "
                             "missing rdmap160s27\n")
    with pytest.raises(SimulatorError, match="unknown tree fault"):
        sim.build_node(str(tmp_path / "d"), fault="drops")
    with pytest.raises(SimulatorError, match="at least two"):
        sim.build_node(str(tmp_path / "e"), device_limit=1, fault="missing-device")


@pytest.mark.parametrize("kernel", ["5.10", "6.17"])
def test_fault_reset(tmp_path, kernel):
    node = sim.build_node(str(tmp_path), "p5.48xlarge", kernel, driver="in-tree", device_limit=3)
    before = read_snapshot(node.root)
    inj = node.traffic(30, 30, 10, fault="reset", devices=["rdmap80s0", "rdmap81s0"])
    after = read_snapshot(node.root)
    assert inj.resets == ["rdmap80s0"] and set(inj.reset_bases) == {"rdmap80s0"}
    seen = deltas(before, after)
    assert {d: c for d, c in seen.items() if d != "rdmap80s0"} == {
        d: c for d, c in inj.devices.items() if d != "rdmap80s0"}
    b, a = before.devices["rdmap80s0"], after.devices["rdmap80s0"]
    for counters_b, counters_a in ((b.port_counters, a.port_counters), (b.device_counters, a.device_counters)):
        for k, v in counters_a.items():
            assert v == inj.reset_bases["rdmap80s0"][k] + inj.devices["rdmap80s0"][k]
            if counters_b[k] > 0:
                assert v < counters_b[k], k  # every nonzero counter went down
    assert inj.devices["rdmap80s0"]["tx_bytes"] == 30e9 / 8 * 10 / 2
    assert inj.totals["tx_bytes"] == 30e9 / 8 * 10


def test_fault_reset_realtime_shows_the_drop_first(tmp_path):
    node = sim.build_node(str(tmp_path), "p4d.24xlarge", device_limit=2)
    s = Sampler(node.root)
    snaps = [s.sample()]
    t = FakeTime(on_sleep=lambda: snaps.append(s.sample()))
    inj = node.traffic(10, 10, 2, fault="reset", realtime=True, clock=t.clock, sleep=t.sleep)
    snaps.append(s.sample())
    s.close()
    dev = inj.resets[0]
    first = snaps[1].devices[dev].port_counters
    assert first == {k: inj.reset_bases[dev][k] for k in first}  # dropped, nothing moved yet
    assert snaps[-1].devices[dev].port_counters["tx_bytes"] == (
        inj.reset_bases[dev]["tx_bytes"] + inj.devices[dev]["tx_bytes"])


def test_fault_dead_device(tmp_path):
    node = sim.build_node(str(tmp_path), "p5en.48xlarge", device_limit=4)
    before = read_snapshot(node.root)
    inj = node.traffic(300, 300, 2, fault="dead-device")
    assert deltas(before, read_snapshot(node.root)) == inj.devices
    dead = node.device_order[0]
    assert set(inj.devices[dead].values()) == {0}
    assert inj.totals["tx_bytes"] == 75 * 10**9
    assert all(inj.devices[d]["tx_bytes"] == 25 * 10**9 for d in node.device_order[1:])
    with pytest.raises(SimulatorError, match="at least two"):
        node.traffic(1, 1, 1, fault="dead-device", devices=[0])


def test_fault_vanish_with_open_sampler(tmp_path):
    node = sim.build_node(str(tmp_path), "p6-b200.48xlarge", device_limit=3)
    last = node.device_order[-1]
    s = Sampler(node.root, rediscover_interval=float("inf"))
    before = s.sample()
    inj = node.traffic(120, 120, 5, fault="vanish")
    after = s.sample()  # must not raise
    again = s.sample()
    s.close()
    assert inj.vanished == [last] and last not in inj.devices
    assert last not in after.devices and last not in again.devices
    assert deltas(before, after) == inj.devices == deltas(before, again)
    assert inj.totals["tx_bytes"] == 75 * 10**9
    assert not os.path.lexists(os.path.join(node.root, "class", "infiniband", last))
    assert node.present_devices() == list(node.device_order[:-1])
    with pytest.raises(SimulatorError, match=r"unknown device .* \(it vanished\)"):
        node.traffic(1, 1, 1, devices=[last])


def test_vanish_truncates_before_removing(tmp_path):
    node = sim.build_node(str(tmp_path), "p4d.24xlarge", device_limit=2)
    path = os.path.join(node.device_path(node.device_order[1]), "ports", "1", "hw_counters", "tx_bytes")
    fd = os.open(path, os.O_RDONLY)
    try:
        assert os.pread(fd, 64, 0).strip().isdigit()
        sim.vanish_device(node, node.device_order[1])
        assert os.pread(fd, 64, 0) == b""
    finally:
        os.close(fd)


def test_vanish_realtime_midway(tmp_path):
    node = sim.build_node(str(tmp_path), "p5.48xlarge", device_limit=2)
    s = Sampler(node.root)
    seen = []
    t = FakeTime(on_sleep=lambda: seen.append(sorted(s.sample().devices)))
    node.traffic(10, 10, 4, fault="vanish", realtime=True, clock=t.clock, sleep=t.sleep)
    seen.append(sorted(s.sample().devices))
    s.close()
    both, one = ["rdmap79s0", "rdmap80s0"], ["rdmap79s0"]
    assert seen == [both, both, both, one, one]


@pytest.mark.parametrize("kernel", ["5.10", "6.17"])
def test_fault_garbage(tmp_path, kernel):
    node = sim.build_node(str(tmp_path), "p5.48xlarge", kernel, driver="in-tree", device_limit=2)
    before = read_snapshot(node.root)
    inj = node.traffic(10, 10, 1, fault="garbage")
    after = read_snapshot(node.root)
    assert inj.garbage == ["rdmap79s0/rdma_read_wr_err"]
    r = after.devices["rdmap79s0"]
    assert "rdma_read_wr_err" not in r.port_counters and "rdma_read_wr_err" not in r.device_counters
    assert deltas(before, after) == inj.devices
    with open(os.path.join(node.device_path("rdmap79s0"), "ports/1/hw_counters/rdma_read_wr_err"), "rb") as f:
        assert f.read() == b"N/A (no PMA)\n"
    # Later traffic leaves the garbage alone and stays exact.
    inj2 = node.traffic(10, 10, 1)
    assert deltas(after, read_snapshot(node.root)) == inj2.devices


def test_write_in_place_shorter(tmp_path):
    p = tmp_path / "c"
    p.write_bytes(b"123456789012\n")
    ino = os.stat(p).st_ino
    fd = os.open(p, os.O_RDONLY)
    try:
        sim_traffic._write_in_place(str(p), b"42\n")
        assert os.pread(fd, 64, 0) == b"42\n" and os.stat(p).st_ino == ino
        sim_traffic._write_in_place(str(p), b"4200000000000000\n")
        assert os.pread(fd, 64, 0) == b"4200000000000000\n"
    finally:
        os.close(fd)


# -- clusters --------------------------------------------------------------------------------
def test_cluster(tmp_path):
    nodes = sim.build_cluster(str(tmp_path), 3, instance_type="p4d.24xlarge", kernel="6.6")
    assert sorted(nodes) == ["n1", "n2", "n3"] and sorted(sim.open_tree(str(tmp_path))) == sorted(nodes)
    snaps = {n: read_snapshot(node.root) for n, node in nodes.items()}
    assert snaps["n1"].to_dict()["devices"] != snaps["n2"].to_dict()["devices"]
    t = FakeTime()
    injs = sim.cluster_traffic(nodes, 40, 40, 3, realtime=True, clock=t.clock, sleep=t.sleep)
    assert t.sleeps == [1.0, 1.0, 1.0]  # lockstep: one sleep per step for all nodes
    for n, node in nodes.items():
        assert deltas(snaps[n], read_snapshot(node.root)) == injs[n].devices
    named = sim.build_cluster(str(tmp_path / "c"), ["gpu-a", "gpu-b"], device_limit=1)
    assert sorted(named) == ["gpu-a", "gpu-b"] and named["gpu-a"].name == "gpu-a"
    with pytest.raises(SimulatorError, match="is a simulated cluster"):
        sim.open_node(str(tmp_path))
    with pytest.raises(SimulatorError, match="duplicate"):
        sim.build_cluster(str(tmp_path / "d"), ["a", "a"])


# -- CLI -------------------------------------------------------------------------------------
def test_cli_init_and_traffic_json(tmp_path):
    runner = CliRunner()
    root = str(tmp_path / "sim")
    r = runner.invoke(simulate_cli, ["init", "--instance-type", "p5en.48xlarge", "--kernel", "6.6",
                                     "--root", root, "--seed", "2"])
    assert r.exit_code == 0, r.output
    assert r.output == (f"{root}: p5en.48xlarge kernel 6.6 driver aws-2.17.0, 16 EFA devices "
                        "(rdmap80s0..rdmap207s0), 576 counter files, +eth0\n")
    before = read_snapshot(root)
    r = runner.invoke(simulate_cli, ["traffic", "--root", root, "--tx-gbps", "160", "--rx-gbps", "80",
                                     "--seconds", "2", "--devices", "0,rdmap81s0", "--format", "json",
                                     "--ena-rx-gbps", "1"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    after = read_snapshot(root)
    assert deltas(before, after) == out["devices"]
    assert net_deltas(before, after) == out["ena"]
    assert out["totals"]["tx_bytes"] == 40 * 10**9
    assert out["devices"]["rdmap81s0"]["tx_bytes"] == 20 * 10**9


def test_cli_cluster_text(tmp_path):
    runner = CliRunner()
    root = str(tmp_path)
    r = runner.invoke(simulate_cli, ["init", "--instance-type", "p4d.24xlarge", "--kernel", "5.10",
                                     "--driver", "in-tree", "--root", root, "--nodes", "2", "--mlx5",
                                     "--no-ena", "--efa-names"])
    assert r.exit_code == 0, r.output
    assert r.output.splitlines() == [
        f"{root}/n{i}: p4d.24xlarge kernel 5.10 driver in-tree, 4 EFA devices (efa_0..efa_3), "
        "200 counter files, +mlx5_0 no ENA" for i in (1, 2)]
    r = runner.invoke(simulate_cli, ["traffic", "--root", root, "--tx-gbps", "8", "--rx-gbps", "8",
                                     "--seconds", "1", "--fault", "retrans"])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0] == ("n1: 1 s of steady traffic, fault retrans (p4d.24xlarge, kernel 5.10, "
                        "driver in-tree, 4 devices)")
    assert lines[1].split() == ["tx_bytes", "1,000,000,000", "8.000", "Gbps"]
    assert any(line.startswith("n2: ") for line in lines)
    assert sum("no SRD counters" in line for line in lines) == 2
    r = runner.invoke(simulate_cli, ["traffic", "--root", root, "--tx-gbps", "8", "--rx-gbps", "8",
                                     "--seconds", "1", "--format", "json"])
    assert sorted(json.loads(r.output)) == ["n1", "n2"]


def test_cli_errors(tmp_path):
    runner = CliRunner()
    root = str(tmp_path)
    r = runner.invoke(simulate_cli, ["traffic", "--root", root, "--tx-gbps", "1", "--rx-gbps", "1",
                                     "--seconds", "1"])
    assert r.exit_code == 9 and r.output.startswith(f"error: {root} is not a simulated tree")
    assert runner.invoke(simulate_cli, ["init", "--root", root, "--instance-type", "p4d.24xlarge"]).exit_code == 0
    r = runner.invoke(simulate_cli, ["init", "--root", root])
    assert r.exit_code == 9 and r.output == (f"error: {root} is not an empty directory: the "
                                             "simulator builds into an empty or missing directory\n")
    r = runner.invoke(simulate_cli, ["init", "--root", root, "--force", "--kernel", "5.15",
                                     "--instance-type", "p4d.24xlarge"])
    assert r.exit_code == 0 and "kernel 5.15" in r.output
    r = runner.invoke(simulate_cli, ["traffic", "--root", root, "--tx-gbps", "1", "--rx-gbps", "1",
                                     "--seconds", "1", "--devices", ","])
    assert r.exit_code == 2 and "--devices needs" in r.output
    r = runner.invoke(simulate_cli, ["traffic", "--root", root, "--tx-gbps", "-1", "--rx-gbps", "1",
                                     "--seconds", "1"])
    assert r.exit_code == 2
    r = runner.invoke(simulate_cli, ["init", "--root", root, "--kernel", "4.19"])
    assert r.exit_code == 2
    r = runner.invoke(simulate_cli, ["init", "--root", str(tmp_path / "x"), "--driver", "aws-1.2.3"])
    assert r.exit_code == 2 and "not modelled" in r.output
    for cmd in ([], ["init"], ["traffic"]):
        assert runner.invoke(simulate_cli, cmd + ["--help"]).exit_code == 0


# -- fixtures --------------------------------------------------------------------------------
def _load_make_fixtures():
    spec = importlib.util.spec_from_file_location("make_fixtures", os.path.join(FIXTURES, "make_fixtures.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_fixtures_are_reproducible(tmp_path):
    mod = _load_make_fixtures()
    mod.make_fixtures(str(tmp_path))
    for name in mod.TREES:
        assert tree_listing(str(tmp_path / name)) == tree_listing(os.path.join(FIXTURES, name)), name
    committed = {n for n in os.listdir(FIXTURES) if os.path.isdir(os.path.join(FIXTURES, n))}
    assert committed - {"__pycache__"} == set(mod.TREES)


P4D = ["rdmap16s27", "rdmap32s27"]


@pytest.mark.parametrize("name,itype,devices,port,dev,driver", [
    ("k5.10-p4d", "p4d.24xlarge", P4D, DEV12 + PORT_510, DEV12 + PORT_510, "in-tree"),
    ("k5.15-p5", "p5.48xlarge", ["rdmap79s0", "rdmap80s0"], PORT_510, DEV12, "in-tree"),
    ("k6.6-p5en", "p5en.48xlarge", ["rdmap80s0", "rdmap81s0"], PORT_510 + WRITE, DEV12, "in-tree"),
    ("k6.17-p5", "p5.48xlarge", ["rdmap79s0", "rdmap80s0"], PORT22, DEV12, "in-tree"),
    ("k6.17-p4d", "p4d.24xlarge", P4D, PORT22, DEV12, "in-tree"),
    ("efa-names", "p5.48xlarge", ["efa_0", "efa_1"], PORT22, DEV12, "in-tree"),
    ("mlx5-neighbour", "p6-b200.48xlarge", ["rdmap76s0", "rdmap98s0"], PORT22, DEV12, "in-tree"),
    ("aws1.14-k5.10-p4d", "p4d.24xlarge", P4D, PORT_510, DEV12, "aws-1.14.0"),
    ("aws2.5-k5.15-p5", "p5.48xlarge", ["rdmap79s0", "rdmap80s0"], PORT_510 + WRITE, DEV12, "aws-2.5.0"),
    ("aws2.13-k5.15-p5en", "p5en.48xlarge", ["rdmap80s0", "rdmap81s0"], PORT_510 + WRITE, DEV14,
     "aws-2.13.0"),
    ("aws2.17-k5.15-p5", "p5.48xlarge", ["rdmap79s0", "rdmap80s0"], PORT22, DEV14, "aws-2.17.0"),
    ("aws2.17-k5.15-p4d", "p4d.24xlarge", P4D, PORT22, DEV14, "aws-2.17.0"),
])
def test_fixture_trees(name, itype, devices, port, dev, driver):
    root = os.path.join(FIXTURES, name)
    snap = read_snapshot(root)
    assert sorted(snap.devices) == devices and list(snap.net) == ["eth0"]
    for r in snap.devices.values():
        assert set(r.port_counters) == set(port) and set(r.device_counters) == set(dev)
    node = sim.open_node(root)
    assert (node.instance_type.name, node.driver) == (itype, driver)


def test_fixture_garbage():
    snap = read_snapshot(os.path.join(FIXTURES, "garbage"))
    bad = snap.devices["rdmap79s0"].port_counters
    for k in ("tx_bytes", "rx_bytes", "tx_pkts", "rx_pkts", "send_bytes", "recv_bytes"):
        assert k not in bad
    assert bad["rdma_write_bytes"] == 2**64 - 1 and bad["rdma_write_recv_bytes"] == 123
    assert set(snap.devices["rdmap80s0"].port_counters) == set(PORT22)


def test_fixture_copy_and_unreadable_emulation(tmp_path):
    # Running as root, chmod cannot make a file unreadable: replace it with a directory (EISDIR).
    dst = str(tmp_path / "t")
    sim.copy_tree(os.path.join(FIXTURES, "k6.17-p5"), dst)
    node = sim.open_node(dst)
    path = os.path.join(node.device_path("rdmap79s0"), "ports", "1", "hw_counters", "tx_bytes")
    os.remove(path)
    os.mkdir(path)
    snap = read_snapshot(dst)
    assert "tx_bytes" not in snap.devices["rdmap79s0"].port_counters
    assert "tx_bytes" in snap.devices["rdmap80s0"].port_counters
    # The simulator leaves the unreadable counter alone and stays exact on the rest.
    inj = node.traffic(10, 10, 1)
    assert deltas(snap, read_snapshot(dst)) == inj.devices
    assert "tx_bytes" not in inj.devices["rdmap79s0"]
    shutil.rmtree(dst)
