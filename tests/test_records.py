"""Building job-node records, table-driven: pure inputs (snapshots, daemon rows) -> dict."""
from __future__ import annotations

import json

import pytest

from efajob.node.localstore import Rollup, SampleRow
from efajob.node.minutes import from_rollups
from efajob.hooks.records import (MAX_SERIES_POINTS, JobIdentity, build_record, build_series,
                                  build_series_mixed, check_record, format_exit_code, link_rates)
from efajob.node.readings import DeviceReading, Snapshot

GB = 10 ** 9


def snap(mono, devices, net=None, wall0=1_700_000_000.0):
    """devices: {name: {counter: value}} (port counters; device counters under 'dev:')."""
    devs = {}
    for name, c in devices.items():
        port = {k: v for k, v in c.items() if not k.startswith("dev:")}
        dev = {k[4:]: v for k, v in c.items() if k.startswith("dev:")}
        devs[name] = DeviceReading(name, 1, port, dev)
    return Snapshot(mono=mono, wall=wall0 + mono, devices=devs, net=net or {})


def row(mono, tx, rx=0, seconds=1.0, jobs=("42",), dev=None, boot="b"):
    dev = dev if dev is not None else {"d0": (tx, rx)}
    return SampleRow(boot_id=boot, mono=mono, wall=1_700_000_000.0 + mono, seconds=seconds,
                     deltas={"tx_bytes": tx, "rx_bytes": rx},
                     device_tx_bytes={d: v[0] for d, v in dev.items()},
                     device_rx_bytes={d: v[1] for d, v in dev.items()}, jobs=tuple(jobs), resets=())


ID = JobIdentity(cluster="c1", job_id="42", restart=0, host="n1", user="alice", uid=1000,
                 partition="gpu", nodelist="n[1-2]", num_nodes=2, exit_code="0:0")
START = snap(100.0, {"d0": {"tx_bytes": 1000, "rx_bytes": 500, "rx_drops": 3, "dev:cmds_err": 1},
                     "d1": {"tx_bytes": 7, "rx_bytes": 0}}, net={"eth0": {"tx_bytes": 10}})
END = snap(110.0, {"d0": {"tx_bytes": 1000 + 10 * GB, "rx_bytes": 500 + 5 * GB, "rx_drops": 3,
                          "dev:cmds_err": 2},
                   "d1": {"tx_bytes": 7 + 2 * GB, "rx_bytes": 4}}, net={"eth0": {"tx_bytes": 30}})


def test_basic_record_exact_totals_without_daemon():
    r = build_record(ID, START, END, instance_type="p5.48xlarge")
    assert r["schema"] == "efajob/job-node-record" and r["version"] == 1
    assert r["totals"] == {"tx_bytes": 12 * GB, "rx_bytes": 5 * GB + 4, "rx_drops": 0}
    d0 = r["devices"][0]
    assert d0["name"] == "d0" and d0["counters"]["tx_bytes"] == 10 * GB
    assert d0["device_counters"] == {"cmds_err": 1} and d0["link_gbps"] == 100.0
    assert r["link_gbps"] == 3200.0
    assert r["ena"] == {"eth0": {"tx_bytes": 20}}
    assert r["elapsed_s"] == 10.0 and r["start"] == START.wall and r["end"] == END.wall
    assert r["rates"]["avg_tx_gbps"] == pytest.approx(12 * 8 / 10)
    # No daemon: the best peak is the average, and the record says where it came from.
    assert r["rates"]["peak_tx_gbps"] == r["rates"]["avg_tx_gbps"]
    assert r["rates"]["peak_source"] == "snapshots" and r["daemon_samples"] == 0
    assert r["complete"] is True and r["incomplete_reasons"] == []
    assert r["prolog_seen"] and r["epilog_seen"] and r["source"] == "epilog"
    assert r["series"] == {"interval_s": None, "t": [], "tx_gbps": [], "rx_gbps": []}
    assert (r["key"], r["host"], r["user"], r["exit_code"]) == ("42", "n1", "alice", "0:0")
    json.dumps(r)  # plain JSON
    check_record(r)


