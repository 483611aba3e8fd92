"""ENA allowance counters (efajob/node/ethtool.py): ioctl buffers parsed from packed bytes, the
reader's call sequence against a fake kernel, a real SIOCETHTOOL read on a veth pair in a test
network namespace, the `ethtool -S` file source, the Sampler merge, config, and the whole path
prolog -> traffic(fault="ena-allowance") -> epilog -> report finding (and daemon -> CloudWatch)."""
from __future__ import annotations

import ctypes
import errno
import json
import os
import struct
import subprocess
import sys
import uuid

import pytest

from conftest import HOOK_WAIT_ENV, require, require_binary
from efajob.node import ethtool as et
from efajob.config import build_config
from efajob.node.counters import diff_snapshots
from efajob.errors import ConfigError
from efajob.node.ethtool import (ALLOWANCE_COUNTERS, EthtoolStats, FileReader, IoctlReader,
                                 ethtool_reader_from_config)
from efajob.sim import ETHTOOL_DIR, build_node, ethtool_path
from efajob.node.readings import Snapshot
from efajob.node.sysfs import Sampler, read_snapshot

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable
ALLOW5 = list(ALLOWANCE_COUNTERS)


def name32(s: str) -> bytes:
    return s.encode().ljust(32, b"\0")[:32]


def sset(cmd=et.ETHTOOL_GSSET_INFO, mask=1 << et.ETH_SS_STATS, count=3) -> bytes:
    return struct.pack("=IIQI", cmd, 0, mask, count)


def gstrings(names, cmd=et.ETHTOOL_GSTRINGS, sset_id=et.ETH_SS_STATS, n=None) -> bytes:
    n = len(names) if n is None else n
    return struct.pack("=III", cmd, sset_id, n) + b"".join(name32(x) for x in names)


def gstats(values, cmd=et.ETHTOOL_GSTATS, n=None) -> bytes:
    n = len(values) if n is None else n
    return struct.pack("=II", cmd, n) + b"".join(struct.pack("=Q", v) for v in values)


# -- pure parsing: packed bytes ----------------------------------------------------------------
@pytest.mark.parametrize("buf,want", [
    (sset(count=57), 57),
    (sset(count=57) + b"\0" * 8, 57),  # trailing slack is ignored
    (sset(mask=0), None),  # the driver has no ETH_SS_STATS set: the kernel clears the bit
    (sset(mask=1 << 0, count=5), None),  # only another set answered
    (sset(cmd=et.ETHTOOL_GSTATS), None),
    (sset(count=0), None),
    (sset(count=(1 << 16) + 1), None),  # absurd counts are not allocated for
    (sset()[:19], None),  # short
    (b"", None),
])
def test_parse_sset_info(buf, want):
    assert et.parse_sset_info(buf) == want


def test_requests_are_what_the_kernel_expects():
    req = et.build_sset_info_request()
    assert struct.unpack_from("=IIQI", req) == (0x37, 0, 2, 0) and len(req) == 20
    req = et.build_gstrings_request(3)
    assert struct.unpack_from("=III", req) == (0x1B, 1, 3)
    assert len(req) == 12 + (3 + et._SLACK) * 32
    req = et.build_gstats_request(3)
    assert struct.unpack_from("=II", req) == (0x1D, 3) and len(req) == 8 + (3 + et._SLACK) * 8


@pytest.mark.parametrize("buf,expected,want", [
    (gstrings(["tx_timeout", "bw_in_allowance_exceeded"]), 2, ["tx_timeout", "bw_in_allowance_exceeded"]),
    (gstrings(["x" * 32]), 1, ["x" * 32]),  # a full 32-byte name has no NUL
    (gstrings(["a\0junk"]), 1, ["a"]),  # the name ends at the first NUL
    (gstrings(["a", "b"]) + b"\0" * 64, 2, ["a", "b"]),  # slack after the answer
    (gstrings(["a", "b"]), 3, None),  # the count changed since GSSET_INFO
    (gstrings(["a", "b"], n=3), 3, None),  # claims 3, holds 2
    (gstrings(["a"], sset_id=0), 1, None),  # ETH_SS_TEST, not ETH_SS_STATS
    (gstrings(["a"], cmd=et.ETHTOOL_GSTATS), 1, None),
    (b"\x1b\0\0", 1, None),
])
def test_parse_gstrings(buf, expected, want):
    assert et.parse_gstrings(buf, expected) == want


