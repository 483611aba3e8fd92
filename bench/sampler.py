"""Sampler cost on a simulated p5.48xlarge (32 EFA devices, ~1,150 counter files).

Prints, from one run: the median time of one full sample, microseconds per counter, and the
ratios to the floor: a C loop of `pread` + `strtoull` over the same open descriptors
(bench/cfloor.py, compiled with `cc` at bench time; without a compiler the floor falls back
to a Python loop of `os.pread`, and the output says so). Also shown: that Python loop and the
naive open/read/close-per-file cost, and the same sample read in Python (`native=False`,
what runs where the C reader was not built). Targets (issue 15): sample <= 1.5x the C floor, sample
with the per-device dictionaries (what the hooks pay) <= 1.5x too. The machine's load is
printed with the figures.

    python bench/sampler.py [--rounds 30] [--per-round 50] [--kernel 6.17] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cfloor  # noqa: E402  (bench/cfloor.py, beside this script)
from efajob.sim import build_node  # noqa: E402
from efajob.node.sysfs import Sampler  # noqa: E402


def _time_per_call(fn, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--instance-type", default="p5.48xlarge")
    ap.add_argument("--kernel", default="6.17")
    # in-tree by default: the layout (1,088 files) the figures in docs/performance.md are for.
    ap.add_argument("--driver", default="in-tree")
    ap.add_argument("--rounds", type=int, default=30, help="interleaved rounds (medians over these)")
    ap.add_argument("--per-round", type=int, default=50, help="calls per round")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="efajob-bench-") as tmp:
        build_node(tmp, args.instance_type, args.kernel, driver=args.driver)
        with Sampler(tmp, include_net=False, rediscover_interval=float("inf")) as s, \
                Sampler(tmp, include_net=False, rediscover_interval=float("inf"),
                        native=False) as s_py:
            fds = list(s._fds)
            paths = list(s._paths)
            pread = os.pread

            def bare():
                for fd in fds:
                    pread(fd, 64, 0)

            def naive():
                for p in paths:
                    with open(p, "rb") as f:
                        int(f.read())

            sample = s.sample
            sample_py = s_py.sample

            def sample_dicts():
                # What the hooks pay: the per-device dictionaries too (the daemon builds them
                # only for a scrape or a status file: flatlayout.py).
                return s.sample().devices

            floor_exe = cfloor.build()
            for fn in (bare, sample, sample_py, sample_dicts, naive):  # warm caches
                fn()
            t_bare, t_sample, t_py, t_dicts, t_naive, t_c = [], [], [], [], [], []
            for _ in range(args.rounds):
                # Interleaved so drift in machine load hits all of them alike.
                if floor_exe:
                    t_c.append(cfloor.sample_ns(floor_exe, fds, args.per_round) / 1e9)
                t_bare.append(_time_per_call(bare, args.per_round))
                t_sample.append(_time_per_call(sample, args.per_round))
                t_py.append(_time_per_call(sample_py, args.per_round))
                t_dicts.append(_time_per_call(sample_dicts, args.per_round))
                t_naive.append(_time_per_call(naive, max(1, args.per_round // 5)))
            snap = s.sample()

    med = statistics.median
    n = len(fds)
    floor = med(t_c) if t_c else med(t_bare)
    load = os.getloadavg()
    res = {
        "instance_type": args.instance_type,
        "kernel": args.kernel,
        "devices": len(snap.devices),
        "counter_files": n,
        "sample_us": med(t_sample) * 1e6,
        "us_per_counter": med(t_sample) * 1e6 / n,
        "bare_pread_us": med(t_bare) * 1e6,
        "ratio_to_bare": med(t_sample) / med(t_bare),
        "reader": "c" if s.native else "python",
        "python_reads_sample_us": med(t_py) * 1e6,
        "sample_with_dicts_us": med(t_dicts) * 1e6,
        "dicts_ratio_to_bare": med(t_dicts) / med(t_bare),
        "naive_open_read_close_us": med(t_naive) * 1e6,
        "naive_ratio_to_bare": med(t_naive) / med(t_bare),
        "floor": "c" if t_c else "python",
        "c_floor_us": med(t_c) * 1e6 if t_c else None,
        "ratio_to_floor": med(t_sample) / floor,
        "dicts_ratio_to_floor": med(t_dicts) / floor,
        "python_reads_ratio_to_floor": med(t_py) / floor,
        "bare_ratio_to_floor": med(t_bare) / floor,
        "loadavg": load,
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
    }
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"{res['instance_type']} kernel {res['kernel']}: {res['devices']} devices, "
              f"{n} counter files (python {res['python']})")
        print(f"  load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores")
        fl = "C pread+strtoull loop" if t_c else "Python os.pread loop (no C compiler: fallback)"
        print(f"  floor: {fl}")
        rd = ("C (efajob/node/_fastread)" if s.native else
              "Python (the C reader is " + ("off: EFAJOB_NO_NATIVE" if os.environ.get("EFAJOB_NO_NATIVE")
                                            else "not built") + ")")
        print(f"  sampler reads in: {rd}")
        print(f"  full sample (median)      {res['sample_us']:9.1f} us  ({res['us_per_counter']:.3f} us/counter)")
        print(f"  full sample, Python reads {res['python_reads_sample_us']:9.1f} us")
        print(f"  sample + device dicts     {res['sample_with_dicts_us']:9.1f} us")
        if t_c:
            print(f"  C pread+parse floor       {res['c_floor_us']:9.1f} us")
        print(f"  bare os.pread loop        {res['bare_pread_us']:9.1f} us")
        print(f"  naive open/read/close     {res['naive_open_read_close_us']:9.1f} us")

        def verdict(x):
            return f"{x:9.2f}x  (target <= 1.5x: {'met' if x <= 1.5 else 'MISSED'})"
        print(f"  ratio sample / floor      {verdict(res['ratio_to_floor'])}")
        print(f"  ratio with dicts / floor  {verdict(res['dicts_ratio_to_floor'])}")
        print(f"  ratio Python reads / floor{res['python_reads_ratio_to_floor']:9.2f}x")
        print(f"  ratio Python loop / floor {res['bare_ratio_to_floor']:9.2f}x")
        print(f"  ratio sample / Python loop{res['ratio_to_bare']:9.2f}x")
        print(f"  ratio naive / Python loop {res['naive_ratio_to_bare']:9.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
