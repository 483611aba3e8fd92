"""`efajob-check-node` against a bare `python -c pass` (issue 18's target: <= 3x), on a simulated
p5.48xlarge (32 EFA devices) with 15 minutes of daemon samples in its local store (900 rows
at 1 s), healthy and with a missing device; `efajob check-node` (through click) beside it.
Median of `--rounds` process runs each, interleaved, wall and CPU time, in one run.

Run it with a NON-editable install (an editable one adds an import finder to every start):

    python -m venv /tmp/ck && /tmp/ck/bin/pip install -q . && /tmp/ck/bin/python bench/checknode.py
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from typing import Dict, List, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from timing import run_child  # noqa: E402


def timed(argvs: List[List[str]], wants: List[int], env: Dict[str, str],
          rounds: int) -> List[Tuple[float, float]]:
    """(median wall s, median CPU s) per command, the commands run in turn round after round
    so that a busy machine slows them alike; CPU time (user + system of the child) is what a
    machine shared with other work does not inflate."""
    walls: List[List[float]] = [[] for _ in argvs]
    cpus: List[List[float]] = [[] for _ in argvs]
    for _ in range(rounds):
        for k, (argv, want) in enumerate(zip(argvs, wants)):
            r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            t = time.perf_counter()
            rc, _ = run_child(argv, env=env, limit=120)
            walls[k].append(time.perf_counter() - t)
            r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus[k].append(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime)
            assert rc == want, (argv, rc)
    return [(statistics.median(w), statistics.median(c)) for w, c in zip(walls, cpus)]


def fill_store(path: str, devices: List[str], rows: int) -> None:
    from efajob.node.localstore import LocalStore, SampleRow

    now = time.time()
    with LocalStore.open(path) as s:
        for i in range(rows):
            moved = {d: 10**9 for d in devices}
            s.add_sample(SampleRow(boot_id="bench", mono=1000.0 + i, wall=now - rows + i,
                                   seconds=1.0, deltas={"tx_bytes": 32 * 10**9},
                                   device_tx_bytes=moved, device_rx_bytes=moved, jobs=("1",),
                                   resets=()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=21)
    a = ap.parse_args()
    from efajob.node.sysfs import read_snapshot
    from efajob.sim import build_node

    bindir = os.path.dirname(sys.executable)
    check = os.path.join(bindir, "efajob-check-node")
    efajob = os.path.join(bindir, "efajob")
    root = tempfile.mkdtemp(prefix="efajob-bench-check-", dir="/tmp")
    try:
        print(f"efajob-check-node vs python -c pass (python {sys.version.split()[0]}, "
              f"{a.rounds} runs each, median)")
        for fault in (None, "missing-device"):
            d = os.path.join(root, fault or "healthy")
            sysfs = os.path.join(d, "sys")
            build_node(sysfs, "p5.48xlarge", fault=fault)
            os.makedirs(os.path.join(d, "state"))
            devices = sorted(read_snapshot(sysfs, include_net=False).devices)
            fill_store(os.path.join(d, "state", "efajob.db"), devices, 900)
            env = dict(os.environ, EFAJOB_CONFIG="", EFAJOB_SYSFS_ROOT=sysfs,
                       EFAJOB_STATE_DIR=os.path.join(d, "state"),
                       EFAJOB_INSTANCE_TYPE="p5.48xlarge")
            want = 1 if fault else 0
            (bw, bc), (fw, fc), (sw, sc) = timed(
                [[sys.executable, "-c", "pass"], [check], [efajob, "check-node"]],
                [0, want, want], env, a.rounds)
            print(f"  {fault or 'healthy':15} wall: python -c pass {bw * 1000:5.1f} ms, "
                  f"efajob-check-node {fw * 1000:5.1f} ms ({fw / bw:.1f}x), "
                  f"efajob check-node {sw * 1000:5.1f} ms ({sw / bw:.1f}x)")
            print(f"  {'':15} CPU:  python -c pass {bc * 1000:5.1f} ms, "
                  f"efajob-check-node {fc * 1000:5.1f} ms ({fc / bc:.1f}x), "
                  f"efajob check-node {sc * 1000:5.1f} ms ({sc / bc:.1f}x)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
