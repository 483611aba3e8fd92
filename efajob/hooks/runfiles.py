"""The run dir: what the prolog leaves for the epilog and the daemon.

Layout (docs/records.md):
    <run_dir>/active/<key>.json   small, versioned: who the job is, when it started (the daemon
                                  reads these every tick to tag samples with job ids)
    <run_dir>/start/<key>.json    the prolog's start snapshot (`Snapshot.to_dict()`)
    <run_dir>/finished.json       a short history of jobs that ended here (hooks/entry.py), so the
                                  epilog finds overlapping jobs without a daemon
    <run_dir>/hooks.lock          flock(2) target around that history
    <run_dir>/devices.json        the last full discovery of EFA devices (node/devcache.py), for
                                  the hooks' snapshots

where key = `<jobid>` or `<jobid>.<restart>` (jobid.job_key). Every file is written to a temp
file in the same directory and renamed over the target, so a reader sees the old file, the new
file or nothing, never a half-written one. Temp files start with "." and readers skip them.

The run dir is meant to be on local disk (/run is a tmpfs): nothing here fsyncs, because a
reboot wipes these files anyway. What must outlive a crash is a copy of the active file in
`<state_dir>/active/<key>.json` (write_active's `durable_dir`, on disk): from it the daemon's
reconcile (daemon/reconcile.py) makes the record of a job that ran before the reboot.

On the hook import path: standard library only, and no `json`, `re`, `typing` or
`dataclasses` at run time (efajob/fastjson.py, efajob/frozen.py: bench/hooks.py).
"""
from __future__ import annotations

import os

from efajob.errors import RecordError
from efajob.fastjson import dumps as _json_dumps
from efajob.frozen import Frozen
from efajob.slurm.jobid import is_key
from efajob.slurm.jobid import job_key as job_key  # part of this module's API
from efajob.node.readings import Snapshot
from efajob.atomicfile import atomic_write as atomic_write  # part of this module's API
from efajob.atomicfile import FILE_MODE as FILE_MODE
from efajob.atomicfile import fsync_dir as fsync_dir
from efajob.values import loads_checked, read_regular

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Dict, List, Optional, Tuple



class LazyLogger:
    """A logging.Logger stand-in that imports `logging` on first use. The hooks log nothing
    on the happy path, and importing logging costs a few ms of every job's start
    (bench/hooks.py). `on_first_use` (set by the hook) configures handlers first."""

    on_first_use: Optional[Callable[[], None]] = None

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str):
        import logging

        setup, LazyLogger.on_first_use = LazyLogger.on_first_use, None
        if setup is not None:
            setup()
        return getattr(logging.getLogger(self._name), attr)


log = LazyLogger("efajob.runfiles")

RUNFILE_VERSION = 1
ACTIVE_SCHEMA = "efajob/active-job"
ACTIVE_DIR = "active"
START_DIR = "start"
# Run-dir files are not secret (job ids, user names, counters: what squeue and sysfs show
# anyway); the daemon and `efajob status` read them.
DIR_MODE = 0o755
PRIVATE_FILE_MODE = 0o600


class ActiveJob(Frozen):
    """A job the prolog saw start on this node. `start_mono` is CLOCK_MONOTONIC of the start
    snapshot and only means something within `boot_id`."""

    key: str
    job_id: str
    restart: int
    user: Optional[str]
    uid: Optional[int]
    partition: Optional[str]
    account: Optional[str]
    cluster: str
    node: str
    nodelist: Optional[str]
    num_nodes: Optional[int]
    start_wall: float
    start_mono: float
    boot_id: str

    def to_dict(self) -> dict:
        d = {"schema": ACTIVE_SCHEMA, "version": RUNFILE_VERSION}
        d.update(Frozen.to_dict(self))
        return d

    @classmethod
    def from_dict(cls, d: object) -> "ActiveJob":
        """Validate a parsed active-job file; raise RecordError naming what is wrong."""
        if not isinstance(d, dict):
            raise RecordError("active-job file is not a JSON object")
        if d.get("schema") != ACTIVE_SCHEMA:
            raise RecordError(f"active-job file has schema {d.get('schema')!r}")
        if d.get("version") != RUNFILE_VERSION:
            raise RecordError(f"active-job file version {d.get('version')!r} is not {RUNFILE_VERSION}")
        try:
            job = cls(
                key=_req(d, "key", str),
                job_id=_req(d, "job_id", str),
                restart=_req(d, "restart", int),
                user=_opt(d, "user", str),
                uid=_opt(d, "uid", int),
                partition=_opt(d, "partition", str),
                account=_opt(d, "account", str),
                cluster=_req(d, "cluster", str),
                node=_req(d, "node", str),
                nodelist=_opt(d, "nodelist", str),
                num_nodes=_opt(d, "num_nodes", int),
                start_wall=float(_req(d, "start_wall", (int, float))),
                start_mono=float(_req(d, "start_mono", (int, float))),
                boot_id=_req(d, "boot_id", str),
            )
        except (KeyError, TypeError) as e:
            raise RecordError(f"active-job file: {e.args[0]}") from None
        if not is_key(job.key) or job_key(job.job_id, job.restart) != job.key:
            raise RecordError(f"active-job file: key {job.key!r} does not match its job id")
        return job


