"""Slurm job ids and run-dir keys: validated before they become path components.

Job ids are strings, never ints (ReFrame's lesson): a plain job `123`, an array task `123_4`
(what users type and sacct prints; the hooks see the unique numeric id), a heterogeneous
component `123+1`. A run-dir/record key is the job id, plus `.<restart>` when Slurm requeued
the job (`SLURM_JOB_RESTART_COUNT` > 0: same job id, a new run).

Anything else (`../../etc`, `123/4`, empty, 30 digits, unicode digits) is refused: these
strings are used as file names under the run dir, the outbox and the shared job store.

On the hook import path: standard library only, and no `re` (its import and compiles cost
the hooks milliseconds): the grammar below is checked with string methods.
"""
from __future__ import annotations

from efajob.errors import UsageError
from efajob.frozen import Frozen

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing.TypeGuard is 3.10+; annotations are never evaluated at run time
    from typing import Optional, Tuple

    from typing_extensions import TypeGuard

MAX_RESTART = 999999


def _digits(s: str, lo: int, hi: int) -> bool:
    """[0-9]{lo,hi}: ASCII digits only (str.isdigit alone accepts unicode digits, which int()
    takes too)."""
    return lo <= len(s) <= hi and s.isascii() and s.isdigit()


def _job_id_ok(s: str) -> bool:
    """[0-9]{1,10}(_[0-9]{1,10}|\\+[0-9]{1,5})?, the whole string. 10 digits hold any 32-bit job
    id (Slurm's are uint32); the het offset is small."""
    head, sep, tail = s.partition("_")
    if sep:
        return _digits(head, 1, 10) and _digits(tail, 1, 10)
    head, sep, tail = s.partition("+")
    if sep:
        return _digits(head, 1, 10) and _digits(tail, 1, 5)
    return _digits(s, 1, 10)


def _split_key(s: str) -> Optional[Tuple[str, int]]:
    """<job id>(.[1-9][0-9]{0,5})? -> (job id, restart), or None."""
    head, dot, tail = s.partition(".")
    if not _job_id_ok(head):
        return None
    if not dot:
        return head, 0
    if not _digits(tail, 1, 6) or tail[0] == "0":
        return None
    return head, int(tail)


