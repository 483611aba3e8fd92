"""`efajob dashboard serve` at cluster scale: 0, 1,000 and 10,000 simulated node status files
(p5.48xlarge, 32 devices each, with faults: sim/statusfleet.py), served by the real server on
127.0.0.1, measured in one run:

- the model build in the refresh thread: cold (every file read and judged), and an update
  (a refresh after the daemons rewrote the files they write between two refreshes: 2 s of a
  15 s status_interval, 2/15 of them);
- per request: the first page (`/`), page 50 of the table sorted by throughput, a filtered
  view, `/api/problems` and a node page: server time (request sent to last byte, loopback),
  raw and gzip size;
- headless Chromium's time to load and lay out the first page (`--dump-dom`), minus its
  time on an empty page (the browser's own start), when Chromium is installed.

Targets (issue 17), 10,000 nodes: first page <= 300 kB gzip, <= 200 ms per page and <= 100 ms
per update, Chromium <= 1 s; 1,000 nodes: within 1.5x of an empty page.

    python bench/dashboard.py [--nodes 0,1000,10000] [--rounds 5] [--no-chromium] [--json]
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Dict, List, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from efajob.config import build_config  # noqa: E402
from efajob.daemon.nodestatus import encode_node_status  # noqa: E402
from efajob.dashboard.server import Collector, DashboardServer  # noqa: E402
from efajob.sim.statusfleet import write_fleet  # noqa: E402

CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")
PATHS = ("/", "/?sort=tx&desc=1&page=5", "/?state=warn&q=gpu-dy-p5-[1-5000]", "/api/problems",
         "/node/c1/gpu-dy-p5-37")


def get(port: int, path: str, gz: bool) -> Tuple[float, int, bytes]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    t = time.perf_counter()
    c.request("GET", path, headers={"Accept-Encoding": "gzip"} if gz else {})
    r = c.getresponse()
    body = r.read()
    dt = time.perf_counter() - t
    c.close()
    if r.status != 200:
        raise RuntimeError(f"{path}: HTTP {r.status}")
    return dt, r.status, body


def rewrite_some(store: str, nodes: int, share: float, now: float) -> None:
    """What the daemons write between two refreshes: `share` of the files, new times."""
    d = os.path.join(store, "c1", "nodes")
    names = sorted(os.listdir(d))[: int(len(os.listdir(d)) * share)]
    for name in names:
        p = os.path.join(d, name)
        with open(p, encoding="utf-8") as f:
            doc = json.load(f)
        doc["time"] = now
        with open(p + ".tmp", "wb") as f:
            f.write(encode_node_status(doc))  # as the daemon writes it
        os.replace(p + ".tmp", p)


def chromium_load(url: str, profile: str) -> float:
    exe = next((p for p in CHROMIUM if os.path.exists(p)), None)
    if exe is None:
        return float("nan")
    t = time.perf_counter()
    subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
                   capture_output=True, timeout=600, check=True)
    return time.perf_counter() - t


def measure(n: int, rounds: int, chromium: bool) -> Dict[str, object]:
    root = tempfile.mkdtemp(prefix="efajob-bench-dash-")
    try:
        store = os.path.join(root, "store")
        os.makedirs(os.path.join(store, "c1", "nodes"))
        now = time.time()
        t = time.perf_counter()
        write_fleet(store, "c1", n, now, drop_every=37, missing_every=101, stale_every=211)
        write_s = time.perf_counter() - t
        cfg = build_config({"cluster": "c1", "store": store, "status_interval": 15.0}, env={},
                           node="head")
        col = Collector(cfg, ttl=3600.0)  # the bench decides when the model is rebuilt
        t = time.perf_counter()
        snap = col.collect()
        cold = time.perf_counter() - t
        updates = []
        for _ in range(rounds):
            rewrite_some(store, n, 2 / 15, time.time())
            t = time.perf_counter()
            snap = col.collect()
            updates.append(time.perf_counter() - t)
        col._snap = (col.mono(), snap)  # serve this model: requests only slice and render
        srv = DashboardServer("127.0.0.1", 0, col, refresh=10)
        th = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        th.start()
        port = srv.server_address[1]
        out: Dict[str, object] = {"nodes": n, "write_s": write_s, "cold_build_s": cold,
                                  "update_build_s": statistics.median(updates), "paths": {}}
        paths = PATHS if n else PATHS[:1] + PATHS[3:4]
        for path in paths:
            times = [get(port, path, True)[0] for _ in range(rounds)]
            raw = get(port, path, False)[2]
            gz = get(port, path, True)[2]
            out["paths"][path] = {"server_ms": statistics.median(times) * 1e3,  # type: ignore[index]
                                  "raw_bytes": len(raw), "gzip_bytes": len(gz)}
        if chromium:
            profile = os.path.join(root, "profile")
            url = f"http://127.0.0.1:{port}/"
            chromium_load("about:blank", profile)  # the profile's first start
            blank = statistics.median(chromium_load("about:blank", profile) for _ in range(3))
            page = statistics.median(chromium_load(url, profile) for _ in range(3))
            out["chromium_s"] = page - blank
            out["chromium_blank_s"] = blank
        srv.shutdown()
        srv.server_close()
        return out
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", default="0,1000,10000")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--no-chromium", action="store_true")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    res: List[Dict[str, object]] = [measure(int(x), a.rounds, not a.no_chromium)
                                    for x in a.nodes.split(",")]
    if a.json:
        print(json.dumps(res, indent=1))
        return 0
    print("efajob dashboard serve, p5.48xlarge x 32 devices, faults every 37th/101st/211th node")
    for r in res:
        print(f"  {r['nodes']:6,d} nodes  model: cold {r['cold_build_s']:.2f} s, "
              f"update {r['update_build_s'] * 1e3:.0f} ms"
              + (f"; Chromium first render {r['chromium_s'] * 1e3:.0f} ms" if "chromium_s" in r else ""))
        for path, m in r["paths"].items():  # type: ignore[attr-defined]
            print(f"      {path:<38} {m['server_ms']:7.1f} ms  {m['raw_bytes'] / 1000:8.1f} kB raw"
                  f"  {m['gzip_bytes'] / 1000:7.1f} kB gzip")
    for line in target_lines(res):
        print(line)
    load = os.getloadavg()[0]
    print(f"  (load average {load:.1f} on {os.cpu_count()} cores during the run)")
    return 0


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def target_lines(res: List[Dict[str, object]]) -> List[str]:
    """Issue 17's targets against this run: 10,000 nodes' page, requests, update and
    Chromium; 1,000 nodes against the empty page (gzip size, server time, Chromium's load
    with its start, which is what a user waits for)."""
    by = {r["nodes"]: r for r in res}
    out = ["  targets:"]
    big = by.get(10000)
    if big is not None:
        paths: Dict[str, Dict[str, float]] = big["paths"]  # type: ignore[assignment]
        gz = paths["/"]["gzip_bytes"] / 1000
        worst = max(m["server_ms"] for m in paths.values())
        upd = big["update_build_s"] * 1e3  # type: ignore[operator]
        out.append(f"    10,000 nodes: first page {gz:.0f} kB gzip (<= 300: {_verdict(gz <= 300)}), "
                   f"slowest request {worst:.0f} ms (<= 200: {_verdict(worst <= 200)}), "
                   f"update {upd:.0f} ms (<= 100: {_verdict(upd <= 100)})")
        if "chromium_s" in big:
            c = big["chromium_s"]  # type: ignore[assignment]
            out.append(f"    10,000 nodes: Chromium first render {c * 1e3:.0f} ms "  # type: ignore[operator]
                       f"(<= 1000: {_verdict(c <= 1.0)})")  # type: ignore[operator]
    one, empty = by.get(1000), by.get(0)
    if one is not None and empty is not None:
        a: Dict[str, float] = one["paths"]["/"]  # type: ignore[index]
        b: Dict[str, float] = empty["paths"]["/"]  # type: ignore[index]
        size, server = a["gzip_bytes"] / b["gzip_bytes"], a["server_ms"] / b["server_ms"]
        line = (f"    1,000 nodes vs empty: gzip size {size:.1f}x, server time {server:.1f}x")
        if "chromium_s" in one and "chromium_s" in empty:
            load = ((one["chromium_blank_s"] + one["chromium_s"])  # type: ignore[operator]
                    / (empty["chromium_blank_s"] + empty["chromium_s"]))  # type: ignore[operator]
            line += f", Chromium load with its start {load:.2f}x (<= 1.5x: {_verdict(load <= 1.5)})"
        out.append(line)
    return out if len(out) > 1 else []


if __name__ == "__main__":
    sys.exit(main())
