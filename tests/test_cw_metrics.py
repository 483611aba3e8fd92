"""Ticks -> CloudWatch datums: exact sums, 1 s peaks, aligned periods, bounded cardinality;
and the catalogue the dashboard and the cost estimate read."""
from __future__ import annotations

from typing import Dict, Iterable, Optional, Sequence

import pytest

from efajob.node.counters import diff_snapshots
from efajob.sinks.cloudwatch.metrics import (CLUSTER, DEVICE, JOB, MAX_JOBS, NODE, TYPE, Identity,
                                             PeriodAggregator, catalogue)
from efajob.hooks.runfiles import ActiveJob
from efajob.sinks.base import DaemonHealth, Tick
from efajob.node.readings import DeviceReading, Snapshot

T0 = 60 * 29_833_334 + 40.0  # 40 s into a minute
IDENT = Identity("c1", "i-0123456789abcdef0", "p5.48xlarge")


def snap(mono: float, wall: float, devs: Dict[str, Dict[str, int]],
         net: Optional[Dict[str, Dict[str, int]]] = None) -> Snapshot:
    return Snapshot(mono=mono, wall=wall,
                    devices={n: DeviceReading(n, 1, dict(c), {}) for n, c in devs.items()},
                    net=net or {})


def make_tick(prev: Optional[Snapshot], cur: Snapshot, jobs: Sequence[ActiveJob] = ()) -> Tick:
    delta = diff_snapshots(prev, cur) if prev is not None else None
    return Tick(snapshot=cur, delta=delta, rates={}, jobs=tuple(jobs),
                devices=(), instance_type="p5.48xlarge", cluster="c1", node="n1",
                boot_id="b", health=DaemonHealth(0.0, 0, 0, 0.0, 0.0, {}, True, 0))


def active_job(job_id: str) -> ActiveJob:
    return ActiveJob(key=job_id, job_id=job_id, restart=0, user="u", uid=1, partition="p",
                     account=None, cluster="c1", node="n1", nodelist="n1", num_nodes=1,
                     start_wall=T0, start_mono=0.0, boot_id="b")


class Node:
    """Cumulative counters advanced step by step; yields ticks like the daemon's."""

    def __init__(self, devices: Iterable[str] = ("d0", "d1"), counters=("tx_bytes", "rx_bytes",
                 "tx_pkts", "rx_pkts", "rx_drops", "retrans_pkts"), net=None):
        self.values = {d: {c: 1_000_000 for c in counters} for d in devices}
        self.net = net
        self.mono, self.wall = 100.0, T0
        self.prev = snap(self.mono, self.wall, self.values,
                         {i: dict(s) for i, s in (net or {}).items()})

    def step(self, seconds: float, per_device: Dict[str, int], jobs=(), net_add=None) -> Tick:
        self.mono += seconds
        self.wall += seconds
        for d in self.values:
            for c, v in per_device.items():
                if c in self.values[d]:
                    self.values[d][c] += v
        if net_add:
            for ifname, add in net_add.items():
                for k, v in add.items():
                    self.net[ifname][k] += v
        cur = snap(self.mono, self.wall, self.values,
                   {i: dict(s) for i, s in (self.net or {}).items()})
        t = make_tick(self.prev, cur, jobs)
        self.prev = cur
        return t


def by_key(datums):
    return {(d["MetricName"], tuple((x["Name"], x["Value"]) for x in d["Dimensions"])): d
            for d in datums}


def test_statistic_values_are_exact_sums_and_1s_peaks():
    node = Node()
    agg = PeriodAggregator(IDENT)
    out = []
    # 40 s into the minute: 20 one-second ticks close the first minute, 60 fill the next.
    sent = []
    for i in range(81):
        b = 1000 * (i % 7) + (500_000 if i == 50 else 0)
        sent.append(b)
        out.append(agg.add(node.step(1.0, {"tx_bytes": b, "rx_pkts": 3})))
    emitted = [d for batch in out for d in batch]
    first, second = out[20], out[80]
    assert all(not o for k, o in enumerate(out) if k not in (20, 80))  # one emit per period
    d1 = by_key(first)[("tx_bytes", (("ClusterName", "c1"), ("InstanceId", IDENT.instance_id)))]
    assert d1["Timestamp"] == T0 - 40  # period start, aligned to the minute
    sv = d1["StatisticValues"]
    assert sv["Sum"] == 2 * sum(sent[:20]) and sv["SampleCount"] == 20.0
    d2 = by_key(second)[("tx_bytes", (("ClusterName", "c1"), ("InstanceId", IDENT.instance_id)))]
    sv2 = d2["StatisticValues"]
    assert sv2["Sum"] == 2 * sum(sent[20:80]) and sv2["SampleCount"] == 60.0
    assert sv2["Maximum"] == 2 * (1000 * (50 % 7) + 500_000)  # the 1 s burst survives
    assert sv2["Minimum"] == 0.0
    assert d2["Unit"] == "Bytes/Second" and d2["StorageResolution"] == 60
    rest = agg.close()
    assert by_key(rest)[("tx_bytes", (("ClusterName", "c1"), ("InstanceId", IDENT.instance_id)))][
        "StatisticValues"]["Sum"] == 2 * sent[80]
    assert agg.close() == []
    total = sum(d["StatisticValues"]["Sum"] for d in emitted + rest
                if d["MetricName"] == "tx_bytes" and d["Dimensions"][-1]["Name"] == "InstanceId")
    assert total == 2 * sum(sent)