def is_job_id(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and _job_id_ok(value)


def validate_job_id(value: Optional[str]) -> str:
    """Return `value` when it is a job id (`123`, `123_4`, `123+1`); else raise UsageError."""
    if not is_job_id(value):
        raise UsageError(f"job id {value!r} is not valid (expected e.g. 123, 123_4 or 123+1)")
    return value


def parse_restart(value: Optional[str]) -> int:
    """`SLURM_JOB_RESTART_COUNT` -> int; absent or empty is 0; garbage raises UsageError."""
    if value is None or value == "":
        return 0
    v = value.strip()
    if not (v.isascii() and v.isdigit()) or int(v) > MAX_RESTART:
        raise UsageError(f"restart count {value!r} is not a small non-negative integer")
    return int(v)


def job_key(job_id: str, restart: int = 0) -> str:
    """`123` or `123.1` when restart > 0 (a requeued job keeps its id; its runs must not clash)."""
    validate_job_id(job_id)
    if isinstance(restart, bool) or not isinstance(restart, int) or not 0 <= restart <= MAX_RESTART:
        raise UsageError(f"restart count {restart!r} is not a small non-negative integer")
    return job_id if restart == 0 else f"{job_id}.{restart}"


def parse_key(key: str) -> Tuple[str, int]:
    """`123.1` -> ("123", 1); raises UsageError when `key` is not a key."""
    parts = _split_key(key) if isinstance(key, str) else None
    if parts is None:
        raise UsageError(f"job key {key!r} is not valid (expected <jobid> or <jobid>.<restart>)")
    return parts


def is_key(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and _split_key(value) is not None


class JobIdentity(Frozen):
    """Who the job is, as the hooks learn it from Slurm's environment (or the active file)."""

    cluster: str
    job_id: str  # SLURM_JOB_ID: the unique numeric id (array/het forms below when known)
    restart: int
    host: str  # SLURMD_NODENAME
    user: Optional[str] = None
    uid: Optional[int] = None
    partition: Optional[str] = None
    account: Optional[str] = None
    nodelist: Optional[str] = None
    num_nodes: Optional[int] = None
    array_job_id: Optional[str] = None
    array_task_id: Optional[str] = None
    het_job_id: Optional[str] = None
    het_job_offset: Optional[str] = None
    exit_code: Optional[str] = None  # "exit:signal" as sacct prints it
    derived_exit_code: Optional[str] = None
    # When there is no start snapshot: the start from the active file (mono + wall) or from
    # SLURM_JOB_START_TIME (wall only, Slurm 23.02+).
    start_wall: Optional[float] = None
    start_mono: Optional[float] = None
    # SLURM_JOB_NAME (set in the slurmctld hooks; slurmd's Prolog/Epilog of 22.05 lack it) and
    # SLURM_JOB_WORK_DIR (slurmd's hooks have it): for `efajob compare` (same name, same user).
    job_name: Optional[str] = None
    work_dir: Optional[str] = None

    @property
    def key(self) -> str:
        return job_key(self.job_id, self.restart)


def format_exit_code(raw: Optional[str], code2: Optional[str] = None) -> Optional[str]:
    """Slurm's exit code as sacct shows it ("1:0", "0:9"). `code2` is SLURM_JOB_EXIT_CODE2
    (already "exit:signal"); `raw` is a wait(2) status (SLURM_JOB_EXIT_CODE, _DERIVED_EC)."""
    if code2:
        parts = code2.strip().split(":")
        if len(parts) == 2 and all(p.isascii() and p.isdigit() and len(p) < 6 for p in parts):
            return f"{int(parts[0])}:{int(parts[1])}"
    if raw is None or not (raw.strip().isascii() and raw.strip().isdigit()) or len(raw.strip()) > 10:
        return None
    status = int(raw)
    # WIFEXITED / WEXITSTATUS / WTERMSIG, as slurmctld computes EXIT_CODE2.
    if status & 0x7F == 0:
        return f"{(status >> 8) & 0xFF}:0"
    return f"0:{status & 0x7F}"


def status_job_key(entry: object) -> Optional[Tuple[str, str, int, dict]]:
    """One `jobs` entry of a node status document (efajob/daemon/nodestatus.py) -> (key, job_id,
    restart, the entry as a dict), or None when it names no valid job. Entries are objects with
    `key`, or `job_id` (+ `restart`); a plain key string is accepted too."""
    j = {"key": entry} if isinstance(entry, str) else entry
    if not isinstance(j, dict):
        return None
    key = j.get("key")
    if not is_key(key):
        jid, rs = j.get("job_id"), j.get("restart", 0)
        if not is_job_id(jid) or isinstance(rs, bool) or not isinstance(rs, int) or rs < 0:
            return None
        key = jid if rs == 0 else f"{jid}.{rs}"
    job_id, restart = parse_key(key)
    return key, job_id, restart, j


# -- record file names in the job store: <host>[.<restart>].json ------------------------------
def _ends_in_digit_label(host: str) -> bool:
    head, dot, last = host.rpartition(".")
    return bool(dot and head and last.isascii() and last.isdigit())


def record_stem(host: str, restart: int) -> str:
    """The file name of a host's record, without `.json`: `n1`, or `n1.2` for restart 2.
    A host whose name itself ends in `.<digits>` (`gpu.3`) always carries its restart
    (`gpu.3.0`): else its record would read back as host `gpu` restart 3, and host `gpu`'s
    restart 3 would overwrite it."""
    return f"{host}.{restart}" if restart or _ends_in_digit_label(host) else host


def split_record_stem(stem: str) -> Tuple[str, int]:
    """record_stem's inverse: `n1` -> ("n1", 0), `n1.2` -> ("n1", 2), `gpu.3.0` -> ("gpu.3", 0).
    `n1.0`, which record_stem never writes, is the host `n1.0` (as efajob 0.1 wrote it)."""
    # (.+)\.(0|[1-9][0-9]{0,5})
    host, dot, tail = stem.rpartition(".")
    if not (dot and host and _digits(tail, 1, 6) and (tail == "0" or tail[0] != "0")):
        return stem, 0
    restart = int(tail)
    if restart == 0 and not _ends_in_digit_label(host):
        return stem, 0
    return host, restart

