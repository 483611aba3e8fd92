"""The fault suite, on the head node and the sinks: the commands users run (`report`, `jobs`,
`dashboard build`, as subprocesses) against a store that hangs, holds FIFOs, or was written by
someone hostile; privacy as two real unprivileged users; CloudWatch throttling and down for
most of an hour; the daemon at 10 Hz for ten minutes of its clock."""
from __future__ import annotations

import json
import os
import resource
import threading
import time

import pytest
from click.testing import CliRunner

from fault_ledger import Row, record
from fault_site import Site, head_command

pytestmark = pytest.mark.integration

HEAD = (["report", "5", "--no-slurm", "--format", "json"], ["jobs", "--format", "json"],
        ["dashboard", "build", "-o", "{page}"])


def _run_head(site, tmp_path, extra_env=None):
    """The three head-node commands; (hung, crashed, report JSON or None)."""
    hung = crashed = 0
    report = None
    env = dict(os.environ, **(extra_env or {}))
    for args in HEAD:
        args = [a.replace("{page}", str(tmp_path / "page.html")) for a in args]
        verdict, p = head_command(args, site.store, env=env)
        hung += verdict == "hung"
        crashed += verdict == "crashed"
        if args[0] == "report" and verdict == "ok" and p.returncode == 0:
            report = json.loads(p.stdout)
    return hung, crashed, report


def test_store_with_fifos_and_a_hung_mount(tmp_path, monkeypatch):
    """FIFOs where records, node status files and a whole job's records would be; then a
    store whose listing never returns (a hung NFS mount, in-process: a blocked listdir)."""
    from efajob.cli.main import main
    from efajob.store import reader

    site = Site(tmp_path, hosts=["n1", "n2"])
    site.job("5", ["n1", "n2"])
    jobs = os.path.join(site.store, "c1", "jobs")
    os.mkfifo(os.path.join(jobs, "5", "n9.json"))
    os.makedirs(os.path.join(site.store, "c1", "nodes"), exist_ok=True)
    os.mkfifo(os.path.join(site.store, "c1", "nodes", "n9.json"))
    os.makedirs(os.path.join(jobs, "6"))
    os.mkfifo(os.path.join(jobs, "6", "n1.json"))
    hung, crashed, report = _run_head(site, tmp_path)
    assert report is not None and report["num_nodes"] == 2
    # The hung mount: every command gives up with exit 4 after store_timeout.
    release = threading.Event()
    real = reader._listdir
    monkeypatch.setattr(reader, "_listdir", lambda p, w: release.wait() and real(p, w))
    monkeypatch.setenv("EFAJOB_STORE_TIMEOUT", "0.5")
    bound = threading.Timer(300, release.set)
    bound.start()
    try:
        for args in HEAD:
            args = [a.replace("{page}", str(tmp_path / "page2.html")) for a in args]
            r = CliRunner().invoke(main, args + ["--store", site.store])
            hung += r.exit_code != 4 or "answered nothing" not in r.output
            crashed += r.exception is not None and not isinstance(r.exception, SystemExit)
    finally:
        release.set()
        bound.cancel()
    site.row("store hung", "3 FIFOs in the store; a listing that never returns",
             hung=hung, crashed=crashed, exact_required=True).check()


def _deep(n):
    return ("[" * n + "]" * n).encode()