def _req(d: dict, name: str, typ):
    if name not in d:
        raise KeyError(f"missing field {name!r}")
    return _opt(d, name, typ, required=True)


def _opt(d: dict, name: str, typ, required: bool = False):
    v = d.get(name)
    if v is None and not required:
        return None
    # bool is an int in Python; a JSON `true` uid is still garbage.
    if isinstance(v, bool) or not isinstance(v, typ):
        raise TypeError(f"field {name!r} has the wrong type ({type(v).__name__})")
    return v


# -- atomic files ----------------------------------------------------------------------------
def ensure_dir(path: str, mode: int = DIR_MODE) -> None:
    """mkdir -p with a deliberate mode (umask does not get a say)."""
    if os.path.isdir(path):
        return
    os.makedirs(path, mode=mode, exist_ok=True)
    os.chmod(path, mode)


def dumps(obj: object) -> bytes:
    return _json_dumps(obj, sort_keys=True).encode()


def read_json(path: str, max_bytes: int = 64 << 20) -> object:
    """Parse a JSON file; OSError / ValueError propagate. Bounded so garbage cannot eat memory."""
    data = read_regular(path, max_bytes)
    if len(data) > max_bytes:
        raise ValueError(f"{path} is larger than {max_bytes} bytes")
    return loads_checked(data)


_HEX = frozenset("0123456789abcdef")


def temp_file_pid(name: str) -> Optional[int]:
    """The writer's pid in one of atomic_write's temp names (`.<name>.<pid>.<8 hex>.tmp`,
    i.e. \\..+\\.([0-9]{1,10})\\.[0-9a-f]{8}\\.tmp), else None."""
    if not (name.startswith(".") and name.endswith(".tmp")):
        return None
    parts = name[1:-4].rsplit(".", 2)
    if len(parts) != 3 or not parts[0]:
        return None
    _, pid, tag = parts
    if not (len(tag) == 8 and not (set(tag) - _HEX)):
        return None
    if not (1 <= len(pid) <= 10 and pid.isascii() and pid.isdigit()):
        return None
    return int(pid)


def sweep_temp_files(dirs: List[str], now_wall: float, min_age: float = 600.0) -> List[str]:
    """Remove atomic_write's temp files that a killed writer left (`.<name>.<pid>.<hex>.tmp`):
    older than `min_age` seconds and whose pid is gone. The daemon's worker calls this with
    reconcile; a live writer's file is never touched (its pid lives, and it is seconds old).
    Returns the paths removed; errors are skipped (the next round tries again)."""
    removed = []
    for d in dirs:
        try:
            entries = list(os.scandir(d))
        except OSError:
            continue
        for e in entries:
            pid = temp_file_pid(e.name)
            if pid is None:
                continue
            try:
                st = e.stat(follow_symlinks=False)
                if now_wall - st.st_mtime < min_age or pid_alive(pid):
                    continue
                os.unlink(e.path)
                removed.append(e.path)
            except OSError:
                continue
    return removed


