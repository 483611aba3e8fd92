"""Finding rules, table-driven over records built from simulator scenarios (tests/jobsim.py):
each scenario lists exactly the (code, severity, host, device) findings it must produce."""
from __future__ import annotations

import pytest

from efajob.config import DEFAULT_THRESHOLDS
from efajob.report.findings import RULES, Finding, verdict
from efajob.report.build import build_report

from jobsim import T0, NodePool, NodeSpec, healthy, job_records

CODES = ("efa_unused", "straggler_node", "device_idle", "rx_drops", "retransmits",
         "impaired_connections", "unresponsive_remote", "ena_allowance_exceeded", "shared_node",
         "counter_reset", "incomplete", "short_job")


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    return NodePool(str(tmp_path_factory.mktemp("sim")))


def with_node(n: int = 4, **changes) -> dict:
    specs = healthy(n)
    specs.update({h: NodeSpec(**kw) for h, kw in changes.items()})
    return specs


def _extra(**fields):
    return NodeSpec(extra=fields)


SCENARIOS = [
    # (id, specs, job kwargs, threshold overrides, expected findings, verdict)
    ("healthy", healthy(4), {}, {}, set(), "Healthy"),
    ("straggler-dead-device",
     with_node(n3=dict(tx_gbps=100, rx_gbps=100, fault="dead-device")), {}, {},
     {("device_idle", "critical", "n3", "rdmap79s0"), ("straggler_node", "warning", "n3", None)},
     "Failure"),
    ("dead-device-full-rate", with_node(n2=dict(fault="dead-device")), {}, {},
     {("device_idle", "critical", "n2", "rdmap79s0")}, "Failure"),
    ("one-device-unused", with_node(n2=dict(devices=[1, 2, 3, 4, 5, 6, 7])), {}, {},
     {("device_idle", "critical", "n2", "rdmap79s0")}, "Failure"),
    ("half-the-devices-used", healthy(2, devices=[0, 1, 2, 3]), {}, {}, set(), "Healthy"),
    ("drops", with_node(n4=dict(fault="drops")), {}, {}, {("rx_drops", "warning", "n4", None)},
     "Warning"),
    ("drops-critical", with_node(n4=dict(fault="drops")), {}, {"rx_drops_critical_ratio": 1e-4},
     {("rx_drops", "critical", "n4", None)}, "Failure"),
    ("drops-below-threshold", with_node(n4=dict(fault="drops")), {}, {"rx_drops": 1e9}, set(),
     "Healthy"),
    ("retrans", with_node(n1=dict(fault="retrans")), {}, {},
     {("retransmits", "critical", "n1", None)}, "Failure"),
    ("retrans-warning", with_node(n1=dict(fault="retrans")), {}, {"retrans_ratio_critical": 0.5},
     {("retransmits", "warning", "n1", None)}, "Warning"),
    ("impaired", with_node(n2=dict(fault="impaired")), {}, {},
     {("impaired_connections", "warning", "n2", None), ("unresponsive_remote", "warning", "n2", None)},
     "Warning"),
    # After a reset the delta is the counter's value since the reset, events included: the
    # simulator restarts counters from small non-zero values, so silence the event rules here.
    ("reset", with_node(n1=dict(fault="reset")), {},
     {"rx_drops": 1e9, "impaired_events": 1e9, "unresponsive_events": 1e9},
     {("counter_reset", "warning", "n1", None)}, "Warning"),
    ("vanish", with_node(2, n2=dict(fault="vanish")), {}, {},
     {("device_idle", "critical", "n2", "rdmap99s0"), ("incomplete", "warning", "n2", None)},
     "Failure"),
    ("ena-fallback", healthy(4, tx_gbps=0.001, rx_gbps=0.001, ena_tx_gbps=8, ena_rx_gbps=8), {}, {},
     {("efa_unused", "critical", None, None)}, "Failure"),
    ("no-traffic-at-all", healthy(2, tx_gbps=0.001, rx_gbps=0.001), {}, {},
     {("efa_unused", "warning", None, None)}, "Warning"),
    ("single-node-no-efa", healthy(1, tx_gbps=0.001, rx_gbps=0.001, ena_tx_gbps=8), {}, {}, set(),
     "Healthy"),
    ("shared", with_node(n1=dict(shared=["77", "78"])), {}, {},
     {("shared_node", "info", "n1", None)}, "Healthy"),
    ("no-prolog", with_node(2, n2=dict(prolog=False)), {}, {},
     {("incomplete", "warning", "n2", None)}, "Warning"),
    ("short", healthy(2), {"seconds": 10}, {}, {("short_job", "info", None, None)}, "Healthy"),
    ("short-threshold", healthy(2), {"seconds": 10}, {"short_job_seconds": 5}, set(), "Healthy"),
    ("ena-allowance", with_node(2, n1=dict(extra={"ena": {"eth0": {
        "tx_bytes": 1, "bw_out_allowance_exceeded": 27219, "pps_allowance_exceeded": 0}}})), {}, {},
     {("ena_allowance_exceeded", "warning", "n1", None)}, "Warning"),
    ("p4d-no-srd-counters", healthy(2, fault="retrans"), {"instance_type": "p4d.24xlarge",
                                                         "kernel": "5.15", "device_limit": None},
     {}, set(), "Healthy"),
    ("garbage-counter", with_node(2, n1=dict(fault="garbage")), {}, {}, set(), "Healthy"),
]