def test_uneven_ticks_weight_by_time():
    node = Node(devices=("d0",))
    agg = PeriodAggregator(IDENT)
    agg.add(node.step(0.5, {"tx_bytes": 100}))
    agg.add(node.step(2.0, {"tx_bytes": 100}))
    sv = by_key(agg.close())[("tx_bytes", (("ClusterName", "c1"),
                                           ("InstanceId", IDENT.instance_id)))]["StatisticValues"]
    assert sv == {"SampleCount": 2.5, "Sum": 200.0, "Minimum": 50.0, "Maximum": 200.0}


def test_default_sets_and_absent_counters():
    node = Node(counters=("tx_bytes", "rx_bytes", "tx_pkts", "rx_pkts", "rx_drops"))  # no SRD
    agg = PeriodAggregator(IDENT)
    agg.add(node.step(1.0, {"tx_bytes": 1}))
    keys = by_key(agg.close())
    sets = {}
    for name, dims in keys:
        sets.setdefault(tuple(k for k, _ in dims), set()).add(name)
    assert sets[NODE] == {"tx_bytes", "rx_bytes", "tx_pkts", "rx_pkts", "rx_drops"}
    assert sets[CLUSTER] == {"tx_bytes", "rx_bytes", "tx_pkts", "rx_pkts", "rx_drops"}
    assert sets[TYPE] == {"tx_bytes", "rx_bytes"}
    assert set(sets) == {NODE, CLUSTER, TYPE}  # per-device and JobId off by default
    # Absent is not zero: no SRD counter, no SRD metric; a zero that was counted is sent.
    assert not any(n == "retrans_pkts" for n, _ in keys)
    assert keys[("rx_drops", (("ClusterName", "c1"),))]["StatisticValues"]["Sum"] == 0.0


def test_unknown_instance_type_leaves_the_type_set_out():
    node = Node()
    agg = PeriodAggregator(Identity("c1", "host-a"))
    agg.add(node.step(1.0, {"tx_bytes": 1}))
    assert all(TYPE != tuple(x["Name"] for x in d["Dimensions"]) for d in agg.close())


def test_ena_allowance_counters_when_present():
    net = {"eth0": {"rx_bytes": 5, "bw_out_allowance_exceeded": 10, "pps_allowance_exceeded": 0},
           "eth1": {"bw_out_allowance_exceeded": 1}}
    node = Node(net=net)
    agg = PeriodAggregator(IDENT)
    agg.add(node.step(1.0, {"tx_bytes": 1}, net_add={"eth0": {"bw_out_allowance_exceeded": 7},
                                                      "eth1": {"bw_out_allowance_exceeded": 2}}))
    keys = by_key(agg.close())
    node_dims = (("ClusterName", "c1"), ("InstanceId", IDENT.instance_id))
    assert keys[("bw_out_allowance_exceeded", node_dims)]["StatisticValues"]["Sum"] == 9.0
    assert keys[("pps_allowance_exceeded", node_dims)]["Unit"] == "Count/Second"
    assert ("bw_in_allowance_exceeded", node_dims) not in keys  # absent stays absent
    assert ("rx_bytes", node_dims) in keys and keys[("rx_bytes", node_dims)][
        "StatisticValues"]["Sum"] == 0.0  # EFA rx_bytes, not ENA's


def test_per_device_and_job_metrics_when_enabled():
    node = Node(devices=("d0", "d1", "d2"))
    agg = PeriodAggregator(IDENT, per_device=True, job_metrics=True)
    agg.add(node.step(1.0, {"tx_bytes": 10, "rx_drops": 1},
                      jobs=[active_job("7"), active_job("8_1")]))
    keys = by_key(agg.close())
    dev = [k for k in keys if tuple(n for n, _ in k[1]) == DEVICE]
    assert {dict(k[1])["Device"] for k in dev} == {"d0", "d1", "d2"}
    assert {k[0] for k in dev} == {"tx_bytes", "rx_bytes", "rx_drops", "retrans_pkts"}
    jobs = {k: d for k, d in keys.items() if tuple(n for n, _ in k[1]) == JOB}
    assert {dict(k[1])["JobId"] for k in jobs} == {"7", "8_1"}
    assert jobs[("tx_bytes", (("ClusterName", "c1"), ("JobId", "7")))][
        "StatisticValues"]["Sum"] == 30.0


