"""Hook wall time against interpreter start, measured in one run (docs/performance.md, "Hooks").

    .venv/bin/python bench/hooks.py [--runs 40] [--venv PATH] [--no-long]

What users run: a NON-editable install (`python -m venv X && X/bin/pip install CHECKOUT`, as
the README's "Install on a cluster" does). By default the bench builds one from this checkout
under the temp dir, cached by a hash of the checkout's package files, or uses `--venv PATH`;
it prints which. (An editable install's import hook adds ~20 ms to every bare interpreter
start and halves the ratios: not what a cluster runs.) The hooks run through the wrappers
`efajob install hooks` writes for that interpreter (efajob/cli/hooks.py), as slurmd runs
them: a fresh process, no PATH, no HOME.

On a simulated p5.48xlarge (32 EFA devices, 1,088 counter files), interleaved in one loop so
every row sees the same load, against `python -I -c pass` of the same interpreter:
- prolog. Target <= 3x.
- epilog of a 1-hour job: 3,600 daemon rows (1 s samples with their minute rollups) in the
  local store, the daemon "running" (its lock held, so delivery is left to it). Target <= 4x.
- epilog of a 24-hour job: 86,400 rows in another node's store. Target <= 4x.
- also shown: the worst case of the raw-row path (a window just under finish.RAW_WINDOW_MAX,
  every row decoded) and the 1-hour epilog with no daemon (it then delivers its record
  itself, fsync included).
The machine's load (os.getloadavg) and cores are printed at the start and the end.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from timing import run_child  # noqa: E402
from efajob.config import load_config  # noqa: E402
from efajob.daemon.loop import acquire_lock  # noqa: E402
from efajob.hooks.finish import RAW_WINDOW_MAX  # noqa: E402
from efajob.node.localstore import LocalStore, SampleRow  # noqa: E402
from efajob.hooks.runfiles import ActiveJob, read_boot_id, write_active  # noqa: E402
from efajob.sim import build_node  # noqa: E402
from efajob.node.sysfs import read_snapshot  # noqa: E402

WINDOW = 3600
DAY = 24 * 3600

_PROBE = ("import json, os, efajob, importlib.metadata as m; d = m.distribution('efajob'); "
          "u = d.read_text('direct_url.json'); "
          "print(json.dumps([os.path.dirname(efajob.__file__), "
          "bool(u and json.loads(u).get('dir_info', {}).get('editable'))]))")


def checkout_hash() -> str:
    """Hash of what `pip install CHECKOUT` installs: pyproject and the package's files."""
    h = hashlib.sha256(sys.version.encode())
    for name in ("pyproject.toml", "README.md"):
        with open(os.path.join(REPO, name), "rb") as f:
            h.update(f.read())
    for d, dirs, files in sorted(os.walk(os.path.join(REPO, "efajob"))):
        dirs[:] = sorted(x for x in dirs if x != "__pycache__")
        for name in sorted(files):
            if not name.endswith((".pyc",)):
                with open(os.path.join(d, name), "rb") as f:
                    h.update(name.encode() + f.read())
    return h.hexdigest()[:16]


def installed_venv(venv) -> tuple:
    """(python, description) of a non-editable install: `venv` when given, else one built
    from this checkout (cached under the temp dir by checkout_hash)."""
    if venv is None:
        venv = os.path.join(tempfile.gettempdir(), f"efajob-bench-venv-{checkout_hash()}")
        built = "cached"
        if not os.path.exists(os.path.join(venv, ".efajob-bench-done")):
            built = "built now"
            subprocess.run([sys.executable, "-m", "venv", "--clear", venv], check=True, timeout=300)
            p = subprocess.run([os.path.join(venv, "bin", "pip"), "install", "-q", REPO],
                               timeout=1800, capture_output=True, text=True)
            if p.returncode != 0:  # pip's output only when it failed
                raise SystemExit(f"pip install {REPO} failed:\n{p.stdout}{p.stderr}")
            open(os.path.join(venv, ".efajob-bench-done"), "w").close()
        how = f"non-editable install of this checkout, {built}"
    else:
        how = "--venv"
    py = os.path.join(os.path.abspath(venv), "bin", "python")
    p = subprocess.run([py, "-I", "-c", _PROBE], capture_output=True, text=True, timeout=60, env={})
    if p.returncode != 0:
        raise SystemExit(f"{py} cannot import efajob: {p.stderr.strip()}")
    where, editable = json.loads(p.stdout)
    if editable:
        how += ", EDITABLE (not what a cluster runs: ratios understated)"
    return py, f"{py} ({how}; efajob from {where})"


def load_line() -> str:
    a, b, c = os.getloadavg()
    return f"load average {a:.2f} {b:.2f} {c:.2f} on {os.cpu_count()} cores"


