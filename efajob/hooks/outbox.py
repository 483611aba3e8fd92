"""The local outbox and delivery to the job store (reconciling jobs whose epilog never came is the
daemon's: efajob/daemon/reconcile.py).

    <state_dir>/outbox/<key>@<host>@<cluster>.json     records waiting for delivery (0700 dir)
    <state_dir>/outbox/.delivery.json                  backoff state (survives restarts)
    <state_dir>/outbox/bad/                            records that can never be delivered
    <store>/<cluster>/jobs/<job_id>/<host>[.<restart>].json     the job store

Nothing is lost (DESIGN invariant 4): a record leaves the outbox only after its store copy is
durable (written to a temp file, fsynced, renamed, directory fsynced). Delivery is idempotent:
the daemon and an epilog's delivery child may both forward the same file; both renames carry
the same bytes and the second unlink finds nothing. So there is no lock to get stuck behind a
process hung on a dead NFS server.

Modes: store directories 0755 (a job's host list is what squeue shows anyway), records 0644;
with `private_records = true` a record is owned by the job's uid with mode 0400 (readable by
root and that user only; the user could chmod their own record, which is their business). When
the store cannot honour that (an NFS export with root_squash refuses chown), delivery fails
and retries: privacy is never silently dropped.

On the hook import path (the epilog writes its record here): standard library only.
"""
from __future__ import annotations

import errno
import os
import stat
import time

from efajob.hooks.records import check_record
from efajob.slurm.jobid import record_stem
from efajob.hooks.runfiles import LazyLogger, atomic_write, dumps, ensure_dir, read_json

TYPE_CHECKING = False
if TYPE_CHECKING:  # no `typing` or `dataclasses` at run time: the epilog imports this
    from typing import Callable, List, Optional, Tuple

log = LazyLogger("efajob.outbox")

OUTBOX_MODE = 0o700  # records may be private: only root looks in here
STORE_DIR_MODE = 0o755
RECORD_MODE = 0o644
PRIVATE_MODE = 0o400
STATE_FILE = ".delivery.json"
BAD_DIR = "bad"
BACKOFF_BASE = 2.0  # seconds after the first failure, doubling up to BACKOFF_MAX
BACKOFF_MAX = 300.0


# -- the outbox ------------------------------------------------------------------------------
def outbox_name(record: dict) -> str:
    # '@' cannot occur in keys, host or cluster names, so the name is unambiguous.
    return f"{record['key']}@{record['host']}@{record['cluster']}.json"


def store_path(store: str, record: dict) -> str:
    """`<store>/<cluster>/jobs/<job_id>/<host>[.<restart>].json` (fields already validated;
    the name is jobid.record_stem's, which the store reader parses back)."""
    name = record_stem(record["host"], record["restart"]) + ".json"
    return os.path.join(store, record["cluster"], "jobs", record["job_id"], name)


def write_outbox(cfg, record: dict) -> str:
    """Put a record in the outbox, durably (fsync). Returns its path. When the outbox cannot
    take it (a full or read-only local disk), the spare outbox in the run dir (tmpfs: another
    filesystem) does, and a warning says so: the exact record is kept rather than left for
    reconcile to rebuild from later counters. OSError when neither can."""
    check_record(record)
    data, name = dumps(record), outbox_name(record)
    try:
        ensure_dir(cfg.outbox_dir, OUTBOX_MODE)
        path = os.path.join(cfg.outbox_dir, name)
        atomic_write(path, data, mode=0o600, fsync=True)
        return path
    except OSError as e:
        err = e
    try:
        ensure_dir(cfg.spare_outbox_dir, OUTBOX_MODE)
        path = os.path.join(cfg.spare_outbox_dir, name)
        atomic_write(path, data, mode=0o600, fsync=True)  # run_dir may be a disk elsewhere
    except OSError:
        raise err from None
    log.warning("outbox %s not writable (%s): record %s kept in %s until delivered",
                cfg.outbox_dir, err.strerror or err, name, cfg.spare_outbox_dir)
    return path


def _outbox_dirs(cfg) -> Tuple[str, str]:
    return cfg.outbox_dir, cfg.spare_outbox_dir


