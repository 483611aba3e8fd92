"""The report model, its text/JSON/CSV renderers (golden files) and `efajob report`/`efajob jobs`
through click's CliRunner. Records come from simulator scenarios (tests/jobsim.py)."""
from __future__ import annotations

import csv
import io
import json
import os
import time
from datetime import timezone

import pytest

from conftest import cli_runner
from efajob.cli.main import main  # first: efajob.cli registers the cli_* modules
from efajob.report.assemble import check_slurm, job_summary, list_jobs
from efajob.config import DEFAULT_THRESHOLDS, Config
from efajob.store.reader import JobFiles, LiveJob, NodeStatus, RecentCounters
from efajob.report.render.csv import COLUMNS, render_csv
from efajob.report.render.json import SCHEMA_VERSION, render_json, report_to_dict
from efajob.fmt import fmt_bytes, fmt_count, fmt_duration, fmt_gbps, fmt_pct
from efajob.report.render.text import gauge, render_jobs, render_text
from efajob.report.build import build_report
from efajob.slurm.adapter import JobInfo

from jobsim import T0, NodePool, NodeSpec, check_golden, healthy, job_records, write_store

NOW = T0 + 3600  # fixed "now" of every report here
SECONDS = 60
GBPS_BYTES = 400e9 / 8 * SECONDS  # bytes of 400 Gbps for 60 s


@pytest.fixture(autouse=True)
def _tz(_utc):
    time.tzset()  # conftest sets TZ=UTC; the C library reads it on tzset()
    yield
    time.tzset()


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    return NodePool(str(tmp_path_factory.mktemp("sim")))


def mixed_specs():
    specs = healthy(4)
    specs["n2"] = NodeSpec(fault="retrans", shared=["4242"])
    specs["n3"] = NodeSpec(tx_gbps=100, rx_gbps=100, fault="dead-device")
    specs["n4"] = NodeSpec(fault="drops")
    return specs


@pytest.fixture(scope="module")
def mixed(pool):
    return job_records(pool, mixed_specs(), job_id="1234", cluster="prod")


def report_of(records, **kw):
    kw.setdefault("job_id", records[0]["job_id"] if records else "1")
    kw.setdefault("cluster", records[0]["cluster"] if records else "test")
    return build_report(records, now=NOW, **kw)


# -- golden outputs ------------------------------------------------------------------------------
def check_width(text: str, width: int) -> None:
    """Every line of a report rendered for `width` columns fits them."""
    wide = [(len(ln), ln) for ln in text.splitlines() if len(ln) > width]
    assert wide == [], f"lines wider than {width} columns: {wide[:3]}"


@pytest.mark.parametrize("fmt", ["text", "text-v", "text-200", "text-v-200", "text-wide", "json",
                                 "csv"])
def test_golden_mixed(mixed, fmt, update_golden):
    r = report_of(mixed)
    if fmt == "json":
        out, name = render_json(r), "mixed.json"
    elif fmt == "csv":
        out, name = render_csv(r), "mixed.csv"
    else:
        width = 200 if fmt.endswith("-200") else None if fmt == "text-wide" else 80
        out = render_text(r, verbose="-v" in fmt, tz=timezone.utc, width=width)
        name = {"text": "mixed.txt", "text-v": "mixed-v.txt"}.get(fmt, f"mixed-{fmt[5:]}.txt")
        check_width(out, width or 200)
    check_golden(name, out, update_golden)


@pytest.mark.parametrize("width", [80, 200])
def test_golden_ena_fallback(pool, width, update_golden):
    recs = job_records(pool, healthy(2, tx_gbps=0.001, rx_gbps=0.001, ena_tx_gbps=8, ena_rx_gbps=8),
                       job_id="77", user="bob")
    out = render_text(report_of(recs), tz=timezone.utc, width=width)
    check_width(out, width)
    check_golden("ena-fallback.txt" if width == 80 else f"ena-fallback-{width}.txt", out,
                 update_golden)


