"""`efajob nodes` over a fleet's history (issue 18): `--records` node-job records over `--nodes`
nodes (`--nodes-per-job` per job, the simulated fleet of efajob/sim/fleet.py with two planted
bad nodes and 2% unlucky node-jobs), plus a fresh node status file per node (the daemon's
shape, 32 devices: what the baseline reads). From one run:

- writing the store, and `efajob index rebuild` of it (one report per job);
- `efajob nodes` in-process by the index: the rows' query, the ranking, the text, with and
  without the status files (median of `--rounds`);
- `efajob nodes` as a process (interpreter start and imports included);
- the scan fallback (no index), once, when `--scan`.

    python bench/nodes.py [--records 100000] [--nodes 2000] [--nodes-per-job 8] [--scan]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from timing import median_time, run_child  # noqa: E402

from efajob.config import Config  # noqa: E402
from efajob.fabric.gather import gather  # noqa: E402
from efajob.fabric.render import render_text  # noqa: E402
from efajob.fabric.score import rank_history  # noqa: E402
from efajob.index.update import rebuild  # noqa: E402
from efajob.sim.fleet import build_fleet  # noqa: E402
from efajob.sim.jobstore import status_doc  # noqa: E402



def write_statuses(store: str, nodes: int, now: float) -> None:
    d = os.path.join(store, "sim", "nodes")
    os.makedirs(d, exist_ok=True)
    for k in range(nodes):
        doc = status_doc("sim", f"n{k}", now, [])
        doc["expected_devices"] = 32
        doc["devices"] = [{"name": name, "errors": {}, "port_counters": 25}
                          for name in doc["recent"]["devices"]]
        doc["error_rates"] = {}
        with open(os.path.join(d, f"n{k}.json"), "w", encoding="utf-8") as f:
            json.dump(doc, f, separators=(",", ":"), sort_keys=True)  # as the daemon writes it


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=100000)
    ap.add_argument("--nodes", type=int, default=2000)
    ap.add_argument("--nodes-per-job", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--scan", action="store_true", help="also time the scan fallback")
    ap.add_argument("--dir", help="build here (default: a temp dir, removed)")
    a = ap.parse_args()
    jobs = a.records // a.nodes_per_job
    root = a.dir or tempfile.mkdtemp(prefix="efajob-bench-nodes-", dir="/tmp")
    cfg = Config(store=os.path.join(root, "store"), state_dir=os.path.join(root, "state"))
    print(f"efajob nodes: {jobs * a.nodes_per_job} records ({jobs} jobs x {a.nodes_per_job} "
          f"nodes) over {a.nodes} nodes (python {sys.version.split()[0]})")
    try:
        t = time.perf_counter()
        build_fleet(cfg.store, jobs=jobs, nodes=a.nodes, nodes_per_job=a.nodes_per_job,
                    bad={"n5": ("straggler", 0.9), "n17": ("idle", 0.3)}, noise=0.02)
        print(f"  store written          {time.perf_counter() - t:6.1f} s")
        t = time.perf_counter()
        rebuild(cfg)
        print(f"  index rebuild          {time.perf_counter() - t:6.1f} s")
        now = time.time()
        write_statuses(cfg.store, a.nodes, now)

        def run(baseline: bool, use_index: bool = True) -> str:
            history, bases, source = gather(cfg, since=None, cluster=None, now=time.time(),
                                         use_index=use_index, baseline=baseline)
            return render_text(rank_history(history, bases), source=source, since=None)

        head = run(True).splitlines()[:6]
        assert "2 suspect" in head[0], head
        for baseline in (False, True):
            took = median_time(lambda b=baseline: run(b), a.rounds)  # type: ignore[misc]
            print(f"  nodes, index{' + status files' if baseline else '':15} {took:6.2f} s")
        t = time.perf_counter()
        rc, _ = run_child([sys.executable, "-c", "from efajob.cli.main import main; main()",
                           "nodes", "--since", "2000-01-01"], stderr=None,
                          env=dict(os.environ, EFAJOB_CONFIG="", EFAJOB_STORE=cfg.store,
                                   EFAJOB_STATE_DIR=cfg.state_dir))
        if rc:
            raise SystemExit(f"efajob nodes: exit {rc}")
        print(f"  efajob nodes (process) {time.perf_counter() - t:6.2f} s")
        if a.scan:
            t = time.perf_counter()
            run(True, use_index=False)
            print(f"  nodes, scan (no index) {time.perf_counter() - t:6.1f} s")
        print("\n".join("  | " + line for line in head))
    finally:
        if not a.dir:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