@pytest.mark.parametrize("name,specs,job_kw,th,want,want_verdict", SCENARIOS,
                         ids=[s[0] for s in SCENARIOS])
def test_scenario(pool, name, specs, job_kw, th, want, want_verdict):
    records = job_records(pool, specs, job_id="10", **job_kw)
    r = build_report(records, job_id="10", cluster="test", now=T0 + 3600,
                     thresholds=dict(DEFAULT_THRESHOLDS, **th))
    got = {(f.code, f.severity, f.host, f.device) for f in r.findings}
    assert got == want, [f.message for f in r.findings]
    assert r.verdict == want_verdict
    for f in r.findings:
        assert f.message.endswith(".") and f.code in CODES


def test_efa_unused_advice_names_the_checks(pool):
    records = job_records(pool, healthy(2, tx_gbps=0.001, rx_gbps=0.001, ena_tx_gbps=8,
                                        ena_rx_gbps=8), job_id="11")
    f = build_report(records, job_id="11", cluster="test", now=T0).findings[0]
    assert "fell back to sockets" in f.message
    for check in ("FI_PROVIDER=efa", "aws-ofi-nccl", "NCCL_DEBUG=INFO", "Selected Provider is efa"):
        assert check in f.advice


def test_missing_nodes_and_skipped_files(pool):
    records = job_records(pool, healthy(3), job_id="12")
    for rec in records:
        rec["nodelist"] = "n[1-5]"
    r = build_report(records, job_id="12", cluster="test", now=T0,
                     skipped=[("/store/test/jobs/12/n5.json", "not valid JSON")])
    msgs = [f.message for f in r.findings if f.code == "incomplete"]
    assert any("No record from 2 of 5 nodes (n4, n5)" in m for m in msgs)
    assert any("Skipped record file /store/test/jobs/12/n5.json: not valid JSON." == m for m in msgs)
    assert r.verdict == "Warning"


def test_every_code_has_a_rule():
    assert tuple(RULES) == CODES


@pytest.mark.parametrize("severities,want", [
    ((), "Healthy"), (("info",), "Healthy"), (("info", "warning"), "Warning"),
    (("warning", "critical", "info"), "Failure"),
])
def test_verdict(severities, want):
    assert verdict([Finding("x", s, "m.") for s in severities]) == want


def test_finding_json_omits_absent_host_and_device():
    assert Finding("short_job", "info", "m.").to_dict() == {"code": "short_job", "severity": "info",
                                                              "message": "m."}
    d = Finding("device_idle", "critical", "m.", "a.", host="n1", device="rdmap79s0").to_dict()
    assert list(d) == ["code", "severity", "host", "device", "message", "advice"]


def test_findings_order_critical_first(pool):
    specs = with_node(n1=dict(shared=["5"]), n2=dict(fault="drops"), n3=dict(fault="dead-device"))
    r = build_report(job_records(pool, specs, job_id="13"), job_id="13", cluster="test", now=T0)
    assert [f.severity for f in r.findings] == ["critical", "warning", "info"]


def test_slow_device_is_a_warning(pool):
    records = job_records(pool, healthy(2), job_id="14")
    dev = records[1]["devices"][3]
    for k in ("tx_bytes", "rx_bytes"):
        dev["counters"][k] //= 20  # 5 % of its siblings
    r = build_report(records, job_id="14", cluster="test", now=T0)
    assert [(f.code, f.severity, f.host, f.device) for f in r.findings] == [
        ("device_idle", "warning", "n2", dev["name"])]
    assert "far less than its share" in r.findings[0].message


def test_a_device_that_appeared_mid_job_is_flagged_not_healthy():
    """Issue 13, case 7: its traffic was left out of a `complete` record and the job read
    Healthy. Built through the hooks' record builder from real simulated snapshots."""
    from efajob.hooks.records import JobIdentity, build_record
    from efajob.report.build import build_report
    from efajob.node.readings import Snapshot, DeviceReading

    def snap(t, devs):
        return Snapshot(wall=1000.0 + t, mono=t, devices={
            n: DeviceReading(name=n, port=1, port_counters=c, device_counters={})
            for n, c in devs.items()})

    ident = JobIdentity(cluster="c1", job_id="9", restart=0, host="n1")
    rec = build_record(ident, snap(0, {"d0": {"tx_bytes": 1}}),
                       snap(60, {"d0": {"tx_bytes": 5 * 10 ** 11}, "d1": {"tx_bytes": 7}}),
                       prolog_seen=True)
    assert rec["complete"] is False and "device_appeared" in rec["incomplete_reasons"]
    r = build_report([rec], job_id="9", cluster="c1", now=2000.0)
    assert r.verdict != "Healthy"
    (f,) = [f for f in r.findings if f.code == "device_idle"]
    assert (f.host, f.device, f.severity) == ("n1", "d1", "warning") and "appeared" in f.message