@pytest.mark.parametrize("buf,expected,positions,want", [
    (gstats([1, 2, 3]), 3, [0, 2], [1, 3]),
    (gstats([5, 2**64 - 1]), 2, [1], [2**64 - 1]),
    (gstats([1, 2, 3]), 3, [], []),
    (gstats([1, 2, 3]) + b"\xff" * 16, 3, [2], [3]),
    (gstats([1, 2, 3]), 4, [0], None),  # count changed: the cached names no longer fit
    (gstats([1, 2], n=3), 3, [0], None),  # short
    (gstats([1], cmd=et.ETHTOOL_GSTRINGS), 1, [0], None),
    (b"", 0, [], None),
])
def test_parse_gstats(buf, expected, positions, want):
    assert et.parse_gstats(buf, expected, positions) == want


def test_build_ifreq():
    ifr = et.build_ifreq("eth0", 0x1122334455667788)
    assert len(ifr) == 40 and ifr[:16] == b"eth0".ljust(16, b"\0")
    assert struct.unpack_from("P", ifr, 16)[0] == 0x1122334455667788
    assert et.build_ifreq("x" * 15, 1) is not None
    for bad in ("", "x" * 16, "eth\u00e9", "a\0b", "a/b"):
        assert et.build_ifreq(bad, 1) is None, bad


def test_allowance_positions_and_build_stats():
    names = ["tx_timeout", "pps_allowance_exceeded", "conntrack_allowance_available",
             "bw_in_allowance_exceeded", "pps_allowance_exceeded", "queue_0_tx_cnt"]
    pos = et.allowance_positions(names)
    assert pos == (("pps_allowance_exceeded", 1), ("conntrack_allowance_available", 2),
                   ("bw_in_allowance_exceeded", 3))  # first of duplicates
    assert et.build_stats([("pps_allowance_exceeded", 4), ("conntrack_allowance_available", 9),
                           ("tx_timeout", 1)]) == EthtoolStats(
        {"pps_allowance_exceeded": 4}, {"conntrack_allowance_available": 9})
    assert et.build_stats([]) is None and et.build_stats([("tx_timeout", 1)]) is None
    assert et.allowance_positions(["peer_ifindex"]) == ()


@pytest.mark.parametrize("text,want", [
    ("NIC statistics:\n     tx_timeout: 0\n     bw_in_allowance_exceeded: 12\n",
     {"tx_timeout": 0, "bw_in_allowance_exceeded": 12}),
    ("NIC statistics:\n", {}),
    ("", {}),
    ("  a: 1\n  a: 2\n", {"a": 1}),  # first of duplicates
    ("  odd: name: 3\n", {"odd: name": 3}),  # the value is after the last colon
    ("  neg: -1\n  hex: 0x10\n  blank:\n  big: 18446744073709551616\n  max: 18446744073709551615\n",
     {"max": 2**64 - 1}),
    ("  spaced :   7  \r\n", {"spaced": 7}),
    ("  arabic: \u0663\n", {}),  # not ASCII digits
    (":5\n", {}),
])
def test_parse_ethtool_text(text, want):
    assert et.parse_ethtool_text(text) == want


def test_render_then_parse_round_trip():
    stats = {"tx_timeout": 0, "bw_out_allowance_exceeded": 2**64 - 1}
    assert et.parse_ethtool_text(et.render_ethtool_text(stats)) == stats