def test_hostile_store_contents(tmp_path):
    """What anyone who can write into the store (a job's owner, with private_records) can put
    there: huge, deep and symlinked records, huge numbers, names that are not names, a job
    directory that is a symlink. The head-node commands finish, none with a traceback, and
    the real records are still read exactly."""
    site = Site(tmp_path, hosts=["n1", "n2"])
    site.job("5", ["n1", "n2"])
    d = os.path.join(site.store, "c1", "jobs", "5")
    with open(os.path.join(d, "n3.json"), "wb") as f:
        f.write(_deep(100_000))
    with open(os.path.join(d, "n4.json"), "wb") as f:
        f.write(b'{"schema": "efajob/job-node", "totals": {"tx_bytes": 1' + b"0" * 5000 + b"}}")
    with open(os.path.join(d, "n5.json"), "wb") as f:
        f.truncate(80 << 20)  # 80 MB of NULs
    with open(os.path.join(d, "n6.json"), "w") as f:
        json.dump({"host": "<script>alert(1)</script>", "job_id": "5; rm -rf /"}, f)
    os.symlink("/etc/passwd", os.path.join(d, "n7.json"))
    os.symlink("/etc", os.path.join(site.store, "c1", "jobs", "66"))
    os.makedirs(os.path.join(site.store, "c1", "nodes"), exist_ok=True)
    with open(os.path.join(site.store, "c1", "nodes", "n8.json"), "wb") as f:
        f.write(_deep(50_000))
    with open(os.path.join(site.store, "c1", "nodes", "gpu.3.json"), "w") as f:
        f.write('{"node": "gpu.3\\n", "time": 1e400}')
    hung, crashed, report = _run_head(site, tmp_path)
    assert report is not None and report["num_nodes"] == 2
    page = open(tmp_path / "page.html").read()
    assert "<script>alert" not in page
    # Job ids a shell or a path would act on are refused (exit 2), never used.
    for bad in ("5;id", "../../etc", "5\n6", "$(id)"):
        verdict, p = head_command(["report", bad, "--no-slurm"], site.store)
        hung += verdict == "hung"
        crashed += verdict == "crashed" or p.returncode != 2
    site.row("hostile store contents",
             "deep (100k), huge-number, 80 MB, symlinked records; symlinked job dir; bad ids",
             hung=hung, crashed=crashed, exact_required=True).check()


def test_privacy_as_two_real_users():
    """tests/test_privacy.py's scenario as one row: a running job (the daemon's node status,
    run dir, local store) and a finished one, read by their owner and by another user."""
    import tempfile
    import shutil

    import test_privacy as tp
    from efajob.hooks.outbox import deliver_one
    from jobsim import NodePool, healthy, job_records

    from conftest import require

    require("root (to act as other users)", os.geteuid() == 0)
    root = tempfile.mkdtemp(prefix="efajob-faults-privacy-", dir="/tmp")
    os.chmod(root, 0o755)
    leaks = []
    try:
        cfg, conf = tp.start_job_and_daemon(root, private=True)
        pool = NodePool(os.path.join(root, "pool"))
        recs = job_records(pool, healthy(2), job_id="41", cluster="c1", user="nobody")
        for rec in recs:
            deliver_one(cfg, dict(rec, uid=tp.OWNER))
        for args in (["status"], ["report", "42", "--no-slurm"], ["report", "41", "--no-slurm"],
                     ["jobs"]):
            out = tp.as_user(tp.OTHER, tp.cli, *args, "--config", conf).output
            if "nobody" in out or "secretpart" in out:
                leaks.append(" ".join(args))
        mine = tp.as_user(tp.OWNER, tp.cli, "report", "41", "--config", conf, "--no-slurm",
                          "--format", "json")
        found = len(json.loads(mine.output)["nodes"]) if mine.exit_code == 0 else 0
    finally:
        shutil.rmtree(root, ignore_errors=True)
    row = record(Row("privacy, two real users", f"private_records; leaks to the other user: "
                     f"{len(leaks)}", 2, 2, found, found, 0, 0, 0))
    row.check()
    assert leaks == []


