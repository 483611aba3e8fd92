"""A C floor for the benches: a small reader compiled with `cc` at bench time.

The sampler's "bare os.pread loop" is still Python: one interpreted loop iteration per file.
What the hardware and the kernel allow is a C loop of `pread` + `strtoull` over the same open
descriptors, so bench/sampler.py and bench/daemon.py compare against that when a compiler
exists, and say so when it does not (they then fall back to the Python loop).

Two programs in one source:
  floor sample N FD...      pread+parse every FD (inherited descriptors) N times in a row,
                            repeated; prints the median nanoseconds of one pass over all FDs
  floor daemon PATHFILE     opens every path listed (one a line), then once a second
                            preads+parses all of them, until SIGTERM (CPU is read by the bench
                            from /proc/<pid>/stat, as for the daemons)
The binary is cached under the temp dir by the hash of its source.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from typing import List, Optional, Sequence

SOURCE = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop = 0;
static void on_term(int s) { (void)s; stop = 1; }

static unsigned long long sink;

/* One pass: what a sample is, reduced to the syscalls and the parse. */
static void pass(const int *fds, int n, unsigned long long *vals) {
    char buf[64];
    for (int i = 0; i < n; i++) {
        ssize_t r = pread(fds[i], buf, sizeof buf - 1, 0);
        if (r <= 0) { vals[i] = ~0ULL; continue; }
        buf[r] = 0;
        vals[i] = strtoull(buf, NULL, 10);
    }
    sink += vals[0];
}

static double now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    if (argc >= 4 && !strcmp(argv[1], "sample")) {
        int reps = atoi(argv[2]), n = argc - 3;
        int *fds = malloc(n * sizeof *fds);
        unsigned long long *vals = malloc(n * sizeof *vals);
        double *t = malloc(reps * sizeof *t);
        for (int i = 0; i < n; i++) fds[i] = atoi(argv[3 + i]);
        pass(fds, n, vals);
        for (int k = 0; k < reps; k++) {
            double t0 = now_ns();
            pass(fds, n, vals);
            t[k] = now_ns() - t0;
        }
        qsort(t, reps, sizeof *t, cmp);
        printf("%.1f\n", t[reps / 2]);
        return sink == 42 ? 3 : 0;
    }
    if (argc == 3 && !strcmp(argv[1], "daemon")) {
        FILE *f = fopen(argv[2], "r");
        if (!f) return 2;
        int cap = 4096, n = 0;
        int *fds = malloc(cap * sizeof *fds);
        char line[4096];
        while (fgets(line, sizeof line, f) && n < cap) {
            line[strcspn(line, "\n")] = 0;
            int fd = open(line, O_RDONLY | O_NOATIME);
            if (fd < 0) fd = open(line, O_RDONLY);
            if (fd >= 0) fds[n++] = fd;
        }
        fclose(f);
        unsigned long long *vals = malloc(n * sizeof *vals);
        signal(SIGTERM, on_term);
        struct timespec next;
        clock_gettime(CLOCK_MONOTONIC, &next);
        while (!stop) {
            pass(fds, n, vals);
            next.tv_sec += 1;
            while (!stop && clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) != 0) {}
        }
        return sink == 42 ? 3 : 0;
    }
    fprintf(stderr, "usage: floor sample N FD... | floor daemon PATHFILE\n");
    return 2;
}
"""


def build() -> Optional[str]:
    """Path of the compiled floor, or None when there is no C compiler (or it fails)."""
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        return None
    digest = hashlib.sha256(SOURCE.encode()).hexdigest()[:16]
    out = os.path.join(tempfile.gettempdir(), f"efajob-bench-floor-{digest}")
    if os.access(out, os.X_OK):
        return out
    src = out + ".c"
    with open(src, "w") as f:
        f.write(SOURCE)
    tmp_out = f"{out}.{os.getpid()}"
    p = subprocess.run([cc, "-O2", "-o", tmp_out, src], capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        return None
    os.replace(tmp_out, out)
    return out


def sample_ns(exe: str, fds: Sequence[int], reps: int) -> float:
    """Median ns of one C pass over `fds` (this process's descriptors, inherited)."""
    p = subprocess.run([exe, "sample", str(reps)] + [str(fd) for fd in fds], pass_fds=tuple(fds),
                       capture_output=True, text=True, timeout=600, check=True)
    return float(p.stdout)


def start_daemon(exe: str, paths: List[str], workdir: str) -> subprocess.Popen:
    """The 1 Hz C reader of `paths`, as a process (stop it with SIGTERM)."""
    listing = os.path.join(workdir, "floor-paths.txt")
    with open(listing, "w") as f:
        f.write("\n".join(paths) + "\n")
    return subprocess.Popen([exe, "daemon", listing], stdout=subprocess.DEVNULL)