def pending(cfg) -> List[str]:
    """Outbox file names waiting for delivery (both outboxes), oldest name first."""
    names = set()
    for d in _outbox_dirs(cfg):
        try:
            names.update(os.listdir(d))
        except (FileNotFoundError, NotADirectoryError):
            pass
    return sorted(n for n in names if n.endswith(".json") and not n.startswith("."))


def delivery_error(cfg) -> Optional[str]:
    """The last delivery error while the daemon is backing off from an unwritable job store
    (None when the last round delivered, or nothing failed): for `efajob status`."""
    state = _read_state(cfg)
    if not int(state.get("attempts", 0) or 0):
        return None
    return str(state.get("last_error") or "job store not writable")


def outbox_path(cfg, name: str) -> str:
    """Where a pending `name` is: the outbox, else the spare outbox."""
    main = os.path.join(cfg.outbox_dir, name)
    if os.path.exists(main):
        return main
    spare = os.path.join(cfg.spare_outbox_dir, name)
    return spare if os.path.exists(spare) else main


# -- delivery --------------------------------------------------------------------------------
class DeliveryResult:
    """What one delivery round did (a plain class: `dataclasses` costs the epilog its import)."""

    def __init__(self, pending: int = 0, skipped: bool = False, attempts: int = 0,
                 next_try: Optional[float] = None, last_error: Optional[str] = None) -> None:
        self.delivered: List[str] = []  # store paths written this round
        self.records: List[dict] = []  # the records delivered (for sinks)
        self.quarantined: List[str] = []  # outbox names moved to bad/
        self.dropped: List[str] = []  # reconcile records an epilog's beat
        self.pending = pending  # still waiting after this round
        self.skipped = skipped  # backing off: nothing was tried
        self.attempts = attempts  # consecutive failed rounds
        self.next_try = next_try  # wall time of the next attempt when backing off
        self.last_error = last_error

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DeliveryResult):
            return NotImplemented
        return self.__dict__ == other.__dict__

    __hash__ = None  # type: ignore[assignment]  # mutable, as the dataclass was

    def __repr__(self) -> str:
        return f"DeliveryResult({self.__dict__!r})"


def _read_state(cfg) -> dict:
    try:
        d = read_json(os.path.join(cfg.outbox_dir, STATE_FILE), max_bytes=1 << 16)
        return d if isinstance(d, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_state(cfg, state: dict) -> None:
    path = os.path.join(cfg.outbox_dir, STATE_FILE)
    try:
        if state:
            atomic_write(path, dumps(state), mode=0o600)
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as e:  # the backoff is an optimisation: never fail delivery over it
        log.warning("cannot save delivery state %s: %s", path, e.strerror)


def backoff_delay(attempts: int) -> float:
    return min(BACKOFF_MAX, BACKOFF_BASE * (2 ** max(0, attempts - 1)))


def _ensure_store_dir(store: str, parts: List[str]) -> None:
    """mkdir -p of `store`/`parts` with STORE_DIR_MODE on each level we create (never chmod
    what exists). Root writes here into a filesystem users may write too: a level below the
    store that is a symlink (a user's `jobs/123 -> /etc`) or not a directory raises OSError
    rather than being followed, so the record stays in the outbox and the log says why. The
    store itself may be a symlink: the admin chose it, and it is created when missing."""
    if not os.path.isdir(store):
        if os.path.lexists(store):
            raise NotADirectoryError(errno.ENOTDIR, "Not a directory", store)
        os.makedirs(store, STORE_DIR_MODE, exist_ok=True)
    path = store
    for part in parts:
        path = os.path.join(path, part)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            try:
                os.mkdir(path, STORE_DIR_MODE)
                os.chmod(path, STORE_DIR_MODE)  # the umask must not decide
            except FileExistsError:
                pass
            st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode):
            kind = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a directory"
            raise OSError(errno.ENOTDIR, f"{path} is {kind}: refusing to write a record there")


def _epilog_record_at(path: str, key: Optional[str]) -> bool:
    """Whether `path` holds an epilog's record of `key` (unreadable or other: no)."""
    try:
        rec = read_json(path, max_bytes=64 << 20)
    except (OSError, ValueError):
        return False
    return isinstance(rec, dict) and rec.get("key") == key and rec.get("source") == "epilog"


