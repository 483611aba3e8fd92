"""The Slurm adapter: job metadata for the report and the daemon's reconciliation.

Never imported by the hooks (SchedMD: no Slurm commands from Prolog/Epilog; tests/test_imports.py
checks). One interface, `JobInfo`, two backends:

- `PyslurmBackend`, when `import pyslurm` works: `pyslurm.Job.load(id)` for jobs slurmctld still
  knows, `pyslurm.db.Jobs.load(JobFilter(ids=[id]))` for older ones. pyslurm X.Y builds only
  against Slurm X.Y and PyPI has only 25.11, so on Debian's 22.05/24.11 it cannot be installed:
  the mapping is tested with a fake object carrying pyslurm 25.11's attribute names.
- `CommandBackend`: `scontrol -o show job`, then `sacct --json` when accounting exists,
  `scontrol show hostnames`. Every command has a timeout; the output is parsed by pure
  functions (`parse_scontrol_job`, `parse_sacct_json`) tested on literal 22.05 and 23.11+
  shapes (sacct's `state.current` went from a string to a list, numbers from plain ints to
  `{"set", "infinite", "number"}`).

Errors: SlurmError (command missing, failed, timed out, unparsable). "Slurm does not know this
job" is None, not an error.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from efajob.errors import SlurmError
from efajob.slurm.hostlist import expand
from efajob.slurm.jobid import validate_job_id
from efajob.values import as_object

log = logging.getLogger("efajob.slurm")

TIMEOUT = 10.0
# Slurm's own bin dirs when PATH lacks them (systemd units, ParallelCluster's /opt/slurm).
_EXTRA_BIN = ("/opt/slurm/bin", "/usr/bin", "/usr/local/bin")
# States in which the job still holds (or will again hold) its nodes: not gone.
ALIVE_STATES = frozenset((
    "PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "RESIZING",
    "SIGNALING", "STAGE_OUT", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESV_DEL_HOLD",
    "POWER_UP_NODE", "UPDATE_DB",
))


@dataclass(frozen=True)
class JobInfo:
    job_id: str  # as users see it: 123, 123_4, 123+1
    name: Optional[str] = None
    user: Optional[str] = None
    account: Optional[str] = None
    partition: Optional[str] = None
    state: Optional[str] = None  # COMPLETED, FAILED, RUNNING... (flags like "+" dropped)
    exit_code: Optional[str] = None  # "exit:signal"
    num_nodes: Optional[int] = None
    nodes: List[str] = field(default_factory=list)
    nodelist: Optional[str] = None
    start: Optional[float] = None  # epoch seconds
    end: Optional[float] = None
    cluster: Optional[str] = None
    time_limit: Optional[int] = None  # minutes; None when unlimited or unknown
    restarts: Optional[int] = None
    slurm_job_id: Optional[str] = None  # the unique numeric id (SLURM_JOB_ID): records are filed under it
    # When the query named an array job or a het job by its plain id (`500`, `420`): the ids
    # of all its tasks or components as Slurm shows them (`500_1`, `420+1`), else empty.
    parts: Tuple[str, ...] = ()
    stdout: Optional[str] = None  # the job's output file as scontrol expands it (StdOut=)

    @property
    def alive(self) -> bool:
        return (self.state or "").upper() in ALIVE_STATES


# -- pure parsers ----------------------------------------------------------------------------
_KV_SPLIT = re.compile(r"\s+(?=[A-Za-z][A-Za-z0-9_/:.]*=)")


def parse_kv_line(line: str) -> Dict[str, str]:
    """One `scontrol -o` line -> {Key: Value}. Values may contain spaces ("JobName=my job"):
    a space starts a new pair only when `Key=` follows."""
    out: Dict[str, str] = {}
    for part in _KV_SPLIT.split(line.strip()):
        k, sep, v = part.partition("=")
        if sep:
            out[k] = v
    return out


def parse_slurm_time(value: Optional[str]) -> Optional[float]:
    """scontrol's local `2024-05-01T10:00:00` -> epoch seconds; Unknown/None/"" -> None."""
    if not value or value in ("Unknown", "None", "N/A", "(null)"):
        return None
    try:
        return time.mktime(time.strptime(value, "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None


def parse_time_limit(value: Optional[str]) -> Optional[int]:
    """`[D-]HH:MM:SS`, `MM:SS`, `MM` -> minutes (rounded up); UNLIMITED/Partition_Limit -> None."""
    if not value or not value[0].isdigit():
        return None
    days = 0
    if "-" in value:
        d, value = value.split("-", 1)
        days = int(d)
    parts = [int(p) for p in value.split(":")] if value else [0]
    if len(parts) == 3:
        h, m, s = parts
    elif len(parts) == 2:
        h, (m, s) = 0, parts
    else:
        h, m, s = 0, parts[0], 0
    return days * 1440 + h * 60 + m + (1 if s else 0)


def _int(value: Any) -> Optional[int]:
    """Plain int, or 23.11+'s {"set": true, "infinite": false, "number": N}."""
    if isinstance(value, dict):
        if not value.get("set", True) or value.get("infinite"):
            return None
        value = value.get("number")
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return int(value)
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _state(value: Any) -> Optional[str]:
    """22.05 "COMPLETED", 23.11+ ["COMPLETED"] (or ["CANCELLED", "..."]), scontrol "CANCELLED+"."""
    if isinstance(value, dict):
        value = value.get("current")
    if isinstance(value, list):
        value = value[0] if value else None
    if not isinstance(value, str) or not value:
        return None
    return value.split()[0].rstrip("+").upper()


def _display_id(raw: str, array_job: Optional[str], array_task: Optional[str],
                het_job: Optional[str], het_off: Optional[str]) -> str:
    if array_job and array_task and array_job != "0":
        return f"{array_job}_{array_task}"
    if het_job and het_off is not None and het_job != "0":
        return f"{het_job}+{het_off}"
    return raw


def _user(value: Optional[str]) -> Optional[str]:
    # scontrol: "UserId=alice(1000)"
    if not value:
        return None
    return value.split("(", 1)[0] or None


def _none(value: Optional[str]) -> Optional[str]:
    return None if value in (None, "", "(null)", "None") else value


def parse_scontrol_job(text: str) -> List[JobInfo]:
    """`scontrol -o show job <id>` -> one JobInfo per line (array and het jobs give several)."""
    jobs = []
    for line in text.splitlines():
        if not line.strip().startswith("JobId="):
            continue
        kv = parse_kv_line(line)
        raw = kv["JobId"]
        ajob, atask = _none(kv.get("ArrayJobId")), _none(kv.get("ArrayTaskId"))
        hjob, hoff = _none(kv.get("HetJobId")), _none(kv.get("HetJobOffset"))
        jid = _display_id(raw, ajob, atask, hjob, hoff)
        nodelist = _none(kv.get("NodeList"))
        jobs.append(JobInfo(
            job_id=jid, name=_none(kv.get("JobName")), user=_user(kv.get("UserId")),
            account=_none(kv.get("Account")), partition=_none(kv.get("Partition")),
            state=_state(kv.get("JobState")), exit_code=_none(kv.get("ExitCode")),
            num_nodes=_int(kv.get("NumNodes", "").split("-")[0]),
            nodes=expand(nodelist) if nodelist else [], nodelist=nodelist,
            start=parse_slurm_time(kv.get("StartTime")), end=parse_slurm_time(kv.get("EndTime")),
            cluster=_none(kv.get("ClusterName") or kv.get("Cluster")),
            time_limit=parse_time_limit(kv.get("TimeLimit")), restarts=_int(kv.get("Restarts")),
            slurm_job_id=raw, stdout=_none(kv.get("StdOut")),
        ))
    return jobs


def _sacct_exit(value: Any) -> Optional[str]:
    if not isinstance(value, dict):
        return None
    rc = _int(value.get("return_code"))
    sig = value.get("signal")
    signum = None
    if isinstance(sig, dict):
        signum = _int(sig.get("id", sig.get("signal_id")))
    if rc is None and signum is None:
        return None
    return f"{rc or 0}:{signum or 0}"


def parse_sacct_json(text: str) -> List[JobInfo]:
    """`sacct -j <id> --json` (22.05 and 23.11+ shapes) -> JobInfos. Raises SlurmError when
    the text is not sacct's JSON."""
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise SlurmError(f"sacct printed something that is not JSON: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("jobs"), list):
        raise SlurmError("sacct JSON has no 'jobs' list")
    out = []
    for j in doc["jobs"]:
        if not isinstance(j, dict):
            continue
        raw = str(_int(j.get("job_id")) or "")
        if not raw:
            continue
        arr, het = as_object(j.get("array")), as_object(j.get("het"))
        ajob, atask = _int(arr.get("job_id")), _int(arr.get("task_id"))
        hjob, hoff = _int(het.get("job_id")), _int(het.get("job_offset"))
        jid = _display_id(raw, str(ajob) if ajob else None, str(atask) if atask is not None else None,
                          str(hjob) if hjob else None, str(hoff) if hoff is not None else None)
        t = as_object(j.get("time"))
        nodelist = j.get("nodes") if isinstance(j.get("nodes"), str) else None
        nodelist = None if nodelist in (None, "", "None assigned") else nodelist
        start, end = _int(t.get("start")), _int(t.get("end"))
        out.append(JobInfo(
            job_id=jid, name=j.get("name") if isinstance(j.get("name"), str) else None,
            user=j.get("user") if isinstance(j.get("user"), str) else None,
            account=j.get("account") or None, partition=j.get("partition") or None,
            state=_state(j.get("state")), exit_code=_sacct_exit(j.get("exit_code")),
            num_nodes=_int(j.get("allocation_nodes")), nodes=expand(nodelist) if nodelist else [],
            nodelist=nodelist, start=float(start) if start else None,
            end=float(end) if end else None, cluster=j.get("cluster") or None,
            time_limit=_int(t.get("limit")), restarts=_int(j.get("restart_cnt")),
            slurm_job_id=raw,
        ))
    return out


def pick(jobs: Sequence[JobInfo], job_id: str) -> Optional[JobInfo]:
    """The job asked for among what a query returned (an array/het query returns siblings)."""
    for j in jobs:
        if j.job_id == job_id:
            return j
    for j in jobs:
        if j.slurm_job_id == job_id:
            return j
    return jobs[0] if jobs else None


def parts_of(jobs: Sequence[JobInfo], job_id: str) -> Tuple[str, ...]:
    """The array tasks / het components a query for the plain id `job_id` returned: Slurm
    answers `scontrol show job 500` for an array with every task (`500_1`, `500_2`, ...; one
    line `500_[4-9]` for tasks still pending) and for a het job with every component
    (`420+0`, `420+1`). The raw id of one task (`501`) returns that task only, whose array
    id is not `501`: no parts. Sorted as Slurm numbers them."""
    if not job_id.isdigit():
        return ()
    found = {j.job_id for j in jobs if j.job_id.startswith((job_id + "_", job_id + "+"))}
    return tuple(sorted(found, key=_part_key))


def _part_key(part: str) -> Tuple[int, str]:
    tail = re.split(r"[_+]", part, maxsplit=1)[-1]
    head = re.match(r"\[?([0-9]+)", tail)
    return (int(head.group(1)) if head else 1 << 40, part)


def with_parts(jobs: Sequence[JobInfo], job_id: str) -> Optional[JobInfo]:
    """pick() plus the parts of an array/het job asked for by its plain id."""
    found = pick(jobs, job_id)
    parts = parts_of(jobs, job_id)
    return replace(found, parts=parts) if found is not None and parts else found


# -- the command backend -----------------------------------------------------------------------
Runner = Callable[..., "subprocess.CompletedProcess"]


_PREFIX = re.compile(r"^(?:[\w./-]+:\s*)?(?:(?:fatal|error)\s*:\s*)+", re.I)
SUMMARY_LIMIT = 160


def summarize_stderr(text: Optional[str], limit: int = SUMMARY_LIMIT) -> str:
    """Slurm's stderr as one clean line for a report note or an `error:` line.

    Slurm commands print a chain of lines, the cause last and a `fatal:` line for what
    stopped them ("scontrol: error: fetch_config: DNS SRV lookup failed" ... "scontrol:
    fatal: Could not establish a configuration source"): the `fatal:` line, else the last
    `error:` line, else the last line, without the "scontrol: error:" prefix, white space
    folded, and cut at a word (never mid-word) past `limit`. The full text goes to the debug
    log (`efajob report --debug`)."""
    lines = [" ".join(ln.split()) for ln in (text or "").splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines:
        return "no message"
    pick_ = (next((ln for ln in reversed(lines) if re.search(r"\bfatal\s*:", ln, re.I)), None)
             or next((ln for ln in reversed(lines) if re.search(r"\berror\s*:", ln, re.I)), None)
             or lines[-1])
    line = _PREFIX.sub("", pick_) or pick_
    if len(line) > limit:
        line = line[:limit].rsplit(" ", 1)[0].rstrip(",;:") + " ..."
    return line


def parse_scontrol_config(text: str) -> Dict[str, str]:
    """`scontrol show config` -> {key: value}. Lines are `Key<spaces>= value`; the header
    ("Configuration data as of ...") and the plugin sections' titles have no ` = ` and are
    skipped; a key seen twice (a plugin section repeating one) keeps its first value, the
    slurm.conf one."""
    out: Dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(" = ")
        key = key.strip()
        if sep and key and " " not in key:
            out.setdefault(key, value.strip())
    return out


def _failed(what: str, p: "subprocess.CompletedProcess") -> SlurmError:
    log.debug("%s exited %s; stderr:\n%s", what, p.returncode, (p.stderr or "").rstrip())
    return SlurmError(f"{what} failed: {summarize_stderr(p.stderr)}")


def find_command(name: str) -> Optional[str]:
    path = shutil.which(name)
    if path:
        return path
    for d in _EXTRA_BIN:
        p = os.path.join(d, name)
        if os.access(p, os.X_OK):
            return p
    return None


class CommandBackend:
    name = "commands"

    def __init__(self, *, timeout: float = TIMEOUT, runner: Runner = subprocess.run,
                 which: Callable[[str], Optional[str]] = find_command):
        self.timeout = timeout
        self._run = runner
        self._which = which

    def _cmd(self, argv: List[str]) -> "subprocess.CompletedProcess":
        exe = self._which(argv[0])
        if exe is None:
            raise SlurmError(f"{argv[0]} not found (is Slurm installed here?)")
        try:
            return self._run([exe] + argv[1:], capture_output=True, text=True,
                             timeout=self.timeout, check=False)
        except subprocess.TimeoutExpired:
            raise SlurmError(f"{argv[0]} did not answer within {self.timeout:g} s") from None
        except OSError as e:
            raise SlurmError(f"cannot run {exe}: {e.strerror}") from None

    def job(self, job_id: str) -> Optional[JobInfo]:
        validate_job_id(job_id)
        p = self._cmd(["scontrol", "-o", "show", "job", job_id])
        if p.returncode == 0:
            found = with_parts(parse_scontrol_job(p.stdout), job_id)
            if found is not None:
                return found
        elif "Invalid job id" not in (p.stderr or ""):
            raise _failed(f"scontrol show job {job_id}", p)
        # Gone from slurmctld (MinJobAge): ask accounting, if there is any.
        return self.accounting_job(job_id)

    def all_jobs(self) -> List[JobInfo]:
        """Every job slurmctld still holds (running, and finished ones for MinJobAge): one
        RPC however many jobs are asked about, for the head node's index update."""
        p = self._cmd(["scontrol", "-o", "show", "job"])
        if p.returncode != 0:
            raise _failed("scontrol show job", p)
        return parse_scontrol_job(p.stdout)  # "No jobs in the system": no JobId= line, []

    def accounting_job(self, job_id: str) -> Optional[JobInfo]:
        p = self._cmd(["sacct", "-j", job_id, "--json"])
        if p.returncode != 0:
            err = (p.stderr or "").strip()
            if "disabled" in err or "accounting_storage/none" in err or "not configured" in err:
                return None  # no accounting: the job is simply unknown
            raise _failed(f"sacct -j {job_id}", p)
        return with_parts(parse_sacct_json(p.stdout), job_id)

    def show_config(self) -> Dict[str, str]:
        """The running slurmctld's configuration (`scontrol show config`): what it really
        uses, which a slurm.conf on this node may not be."""
        p = self._cmd(["scontrol", "show", "config"])
        if p.returncode != 0:
            raise _failed("scontrol show config", p)
        return parse_scontrol_config(p.stdout)

    def nodes(self) -> Dict[str, str]:
        """{node: state} of every node slurmctld knows (slurm/nodes.py parses it)."""
        from efajob.slurm.nodes import parse_sinfo_nodes

        p = self._cmd(["sinfo", "-h", "-N", "-o", "%N %T"])
        if p.returncode != 0:
            raise _failed("sinfo -N", p)
        return parse_sinfo_nodes(p.stdout)

    def hostnames(self, expr: str) -> List[str]:
        p = self._cmd(["scontrol", "show", "hostnames", expr])
        if p.returncode != 0:
            raise _failed("scontrol show hostnames", p)
        return [h for h in p.stdout.split() if h]


# -- the pyslurm backend -----------------------------------------------------------------------
def _attr(obj: Any, *names: str) -> Any:
    for n in names:
        v = getattr(obj, n, None)
        if v is not None:
            return v
    return None


def from_pyslurm(job: Any) -> JobInfo:
    """A pyslurm 25.11 `Job` or `db.Job` -> JobInfo (attribute names as pyslurm documents)."""
    raw = str(_attr(job, "id"))
    ajob, atask = _attr(job, "array_id"), _attr(job, "array_task_id")
    hjob, hoff = _attr(job, "heterogeneous_id", "het_job_id"), _attr(job, "heterogeneous_offset", "het_job_offset")
    jid = _display_id(raw, str(ajob) if ajob else None, str(atask) if atask is not None else None,
                      str(hjob) if hjob else None, str(hoff) if hoff is not None else None)
    nodelist = _attr(job, "allocated_nodes", "nodelist", "nodes")
    ec, sig = _attr(job, "exit_code"), _attr(job, "exit_code_signal")
    start, end = _attr(job, "start_time"), _attr(job, "end_time")
    return JobInfo(
        job_id=jid, name=_attr(job, "name"), user=_attr(job, "user_name"),
        account=_attr(job, "account"), partition=_attr(job, "partition"),
        state=_state(_attr(job, "state")),
        exit_code=None if ec is None else f"{int(ec)}:{int(sig or 0)}",
        num_nodes=_int(_attr(job, "num_nodes")), nodes=expand(nodelist) if nodelist else [],
        nodelist=nodelist or None, start=float(start) if start else None,
        end=float(end) if end else None, cluster=_attr(job, "cluster"),
        time_limit=_int(_attr(job, "time_limit")), restarts=_int(_attr(job, "requeue_count")),
        slurm_job_id=raw,
    )


class PyslurmBackend:
    name = "pyslurm"

    def __init__(self, module: Any):
        self.pyslurm = module

    def job(self, job_id: str) -> Optional[JobInfo]:
        validate_job_id(job_id)
        ps = self.pyslurm
        try:
            if job_id.isdigit():  # Job.load takes the numeric id only
                # One job, never its siblings: an array/het id lists the one part it loaded.
                return with_parts([from_pyslurm(ps.Job.load(int(job_id)))], job_id)
        except Exception as e:  # pyslurm.RPCError: not in slurmctld any more (or an error)
            if "Invalid job id" not in str(e) and "ESLURM_INVALID_JOB_ID" not in str(e):
                log.debug("pyslurm Job.load(%s): %s", job_id, e)
                raise SlurmError(f"pyslurm Job.load({job_id}): {summarize_stderr(str(e))}") from None
        try:
            jobs = ps.db.Jobs.load(ps.db.JobFilter(ids=[job_id]))
        except Exception as e:  # noqa: BLE001 - pyslurm raises its own RPCError
            log.debug("pyslurm db.Jobs.load(%s): %s", job_id, e)
            raise SlurmError(f"pyslurm db.Jobs.load({job_id}): {summarize_stderr(str(e))}") from None
        values = list(jobs.values()) if hasattr(jobs, "values") else list(jobs)
        return with_parts([from_pyslurm(j) for j in values], job_id)

    def hostnames(self, expr: str) -> List[str]:
        return expand(expr)


def get_backend(prefer: Optional[str] = None, *, timeout: float = TIMEOUT):
    """pyslurm when importable (and not told otherwise), else the commands."""
    if prefer in (None, "pyslurm"):
        try:
            import pyslurm

            return PyslurmBackend(pyslurm)
        except Exception:  # ImportError, or a pyslurm built for another Slurm
            if prefer == "pyslurm":
                raise SlurmError("pyslurm is not importable here (it must match the "
                                 "Slurm version)") from None
    return CommandBackend(timeout=timeout)


def job_is_running(job_id: str, restart: int = 0, *, backend=None) -> Optional[bool]:
    """For reconcile(): True while Slurm says the job (this run of it) holds nodes, False when
    it finished or Slurm no longer knows it, None when Slurm cannot be asked."""
    backend = backend or get_backend(timeout=5.0)
    try:
        info = backend.job(job_id)
    except SlurmError:
        return None
    if info is None:
        return False
    if info.restarts is not None and info.restarts > restart:
        return False  # requeued since: this run is over, a new key tracks the next one
    return info.alive
