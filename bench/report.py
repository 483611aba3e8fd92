"""`efajob report` on huge jobs: N nodes x 32 EFA devices (p5.48xlarge), one-hour records.

Writes a job store in a temp dir with one record per node, each with 32 devices x 22 port and
12 device counters and a full 500-point time series (what the epilog writes for a job of an
hour or more; a healthy job but for one straggler), then runs, one run each:

- `efajob report JOB --no-slurm` (text) as its own process for each size, its wall time,
  CPU time and peak RSS (the child's own rusage, os.wait4), against the floor: a process of
  the same interpreter that reads and `json.loads` every record, nothing else;
- the other formats (JSON, CSV, HTML) on the largest job.

Targets (issue 15): 1,024 nodes <= 1 s, 4,096 nodes <= 4 s, peak RSS <= 256 MB at 4,096 nodes,
in a non-editable install: an editable one's import hook costs every process start. The bench
builds one (`python -m venv` + `pip install .` of this checkout, in the temp dir) unless
`--python` names the interpreter of an install to measure, and says which it measured.

    python bench/report.py [--nodes 1024,4096] [--python VENV/bin/python] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Dict, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from efajob.node.instances import INSTANCE_TYPES  # noqa: E402
from efajob.hooks.records import JobIdentity, build_record  # noqa: E402
from efajob.node.counters import is_device_error  # noqa: E402
from efajob.sim import DEVICE_COUNTERS, PORT_COUNTERS  # noqa: E402
from efajob.node.readings import DeviceReading, Snapshot  # noqa: E402

TARGETS_S = {1024: 1.0, 4096: 4.0}
TARGET_RSS_MB = 256.0  # at 4,096 nodes
HOUR = 3600
T0 = 1714557600.0


class Row:
    """A daemon row (the attributes build_record reads)."""

    __slots__ = ("mono", "wall", "seconds", "deltas", "device_tx_bytes", "device_rx_bytes",
                 "jobs", "resets")

    def __init__(self, i: int, per_dev: int, devs):
        self.mono, self.wall, self.seconds = 100.0 + i, T0 + i, 1.0
        v = per_dev * (1 + (i % 7) / 10)
        self.deltas = {"tx_bytes": int(v * len(devs)), "rx_bytes": int(v * len(devs))}
        self.device_tx_bytes = {d: int(v) for d in devs}
        self.device_rx_bytes = dict(self.device_tx_bytes)
        self.jobs, self.resets = ("7000",), ()


def template(job_id: str, nodes: int) -> dict:
    """One realistic record of an hour-long job on a p5 node: 400 Gbps each way, RDMA write,
    a few SRD retransmits, no drops."""
    it = INSTANCE_TYPES["p5.48xlarge"]
    per_dev = int(400e9 / 8 / 32)  # bytes per second per device
    moved = per_dev * HOUR
    delta = dict.fromkeys(PORT_COUNTERS, 0)
    delta.update(tx_bytes=moved, rx_bytes=moved, tx_pkts=moved // 8800, rx_pkts=moved // 8800,
                 send_bytes=moved // 50, recv_bytes=moved // 50, send_wrs=moved // 50 // 8192,
                 recv_wrs=moved // 50 // 8192, rdma_write_bytes=moved * 49 // 50,
                 rdma_write_recv_bytes=moved * 49 // 50, rdma_write_wrs=moved // 262144,
                 retrans_pkts=moved // 8800 // 100000, retrans_bytes=moved // 100000)

    def snap(t: float, end: bool) -> Snapshot:
        devs = {d: DeviceReading(d, 1, {n: 10**12 + (delta[n] if end else 0) for n in PORT_COUNTERS},
                                 {n: 10**6 + (3600 if end and not is_device_error(n) else 0)
                                  for n in DEVICE_COUNTERS})
                for d in it.device_names}
        return Snapshot(mono=100.0 + t, wall=T0 + t, devices=devs,
                        net={"eth0": {"rx_bytes": 10**9, "tx_bytes": 10**9 + (10**8 if end else 0)}})

    rows = [Row(i, per_dev, it.device_names) for i in range(1, HOUR + 1)]
    ident = JobIdentity(cluster="bench", job_id=job_id, restart=0, host="h0", user="bench",
                        uid=1000, partition="p5", account="ml", nodelist=f"h[0-{nodes - 1}]",
                        num_nodes=nodes, exit_code="0:0")
    return build_record(ident, snap(0, False), snap(HOUR, True), rows, instance_type=it.name)


def write_job(store: str, job_id: str, nodes: int) -> None:
    base = template(job_id, nodes)
    d = os.path.join(store, "bench", "jobs", job_id)
    os.makedirs(d)
    for i in range(nodes):
        rec = dict(base, host=f"h{i}")
        if i == nodes - 1:  # one straggler, so the findings have work to do
            rec = json.loads(json.dumps(rec))
            for dev in rec["devices"]:
                dev["counters"] = {k: v // 4 for k, v in dev["counters"].items()}
            rec["totals"] = {k: v // 4 for k, v in rec["totals"].items()}
        with open(os.path.join(d, f"h{i}.json"), "w") as f:
            json.dump(rec, f, separators=(",", ":"))


FLOOR = """
import json, os, sys
d = sys.argv[1]
for name in sorted(os.listdir(d)):
    with open(os.path.join(d, name), "rb") as f:
        json.loads(f.read())
