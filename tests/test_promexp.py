"""Prometheus exposition: names, labels, values against the tick, caps, promtool, the server."""
from __future__ import annotations

import socket
import subprocess
import urllib.request
from dataclasses import replace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import require_binary
from efajob.sinks import prometheus as promexp
from efajob.config import build_config
from efajob.daemon.loop import Daemon
from efajob.errors import SinkError
from efajob.sinks.prometheus import PrometheusSink
from efajob.hooks.runfiles import ActiveJob, write_active
from efajob.node.readings import Snapshot
from efajob.sim import build_node
from efajob.node.sysfs import read_snapshot


class Clock:
    def __init__(self, t):
        self.t = t

    def __call__(self):
        return self.t


def cfg_for(tmp_path, **prom):
    return build_config({
        "cluster": "c1", "sysfs_root": str(tmp_path / "sys"), "run_dir": str(tmp_path / "run"),
        "state_dir": str(tmp_path / "state"), "store": str(tmp_path / "store"),
        "instance_type": "p5.48xlarge", "prometheus": {"enabled": True, **prom},
    }, env={}, node="n1")


def job(key, user):
    return ActiveJob(key=key, job_id=key.split(".")[0], restart=0, user=user, uid=1, partition=None,
                     account=None, cluster="c1", node="n1", nodelist=None, num_nodes=1,
                     start_wall=1.0, start_mono=1.0, boot_id="b")


@pytest.fixture
def ticked(tmp_path):
    """(sink, tick, clock) after two ticks with traffic between them and two active jobs."""
    node = build_node(str(tmp_path / "sys"), "p5.48xlarge", device_limit=4)
    cfg = cfg_for(tmp_path)
    snap = read_snapshot(cfg.sysfs_root)
    write_active(cfg.run_dir, job("42", "alice"), snap)
    write_active(cfg.run_dir, job("43", None), snap)
    mono = Clock(100.0)
    d = Daemon(cfg, clock=mono, sinks=[], worker=False, lock=False)
    d.start()
    try:
        d.tick()
        node.traffic(400, 200, 1.0)
        mono.t += 1.0
        tick = d.tick()
    finally:
        d.close()
    mono.t += 0.25
    sink = PrometheusSink(cfg, clock=mono, serve=False)
    sink.on_tick(tick)
    return sink, tick, mono


def families(sink):
    return {f.name: f for f in text_string_to_metric_families(sink.exposition().decode())}


def value(fams, family, sample_name, **labels):
    for s in fams[family].samples:
        if s.name == sample_name and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    raise KeyError((family, sample_name, labels))


def test_counters_carry_kernel_names_and_values(ticked):
    sink, tick, _ = ticked
    fams = families(sink)
    for dev, reading in tick.snapshot.devices.items():
        for name, v in reading.port_counters.items():
            assert fams[f"efajob_{name}"].type == "counter"
            assert value(fams, f"efajob_{name}", f"efajob_{name}_total", device=dev, port="1") == v
        for name, v in reading.device_counters.items():
            assert value(fams, f"efajob_device_{name}", f"efajob_device_{name}_total",
                         device=dev) == v
    for ifname, stats in tick.snapshot.net.items():
        assert value(fams, "efajob_net_rx_bytes", "efajob_net_rx_bytes_total",
                     interface=ifname) == stats["rx_bytes"]


