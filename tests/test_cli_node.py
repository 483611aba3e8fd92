"""`efajob devices`, `snapshot` and `top` through click, against simulated trees."""
from __future__ import annotations

import json

from click.testing import CliRunner

from efajob.cli.main import main
from efajob.sim import build_node


def run(*args):
    r = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return r.exit_code, r.output


def test_devices_text_and_json(tmp_path):
    build_node(str(tmp_path), "p4d.24xlarge", "6.17", mlx5=True)
    code, out = run("devices", "--sysfs-root", str(tmp_path))
    assert code == 0
    assert "4 EFA device(s)" in out and "mlx5_0" not in out
    assert "EFA driver: AWS out-of-tree 2.17.0g (module/efa/version)" in out
    code, out = run("devices", "--sysfs-root", str(tmp_path), "--format", "json")
    d = json.loads(out)
    assert [x["name"] for x in d["devices"]] == ["rdmap16s27", "rdmap32s27", "rdmap144s27",
                                                 "rdmap160s27"]
    assert all(x["vendor"] == "0x1d0f" for x in d["devices"])
    assert d["netdevs"] == ["eth0"] and d["efa_driver_version"] == "2.17.0g"


def test_devices_in_tree_driver_and_old_kernel(tmp_path):
    build_node(str(tmp_path), "p4d.24xlarge", "6.6", driver="in-tree")
    code, out = run("devices", "--sysfs-root", str(tmp_path))
    assert code == 0 and "EFA driver: in-tree (no module/efa/version)" in out
    assert "SRD retransmit/connection counters: absent" in out  # kernel 6.6
    code, out = run("devices", "--sysfs-root", str(tmp_path), "--format", "json")
    assert json.loads(out)["efa_driver_version"] is None


def test_devices_on_a_machine_without_efa(tmp_path):
    code, out = run("devices", "--sysfs-root", str(tmp_path))
    assert code == 0 and "No EFA devices" in out


def test_bad_sysfs_root_exits_3(tmp_path):
    r = CliRunner().invoke(main, ["snapshot", "--sysfs-root", str(tmp_path / "nope")])
    assert r.exit_code == 3 and "error: sysfs root" in r.output


def test_snapshot_json_shape_and_absent_counters(tmp_path):
    node = build_node(str(tmp_path), "p5.48xlarge", "6.17")
    node.traffic(10, 10, 1, fault="garbage")
    code, out = run("snapshot", "--sysfs-root", str(tmp_path), "--format", "json")
    assert code == 0
    d = json.loads(out)
    assert len(d["devices"]) == 32
    dev = d["devices"][0]
    assert set(dev) >= {"name", "port_counters", "device_counters"}
    assert "lifespan" not in dev["port_counters"]
    # The garbage counter is a missing key, never 0.
    names = [set(x["port_counters"]) | set(x["device_counters"]) for x in d["devices"]]
    assert min(len(n) for n in names) < max(len(n) for n in names)
    assert "eth0" in d["net"] and "lo" not in d["net"]


def test_snapshot_text(tmp_path):
    build_node(str(tmp_path), "p4d.24xlarge", "5.10", driver="in-tree")
    code, out = run("snapshot", "--sysfs-root", str(tmp_path), "--no-net")
    assert code == 0 and "rdmap16s27 port 1" in out and "tx_bytes" in out and "eth0" not in out


def test_top_shows_rates(tmp_path, monkeypatch):
    # A fake clock for `top` and its sampler: each of top's sleeps advances it by exactly the
    # interval and injects exactly that much traffic, so the rate shown is the injected one
    # whatever the machine's speed (a wall-clock version of this test failed on busy CI).
    import types

    import efajob.cli.top as cli_top
    import efajob.node.sysfs as sysfs

    node = build_node(str(tmp_path), "p5.48xlarge", "6.17")
    now = [1000.0]
    injected = []

    def sleep(seconds):
        now[0] += seconds
        injected.append(node.traffic(800, 400, seconds))

    fake_time = types.SimpleNamespace(monotonic=lambda: now[0], sleep=sleep)
    monkeypatch.setattr(cli_top, "time", fake_time)
    real_sampler = sysfs.Sampler
    monkeypatch.setattr(sysfs, "Sampler",
                        lambda *a, **k: real_sampler(*a, clock=fake_time.monotonic, **k))
    code, out = run("top", "--sysfs-root", str(tmp_path), "--interval", "0.5", "--count", "2",
                    "--no-clear")
    assert code == 0
    assert out.count("efajob top: 32 EFA device(s)") == 2
    total = [line.split() for line in out.splitlines() if line.startswith("TOTAL")]
    assert len(total) == 2 and len(injected) == 2
    for row, inj in zip(total, injected):
        assert row[1] == f"{inj.totals['tx_bytes'] * 8 / 0.5 / 1e9:,.2f}" == "800.00"
        assert row[2] == f"{inj.totals['rx_bytes'] * 8 / 0.5 / 1e9:,.2f}" == "400.00"