def epilog_record_exists(cfg, job) -> bool:
    """An epilog already wrote `job`'s record on this node (in the outbox, or delivered to the
    store): reconcile leaves it alone. `job` is an ActiveJob."""
    rec = {"key": job.key, "host": job.node, "cluster": job.cluster, "job_id": job.job_id,
           "restart": job.restart}
    name = outbox_name(rec)
    return (any(_epilog_record_at(os.path.join(d, name), job.key) for d in _outbox_dirs(cfg))
            or _epilog_record_at(store_path(cfg.store, rec), job.key))


def deliver_one(cfg, record: dict) -> Optional[str]:
    """Write one record into the job store, durably. Returns the store path; OSError on failure.
    None: a reconcile record that would replace an epilog's record of the same run, which it
    never does (exact beats flagged); it is dropped."""
    dest = store_path(cfg.store, record)
    if record.get("source") == "reconcile" and _epilog_record_at(dest, record.get("key")):
        log.warning("job %s: the store holds its epilog's record; the reconcile record is "
                    "dropped", record.get("key"))
        return None
    _ensure_store_dir(cfg.store, [record["cluster"], "jobs", record["job_id"]])
    if cfg.private_records:
        uid = record.get("uid")
        atomic_write(dest, dumps(record), mode=PRIVATE_MODE, fsync=True,
                     uid=uid if uid is not None else 0, gid=0)
    else:
        atomic_write(dest, dumps(record), mode=RECORD_MODE, fsync=True)
    return dest


def _quarantine(cfg, name: str, why: str) -> None:
    bad = os.path.join(cfg.outbox_dir, BAD_DIR)
    ensure_dir(bad, OUTBOX_MODE)
    os.replace(outbox_path(cfg, name), os.path.join(bad, name))
    log.error("outbox record %s cannot be delivered (%s): moved to %s", name, why, bad)


def deliver_pending(cfg, *, now: Callable[[], float] = time.time, max_files: Optional[int] = None,
                    on_record: Optional[Callable[[dict], None]] = None,
                    first: Optional[str] = None,
                    on_first: Optional[Callable[[bool], None]] = None) -> DeliveryResult:
    """Forward outbox records to the job store. Never raises on I/O errors: a failing store
    starts an exponential backoff (2 s doubling to 5 min) persisted in the outbox, so a
    restarted daemon does not hammer a dead NFS server. `on_record` sees each delivered record
    (sinks); its exceptions are logged, they do not stop delivery. `first` (an outbox name) is
    tried before the others and `on_first(delivered)` called once it is settled: the epilog
    waits for its own record only."""
    res = DeliveryResult()
    names = pending(cfg)
    state = _read_state(cfg)
    res.attempts = int(state.get("attempts", 0) or 0)
    if not names:
        if state:
            _write_state(cfg, {})
        res.attempts = 0
        if first is not None and on_first is not None:
            on_first(True)  # delivered by someone else before this round listed the outbox
        return res
    t = now()
    next_try = state.get("next_try")
    if isinstance(next_try, (int, float)) and t < next_try:
        res.skipped, res.pending, res.next_try = True, len(names), float(next_try)
        res.last_error = state.get("last_error")
        return res
    if first is not None and first in names:
        names.remove(first)
        names.insert(0, first)
    elif first is not None:
        # Gone already: another epilog's delivery child (or the daemon) delivered it. Said at
        # once, else the waiting epilog would log a false "not in the job store yet".
        if on_first is not None:
            on_first(True)
        first = None
    for i, name in enumerate(names):
        if max_files is not None and i >= max_files:
            break
        src = outbox_path(cfg, name)
        try:
            record = check_record(read_json(src))
        except FileNotFoundError:  # delivered meanwhile by someone else
            if name == first and on_first is not None:
                on_first(True)
            continue
        except (OSError, ValueError) as e:
            try:
                _quarantine(cfg, name, str(e))
                res.quarantined.append(name)
            except OSError as e2:
                log.error("cannot quarantine outbox record %s: %s", name, e2.strerror)
            continue
        try:
            dest = deliver_one(cfg, record)
        except OSError as e:
            res.attempts += 1
            delay = backoff_delay(res.attempts)
            res.next_try = t + delay
            res.last_error = f"{e.strerror or e} ({getattr(e, 'filename', None) or cfg.store})"
            log.warning("job store %s not writable (%s): %d record(s) kept in the outbox, "
                        "retrying in %.0f s", cfg.store, res.last_error, len(names) - i, delay)
            _write_state(cfg, {"attempts": res.attempts, "next_try": res.next_try,
                               "last_error": res.last_error})
            res.pending = len(pending(cfg))
            return res
        # Only now, with the store copy durable (or the record dropped), may the outbox copy go.
        try:
            os.unlink(src)
        except FileNotFoundError:
            pass
        if dest is None:
            res.dropped.append(name)
            if name == first and on_first is not None:
                on_first(True)
            continue
        res.delivered.append(dest)
        res.records.append(record)
        if name == first and on_first is not None:
            on_first(True)
        if on_record is not None:
            try:
                on_record(record)
            except Exception:  # a sink must not stop delivery
                log.exception("record sink failed for %s", name)
    res.attempts = 0
    _write_state(cfg, {})
    res.pending = len(pending(cfg))
    return res


