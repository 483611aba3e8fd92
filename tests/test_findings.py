"""Finding rules, table-driven over records built from simulator scenarios (tests/jobsim.py):
each scenario lists exactly the (code, severity, host, device) findings it must produce."""
from __future__ import annotations

import pytest

from efajob.config import DEFAULT_THRESHOLDS
from efajob.report.findings import RULES, Finding, verdict
from efajob.report.build import build_report

from jobsim import T0, NodePool, NodeSpec, healthy, job_records

CODES = ("efa_unused", "straggler_node", "device_missing", "device_idle", "wr_errors",
         "device_errors", "rx_drops", "retransmits", "impaired_connections", "unresponsive_remote",
         "ena_allowance_exceeded", "shared_node", "counter_reset", "rate_above_link", "incomplete",
         "short_job")
# The issue's case: one device of one node logged work-request and admin-queue errors.
ISSUE_ERRORS = {"rdma_read_wr_err": 500, "rdma_write_wr_err": 300, "device:cmds_err": 40,
                "device:no_completion_cmds": 12}


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
    # Error counters (no simulator fault moves them yet: written into the tree during the job).
    ("wr-and-admin-errors", with_node(n2=dict(bump={3: ISSUE_ERRORS})), {}, {},
     # The simulated job does RDMA write only: 500 read errors on 0 reads is critical.
     {("wr_errors", "critical", "n2", "rdmap82s0"), ("device_errors", "critical", "n2", "rdmap82s0")},
     "Failure"),
    ("write-errors-small-share", with_node(2, n1=dict(bump={0: {"rdma_write_wr_err": 300}})),
     {}, {}, {("wr_errors", "warning", "n1", "rdmap79s0")}, "Warning"),
    ("wr-errors-critical-share", with_node(2, n1=dict(bump={0: {"rdma_write_wr_err": 10 ** 9}})),
     {}, {}, {("wr_errors", "critical", "n1", "rdmap79s0")}, "Failure"),
    ("wr-errors-below-threshold", with_node(n2=dict(bump={3: {"rdma_read_wr_err": 5}})), {},
     {"wr_errors": 10}, set(), "Healthy"),
    ("verbs-errors", with_node(2, n1=dict(bump={5: {"device:reg_mr_err": 3,
                                                      "device:create_qp_err": 1}})), {}, {},
     {("device_errors", "warning", "n1", "rdmap97s0")}, "Warning"),
    ("admin-errors-only", with_node(2, n2=dict(bump={0: {"device:cmds_err": 4}})), {}, {},
     {("device_errors", "warning", "n2", "rdmap79s0")}, "Warning"),
    # The in-tree driver on kernel < 5.15: one list in both directories (no rdma_write_*, so
    # the traffic goes as RDMA reads and 500 errors are a small share of them: a warning).
    ("errors-on-kernel-5.10", with_node(2, n1=dict(bump={2: {
        "rdma_read_wr_err": 500, "device:cmds_err": 40, "device:no_completion_cmds": 12}})),
     {"kernel": "5.10", "driver": "in-tree"},
     {}, {("wr_errors", "warning", "n1", "rdmap81s0"), ("device_errors", "critical", "n1", "rdmap81s0")},
     "Failure"),
    # The simulator's own faults for the driver's error signals (efajob simulate --fault).
    ("sim-wr-errors", with_node(n2=dict(fault="wr-errors")), {}, {},
     {("wr_errors", "critical", "n2", "rdmap79s0")}, "Failure"),
    ("sim-admin-errors", with_node(n2=dict(fault="admin-errors")), {}, {},
     {("device_errors", "critical", "n2", "rdmap79s0")}, "Failure"),
    ("sim-missing-device", with_node(n2=dict(fault="missing-device")), {}, {},
     {("device_missing", "critical", "n2", None)}, "Failure"),
    ("missing-device", healthy(1), {"device_limit": 31, "expected_devices": 32}, {},
     {("device_missing", "critical", "n1", None)}, "Failure"),
    ("all-devices-present", healthy(1), {"device_limit": 32}, {}, set(), "Healthy"),
    ("catch-up-bursts", with_node(2, n2=dict(burst=10)), {}, {},
     {("rate_above_link", "warning", "n2", None)}, "Warning"),
    ("bursts-within-link", with_node(2, n2=dict(burst=2)), {}, {}, set(), "Healthy"),
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


