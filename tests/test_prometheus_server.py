"""A real Prometheus server scrapes the daemon's exporter; PromQL returns the injected rate.

The daemon runs in-process with an injected monotonic clock: every tick the simulator injects
exactly one second of traffic and the clock advances exactly one second, so the exported node
rate is exact and the query must return it to the last bit (no timing tolerance needed).
"""
from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Optional

import pytest

from conftest import require_binary
from efajob.config import build_config
from efajob.daemon.loop import Daemon
from efajob.hooks.runfiles import ActiveJob, write_active
from efajob.sim import build_node
from efajob.node.sysfs import read_snapshot

pytestmark = pytest.mark.prometheus


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=60) as r:
        return json.loads(r.read())


def query(base: str, promql: str, at: Optional[float] = None):
    args = {"query": promql, **({"time": f"{at:.3f}"} if at is not None else {})}
    return get_json(f"{base}/api/v1/query?" + urllib.parse.urlencode(args))["data"]["result"]


def wait_for(pred, timeout: float):
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        try:
            last = pred()
            if last:
                return last
        except OSError:
            pass
        time.sleep(0.2)
    return last


def exporter_node(tmp_path, name: str, jobs, devices: int = 8):
    """A simulated p5 node `name` with an in-process daemon exporting on a free port, and the
    active-job files of `jobs` ((job id, user) pairs). Returns (daemon, node, port, clock)."""
    root = tmp_path / name
    node = build_node(str(root / "sys"), "p5.48xlarge", device_limit=devices)
    port = free_port()
    cfg = build_config({
        "cluster": "c1", "sysfs_root": str(root / "sys"), "run_dir": str(root / "run"),
        "state_dir": str(root / "state"), "store": str(tmp_path / "store"),
        "instance_type": "p5.48xlarge",
        "prometheus": {"enabled": True, "bind": "127.0.0.1", "port": port},
    }, env={}, node=name)
    for job_id, user in jobs:
        write_active(cfg.run_dir, ActiveJob(
            key=job_id, job_id=job_id, restart=0, user=user, uid=1, partition="gpu",
            account=None, cluster="c1", node=name, nodelist=name, num_nodes=1,
            start_wall=time.time(), start_mono=time.monotonic(), boot_id="b"),
            read_snapshot(cfg.sysfs_root))
    mono = [1000.0]
    d = Daemon(cfg, clock=lambda: mono[0], worker=False)
    d.start()
    return d, node, port, mono


class Driver:
    """Ticks each daemon after exactly one second of simulated traffic on its node, with its
    clock advanced exactly one second: the exported rates are the injected totals, exactly."""

    def __init__(self, nodes):  # [(daemon, node, clock, tx_gbps, rx_gbps)]
        self.nodes, self.stop = nodes, threading.Event()
        self.injected = {id(d): [] for d, *_ in nodes}
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        for d, *_ in self.nodes:
            d.tick()
        while not self.stop.is_set():
            for d, node, mono, tx, rx in self.nodes:
                self.injected[id(d)].append(node.traffic(tx, rx, 1.0))
                mono[0] += 1.0
                d.tick()
            self.stop.wait(0.2)

    def close(self):
        self.stop.set()
        self.thread.join(timeout=60)
        for d, *_ in self.nodes:
            d.close()