# -- the reader against a fake kernel ------------------------------------------------------------
class FakeKernel:
    """Answers SIOCETHTOOL like net/ethtool/ioctl.c: writes its CURRENT count of names/values
    through the ifr_data pointer, whatever the caller announced. `fail` maps ifname -> errno."""

    def __init__(self, stats):
        self.stats = stats  # ifname -> list of (name, value)
        self.fail = {}
        self.calls = []

    def ioctl(self, fd, req, ifr):
        assert req == et.SIOCETHTOOL and len(ifr) == 40
        name = ifr[:16].rstrip(b"\0").decode()
        addr = struct.unpack_from("P", ifr, 16)[0]
        cmd = struct.unpack("=I", ctypes.string_at(addr, 4))[0]
        self.calls.append((name, cmd))
        if name in self.fail:
            raise OSError(self.fail[name], os.strerror(self.fail[name]))
        if name not in self.stats:
            raise OSError(errno.ENODEV, "No such device")
        items = self.stats[name]
        if cmd == et.ETHTOOL_GSSET_INFO:
            out = sset(count=len(items))
        elif cmd == et.ETHTOOL_GSTRINGS:
            out = gstrings([n for n, _ in items])
        elif cmd == et.ETHTOOL_GSTATS:
            out = gstats([v for _, v in items])
        else:  # pragma: no cover
            raise OSError(errno.EOPNOTSUPP, "?")
        ctypes.memmove(addr, out, len(out))
        return ifr

    def cmds(self, cmd):
        return [c for c in self.calls if c[1] == cmd]


class FakeSocket:
    closed = 0

    def fileno(self):
        return 99

    def close(self):
        FakeSocket.closed += 1


ENA = [("tx_timeout", 0), ("bw_in_allowance_exceeded", 3), ("bw_out_allowance_exceeded", 5),
       ("pps_allowance_exceeded", 7), ("conntrack_allowance_exceeded", 0),
       ("linklocal_allowance_exceeded", 1), ("conntrack_allowance_available", 40000),
       ("queue_0_tx_cnt", 123)]


def fake_reader(kernel, sysfs_root=None, ifindex=lambda n: None):
    return IoctlReader(sysfs_root, ioctl=kernel.ioctl, make_socket=FakeSocket, ifindex=ifindex)


def test_ioctl_reader_reads_allowances_and_caches_names():
    k = FakeKernel({"eth0": list(ENA)})
    r = fake_reader(k)
    got = r.read("eth0")
    assert got == EthtoolStats({"bw_in_allowance_exceeded": 3, "bw_out_allowance_exceeded": 5,
                                "pps_allowance_exceeded": 7, "conntrack_allowance_exceeded": 0,
                                "linklocal_allowance_exceeded": 1},
                               {"conntrack_allowance_available": 40000})
    assert "conntrack_allowance_available" not in r("eth0")  # a level is never a counter
    k.stats["eth0"][2] = ("bw_out_allowance_exceeded", 6)
    assert r("eth0")["bw_out_allowance_exceeded"] == 6
    # Names once; the count and the values on every read.
    assert len(k.cmds(et.ETHTOOL_GSTRINGS)) == 1
    assert len(k.cmds(et.ETHTOOL_GSSET_INFO)) == len(k.cmds(et.ETHTOOL_GSTATS)) == 3
    assert r.read_all("eth0") == dict(k.stats["eth0"])


def test_ioctl_reader_refetches_names_when_the_count_changes():
    k = FakeKernel({"eth0": list(ENA)})
    r = fake_reader(k)
    assert r("eth0")["pps_allowance_exceeded"] == 7
    # A queue-count change (ethtool -L) adds per-queue stats before the ENI ones.
    k.stats["eth0"] = [("queue_1_tx_cnt", 1), ("queue_1_rx_cnt", 2)] + list(ENA)
    assert r("eth0")["pps_allowance_exceeded"] == 7
    assert len(k.cmds(et.ETHTOOL_GSTRINGS)) == 2


def test_ioctl_reader_count_changing_between_calls_is_absent_once():
    k = FakeKernel({"eth0": list(ENA)})
    r = fake_reader(k)
    r("eth0")
    real = k.ioctl

    def racing(fd, req, ifr):
        out = real(fd, req, ifr)
        if k.calls[-1][1] == et.ETHTOOL_GSSET_INFO:  # the driver grows right after the count
            k.stats["eth0"] = list(ENA) + [("queue_9_rx_cnt", 0)]
        return out

    k.ioctl = racing
    r._ioctl = racing
    assert r.read("eth0") is None  # GSTATS answered 9 values for 8 names: not trusted
    k.ioctl = real
    r._ioctl = real
    assert r("eth0")["bw_out_allowance_exceeded"] == 5  # names re-learned