def timed(argv, env):
    """(wall seconds, user+system CPU seconds) of one run. CPU time is the figure to compare on
    a loaded machine: wall time there includes waiting for a core, which hurts a 200 ms process
    more than a 25 ms one."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    rc, stderr = run_child(argv, env=env, stderr=subprocess.PIPE, limit=60)
    dt = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if rc != 0 or stderr:
        raise SystemExit(f"{argv[-1]} failed: {stderr.decode()}")
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


def node_config(tmp: str, name: str) -> str:
    """A config file for one simulated node's run and state dirs (sysfs tree and job store
    shared): the 1-hour and the 24-hour stores are two nodes' stores, so their epilogs can run
    interleaved."""
    path = os.path.join(tmp, f"{name}.toml")
    with open(path, "w") as f:
        f.write(f'cluster = "bench"\nsysfs_root = "{tmp}/sys"\nrun_dir = "{tmp}/{name}/run"\n'
                f'state_dir = "{tmp}/{name}/state"\nstore = "{tmp}/store"\n'
                'instance_type = "p5.48xlarge"\n')
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--venv", default=None,
                    help="a venv with efajob installed (default: build a non-editable one)")
    ap.add_argument("--long", action=argparse.BooleanOptionalAction, default=True,
                    help="also time a 24-hour window (filling the store takes a while)")
    args = ap.parse_args()
    py, how = installed_venv(args.venv)
    print(f"interpreter: {how}")
    print(f"at start: {load_line()}")
    # The wrappers `efajob install hooks` writes for that interpreter (sh + python -I -S with
    # the install's directories): what slurmd runs.
    from efajob.cli.hooks import install_wrappers

    with tempfile.TemporaryDirectory(prefix="efajob-bench-hooks-") as tmp:
        node = build_node(os.path.join(tmp, "sys"), "p5.48xlarge", driver="in-tree")  # as in docs
        confs = {k: node_config(tmp, k) for k in ("h1", "day")}
        cfgs = {k: load_config(c, env={}, node="p5-1") for k, c in confs.items()}
        wrappers = {k: dict(install_wrappers(os.path.join(tmp, f"scripts-{k}"), py, c))
                    for k, c in confs.items()}
        env = {"SLURMD_NODENAME": "p5-1", "SLURM_JOB_USER": "alice",
               "SLURM_JOB_UID": "1000", "SLURM_JOB_PARTITION": "gpu", "SLURM_CLUSTER_NAME": "bench",
               "SLURM_JOB_NODELIST": "p5-[1-16]", "SLURM_JOB_NUM_NODES": "16",
               "SLURM_JOB_RESTART_COUNT": "0"}
        base = [py, "-I", "-c", "pass"]

        t0 = time.perf_counter()
        fill_store(cfgs["h1"], node, WINDOW)
        if args.long:
            fill_store(cfgs["day"], node, DAY)
        fill_s = time.perf_counter() - t0
        node.traffic(400, 400, 60)
        end = read_snapshot(cfgs["h1"].sysfs_root)

        def ago(seconds):
            return end.replace(mono=end.mono - seconds, wall=end.wall - seconds)

        locks = {}
        for k, cfg in cfgs.items():  # "the daemon runs" (its lock): delivery is its job
            os.makedirs(cfg.state_dir, exist_ok=True)
            locks[k] = acquire_lock(cfg.state_dir)

        def epilog(k: str, job_id: str, start_ago: float):
            active_job(cfgs[k], job_id, ago(start_ago))
            return timed([wrappers[k]["epilog"]], dict(env, SLURM_JOB_ID=job_id, SLURM_JOB_EXIT_CODE="0"))

        for i in range(3):  # warm the page cache and .pyc files
            timed(base, {})
            timed([wrappers["h1"]["prolog"]], dict(env, SLURM_JOB_ID=str(90 + i)))
            epilog("h1", str(95 + i), WINDOW)

        t = {k: [] for k in ("base", "prolog", "h1", "raw", "day")}
        for i in range(args.runs):
            t["base"].append(timed(base, {}))
            t["prolog"].append(timed([wrappers["h1"]["prolog"]], dict(env, SLURM_JOB_ID=str(100 + i))))
            t["h1"].append(epilog("h1", str(1000 + i), WINDOW))
            if args.long:
                t["day"].append(epilog("day", str(9000 + i), DAY))
            if i % 2 == 0:
                t["raw"].append(epilog("h1", str(3000 + i), RAW_WINDOW_MAX - 5))
        for lock in locks.values():
            os.close(lock)
        t["self"] = [epilog("h1", str(5000 + i), WINDOW) for i in range(max(5, args.runs // 4))]
        rec_dir = os.path.join(cfgs["h1"].store, "bench", "jobs", "5000")
        with open(os.path.join(rec_dir, os.listdir(rec_dir)[0])) as f:
            rec = json.load(f)
        rec_bytes = os.path.getsize(os.path.join(rec_dir, os.listdir(rec_dir)[0]))

    def med(xs, k):
        return statistics.median(x[k] for x in xs) * 1000

    targets = {"prolog": 3.0, "h1": 4.0, "day": 4.0}
    rows = [("python -I -c pass", "base"), ("prolog", "prolog"),
            ("epilog, 1 h, 3,600 rows", "h1"), ("epilog, 24 h, 86,400 rows", "day"),
            (f"epilog, {RAW_WINDOW_MAX / 60:.0f} min raw (worst raw case)", "raw"),
            ("epilog, 1 h, no daemon (not interleaved)", "self")]
    print(f"simulated p5.48xlarge, 32 devices; {args.runs} runs, medians, interleaved")
    print(f"{'':42s} {'wall ms':>8s} {'ratio':>6s} {'CPU ms':>8s} {'ratio':>6s}  target")
    bw, bc = med(t["base"], 0), med(t["base"], 1)
    for name, k in rows:
        if not t[k]:
            continue
        w, c = med(t[k], 0), med(t[k], 1)
        if k == "base":
            print(f"{name:42s} {w:8.1f} {'':6s} {c:8.1f}")
            continue
        goal = targets.get(k)
        verdict = f"  <= {goal:g}x: {'met' if w / bw <= goal else 'MISSED'}" if goal else ""
        print(f"{name:42s} {w:8.1f} {w / bw:5.2f}x {c:8.1f} {c / bc:5.2f}x{verdict}")
    print(f"record: {rec_bytes:,} bytes, {rec['daemon_samples']} daemon samples, "
          f"{len(rec['series']['t'])} series points, peak source {rec['rates']['peak_source']}; "
          f"stores filled in {fill_s:.1f} s")
    print(f"at end: {load_line()}")


if __name__ == "__main__":
    main()
