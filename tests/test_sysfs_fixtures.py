"""The sampler against the committed fixture trees (tests/fixtures/README.md), one per kernel
layout variant of the in-tree driver and per layout change of AWS's driver, plus kernel naming,
an mlx5 neighbour and garbage files."""
from __future__ import annotations

import os

import pytest

from efajob.node.sysfs import Sampler, discover_devices, read_snapshot
from efajob.sim import copy_tree

FIX = os.path.join(os.path.dirname(__file__), "fixtures")
SRD = {"retrans_bytes", "retrans_pkts", "retrans_timeout_events", "unresponsive_remote_events",
       "impaired_remote_conn_events"}
WRITE = {"rdma_write_wrs", "rdma_write_bytes", "rdma_write_wr_err", "rdma_write_recv_bytes"}
ADMIN = {"submitted_cmds", "completed_cmds", "cmds_err", "no_completion_cmds", "keep_alive_rcvd",
         "alloc_pd_err", "create_qp_err", "create_cq_err", "reg_mr_err", "alloc_ucontext_err",
         "create_ah_err", "mmap_err"}
KVERBS = {"alloc_mr_err", "get_dma_mr_err"}  # AWS's driver >= 2.12.0 only
P4D = ["rdmap16s27", "rdmap32s27"]


@pytest.mark.parametrize("tree,devices,nport,ndev,has_write,has_srd,rate", [
    ("k5.10-p4d", P4D, 25, 25, False, False, 100.0),
    ("k5.15-p5", ["rdmap79s0", "rdmap80s0"], 13, 12, False, False, 100.0),
    ("k6.6-p5en", ["rdmap80s0", "rdmap81s0"], 17, 12, True, False, 100.0),  # rate lies < 6.13
    ("k6.17-p5", ["rdmap79s0", "rdmap80s0"], 22, 12, True, True, 100.0),
    ("k6.17-p4d", P4D, 22, 12, True, True, 100.0),  # Nitro v3: SRD files present, reading 0
    ("efa-names", ["efa_0", "efa_1"], 22, 12, True, True, 100.0),
    ("mlx5-neighbour", ["rdmap76s0", "rdmap98s0"], 22, 12, True, True, 400.0),
    # AWS's driver: split on any kernel, its own version decides the rest
    ("aws1.14-k5.10-p4d", P4D, 13, 12, False, False, 100.0),
    ("aws2.5-k5.15-p5", ["rdmap79s0", "rdmap80s0"], 17, 12, True, False, 100.0),
    ("aws2.13-k5.15-p5en", ["rdmap80s0", "rdmap81s0"], 17, 14, True, False, 200.0),  # real rate
    ("aws2.17-k5.15-p5", ["rdmap79s0", "rdmap80s0"], 22, 14, True, True, 100.0),
    ("aws2.17-k5.15-p4d", P4D, 22, 14, True, True, 100.0),
])
def test_layout_variants(tree, devices, nport, ndev, has_write, has_srd, rate):
    root = os.path.join(FIX, tree)
    found = discover_devices(root)
    assert [d.name for d in found] == devices  # mlx5_0 never appears
    snap = read_snapshot(root)
    for d in found:
        r = snap.devices[d.name]
        assert len(r.port_counters) == nport and len(r.device_counters) == ndev
        assert "lifespan" not in r.port_counters and "lifespan" not in r.device_counters
        assert WRITE.issubset(r.port_counters) == has_write
        assert SRD.issubset(r.port_counters) == has_srd
        assert bool(SRD & set(r.port_counters)) == has_srd  # all five or none
        assert d.rate_gbps == rate and d.vendor == "0x1d0f"
        assert ADMIN.issubset(r.device_counters)
        assert KVERBS.issubset(r.device_counters) == (ndev == 14)
        assert r.port_counters["tx_bytes"] > 0  # cumulative since launch
    if tree == "k5.10-p4d":
        r = snap.devices["rdmap16s27"]
        assert r.port_counters == r.device_counters  # one combined list in both places
    assert set(snap.net) == {"eth0"}  # lo has no device link


@pytest.mark.parametrize("tree", ["k6.17-p4d", "aws2.17-k5.15-p4d"])
def test_nitro_v3_registers_srd_and_rdma_write_reading_zero(tree):
    # The drivers' name tables are static: p4d has the files, but no RDMA write and no SRD
    # statistics (Nitro v4+ only), so they read 0 forever. Telling "not supported" from a
    # measured 0 is the reader's job (the instance table), not the tree's.
    snap = read_snapshot(os.path.join(FIX, tree))
    for r in snap.devices.values():
        assert {k: r.port_counters[k] for k in SRD | WRITE} == dict.fromkeys(SRD | WRITE, 0)
        assert r.port_counters["rdma_read_bytes"] > 0


@pytest.mark.parametrize("tree,version", [
    ("aws1.14-k5.10-p4d", "1.14.0g"), ("aws2.17-k5.15-p5", "2.17.0g"), ("k6.17-p5", None)])
def test_module_version_file(tree, version):
    # AWS's driver has MODULE_VERSION ("<x.y.z>g"); the in-tree driver has none.
    path = os.path.join(FIX, tree, "module", "efa", "version")
    if version is None:
        assert not os.path.exists(path)
    else:
        with open(path) as f:
            assert f.read() == version + "\n"


def test_garbage_files_are_absent_never_zero():
    snap = read_snapshot(os.path.join(FIX, "garbage"))
    pc = snap.devices["rdmap79s0"].port_counters
    for name in ("tx_bytes", "rx_bytes", "tx_pkts", "rx_pkts", "send_bytes", "recv_bytes"):
        assert name not in pc, name
    assert pc["rdma_write_bytes"] == 2**64 - 1
    assert pc["rdma_write_recv_bytes"] == 123
    assert len(snap.devices["rdmap80s0"].port_counters) == 22  # its neighbour is untouched


def test_unreadable_counter_in_a_copy(tmp_path):
    dst = str(tmp_path / "t")
    copy_tree(os.path.join(FIX, "k6.17-p5"), dst)
    p = os.path.join(dst, "class/infiniband/rdmap79s0/ports/1/hw_counters/tx_bytes")
    os.remove(p)
    os.mkdir(p)  # reading it fails with EISDIR: root can read any file, whatever its mode
    with Sampler(dst) as s:
        pc = s.sample().devices["rdmap79s0"].port_counters
    assert "tx_bytes" not in pc and "rx_bytes" in pc