@pytest.mark.parametrize("setup", ["enodev", "eopnotsupp", "eperm", "no-names", "levels-only",
                                   "empty", "bad-name"])
def test_ioctl_reader_absent_never_zero_never_raises(setup):
    k = FakeKernel({"eth0": list(ENA)})
    ifname = "eth0"
    if setup == "enodev":
        ifname = "eth7"
    elif setup == "eopnotsupp":
        k.fail["eth0"] = errno.EOPNOTSUPP
    elif setup == "eperm":
        k.fail["eth0"] = errno.EPERM
    elif setup == "no-names":  # not ENA, or ENA < 2.2.10
        k.stats["eth0"] = [("peer_ifindex", 4), ("tx_timeout", 0)]
    elif setup == "levels-only":
        k.stats["eth0"] = [("conntrack_allowance_available", 5)]
    elif setup == "empty":
        k.stats["eth0"] = []
    elif setup == "bad-name":
        ifname = "x" * 16
    r = fake_reader(k)
    got = r.read(ifname)
    if setup == "levels-only":
        assert got == EthtoolStats({}, {"conntrack_allowance_available": 5}) and r(ifname) == {}
    else:
        assert got is None and r(ifname) == {}
    if setup == "no-names":
        assert not k.cmds(et.ETHTOOL_GSTATS)  # nothing wanted: no values read


def test_ioctl_reader_swallows_unexpected_errors():
    def broken(fd, req, ifr):
        raise ValueError("driver returned nonsense")

    r = IoctlReader(None, ioctl=broken, make_socket=FakeSocket)
    assert r.read("eth0") is None and r("eth0") == {} and r.read_all("eth0") is None


def test_ioctl_reader_without_a_socket_is_absent():
    def no_socket():
        raise OSError(errno.EMFILE, "Too many open files")

    k = FakeKernel({"eth0": list(ENA)})
    assert IoctlReader(None, ioctl=k.ioctl, make_socket=no_socket).read("eth0") is None
    assert k.calls == []


def test_ioctl_reader_only_reads_the_running_kernels_interfaces(tmp_path):
    """A simulated tree's eth0 is not this machine's: its ifindex must match the kernel's."""
    k = FakeKernel({"eth0": list(ENA), "eth1": list(ENA)})
    (tmp_path / "class" / "net" / "eth0").mkdir(parents=True)
    (tmp_path / "class" / "net" / "eth0" / "ifindex").write_text("2\n")
    (tmp_path / "class" / "net" / "eth1").mkdir(parents=True)  # no ifindex file (simulator)
    idx = {"eth0": 2, "eth1": 3}
    r = fake_reader(k, str(tmp_path), ifindex=idx.get)
    assert r("eth0")["pps_allowance_exceeded"] == 7
    assert r.read("eth1") is None
    assert [c for c in k.calls if c[0] == "eth1"] == []
    idx["eth0"] = 9  # a different kernel interface under the tree's name
    assert fake_reader(k, str(tmp_path), ifindex=idx.get).read("eth0") is None


def test_ioctl_reader_close_reopens_lazily():
    k = FakeKernel({"eth0": list(ENA)})
    r = fake_reader(k)
    before = FakeSocket.closed
    r("eth0")
    r.close()
    r.close()
    assert FakeSocket.closed == before + 1
    assert r("eth0")["bw_in_allowance_exceeded"] == 3


# -- a real ioctl on a veth pair in a test network namespace -------------------------------------
_PROBE = """
import json, sys
sys.path.insert(0, {repo!r})
from efajob.node.ethtool import IoctlReader
r = IoctlReader("/sys")
with open("/sys/class/net/veth1/ifindex") as f:
    peer = int(f.read())
print(json.dumps({{"all": r.read_all("veth0"), "allowances": r.read("veth0"),
                  "counters": r("veth0"), "missing": r.read_all("nosuch0"), "peer": peer}}))
"""


