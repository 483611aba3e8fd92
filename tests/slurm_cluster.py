"""A real Slurm cluster on one host: munged, slurmctld and N slurmd (`-N n1..nN`), the efajob
hooks installed by `efajob install hooks`, one simulated EFA tree, run dir, state dir and
`efajob daemon` per node, one shared job store. Used by tests/test_slurm_e2e.py (a session
fixture) and by `slurm/testcluster/up|down` (docs/testcluster.md). The generated files and
names are in slurm_cluster_conf.py.

Everything lives under one root directory:

    etc/slurm.conf, etc/cgroup.conf (Slurm >= 23.02), etc/efajob.toml
    munge/           munged's own key and log (its socket: /tmp/efajob-munge-*/)
    scripts/prolog.d/*, scripts/epilog.d/*     written by `efajob install hooks`
    sys/n1..nN       simulated sysfs trees          nodes/nX/run, nodes/nX/state
    store/           the job store                  log/, spool/nX, state/, out/ (job output)
    testcluster.json the PIDs to stop, the ports, the Slurm version

Every process is started in its own session with `EFAJOB_TESTCLUSTER=<root>` in its
environment. slurmstepd and the job's processes inherit it (slurmd forks slurmstepd; sbatch
exports the submitter's environment), so `stop()` finds and kills, by PID, whatever a failed
test left running, and nothing else. Facts used: shared/notes/slurm.md.

Standard library only: `up` may run under any python3.
"""
from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from efajob.hooks.runfiles import pid_alive
from slurm_cluster_conf import (  # noqa: F401  (re-exported for the tests)
    ACCT_PACKAGES, CLUSTER_NAME, DB_NAME, DB_USER, MARKER_ENV, PACKAGES, POLL, STATE_FILE,
    TERMINAL_STATES, HarnessError, Layout, node_names, parse_sbatch_id, parse_slurm_version,
    render_efajob_conf, render_slurm_conf, render_slurmdbd_conf)
# The accounts the accounting cluster knows (root may submit under either).
ACCOUNTS = ("phys", "bio")

# -- machine helpers -------------------------------------------------------------------------
def sbin(name: str) -> Optional[str]:
    return shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.path.exists(p)), None)


def missing_binaries(accounting: bool = False) -> List[str]:
    extra = ("slurmdbd", "sacctmgr", "mariadbd", "mariadb-install-db") if accounting else ()
    return [b for b in ("slurmctld", "slurmd", "sbatch", "squeue", "munged", *extra)
            if not sbin(b)]


def install_slurm(timeout: float = 900, accounting: bool = False) -> None:
    """apt-get the packages that are not installed (no recommends: 4 packages, not 42)."""
    if not shutil.which("apt-get"):
        raise HarnessError("Slurm is not installed and there is no apt-get to install it")
    missing = []
    for pkg in PACKAGES + (ACCT_PACKAGES if accounting else ()):
        r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True,
                           text=True, timeout=30)
        if "install ok installed" not in r.stdout:
            missing.append(pkg)
    if not missing:
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing]):
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise HarnessError(f"{' '.join(cmd)} failed: {r.stderr.strip()[-2000:]}")


def slurm_version() -> Tuple[int, int]:
    # `slurmd -V` needs no config (`sinfo -V` does).
    r = subprocess.run([sbin("slurmd") or "slurmd", "-V"], capture_output=True, text=True,
                       timeout=30)
    return parse_slurm_version(r.stdout + r.stderr)