def test_narrow_tables_drop_columns_and_say_so(mixed):
    r = report_of(mixed)
    narrow, wide = render_text(r, tz=timezone.utc), render_text(r, tz=timezone.utc, width=None)
    head = [ln for ln in narrow.splitlines() if ln.startswith("  #  HOST")][0]
    assert "AVG OUT" not in head and "SENT" in head and "NOTES" in head
    assert "--wide all columns" in narrow and "--wide" not in wide
    assert "AVG OUT" in [ln for ln in wide.splitlines() if ln.startswith("  #  HOST")][0]
    # Long host names cost more columns, never the width.
    long = [dict(rec, host="compute-dy-p5-48xlarge-" + rec["host"]) for rec in mixed]
    check_width(render_text(report_of(long), tz=timezone.utc, verbose=True), 80)


def test_golden_p4d_old_kernel(pool, update_golden):
    # Kernel 5.10's in-tree driver on p4d: no rdma_write_*, no SRD counters: the report says
    # n/a, never 0.
    recs = job_records(pool, healthy(2, tx_gbps=150, rx_gbps=150), job_id="88",
                       instance_type="p4d.24xlarge", kernel="5.10", device_limit=None,
                       driver="in-tree")
    r = report_of(recs)
    text = render_text(r, tz=timezone.utc)
    check_golden("p4d-5.10.txt", text, update_golden)
    assert "retrans_pkts" not in r.overall.totals
    assert report_to_dict(r)["nodes"][0]["retrans_pkts"] is None
    assert "SRD retransmitted packets     not supported here (SRD counters need Nitro v4" in text


def test_golden_running(pool, update_golden):
    recs = job_records(pool, {"n1": NodeSpec()}, job_id="500", seconds=SECONDS)
    recs[0].update(nodelist="n[1-4]", num_nodes=4)  # an early epilog (a failed node, say)
    # n2 and n3's daemons saw a clean last minute; n4 has written no status file yet.
    minute = RecentCounters(seconds=60.0, counters={"tx_bytes": 2_850_000_000_000, "rx_pkts": 10**8,
                                                    "rx_drops": 0},
                            devices={"rdmap0": ({"tx_bytes": 2_850_000_000_000}, {})})
    live = {h: NodeStatus(host=h, wall=NOW - 5, tx_gbps=380.5, rx_gbps=379.0,
                          jobs=(LiveJob(key="500", job_id="500", restart=0, user="alice", start=T0),),
                          instance_type="p5.48xlarge", recent=minute)
            for h in ("n2", "n3")}
    r = report_of(recs, live=live)
    assert r.running and r.meta.state == "RUNNING" and r.meta.end is None
    assert r.verdict == "Running: no problem seen, some nodes not judged yet"
    assert [n.instance_type for n in r.nodes[1:3]] == ["p5.48xlarge"] * 2
    # Before any record, the instance type comes from the daemons' status files.
    assert report_of([], live=live).meta.instance_type == "p5.48xlarge"
    assert [n.status for n in r.nodes] == ["complete", "running", "running", "running"]
    assert r.meta.elapsed_s == NOW - T0
    assert not [f for f in r.findings if f.code in ("efa_unused", "short_job")]
    for width in (80, 200):
        out = render_text(r, tz=timezone.utc, width=width)
        check_width(out, width)
        check_golden("running.txt" if width == 80 else f"running-{width}.txt", out, update_golden)
    # A status file written just before n1's epilog still lists the job there: n1 is done.
    live["n1"] = live["n2"]
    assert report_of(recs, live=live).nodes[0].status == "complete"
    # Once every node has its record the job is over, whatever stale status files say.
    done = job_records(pool, {"n1": NodeSpec(), "n2": NodeSpec()}, job_id="501")
    r = report_of(done, live={"n1": live["n2"], "n2": live["n2"]})
    assert not r.running and r.meta.state == "COMPLETED"