@pytest.fixture
def netns():
    ip = require_binary("ip")
    name = f"efajob-test-{uuid.uuid4().hex[:8]}"
    p = subprocess.run([ip, "netns", "add", name], capture_output=True, text=True, timeout=10)
    require("ip netns", p.returncode == 0, p.stderr.strip() or "not permitted")
    try:
        p = subprocess.run([ip, "-n", name, "link", "add", "veth0", "type", "veth", "peer", "name",
                            "veth1"], capture_output=True, text=True, timeout=10)
        require("veth", p.returncode == 0, p.stderr.strip())
        yield ip, name
    finally:
        subprocess.run([ip, "netns", "del", name], capture_output=True, timeout=10)


def in_netns(ip, ns, argv):
    p = subprocess.run([ip, "netns", "exec", ns] + argv, capture_output=True, text=True,
                       timeout=120, cwd=REPO)
    assert p.returncode == 0, p.stderr
    return p.stdout


@pytest.mark.integration
def test_real_ioctl_on_a_veth_pair(netns):
    ip, ns = netns
    got = json.loads(in_netns(ip, ns, [PY, "-c", _PROBE.format(repo=REPO)]))
    # veth answers GSTRINGS/GSTATS with its own names: peer_ifindex first.
    assert got["all"]["peer_ifindex"] == got["peer"] > 0
    assert len(got["all"]) > 1
    # No ENA names on a veth: absent, not zeros.
    assert got["allowances"] is None and got["counters"] == {} and got["missing"] is None
    ethtool = require_binary("ethtool")
    want = et.parse_ethtool_text(in_netns(ip, ns, [ethtool, "-S", "veth0"]))
    assert got["all"] == want


# -- the file source -----------------------------------------------------------------------------
def test_file_reader(tmp_path):
    (tmp_path / "eth0").write_text("NIC statistics:\n     tx_timeout: 1\n     bw_in_allowance_exceeded: 4\n"
                                   "     conntrack_allowance_available: 77\n")
    (tmp_path / "eth1").write_text("NIC statistics:\n     tx_timeout: 1\n")
    (tmp_path / "eth2").write_text("NIC statistics:\n     conntrack_allowance_available: 5\n")
    (tmp_path / "eth3").write_bytes(b"\xff\xfe garbage")
    r = FileReader(str(tmp_path))
    assert r.read("eth0") == EthtoolStats({"bw_in_allowance_exceeded": 4},
                                          {"conntrack_allowance_available": 77})
    assert r("eth0") == {"bw_in_allowance_exceeded": 4}
    for ifname in ("eth1", "eth3", "eth9", "", ".", "..", "../eth0"):
        assert r.read(ifname) is None and r(ifname) == {}, ifname
    assert r.read("eth2") == EthtoolStats({}, {"conntrack_allowance_available": 5})
    assert FileReader(str(tmp_path / "missing")).read("eth0") is None


# -- config ----------------------------------------------------------------------------------------
def test_config_ethtool_key(tmp_path):
    cfg = build_config({}, env={}, node="n1")
    assert cfg.ethtool == "ioctl"
    r = ethtool_reader_from_config(cfg)
    assert isinstance(r, IoctlReader) and r.sysfs_root == "/sys"
    cfg = build_config({"sysfs_root": "/x/{node}/sys"}, env={"EFAJOB_ETHTOOL": "off"}, node="n1")
    assert cfg.ethtool == "off" and ethtool_reader_from_config(cfg) is None
    cfg = build_config({"ethtool": "/t/{node}/.efajob-sim/ethtool"}, env={}, node="n7")
    assert cfg.ethtool == "/t/n7/.efajob-sim/ethtool"
    r = ethtool_reader_from_config(cfg)
    assert isinstance(r, FileReader) and r.directory == "/t/n7/.efajob-sim/ethtool"
    for bad in ("iotcl", "relative/dir", ""):
        with pytest.raises(ConfigError, match="ethtool"):
            build_config({"ethtool": bad}, env={}, node="n1")
    with pytest.raises(ConfigError, match="ethtool"):
        build_config({"ethtool": 1}, env={}, node="n1")


# -- the Sampler merge ---------------------------------------------------------------------------
@pytest.fixture
def small(tmp_path):
    return build_node(str(tmp_path / "sys"), "p4d.24xlarge", device_limit=2)


