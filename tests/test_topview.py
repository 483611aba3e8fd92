"""`efajob top`'s view (node/topview.py), pure: rows, sorting, the busiest devices when not all
fit, the full screen at 80x24 and 200x50 and the line mode, golden at 80 and 200 columns.

Snapshots are read from a simulated p5 with injected clocks: the interval is exactly 1 s and
the rates are the simulator's exact totals over it.
"""
from __future__ import annotations

import pytest

from jobsim import check_golden

from efajob.node.counters import diff_snapshots
from efajob.node.instances import lookup
from efajob.node.sysfs import discover_devices, read_snapshot
from efajob.node.topview import build_top_rows, render_screen, render_top, sort_rows
from efajob.sim import build_node

P5 = lookup("p5.48xlarge")


@pytest.fixture(scope="module")
def view(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("top") / "n1")
    node = build_node(root, "p5.48xlarge")
    before = read_snapshot(root, clock=lambda: 100.0, wall_clock=lambda: 1714557600.0)
    # Four busy devices, the last one in name order the busiest, and drops on one.
    node.traffic(40, 20, 1.0, devices=[31])
    node.traffic(30, 30, 1.0, devices=[0])
    node.traffic(20, 10, 1.0, devices=[5, 6])
    node.traffic(0, 1, 1.0, devices=[2], fault="drops")
    after = read_snapshot(root, clock=lambda: 101.0, wall_clock=lambda: 1714557601.0)
    return diff_snapshots(before, after), discover_devices(root)


def test_rows_are_the_injected_rates(view):
    delta, devices = view
    rows, total = build_top_rows(delta, devices, P5)
    assert len(rows) == 32 and delta.seconds == 1.0
    by = {r.name: r for r in rows}
    last = rows[-1].name  # natural order: rdmap201s0 after rdmap79s0
    assert by[last].tx_gbps == pytest.approx(40.0) and by[last].util == pytest.approx(40.0)
    assert total.tx_gbps == pytest.approx(40 + 30 + 20) and total.rx_gbps == pytest.approx(20 + 30 + 10 + 1)


def test_sort_orders(view):
    delta, devices = view
    rows, _ = build_top_rows(delta, devices, P5)
    names = [r.name for r in rows]
    assert [r.name for r in sort_rows(rows, "name")] == names
    assert [r.name for r in sort_rows(rows, "tx")][:2] == [names[31], names[0]]
    assert [r.name for r in sort_rows(rows, "rx")][0] == names[0]
    assert [r.name for r in sort_rows(rows, "drops")][0] == names[2]


@pytest.mark.parametrize("height,width", [(24, 80), (50, 200)])
def test_screen_fits_and_shows_the_busiest(view, height, width, update_golden):
    delta, devices = view
    lines, header = render_screen(delta, devices, P5, sort="name", height=height, width=width,
                                  interval=1.0, node="n1")
    assert len(lines) == height and all(len(ln) <= width for ln in lines)
    assert lines[0].startswith("efajob top on n1: p5.48xlarge") and "sort name" in lines[0]
    assert lines[1].startswith("32 EFA devices  tx 90.0 Gbps  rx 61.0 Gbps")
    assert lines[header].startswith("DEVICE")
    body = [ln.split()[0] for ln in lines[header + 1:-1] if ln]
    if height == 24:  # 20 rows for 32 devices: the 5 busy ones are among them
        assert len(body) == 20 and "20 of 32 devices (the busiest)" in lines[-1]
        assert {"rdmap79s0", "rdmap81s0", "rdmap97s0", "rdmap98s0", "rdmap201s0"} <= set(body)
    else:
        assert len(body) == 32 and "of 32" not in lines[-1]
    assert lines[header].split() == ["DEVICE", "TX_GBPS", "RX_GBPS", "TX_PPS", "RX_PPS", "UTIL",
                                     "DROPS", "RETRANS"]
    narrow = render_screen(delta, devices, P5, sort="name", height=height, width=60,
                           interval=1.0)[0]
    assert "TX_PPS" not in narrow[header] and "UTIL" in narrow[header]  # packet rates go first
    assert lines[-1].endswith(("x retrans", "n t r u d x"))
    check_golden(f"top-{width}x{height}.txt", "\n".join(lines) + "\n", update_golden)
    tx = render_screen(delta, devices, P5, sort="tx", height=height, width=width, interval=1.0)[0]
    assert tx[header + 1].split()[0] == "rdmap201s0"


def test_the_footer_names_the_keys_top_reads():
    from efajob.cli.top import SORT_KEYS
    from efajob.node.topview import HELP, SHORT_HELP, SORTS

    assert tuple(SORT_KEYS.values()) == SORTS
    assert HELP.endswith("  ".join(f"{k} {v}" for k, v in SORT_KEYS.items()))
    assert SHORT_HELP.endswith(" ".join(SORT_KEYS))


def test_waiting_screen_before_the_first_interval():
    lines, header = render_screen(None, [], P5, sort="name", height=24, width=80, interval=2.0)
    assert header == -1 and "first rates in 2 s" in lines[1] and lines[-1].startswith("q quit")


@pytest.mark.parametrize("width", [80, 200])
def test_line_mode_golden(view, width, update_golden):
    delta, devices = view
    out = render_top(delta, devices, P5, width=width)
    assert all(len(ln) <= width for ln in out.splitlines())
    assert out.count("\n") == 1 + 1 + 32 + 1 and out.splitlines()[-1].startswith("TOTAL")
    check_golden(f"top-lines-{width}.txt", out, update_golden)