class PrometheusServer:
    """A real Prometheus on 127.0.0.1 scraping `targets` every second, stopped by its PID."""

    def __init__(self, tmp_path, targets):
        self.tmp_path, self.port = tmp_path, free_port()
        listed = ", ".join(f"'127.0.0.1:{t}'" for t in targets)
        (tmp_path / "prometheus.yml").write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: efajob\n    static_configs:\n"
            f"      - targets: [{listed}]\n")
        self.log = open(tmp_path / "prometheus.log", "w")
        self.proc = subprocess.Popen(
            [require_binary("prometheus"), f"--config.file={tmp_path / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=str(tmp_path))
        self.base = f"http://127.0.0.1:{self.port}"

    def query(self, promql: str, at: Optional[float] = None):
        return query(self.base, promql, at)

    def wait_up(self, n: int) -> None:
        up = wait_for(lambda: len(self.query('up{job="efajob"} == 1')) == n, 120)  # bounds a hang
        assert up, open(self.tmp_path / "prometheus.log").read()[-2000:]

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=60)
        self.log.close()


def test_prometheus_scrapes_the_injected_rate(tmp_path):
    require_binary("prometheus")
    d, node, port, mono = exporter_node(tmp_path, "n1", [("77", "bob")])
    drv = Driver([(d, node, mono, 400, 200)])
    drv.thread.start()
    prom = PrometheusServer(tmp_path, [port])
    injected = drv.injected[id(d)]
    try:
        prom.wait_up(1)
        got = wait_for(lambda: prom.query("efajob_node_tx_bytes_per_second"), 120)
        assert got, "no sample scraped"
        want = injected[0].totals["tx_bytes"]  # every second injects the same exact total
        assert all(i.totals["tx_bytes"] == want for i in injected)
        assert float(got[0]["value"][1]) == want
        # PromQL joins the node series to the jobs running on it (docs/metrics.md).
        joined = prom.query("efajob_node_rx_bytes_per_second * on(instance) group_right "
                            "efajob_job_active")
        assert [(r["metric"]["job_id"], r["metric"]["user"]) for r in joined] == [("77", "bob")]
        assert float(joined[0]["value"][1]) == injected[0].totals["rx_bytes"]
        # Per-device counters are there under their kernel names.
        devs = prom.query('count(efajob_tx_bytes_total{port="1"})')
        assert float(devs[0]["value"][1]) == 8
    finally:
        drv.close()
        prom.close()


# The queries docs/metrics.md gives, verbatim there (a test below checks they are in it).
PER_NODE_JOB = "efajob_node_tx_bytes_per_second * on(instance) group_right efajob_job_active"
PER_JOB = "sum by (job_id) (efajob_node_tx_bytes_per_second * on(instance) group_right efajob_job_active)"
PER_JOB_FROM_DEVICES = ("sum by (job_id) (sum by (instance) (rate(efajob_tx_bytes_total[30s])) "
                        "* on(instance) group_right efajob_job_active)")
OLD_JOIN = "efajob_node_tx_bytes_per_second * on(instance) group_left(job_id, user) efajob_job_active"


def test_job_joins_on_a_shared_node(tmp_path):
    # n1 runs jobs 77 and 78 at once (a shared node), n2 runs job 77 alone.
    require_binary("prometheus")
    d1, node1, port1, mono1 = exporter_node(tmp_path, "n1", [("77", "bob"), ("78", "carol")], 4)
    d2, node2, port2, mono2 = exporter_node(tmp_path, "n2", [("77", "bob")], 4)
    drv = Driver([(d1, node1, mono1, 400, 200), (d2, node2, mono2, 100, 50)])
    drv.thread.start()
    prom = PrometheusServer(tmp_path, [port1, port2])
    try:
        prom.wait_up(2)
        assert wait_for(lambda: len(prom.query(PER_NODE_JOB)) == 3, 120)
        tx1 = drv.injected[id(d1)][0].totals["tx_bytes"]
        tx2 = drv.injected[id(d2)][0].totals["tx_bytes"]
        # The join docs/metrics.md used to give fails as soon as two jobs share a node.
        with pytest.raises(urllib.error.HTTPError) as e:
            prom.query(OLD_JOIN)
        assert "many-to-many matching not allowed" in e.value.read().decode()
        inst = {str(port1): "n1", str(port2): "n2"}
        rows = {(inst[r["metric"]["instance"].rsplit(":", 1)[1]], r["metric"]["job_id"],
                 r["metric"]["user"]): float(r["value"][1]) for r in prom.query(PER_NODE_JOB)}
        # Each job on a shared node is given the node's whole rate: counters are per device.
        assert rows == {("n1", "77", "bob"): tx1, ("n1", "78", "carol"): tx1, ("n2", "77", "bob"): tx2}
        per_job = {r["metric"]["job_id"]: float(r["value"][1]) for r in prom.query(PER_JOB)}
        assert per_job == {"77": tx1 + tx2, "78": tx1}
        # From the per-device counters. rate() is per second of scrape (wall) time, which
        # depends on how fast this machine ticks: compare with the per-node sums evaluated at
        # the same instant, not with a number.
        per_node = "sum by (instance) (rate(efajob_tx_bytes_total[30s]))"
        assert wait_for(lambda: len(prom.query(per_node)) == 2, 120)  # both have two scrapes
        at = time.time()
        per_job = {r["metric"]["job_id"]: float(r["value"][1])
                   for r in prom.query(PER_JOB_FROM_DEVICES, at)}
        nodes = {inst[r["metric"]["instance"].rsplit(":", 1)[1]]: float(r["value"][1])
                 for r in prom.query(per_node, at)}
        assert nodes["n1"] > 0 and nodes["n2"] > 0
        assert per_job["78"] == nodes["n1"]
        assert per_job["77"] == pytest.approx(nodes["n1"] + nodes["n2"], rel=1e-12)
    finally:
        drv.close()
        prom.close()


def test_metrics_doc_gives_the_tested_joins():
    import os

    doc = open(os.path.join(os.path.dirname(__file__), "..", "docs", "metrics.md")).read()
    for q in (PER_NODE_JOB, PER_JOB, PER_JOB_FROM_DEVICES):
        assert q in doc, q
    assert OLD_JOIN not in doc