def pid_alive(pid: int) -> bool:
    """Whether a process `pid` exists (one we may not signal still does)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- the run dir -----------------------------------------------------------------------------
def active_path(run_dir: str, key: str) -> str:
    return os.path.join(run_dir, ACTIVE_DIR, _checked(key) + ".json")


def start_path(run_dir: str, key: str) -> str:
    return os.path.join(run_dir, START_DIR, _checked(key) + ".json")


def _checked(key: str) -> str:
    if not is_key(key):
        raise RecordError(f"job key {key!r} is not valid")
    return key


def write_active(run_dir: str, job: ActiveJob, start: Snapshot, private: bool = False,
                 durable_dir: Optional[str] = None) -> None:
    """The prolog's output: the start snapshot first, then the active file, each atomic. In
    that order so that whoever sees an active file also finds its start snapshot. `private`
    (private_records): both files root's only, 0600; their names (job keys) stay visible.

    `durable_dir` (the state dir, on disk): a copy of the active file there, last. The run dir
    is a tmpfs that a crash wipes, and with it every trace of the jobs that ran: from this
    copy the restarted daemon makes their records (daemon/reconcile.py), from the old boot's
    samples. Not fsynced (a crash within the first seconds of a job may lose it; a fsync per
    job start costs more than it saves). When it cannot be written the job still runs with
    accounting: OSError is not raised, a warning is logged."""
    if job_key(job.job_id, job.restart) != job.key:
        raise RecordError(f"active job key {job.key!r} does not match its job id")
    for sub in (START_DIR, ACTIVE_DIR):
        ensure_dir(os.path.join(run_dir, sub))
    mode = PRIVATE_FILE_MODE if private else FILE_MODE
    atomic_write(start_path(run_dir, job.key), dumps(start.to_dict()), mode=mode)
    data = dumps(job.to_dict())
    try:
        atomic_write(active_path(run_dir, job.key), data, mode=mode)
    except BaseException:
        # All or nothing: a start file without its active file would be a stray.
        try:
            os.unlink(start_path(run_dir, job.key))
        except OSError:
            pass
        raise
    if durable_dir is not None:
        try:
            ensure_dir(os.path.join(durable_dir, ACTIVE_DIR), 0o700)
            atomic_write(active_path(durable_dir, job.key), data, mode=PRIVATE_FILE_MODE)
        except OSError as e:
            log.warning("job %s: no durable copy of its active file in %s (%s): a node crash "
                        "during the job would leave it without a record", job.key, durable_dir,
                        e.strerror or e)


def read_active(run_dir: str, key: str) -> Optional[ActiveJob]:
    """One active-job file, or None when there is none. Raises RecordError when it is bad."""
    try:
        return ActiveJob.from_dict(read_json(active_path(run_dir, key)))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise RecordError(f"active-job file for {key}: {e}") from None


def read_start(run_dir: str, key: str) -> Optional[Snapshot]:
    """The start snapshot, or None when there is none. Raises RecordError when it is bad."""
    try:
        d = read_json(start_path(run_dir, key))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise RecordError(f"start snapshot for {key}: {e}") from None
    try:
        # Anything but an object fails inside from_dict (AttributeError), caught just below.
        return Snapshot.from_dict(d)  # type: ignore[arg-type]
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise RecordError(f"start snapshot for {key} is malformed: {e!r}") from None


def remove_active(run_dir: str, key: str, durable_dir: Optional[str] = None) -> None:
    """Forget a job: the active file first (the daemon stops tagging it), then its start,
    then the durable copy (write_active). Missing files are fine (an epilog may run twice, or
    without a prolog)."""
    paths = [active_path(run_dir, key), start_path(run_dir, key)]
    if durable_dir is not None:
        paths.append(active_path(durable_dir, key))
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


class ActiveJobsReader:
    """What the daemon calls every tick: one scandir of `<run_dir>/active`, files parsed only
    when their (name, mtime_ns) changed. Never raises: a bad file is logged once and skipped."""

    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        self._dir = os.path.join(run_dir, ACTIVE_DIR)
        self._cache: Dict[str, Tuple[int, Optional[ActiveJob]]] = {}
        # Keys of active files we may not read (private_records and we are not root).
        self.private: List[str] = []

    def read(self) -> List[ActiveJob]:
        seen: Dict[str, Tuple[int, Optional[ActiveJob]]] = {}
        private: List[str] = []
        try:
            it = os.scandir(self._dir)
        except FileNotFoundError:
            self._cache = {}
            return []
        except OSError as e:
            log.warning("cannot list %s: %s", self._dir, e.strerror)
            return [j for _, j in self._cache.values() if j is not None]
        with it:
            for entry in it:
                name = entry.name
                if name.startswith(".") or not name.endswith(".json"):
                    continue
                try:
                    mtime = entry.stat().st_mtime_ns
                except OSError:
                    continue  # removed between scandir and stat: the job just ended
                cached = self._cache.get(name)
                if cached is not None and cached[0] == mtime:
                    seen[name] = cached
                    continue
                try:
                    seen[name] = (mtime, self._parse(entry.path, name[:-5]))
                except PermissionError:
                    private.append(name[:-5])  # private_records and we are not root
        self._cache, self.private = seen, sorted(private)
        return sorted((j for _, j in seen.values() if j is not None), key=lambda j: j.key)

    @staticmethod
    def _parse(path: str, stem: str) -> Optional[ActiveJob]:
        try:
            job = ActiveJob.from_dict(read_json(path, max_bytes=1 << 20))
        except FileNotFoundError:
            return None
        except PermissionError:
            raise
        except (OSError, ValueError, RecordError) as e:
            log.warning("skipping active-job file %s: %s", path, e)
            return None
        if job.key != stem:
            log.warning("skipping active-job file %s: it holds key %r", path, job.key)
            return None
        return job


def read_boot_id(proc_root: str = "/proc") -> str:
    """This boot's id (CLOCK_MONOTONIC values only compare within one boot). "unknown" when
    the file cannot be read (containers without /proc/sys)."""
    try:
        with open(os.path.join(proc_root, "sys", "kernel", "random", "boot_id"), "rb") as f:
            return f.read(64).decode("ascii", "replace").strip() or "unknown"
    except OSError:
        return "unknown"


# -- recently finished jobs (overlap without a daemon) -----------------------------------------
HISTORY_FILE = "finished.json"
LOCK_FILE = "hooks.lock"
HISTORY_MAX = 64  # jobs; enough for any realistic overlap on one node


class LockTimeout(OSError):
    pass


class hooks_lock:
    """flock(2) on `<run_dir>/hooks.lock`, waiting at most `timeout` seconds (hooks of
    different jobs run at once; none may wait long). Raises LockTimeout."""

    def __init__(self, run_dir: str, timeout: float = 1.0):
        self.path = os.path.join(run_dir, LOCK_FILE)
        self.timeout = timeout
        self._fd: Optional[int] = None

    def __enter__(self) -> "hooks_lock":
        import fcntl
        import time

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        deadline = time.monotonic() + self.timeout
        delay = 0.001
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise LockTimeout(f"{self.path} is held by another hook") from None
                time.sleep(delay)
                delay = min(delay * 2, 0.02)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock
            self._fd = None


def read_finished(run_dir: str) -> List[dict]:
    """The history of jobs that ended on this node: [{key, boot_id, start_mono, end_mono}].
    Bad or missing file: empty (it only feeds the `shared` flag)."""
    try:
        d = read_json(os.path.join(run_dir, HISTORY_FILE), max_bytes=1 << 20)
    except (OSError, ValueError):
        return []
    if not isinstance(d, dict) or not isinstance(d.get("jobs"), list):
        return []
    out = []
    for e in d["jobs"]:
        if (isinstance(e, dict) and is_key(e.get("key")) and isinstance(e.get("boot_id"), str)
                and all(isinstance(e.get(k), (int, float)) and not isinstance(e.get(k), bool)
                        for k in ("start_mono", "end_mono"))):
            out.append(e)
    return out


def add_finished(run_dir: str, key: str, boot_id: str, start_mono: float, end_mono: float,
                 keep: int = HISTORY_MAX) -> None:
    """Append to the history (call under hooks_lock). Entries of other boots are dropped."""
    jobs = [e for e in read_finished(run_dir) if e["boot_id"] == boot_id and e["key"] != key]
    jobs.append({"key": key, "boot_id": boot_id, "start_mono": start_mono, "end_mono": end_mono})
    jobs = jobs[-keep:]
    atomic_write(os.path.join(run_dir, HISTORY_FILE),
                 dumps({"schema": "efajob/finished-jobs", "version": RUNFILE_VERSION, "jobs": jobs}))


def overlapping(entries: List[dict], boot_id: str, mono0: float, mono1: float) -> List[str]:
    """Keys of history entries of this boot whose [start, end] overlaps [mono0, mono1]."""
    return [e["key"] for e in entries
            if e["boot_id"] == boot_id and e["start_mono"] < mono1 and e["end_mono"] > mono0]