"""


def run(argv, env=None) -> Tuple[float, float, float]:
    """(wall s, CPU s, peak RSS MB) of one child process, from its own rusage."""
    t = time.perf_counter()
    # cwd: not this checkout, whose efajob/ a `python -c` would import instead of the install's.
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                         cwd=tempfile.gettempdir())
    _, status, ru = os.wait4(p.pid, 0)
    took = time.perf_counter() - t
    err = p.stderr.read().decode() if p.stderr else ""
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise SystemExit(f"{argv} failed: {err[-2000:]}")
    return took, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024.0  # Linux: kB


def install(python: str, root: str) -> Tuple[str, str]:
    """(interpreter, what it is): `python` as given, or a fresh venv with this checkout
    pip-installed (not editable) under `root`."""
    if python:
        return python, describe_install(python)
    venv = os.path.join(root, "venv")
    subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=300)
    py = os.path.join(venv, "bin", "python")
    subprocess.run([py, "-m", "pip", "install", "-q", REPO], check=True, timeout=900,
                   stdout=subprocess.DEVNULL, cwd=root)
    return py, describe_install(py)


def describe_install(py: str) -> str:
    out = subprocess.run([py, "-c", "import efajob, sys; print(efajob.__file__); "
                          "print(sys.version.split()[0])"],
                         capture_output=True, text=True, timeout=60, check=True,
                         cwd=tempfile.gettempdir()).stdout.split()
    where, version = out[0], out[1]
    kind = "editable install (its import hook costs every start)" if \
        os.path.dirname(os.path.dirname(where)) == REPO else "non-editable install"
    return f"{kind}, efajob from {os.path.dirname(where)}, python {version}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", default="1024,4096", help="comma-separated job sizes")
    ap.add_argument("--python", default="", help="interpreter of an efajob install to measure "
                    "(default: build a non-editable one)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = ap.parse_args()
    sizes = sorted(int(x) for x in args.nodes.split(","))
    root = tempfile.mkdtemp(prefix="efajob-bench-report-")
    try:
        py, what = install(args.python, root)
        store = os.path.join(root, "store")
        t0 = time.perf_counter()
        for n in sizes:
            write_job(store, str(7000 + n), n)
        build_s = time.perf_counter() - t0
        big = max(sizes)
        jobdir = os.path.join(store, "bench", "jobs", str(7000 + big))
        rec_bytes = os.path.getsize(os.path.join(jobdir, "h0.json"))
        env = dict(os.environ, EFAJOB_CONFIG="")
        load0 = os.getloadavg()

        # The console script, as users run it (`python -m efajob` where there is none).
        script = os.path.join(os.path.dirname(py), "efajob")
        cmd = [script] if os.path.exists(script) else [py, "-m", "efajob"]

        def report(n: int, fmt: str) -> Tuple[float, float, float]:
            return run(cmd + ["report", str(7000 + n), "--store", store, "--no-slurm",
                              "--format", fmt], env)

        report(sizes[0], "text")  # the page cache and the interpreter's own files warm
        res: Dict[str, Dict[str, Tuple[float, float, float]]] = {}
        for n in sizes:
            res[str(n)] = {"text": report(n, "text"),
                           "json.loads": run([py, "-c", FLOOR,
                                              os.path.join(store, "bench", "jobs", str(7000 + n))])}
        for f in ("json", "csv", "html"):
            res[str(big)][f] = report(big, f)
        load1 = os.getloadavg()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        print(json.dumps({"install": what, "record_bytes": rec_bytes, "build_store_s": build_s,
                          "runs": {n: {k: {"wall_s": w, "cpu_s": c, "peak_rss_mb": m}
                                       for k, (w, c, m) in r.items()} for n, r in res.items()},
                          "load": [load0, load1], "cores": os.cpu_count(),
                          "targets_s": TARGETS_S, "target_rss_mb": TARGET_RSS_MB}, indent=2))
        return 0
    print(f"efajob report, p5.48xlarge x 32 devices, 1-hour records ({rec_bytes / 1000:.0f} kB each, "
          f"500-point series), one run each")
    print(f"  measured: {what}")
    print(f"  store written in {build_s:.1f} s")
    for n in sizes:
        r = res[str(n)]
        for k, (w, c, m) in r.items():
            label = "json.loads floor" if k == "json.loads" else f"report --format {k}"
            line = f"  {n:5d} nodes  {label:<21} {w:6.2f} s wall {c:6.2f} s CPU {m:6.0f} MB peak RSS"
            if k != "json.loads":
                fw, fc, _ = r["json.loads"]
                line += f"  ({w / fw:.2f}x / {c / fc:.2f}x the floor)"
            if k == "text" and n in TARGETS_S:
                # Judged on wall time and, because a loaded machine adds waiting to it, on
                # CPU time too: both are printed.
                mem = n != 4096 or m <= TARGET_RSS_MB
                line += (f"  target <= {TARGETS_S[n]:.0f} s" + (f", {TARGET_RSS_MB:.0f} MB" if n == 4096 else "")
                         + f": wall {'met' if w <= TARGETS_S[n] and mem else 'NOT met'}, "
                         f"CPU {'met' if c <= TARGETS_S[n] and mem else 'NOT met'}")
            print(line)
    print(f"  (load average {load0[0]:.1f} before, {load1[0]:.1f} after, on {os.cpu_count()} cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