# -- the model -----------------------------------------------------------------------------------
def test_totals_are_sums_over_nodes(mixed):
    r = report_of(mixed)
    # n1, n2, n4 moved 400 Gbps for 60 s each way; n3 100 Gbps.
    assert r.overall.totals["tx_bytes"] == int(3 * GBPS_BYTES + GBPS_BYTES / 4)
    assert r.overall.totals["tx_bytes"] == sum(n.tx_bytes for n in r.nodes)
    assert r.overall.avg_tx_gbps == pytest.approx((3 * 400 + 100) / 4)
    assert r.overall.peak_tx_gbps == pytest.approx(400)
    assert r.overall.link_gbps == 3200
    assert r.overall.util_avg == pytest.approx(325 / 3200)
    # p5 moves bulk data as RDMA write, 2 % as send/recv (the simulator's model).
    assert r.overall.rdma_write_share == pytest.approx(0.98, abs=1e-3)
    assert r.overall.send_share == pytest.approx(0.02, abs=1e-3)
    assert r.overall.rdma_read_share == 0


def test_ranking_and_marks(mixed):
    r = report_of(mixed)
    assert [n.host for n in r.nodes][-1] == "n3"
    n3 = r.nodes[-1]
    assert n3.rank == 4 and "straggler_node" in n3.marks and "device_idle" in n3.marks
    assert r.verdict == "Failure"


def test_json_schema(mixed):
    d = json.loads(render_json(report_of(mixed)))
    assert d["schema_version"] == SCHEMA_VERSION
    for key in ("job_id", "cluster", "state", "start", "end", "nodes", "totals", "findings", "verdict"):
        assert key in d
    node = d["nodes"][0]
    for key in ("host", "devices", "tx_bytes", "rx_bytes", "avg_tx_gbps", "peak_tx_gbps",
                "avg_rx_gbps", "peak_rx_gbps", "rx_drops", "retrans_pkts", "shared", "complete"):
        assert key in node
    assert set(node["devices"][0]) >= {"name", "counters"}
    for f in d["findings"]:
        assert f["severity"] in ("info", "warning", "critical") and f["message"]
        assert set(f) <= {"code", "severity", "host", "device", "message", "advice"}


def test_csv_rows(mixed):
    rows = list(csv.DictReader(io.StringIO(render_csv(report_of(mixed)))))
    assert tuple(rows[0]) == COLUMNS
    assert sum(1 for r in rows if r["level"] == "node") == 4
    assert sum(1 for r in rows if r["level"] == "device") == 4 * 8
    dead = [r for r in rows if r["host"] == "n3" and r["level"] == "device" and r["tx_bytes"] == "0"]
    assert len(dead) == 1 and "device_idle" in dead[0]["findings"]


def test_absent_counters_print_na(pool):
    recs = job_records(pool, healthy(2), job_id="9")
    for rec in recs:  # a writer that could not read rx_drops at all
        rec["totals"].pop("rx_drops")
        for d in rec["devices"]:
            d["counters"].pop("rx_drops")
    r = report_of(recs)
    assert r.nodes[0].rx_drops is None and "rx_drops" not in r.overall.totals
    text = render_text(r, tz=timezone.utc)
    assert "  rx drops                      n/a" in text
    assert json.loads(render_json(r))["nodes"][0]["rx_drops"] is None
    assert next(csv.DictReader(io.StringIO(render_csv(r))))["rx_drops"] == ""


def test_slurm_header_and_hostile_strings(mixed):
    info = JobInfo(job_id="1234", name="<script>alert(1)</script>", user="carol", account="ml",
                   partition="p5", state="COMPLETED", exit_code="0:0", num_nodes=4,
                   nodes=["n1", "n2", "n3", "n4"], nodelist="n[1-4]", start=T0 - 5, end=T0 + 70,
                   cluster="prod", time_limit=60, restarts=0, slurm_job_id="1234")
    r = report_of(mixed, job_info=info)
    assert r.meta.source == "slurm" and r.meta.name == "<script>alert(1)</script>"
    assert r.meta.elapsed_s == 75 and r.meta.time_limit == 60
    text = render_text(r, tz=timezone.utc)
    assert "Metadata  : Slurm" in text and "Name      : <script>alert(1)</script>" in text
    assert "Run time  : 00:01:15  (limit 01:00:00)" in text