CASES = [
    # (name, start devices, end devices, expected d0 counters, expected resets)
    ("reset", {"d0": {"tx_bytes": 9000, "rx_bytes": 10}}, {"d0": {"tx_bytes": 400, "rx_bytes": 20}},
     {"tx_bytes": 400, "rx_bytes": 10}, ["d0/tx_bytes"]),
    ("absent at end", {"d0": {"tx_bytes": 1, "rx_bytes": 1}}, {"d0": {"tx_bytes": 5}},
     {"tx_bytes": 4}, []),
    ("absent at start", {"d0": {"tx_bytes": 1}}, {"d0": {"tx_bytes": 5, "retrans_pkts": 9}},
     {"tx_bytes": 4}, []),
    ("device counter reset", {"d0": {"tx_bytes": 1, "dev:cmds_err": 5}},
     {"d0": {"tx_bytes": 1, "dev:cmds_err": 2}}, {"tx_bytes": 0}, ["d0/device:cmds_err"]),
]


@pytest.mark.parametrize("name,a,b,counters,resets", CASES, ids=[c[0] for c in CASES])
def test_counter_cases(name, a, b, counters, resets):
    r = build_record(ID, snap(0.0, a), snap(5.0, b))
    assert r["devices"][0]["counters"] == counters
    assert "rx_bytes" not in r["totals"] or "rx_bytes" in counters  # absent is not zero
    assert r["resets"] == resets
    assert all(v >= 0 for d in r["devices"] for v in d["counters"].values())


def test_vanished_and_appeared_devices():
    r = build_record(ID, snap(0, {"d0": {"tx_bytes": 1}, "d1": {"tx_bytes": 1}}),
                     snap(5, {"d0": {"tx_bytes": 3}, "d2": {"tx_bytes": 9}}))
    assert r["vanished_devices"] == ["d1"] and r["appeared_devices"] == ["d2"]
    assert [d["name"] for d in r["devices"]] == ["d0"] and r["totals"] == {"tx_bytes": 2}
    # Both flag the record: once the appeared device's traffic was left out of a "complete"
    # record and the job read Healthy (issue 13, case 7).
    assert r["complete"] is False
    assert r["incomplete_reasons"] == ["device_vanished", "device_appeared"]


