"""A simulated cluster for the fault suite: nodes with simulator sysfs trees, one efajob config
with {node} paths (several nodes share this host), the hooks run as slurmd runs them (a
subprocess with no PATH and no HOME), and the bookkeeping the table needs: what each job
moved on each node (the simulator's exact injected totals), what the store holds, and every
hook that exited non-zero or printed a traceback."""
from __future__ import annotations

import glob
import json
import os
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from conftest import HOOK_WAIT_ENV
from efajob.sim import build_node
from fault_ledger import Row, record

PY = sys.executable
BYTES = ("tx_bytes", "rx_bytes")


class Site:
    def __init__(self, root: str, hosts: Sequence[str] = ("n1",), itype: str = "p4d.24xlarge",
                 extra_config: str = ""):
        self.root = str(root)
        self.store = os.path.join(self.root, "store")
        self.conf = os.path.join(self.root, "efajob.toml")
        with open(self.conf, "w") as f:
            f.write(f'cluster = "c1"\nsysfs_root = "{self.root}/{{node}}/sys"\n'
                    f'run_dir = "{self.root}/{{node}}/run"\n'
                    f'state_dir = "{self.root}/{{node}}/state"\nstore = "{self.store}"\n'
                    f'instance_type = "{itype}"\n{extra_config}')
        self.nodes = {h: build_node(self.sys(h), itype) for h in hosts}
        self.expected: Dict[Tuple[str, str], Dict[str, int]] = {}  # (job, host) -> bytes
        self.hook_runs = 0
        self.hook_nonzero: List[str] = []  # "kind job host: why"

    def sys(self, host: str) -> str:
        return os.path.join(self.root, host, "sys")

    def path(self, host: str, *parts: str) -> str:
        return os.path.join(self.root, host, *parts)

    def cfg(self, host: str = "n1"):
        from efajob.config import load_config

        return load_config(self.conf, env={}, node=host)

    # -- the hooks ------------------------------------------------------------------------
    def env(self, kind: str, job: str, host: str, hosts: Sequence[str], **extra) -> dict:
        env = {"EFAJOB_CONFIG": self.conf, "SLURMD_NODENAME": host, "SLURM_JOB_ID": job,
               "SLURM_JOB_USER": "alice", "SLURM_JOB_UID": "1000", "SLURM_JOB_PARTITION": "gpu",
               "SLURM_CLUSTER_NAME": "c1", "SLURM_NODELIST": ",".join(hosts),
               "SLURM_JOB_NUM_NODES": str(len(hosts)), "SLURM_JOB_RESTART_COUNT": "0",
               "SLURM_SCRIPT_CONTEXT": f"{kind}_slurmd", **HOOK_WAIT_ENV}
        if kind == "epilog":
            env.update(SLURM_JOB_EXIT_CODE="0", SLURM_JOB_EXIT_CODE2="0:0",
                       SLURM_JOB_DERIVED_EC="0")
        env.update(extra)
        return env

    def hook(self, kind: str, job: str, host: str, hosts: Optional[Sequence[str]] = None,
             **extra) -> subprocess.CompletedProcess:
        p = subprocess.run([PY, "-m", "efajob.hooks.entry", kind],
                           env=self.env(kind, job, host, hosts or [host], **extra),
                           capture_output=True, text=True, timeout=300, cwd="/")
        self.hook_runs += 1
        if p.returncode != 0 or "Traceback" in p.stderr:
            self.hook_nonzero.append(f"{kind} {job} {host}: rc {p.returncode} {p.stderr[-300:]}")
        return p

    def hooks(self, kind: str, jobs: Iterable[Tuple[str, str]], workers: int = 40) -> None:
        """Many hooks at once: (job, host) pairs, each job on its host alone."""
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda jh: self.hook(kind, jh[0], jh[1]), list(jobs)))

    # -- traffic and the job record -------------------------------------------------------
    def traffic(self, job: str, host: str, tx_gbps: float = 40, rx_gbps: float = 20,
                seconds: float = 10, **kw) -> None:
        """Traffic on `host`, counted to `job` (each job has its node to itself here)."""
        inj = self.nodes[host].traffic(tx_gbps, rx_gbps, seconds, **kw)
        got = self.expected.setdefault((job, host), {k: 0 for k in BYTES})
        for k in BYTES:
            got[k] += inj.totals.get(k, 0)

    def expect(self, job: str, host: str) -> None:
        """A job that moved nothing still owes a record (0 bytes)."""
        self.expected.setdefault((job, host), {k: 0 for k in BYTES})

    def job(self, job: str, hosts: Sequence[str], **traffic) -> None:
        for h in hosts:
            self.hook("prolog", job, h, hosts)
        for h in hosts:
            self.traffic(job, h, **traffic)
        for h in hosts:
            self.hook("epilog", job, h, hosts)

    def records(self) -> Dict[Tuple[str, str], dict]:
        out = {}
        for p in glob.glob(os.path.join(self.store, "c1", "jobs", "*", "*.json")):
            if os.path.islink(p) or not stat.S_ISREG(os.stat(p).st_mode):
                continue  # what the hostile scenarios planted (a FIFO would block this open)
            try:
                with open(p) as f:
                    rec = json.load(f)
                out[(rec["job_id"], rec["host"])] = rec
            except (ValueError, KeyError, TypeError, RecursionError):
                continue
        return out

    # -- the row --------------------------------------------------------------------------
    def row(self, scenario: str, faults: str, *, hung: int = 0, crashed: int = 0,
            exact_required: bool = False) -> Row:
        """Compare the store with what the simulator injected. A record is *exact* when it
        is complete and its bytes are the injected ones, *flagged* when it says it is
        incomplete (and why) or lists counter resets, *wrong* otherwise: bytes off with
        nothing said."""
        recs = self.records()
        exact = flagged = wrong = 0
        for key, want in self.expected.items():
            rec = recs.get(key)
            if rec is None:
                continue
            same = all(rec.get("totals", {}).get(k, 0) == want[k] for k in BYTES)
            if rec.get("complete") and same:
                exact += 1
            elif (not rec.get("complete") and rec.get("incomplete_reasons")) or rec.get("resets"):
                # Says it is short, and why; or names the counters that reset (their
                # deltas are then the values after the reset: a lower bound, docs/records.md).
                flagged += 1
            else:
                wrong += 1
        found = sum(1 for k in self.expected if k in recs)
        if exact_required:
            wrong += flagged
            flagged = 0
        jobs = len({j for j, _ in self.expected})
        return record(Row(scenario, faults, jobs, len(self.expected), found, exact, flagged,
                          wrong, len(self.hook_nonzero), hung, crashed))


def head_command(args: List[str], store: str, timeout: float = 300,
                 env: Optional[dict] = None) -> Tuple[str, subprocess.CompletedProcess]:
    """A head-node command as a user runs it: "ok", "hung" (still running after `timeout`,
    a generous bound: a regression fails, it does not hang the run) or "crashed" (a
    traceback, or an exit code outside the documented ones)."""
    try:
        p = subprocess.run([PY, "-m", "efajob", *args, "--store", store], capture_output=True,
                           text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as e:
        return "hung", subprocess.CompletedProcess(e.cmd, -9, "", "")
    if "Traceback" in p.stderr or not 0 <= p.returncode <= 9:  # 1-9: typed errors
        return "crashed", p
    return "ok", p