def test_sampler_merges_counters_not_levels(small):
    reader = FileReader(os.path.join(small.root, ETHTOOL_DIR))
    with Sampler(small.root, ethtool=reader) as s:
        before = s.sample()
        inj = small.traffic(10, 10, 3, fault="ena-allowance", ena_tx_gbps=2)
        after = s.sample()
    net = after.net["eth0"]
    assert set(ALLOW5) <= set(net) and "conntrack_allowance_available" not in net
    assert "tx_bytes" in net and "queue_0_tx_cnt" not in net and "tx_timeout" not in net
    delta = diff_snapshots(before, after)
    assert delta.net == inj.ena and delta.resets == ()
    assert inj.ena["eth0"]["bw_out_allowance_exceeded"] == 3000
    assert inj.ena["eth0"]["pps_allowance_exceeded"] == 750
    assert inj.ena["eth0"]["bw_in_allowance_exceeded"] == 0
    # Round trip through the run dir's JSON (the prolog's start snapshot).
    assert Snapshot.from_dict(json.loads(json.dumps(after.to_dict()))).net == after.net


def test_sampler_without_reader_and_with_a_broken_one(small):
    plain = read_snapshot(small.root)
    assert not set(ALLOW5) & set(plain.net["eth0"])

    def broken(ifname):
        raise RuntimeError("bug")

    calls = []

    def counting(ifname):
        calls.append(ifname)
        return {}

    snap = read_snapshot(small.root, ethtool=broken)
    assert snap.net == plain.net and len(snap.devices) == 2
    assert read_snapshot(small.root, ethtool=counting).net == plain.net and calls == ["eth0"]
    calls.clear()
    read_snapshot(small.root, include_net=False, ethtool=counting)
    assert calls == []  # no netdevs sampled: the reader is never asked


def test_sampler_closes_its_reader(small):
    class Reader:
        closed = False

        def __call__(self, ifname):
            return {"bw_in_allowance_exceeded": 1}

        def close(self):
            Reader.closed = True

    snap = read_snapshot(small.root, ethtool=Reader())
    assert snap.net["eth0"]["bw_in_allowance_exceeded"] == 1 and Reader.closed


def test_allowance_counter_reset_is_flagged_not_negative(small):
    reader = FileReader(os.path.join(small.root, ETHTOOL_DIR))
    before = read_snapshot(small.root, ethtool=reader)
    path = ethtool_path(small.root, "eth0")
    stats = et.parse_ethtool_text(open(path).read())
    stats["pps_allowance_exceeded"] = 0  # ENA driver reload: ENI stats restart
    with open(path, "w") as f:
        f.write(et.render_ethtool_text(stats))
    after = read_snapshot(small.root, ethtool=reader)
    delta = diff_snapshots(before, after)
    assert before.net["eth0"]["pps_allowance_exceeded"] > 0
    assert delta.net["eth0"]["pps_allowance_exceeded"] == 0
    assert "net:eth0/pps_allowance_exceeded" in delta.resets


# -- end to end: hooks, record, report; daemon, CloudWatch datums ----------------------------------
@pytest.fixture
def site(tmp_path):
    conf = tmp_path / "efajob.toml"
    conf.write_text(
        'cluster = "c1"\n'
        f'sysfs_root = "{tmp_path}/{{node}}/sys"\n'
        f'run_dir = "{tmp_path}/{{node}}/run"\n'
        f'state_dir = "{tmp_path}/{{node}}/state"\n'
        f'store = "{tmp_path}/store"\n'
        f'ethtool = "{tmp_path}/{{node}}/sys/{ETHTOOL_DIR}"\n'
        'instance_type = "p4d.24xlarge"\n')
    return tmp_path, str(conf)


