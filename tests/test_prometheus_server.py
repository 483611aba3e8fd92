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
import urllib.parse
import urllib.request

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


def query(base: str, promql: str):
    return get_json(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql}))["data"]["result"]


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


def test_prometheus_scrapes_the_injected_rate(tmp_path):
    prometheus = require_binary("prometheus")
    node = build_node(str(tmp_path / "sys"), "p5.48xlarge", device_limit=8)
    exporter_port, prom_port = free_port(), free_port()
    cfg = build_config({
        "cluster": "c1", "sysfs_root": str(tmp_path / "sys"), "run_dir": str(tmp_path / "run"),
        "state_dir": str(tmp_path / "state"), "store": str(tmp_path / "store"),
        "instance_type": "p5.48xlarge",
        "prometheus": {"enabled": True, "bind": "127.0.0.1", "port": exporter_port},
    }, env={}, node="n1")
    write_active(cfg.run_dir, ActiveJob(
        key="77", job_id="77", restart=0, user="bob", uid=1, partition="gpu", account=None,
        cluster="c1", node="n1", nodelist="n1", num_nodes=1, start_wall=time.time(),
        start_mono=time.monotonic(), boot_id="b"), read_snapshot(cfg.sysfs_root))

    mono = [1000.0]
    d = Daemon(cfg, clock=lambda: mono[0], worker=False)
    d.start()
    stop = threading.Event()
    injected = []

    def drive():
        d.tick()
        while not stop.is_set():
            injected.append(node.traffic(400, 200, 1.0))  # exactly one second of traffic
            mono[0] += 1.0
            d.tick()
            stop.wait(0.2)

    driver = threading.Thread(target=drive, daemon=True)
    driver.start()

    (tmp_path / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: efajob\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{exporter_port}']\n")
    log = open(tmp_path / "prometheus.log", "w")
    proc = subprocess.Popen(
        [prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}"],
        stdout=log, stderr=subprocess.STDOUT, cwd=str(tmp_path))
    base = f"http://127.0.0.1:{prom_port}"
    try:
        up = wait_for(lambda: query(base, 'up{job="efajob"} == 1'), 120)  # bounds a hang
        assert up, open(tmp_path / "prometheus.log").read()[-2000:]
        got = wait_for(lambda: query(base, "efajob_node_tx_bytes_per_second"), 120)
        assert got, "no sample scraped"
        want = injected[0].totals["tx_bytes"]  # every second injects the same exact total
        assert all(i.totals["tx_bytes"] == want for i in injected)
        assert float(got[0]["value"][1]) == want
        # PromQL joins the node series to the jobs running on it.
        joined = query(base, "efajob_node_rx_bytes_per_second * on(instance) "
                             "group_left(job_id, user) efajob_job_active")
        assert [(r["metric"]["job_id"], r["metric"]["user"]) for r in joined] == [("77", "bob")]
        assert float(joined[0]["value"][1]) == injected[0].totals["rx_bytes"]
        # Per-device counters are there under their kernel names.
        devs = query(base, 'count(efajob_tx_bytes_total{port="1"})')
        assert float(devs[0]["value"][1]) == 8
    finally:
        stop.set()
        driver.join(timeout=60)
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=60)
        log.close()
        d.close()
