"""The node daemon's cost on a simulated p5.48xlarge at 1 Hz, and its local store's size and speed.

Runs three daemons side by side as real processes (`python -m efajob daemon`), each on
its own simulated p5 (32 EFA devices, 1,088 counter files) while this script injects traffic
into every tree each second (NCCL-like allreduce at a rate that changes every second):

  base        no sinks
  prometheus  Prometheus endpoint on, scraped every 15 s by this script (as a server would)
  +boto3      Prometheus on and the CloudWatch sink loaded, publishing to a local moto_server
              (`--moto`) or `--cloudwatch-endpoint`; otherwise boto3 imported and CloudWatch
              clients built in the daemon process, standing in for the sink's memory

and, beside them, the floor: a C program (bench/cfloor.py, compiled with `cc` at bench time)
that opens the same 1,088 counter files of the base daemon's tree and preads + parses all of
them once a second (more than the daemon reads: it reads the 384 device counters every 10 s);
without a compiler, a Python loop of `os.pread` stands in, and the output says so.

The measured window starts after warm-up, which the bench checks rather than assumes: every
daemon has stored rows, every endpoint has answered a first scrape, and with the real
CloudWatch sink its first PutMetricData has reached the endpoint (moto's request log) or,
against another endpoint, a minute has passed. It prints, per daemon: CPU % of one core
(utime + stime over the window), RSS at the end and its peak, and the ratio to the floor's
CPU. Targets (issue 15): CPU <= 0.5 % with the endpoint scraped every 15 s and the CloudWatch
sink on, <= 2x the floor's CPU in the same run, RSS <= 64 MB. The machine's load is printed.

Then the store: the rows the daemons stored are replayed into a fresh store for a whole day
(86,400 rows at 1 Hz, wall clock advancing, so minute rollups run) to print the store growth
per day, the insert cost per tick, and the time to fetch a 24 h (and a 1 h) window.

    python bench/daemon.py [--seconds 60] [--warmup 5] [--moto] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import cfloor  # noqa: E402  (bench/cfloor.py, beside this script)
from efajob.node.localstore import LocalStore, SampleRow  # noqa: E402
from efajob.sim import build_node  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
BOTO3_STANDIN = (
    "import sys, boto3; boto3.client('cloudwatch', region_name='us-east-1'); "
    "boto3.client('logs', region_name='us-east-1'); "
    "from efajob.cli.main import main; sys.argv[0] = 'efajob'; main()"
)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def rss_mb(pid: int) -> tuple:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1]) / 1024
    return out.get("VmRSS", 0.0), out.get("VmHWM", 0.0)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Run:
    def __init__(self, name: str, root: str, *, prometheus: bool, boto3: bool,
                 cloudwatch_endpoint: str = ""):
        self.name, self.root = name, root
        # The in-tree 6.17 layout (1,088 files): the configuration docs/performance.md reports.
        self.node = build_node(os.path.join(root, "sys"), "p5.48xlarge", driver="in-tree")
        self.port = free_port() if prometheus else None
        cfg = ['cluster = "bench"', f'sysfs_root = "{root}/sys"', f'run_dir = "{root}/run"',
               f'state_dir = "{root}/state"', f'store = "{root}/store"', "interval = 1.0",
               'instance_type = "p5.48xlarge"', 'log_level = "warning"']
        if prometheus:
            cfg += ["[prometheus]", "enabled = true", 'bind = "127.0.0.1"', f"port = {self.port}"]
        self.sink_note = ""
        if boto3:
            from efajob.sinks.registry import SINKS

            if "cloudwatch" in SINKS and cloudwatch_endpoint:
                # instance id/type given: no IMDS lookup (it would wait for a timeout off EC2)
                cfg += ["[cloudwatch]", "enabled = true", 'region = "us-east-1"',
                        f'endpoint_url = "{cloudwatch_endpoint}"', 'instance_id = "i-0bench"',
                        'instance_type = "p5.48xlarge"']
                self.sink_note = f"CloudWatch sink -> {cloudwatch_endpoint}"
                self.name = "prometheus+cloudwatch"
                boto3 = False
            else:
                self.sink_note = "boto3 stand-in"
        with open(os.path.join(root, "config.toml"), "w") as f:
            f.write("\n".join(cfg) + "\n")
        argv = ["daemon", "--config", os.path.join(root, "config.toml"), "--node", "bench"]
        cmd = ([sys.executable, "-c", BOTO3_STANDIN] if boto3 else
               [sys.executable, "-m", "efajob"]) + argv
        self.stderr = open(os.path.join(root, "stderr"), "w")
        # Dummy credentials: only ever sent to the local endpoint.
        env = dict(os.environ, PYTHONPATH=REPO, AWS_ACCESS_KEY_ID="bench",
                   AWS_SECRET_ACCESS_KEY="bench", AWS_EC2_METADATA_DISABLED="true")
        self.proc = subprocess.Popen(cmd, cwd=REPO, stderr=self.stderr, stdout=subprocess.DEVNULL,
                                     env=env)
        self.cpu0 = self.t0 = 0.0
        self.durations = {"sample": [], "tick": []}
        self.sink_errors = 0.0

    def mark(self) -> None:
        self.cpu0, self.t0 = cpu_seconds(self.proc.pid), time.monotonic()

    def result(self) -> dict:
        cpu = cpu_seconds(self.proc.pid) - self.cpu0
        wall = time.monotonic() - self.t0
        rss, hwm = rss_mb(self.proc.pid)
        med = {k: statistics.median(v) * 1000 if v else None for k, v in self.durations.items()}
        return {"name": self.name, "cpu_percent": 100.0 * cpu / wall, "rss_mb": rss,
                "peak_rss_mb": hwm, "seconds": wall, "note": self.sink_note,
                "sample_ms": med["sample"], "tick_ms": med["tick"], "sink_errors": self.sink_errors}

    def scrape(self) -> bool:
        if not self.port:
            return False
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
                text = r.read().decode()
        except OSError as e:
            print(f"scrape of {self.name} failed: {e}", file=sys.stderr)
            return False
        for line in text.splitlines():
            if line.startswith('efajob_daemon_errors_total{kind="sink"}'):
                self.sink_errors = float(line.split()[-1])
            for k in self.durations:
                if line.startswith(f"efajob_daemon_{k}_duration_seconds "):
                    self.durations[k].append(float(line.split()[1]))
        return True

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait(timeout=10)
        self.stderr.close()
        return rc


class Floor:
    """The C 1 Hz reader of one tree's counter files (or a Python loop without a compiler)."""

    PY_LOOP = ("import os, sys, time\n"
               "fds = [os.open(p, os.O_RDONLY) for p in open(sys.argv[1]).read().split()]\n"
               "t = time.monotonic()\n"
               "while True:\n"
               "    [int(os.pread(fd, 64, 0)) for fd in fds]\n"
               "    t += 1.0\n"
               "    time.sleep(max(0.0, t - time.monotonic()))\n")

    def __init__(self, sys_root: str, workdir: str):
        from efajob.node.sysfs import Sampler

        with Sampler(sys_root, include_net=False, rediscover_interval=float("inf")) as s:
            paths = list(s._paths)
        self.files = len(paths)
        exe = cfloor.build()
        self.name = "C floor" if exe else "Python floor"
        self.note = (f"C pread+strtoull of the same {len(paths)} files at 1 Hz" if exe else
                     f"no C compiler: a Python os.pread loop over the same {len(paths)} files")
        if exe:
            self.proc = cfloor.start_daemon(exe, paths, workdir)
        else:
            listing = os.path.join(workdir, "floor-paths.txt")
            with open(listing, "w") as f:
                f.write("\n".join(paths) + "\n")
            self.proc = subprocess.Popen([sys.executable, "-c", self.PY_LOOP, listing])
        self.cpu0 = self.t0 = 0.0

    def mark(self) -> None:
        self.cpu0, self.t0 = cpu_seconds(self.proc.pid), time.monotonic()

    def result(self) -> dict:
        cpu = cpu_seconds(self.proc.pid) - self.cpu0
        rss, hwm = rss_mb(self.proc.pid)
        return {"name": self.name, "cpu_percent": 100.0 * cpu / (time.monotonic() - self.t0),
                "rss_mb": rss, "note": self.note}

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def moto_puts(tmp: str) -> int:
    """PutMetricData-like requests moto_server has answered so far: werkzeug logs each request;
    the CloudWatch query API posts to `/` (PutLogEvents, the job records, goes to `/` too but
    only when a record is forwarded, which this bench never does)."""
    try:
        with open(os.path.join(tmp, "moto.log")) as f:
            return sum(1 for line in f if '"POST / HTTP/1.1" 200' in line)
    except OSError:
        return 0