@pytest.mark.parametrize("name", ["straggler-dead-device", "impaired", "vanish", "ena-fallback"])
def test_rules_named_run_alone_find_what_they_find_among_all(pool, name):
    """evaluate(codes=...) (what a live judgement runs: report/live.py) gives exactly the
    findings of those codes that running every rule gives: each rule's findings carry its code."""
    from efajob.report.findings import evaluate
    from efajob.report.live import LIVE_CODES

    _, specs, job_kw, th, _, _ = next(s for s in SCENARIOS if s[0] == name)
    r = build_report(job_records(pool, specs, job_id="12", **job_kw), job_id="12", cluster="test",
                     now=T0 + 3600, thresholds=dict(DEFAULT_THRESHOLDS, **th))
    thresholds = dict(DEFAULT_THRESHOLDS, **th)
    every = evaluate(r, thresholds)
    for codes in (LIVE_CODES, ("straggler_node",), ("efa_unused", "incomplete"), ()):
        assert evaluate(r, thresholds, codes) == [f for f in every if f.code in codes], codes


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


def test_findings_after_a_reset_name_the_reset_device(pool):
    """Issue 12: post-reset counts raised drop findings with no hint of the reset."""
    records = job_records(pool, with_node(2, n1=dict(fault="reset")), job_id="15")
    r = build_report(records, job_id="15", cluster="test", now=T0)
    (drops,) = [f for f in r.findings if f.code == "rx_drops"]
    (reset,) = [f for f in r.findings if f.code == "counter_reset"]
    assert drops.host == reset.host == "n1"
    assert "Counters of rdmap79s0 were reset during the job" in drops.message


def test_device_errors_after_a_device_counter_reset_say_so(pool):
    records = job_records(pool, with_node(2, n2=dict(bump={0: {"device:cmds_err": 4}})),
                          job_id="16")
    dev = records[1]["devices"][0]
    dev["resets"] = ["device:cmds_err"]
    r = build_report(records, job_id="16", cluster="test", now=T0)
    (f,) = [f for f in r.findings if f.code == "device_errors"]
    assert f"Counters of {dev['name']} were reset" in f.message


def test_the_issue_case_names_every_counter_and_what_it_means(pool):
    records = job_records(pool, with_node(2, n2=dict(bump={3: ISSUE_ERRORS})), job_id="17")
    r = build_report(records, job_id="17", cluster="test", now=T0)
    wr, dev = ([f for f in r.findings if f.code == c][0] for c in ("wr_errors", "device_errors"))
    assert "rdma_read_wr_err 500, rdma_write_wr_err 300" in wr.message
    assert "no_completion_cmds 12, cmds_err 40" in dev.message
    assert "closes the device's admin queue" in dev.advice and "admin timeout" in dev.advice
    assert r.verdict == "Failure" and r.nodes[0].host == "n1"
    assert [n.marks for n in r.nodes if n.host == "n2"] == [["wr_errors", "device_errors"]]


def test_device_error_names_are_open_ended():
    from efajob.node.counters import is_device_error

    assert [n for n in ("cmds_err", "no_completion_cmds", "create_qp_err", "new_thing_err",
                        "rdma_read_wr_err", "submitted_cmds", "keep_alive_rcvd", "lifespan")
            if is_device_error(n)] == ["cmds_err", "no_completion_cmds", "create_qp_err",
                                        "new_thing_err"]


def test_nitro_v3_srd_and_rdma_write_counters_are_not_supported_not_zero(pool):
    """p4d on kernel >= 6.17 has the SRD files, reading 0, and rdma_write_* reading 0."""
    records = job_records(pool, healthy(2), job_id="18", instance_type="p4d.24xlarge",
                          kernel="6.17", device_limit=None)
    for rec in records:  # what the Nitro v3 tree's files hold (0 whatever happens)
        for d in rec["devices"]:
            d["counters"].update(retrans_pkts=0, retrans_bytes=0, rdma_write_bytes=0)
        rec["totals"].update(retrans_pkts=0, retrans_bytes=0, rdma_write_bytes=0)
    r = build_report(records, job_id="18", cluster="test", now=T0)
    for n in r.nodes:
        assert n.retrans_pkts is None and "rdma_write_bytes" not in n.counters
        assert "Nitro v4" in n.unsupported["retrans_pkts"]
        assert "no EFA RDMA write" in n.unsupported["rdma_write_wr_err"]
        assert all("retrans_pkts" not in d.counters for d in n.devices)
    assert "retrans_pkts" not in r.overall.totals and r.overall.rdma_write_share is None
    assert r.verdict == "Healthy"


def test_a_missing_device_keeps_the_instance_capacity_and_says_where_it_came_from(pool):
    records = job_records(pool, healthy(1), job_id="19", device_limit=31, expected_devices=32)
    r = build_report(records, job_id="19", cluster="test", now=T0)
    (f,) = r.findings
    assert "n1 had 31 of the 32 EFA devices p5.48xlarge has" in f.message
    assert r.nodes[0].link_gbps == 3200 and r.overall.link_source == "instance_table"