def test_rates_health_jobs_and_info(ticked):
    sink, tick, _ = ticked
    fams = families(sink)
    for name, r in tick.rates.items():
        g = f"efajob_node_{name}_per_second"
        assert fams[g].type == "gauge" and value(fams, g, g) == pytest.approx(r, rel=1e-12)
    assert value(fams, "efajob_node_tx_bytes_per_second", "efajob_node_tx_bytes_per_second") \
        == pytest.approx(400e9 / 8, rel=1e-9)
    assert value(fams, "efajob_daemon_last_sample_age_seconds",
                 "efajob_daemon_last_sample_age_seconds") == pytest.approx(0.25)
    assert value(fams, "efajob_daemon_ticks", "efajob_daemon_ticks_total") == 2
    for kind in promexp.ERROR_KINDS:
        assert value(fams, "efajob_daemon_errors", "efajob_daemon_errors_total", kind=kind) == 0
    jobs = {(s.labels["job_id"], s.labels["user"]): s.value for s in fams["efajob_job_active"].samples}
    assert jobs == {("42", "alice"): 1, ("43", ""): 1}
    assert value(fams, "efajob_node_info", "efajob_node_info", node="n1", cluster="c1",
                 instance_type="p5.48xlarge") == 1
    assert value(fams, "efajob_device_link_gbps", "efajob_device_link_gbps",
                 device="rdmap79s0") == 100.0
    # Port state is no health signal on EFA (efa_query_port hard-codes ACTIVE): not exported.
    assert "efajob_device_up" not in fams
    assert value(fams, "efajob_device_port_counters", "efajob_device_port_counters",
                 device="rdmap79s0") == len(tick.snapshot.devices["rdmap79s0"].port_counters) > 0
    assert value(fams, "efajob_node_expected_devices", "efajob_node_expected_devices") == 32
    assert "process_resident_memory_bytes" in sink.exposition().decode()


def test_counters_the_type_cannot_count_are_not_exported(tmp_path):
    """p4d (Nitro v3): rdma_write_* files exist from kernel 6.6 and read 0; not a measured 0."""
    build_node(str(tmp_path / "sys"), "p4d.24xlarge", kernel="6.17")
    cfg = build_config({
        "cluster": "c1", "sysfs_root": str(tmp_path / "sys"), "run_dir": str(tmp_path / "run"),
        "state_dir": str(tmp_path / "state"), "store": str(tmp_path / "store"),
        "instance_type": "p4d.24xlarge", "prometheus": {"enabled": True}}, env={}, node="n1")
    mono = Clock(100.0)
    d = Daemon(cfg, clock=mono, sinks=[], worker=False, lock=False)
    d.start()
    try:
        d.tick()
        mono.t += 1.0
        tick = d.tick()
    finally:
        d.close()
    assert "rdma_write_bytes" in next(iter(tick.snapshot.devices.values())).port_counters
    sink = PrometheusSink(cfg, clock=mono, serve=False)
    sink.on_tick(tick)
    fams = families(sink)
    assert "efajob_rdma_read_bytes" in fams and "efajob_rdma_write_bytes" not in fams
    assert "efajob_node_rdma_write_bytes_per_second" not in fams
    assert not [f for f in fams if "retrans" in f]


def test_cardinality_caps_are_counted(ticked, monkeypatch):
    sink, tick, _ = ticked
    monkeypatch.setattr(promexp, "MAX_DEVICES", 2)
    monkeypatch.setattr(promexp, "MAX_JOBS", 1)
    fams = families(sink)
    devices = {s.labels["device"] for s in fams["efajob_tx_bytes"].samples}
    assert len(devices) == 2
    assert len(fams["efajob_job_active"].samples) == 1
    assert value(fams, "efajob_exporter_dropped_series", "efajob_exporter_dropped_series",
                 what="devices") == 2
    assert value(fams, "efajob_exporter_dropped_series", "efajob_exporter_dropped_series",
                 what="jobs") == 1


def test_unsafe_counter_names_are_skipped_not_exported(ticked):
    sink, tick, _ = ticked
    dev = sorted(tick.snapshot.devices)[0]
    r = tick.snapshot.devices[dev]
    weird = dict(r.port_counters, **{"bad-name": 1, "node_info": 2})
    snap = Snapshot(tick.snapshot.mono, tick.snapshot.wall, net=tick.snapshot.net,
                    devices=dict(tick.snapshot.devices, **{dev: r._replace(port_counters=weird)}))
    sink.on_tick(replace(tick, snapshot=snap))
    text = sink.exposition().decode()
    assert "bad-name" not in text and 'efajob_node_info_total' not in text
    fams = families(sink)
    assert value(fams, "efajob_exporter_dropped_series", "efajob_exporter_dropped_series",
                 what="port_counters") == 2