class FakeBackend:
    def __init__(self, answer):
        self.answer = answer

    def job(self, job_id):
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def test_cli_with_slurm(store, monkeypatch):
    import efajob.slurm.adapter as slurm
    from efajob.errors import SlurmError

    info = JobInfo(job_id="77", name="train-llm", user="bob", account="ml", partition="p5",
                   state="TIMEOUT", exit_code="0:15", num_nodes=2, nodes=["n1", "n2"],
                   nodelist="n[1-2]", start=T0, end=T0 + 60, cluster="prod", time_limit=1,
                   restarts=0, slurm_job_id="77")
    monkeypatch.setattr(slurm, "get_backend", lambda **kw: FakeBackend(info))
    r = run("report", "77", "--store", store)
    assert r.exit_code == 0, r.output
    assert "Name      : train-llm" in r.output and "State     : TIMEOUT, exit code 0:15" in r.output
    assert "Metadata  : Slurm" in r.output
    monkeypatch.setattr(slurm, "get_backend", lambda **kw: FakeBackend(SlurmError("scontrol hung")))
    r = run("report", "77", "--store", store)
    assert r.exit_code == 0 and "note: Slurm not reachable (scontrol hung)" in r.output
    monkeypatch.setattr(slurm, "get_backend", lambda **kw: FakeBackend(None))
    r = run("report", "77", "--store", store)
    assert r.exit_code == 0 and "Slurm does not know job 77" in r.output
    # An array task id: Slurm maps it to the SLURM_JOB_ID the records are filed under.
    task = JobInfo(job_id="70_2", state="COMPLETED", nodes=["n1", "n2"], slurm_job_id="77")
    monkeypatch.setattr(slurm, "get_backend", lambda **kw: FakeBackend(task))
    r = run("report", "70_2", "--store", store, "--format", "json")
    d = json.loads(r.output)
    assert r.exit_code == 0 and d["job_id"] == "77" and d["alias"] == "70_2"


def test_slurm_says_ended_overrides_late_status_files(pool):
    recs = job_records(pool, {"n1": NodeSpec()}, job_id="502")
    late = NodeStatus(host="n2", wall=NOW - 5, tx_gbps=1.0, rx_gbps=1.0,
                      jobs=(LiveJob(key="502", job_id="502", restart=0),))
    info = JobInfo(job_id="502", state="COMPLETED", nodes=["n1", "n2"], start=T0, end=T0 + 60)
    r = report_of(recs, live={"n2": late}, job_info=info)
    assert not r.running and [n.status for n in r.nodes] == ["complete", "missing"]
    r = report_of(recs, live={"n2": late}, job_info=JobInfo(job_id="502", state="RUNNING",
                                                             nodes=["n1", "n2"], start=T0))
    assert r.running and [n.status for n in r.nodes] == ["complete", "running"]


def test_check_slurm_refuses_other_jobs():
    files = JobFiles(store="/s", cluster="prod", job_id="5", restart=1, paths=(), restarts=(0, 1))
    other = JobInfo(job_id="5", cluster="dev", nodes=["n1"])
    assert check_slurm(other, files, ["n1"])[0] is None
    reused = JobInfo(job_id="5", cluster="prod", nodes=["x1"])
    assert check_slurm(reused, files, ["n1"])[0] is None
    older = JobInfo(job_id="5", cluster="prod", nodes=["n1"], restarts=2)
    info, times, note = check_slurm(older, files, ["n1"])
    assert info is older and times is False and "restart 2" in note
    same = JobInfo(job_id="5", cluster="prod", nodes=["n1"], restarts=1)
    assert check_slurm(same, files, ["n1"]) == (same, True, None)


def test_missing_node_and_restart_note(pool):
    recs = job_records(pool, healthy(3), job_id="60", restart=2)
    for rec in recs:
        rec["nodelist"] = "n[1-4]"
        rec["num_nodes"] = 4
    r = report_of(recs, restart=2, restarts=(0, 2), restart_defaulted=True)
    assert [n.status for n in r.nodes][-1] == "missing" and r.nodes[-1].host == "n4"
    assert any(f.code == "incomplete" and "No record from 1 of 4" in f.message for f in r.findings)
    assert "showing restart 2, the latest" in r.notes[0]
    assert r.meta.nodelist == "n[1-4]"