def run_hook(kind, conf, job_id, node="n1"):
    env = {"EFAJOB_CONFIG": conf, "SLURMD_NODENAME": node, "SLURM_JOB_ID": job_id,
           "SLURM_JOB_USER": "alice", "SLURM_JOB_UID": "1000", "SLURM_NODELIST": "n1",
           "SLURM_JOB_NUM_NODES": "1", "SLURM_JOB_RESTART_COUNT": "0",
           "SLURM_SCRIPT_CONTEXT": f"{kind}_slurmd", **HOOK_WAIT_ENV}
    if kind == "epilog":
        env.update(SLURM_JOB_EXIT_CODE="0", SLURM_JOB_EXIT_CODE2="0:0", SLURM_JOB_DERIVED_EC="0")
    p = subprocess.run([PY, "-m", "efajob.hooks.entry", kind], env=env, capture_output=True, text=True,
                       timeout=120, cwd="/")
    assert (p.returncode, p.stderr) == (0, ""), p.stderr


def stored(root, job_id, timeout=120.0):
    import time

    path = os.path.join(str(root), "store", "c1", "jobs", job_id, "n1.json")
    deadline = time.monotonic() + timeout
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.05)
    with open(path) as f:
        return json.load(f)


@pytest.mark.integration
def test_hooks_record_allowance_deltas_and_the_report_flags_them(site):
    from efajob.report.build import build_report

    root, conf = site
    node = build_node(str(root / "n1" / "sys"), "p4d.24xlarge")
    run_hook("prolog", conf, "7")
    inj = node.traffic(40, 40, 20, fault="ena-allowance", ena_tx_gbps=5, ena_rx_gbps=1)
    run_hook("epilog", conf, "7")
    rec = stored(root, "7")
    assert rec["ena"] == inj.ena  # sysfs statistics and allowance counters, exact
    assert rec["ena"]["eth0"]["bw_out_allowance_exceeded"] == 20_000
    assert rec["ena"]["eth0"]["pps_allowance_exceeded"] == 5_000
    assert "conntrack_allowance_available" not in rec["ena"]["eth0"]
    rep = build_report([rec], job_id="7", cluster="c1", now=rec.get("end_wall"))
    hits = [f for f in rep.findings if f.code == "ena_allowance_exceeded"]
    assert [(f.severity, f.host) for f in hits] == [("warning", "n1")]
    assert "bw_out_allowance_exceeded 20" in hits[0].message

    # A job without the fault: the counters are there, zero, and nothing is flagged.
    run_hook("prolog", conf, "8")
    node.traffic(40, 40, 20, ena_tx_gbps=5)
    run_hook("epilog", conf, "8")
    rec = stored(root, "8")
    assert {k: rec["ena"]["eth0"][k] for k in ALLOW5} == dict.fromkeys(ALLOW5, 0)
    rep = build_report([rec], job_id="8", cluster="c1", now=rec.get("end_wall"))
    assert "ena_allowance_exceeded" not in [f.code for f in rep.findings]


def test_daemon_ticks_carry_allowance_deltas_to_cloudwatch_datums(site):
    from efajob.config import load_config
    from efajob.sinks.cloudwatch.metrics import Identity, PeriodAggregator
    from efajob.daemon.loop import Daemon

    root, conf = site
    node = build_node(str(root / "n1" / "sys"), "p4d.24xlarge", device_limit=2)
    proc = root / "proc" / "sys" / "kernel" / "random"
    proc.mkdir(parents=True)
    (proc / "boot_id").write_text("11111111-2222-3333-4444-555555555555\n")
    cfg = load_config(conf, env={}, node="n1")
    t = [5000.0]
    d = Daemon(cfg, clock=lambda: t[0], wall_clock=lambda: t[0] + 1.7e9,
               proc_root=str(root / "proc"), sinks=[], worker=False)
    d.start()
    try:
        d.tick()
        node.traffic(10, 10, 2, fault="ena-allowance")
        t[0] += 2.0
        tick = d.tick()
    finally:
        d.close()
    assert tick.delta.net["eth0"]["bw_out_allowance_exceeded"] == 2000
    agg = PeriodAggregator(Identity("c1", "i-0123456789abcdef0", "p4d.24xlarge"))
    agg.add(tick)
    sums = {d["MetricName"]: d["StatisticValues"]["Sum"] for d in agg.close()
            if len(d["Dimensions"]) == 2}
    assert sums["bw_out_allowance_exceeded"] == 2000 and sums["pps_allowance_exceeded"] == 500
    assert sums["bw_in_allowance_exceeded"] == 0
    assert "conntrack_allowance_available" not in sums