def test_job_cardinality_is_capped_and_counted():
    node = Node(devices=("d0",))
    agg = PeriodAggregator(IDENT, job_metrics=True)
    agg.add(node.step(1.0, {"tx_bytes": 1}, jobs=[active_job(str(i)) for i in range(40)]))
    jobs = {dict(k[1])["JobId"] for k in by_key(agg.close()) if "JobId" in dict(k[1])}
    assert len(jobs) == MAX_JOBS and agg.capped["jobs"] == 40 - MAX_JOBS


def test_first_tick_and_wall_clock_step_back():
    node = Node()
    agg = PeriodAggregator(IDENT)
    assert agg.add(make_tick(None, node.prev)) == []  # no delta yet
    agg.add(node.step(30.0, {"tx_bytes": 1}))  # into the next minute
    node.wall -= 120  # NTP steps the wall clock back two minutes
    assert agg.add(node.step(1.0, {"tx_bytes": 1})) == []  # kept in the open period
    assert len({d["Timestamp"] for d in agg.close()}) == 1


@pytest.mark.parametrize("period, resolution", [(60, 60), (300, 60), (10, 1)])
def test_period_and_storage_resolution(period, resolution):
    node = Node(devices=("d0",))
    agg = PeriodAggregator(IDENT, period=period)
    agg.add(node.step(1.0, {"tx_bytes": 1}))
    d = agg.close()[0]
    assert d["StorageResolution"] == resolution and d["Timestamp"] % period == 0


def test_catalogue_counts():
    default = catalogue()
    node = [s for s in default if s.scope == "node"]
    assert len(node) == 17  # 8 traffic and health, 4 error counters, 5 ENA allowance
    assert len(catalogue(srd=False, ena_allowance=False)) == 5 + 4 + 5 + 2
    assert len(catalogue(srd=False, ena_allowance=False, rdma_write=False)) == 5 + 3 + 5 + 2
    assert {s.scope for s in catalogue(per_device=True, job_metrics=True)} == {
        "node", "cluster", "type", "device", "job"}
    assert len({(s.name, s.dimensions) for s in default}) == len(default)


def _err_snap(mono: float, wall: float, port: Dict[str, int], dev: Dict[str, int]) -> Snapshot:
    return Snapshot(mono=mono, wall=wall, net={},
                    devices={n: DeviceReading(n, 1, dict(port), dict(dev)) for n in ("d0", "d1")})


@pytest.mark.parametrize("itype,published,absent", [
    ("p5.48xlarge", {"rdma_read_wr_err": 10, "rdma_write_wr_err": 6, "cmds_err": 8,
                     "no_completion_cmds": 2, "retrans_pkts": 4}, set()),
    # Nitro v3: the SRD and rdma_write_* files read 0 whatever happens: never published.
    ("p4d.24xlarge", {"rdma_read_wr_err": 10, "cmds_err": 8, "no_completion_cmds": 2},
     {"retrans_pkts", "rdma_write_wr_err", "impaired_remote_conn_events"}),
])
def test_error_counters_are_published_and_unsupported_ones_never(itype, published, absent):
    names = ("tx_bytes", "rdma_read_wr_err", "rdma_write_wr_err", "retrans_pkts",
             "impaired_remote_conn_events")
    a = _err_snap(100.0, T0, {n: 100 for n in names}, {"cmds_err": 1, "no_completion_cmds": 0,
                                                        "submitted_cmds": 10})
    b = _err_snap(101.0, T0 + 1, dict({n: 100 for n in names}, rdma_read_wr_err=105,
                                      rdma_write_wr_err=103, retrans_pkts=102),
                  {"cmds_err": 5, "no_completion_cmds": 1, "submitted_cmds": 20})
    tick = Tick(snapshot=b, delta=diff_snapshots(a, b), rates={}, jobs=(), devices=(),
                instance_type=itype, cluster="c1", node="n1", boot_id="b",
                health=DaemonHealth(0.0, 0, 0, 0.0, 0.0, {}, True, 0))
    agg = PeriodAggregator(Identity("c1", "i-1", itype), period=60)
    agg.add(tick)
    node = {d["MetricName"]: d["StatisticValues"]["Sum"] for d in agg.close()
            if len(d["Dimensions"]) == 2 and d["Dimensions"][1]["Name"] == "InstanceId"}
    for name, total in published.items():
        assert node[name] == total, name
    assert not absent & set(node)
    assert "submitted_cmds" not in node