def test_daemon_rows_add_peaks_and_series_not_totals():
    rows = [row(99.0, 50 * GB)]  # before the job: left out
    rows += [row(100.0 + i, (1 + i) * GB // 8, GB // 8, dev={"d0": ((1 + i) * GB // 8, 0), "d1": (5 * 10 ** 6, 0)})
             for i in range(1, 10)]
    rows += [row(111.0, 50 * GB)]  # after the job: left out
    r = build_record(ID, START, END, rows, instance_type=None)
    assert r["totals"]["tx_bytes"] == 12 * GB  # from the snapshots, exactly
    assert r["daemon_samples"] == 9
    assert r["rates"]["peak_tx_gbps"] == pytest.approx(10.0) and r["rates"]["peak_source"] == "daemon"
    assert r["devices"][0]["peak_tx_gbps"] == pytest.approx(10.0)
    assert r["devices"][1]["peak_tx_gbps"] == pytest.approx(0.04)
    assert r["series"]["t"] == [float(i) for i in range(1, 10)]
    assert r["series"]["tx_gbps"][0] == pytest.approx(2.0) and r["series"]["interval_s"] == 1.0
    assert r["link_gbps"] is None  # no instance type, no sysfs rates


def test_device_peaks_when_devices_come_and_go():
    rows = [row(101.0, 0, dev={"d0": (10 ** 9, 0), "d1": (2 * 10 ** 9, 0)}),
            row(102.0, 0, dev={"d0": (3 * 10 ** 9, 0), "d2": (10 ** 9, 0)}),
            row(103.0, 0, dev={"d0": (10 ** 9, 0), "d1": (10 ** 9, 0)}, seconds=0.5),
            row(104.0, 0, dev={}, seconds=0.0)]
    r = build_record(ID, START, END, rows)
    peaks = {d["name"]: d["peak_tx_gbps"] for d in r["devices"]}
    assert peaks == {"d0": 24.0, "d1": 16.0}  # d2 is not a device of the snapshots


def test_series_is_bounded_and_keeps_the_volume():
    rows = [row(float(i), (i % 7) * GB, 0) for i in range(1, 3601)]
    s = build_series(rows, 0.0)
    assert len(s["t"]) <= MAX_SERIES_POINTS and len(s["t"]) == len(s["tx_gbps"])
    assert s["interval_s"] == 8.0 and s["t"][-1] == 3600.0
    moved = sum(g * 1e9 / 8 * s["interval_s"] for g in s["tx_gbps"])
    assert moved == pytest.approx(sum(r.deltas["tx_bytes"] for r in rows))
    for n in (1, 499, 500, 501, 86_400):
        assert len(build_series([row(float(i), 1) for i in range(n)], 0.0)["t"]) <= MAX_SERIES_POINTS


def test_series_with_absent_counter():
    rows = [SampleRow("b", 1.0, 1.0, 1.0, {"rx_bytes": 8 * 10 ** 6}, {}, {}, (), ())]
    s = build_series(rows, 0.0)
    assert s["tx_gbps"] == [None] and s["rx_gbps"] == [pytest.approx(0.064)]


def test_overlap_lists_other_jobs_only():
    r = build_record(ID, START, END, shared=["43", "42", "41.1", "43", ""])
    assert r["shared"] == ["41.1", "43"]


NO_PROLOG = [
    # (rows, expected reason, expected tx total, start_source)
    ([row(101.0, 5 * GB), row(102.0, 3 * GB), row(103.0, 2 * GB), row(104.0, 9, jobs=("7",))],
     "no_prolog", 5 * GB, "daemon"),
    ([row(101.0, 5 * GB, jobs=("7",))], "no_prolog_no_samples", None, None),
    ([], "no_prolog_no_samples", None, None),
]


@pytest.mark.parametrize("rows,reason,tx,start_source", NO_PROLOG)
def test_epilog_without_prolog(rows, reason, tx, start_source):
    r = build_record(ID, None, END, rows, prolog_seen=False)
    assert r["complete"] is False and r["incomplete_reasons"] == [reason]
    assert r["totals"].get("tx_bytes") == tx
    assert r["start_source"] == start_source and r["prolog_seen"] is False
    if reason == "no_prolog":
        # Counting starts at the first tagged row: its own delta predates it.
        assert r["start"] == rows[0].wall and r["daemon_samples"] == 3
        assert r["devices"][0]["counters"] == {"tx_bytes": 5 * GB, "rx_bytes": 0}
    else:
        assert r["devices"] == [] and r["rates"]["avg_tx_gbps"] is None


def test_epilog_without_prolog_but_slurm_start_time():
    ident = JobIdentity(cluster="c1", job_id="42", restart=0, host="n1", start_wall=END.wall - 4)
    rows = [row(105.0, GB, jobs=()), row(107.0, 2 * GB, jobs=()), row(109.0, GB, jobs=())]
    r = build_record(ident, None, END, rows, prolog_seen=False)
    assert r["start_source"] == "slurm" and r["totals"]["tx_bytes"] == 3 * GB  # rows after 106
    assert r["elapsed_s"] == 4.0 and r["incomplete_reasons"] == ["no_prolog"]


def test_reconcile_after_reboot_uses_old_boot_rows():
    rows = [row(101.0, GB), row(102.0, 2 * GB)]
    r = build_record(ID, START, None, rows, source="reconcile", epilog_seen=False,
                     reasons=["rebooted"])
    assert r["totals"]["tx_bytes"] == 3 * GB and r["end"] == rows[-1].wall
    assert r["incomplete_reasons"] == ["rebooted", "no_epilog"] and r["source"] == "reconcile"
    assert {d["name"] for d in r["devices"]} == {"d0", "d1"}


def test_reconcile_with_nothing():
    r = build_record(ID, START, None, (), source="reconcile", epilog_seen=False, end_wall=START.wall + 60)
    assert r["totals"] == {} and r["end"] == START.wall + 60 and r["incomplete_reasons"] == ["no_epilog"]


@pytest.mark.parametrize("job_id,restart,key,extra", [
    ("42", 1, "42.1", {}),  # requeued: same job id, its own key and store file
    ("10", 0, "10", {"array_job_id": "7", "array_task_id": "7"}),
    ("9", 2, "9.2", {"het_job_id": "8", "het_job_offset": "1"}),
])
def test_identity_cases(job_id, restart, key, extra):
    ident = JobIdentity(cluster="c1", job_id=job_id, restart=restart, host="n1", **extra)
    r = build_record(ident, START, END)
    assert (r["job_id"], r["restart"], r["key"]) == (job_id, restart, key)
    for k, v in extra.items():
        assert r[k] == v
    check_record(r)


@pytest.mark.parametrize("raw,code2,expected", [
    ("0", "0:0", "0:0"), ("256", None, "1:0"), ("9", None, "0:9"), ("768", "3:0", "3:0"),
    ("15", "garbage", "0:15"), (None, None, None), ("x", None, None), ("", None, None),
])
def test_format_exit_code(raw, code2, expected):
    assert format_exit_code(raw, code2) == expected


@pytest.mark.parametrize("itype,rates,total,per", [
    ("p5en.48xlarge", {"a": 100.0}, 3200.0, {"a": 200.0}),  # the table beats sysfs' stale "100"
    (None, {"a": 100.0, "b": 100.0}, 200.0, {"a": 100.0, "b": 100.0}),
    (None, {"a": 100.0, "b": None}, None, {"a": 100.0, "b": None}),
    ("no-such-type", None, None, {"a": None, "b": None}),
])
def test_link_rates(itype, rates, total, per):
    names = sorted(rates or {"a": 0, "b": 0})
    assert link_rates(itype, names, rates) == (total, {n: per[n] for n in names})


@pytest.mark.parametrize("field,value", [
    ("job_id", "../../etc"), ("job_id", "42/1"), ("host", "../x"), ("cluster", ""),
    ("restart", -1), ("restart", True), ("uid", "0"), ("schema", "other"), ("version", 2),
])
def test_check_record_rejects(field, value):
    r = build_record(ID, START, END)
    r[field] = value
    with pytest.raises(ValueError):
        check_record(r)


def test_bad_source():
    with pytest.raises(ValueError):
        build_record(ID, START, END, source="cron")


def minute(m, tx_sum, rx_sum=0, tx_max=None, samples=60):
    """A minute rollup: rate_max in bytes/s, as localstore keeps it."""
    return Rollup(minute=m, samples=samples, seconds=float(samples), sums={"tx_bytes": tx_sum, "rx_bytes": rx_sum},
                  rate_min={}, rate_max={"tx_bytes": tx_max if tx_max is not None else tx_sum / 60.0,
                                         "rx_bytes": rx_sum / 60.0})


def test_long_window_from_rollups():
    # A 3-hour job: start at wall 1_700_000_010 (mono 100), whole minutes 28333334.. from rollups.
    t0w = 1_700_000_010.0
    start = snap(100.0, {"d0": {"tx_bytes": 0}}, wall0=t0w - 100.0)
    end = snap(100.0 + 3 * 3600, {"d0": {"tx_bytes": 10 ** 12}}, wall0=t0w - 100.0)
    first = int(-(-t0w // 60))
    rollups = [minute(m, 6 * 10 ** 9) for m in range(first, first + 179)]
    rollups[100] = minute(first + 100, 6 * 10 ** 9, tx_max=5 * 10 ** 9)  # a 40 Gb/s second
    head = [row(100.0 + i, 10 ** 8, dev={"d0": (10 ** 8, 0)}) for i in range(1, 51)]
    peak = [row(100.0 + 6050 + i, 10 ** 9, dev={"d0": (10 ** 9 // 2, 0), "d1": (10 ** 9 // 2, 0)})
            for i in range(60)]
    r = build_record(ID, start, end, head, minutes=from_rollups(rollups), peak_rows=peak)
    assert r["totals"] == {"tx_bytes": 10 ** 12}  # still the snapshots
    assert r["daemon_samples"] == 50 + 179 * 60
    assert r["rates"]["peak_tx_gbps"] == pytest.approx(40.0) and r["rates"]["peak_source"] == "daemon"
    assert r["devices"][0]["peak_tx_gbps"] == pytest.approx(4.0)  # from the busiest minute's rows
    s = r["series"]
    assert s["interval_s"] == 60.0 and len(s["t"]) <= MAX_SERIES_POINTS
    assert s["tx_gbps"][5] == pytest.approx(0.8)  # 6e9 B / 60 s
    assert s["tx_gbps"][0] == pytest.approx(0.8)  # the raw head: 1e8 B/s


@pytest.mark.parametrize("hours", [3, 24, 200])
def test_mixed_series_is_bounded(hours):
    rollups = [minute(m, 6 * 10 ** 10) for m in range(0, hours * 60)]
    s = build_series_mixed([], from_rollups(rollups).minutes, 0.0, 0.0, hours * 3600.0)
    assert 0 < len(s["t"]) <= MAX_SERIES_POINTS and s["t"] == sorted(s["t"])
    moved = sum(g * 1e9 / 8 * s["interval_s"] for g in s["tx_gbps"])
    assert moved == pytest.approx(6 * 10 ** 10 * hours * 60)