def test_promtool_accepts_the_exposition(ticked, tmp_path):
    promtool = require_binary("promtool")
    sink, _, _ = ticked
    for text in (sink.exposition(), PrometheusSink(cfg_for(tmp_path), serve=False).exposition()):
        res = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                             timeout=120)
        assert res.returncode == 0, res.stdout.decode() + res.stderr.decode()


def test_server_serves_and_closes(ticked, tmp_path):
    _, tick, _ = ticked
    sink = PrometheusSink(cfg_for(tmp_path, bind="127.0.0.1", port=0))
    try:
        sink.on_tick(tick)
        host, port = sink.address
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=60) as r:
            assert r.status == 200 and b"efajob_tx_bytes_total{" in r.read()
        with pytest.raises(SinkError, match=f"127.0.0.1:{port}"):
            PrometheusSink(cfg_for(tmp_path, bind="127.0.0.1", port=port))
    finally:
        sink.close()
    with socket.socket() as s:  # the port is free again
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))


def test_server_sleeps_between_scrapes_and_closes_promptly(tmp_path, monkeypatch):
    """No periodic wake-up while nobody scrapes (socketserver's serve_forever polls twice a
    second, which on an idle node costs more than the scrapes); close() wakes the loop at once.
    Shown by what the accept loop asks of its selector, not by timing it: every select() is
    without a timeout, there is one a connection and one for close(), and close() is one of
    the selector's events."""
    import selectors
    import threading
    import types

    calls = []

    class Recording(selectors.DefaultSelector):
        def register(self, fileobj, events, data=None):
            calls.append(("register", data))
            return super().register(fileobj, events, data)

        def select(self, timeout=None):
            ready = super().select(timeout)
            calls.append(("select", timeout, sorted(key.data for key, _ in ready)))
            return ready

    monkeypatch.setattr(promexp, "selectors", types.SimpleNamespace(
        DefaultSelector=Recording, EVENT_READ=selectors.EVENT_READ))
    sink = PrometheusSink(cfg_for(tmp_path, bind="127.0.0.1", port=0))
    try:
        thread = next(t for t in threading.enumerate() if t.name == "efajob-prometheus")
        host, port = sink.address
        urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=60).read()
        req = urllib.request.Request(f"http://{host}:{port}/metrics?name[]=efajob_daemon_ticks_total",
                                     headers={"Accept-Encoding": "gzip"})
        with urllib.request.urlopen(req, timeout=60) as r:  # prometheus_client's app: gzip, filters
            assert r.headers["Content-Encoding"] == "gzip"
    finally:
        sink.close()
    thread.join(120)  # bounds a hang: close() has already woken the loop
    assert not thread.is_alive()
    assert calls == [("register", "accept"), ("register", "stop"),
                     ("select", None, ["accept"]), ("select", None, ["accept"]),
                     ("select", None, ["stop"])]


def test_server_binds_an_ipv6_address(tmp_path):
    sink = PrometheusSink(cfg_for(tmp_path, bind="::1", port=0))
    try:
        _, port = sink.address
        with urllib.request.urlopen(f"http://[::1]:{port}/metrics", timeout=60) as r:
            assert r.status == 200 and b"efajob_exporter_dropped_series" in r.read()
    finally:
        sink.close()


def test_private_records_keep_user_names_off_the_endpoint(ticked, tmp_path):
    """Issue 13, case 6: with private_records every local user who can scrape the endpoint
    saw who runs what. The series stay (same labels), the user is empty."""
    _, tick, mono = ticked
    sink = PrometheusSink(cfg_for(tmp_path).replace(private_records=True), clock=mono,
                          serve=False)
    sink.on_tick(tick)
    jobs = {(s.labels["job_id"], s.labels["user"]): s.value
            for s in families(sink)["efajob_job_active"].samples}
    assert jobs == {("42", ""): 1, ("43", ""): 1}
    assert b"alice" not in sink.exposition()