@pytest.mark.parametrize("fn,value,want", [
    (fmt_bytes, None, "n/a"), (fmt_bytes, 0, "0 B"), (fmt_bytes, 999, "999 B"),
    (fmt_bytes, 1000, "1.00 kB"), (fmt_bytes, 3e12, "3.00 TB"), (fmt_bytes, 123.4e9, "123 GB"),
    (fmt_count, None, "n/a"), (fmt_count, 12345, "12,345"), (fmt_count, 3.41e6, "3.41 M"),
    (fmt_gbps, None, "n/a"), (fmt_gbps, 0, "0.0"), (fmt_gbps, 0.001, "<0.1"), (fmt_gbps, 1234.56, "1,234.6"),
    (fmt_pct, None, "n/a"), (fmt_pct, 0.1234, "12.3%"),
    (fmt_duration, None, "n/a"), (fmt_duration, 12, "00:00:12"), (fmt_duration, 61, "00:01:01"),
    (fmt_duration, 7260, "02:01:00"), (fmt_duration, 90000, "1-01:00:00"),
    (fmt_duration, 86399.6, "1-00:00:00"), (fmt_duration, 12 * 86400 + 5, "12-00:00:05"),
])
def test_formats(fn, value, want):
    assert fn(value) == want


def test_gauge():
    assert gauge(None, 4) == "[    ]"
    assert gauge(0.5, 4) == "[##..]"
    assert gauge(1.7, 4) == "[####]"  # bursts above the quoted rate fill the bar, no more


# -- the CLI -----------------------------------------------------------------------------------
@pytest.fixture
def store(tmp_path, mixed, pool):
    s = str(tmp_path / "store")
    write_store(s, mixed)
    write_store(s, job_records(pool, healthy(2, tx_gbps=0.001, rx_gbps=0.001, ena_tx_gbps=8,
                                             ena_rx_gbps=8), job_id="77", cluster="prod", user="bob"))
    return s


def run(*args, env=None):
    env = dict(env or {})
    env.setdefault("EFAJOB_CONFIG", "")
    return cli_runner().invoke(main, list(args), env=env)


def test_cli_report_formats(store, tmp_path):
    r = run("report", "1234", "--store", store, "--no-slurm")
    assert r.exit_code == 0, r.output
    assert "EFA job report: job 1234, cluster prod" in r.output and "Verdict: Failure" in r.output
    assert "\x1b[" not in r.output  # not a tty: no colour
    r = run("report", "1234", "--store", store, "--no-slurm", "--format", "json")
    assert r.exit_code == 0 and json.loads(r.output)["verdict"] == "Failure"
    r = run("report", "1234", "--store", store, "--no-slurm", "--format", "csv")
    assert r.exit_code == 0 and r.output.startswith("job_id,cluster,restart,level")
    out = tmp_path / "r.html"
    r = run("report", "1234", "--store", store, "--no-slurm", "--format", "html", "-o", str(out))
    assert r.exit_code == 0 and out.read_text().startswith("<!DOCTYPE html>")
    r = run("report", "1234", "--store", store, "--no-slurm", "-v")
    assert r.exit_code == 0 and "rdmap79s0" in r.output


def test_cli_golden_text(store, update_golden):
    r = run("report", "77", "--store", store, "--no-slurm", "--no-color")
    assert r.exit_code == 0, r.output
    check_golden("cli-77.txt", r.output, update_golden)


def test_cli_survives_hostile_records(store, tmp_path):
    """A record nested 100,000 deep and one holding a 401-digit counter once made `report`,
    `jobs` and `dashboard build` exit 1 with a traceback: each is now a skipped node, said."""
    d = os.path.join(store, "prod", "jobs", "77")
    deep, huge = sorted(os.listdir(d))[:2]
    with open(os.path.join(d, deep), "w") as f:
        f.write("[" * 100000 + "]" * 100000)
    with open(os.path.join(d, huge)) as f:
        rec = json.load(f)
    rec["totals"]["tx_bytes"] = 10 ** 400
    with open(os.path.join(d, huge), "w") as f:
        f.write(json.dumps(rec))
    r = run("report", "77", "--store", store, "--no-slurm", "--no-color")
    assert r.exit_code == 0 and "Traceback" not in r.output, r.output
    text = " ".join(r.output.split())
    assert "nested too deeply" in text and "integer of 401 digits out of range" in text
    r = run("jobs", "--store", store, "--no-color")
    assert r.exit_code == 0 and "77" in r.output, r.output
    r = run("dashboard", "build", "--store", store, "-o", str(tmp_path / "d.html"))
    assert r.exit_code == 0, r.output