def test_cloudwatch_throttling_and_down_for_most_of_an_hour(tmp_path):
    """Throttling for 30 minutes, then connection refused for 15, then back: every minute's
    datapoints are delivered, oldest first, and nothing grows without bound meanwhile (the
    in-memory queue and the disk spool, which holds at most spool_max_bytes). Fake clock."""
    from botocore.exceptions import EndpointConnectionError

    from tests.test_cw_sink import FakeClock, FakeCW, Node, client_error, make_cfg, node_sum, \
        sink_for

    clock = FakeClock()
    phase = {"now": "throttle"}

    def fail(kw):
        if phase["now"] == "throttle":
            return client_error("Throttling")
        if phase["now"] == "down":
            return EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
        return None

    cw = FakeCW(fail)
    cfg = make_cfg(tmp_path, spool_max_bytes=1 << 20)
    sink = sink_for(tmp_path, cw=cw, clock=clock, backoff_base=1.0, backoff_cap=60.0, cfg=cfg)
    node = Node()
    first_tick = node.wall + 1.0
    sent, queued_max, spool_max = 0, 0, 0
    for minute in range(60):
        phase["now"] = "throttle" if minute < 30 else "down" if minute < 45 else "up"
        for _ in range(60):
            sink.on_tick(node.step(1.0, {"tx_bytes": 1000}))
            sent += 1000 * len(node.values)
        sink.process()
        clock.t += 60
        st = sink.stats()
        queued_max = max(queued_max, st["queued"])
        spool_max = max(spool_max, st.get("spool_bytes", 0))
    for _ in range(100):  # drain what is left (the spool is sent a request per round)
        sink.process()
        clock.t += 60
        if not sink.stats()["spooled_now"]:
            break
    sink.close_period()
    sink.process()
    st = sink.stats()
    delivered = int(node_sum(cw.datums()))
    stamps = [c["MetricData"][0]["Timestamp"] for c in cw.calls]
    # Records here: the node's one-minute datapoints; exact when the bytes add up to the last.
    minutes = len({d["Timestamp"] for d in cw.datums() if d["MetricName"] == "tx_bytes"})
    exact = delivered == sent
    periods = int(node.wall // 60) - int(first_tick // 60) + 1  # minutes the ticks fell in
    row = record(Row("CloudWatch throttled, then down", "30 min Throttling + 15 min connection "
                     f"refused; queue max {queued_max}, spool max {spool_max:,} B of 1 MiB; "
                     "records: minutes", 0, periods, minutes, minutes if exact else 0, 0,
                     0 if exact else minutes, 0))
    row.check()
    assert stamps == sorted(stamps) and st.get("spool_dropped", 0) == 0
    assert spool_max <= 1 << 20 and queued_max <= 4


def _rss_kb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() // 1024


def test_daemon_at_10hz_for_10_minutes(tmp_path):
    """6,000 ticks of the real sampler on a p5 tree (1,088 counter files) with the daemon's
    own clock advanced 0.1 s a tick, the worker's jobs (status file, delivery, reconcile) run
    as they fall due, traffic every second: resident memory and CPU per minute stay flat.
    Memory is the verdict (it does not depend on the machine's speed): at most 4 MiB of
    growth after the first minute. CPU per minute is printed; a minute may cost at most 3x
    the cheapest (a leak in per-tick work grows without bound, noise does not)."""
    from efajob.config import build_config
    from efajob.daemon.loop import Daemon
    from efajob.sim import build_node

    class Clock:
        def __init__(self, t):
            self.t = t

        def __call__(self):
            return self.t

    node = build_node(str(tmp_path / "sys"), "p5.48xlarge")
    cfg = build_config({"cluster": "c1", "sysfs_root": str(tmp_path / "sys"),
                        "run_dir": str(tmp_path / "run"), "state_dir": str(tmp_path / "state"),
                        "store": str(tmp_path / "store"), "interval": 0.1,
                        "instance_type": "p5.48xlarge"}, env={}, node="n1")
    mono, wall = Clock(5000.0), Clock(time.time())
    d = Daemon(cfg, clock=mono, wall_clock=wall, sinks=[], worker=False)
    d.start()
    rss, cpu = [], []
    try:
        for _minute in range(10):
            c0 = time.process_time()
            for tick in range(600):
                if tick % 10 == 0:
                    node.traffic(200, 100, 1.0)
                d.tick()
                mono.t += 0.1
                wall.t += 0.1
                if tick % 150 == 0:
                    d.run_worker_once()
            cpu.append(time.process_time() - c0)
            rss.append(_rss_kb())
    finally:
        d.close()
    growth_mb = (max(rss[1:]) - rss[0]) / 1024
    cpu_txt = ", ".join(f"{c:.1f}" for c in cpu)
    row = record(Row("daemon 10 Hz x 10 min", f"6,000 ticks, p5; RSS +{growth_mb:.1f} MB after "
                     f"minute 1; CPU s per minute: {cpu_txt}", 0, 0, 0, 0, 0, 0, 0))
    row.check()
    assert growth_mb <= 4.0, rss
    assert max(cpu) <= 3 * min(cpu), cpu
