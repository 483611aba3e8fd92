"""Hook wall time against interpreter start, measured in one run (docs/performance.md, "Hooks").

    .venv/bin/python bench/hooks.py [--runs 40]

On a simulated p5.48xlarge (32 EFA devices, ~1,100 counter files):
- prolog: median wall of the installed wrapper (`efajob install hooks`: /bin/sh, then
  `python -I -S` with efajob's directories on sys.path) against `python -I -c pass`, same
  interpreter, runs interleaved so both see the same load. Target <= 3x. Also shown:
  `python -I -m efajob.hooks.entry prolog` (with `site`, as the console script runs).
- epilog: a 1-hour job window with 3,600 daemon rows (1 s samples, with their minute rollups)
  in the local store, the daemon "running" (its lock held, so the epilog leaves delivery to
  it). Target <= 4x. Also shown: the worst case of the raw-row path (a window just under
  finish.RAW_WINDOW_MAX, every row decoded), the epilog with no daemon (it then delivers its
  record itself, fsync included), and a 24-hour window (86,400 rows).

Each hook runs as slurmd runs it: a fresh process, no PATH, no HOME.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from efajob.config import load_config  # noqa: E402
from efajob.daemon.loop import acquire_lock  # noqa: E402
from efajob.hooks.finish import RAW_WINDOW_MAX  # noqa: E402
from efajob.node.localstore import LocalStore, SampleRow  # noqa: E402
from efajob.hooks.runfiles import ActiveJob, read_boot_id, write_active  # noqa: E402
from efajob.sim import build_node  # noqa: E402
from efajob.node.sysfs import read_snapshot  # noqa: E402

PY = sys.executable
WINDOW = 3600


def timed(argv, env):
    """(wall seconds, user+system CPU seconds) of one run. CPU time is the figure to compare on
    a loaded machine: wall time there includes waiting for a core, which hurts a 200 ms process
    more than a 25 ms one."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)
    dt = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0 or p.stderr:
        raise SystemExit(f"{argv[-1]} failed: {p.stderr.decode()}")
    return dt, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def fill_store(cfg, node, rows: int) -> None:
    """`rows` daemon samples at 1 s ending now, shaped like a busy p5 (32 devices)."""
    snap = read_snapshot(cfg.sysfs_root)
    names = sorted(snap.devices)
    counters = sorted(next(iter(snap.devices.values())).port_counters)
    boot, now_m, now_w = read_boot_id(), time.monotonic(), time.time()
    store = LocalStore.open(cfg.db_path)
    for i in range(rows):
        age = rows - i
        per = 10 ** 9 + i * 1000
        store.add_sample(SampleRow(
            boot, now_m - age, now_w - age, 1.0,
            {c: per * len(names) // (1 + k) for k, c in enumerate(counters)},
            {d: per for d in names}, {d: per // 2 for d in names}, ("1",), ()))
    store.close()


def active_job(cfg, job_id: str, start) -> None:
    job = ActiveJob(key=job_id, job_id=job_id, restart=0, user="alice", uid=1000, partition="gpu",
                    account=None, cluster=cfg.cluster, node=cfg.node, nodelist="p5-[1-16]",
                    num_nodes=16, start_wall=start.wall, start_mono=start.mono, boot_id=read_boot_id())
    write_active(cfg.run_dir, job, start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--long", action=argparse.BooleanOptionalAction, default=True,
                    help="also time a 24-hour window (filling the store takes a while)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="efajob-bench-hooks-") as tmp:
        conf = os.path.join(tmp, "efajob.toml")
        with open(conf, "w") as f:
            f.write(f'cluster = "bench"\nsysfs_root = "{tmp}/sys"\nrun_dir = "{tmp}/run"\n'
                    f'state_dir = "{tmp}/state"\nstore = "{tmp}/store"\n'
                    'instance_type = "p5.48xlarge"\n')
        node = build_node(os.path.join(tmp, "sys"), "p5.48xlarge", driver="in-tree")  # as in docs
        cfg = load_config(conf, env={}, node="p5-1")
        env = {"EFAJOB_CONFIG": conf, "SLURMD_NODENAME": "p5-1", "SLURM_JOB_USER": "alice",
               "SLURM_JOB_UID": "1000", "SLURM_JOB_PARTITION": "gpu", "SLURM_CLUSTER_NAME": "bench",
               "SLURM_JOB_NODELIST": "p5-[1-16]", "SLURM_JOB_NUM_NODES": "16",
               "SLURM_JOB_RESTART_COUNT": "0"}
        # What slurmd runs: the wrappers `efajob install hooks` writes (sh + python -I -S).
        from efajob.cli.hooks import install_wrappers

        wrappers = dict(install_wrappers(os.path.join(tmp, "scripts"), PY, conf))
        module = [PY, "-I", "-m", "efajob.hooks.entry"]  # the console script's way, for comparison
        base = [PY, "-I", "-c", "pass"]
        for _ in range(3):  # warm the page cache and .pyc files
            timed(base, {})
            timed([wrappers["prolog"]], dict(env, SLURM_JOB_ID="1"))

        # -- prolog ------------------------------------------------------------------------
        t_base, t_prolog, t_module = [], [], []
        for i in range(args.runs):
            t_base.append(timed(base, {}))
            t_prolog.append(timed([wrappers["prolog"]], dict(env, SLURM_JOB_ID=str(100 + i))))
            t_module.append(timed(module + ["prolog"], dict(env, SLURM_JOB_ID=str(500 + i))))

        # -- epilog, 1-hour window, 3,600 daemon rows ------------------------------------------
        t0 = time.perf_counter()
        fill_store(cfg, node, WINDOW)
        fill_s = time.perf_counter() - t0
        node.traffic(400, 400, 60)
        start = read_snapshot(cfg.sysfs_root)
        start = start.replace(mono=start.mono - WINDOW, wall=start.wall - WINDOW)
        os.makedirs(cfg.state_dir, exist_ok=True)
        lock = acquire_lock(cfg.state_dir)  # "the daemon runs" (its lock): delivery is its job
        t_base2, t_epilog = [], []
        for i in range(args.runs):
            job_id = str(1000 + i)
            active_job(cfg, job_id, start)
            t_base2.append(timed(base, {}))
            t_epilog.append(timed([wrappers["epilog"]], dict(env, SLURM_JOB_ID=job_id,
                                                          SLURM_JOB_EXIT_CODE="0")))
        t_raw = []
        raw_start = start.replace(mono=start.mono + WINDOW - (RAW_WINDOW_MAX - 5),
                                  wall=start.wall + WINDOW - (RAW_WINDOW_MAX - 5))
        for i in range(args.runs // 2):
            job_id = str(3000 + i)
            active_job(cfg, job_id, raw_start)
            t_raw.append(timed([wrappers["epilog"]], dict(env, SLURM_JOB_ID=job_id,
                                                       SLURM_JOB_EXIT_CODE="0")))
        os.close(lock)
        t_self = []
        for i in range(max(5, args.runs // 4)):
            job_id = str(5000 + i)
            active_job(cfg, job_id, start)
            t_self.append(timed([wrappers["epilog"]], dict(env, SLURM_JOB_ID=job_id,
                                                        SLURM_JOB_EXIT_CODE="0")))
        import json

        rec_dir = os.path.join(cfg.store, "bench", "jobs", "5000")
        rec = json.load(open(os.path.join(rec_dir, os.listdir(rec_dir)[0])))

        # -- epilog, 24-hour window ------------------------------------------------------------
        t_long = []
        if args.long:
            os.unlink(cfg.db_path)
            for suffix in ("-wal", "-shm"):
                if os.path.exists(cfg.db_path + suffix):
                    os.unlink(cfg.db_path + suffix)
            t0 = time.perf_counter()
            fill_store(cfg, node, 24 * 3600)
            fill_long = time.perf_counter() - t0
            long_start = start.replace(mono=start.mono + WINDOW - 24 * 3600,
                                       wall=start.wall + WINDOW - 24 * 3600)
            lock = acquire_lock(cfg.state_dir)
            for i in range(max(5, args.runs // 4)):
                job_id = str(9000 + i)
                active_job(cfg, job_id, long_start)
                t_long.append(timed([wrappers["epilog"]], dict(env, SLURM_JOB_ID=job_id,
                                                            SLURM_JOB_EXIT_CODE="0")))
            os.close(lock)

    def med(xs, k):
        return statistics.median(x[k] for x in xs) * 1000

    rows = [("python -I -c pass", t_base, None), ("prolog (the wrapper)", t_prolog, t_base),
            ("prolog (python -I -m efajob.hooks.entry)", t_module, t_base),
            ("python -I -c pass (epilog runs)", t_base2, None),
            ("epilog, 1 h, 3,600 rows", t_epilog, t_base2),
            (f"epilog, {RAW_WINDOW_MAX / 60:.0f} min raw (worst raw case)", t_raw, t_base2),
            ("epilog, 1 h, no daemon", t_self, t_base2)]
    if t_long:
        rows.append(("epilog, 24 h, 86,400 rows", t_long, t_base2))
    print(f"simulated p5.48xlarge, 32 devices; {args.runs} runs each, medians, interleaved")
    print(f"{'':34s} {'wall ms':>8s} {'ratio':>6s} {'CPU ms':>8s} {'ratio':>6s}")
    for name, xs, ref in rows:
        w, c = med(xs, 0), med(xs, 1)
        if ref is None:
            print(f"{name:34s} {w:8.1f} {'':6s} {c:8.1f}")
        else:
            print(f"{name:34s} {w:8.1f} {w / med(ref, 0):5.2f}x {c:8.1f} {c / med(ref, 1):5.2f}x")
    print("targets: prolog <= 3x, epilog (1 h) <= 4x")
    print(f"record: {rec['daemon_samples']} daemon samples, {len(rec['series']['t'])} series "
          f"points, peak source {rec['rates']['peak_source']}; stores filled in {fill_s:.1f} s"
          + (f" and {fill_long:.0f} s (24 h)" if t_long else ""))


if __name__ == "__main__":
    main()