def test_cli_slurm_unreachable_is_said(store):
    # No scontrol on PATH: the report still works and says where its header came from.
    r = run("report", "77", "--store", store, env={"PATH": "/nonexistent"})
    assert r.exit_code == 0, r.output
    assert "Metadata  : job records" in r.output


def test_cli_exit_codes(store, tmp_path):
    r = run("report", "999", "--store", store, "--no-slurm")
    assert r.exit_code == 5 and "job 999 has no records" in r.output
    r = run("report", "../../etc", "--store", store, "--no-slurm")
    assert r.exit_code == 2 and "not valid" in r.output
    r = run("report", "1234", "--store", str(tmp_path / "nope"), "--no-slurm")
    assert r.exit_code == 4 and "does not exist" in r.output
    # The same job id in a second cluster: ambiguous until --cluster picks one.
    os.makedirs(os.path.join(store, "dev", "jobs", "1234"))
    with open(os.path.join(store, "dev", "jobs", "1234", "n1.json"), "w") as f:
        f.write("{}")
    r = run("report", "1234", "--store", store, "--no-slurm")
    assert r.exit_code == 6 and "dev, prod" in r.output and "--cluster" in r.output
    r = run("report", "1234", "--store", store, "--no-slurm", "--cluster", "prod")
    assert r.exit_code == 0
    r = run("report", "1234", "--store", store, "--no-slurm", "--restart", "3", "--cluster", "prod")
    assert r.exit_code == 5 and "no restart 3" in r.output


def test_cli_corrupt_record_is_skipped(store):
    path = os.path.join(store, "prod", "jobs", "1234", "n2.json")
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])  # half-written
    r = cli_runner().invoke(main, ["report", "1234", "--store", store, "--no-slurm", "--format", "json"],
                      env={"EFAJOB_CONFIG": ""})
    assert r.exit_code == 0
    assert f"warning: skipped {path}: not valid JSON" in r.stderr
    d = json.loads(r.stdout)
    assert [n["host"] for n in d["nodes"] if n["status"] == "missing"] == ["n2"]
    assert any(f["code"] == "incomplete" and path in f["message"] for f in d["findings"])


def test_cli_restarts(pool, tmp_path):
    s = str(tmp_path / "store")
    write_store(s, job_records(pool, healthy(2), job_id="31"))
    write_store(s, job_records(pool, healthy(2, tx_gbps=10, rx_gbps=10), job_id="31", restart=1))
    r = run("report", "31", "--store", s, "--no-slurm", "--format", "json")
    d = json.loads(r.output)
    assert d["restart"] == 1 and d["restarts"] == [0, 1] and "the latest" in d["notes"][0]
    r = run("report", "31", "--store", s, "--no-slurm", "--format", "json", "--restart", "0")
    d = json.loads(r.output)
    assert d["restart"] == 0 and d["notes"] == [] and d["totals"]["tx_bytes"] == 2 * GBPS_BYTES