def free_ports(n: int) -> List[int]:
    """n distinct free TCP ports, so a system Slurm on 6817/6818 (or another test cluster)
    cannot collide. Bound on all addresses, as slurmctld and slurmd bind."""
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def _environ_has(pid: int, needle: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return needle in f.read().split(b"\0")
    except OSError:
        return False


def marked_pids(root: str) -> List[int]:
    """Every process started by this cluster or one of its jobs (see the module docstring)."""
    needle = f"{MARKER_ENV}={root}".encode()
    me = os.getpid()
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit() and int(d) != me and _environ_has(int(d), needle):
            out.append(int(d))
    return out


def _alive(pid: int) -> bool:
    if not pid_alive(pid):
        return False
    try:  # a zombie child of ours is dead for our purpose
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def kill_pids(pids: Iterable[int], *, grace: float = 3.0,
              sleep: Callable[[float], None] = time.sleep) -> None:
    """SIGTERM, wait up to `grace` seconds, then SIGKILL what is left and wait for it to go."""
    pids = [p for p in pids if p > 1]
    for p in pids:
        try:
            os.kill(p, signal.SIGTERM)
        except OSError:
            pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        sleep(0.05)
    for p in pids:
        if _alive(p):
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
    # SIGKILL is not death: a loaded machine may take a while to tear a process down, and the
    # callers check that nothing is left.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        sleep(0.05)


# -- the cluster -----------------------------------------------------------------------------
class SlurmCluster:
    """Build with `SlurmCluster(root, nodes=..., alloc=...)`, then `start()`; `stop()` always."""

    def __init__(self, root: str, *, nodes: int = 4, alloc: bool = True, hooks: bool = True,
                 daemons: bool = True, interval: float = 0.2, efajob: Optional[str] = None,
                 install: bool = True, accounting: bool = False):
        if not 1 <= nodes <= 16:
            raise HarnessError(f"nodes must be 1..16, got {nodes}")
        self.root = os.path.abspath(root)
        self.lay = Layout(self.root)  # munge_dir: made by start(), removed by stop()
        self.nodes = node_names(nodes)
        self.alloc = alloc
        self.hooks = hooks
        self.daemons = daemons
        self.interval = interval
        self.efajob = efajob or find_efajob()
        self.install = install
        self.accounting = accounting  # slurmdbd and MariaDB on 127.0.0.1 (sacct, sacctmgr)
        self.dbd_port = 0
        self.hostname = socket.gethostname().split(".")[0]
        self.version: Optional[Tuple[int, int]] = None
        self.procs: Dict[str, subprocess.Popen] = {}
        self.pids: Dict[str, int] = {}
        self._stopped = True

    # -- environment ---------------------------------------------------------------------
    @property
    def env(self) -> Dict[str, str]:
        """The environment of every Slurm command and daemon we start (and so of every job)."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_", "SQUEUE_"))}
        env["SLURM_CONF"] = self.lay.slurm_conf
        env[MARKER_ENV] = self.root
        env["PATH"] = env.get("PATH", "/usr/bin:/bin") + ":/usr/sbin:/sbin"
        return env

    def run(self, *cmd: str, timeout: float = 120, check: bool = True,
            env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
        try:
            r = subprocess.run(list(cmd), env=env or self.env, capture_output=True, text=True,
                               timeout=timeout, cwd=self.root)
        except subprocess.TimeoutExpired:
            raise HarnessError(f"{' '.join(cmd)} timed out after {timeout} s") from None
        if check and r.returncode != 0:
            raise HarnessError(f"{' '.join(cmd)} exited {r.returncode}: "
                               f"{(r.stderr or r.stdout).strip()[-2000:]}")
        return r

    # -- start -------------------------------------------------------------------------------
    def start(self, timeout: float = 180) -> "SlurmCluster":
        t0 = time.monotonic()
        if os.path.exists(self.lay.p(STATE_FILE)):
            # Checked before anything that stop() would undo: that cluster is not ours.
            raise HarnessError(f"{self.root} already holds a test cluster: run `down` first")
        if missing_binaries(self.accounting) and self.install:
            install_slurm(accounting=self.accounting)
        missing = missing_binaries(self.accounting)
        if missing:
            raise HarnessError(f"not installed: {', '.join(missing)}")
        self.version = slurm_version()
        self._stopped = False
        atexit.register(self.stop)
        try:
            self.lay = replace(self.lay, munge_dir=tempfile.mkdtemp(prefix="efajob-munge-"))
            os.chmod(self.lay.munge_dir, 0o755)
            self._prepare()
            self._start_munged()
            if self.accounting:
                self._start_accounting()
            self._spawn("slurmctld", [sbin("slurmctld"), "-D", "-i", "-f", self.lay.slurm_conf])
            for n in self.nodes:
                self._spawn(f"slurmd.{n}",
                            [sbin("slurmd"), "-D", "-f", self.lay.slurm_conf, "-N", n])
            if self.daemons:
                for n in self.nodes:
                    self.start_daemon(n)
            self.wait_nodes(("idle",), timeout=max(1.0, timeout - (time.monotonic() - t0)))
        except BaseException:
            self.stop()
            raise
        self.started_in = time.monotonic() - t0
        return self

    def _prepare(self) -> None:
        lay = self.lay
        for d in ("etc", "log", "run", "state", "out", "store", "munge"):
            os.makedirs(lay.p(d), exist_ok=True)
        for n in self.nodes:
            for d in (lay.p("spool", n), lay.run_dir(n), lay.state_dir(n)):
                os.makedirs(d, exist_ok=True)
        ports = free_ports(3 + len(self.nodes))
        self.ctld_port, node_ports = ports[0], dict(zip(self.nodes, ports[1:-2]))
        if self.accounting:
            self.dbd_port, self.db_port = ports[-2:]
        with open(lay.efajob_conf, "w") as f:
            f.write(render_efajob_conf(lay, interval=self.interval))
        if not os.path.exists(lay.sysfs(self.nodes[0])):
            self._efajob("simulate", "init", "--instance-type", "p5.48xlarge", "--kernel", "6.17",
                         "--root", lay.p("sys"), "--nodes", str(len(self.nodes)))
        if self.hooks:
            self.install_hooks()
            for kind in ("prolog.d", "epilog.d"):
                if not os.listdir(lay.p("scripts", kind)):
                    raise HarnessError(f"`efajob install hooks` wrote nothing in scripts/{kind}")
        with open(lay.slurm_conf, "w") as f:
            f.write(render_slurm_conf(lay, hostname=self.hostname, ctld_port=self.ctld_port,
                                      node_ports=node_ports, alloc=self.alloc, hooks=self.hooks,
                                      dbd_port=self.dbd_port))
        if self.version >= (23, 2):
            # Slurm >= 23.02 may initialise a cgroup plugin even with proctrack/linuxproc and
            # task/none; `disabled` (23.02+) is not a valid value in 22.05, so only here.
            with open(lay.p("etc", "cgroup.conf"), "w") as f:
                f.write("CgroupPlugin=disabled\n")
        self._save()

    def install_hooks(self) -> None:
        """The wrappers slurmd runs (absolute interpreter path: hooks get no PATH)."""
        self._efajob("install", "hooks", "--slurm-scripts-dir", self.lay.scripts,
                     "--config", self.lay.efajob_conf)

    def _efajob(self, *args: str, timeout: float = 120) -> str:
        r = self.run(self.efajob, *args, timeout=timeout, check=False)
        if r.returncode != 0:
            raise HarnessError(f"efajob {' '.join(args)} exited {r.returncode}: "
                               f"{(r.stderr or r.stdout).strip()[-2000:]}")
        return r.stdout

    def _start_munged(self) -> None:
        # Our own key and socket: a system munged (or its absence) does not matter.
        key = self.lay.p("munge", "munge.key")
        if not os.path.exists(key):
            fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
            with os.fdopen(fd, "wb") as f:
                f.write(os.urandom(1024))
        m = self.lay.p("munge")
        self._spawn("munged", [sbin("munged"), "-F", f"--socket={self.lay.munge_socket}",
                               f"--key-file={key}", f"--log-file={m}/munged.log",
                               f"--pid-file={m}/munged.pid", f"--seed-file={m}/munged.seed"])
        deadline = time.monotonic() + 60
        while not os.path.exists(self.lay.munge_socket):
            if self.procs["munged"].poll() is not None or time.monotonic() > deadline:
                raise HarnessError("munged did not start: " + self._tail("munge/munged.log"))
            time.sleep(0.02)

    # -- accounting: MariaDB, slurmdbd, the cluster and its accounts --------------------------
    def _start_accounting(self, timeout: float = 120) -> None:
        """A private MariaDB (its own datadir, TCP on 127.0.0.1 only, a socket beside munge's)
        and slurmdbd over it; then the cluster, ACCOUNTS and root's associations, so jobs
        carry an account. shared/notes/slurm.md, "Accounting"."""
        data = self.lay.p("db")
        sock = os.path.join(self.lay.munge_dir, "db.sock")
        if not os.path.isdir(os.path.join(data, "mysql")):
            os.makedirs(data, exist_ok=True)
            self.run(sbin("mariadb-install-db") or "mariadb-install-db", "--no-defaults",
                     "--user=root", f"--datadir={data}", "--skip-test-db",
                     "--auth-root-authentication-method=socket", timeout=300)
        self._spawn("mariadbd", [sbin("mariadbd"), "--no-defaults", "--user=root",
                                 f"--datadir={data}", f"--socket={sock}",
                                 "--bind-address=127.0.0.1", f"--port={self.db_port}",
                                 f"--pid-file={self.lay.p('run', 'mariadbd.pid')}",
                                 f"--log-error={self.lay.p('log', 'mariadbd.log')}",
                                 "--innodb-buffer-pool-size=64M", "--skip-name-resolve"])
        self._wait(lambda: os.path.exists(sock), "mariadbd", "log/mariadbd.log", timeout)
        pw = os.urandom(12).hex()
        sql = "".join(f"CREATE USER IF NOT EXISTS '{DB_USER}'@'{h}' IDENTIFIED BY '{pw}'; "
                      f"ALTER USER '{DB_USER}'@'{h}' IDENTIFIED BY '{pw}'; "
                      f"GRANT ALL ON {DB_NAME}.* TO '{DB_USER}'@'{h}'; "
                      for h in ("127.0.0.1", "localhost"))
        self.run("mariadb", "--no-defaults", "-uroot", f"--socket={sock}", "-e", sql)
        conf = self.lay.p("etc", "slurmdbd.conf")
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(render_slurmdbd_conf(self.lay, hostname=self.hostname,
                                         dbd_port=self.dbd_port, db_port=self.db_port,
                                         db_pass=pw))
        os.chmod(conf, 0o600)  # slurmdbd refuses a config others can read
        # slurmdbd finds slurmdbd.conf beside $SLURM_CONF.
        self._spawn("slurmdbd", [sbin("slurmdbd"), "-D"])
        last: List[str] = []

        def dbd_up() -> bool:
            r = self.run("sacctmgr", "-n", "-P", "list", "cluster", check=False, timeout=30)
            last[:] = [r.stderr.strip()]
            return r.returncode == 0

        self._wait(dbd_up, "slurmdbd", "log/slurmdbd.log", timeout, last)
        self.run("sacctmgr", "-i", "add", "cluster", CLUSTER_NAME, check=False)
        self.run("sacctmgr", "-i", "add", "account", ",".join(ACCOUNTS),
                 f"cluster={CLUSTER_NAME}", check=False)
        self.run("sacctmgr", "-i", "add", "user", "root", f"account={','.join(ACCOUNTS)}",
                 f"defaultaccount={ACCOUNTS[0]}", f"cluster={CLUSTER_NAME}", check=False)
        got = self.run("sacctmgr", "-n", "-P", "list", "assoc", f"cluster={CLUSTER_NAME}",
                       "user=root", "format=account").stdout.split()
        if not set(ACCOUNTS) <= set(got):  # root also holds the `root` account
            raise HarnessError(f"root's associations are {got}, lacking some of {ACCOUNTS}: "
                               + self._tail("log/slurmdbd.log"))

    def _wait(self, ready: Callable[[], bool], name: str, log: str, timeout: float,
              why: Sequence[str] = ()) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if self.procs[name].poll() is not None or time.monotonic() > deadline:
                raise HarnessError(f"{name} did not start ({' '.join(why)}): {self._tail(log)}"
                                   f"{self._tail('log/' + name + '.out', 600)}")
            time.sleep(POLL)

    def sacct(self, *args: str) -> List[List[str]]:
        """`sacct -X -n -P <args>` split into fields (the last may hold '|')."""
        fields = next((a.split("=", 1)[1] for a in args if a.startswith("--format=")), "")
        n = len(fields.split(",")) if fields else 0
        out = self.run("sacct", "-X", "-n", "-P", *args).stdout
        return [line.split("|", n - 1) if n else line.split("|")
                for line in out.splitlines() if line]

    def _spawn(self, name: str, cmd: Sequence[Optional[str]]) -> subprocess.Popen:
        with open(self.lay.p("log", f"{name}.out"), "ab") as out:
            p = subprocess.Popen([c for c in cmd if c], env=self.env, stdout=out,
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 cwd=self.root, start_new_session=True)
        self.procs[name] = p
        self.pids[name] = p.pid
        self._save()
        return p

    def _save(self) -> None:
        state = {"root": self.root, "nodes": self.nodes, "alloc": self.alloc,
                 "accounting": self.accounting, "dbd_port": self.dbd_port,
                 "version": list(self.version or ()), "hostname": self.hostname,
                 "ctld_port": getattr(self, "ctld_port", None), "pids": self.pids,
                 "efajob": self.efajob, "slurm_conf": self.lay.slurm_conf,
                 "munge_dir": self.lay.munge_dir}
        tmp = self.lay.p("." + STATE_FILE)
        with open(tmp, "w") as f:
            json.dump(state, f, indent=1)
        os.replace(tmp, self.lay.p(STATE_FILE))

    def _tail(self, rel: str, n: int = 2000) -> str:
        try:
            with open(self.lay.p(rel), "rb") as f:
                f.seek(0, 2)
                f.seek(max(0, f.tell() - n))
                return f.read().decode(errors="replace")
        except OSError as e:
            return f"({rel}: {e.strerror})"

    # -- daemons ---------------------------------------------------------------------------
    def start_daemon(self, node: str) -> subprocess.Popen:
        return self._spawn(f"daemon.{node}", [self.efajob, "daemon", "--config",
                                              self.lay.efajob_conf, "--node", node])

    def daemon_alive(self, node: str) -> bool:
        p = self.procs.get(f"daemon.{node}")
        return p is not None and p.poll() is None

    def kill_daemon(self, node: str, sig: int = signal.SIGKILL) -> None:
        p = self.procs[f"daemon.{node}"]
        p.send_signal(sig)
        p.wait(timeout=10)

    def ensure_daemons(self) -> None:
        if self.daemons:
            for n in self.nodes:
                if not self.daemon_alive(n):
                    self.start_daemon(n)

    # -- Slurm queries -----------------------------------------------------------------------
    def sbatch(self, *args: str, wrap: Optional[str] = None) -> str:
        cmd = ["sbatch", "--parsable", "-o", self.lay.p("out", "%j.out")] + list(args)
        if wrap is not None:
            cmd += ["--wrap", wrap]
        return parse_sbatch_id(self.run(*cmd).stdout)

    def job_state(self, job_id: str) -> str:
        """The state of a job (or, for an array, its tasks' states joined by ',')."""
        r = self.run("squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T", check=False)
        return ",".join(sorted(set(r.stdout.split()))) if r.returncode == 0 else ""

    def wait_state(self, job_id: str, want: Callable[[str], bool], timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            state = self.job_state(job_id)
            if state and want(state):
                return state
            time.sleep(POLL)
        raise HarnessError(f"job {job_id}: still {state or 'unknown'} after {timeout} s\n"
                           + self.diagnostics(job_id))

    def wait_running(self, job_id: str, timeout: float = 120) -> str:
        return self.wait_state(job_id, lambda s: s == "RUNNING", timeout)

    def wait_done(self, job_id: str, timeout: float = 180) -> str:
        return self.wait_state(
            job_id, lambda s: all(x in TERMINAL_STATES for x in s.split(",")), timeout)

    def node_states(self) -> Dict[str, str]:
        r = self.run("sinfo", "-h", "-N", "-o", "%N %T", check=False)
        out = {}
        for line in r.stdout.splitlines():
            parts = line.split()
            if len(parts) == 2:
                out[parts[0]] = parts[1]
        return out

    def node_state(self, node: str) -> str:
        return self.run("sinfo", "-h", "-n", node, "-o", "%T").stdout.strip()

    def node_reason(self, node: str) -> str:
        out = self.run("scontrol", "-o", "show", "node", node).stdout
        m = re.search(r"\bReason=(.*?)(?: \w+=|$)", out)
        return m.group(1) if m else ""

    def wait_nodes(self, states: Sequence[str] = ("idle",), nodes: Optional[Sequence[str]] = None,
                   timeout: float = 120) -> Dict[str, str]:
        nodes = list(nodes or self.nodes)
        deadline = time.monotonic() + timeout
        cur: Dict[str, str] = {}
        while time.monotonic() < deadline:
            self._check_alive()
            cur = self.node_states()
            if all(cur.get(n) in states for n in nodes):
                return cur
            time.sleep(POLL)
        raise HarnessError(f"nodes not {'/'.join(states)} after {timeout} s: {cur}\n"
                           + self.diagnostics())

    def _check_alive(self) -> None:
        for name in ["munged", "slurmctld"] + [f"slurmd.{n}" for n in self.nodes]:
            p = self.procs.get(name)
            if p is not None and p.poll() is not None:
                log = "log/slurmctld.log" if name == "slurmctld" else f"log/{name}.out"
                if name.startswith("slurmd."):
                    log = f"log/slurmd.{name.split('.', 1)[1]}.log"
                raise HarnessError(f"{name} exited with {p.returncode}: {self._tail(log)}"
                                   f"{self._tail('log/' + name + '.out', 600)}")

    def resume(self, node: str) -> None:
        self.run("scontrol", "update", f"nodename={node}", "state=resume", check=False)

    def diagnostics(self, job_id: Optional[str] = None) -> str:
        parts = [self.run("sinfo", "-N", "-l", check=False).stdout]
        if job_id:
            parts.append(self.run("scontrol", "-o", "show", "job", job_id, check=False).stdout)
            parts.append(self._tail(f"out/{job_id}.out", 1500))
        parts.append(self._tail("log/slurmctld.log", 1500))
        return "\n".join(parts)

    # -- job store -------------------------------------------------------------------------
    def record(self, job_id: str, host: str, restart: int = 0) -> Optional[dict]:
        try:
            with open(self.lay.record_path(job_id, host, restart)) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def wait_records(self, job_id: str, hosts: Sequence[str], restart: int = 0,
                     timeout: float = 120) -> Dict[str, dict]:
        deadline = time.monotonic() + timeout
        got: Dict[str, dict] = {}
        while True:
            got = {h: r for h in hosts for r in [self.record(job_id, h, restart)] if r is not None}
            if len(got) == len(hosts) or time.monotonic() > deadline:
                break
            time.sleep(POLL)
        if len(got) != len(hosts):
            raise HarnessError(f"job {job_id}: records of {sorted(set(hosts) - set(got))} "
                               f"missing after {timeout} s; store has "
                               f"{self.store_listing(job_id)}; outboxes {self.outboxes()}\n"
                               f"{self.daemon_logs()}")
        return got

    def store_listing(self, job_id: str) -> List[str]:
        d = os.path.dirname(self.lay.record_path(job_id, "x"))
        return sorted(os.listdir(d)) if os.path.isdir(d) else []

    def outboxes(self) -> Dict[str, List[str]]:
        out = {}
        for n in self.nodes:
            d = os.path.join(self.lay.state_dir(n), "outbox")
            out[n] = sorted(os.listdir(d)) if os.path.isdir(d) else []
        return out

    def daemon_logs(self, n: int = 1500) -> str:
        # The daemons log to the config's log_file; the hooks only to stderr and syslog.
        return "\n".join(f"== efajob.{node}.log\n{self._tail(f'log/efajob.{node}.log', n)}"
                         for node in self.nodes)

    def report(self, job_id: str, *extra: str, timeout: float = 120,
               missing_ok: bool = False) -> Optional[dict]:
        """`efajob report --format json`; None for exit 5 (no record nor live node status yet)
        when `missing_ok`."""
        args = ("report", job_id, "--format", "json", "--store", self.lay.store,
                "--cluster", CLUSTER_NAME, *extra)
        if missing_ok:
            r = self.run(self.efajob, *args, timeout=timeout, check=False)
            if r.returncode == 5:
                return None
        return json.loads(self._efajob(*args, timeout=timeout))

    # -- between tests and at the end ------------------------------------------------------
    def cancel_all(self, timeout: float = 120) -> None:
        r = self.run("squeue", "-h", "-o", "%A", check=False)
        ids = sorted(set(r.stdout.split()))
        if not ids:
            return
        self.run("scancel", *ids, check=False)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.run("squeue", "-h", "-o", "%A", check=False).stdout.strip():
                return
            time.sleep(POLL)

    def stop(self) -> None:
        """Stop everything this cluster started, by PID; safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        try:
            if self.procs.get("slurmctld") and self.procs["slurmctld"].poll() is None:
                self.cancel_all(timeout=5)
        except Exception:  # stopping must go on whatever the queue says
            pass
        # Daemons first (they flush on SIGTERM), then Slurm, munged last (slurmd talks to it).
        order = sorted(self.procs, key=lambda k: (k == "munged", k == "mariadbd", k.startswith("slurm"), k))
        for name in order:
            p = self.procs[name]
            if p.poll() is None:
                kill_pids([p.pid])
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        kill_pids(marked_pids(self.root))  # slurmstepd and job processes left behind
        if self.lay.munge_dir:
            shutil.rmtree(self.lay.munge_dir, ignore_errors=True)
        try:
            os.unlink(self.lay.p(STATE_FILE))
        except OSError:
            pass
        try:
            atexit.unregister(self.stop)
        except Exception:
            pass


def find_efajob() -> str:
    """The efajob of this interpreter's environment (the venv), else the one on PATH. Hooks and
    job steps get no PATH: everything they run must be an absolute path."""
    env = os.environ.get("EFAJOB_BIN")
    if env:
        return env
    here = os.path.join(os.path.dirname(sys.executable), "efajob")
    if os.access(here, os.X_OK):
        return here
    found = shutil.which("efajob")
    if not found:
        raise HarnessError("no efajob executable: `pip install -e .` into the venv, "
                           "or set EFAJOB_BIN")
    return found


def stop_root(root: str) -> List[int]:
    """`down`: stop a cluster started by another process (`up`), from its state file and the
    environment marker. Returns the PIDs signalled."""
    root = os.path.abspath(root)
    path = os.path.join(root, STATE_FILE)
    pids: List[int] = []
    if os.path.exists(path):
        with open(path) as f:
            state = json.load(f)
        named = state.get("pids", {})
        conf = state.get("slurm_conf")
        if conf and "slurmctld" in named:
            env = dict(os.environ, SLURM_CONF=conf)
            r = subprocess.run(["squeue", "-h", "-o", "%A"], env=env, capture_output=True,
                               text=True, timeout=10)
            ids = sorted(set(r.stdout.split()))
            if ids:
                subprocess.run(["scancel", *ids], env=env, capture_output=True, timeout=10)
        order = sorted(named, key=lambda k: (k == "munged", k == "mariadbd", k.startswith("slurm"), k))
        # Only PIDs that still carry this root's marker: never a recycled PID.
        ours = set(marked_pids(root))
        pids = [named[k] for k in order if named[k] in ours]
        for p in pids:
            kill_pids([p])
        os.unlink(path)
        md = state.get("munge_dir") or ""
        if os.path.basename(md).startswith("efajob-munge-"):
            shutil.rmtree(md, ignore_errors=True)
    rest = marked_pids(root)
    kill_pids(rest)
    return pids + rest
