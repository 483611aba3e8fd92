"""`efajob demo`: a simulated 4-node p5 cluster, a daemon per node, three jobs through the real
hooks, and their reports. No root, no Slurm, no AWS; about 20 seconds.

Everything runs for real except the hardware and Slurm: each node is a simulated sysfs tree
(efajob.sim) driven in real time, each node runs `efajob daemon` as a subprocess (sampling
at 0.2 s, forwarding outbox records to a job store in the demo directory), and each job runs
`python -m efajob.hooks.entry prolog|epilog` subprocesses with the environment slurmd would give them.
The jobs:

  101  a healthy all-reduce on every node;
  102  one node slow, with a dead EFA device (a straggler);
  103  traffic over ENA (TCP sockets) instead of EFA: NCCL's silent fallback.

Every process started here is stopped by PID on the way out, also on Ctrl-C or failure.
Printing goes through the `say` callback: the CLI decides where it goes.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Union

from efajob.errors import EfajobError

if TYPE_CHECKING:
    from types import FrameType

    from efajob.sim.tree import SimNode

    SignalHandler = Union[Callable[[int, Optional[FrameType]], Any], int, signal.Handlers, None]

CLUSTER = "demo"
INSTANCE_TYPE = "p5.48xlarge"
INTERVAL = 0.2  # daemon sampling interval: a few-second job still gets a time series
# These only bound a hang (a healthy run on an idle laptop takes seconds): generous, so a
# machine busy with other work still finishes the demo rather than failing it.
HOOK_TIMEOUT = 60.0
DAEMON_START_TIMEOUT = 60.0
DELIVERY_TIMEOUT = 120.0  # the daemon forwards its outbox every 5 s


@dataclass(frozen=True)
class DemoJob:
    job_id: str
    user: str
    title: str
    # node index (0-based) -> traffic() keyword arguments; "*" for every other node
    traffic: Dict[str, dict]


def demo_jobs(seconds: float) -> List[DemoJob]:
    # Counters move twice per daemon interval: a sample then never sees two steps or none
    # (which would read as a peak twice the rate, or a dip to zero).
    s = dict(seconds=seconds, step=INTERVAL / 2)
    return [
        DemoJob("101", "alice", "healthy all-reduce on every node",
                {"*": dict(tx_gbps=1200, rx_gbps=1200, pattern="allreduce", **s)}),
        DemoJob("102", "bob", "one node slow, with a dead EFA device",
                {"*": dict(tx_gbps=1200, rx_gbps=1200, pattern="allreduce", **s),
                 "2": dict(tx_gbps=300, rx_gbps=300, pattern="allreduce", fault="dead-device", **s)}),
        DemoJob("103", "carol", "NCCL fell back to TCP sockets over ENA",
                {"*": dict(tx_gbps=0.0005, rx_gbps=0.0005, ena_tx_gbps=20, ena_rx_gbps=20, **s)}),
    ]


@dataclass
class DemoResult:
    root: str
    store: str
    config: str
    reports: List = field(default_factory=list)  # report.JobReport, in job order
    kept: bool = False


def write_config(path: str, root: str) -> None:
    """A node config whose paths depend on `{node}`: several simulated nodes share this host."""
    text = (
        "# efajob demo: one file for every node ({node} is EFAJOB_NODE / SLURMD_NODENAME)\n"
        f'cluster = "{CLUSTER}"\n'
        f'instance_type = "{INSTANCE_TYPE}"\n'
        f'sysfs_root = "{root}/sys/{{node}}"\n'
        # The simulated nodes' ENA allowance counters (docs/ena.md): an `ethtool -S` file each.
        f'ethtool = "{root}/sys/{{node}}/.efajob-sim/ethtool"\n'
        f'run_dir = "{root}/run/{{node}}"\n'
        f'state_dir = "{root}/state/{{node}}"\n'
        f'store = "{root}/store"\n'
        f"interval = {INTERVAL}\n"
        "status_interval = 1.0\n"
        "rediscover_interval = 30.0\n"
        f'log_file = "{root}/log/{{node}}.log"\n'
        "\n[thresholds]\n"
        "# The demo's jobs last seconds, not hours: do not flag them as too short to judge.\n"
        "short_job_seconds = 1\n"
    )
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


class _Procs:
    """Processes this demo started; stopped by PID, never by name."""

    def __init__(self) -> None:
        self.procs: List[subprocess.Popen] = []

    def start(self, argv: Sequence[str], env: Dict[str, str], log_path: str) -> subprocess.Popen:
        log = open(log_path, "ab")
        try:
            p = subprocess.Popen(list(argv), env=env, stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()
        self.procs.append(p)
        return p

    def stop_all(self, timeout: float = 5.0) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    p.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + timeout
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
        self.procs.clear()


def _base_env(config: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM", "EFAJOB_"))}
    env["EFAJOB_CONFIG"] = config
    # The subprocesses must import this very efajob, wherever it was imported from.
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = pkg_parent + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _hook_env(base: Dict[str, str], job: DemoJob, node: str, nodes: Sequence[str], uid: int,
              epilog: bool) -> Dict[str, str]:
    from efajob.slurm.hostlist import fold

    env = dict(base)
    env.update({
        # What slurmd sets for Prolog/Epilog (shared/notes/slurm.md); no PATH of its own.
        "SLURM_JOB_ID": job.job_id, "SLURMD_NODENAME": node, "SLURM_JOB_USER": job.user,
        "SLURM_JOB_UID": str(uid), "SLURM_JOB_NODELIST": fold(nodes), "SLURM_NODELIST": fold(nodes),
        "SLURM_JOB_NUM_NODES": str(len(nodes)), "SLURM_JOB_PARTITION": "p5",
        "SLURM_JOB_ACCOUNT": "research", "SLURM_CLUSTER_NAME": CLUSTER,
        "SLURM_JOB_START_TIME": str(int(time.time())),
    })
    if epilog:
        env.update({"SLURM_JOB_EXIT_CODE": "0", "SLURM_JOB_EXIT_CODE2": "0:0",
                    "SLURM_JOB_DERIVED_EC": "0"})
    return env


def _run_hooks(what: str, job: DemoJob, nodes: Sequence[str], base: Dict[str, str],
               logdir: str) -> None:
    """One hook per node, concurrently, as slurmd runs them."""
    uid = 1000 + int(job.job_id) % 100
    procs = []
    for node in nodes:
        env = _hook_env(base, job, node, nodes, uid, what == "epilog")
        log = open(os.path.join(logdir, f"hook-{job.job_id}-{node}.log"), "ab")
        try:
            procs.append((node, subprocess.Popen(
                [sys.executable, "-m", "efajob.hooks.entry", what], env=env, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT)))
        finally:
            log.close()
    for node, p in procs:
        try:
            p.wait(timeout=HOOK_TIMEOUT)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)
            raise EfajobError(f"the {what} hook of job {job.job_id} on {node} hung "
                              f"(> {HOOK_TIMEOUT:g} s); see {logdir}") from None


def _wait_for(pred: Callable[[], bool], timeout: float, what: str, procs: Optional[_Procs] = None,
              logdir: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if procs is not None:
            dead = [p for p in procs.procs if p.poll() is not None]
            if dead:
                raise EfajobError(f"a node daemon exited (code {dead[0].returncode}) while "
                                  f"waiting for {what}; see the logs in {logdir}")
        if time.monotonic() > deadline:
            raise EfajobError(f"timed out after {timeout:g} s waiting for {what}; see {logdir}")
        time.sleep(0.1)


def _drive(sim_nodes: Dict[str, SimNode], names: Sequence[str], job: DemoJob) -> None:
    """Real-time traffic on every node at once (one thread per node: each sleeps between
    steps, so the daemons sample a moving counter)."""
    errors: List[BaseException] = []

    def one(i: int, name: str) -> None:
        kw = job.traffic.get(str(i), job.traffic["*"])
        try:
            sim_nodes[name].traffic(realtime=True, **kw)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(e)

    threads = [threading.Thread(target=one, args=(i, n), daemon=True) for i, n in enumerate(names)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def run_demo(*, keep: Optional[str] = None, nodes: int = 4, seconds: float = 3.0,
             say: Callable[[str], None] = lambda s: None) -> DemoResult:
    """Run the whole demo; return the reports. Raises EfajobError when a part fails."""
    from efajob import sim
    from efajob.report.assemble import build_job_report
    from efajob.config import load_config

    if nodes < 2:
        raise EfajobError("the demo needs at least 2 nodes (jobs 102 and 103 compare nodes)")
    t0 = time.monotonic()

    def step(msg: str) -> None:
        say(f"[{time.monotonic() - t0:5.1f}s] {msg}")

    if keep:
        root = os.path.abspath(keep)
        if os.path.exists(root) and os.listdir(root):
            raise EfajobError(f"--keep {keep}: the directory is not empty")
        os.makedirs(root, exist_ok=True)
    else:
        root = tempfile.mkdtemp(prefix="efajob-demo-")
    for d in ("run", "state", "log", "store"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    config = os.path.join(root, "config.toml")
    logdir = os.path.join(root, "log")
    result = DemoResult(root=root, store=os.path.join(root, "store"), config=config, kept=bool(keep))
    procs = _Procs()
    old_term = _term_as_interrupt()
    try:
        names = [f"n{i}" for i in range(1, nodes + 1)]
        step(f"building a simulated {nodes}-node {INSTANCE_TYPE} cluster (32 EFA devices per node) "
             f"in {root}" + ("" if keep else " (deleted at the end; --keep DIR keeps it)"))
        step(f"config {config}, logs in {logdir}, job store {result.store}")
        sim_nodes = sim.build_cluster(os.path.join(root, "sys"), names, instance_type=INSTANCE_TYPE)
        write_config(config, root)
        base = _base_env(config)
        step(f"starting a node daemon per node (`efajob daemon`, sampling every {INTERVAL:g} s)")
        for n in names:
            env = dict(base, EFAJOB_NODE=n)
            procs.start([sys.executable, "-c", "from efajob.cli.main import main; main()", "daemon",
                         "--config", config, "--node", n], env,
                        os.path.join(logdir, f"daemon-{n}.out"))
        cfgs = {n: load_config(config, env=base, node=n) for n in names}
        from efajob.hooks.outbox import daemon_alive

        _wait_for(lambda: all(daemon_alive(c) for c in cfgs.values()), DAEMON_START_TIMEOUT,
                  "the node daemons to start", procs, logdir)
        for job in demo_jobs(seconds):
            step(f"job {job.job_id} ({job.user}): {job.title}: prolog on {len(names)} nodes")
            _run_hooks("prolog", job, names, base, logdir)
            step(f"job {job.job_id}: {seconds:g} s of simulated traffic")
            _drive(sim_nodes, names, job)
            time.sleep(2 * INTERVAL)  # let the daemons take the last sample of the job
            step(f"job {job.job_id}: epilog on {len(names)} nodes (records into the outboxes)")
            _run_hooks("epilog", job, names, base, logdir)
        step("waiting for the daemons to deliver the records to the job store")
        want = [os.path.join(result.store, CLUSTER, "jobs", j.job_id, f"{n}.json")
                for j in demo_jobs(seconds) for n in names]
        _wait_for(lambda: all(os.path.exists(p) for p in want), DELIVERY_TIMEOUT,
                  "the records in the job store", procs, logdir)
        step("all records delivered; stopping the daemons")
        procs.stop_all()
        cfg = cfgs[names[0]]
        for job in demo_jobs(seconds):
            result.reports.append(build_job_report(cfg, job.job_id, cluster=CLUSTER,
                                                   use_slurm=False))
        step("done")
        return result
    finally:
        procs.stop_all()
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def _term_as_interrupt() -> SignalHandler:
    """SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C, so the daemons are stopped too.
    Returns the previous handler (None when not in the main thread: nothing installed)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: Optional[FrameType]) -> None:
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, handler)