# What Prometheus sends (scrape_protocols' default order), a plain text client, and OpenMetrics
# without parameters: the three answers promtext writes itself.
PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0;escaping=underscores;q=0.5,"
                     "application/openmetrics-text;version=0.0.1;q=0.4,"
                     "text/plain;version=1.0.0;escaping=underscores;q=0.3,"
                     "text/plain;version=0.0.4;q=0.2,*/*;q=0.1")
ACCEPTS = ["", "text/plain;version=0.0.4", "application/openmetrics-text", PROMETHEUS_ACCEPT]


def _reference(sink, accept):
    """prometheus_client's own encoder over the full registry, for the same Accept header."""
    from prometheus_client.exposition import choose_encoder

    encoder, content_type = choose_encoder(accept)
    return encoder(sink.registry), content_type


def _without_process(body: bytes) -> bytes:
    # process_* values (CPU seconds, memory) move between two encodings: compare the rest.
    return b"".join(line for line in body.splitlines(keepends=True) if b"process_" not in line)


@pytest.mark.parametrize("accept", ACCEPTS, ids=["none", "text", "openmetrics", "prometheus"])
def test_promtext_writes_what_prometheus_client_writes(ticked, tmp_path, accept):
    sink, tick, _ = ticked
    hostile = [job("44", 'eve"\\\n\u00e9'), job("45_1", "bob")]
    odd = replace(tick, jobs=tuple(tick.jobs) + tuple(hostile), cluster='c"1\\', node="n\n1")
    for s, t in ((sink, odd), (PrometheusSink(cfg_for(tmp_path), serve=False), None)):
        if t is not None:
            s.on_tick(t)
        ref, _ = _reference(s, accept)
        fast = s.exposition(accept)
        assert _without_process(fast) == _without_process(ref)
        assert fast.count(b"process_") == ref.count(b"process_") > 0
        assert fast.endswith(b"# EOF\n") == ("openmetrics" in accept)
    assert 'user="eve\\"\\\\\\n\u00e9"'.encode() in sink.exposition(accept)


def test_the_served_body_is_promtext_gzipped_or_not_and_filters_fall_back(ticked, tmp_path):
    import gzip

    _, tick, clock = ticked
    # the scrape-time clock injected: the sample-age gauge is the same in both encodings
    sink = PrometheusSink(cfg_for(tmp_path, bind="127.0.0.1", port=0), clock=clock)
    try:
        sink.on_tick(tick)
        host, port = sink.address
        url = f"http://{host}:{port}/metrics"
        for accept, encoding in ((PROMETHEUS_ACCEPT, "gzip"), ("", "")):
            req = urllib.request.Request(url, headers={"Accept": accept,
                                                       "Accept-Encoding": encoding})
            with urllib.request.urlopen(req, timeout=60) as r:
                body = r.read()
                assert r.headers.get("Content-Encoding", "") == encoding
                ctype = r.headers["Content-Type"]
            if encoding:
                body = gzip.decompress(body)
            ref, ref_type = _reference(sink, accept)
            assert ctype == ref_type
            assert _without_process(body) == _without_process(ref)
        # name[] filters: prometheus_client's own path, restricted to the names asked for
        with urllib.request.urlopen(url + "?name[]=efajob_daemon_devices", timeout=60) as r:
            text = r.read().decode()
        assert [ln for ln in text.splitlines() if not ln.startswith("#")] == [
            f"efajob_daemon_devices {float(len(tick.snapshot.devices))}"]
        q = "?name[]=efajob_tx_bytes_total&name[]=process_open_fds"
        with urllib.request.urlopen(url + q, timeout=60) as r:
            text = r.read().decode()
        names = {ln.split("{")[0].split()[0] for ln in text.splitlines() if not ln.startswith("#")}
        assert names == {"efajob_tx_bytes_total", "process_open_fds"}
        assert text.count("efajob_tx_bytes_total{") == len(tick.snapshot.devices)
    finally:
        sink.close()