def test_rates_above_the_link_are_marked_in_the_series(pool):
    records = job_records(pool, with_node(2, n2=dict(burst=10)), job_id="20")
    r = build_report(records, job_id="20", cluster="test", now=T0)
    n2 = next(n for n in r.nodes if n.host == "n2")
    assert n2.above_link == [9, 19, 29, 39, 49, 59] and n2.peak_above_link
    tx = n2.series["tx_gbps"]
    assert all(tx[i] > n2.link_gbps for i in n2.above_link)
    assert not next(n for n in r.nodes if n.host == "n1").above_link
    (f,) = r.findings
    assert "6 of 60 points" in f.message and "3,200" in f.message


def test_docs_list_every_finding_with_its_counter_and_advice():
    """docs/report.md's findings table has a row per registered rule, each naming a source."""
    import os
    import re

    path = os.path.join(os.path.dirname(__file__), "..", "docs", "report.md")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    section = text.split("### Findings", 1)[1].split("\n### ", 1)[0]
    table = section[section.index("| code |"):].split("\n\n", 1)[0]
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `([a-z_]+)` \|.*$", table, re.M)}
    assert set(rows) == set(RULES)
    header = next(line for line in section.splitlines() if line.startswith("| code"))
    assert [c.strip() for c in header.strip("|").split("|")] == [
        "code", "severity", "fires when", "source counters", "advice", "default threshold(s)"]
    for code, row in rows.items():
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert len(cells) == 6 and all(cells[1:5]), code


def test_renderers_question_rates_above_the_link(pool):
    from datetime import timezone

    from efajob.report.render.html import render_html
    from efajob.report.render.json import report_to_dict
    from efajob.report.render.text import render_text

    records = job_records(pool, with_node(2, n2=dict(burst=10)), job_id="21")
    r = build_report(records, job_id="21", cluster="test", now=T0)
    text = render_text(r, tz=timezone.utc, width=None)
    assert "(? above the link: see rate_above_link)" in text
    row = next(line for line in text.splitlines() if line.lstrip().startswith("2  n2")
               or line.lstrip().startswith("1  n2"))
    assert "?" in row and "rate above link" in row
    assert "Link rate     from the instance-type table (p5.48xlarge)" in text
    js = report_to_dict(r)
    n2 = next(n for n in js["nodes"] if n["host"] == "n2")
    assert n2["series"]["above_link"] == [9, 19, 29, 39, 49, 59] and n2["peak_above_link"]
    assert js["overall"]["link_source"] == "instance_table"
    page = render_html(r, tz=timezone.utc)
    assert page.count('class="above-link"') == 6 and "Link rate" in page


def test_renderers_say_not_supported_on_nitro_v3(pool):
    from datetime import timezone

    from efajob.report.render.html import render_html
    from efajob.report.render.json import report_to_dict
    from efajob.report.render.text import render_text

    records = job_records(pool, healthy(2), job_id="22", instance_type="p4d.24xlarge",
                          kernel="6.17", device_limit=None)
    r = build_report(records, job_id="22", cluster="test", now=T0)
    text = render_text(r, tz=timezone.utc, width=None)
    assert "RDMA write not supported" in text
    assert "SRD retransmitted packets     not supported here (SRD counters need Nitro v4" in text
    js = report_to_dict(r)
    assert js["totals"]["retrans_pkts"] is None and js["totals"]["rdma_write_bytes"] is None
    assert "Nitro v3" in js["unsupported_counters"]["retrans_pkts"]
    assert js["nodes"][0]["retrans_pkts"] is None and "rdma_write_wrs" in js["nodes"][0]["unsupported"]
    page = render_html(r, tz=timezone.utc)
    assert "not supported here (SRD counters need Nitro v4" in page


def test_a_device_peak_above_its_link_is_questioned(pool):
    """The demo showed devices at 118 Gbps on 100 Gbps links (a catch-up burst)."""
    from datetime import timezone

    from efajob.report.render.text import render_text

    records = job_records(pool, healthy(2), job_id="23")
    dev = records[0]["devices"][2]
    dev["peak_tx_gbps"] = 118.0
    r = build_report(records, job_id="23", cluster="test", now=T0)
    (f,) = r.findings
    assert (f.code, f.severity, f.host) == ("rate_above_link", "warning", "n1")
    assert f"highest {dev['name']}, 118.0 Gbps against 100.0 Gbps" in f.message
    text = render_text(r, tz=timezone.utc, width=None, verbose=True)
    assert any(dev["name"] in line and "118.0?" in line for line in text.splitlines())
