"""The CloudWatch sink against a real moto_server on 127.0.0.1: a daemon on a simulated node
publishes minutes of simulated time; CloudWatch's sums equal the injected bytes; a job's EMF
event carries its totals; an outage (moto stopped, restarted) loses nothing; the dashboard
names only what was published. Required in CI (tests/conftest.py `require`)."""
from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from click.testing import CliRunner

from conftest import wait_until
from efajob.sinks.cloudwatch.sink import CloudWatchSink
from efajob.config import build_config
from efajob.sinks.cloudwatch.dashboard import build_dashboard, metric_refs
from efajob.sinks.cloudwatch.emf import parse_emf
from efajob.sinks.cloudwatch.metrics import ENA_ALLOWANCE
from efajob.daemon.loop import Daemon
from efajob.hooks.records import JobIdentity, build_record
from efajob.hooks.runfiles import ActiveJob, write_active
from efajob.sim import build_node
from efajob.node.sysfs import read_snapshot
from tests.conftest import require

pytestmark = [pytest.mark.integration, pytest.mark.moto]

BOOT = "11111111-2222-3333-4444-555555555555"
INSTANCE = "i-0123456789abcdef0"


def moto_binary():
    local = os.path.join(os.path.dirname(sys.executable), "moto_server")
    return local if os.access(local, os.X_OK) else shutil.which("moto_server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MotoServer:
    def __init__(self, log_dir, port=None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = os.path.join(str(log_dir), f"moto-{self.port}.log")
        self.proc = None

    def start(self) -> None:
        binary = moto_binary()
        require("moto_server", binary is not None, "pip install moto flask flask-cors")
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([binary, "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + 120  # bounds a hang: start-up takes a second or two
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"moto_server exited: {open(self.log_path).read()[-2000:]}")
            try:
                urllib.request.urlopen(self.url + "/moto-api/", timeout=5).close()
                self._warm()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        pytest.fail("moto_server did not answer within 120 s")

    def _warm(self) -> None:
        """moto loads a service's backend on its first request, which on a busy machine can
        outlast the sink's 3 s read timeout and count as an outage the test did not make:
        load both before any sink talks to the server."""
        import boto3
        from botocore.config import Config

        kw = dict(region_name="us-east-1", endpoint_url=self.url, aws_access_key_id="testing",
                  aws_secret_access_key="testing",
                  config=Config(read_timeout=120, retries={"total_max_attempts": 1}))
        boto3.client("cloudwatch", **kw).list_metrics(Namespace="EFAJob")
        boto3.client("logs", **kw).describe_log_groups()

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(60)
        self.proc = None

    def reset(self) -> None:
        req = urllib.request.Request(self.url + "/moto-api/reset", method="POST", data=b"")
        urllib.request.urlopen(req, timeout=60).close()


@pytest.fixture(scope="module")
def moto_server(tmp_path_factory):
    server = MotoServer(tmp_path_factory.mktemp("moto"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def aws_env(monkeypatch):
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_EC2_METADATA_DISABLED": "true", "NO_PROXY": "127.0.0.1",
                 "no_proxy": "127.0.0.1"}.items():
        monkeypatch.setenv(k, v)
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(k, raising=False)


@pytest.fixture
def moto(moto_server):
    moto_server.reset()
    return moto_server


def make_cfg(tmp_path, endpoint, **cw):
    section = {"enabled": True, "region": "us-east-1", "endpoint_url": endpoint,
               "instance_id": INSTANCE, "instance_type": "p5.48xlarge"}
    section.update(cw)
    return build_config({"cluster": "c1", "sysfs_root": str(tmp_path / "sys"),
                         "run_dir": str(tmp_path / "run"), "state_dir": str(tmp_path / "state"),
                         "store": str(tmp_path / "store"), "instance_type": "p5.48xlarge",
                         "cloudwatch": section}, env={}, node="n1")


class Clock:
    def __init__(self, t):
        self.t = t

    def __call__(self):
        return self.t


class SimNode:
    """A simulated p5 (4 devices to keep it fast) sampled by the real daemon, whose clocks
    advance one simulated second per tick: minutes of data in about a second."""

    def __init__(self, tmp_path, sink, *, allowance=False):
        self.node = build_node(str(tmp_path / "sys"), "p5.48xlarge", "6.17", device_limit=4)
        self.stats_dir = os.path.join(str(tmp_path / "sys"), "class", "net", "eth0", "statistics")
        if allowance:
            # Real ENA reports allowance counters through ethtool, not sysfs; a file here is how
            # a reading that includes them looks to the daemon.
            self._bump(0)
        proc = tmp_path / "proc" / "sys" / "kernel" / "random"
        proc.mkdir(parents=True)
        (proc / "boot_id").write_text(BOOT + "\n")
        # Simulated wall time ends before real time: CloudWatch takes data up to 2 weeks old.
        self.mono, self.wall = Clock(5000.0), Clock(float(int(time.time()) - 1800))
        self.cfg = sink.cfg
        self.daemon = Daemon(sink.cfg, clock=self.mono, wall_clock=self.wall,
                             proc_root=str(tmp_path / "proc"), sinks=[sink], worker=False,
                             lock=False)
        self.daemon.start()
        self.t0 = self.wall.t
        self.daemon.tick()
        self.sent = {"tx_bytes": 0, "rx_bytes": 0, "rx_drops": 0}
        self.allowance = 0

    def _bump(self, n):
        for name in ENA_ALLOWANCE:
            path = os.path.join(self.stats_dir, name)
            old = int(open(path).read()) if os.path.exists(path) else 1000
            with open(path, "r+" if os.path.exists(path) else "w") as f:  # in place, as sysfs
                f.write("%d\n" % (old + n))

    def run(self, seconds, tx_gbps=80.0, rx_gbps=60.0, fault=None):
        for i in range(seconds):
            inj = self.node.traffic(tx_gbps, rx_gbps, 1.0, fault=fault if i % 20 == 0 else None)
            for k in self.sent:
                self.sent[k] += inj.totals.get(k, 0)
            if os.path.exists(os.path.join(self.stats_dir, "bw_out_allowance_exceeded")):
                self._bump(3)
                self.allowance += 3
            self.mono.t += 1
            self.wall.t += 1
            self.daemon.tick()

    def close(self):
        self.daemon.close(flush_timeout=120.0)  # bounds a hang only


def metric_sum(cw, name, dims, t0, t1, stat="Sum"):
    resp = cw.get_metric_data(
        MetricDataQueries=[{"Id": "m", "MetricStat": {"Metric": {
            "Namespace": "EFAJob", "MetricName": name,
            "Dimensions": [{"Name": k, "Value": v} for k, v in dims]},
            "Period": 60, "Stat": stat}}],
        StartTime=dt.datetime.fromtimestamp(t0 - 3600, dt.timezone.utc),
        EndTime=dt.datetime.fromtimestamp(t1 + 3600, dt.timezone.utc))
    return resp["MetricDataResults"][0]["Values"]


def clients(url):
    import boto3

    kw = dict(region_name="us-east-1", endpoint_url=url)
    return boto3.client("cloudwatch", **kw), boto3.client("logs", **kw)


NODE_DIMS = (("ClusterName", "c1"), ("InstanceId", INSTANCE))


def test_daemon_publishes_exact_sums_and_1s_peaks(tmp_path, moto):
    sink = CloudWatchSink(make_cfg(tmp_path, moto.url))
    sim = SimNode(tmp_path, sink)
    sim.run(300, fault="drops")  # five simulated minutes
    sim.close()
    cw, _ = clients(moto.url)
    t0, t1 = sim.t0, sim.wall.t
    for name in ("tx_bytes", "rx_bytes", "rx_drops"):
        got = metric_sum(cw, name, NODE_DIMS, t0, t1)
        assert sum(got) == sim.sent[name], name
        assert sum(metric_sum(cw, name, (("ClusterName", "c1"),), t0, t1)) == sim.sent[name]
    assert sim.sent["rx_drops"] > 0
    type_dims = (("ClusterName", "c1"), ("InstanceType", "p5.48xlarge"))
    assert sum(metric_sum(cw, "tx_bytes", type_dims, t0, t1)) == sim.sent["tx_bytes"]
    # SampleCount is seconds observed; Maximum the highest 1 s rate (steady 80 Gb/s here).
    assert sum(metric_sum(cw, "tx_bytes", NODE_DIMS, t0, t1, "SampleCount")) == 300
    peak = max(metric_sum(cw, "tx_bytes", NODE_DIMS, t0, t1, "Maximum"))
    assert peak == pytest.approx(80e9 / 8, rel=1e-3)
    # At most one PutMetricData per node per minute: 300 s span at most 6 minute buckets.
    st = sink.stats()
    assert st["requests"] <= 6 and st.get("spooled_items", 0) == 0
    names = {m["MetricName"] for m in cw.list_metrics(Namespace="EFAJob")["Metrics"]
             if {d["Name"] for d in m["Dimensions"]} == {"ClusterName", "InstanceId"}}
    assert names == {"tx_bytes", "rx_bytes", "tx_pkts", "rx_pkts", "rx_drops", "retrans_pkts",
                     "impaired_remote_conn_events", "unresponsive_remote_events",
                     "rdma_read_wr_err", "rdma_write_wr_err", "cmds_err", "no_completion_cmds"}


def test_job_record_becomes_an_emf_event_with_its_totals(tmp_path, moto):
    sink = CloudWatchSink(make_cfg(tmp_path, moto.url))
    node = build_node(str(tmp_path / "sys"), "p5.48xlarge", "6.17", device_limit=2)
    start = read_snapshot(str(tmp_path / "sys"))
    inj = node.traffic(100, 90, 30, fault="retrans")
    end = read_snapshot(str(tmp_path / "sys"))
    ident = JobIdentity(cluster="c1", job_id="4242", restart=0, host="n1", user="alice",
                        partition="gpu")
    record = build_record(ident, start, end, instance_type="p5.48xlarge")
    sink.on_record(record)
    sink.flush(120.0)
    sink.close()
    _, logs = clients(moto.url)
    events = logs.get_log_events(logGroupName="/efajob/c1", logStreamName="n1")["events"]
    assert len(events) == 1
    emf = parse_emf(events[0]["message"])
    doc = emf["doc"]
    assert doc["totals"] == record["totals"] and doc["totals"]["tx_bytes"] == inj.totals["tx_bytes"]
    assert doc["job_tx_bytes"] == inj.totals["tx_bytes"]
    assert doc["job_retrans_pkts"] == inj.totals["retrans_pkts"] > 0
    assert (doc["JobId"], doc["User"], doc["Host"], doc["Partition"]) == ("4242", "alice", "n1", "gpu")
    assert emf["dimensions"] == [["ClusterName"]] and emf["namespace"] == "EFAJob"
    assert events[0]["timestamp"] == int(record["end"] * 1000)


def test_outage_then_restart_loses_nothing(tmp_path):
    server = MotoServer(tmp_path)
    server.start()
    try:
        sink = CloudWatchSink(make_cfg(tmp_path, server.url), backoff_base=0.05, backoff_cap=0.4)
        sim = SimNode(tmp_path, sink)
        sim.run(90)
        sink.flush(120.0)  # everything so far is in the first server
        before = dict(sim.sent)
        server.stop()
        sim.run(180)  # three minutes with the endpoint down
        assert wait_until(lambda: sink.stats()["spooled_now"] >= 3 and not sink.stats()["queued"])
        server.start()  # same port, fresh state: only what was spooled and later can be there
        sim.run(60)
        assert wait_until(lambda: sink.stats()["spooled_now"] == 0)
        sim.close()
        st = sink.stats()
        # Spooled while down (and until the spool drained), then every one of them sent.
        assert st["unspooled_items"] == st["spooled_items"] >= 3 and st["outages"] == 1
        assert st.get("spool_dropped", 0) == 0 and st.get("rejected_datums", 0) == 0
        cw, _ = clients(server.url)
        t0, t1 = sim.t0, sim.wall.t
        for name in ("tx_bytes", "rx_bytes"):
            assert sum(metric_sum(cw, name, NODE_DIMS, t0, t1)) == sim.sent[name] - before[name]
    finally:
        server.stop()


def test_dashboard_names_only_published_metrics(tmp_path, moto):
    cfg = make_cfg(tmp_path, moto.url, per_device=True, job_metrics=True)
    sink = CloudWatchSink(cfg)
    sim = SimNode(tmp_path, sink, allowance=True)
    job = ActiveJob(key="77", job_id="77", restart=0, user="bob", uid=1000, partition="gpu",
                    account=None, cluster="c1", node="n1", nodelist="n1", num_nodes=1,
                    start_wall=sim.wall.t, start_mono=sim.mono.t, boot_id=BOOT)
    write_active(cfg.run_dir, job, read_snapshot(cfg.sysfs_root))
    sim.run(70, fault="impaired")
    start = read_snapshot(cfg.sysfs_root)
    sink.on_record(build_record(JobIdentity(cluster="c1", job_id="77", restart=0, host="n1"),
                                start, read_snapshot(cfg.sysfs_root)))
    sim.close()
    assert sim.allowance > 0
    cw, logs = clients(moto.url)
    published = set()
    for page in cw.get_paginator("list_metrics").paginate(Namespace="EFAJob"):
        for m in page["Metrics"]:
            published.add((m["MetricName"], frozenset(d["Name"] for d in m["Dimensions"])))
    (event,) = logs.get_log_events(logGroupName="/efajob/c1", logStreamName="n1")["events"]
    emf = parse_emf(event["message"])  # moto does not extract EMF: read the directive
    for name in emf["metrics"]:
        published.add((name, frozenset(emf["dimensions"][0])))

    # Through the CLI: put the dashboard into moto, read it back, check every widget.
    conf = tmp_path / "config.toml"
    conf.write_text(f"""cluster = "c1"
state_dir = "{tmp_path / 'state'}"
[cloudwatch]
enabled = true
region = "us-east-1"
endpoint_url = "{moto.url}"
per_device = true
job_metrics = true
""")
    from efajob.cli.main import main

    res = CliRunner().invoke(main, ["cloudwatch", "dashboard", "--config", str(conf)])
    assert res.exit_code == 0, res.output
    assert "dashboard efajob-c1 put in us-east-1" in res.output
    body = json.loads(cw.get_dashboard(DashboardName="efajob-c1")["DashboardBody"])
    assert body == build_dashboard(cluster="c1", region="us-east-1", per_device=True,
                                   job_metrics=True)
    refs = metric_refs(body)
    assert len(refs) >= 20
    for ref in refs:
        assert ref.namespace == "EFAJob"
        assert dict(ref.values).get("ClusterName") == "c1", ref
        for name in ref.names:
            # Every widget metric was published with exactly that dimension set.
            assert (name, frozenset(ref.dimensions)) in published, (ref.widget, name)
    widget_sets = {(n, frozenset(r.dimensions)) for r in refs for n in r.names}
    # ... and the dashboard shows every family that was published.
    missing = {p for p in published if p not in widget_sets and p[0] not in (
        "tx_pkts", "rx_pkts", "job_seconds")}
    by_scope = {tuple(sorted(s)) for _, s in missing}
    assert not missing or by_scope <= {("ClusterName", "Device", "InstanceId")}, missing