# -- is the daemon there? ----------------------------------------------------------------------
def daemon_alive(cfg, *, proc_root: str = "/proc") -> bool:
    """True when a daemon holds `<state_dir>/daemon.lock` (daemon.acquire_lock's flock).

    Never by trying the lock: a probing flock, however brief, could make a daemon starting at
    that instant believe another one runs. The daemon writes "<pid> <fd>" into the file, and
    `/proc/<pid>/fdinfo/<fd>` lists the locks held through that descriptor: two small reads.
    Files from older daemons (pid only), or no right to read fdinfo: /proc/locks, whose read
    waits ~10 ms for an RCU grace period (a tenth of an epilog). No lock file, or nothing
    readable: False (the epilog then delivers itself, which is harmless if wrong).
    """
    path = os.path.join(cfg.state_dir, "daemon.lock")
    try:
        st = os.stat(path)
        with open(path, "rb") as f:
            owner = f.read(64).split()
    except OSError:
        return False
    if len(owner) == 2 and owner[0].isdigit() and owner[1].isdigit():
        try:
            with open(os.path.join(proc_root, owner[0].decode(), "fdinfo", owner[1].decode()),
                      "rb") as f:
                info = f.read(1 << 16).decode("ascii", "replace")
        except FileNotFoundError:
            return False  # that process, or that descriptor, is gone
        except OSError:
            info = None
        if info is not None:
            return _fdinfo_holds(info, st.st_ino)
    try:
        with open(os.path.join(proc_root, "locks"), "rb") as f:
            text = f.read(1 << 20).decode("ascii", "replace")
    except OSError:
        return False
    want = (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
    return any(_flock_entry(line.split()) == want for line in text.splitlines())


def _flock_entry(parts: List[str]) -> Optional[Tuple[int, int, int]]:
    """(major, minor, inode) of a granted FLOCK line of /proc/locks or fdinfo:
    "1: FLOCK  ADVISORY  WRITE 1234 00:2a:123456 0 EOF" (blocked waiters have "->")."""
    if "FLOCK" not in parts or "->" in parts:
        return None
    i = parts.index("FLOCK")
    try:
        major, minor, ino = parts[i + 4].split(":")
        return int(major, 16), int(minor, 16), int(ino)
    except (IndexError, ValueError):
        return None


def _fdinfo_holds(info: str, ino: int) -> bool:
    """Does this fdinfo text describe a descriptor of inode `ino` holding a flock on it?"""
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line and
                  not line.startswith("lock:"))
    if fields.get("ino", "").strip() != str(ino):
        return False  # the pid was reused, or the descriptor now names another file
    for line in info.splitlines():
        if line.startswith("lock:"):
            got = _flock_entry(line[5:].split())
            if got is not None and got[2] == ino:
                return True
    return False


def load_outbox(cfg) -> List[dict]:
    """Every pending record (for `efajob status` and tests)."""
    out = []
    for name in pending(cfg):
        try:
            rec = read_json(outbox_path(cfg, name))
        except (OSError, ValueError):
            continue
        if isinstance(rec, dict):  # JSON that is not an object is no record, like bad JSON
            out.append(rec)
    return out