def test_cli_array_task_found_by_record_ids(pool, tmp_path):
    # Hooks file records under SLURM_JOB_ID (here 41); the records carry the array ids 40_3.
    s = str(tmp_path / "store")
    write_store(s, job_records(pool, healthy(2), job_id="41", array_job_id="40", array_task_id="3"))
    r = run("report", "40_3", "--store", s, "--no-slurm", "--format", "json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["job_id"] == "41" and d["alias"] == "40_3"
    r = run("report", "41", "--store", s, "--no-slurm")
    assert "Job       : 41 (array task 40_3)" in r.output


def test_cli_array_and_het_by_plain_id_exit_6(pool, tmp_path, monkeypatch):
    # Records that carry their array ids (a Slurm that gives the hooks SLURM_ARRAY_*): the
    # array's own id 40 is also the SLURM_JOB_ID of its last task, 40_3. `report 40` lists the
    # tasks (exit 6); `report 40_3` and `report 40_1` each report one task.
    s = str(tmp_path / "store")
    write_store(s, job_records(pool, healthy(1), job_id="40", array_job_id="40", array_task_id="3"))
    write_store(s, job_records(pool, healthy(1), job_id="41", array_job_id="40", array_task_id="1"))
    write_store(s, job_records(pool, healthy(1), job_id="60", het_job_id="60", het_job_offset="0"))
    write_store(s, job_records(pool, healthy(1), job_id="61", het_job_id="60", het_job_offset="1"))
    r = run("report", "40", "--store", s, "--no-slurm")
    assert r.exit_code == 6, r.output
    assert "job 40 is an array job (2 tasks: 40_1, 40_3); report one task" in r.output
    r = run("report", "60", "--store", s, "--no-slurm")
    assert r.exit_code == 6, r.output
    assert "job 60 is a heterogeneous job (2 components: 60+0, 60+1)" in r.output
    for asked, stored in (("40_3", "40"), ("40_1", "41"), ("60+1", "61"), ("60+0", "60")):
        r = run("report", asked, "--store", s, "--no-slurm", "--format", "json")
        assert r.exit_code == 0, (asked, r.output)
        assert (json.loads(r.output)["job_id"], json.loads(r.output)["alias"]) == (stored, asked)
    # Slurm 22.05's hooks see neither: records without the ids, and Slurm lists the parts.
    import efajob.slurm.adapter as slurm

    write_store(s, job_records(pool, healthy(1), job_id="80"))
    het = JobInfo(job_id="80+0", state="COMPLETED", slurm_job_id="80", parts=("80+0", "80+1"))
    monkeypatch.setattr(slurm, "get_backend", lambda **kw: FakeBackend(het))
    r = run("report", "80", "--store", s)
    assert r.exit_code == 6 and "job 80 is a heterogeneous job (2 components: 80+0, 80+1)" in r.output
    one = JobInfo(job_id="80+0", state="COMPLETED", nodes=["n1"], slurm_job_id="80")
    monkeypatch.setattr(slurm, "get_backend", lambda **kw: FakeBackend(one))
    r = run("report", "80+0", "--store", s, "--format", "json")
    assert r.exit_code == 0 and json.loads(r.output)["alias"] == "80+0", r.output


def test_cli_jobs(store, tmp_path):
    env = {"EFAJOB_STATE_DIR": str(tmp_path / "state")}  # no job index there: the scan
    r = run("jobs", "--store", store, "--format", "json", env=env)
    assert r.exit_code == 0, r.output
    assert r.stderr.startswith("warning: no job index at ") and "scanning the store" in r.stderr
    rows = json.loads(r.stdout)["jobs"]
    assert {(j["job_id"], j["verdict"]) for j in rows} == {("1234", "Failure"), ("77", "Failure")}
    r = run("jobs", "--store", store, "--user", "bob", "--format", "json", env=env)
    assert [j["job_id"] for j in json.loads(r.stdout)["jobs"]] == ["77"]
    r = run("jobs", "--store", store, "--state", "failed", "--format", "json", env=env)
    assert json.loads(r.stdout)["jobs"] == []
    r = run("jobs", "--store", store, "--limit", "1", "--wide", env=env)
    assert r.exit_code == 0 and len(r.stdout.splitlines()) == 2 and r.stdout.startswith("CLUSTER")


@pytest.mark.parametrize("columns", ["80", "200"])
def test_cli_jobs_golden(store, columns, update_golden):
    # $COLUMNS is the width, as for ps and sacct: 80 drops the cluster, start and average.
    r = run("jobs", "--store", store, "--no-index", env={"COLUMNS": columns})
    assert r.exit_code == 0, r.output
    check_width(r.stdout, int(columns))
    check_golden(f"jobs-{columns}.txt", r.stdout, update_golden)
    assert ("CLUSTER" in r.stdout) == (columns == "200")
    r = run("jobs", "--store", store, "--since", "yesterday")
    assert r.exit_code == 2 and "--since" in r.output


def test_list_jobs_includes_running(tmp_path):
    s = str(tmp_path / "store")
    os.makedirs(os.path.join(s, "c1", "nodes"))
    doc = {"schema": "efajob/node-status", "version": 1, "cluster": "c1", "node": "n1",
           "time": NOW - 3, "tx_gbps": 12.5, "rx_gbps": 12.0,
           "jobs": [{"key": "900", "job_id": "900", "user": "dora", "partition": "gpu", "start": NOW - 100}]}
    with open(os.path.join(s, "c1", "nodes", "n1.json"), "w") as f:
        json.dump(doc, f)
    cfg = Config(store=s)
    rows = list_jobs(cfg, now=NOW)
    assert len(rows) == 1 and rows[0]["state"] == "RUNNING" and rows[0]["user"] == "dora"
    assert rows[0]["elapsed_s"] == 100
    # No `recent` window in this status file: the verdict says so, and fits 80 columns.
    assert rows[0]["verdict"] == "Running: not judged yet (no live window)"
    text = render_jobs(rows, width=80)
    check_width(text, 80)
    assert text.splitlines()[1].endswith("Running: not judged")
    assert list_jobs(cfg, now=NOW + 3600) == []  # the status file went stale: not running


def test_thresholds_come_from_config(mixed):
    th = dict(DEFAULT_THRESHOLDS, straggler_ratio=0.1)
    r = report_of(mixed, thresholds=th)
    assert not [f for f in r.findings if f.code == "straggler_node"]
    assert job_summary(r)["verdict"] == "Failure"  # the dead device remains


def test_allowance_line_names_what_moved_and_tells_absent_from_zero():
    from efajob.report.render.text import fmt_allowance

    assert fmt_allowance({}) == "n/a (not recorded)"
    assert fmt_allowance({"rx_bytes": 5}) == "n/a (not recorded)"
    zeros = {"bw_in_allowance_exceeded": 0, "bw_out_allowance_exceeded": 0, "pps_allowance_exceeded": 0}
    assert fmt_allowance(zeros) == "none (3 counters read)"
    assert fmt_allowance(dict(zeros, bw_out_allowance_exceeded=27219)) == "bw_out_allowance_exceeded 27,219"


def test_private_records_of_another_user_are_not_yours(pool):
    """Issue 13, case 6: another user's private records read as a "Warning" job, exit 0.
    As real other users (the effective uid switched in-process: the venv's interpreter may
    live where other users cannot run it): the job's owner reads the report; anyone else gets
    exit 4 and "not yours", and `jobs` does not list the job."""
    import shutil
    import tempfile

    from conftest import require
    from efajob.hooks.outbox import deliver_one

    require("root (to act as other users)", os.geteuid() == 0)
    root = tempfile.mkdtemp(prefix="efajob-private-", dir="/tmp")
    try:
        os.chmod(root, 0o755)
        store = os.path.join(root, "store")
        cfg = Config(store=store, private_records=True)
        for rec in job_records(pool, healthy(2), job_id="88", cluster="c1", user="alice"):
            deliver_one(cfg, dict(rec, uid=1000))

        def as_user(uid, *args):
            os.seteuid(uid)
            try:
                return run(*args, "--store", store)
            finally:
                os.seteuid(0)

        mine = as_user(1000, "report", "88", "--no-slurm", "--no-color")
        assert mine.exit_code == 0 and "Verdict: Healthy" in mine.output, mine.output
        other = as_user(65534, "report", "88", "--no-slurm", "--no-color")
        assert other.exit_code == 4, other.output
        assert "private (private_records = true) and not yours" in other.output
        listed = as_user(65534, "jobs", "--no-color")
        assert listed.exit_code == 0 and " 88 " not in listed.output, listed.output
        assert " 88 " in as_user(1000, "jobs", "--no-color", "--wide").output
    finally:
        shutil.rmtree(root, ignore_errors=True)
