"""`efajob jobs` and `efajob report` against the size of the job store, with and without the
job index (issue 16). One store grows from the smallest size to the largest (the simulated
store of efajob/sim/jobstore.py, which the tests use too), with `--status-nodes` fresh node
status files throughout; at each size, from one run:

- `jobs -n 20` in-process, by the index and by the scan, without and with `-u`, and with
  `-s CD` (finished jobs only: no live report to build, the store's part alone) (median of
  `--rounds`);
- `report` of one finished job (it should not depend on the store's size);
- `index update` after `--land` new jobs landed: the time per landed record, and the time of
  an update with nothing new (its fixed cost: one listing of the jobs directory and a stat of
  each directory of the last day, 1,440 at the builder's one job a minute);
- `index rebuild` of the whole store (progress on stderr).
At the largest size, `efajob jobs -n 20` as a process too (interpreter start and imports).

    python bench/jobs.py [--sizes 1000,10000,100000] [--status-nodes 2000] [--nodes-per-job 1]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from timing import median_time, run_child  # noqa: E402

from efajob.config import Config  # noqa: E402
from efajob.index.listing import recent_jobs  # noqa: E402
from efajob.index.update import rebuild, update  # noqa: E402
from efajob.report.assemble import build_job_report  # noqa: E402
from efajob.report.jobfilter import JobFilter  # noqa: E402
from efajob.sim.jobstore import T0, build_store, write_statuses  # noqa: E402



def cli_time(cfg: Config, *args: str) -> float:
    t = time.perf_counter()
    rc, _ = run_child([sys.executable, "-c", "from efajob.cli.main import main; main()", "jobs",
                       "-n", "20", *args],
                      env=dict(os.environ, EFAJOB_CONFIG="", EFAJOB_STORE=cfg.store,
                               EFAJOB_STATE_DIR=cfg.state_dir))
    if rc:
        raise SystemExit(f"efajob jobs {' '.join(args)}: exit {rc}")
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--status-nodes", type=int, default=2000)
    ap.add_argument("--nodes-per-job", type=int, default=1)
    ap.add_argument("--land", type=int, default=200, help="jobs landed before a timed update")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", help="build the store here (default: a temp dir, removed)")
    a = ap.parse_args()
    sizes = [int(x) for x in a.sizes.split(",")]
    root = a.dir or tempfile.mkdtemp(prefix="efajob-bench-jobs-", dir="/tmp")
    cfg = Config(store=os.path.join(root, "store"), state_dir=os.path.join(root, "state"))
    print(f"efajob jobs / report / index, {a.status_nodes} live node status files, "
          f"{a.nodes_per_job} record(s) per job (python {sys.version.split()[0]})")
    try:
        have = 0
        for size in sizes:
            t = time.perf_counter()
            build_store(cfg.store, jobs=size - have, first=have, nodes_per_job=a.nodes_per_job)
            write_statuses(cfg.store, "sim", a.status_nodes, time.time())  # fresh again
            built = time.perf_counter() - t
            have = size
            # The builder lands one job a minute from T0: "now" 10 min after the last, so the
            # last day's directories are not settled yet and an update stats them, as live.
            now = T0 + 60.0 * have + 600.0
            t = time.perf_counter()
            s = rebuild(cfg, now=now, progress=lambda d, n: print(f"\r  rebuild {d}/{n}", end="",
                                                         file=sys.stderr))
            rebuilt = time.perf_counter() - t
            print("", file=sys.stderr)
            bob = JobFilter(users=frozenset({"bob"}))
            row = {}
            done = JobFilter(states=frozenset({"COMPLETED"}))  # no running job: the store only
            for name, flt in (("", JobFilter()), (" -u bob", bob), (" -s CD", done)):
                for how, use in (("index", True), ("scan", False)):
                    row[how + name] = median_time(
                        lambda f=flt, u=use: recent_jobs(cfg, f, limit=20, use_index=u), a.rounds)
            rep = median_time(lambda: build_job_report(cfg, "1010", use_slurm=False), a.rounds)
            idle = median_time(lambda t=now: update(cfg, now=t), a.rounds)
            build_store(cfg.store, jobs=a.land, first=have, nodes_per_job=a.nodes_per_job)
            t = time.perf_counter()
            u = update(cfg, now=now + 60.0 * a.land)
            landed = time.perf_counter() - t
            have += a.land
            print(f"{size:>7,} jobs (store written in {built:.0f} s)")
            print(f"  jobs -n 20         index {row['index']:7.3f} s   scan {row['scan']:7.3f} s")
            print(f"  jobs -n 20 -u bob  index {row['index -u bob']:7.3f} s   scan "
                  f"{row['scan -u bob']:7.3f} s")
            print(f"  jobs -n 20 -s CD   index {row['index -s CD']:7.3f} s   scan "
                  f"{row['scan -s CD']:7.3f} s")
            print(f"  report (one job)   {rep:7.3f} s")
            print(f"  index update: nothing new {idle * 1000:7.1f} ms; {a.land} jobs landed "
                  f"({u.records} records) {landed * 1000:7.1f} ms = "
                  f"{landed * 1000 / max(1, u.records):.2f} ms/record")
            print(f"  index rebuild      {rebuilt:7.1f} s  ({s.rows:,} rows, "
                  f"{rebuilt * 1000 / max(1, s.rows):.2f} ms/job)")
        print(f"  `efajob jobs -n 20` as a process at {have:,} jobs: index "
              f"{cli_time(cfg):.3f} s, -u bob {cli_time(cfg, '-u', 'bob'):.3f} s, "
              f"scan {cli_time(cfg, '--no-index'):.3f} s")
        print(f"  (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores at the end)")
    finally:
        if not a.dir:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
