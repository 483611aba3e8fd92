"""`efajob report` on big jobs: N nodes x 32 EFA devices (p5.48xlarge), one-hour records.

Writes a job store in a temp dir with one record per node, each with 32 devices x 22 port and
12 device counters and a full 500-point time series (what the epilog writes for a job of an
hour or more), then times, from one run:

- the report in-process (find + read + build + findings + render text), for 64, 256 and 1,024
  nodes, with the ratio per node to the 64-node job (flat ratios = linear growth);
- the other renderers (JSON, CSV, HTML) on the largest job;
- `efajob report JOB --no-slurm [--format F]` as a subprocess (interpreter start and imports
  included) on the largest job. Target (issue 6): <= 2 s for 1,024 nodes (text).

    python bench/report.py [--nodes 64,256,1024] [--rounds 3] [--json]
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from efajob.config import Config  # noqa: E402
from efajob.node.instances import INSTANCE_TYPES  # noqa: E402
from efajob.hooks.records import JobIdentity, build_record  # noqa: E402
from efajob.node.counters import is_device_error  # noqa: E402
from efajob.sim import DEVICE_COUNTERS, PORT_COUNTERS  # noqa: E402
from efajob.node.readings import DeviceReading, Snapshot  # noqa: E402

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


def time_report(cfg: Config, job_id: str, fmt: str = "text") -> float:
    from efajob.cli.main import main  # noqa: F401  (registers cli_report)
    from efajob.report.assemble import build_job_report
    from efajob.report.render.csv import render_csv
    from efajob.report.render.html import render_html
    from efajob.report.render.text import render_text
    from efajob.report.render.json import render_json

    render = {"text": render_text, "json": render_json, "csv": render_csv, "html": render_html}[fmt]
    gc.collect()
    gc.disable()  # as the `efajob report` command does
    try:
        t0 = time.perf_counter()
        r = build_job_report(cfg, job_id, use_slurm=False)
        out = render(r)
        took = time.perf_counter() - t0
    finally:
        gc.enable()
    assert len(r.nodes) > 0 and out
    return took


def time_cli(store: str, job_id: str, fmt: str) -> Tuple[float, float]:
    """(wall, CPU) seconds of one `efajob report` process. On a shared machine the wall time
    includes waiting for a core; the CPU time (user + system) does not."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", "from efajob.cli.main import main; main()", "report",
                        job_id, "--store", store, "--no-slurm", "--format", fmt],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120,
                       env=dict(os.environ, EFAJOB_CONFIG=""))
    took = time.perf_counter() - t
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        raise SystemExit(p.stderr.decode()[-2000:])
    return took, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", default="64,256,1024", help="comma-separated job sizes")
    ap.add_argument("--rounds", type=int, default=3, help="runs per size (median)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = ap.parse_args()
    sizes = [int(x) for x in args.nodes.split(",")]
    root = tempfile.mkdtemp(prefix="efajob-bench-report-")
    try:
        store = os.path.join(root, "store")
        t0 = time.perf_counter()
        for n in sizes:
            write_job(store, str(7000 + n), n)
        build_s = time.perf_counter() - t0
        big = max(sizes)
        rec_bytes = os.path.getsize(os.path.join(store, "bench", "jobs", str(7000 + big), "h0.json"))
        cfg = Config(store=store, cluster="bench")
        time_report(cfg, str(7000 + sizes[0]))  # warm imports and the page cache
        res = {}
        for n in sizes:
            res[n] = statistics.median(time_report(cfg, str(7000 + n)) for _ in range(args.rounds))
        fmts = {f: statistics.median(time_report(cfg, str(7000 + big), f) for _ in range(args.rounds))
                for f in ("json", "csv", "html")}
        cli = {}
        for f in ("text", "json", "csv", "html"):
            runs = [time_cli(store, str(7000 + big), f) for _ in range(args.rounds)]
            cli[f] = (statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs))
        load = os.getloadavg()[0]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    base = res[sizes[0]] / sizes[0]
    if args.json:
        print(json.dumps({"record_bytes": rec_bytes, "build_store_s": build_s,
                          "report_s": {str(n): s for n, s in res.items()},
                          "per_node_ratio": {str(n): s / n / base for n, s in res.items()},
                          "formats_s": fmts, "cli_wall_cpu_s": cli, "load": load,
                          "target_s": 2.0}, indent=2))
        return 0
    print(f"efajob report, p5.48xlarge x 32 devices, 1-hour records ({rec_bytes / 1000:.0f} kB each, "
          f"500-point series; python {sys.version.split()[0]})")
    print(f"  store written in {build_s:.1f} s")
    for n in sizes:
        print(f"  {n:5d} nodes  in-process text  {res[n]:7.3f} s  ({res[n] / n * 1e3:.2f} ms/node, "
              f"per-node ratio to {sizes[0]} nodes {res[n] / n / base:.2f}x)")
    for f, s in fmts.items():
        print(f"  {big:5d} nodes  in-process {f:<5} {s:7.3f} s")
    for f, (wall, cpu) in cli.items():
        print(f"  {big:5d} nodes  `efajob report --format {f:<4}` {wall:6.3f} s wall, {cpu:6.3f} s CPU"
              + (f"  (target <= 2 s: {'met' if wall <= 2.0 else 'NOT met'})" if f == "text" else ""))
    print(f"  (load average {load:.1f} on {os.cpu_count()} cores during the run)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