def warm_up(runs, tmp: str, moto: bool, cloudwatch: bool, least: float, timeout: float = 240.0) -> dict:
    """Wait until every daemon is past its start-up: rows stored, a first scrape answered, the
    CloudWatch sink's first request sent. Returns what was waited for and how long."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    waited = {}
    while True:
        for r in runs:
            if r.proc.poll() is not None:
                raise SystemExit(f"daemon {r.name} exited: {open(r.stderr.name).read()}")
        if "rows" not in waited and all(
                os.path.exists(os.path.join(r.root, "state", "efajob.db")) for r in runs):
            waited["rows"] = time.monotonic() - t0
        if "rows" in waited and "scrape" not in waited:
            if all(r.scrape() for r in runs if r.port):
                waited["scrape"] = time.monotonic() - t0
        if cloudwatch and "cloudwatch" not in waited:
            if (moto_puts(tmp) > 0) if moto else time.monotonic() - t0 >= 65:
                waited["cloudwatch"] = time.monotonic() - t0
        done = "scrape" in waited and (not cloudwatch or "cloudwatch" in waited)
        if done and time.monotonic() - t0 >= least:
            waited["total"] = time.monotonic() - t0
            return waited
        if time.monotonic() > deadline:
            raise SystemExit(f"warm-up not finished after {timeout:g} s: {waited}")
        time.sleep(0.5)


def start_moto(tmp: str):
    """moto_server (from the venv) on a free 127.0.0.1 port; returns (process, endpoint)."""
    exe = os.path.join(os.path.dirname(sys.executable), "moto_server")
    port = free_port()
    log = open(os.path.join(tmp, "moto.log"), "w")
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    end = time.monotonic() + 30
    while time.monotonic() < end:
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=1).read()
            return proc, url
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("moto_server did not start")


def drive_traffic(runs, stop: threading.Event) -> None:
    """Every second, one second of traffic at a new random rate on every tree."""
    rnd = random.Random(3)
    next_at = time.monotonic()
    while not stop.is_set():
        gbps = rnd.uniform(100, 3000)
        for r in runs:
            r.node.traffic(gbps, gbps, 1.0, pattern="allreduce", seed=rnd.randrange(1 << 30))
        next_at += 1.0
        stop.wait(max(0.0, next_at - time.monotonic()))


def breakdown(tmp: str, rounds: int = 200) -> dict:
    """In-process CPU per tick (warm, back to back): sampling vs the rest, and one scrape."""
    from efajob.config import build_config
    from efajob.daemon.loop import Daemon
    from efajob.sinks.prometheus import PrometheusSink

    root = os.path.join(tmp, "inproc")
    node = build_node(os.path.join(root, "sys"), "p5.48xlarge", driver="in-tree")
    cfg = build_config({"sysfs_root": f"{root}/sys", "run_dir": f"{root}/run",
                        "state_dir": f"{root}/state", "store": f"{root}/store",
                        "instance_type": "p5.48xlarge"}, env={}, node="bench")
    sink = PrometheusSink(cfg, serve=False)
    d = Daemon(cfg, sinks=[sink], worker=False, lock=False)
    d.start()
    try:
        d.tick()
        node.traffic(800, 800, 1.0)
        t0 = time.process_time()
        for _ in range(rounds):
            d.tick()
        tick = (time.process_time() - t0) / rounds
        t0 = time.process_time()
        for _ in range(rounds):
            d.sampler.sample()
        sample = (time.process_time() - t0) / rounds
        t0 = time.process_time()
        n = max(1, rounds // 10)
        for _ in range(n):
            size = len(sink.exposition())
        scrape = (time.process_time() - t0) / n
    finally:
        d.close()
    return {"tick_ms": tick * 1000, "sample_ms": sample * 1000, "scrape_ms": scrape * 1000,
            "exposition_bytes": size}


def store_figures(db_paths, tmp: str) -> dict:
    """Replay real daemon rows into a fresh store for one day at 1 Hz; size and fetch times."""
    rows = []
    for p in db_paths:
        with LocalStore.open(p, readonly=True) as st:
            rows.extend(st.last_samples(10_000))
    if not rows:
        raise SystemExit("the daemons stored no rows")
    path = os.path.join(tmp, "day.db")
    st = LocalStore.open(path)
    wall0, n = 1_800_000_000.0, 86_400
    t0 = time.perf_counter()
    for i in range(n):
        r = rows[i % len(rows)]
        st.add_sample(SampleRow("boot", 1000.0 + i, wall0 + i, 1.0, r.deltas, r.device_tx_bytes,
                                r.device_rx_bytes, ("1234",) if i % 3600 < 1800 else (), r.resets))
    insert_us = (time.perf_counter() - t0) / n * 1e6
    counts = st.counts()
    st.close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    used = (db.execute("PRAGMA page_count").fetchone()[0] - db.execute("PRAGMA freelist_count").fetchone()[0]) \
        * db.execute("PRAGMA page_size").fetchone()[0]
    db.close()
    ro = LocalStore.open(path, readonly=True)
    times = {}
    for label, span in (("24h", n), ("1h", 3600)):
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            got = ro.samples_between("boot", 1000.0 + n - span - 0.5, 1000.0 + n)
            best = min(best, time.perf_counter() - t0)
        assert len(got) == span, (label, len(got))
        times[label] = best
    t0 = time.perf_counter()
    jobs = ro.jobs_between("boot", 0, 1e12)
    jobs_s = time.perf_counter() - t0
    ro.close()
    assert jobs == {"1234"}
    return {"rows": counts["samples"], "rollups": counts["rollup_1m"], "mb_per_day": used / 1e6,
            "bytes_per_row": used / n, "insert_us_per_tick": insert_us,
            "fetch_24h_s": times["24h"], "fetch_1h_s": times["1h"], "jobs_between_24h_s": jobs_s,
            "distinct_source_rows": len(rows)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0, help="measured seconds (>= 60 for the figures)")
    ap.add_argument("--warmup", type=float, default=5.0,
                    help="at least this many seconds before measuring; the bench also waits for "
                         "the first rows, scrape and CloudWatch request")
    ap.add_argument("--scrape-interval", type=float, default=15.0,
                    help="seconds between scrapes of the endpoint (15 is the common setting)")
    ap.add_argument("--cloudwatch-endpoint", default="", help="use the real CloudWatch sink against this endpoint")
    ap.add_argument("--moto", action="store_true",
                    help="start moto_server on 127.0.0.1 and use the real CloudWatch sink against it")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="efajob-bench-daemon-")
    runs = []
    stop = threading.Event()
    moto = None
    floor = None
    load0 = os.getloadavg()
    try:
        if args.moto:
            moto, args.cloudwatch_endpoint = start_moto(tmp)
        for name, prom, boto in (("base", False, False), ("prometheus", True, False),
                                 ("prometheus+boto3", True, True)):
            root = os.path.join(tmp, name.replace("+", "_"))
            os.makedirs(root)
            runs.append(Run(name, root, prometheus=prom, boto3=boto,
                            cloudwatch_endpoint=args.cloudwatch_endpoint))
        floor = Floor(os.path.join(runs[0].root, "sys"), tmp)
        driver = threading.Thread(target=drive_traffic, args=(runs, stop), daemon=True)
        driver.start()
        cloudwatch = any(r.name == "prometheus+cloudwatch" for r in runs)
        waited = warm_up(runs, tmp, moto is not None, cloudwatch, args.warmup)
        puts0 = moto_puts(tmp)
        for r in runs:
            r.mark()
        floor.mark()
        end = time.monotonic() + args.seconds
        next_scrape = time.monotonic()
        while time.monotonic() < end:
            if time.monotonic() >= next_scrape:
                for r in runs:
                    r.scrape()
                next_scrape += args.scrape_interval
            time.sleep(min(1.0, max(0.0, end - time.monotonic())))
        results = [r.result() for r in runs]
        floor_res = floor.result()
        puts = moto_puts(tmp) - puts0
        load1 = os.getloadavg()
        stop.set()
        driver.join(timeout=10)
        rcs = [r.stop() for r in runs]
        store = store_figures([os.path.join(r.root, "state", "efajob.db") for r in runs], tmp)
        inproc = breakdown(tmp)
    finally:
        stop.set()
        if floor is not None:
            floor.stop()
        if moto is not None:
            moto.terminate()
            try:
                moto.wait(timeout=10)
            except subprocess.TimeoutExpired:
                moto.kill()
                moto.wait(timeout=5)
        for r in runs:
            if r.proc.poll() is None:
                r.proc.kill()
                r.proc.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)

    out = {"python": sys.version.split()[0], "seconds": args.seconds, "daemons": results,
           "floor": floor_res, "warm_up": waited, "cloudwatch_requests_in_window": puts,
           "exit_codes": rcs, "store": store, "in_process": inproc,
           "loadavg": {"start": load0, "end": load1}, "cores": os.cpu_count()}
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"daemon on a simulated p5.48xlarge (32 devices), 1 Hz, {args.seconds:g} s measured, "
          f"python {out['python']}")
    print(f"  load average {load0[0]:.2f} at start, {load1[0]:.2f} at end, on {os.cpu_count()} cores")
    print("  warm-up " + ", ".join(f"{k} {v:.1f} s" for k, v in waited.items())
          + (f"; CloudWatch requests in the window: {puts}" if moto is not None else ""))
    fcpu = floor_res["cpu_percent"]
    print(f"  {floor_res['name']:<21} CPU {fcpu:5.2f} % of one core   RSS {floor_res['rss_mb']:5.1f} MB"
          f"  ({floor_res['note']})")
    for r in results:
        note = f"  ({r['note']})" if r["note"] else ""
        if r["tick_ms"] is not None:
            note += f"  [at scrapes: tick {r['tick_ms']:.1f} ms, sample {r['sample_ms']:.1f} ms]"
        if r["sink_errors"]:
            note += f"  SINK ERRORS: {r['sink_errors']:g}"
        ratio = r["cpu_percent"] / fcpu if fcpu > 0 else float("inf")
        print(f"  {r['name']:<21} CPU {r['cpu_percent']:5.2f} % of one core ({ratio:4.2f}x floor)"
              f"   RSS {r['rss_mb']:5.1f} MB (peak {r['peak_rss_mb']:5.1f} MB){note}")
    worst_cpu = max(r["cpu_percent"] for r in results)
    worst_rss = max(r["rss_mb"] for r in results)
    worst_ratio = worst_cpu / fcpu if fcpu > 0 else float("inf")
    print(f"  targets: CPU <= 0.5 % ({'met' if worst_cpu <= 0.5 else 'MISSED'}: {worst_cpu:.2f} %), "
          f"<= 2x the floor ({'met' if worst_ratio <= 2 else 'MISSED'}: {worst_ratio:.2f}x), "
          f"RSS <= 64 MB ({'met' if worst_rss <= 64 else 'MISSED'}: {worst_rss:.1f} MB)")
    print(f"  SIGTERM exit codes: {rcs}")
    b = inproc
    print(f"in process, warm, back to back: tick {b['tick_ms']:.2f} ms CPU, of which sampling "
          f"{b['sample_ms']:.2f} ms ({100 * b['sample_ms'] / b['tick_ms']:.0f} %); one scrape "
          f"{b['scrape_ms']:.1f} ms CPU ({b['exposition_bytes'] / 1024:.0f} KiB)")
    s = store
    print(f"local store, one day at 1 Hz ({s['rows']:,} rows replayed from {s['distinct_source_rows']} "
          f"real ones, {s['rollups']:,} minute rollups):")
    print(f"  growth per day        {s['mb_per_day']:7.1f} MB  ({s['bytes_per_row']:.0f} bytes/row)")
    print(f"  insert per tick       {s['insert_us_per_tick']:7.0f} us  (one transaction, rollups and retention included)")
    print(f"  fetch 24 h window     {s['fetch_24h_s'] * 1000:7.0f} ms  (86,400 rows -> SampleRow)")
    print(f"  fetch 1 h window      {s['fetch_1h_s'] * 1000:7.1f} ms")
    print(f"  jobs_between 24 h     {s['jobs_between_24h_s'] * 1000:7.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
