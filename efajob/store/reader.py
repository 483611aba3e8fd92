"""Reading the job store: find a job's records, list recent jobs, read node status files.

    <store>/<cluster>/jobs/<job_id>/<host>[.<restart>].json   one job-node record per node
    <store>/<cluster>/nodes/<host>.json                         node status (the daemon, ~15 s)

Writers (efajob/hooks/outbox.py, the daemon) rename complete files into place, so a reader sees a
whole file or none; temp files start with "." and are skipped here. A file that is still
corrupt (a crash on a filesystem without atomic rename, a hand edit) is skipped with its
reason: the report turns that into an `incomplete` finding, never into zeros.

Nothing here prints: errors are StoreError (store unreadable), JobNotFoundError,
AmbiguousJobError (several clusters, array tasks or het components match).
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from efajob.errors import AmbiguousJobError, JobNotFoundError, StoreError, UsageError
from efajob.slurm.jobid import is_job_id, split_record_stem, status_job_key, validate_job_id
from efajob.values import as_number, loads_checked, note_read, read_regular

JOBS_DIR = "jobs"
NODES_DIR = "nodes"
MAX_RECORD_BYTES = 16 << 20  # a 32-device record with a 500-point series is ~40 kB
MAX_STATUS_BYTES = 1 << 20
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")  # validate_name's alphabet; \Z: no "\n"
# A node status file older than this means its daemon stopped writing it (written every
# `status_interval`, 15 s by default: four missed writes).
DEFAULT_MAX_STATUS_AGE = 60.0


@dataclass(frozen=True)
class JobFiles:
    """One run (cluster, job id, restart) of a job and the record files found for it."""

    store: str
    cluster: str
    job_id: str
    restart: int
    paths: Tuple[str, ...]  # record files of this restart, sorted by file name
    restarts: Tuple[int, ...] = (0,)  # every restart of the job in this cluster
    restart_defaulted: bool = False  # several restarts and the caller did not choose
    live: Dict[str, "NodeStatus"] = field(default_factory=dict)  # host -> status naming the job

    @property
    def key(self) -> str:
        return self.job_id if self.restart == 0 else f"{self.job_id}.{self.restart}"


@dataclass(frozen=True)
class LiveJob:
    """A job a node status file lists as running on that node."""

    key: str
    job_id: str
    restart: int
    user: Optional[str] = None
    start: Optional[float] = None
    partition: Optional[str] = None
    # The job's own window when it started inside the node's (`recent` in its entry);
    # `recent_pending`: the entry says null, too young for one. Else the node's applies.
    recent: Optional["RecentCounters"] = None
    recent_pending: bool = False

    def window(self, node: Optional["RecentCounters"]) -> Optional["RecentCounters"]:
        """The last-minute window to judge this job by on its node."""
        return self.recent if self.recent is not None or self.recent_pending else node


@dataclass(frozen=True)
class RecentCounters:
    """A node status file's `recent`: the daemon's last minute (efajob/daemon/recent.py).
    `devices`: {name: (port counters, device counters)}; counters are non-negative ints."""

    seconds: float
    counters: Dict[str, int]
    devices: Dict[str, Tuple[Dict[str, int], Dict[str, int]]]
    resets: Tuple[str, ...] = ()
    vanished: Tuple[str, ...] = ()
    appeared: Tuple[str, ...] = ()


@dataclass(frozen=True)
class NodeStatus:
    """The parts of a daemon's node status file the report uses (efajob/daemon/nodestatus.py writes it;
    unknown keys are ignored, missing ones are None)."""

    host: str
    wall: Optional[float]
    tx_gbps: Optional[float]
    rx_gbps: Optional[float]
    jobs: Tuple[LiveJob, ...]
    path: str = ""
    instance_type: Optional[str] = None  # the daemon's (config or IMDS), for live reports
    recent: Optional[RecentCounters] = None  # the last minute; None from an older daemon
    # The file's `recent` as parsed JSON, until node_window() first needs it: 32 devices'
    # counters are most of a status file's parsing, and `efajob jobs` over 2,000 nodes uses
    # the windows of the few jobs it shows.
    recent_doc: object = field(default=None, compare=False, repr=False)

    def age(self, now: float) -> Optional[float]:
        return None if self.wall is None else max(0.0, now - self.wall)

    def fresh(self, now: float, max_age: float = DEFAULT_MAX_STATUS_AGE) -> bool:
        age = self.age(now)
        return age is not None and age <= max_age


@dataclass
class LoadedRecords:
    records: List[dict] = field(default_factory=list)
    skipped: List[Tuple[str, str]] = field(default_factory=list)  # (path, why)


# -- listing ---------------------------------------------------------------------------------
def _listdir(path: str, what: str) -> List[str]:
    try:
        names = os.listdir(path)
        note_read()
        return names
    except FileNotFoundError:
        return []
    except NotADirectoryError:
        raise StoreError(f"{what} {path} is not a directory") from None
    except OSError as e:
        raise StoreError(f"cannot read {what} {path}: {e.strerror}") from None


def list_clusters(store: str) -> List[str]:
    """Cluster directories of the store. A missing or unreadable store is a StoreError."""
    if not os.path.exists(store):
        raise StoreError(f"job store {store} does not exist (set `store` in the config, "
                         "EFAJOB_STORE or --store)")
    names = _listdir(store, "job store")
    return sorted(n for n in names if _NAME_RE.match(n) and os.path.isdir(os.path.join(store, n)))


def parse_record_name(name: str) -> Optional[Tuple[str, int]]:
    """`n1.json` -> ("n1", 0); `n1.2.json` -> ("n1", 2); `gpu.3.0.json` -> ("gpu.3", 0)
    (jobid.record_stem); temp files and others -> None."""
    if not name.endswith(".json") or name.startswith("."):
        return None
    host, restart = split_record_stem(name[:-5])
    return (host, restart) if _NAME_RE.match(host) else None


def scan_job_dir(path: str) -> Dict[int, List[str]]:
    """{restart: [record paths]} of one job directory."""
    out: Dict[int, List[str]] = {}
    for name in sorted(_listdir(path, "job directory")):
        parsed = parse_record_name(name)
        if parsed is not None:
            out.setdefault(parsed[1], []).append(os.path.join(path, name))
    return out


def _clusters_to_search(store: str, cluster: Optional[str]) -> List[str]:
    clusters = list_clusters(store)
    if cluster is None:
        return clusters
    if not _NAME_RE.match(cluster):
        raise UsageError(f"cluster name {cluster!r} is not valid")
    return [cluster]


StatusSource = Callable[[str], Dict[str, "NodeStatus"]]


def find_job(store: str, job_id: str, *, cluster: Optional[str] = None,
             restart: Optional[int] = None, now: Optional[float] = None,
             max_status_age: float = DEFAULT_MAX_STATUS_AGE,
             statuses: Optional[StatusSource] = None) -> JobFiles:
    """Locate one run of a job. Several clusters -> AmbiguousJobError (unless `cluster`);
    several restarts -> the latest unless `restart` (`restart_defaulted` says so). A job with no
    record yet but listed by fresh node status files is found too (running: `live`).
    `statuses(cluster)`: the node statuses already read (status_reader), for a caller that
    finds many jobs; without it only the status files that mention the job are parsed."""
    validate_job_id(job_id)
    now = time.time() if now is None else now
    if statuses is None:
        def statuses(c: str) -> Dict[str, NodeStatus]:
            return read_node_statuses(store, c, mentioning=job_id)
    clusters = _clusters_to_search(store, cluster)
    found: Dict[str, Dict[int, List[str]]] = {}
    for c in clusters:
        runs = scan_job_dir(os.path.join(store, c, JOBS_DIR, job_id))
        if runs:
            found[c] = runs
    live_by_cluster: Dict[str, Dict[str, NodeStatus]] = {}
    for c in (clusters if not found else list(found)):
        live = {h: s for h, s in statuses(c).items()
                if s.fresh(now, max_status_age) and any(j.job_id == job_id for j in s.jobs)}
        if live:
            live_by_cluster[c] = live
            found.setdefault(c, {})
    if not found:
        # Hooks file records under the numeric SLURM_JOB_ID; an array task (7_8) or a het
        # component (8+1) is found through the ids its records carry.
        aliases = find_aliases(store, job_id, clusters)
        if len(aliases) == 1:
            (c, stored), = aliases
            return find_job(store, stored, cluster=c, restart=restart, now=now,
                            max_status_age=max_status_age, statuses=statuses)
        if len(aliases) > 1:
            raise AmbiguousJobError(
                f"job {job_id} matches several jobs in {store}: "
                + ", ".join(f"{j} (cluster {c})" for c, j in aliases) + "; choose with --cluster")
        _raise_not_found(store, job_id, clusters, cluster)
    if len(found) > 1:
        raise AmbiguousJobError(
            f"job {job_id} exists in several clusters of {store}: {', '.join(sorted(found))}; "
            "choose one with --cluster")
    (c, runs), = found.items()
    live = live_by_cluster.get(c, {})
    live_restarts = {j.restart for s in live.values() for j in s.jobs if j.job_id == job_id}
    restarts = tuple(sorted(set(runs) | live_restarts))
    if restart is not None:
        if restart not in restarts:
            raise JobNotFoundError(
                f"job {job_id} in cluster {c} has no restart {restart} "
                f"(restarts in the store: {', '.join(map(str, restarts))})")
        chosen, defaulted = restart, False
    else:
        chosen, defaulted = restarts[-1], len(restarts) > 1
    live = {h: s for h, s in live.items()
            if any(j.job_id == job_id and j.restart == chosen for j in s.jobs)}
    return JobFiles(store=store, cluster=c, job_id=job_id, restart=chosen,
                    paths=tuple(runs.get(chosen, ())), restarts=restarts,
                    restart_defaulted=defaulted, live=live)


_ALIAS_RE = re.compile(r"([0-9]{1,10})([_+])([0-9]{1,10})")


def find_aliases(store: str, job_id: str, clusters: Sequence[str]) -> List[Tuple[str, str]]:
    """[(cluster, stored job id)] whose records say they are array task / het component
    `job_id`. Used only when the id is not a directory name and Slurm did not map it."""
    m = _ALIAS_RE.fullmatch(job_id)
    if m is None:
        return []
    base, sep, part = m.groups()
    return sorted((c, name) for c, name, alias in _part_records(store, base, clusters)
                  if alias == f"{base}{sep}{part}")


def find_parts(store: str, job_id: str, clusters: Sequence[str]) -> List[str]:
    """The array tasks / het components (`500_1`, `420+1`) whose records name the plain id
    `job_id` as their array or het job: what `report 500` lists instead of reporting one task.
    Only records written where Slurm gave the hooks `SLURM_ARRAY_*` / `SLURM_HET_*` carry
    them (docs/records.md); elsewhere Slurm itself lists the parts (adapter.parts_of)."""
    if not (job_id.isascii() and job_id.isdigit()):
        return []
    parts = {alias for _, _, alias in _part_records(store, job_id, clusters)}
    return sorted(parts, key=_job_sort_key)


def _part_records(store: str, base: str, clusters: Sequence[str]):
    """(cluster, stored id, `base_task` or `base+offset`) of every job directory whose records
    say they belong to array or het job `base`. Reads one record per candidate directory (ids
    >= `base`: Slurm allocates the array or het job id first)."""
    for c in clusters:
        jobs = os.path.join(store, c, JOBS_DIR)
        for name in _listdir(jobs, "jobs directory"):
            if not (name.isascii() and name.isdigit()) or int(name) < int(base):
                continue
            runs = scan_job_dir(os.path.join(jobs, name))
            if not runs:
                continue
            try:
                rec = loads_checked(read_regular(runs[max(runs)][0], MAX_RECORD_BYTES))
            except (OSError, ValueError):
                continue
            if not isinstance(rec, dict):
                continue
            for owner, sub, sep in (("array_job_id", "array_task_id", "_"),
                                    ("het_job_id", "het_job_offset", "+")):
                part = rec.get(sub)
                part = str(part) if isinstance(part, (str, int)) and not isinstance(part, bool) else ""
                if str(rec.get(owner)) == base and part.isascii() and part.isdigit():
                    yield c, name, f"{base}{sep}{part}"


def _raise_not_found(store: str, job_id: str, clusters: Sequence[str],
                     cluster: Optional[str]) -> None:
    # `123` may be an array job (dirs 123_1, 123_2, ..) or a het job (123+0, 123+1): say so
    # rather than mixing its parts into one report.
    parts: List[str] = []
    if "_" not in job_id and "+" not in job_id:
        for c in clusters:
            for name in _listdir(os.path.join(store, c, JOBS_DIR), "jobs directory"):
                if (name.startswith(job_id + "_") or name.startswith(job_id + "+")) and is_job_id(name):
                    parts.append(name if len(clusters) == 1 else f"{name} (cluster {c})")
    if parts:
        parts.sort(key=_job_sort_key)
        kind = "an array job" if "_" in parts[0] else "a heterogeneous job"
        shown = ", ".join(parts[:20]) + (f", ... ({len(parts)} in all)" if len(parts) > 20 else "")
        raise AmbiguousJobError(f"job {job_id} is {kind}; report one of its parts: {shown}")
    where = f"cluster {cluster}" if cluster else (
        f"clusters {', '.join(clusters)}" if clusters else "any cluster (the store is empty)")
    raise JobNotFoundError(
        f"job {job_id} has no records in the job store {store} ({where}). Records arrive after "
        "the job's epilog, when the node daemons forward them; a running job shows up once the "
        "daemons write their node status files. `efajob jobs` lists the jobs the store has.")


def _job_sort_key(name: str) -> Tuple:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"([_+ ])", name))


# -- reading records -----------------------------------------------------------------------------
def read_records(paths: Sequence[str], *, job_id: Optional[str] = None,
                 restart: Optional[int] = None) -> LoadedRecords:
    """Parse record files; bad ones are skipped with a reason, never raised."""
    out = LoadedRecords()
    out.records.extend(iter_records(paths, job_id=job_id, restart=restart, skipped=out.skipped))
    return out


def iter_records(paths: Sequence[str], *, job_id: Optional[str] = None,
                 restart: Optional[int] = None,
                 skipped: Optional[List[Tuple[str, str]]] = None) -> Iterator[dict]:
    """The usable records of `paths`, parsed one at a time as the caller asks for the next:
    the report of a 4,096-node job never holds them all (report/build.py `ingest`). Bad files
    are appended to `skipped` as (path, why), never raised."""
    for path in paths:
        why = None
        try:
            data = read_regular(path, MAX_RECORD_BYTES)
            if len(data) > MAX_RECORD_BYTES:
                why = f"larger than {MAX_RECORD_BYTES} bytes"
            else:
                rec = loads_checked(data)
                why = check_loaded(rec, path, job_id, restart)
        except FileNotFoundError:
            why = "vanished while reading"
        except OSError as e:
            why = f"unreadable: {e.strerror}"
        except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, loads_checked's bounds
            why = f"not valid JSON ({str(e).splitlines()[0][:80]}): corrupt or half-written"
        if why is None:
            assert isinstance(rec, dict)  # check_loaded passed it: a usable record
            yield rec
            del rec  # not kept alive while the next file is read
        elif skipped is not None:
            skipped.append((path, why))


def check_loaded(rec: object, path: str, job_id: Optional[str], restart: Optional[int]) -> Optional[str]:
    """Why a parsed record cannot be used, or None. Only what the report relies on."""
    if not isinstance(rec, dict) or rec.get("schema") != "efajob/job-node-record":
        return "not a job-node record"
    if rec.get("version") != 1:
        return f"record version {rec.get('version')!r} is not supported (this efajob reads 1)"
    host = rec.get("host")
    if not isinstance(host, str) or not _NAME_RE.match(host):
        return "no valid host"
    if job_id is not None and rec.get("job_id") != job_id:
        return f"holds job {rec.get('job_id')!r}, not {job_id}"
    if restart is not None and rec.get("restart", 0) != restart:
        return f"holds restart {rec.get('restart')!r}, not {restart}"
    parsed = parse_record_name(os.path.basename(path)) if path else None
    if parsed is not None and parsed[0] != host:
        return f"holds host {host!r}, not the {parsed[0]!r} of its file name"
    if not isinstance(rec.get("devices", []), list) or not isinstance(rec.get("totals", {}), dict):
        return "malformed devices or totals"
    return None


def load_job(files: JobFiles) -> LoadedRecords:
    return read_records(files.paths, job_id=files.job_id, restart=files.restart)


# -- node status files ------------------------------------------------------------------------
def parse_node_status(d: object, path: str = "") -> Optional[NodeStatus]:
    """A node status document -> NodeStatus, tolerant of the writer's additions. None if unusable.

    Read (efajob/daemon/nodestatus.py, schema "efajob/node-status" v1): `node`, `time` (epoch seconds
    of the write), `tx_gbps`/`rx_gbps` (node totals now), `jobs` (objects with `key` or `job_id`
    (+ `restart`), `user`, `start`; plain key strings are accepted too)."""
    if not isinstance(d, dict):
        return None
    host = d.get("node") or d.get("host")
    if not isinstance(host, str) or not _NAME_RE.match(host):
        return None
    jobs: List[LiveJob] = []
    raw_jobs = d.get("jobs", [])
    for entry in raw_jobs if isinstance(raw_jobs, list) else []:
        parsed = status_job_key(entry)
        if parsed is None:
            continue
        key, jid, rs, j = parsed
        user = j.get("user") if isinstance(j.get("user"), str) else None
        part = j.get("partition") if isinstance(j.get("partition"), str) else None
        start = as_number(j.get("start", j.get("start_wall")))
        own = parse_recent(j.get("recent"))
        jobs.append(LiveJob(key=key, job_id=jid, restart=rs, user=user, start=start,
                            partition=part, recent=own,
                            recent_pending=own is None and "recent" in j))
    itype = d.get("instance_type")
    return NodeStatus(host=host, wall=as_number(d.get("time")),
                      tx_gbps=as_number(d.get("tx_gbps")), rx_gbps=as_number(d.get("rx_gbps")),
                      jobs=tuple(jobs), path=path,
                      instance_type=itype if isinstance(itype, str) and itype else None,
                      recent_doc=d.get("recent"))


def node_window(st: object) -> Optional[RecentCounters]:
    """A node status's last-minute window, parsed on first use (NodeStatus.recent_doc: the
    parsed value, or the file's unparsed window from load_status)."""
    doc = getattr(st, "recent_doc", None)
    if isinstance(doc, _Window):
        doc = doc.parse()
    if doc is not None:
        object.__setattr__(st, "recent", parse_recent(doc))  # frozen: a cache, not a change
        object.__setattr__(st, "recent_doc", None)
    return getattr(st, "recent", None)


def _counts(raw: object) -> Dict[str, int]:
    """{name: non-negative int}; anything else left out (absent, never 0)."""
    if not isinstance(raw, dict):
        return {}
    # The common case checked at C speed (a status file holds ~1,500 counters in 32 devices'
    # windows: the per-item comprehension was most of `efajob jobs` on a 2,000-node cluster).
    if (len(raw) <= 512 and set(map(type, raw)) <= {str} and set(map(type, raw.values())) <= {int}
            and (not raw or min(raw.values()) >= 0)):
        return dict(raw)
    return {k: v for k, v in list(raw.items())[:512] if isinstance(k, str) and isinstance(v, int)
            and not isinstance(v, bool) and v >= 0}


def _names(raw: object) -> Tuple[str, ...]:
    return tuple(x for x in raw[:256] if isinstance(x, str)) if isinstance(raw, list) else ()


def parse_recent(raw: object) -> Optional[RecentCounters]:
    """A status file's `recent` -> RecentCounters; None when absent or without a usable
    duration (a window of 0 s says nothing)."""
    if not isinstance(raw, dict):
        return None
    secs = as_number(raw.get("seconds"))
    if secs is None or secs <= 0:
        return None
    devices: Dict[str, Tuple[Dict[str, int], Dict[str, int]]] = {}
    raw_devs = raw.get("devices")
    for name, dev in list(raw_devs.items())[:256] if isinstance(raw_devs, dict) else []:
        if isinstance(name, str) and _NAME_RE.match(name) and isinstance(dev, dict):
            devices[name] = (_counts(dev.get("counters")), _counts(dev.get("device_counters")))
    return RecentCounters(seconds=float(secs), counters=_counts(raw.get("counters")),
                          devices=devices, resets=_names(raw.get("resets")),
                          vanished=_names(raw.get("vanished")),
                          appeared=_names(raw.get("appeared")))


_RECENT_KEY = b'"recent":'


def load_status(data: bytes) -> object:
    """A node status file's JSON, its top-level `recent` window left unparsed (a _Window, for
    node_window): it is ~99% of a 32-device node's 29 kB, and a listing of 2,000 nodes needs
    the windows of the few nodes whose jobs it shows. The daemon writes `recent` last
    (daemon/nodestatus.py encode_node_status). The shortcut is taken only when the file
    looks exactly like that: the key's last occurrence followed by one object that closes
    the document (`}}` at the end, braces balanced: a file cut short is refused whole), and
    the part before it, closed with `}`, a document with `schema`, `time`, `node` and `jobs`
    (so the key sat at the top level: a job's own `recent` is inside a list, a key inside a
    string is escaped; a file whose keys are all sorted, as older daemons wrote, has `time`
    after `recent`). Anything else is parsed whole, as before. A window that does not parse
    on its own is taken from a parse of the whole file (_Window.parse). ValueError as
    loads_checked."""
    i = data.rfind(_RECENT_KEY)
    if i > 0:
        head = data[:i].rstrip()
        tail = data[i + len(_RECENT_KEY):].rstrip()
        if head.endswith(b",") and tail.endswith(b"}") and tail[:-1].rstrip().endswith(b"}") \
                and tail.lstrip().startswith(b"{") \
                and tail.count(b"{") + 1 == tail.count(b"}") and tail.count(b"[") == tail.count(b"]"):
            try:
                doc = loads_checked(head[:-1] + b"}")
            except ValueError:
                doc = None
            if isinstance(doc, dict) and "recent" not in doc and \
                    all(k in doc for k in ("schema", "time", "node", "jobs")):
                doc["recent"] = _Window(data, i + len(_RECENT_KEY))
                return doc
    return loads_checked(data)


_DEVICES_AT = b',"devices":['
_RECENT_AFTER = b'],"recent":{'


def split_status(data: bytes, whole: bool = True) -> Optional[Tuple[dict, bytes]]:
    """(the document without `devices` and `recent`, the devices' JSON unparsed) of a status
    file laid out as the daemon writes it (encode_node_status: sorted keys, then `devices`,
    then `recent`); None for any other layout, which the caller parses whole.

    Searched forwards, so the 25 kB window after the devices is never scanned: the first
    `,"devices":[` is the top-level list (a job's own window has `"devices":{`, an object),
    and `],"recent":{` after it ends the list (a device entry has no `recent`). The cut is
    taken only when the part before the devices, closed with `}`, is a document with
    `schema`, `time`, `node` and `jobs` (so the key sat at the top level: a key inside a
    nested object would leave a brace open, one inside a string is escaped).
    `whole=False`: `data` is the file's start, cut only where `recent` follows the devices."""
    d = data.find(_DEVICES_AT)
    if d <= 0:
        return None
    r = data.find(_RECENT_AFTER, d)
    if r > 0:
        devices = data[d + len(_DEVICES_AT) - 1:r + 1]
    elif not whole:  # the start of a file: its end may be anywhere, even after a `]}`
        return None
    else:  # no window yet: the devices close the document
        tail = data.rstrip()
        if not tail.endswith(b"]}"):
            return None
        devices = tail[d + len(_DEVICES_AT) - 1:-1]
    try:
        head = loads_checked(data[:d] + b"}")
    except ValueError:
        return None
    if not isinstance(head, dict) or "devices" in head or "recent" in head \
            or not all(k in head for k in ("schema", "time", "node", "jobs")):
        return None
    return head, devices


class _Window:
    """The unparsed bytes of a status file's `recent` window, from `start` to the
    document's closing `}`."""

    __slots__ = ("data", "start")

    def __init__(self, data: bytes, start: int):
        self.data, self.start = data, start

    def parse(self) -> object:
        body = self.data[self.start:].rstrip()[:-1]
        try:
            return loads_checked(body)
        except ValueError:
            pass
        # Not one value after all (a writer that put a key after it): the whole file decides.
        try:
            whole = loads_checked(self.data)
        except ValueError:
            return None
        return whole.get("recent") if isinstance(whole, dict) else None


def read_node_statuses(store: str, cluster: str, *,
                       mentioning: Optional[str] = None) -> Dict[str, NodeStatus]:
    """{host: NodeStatus} of a cluster; unreadable or corrupt files are left out (they are
    rewritten every few seconds: the next one will do). `mentioning`: only the files whose
    text holds `"<job id>` (a key `"123"` or `"123.1"` both do), so one job's lookup parses
    the few nodes it runs on, not a 32-device `recent` window of every node (docs/performance.md)."""
    d = os.path.join(store, cluster, NODES_DIR)
    needle = None if mentioning is None else ('"' + mentioning).encode()
    out: Dict[str, NodeStatus] = {}
    for name in sorted(_listdir(d, "node status directory")):
        if not name.endswith(".json") or name.startswith("."):
            continue
        path = os.path.join(d, name)
        try:
            data = read_regular(path, MAX_STATUS_BYTES)
            if needle is not None and needle not in data:
                continue
            doc = load_status(data)
        except (OSError, ValueError):
            continue
        st = parse_node_status(doc, path)
        if st is not None:
            out[st.host] = st
    return out


# -- recent jobs -------------------------------------------------------------------------------
@dataclass(frozen=True)
class JobDir:
    cluster: str
    job_id: str
    path: str
    mtime: float  # changes when a record is added: a cheap "last heard of" time


def list_job_dirs(store: str, *, cluster: Optional[str] = None,
                  since: Optional[float] = None) -> List[JobDir]:
    """Job directories, newest first. `since` drops directories not modified since then:
    a record lands after its job ended, so a job that ended after `since` is never dropped."""
    out: List[JobDir] = []
    for c in _clusters_to_search(store, cluster):
        base = os.path.join(store, c, JOBS_DIR)
        for name in _listdir(base, "jobs directory"):
            if not is_job_id(name):
                continue
            path = os.path.join(base, name)
            try:
                st = os.stat(path)
            except OSError:
                continue
            if since is not None and st.st_mtime < since:
                continue
            out.append(JobDir(cluster=c, job_id=name, path=path, mtime=st.st_mtime))
    out.sort(key=lambda j: (-j.mtime, j.cluster, _job_sort_key(j.job_id)))
    return out


_REL_RE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str, now: float) -> float:
    """`--since`: epoch seconds, a relative age (`90m`, `6h`, `2d`, `1w`) or an ISO date/time
    (`2024-05-01`, `2024-05-01T10:00`, local time unless it carries an offset) -> epoch."""
    from datetime import datetime

    t = text.strip()
    m = _REL_RE.match(t)
    if m:
        return now - float(m.group(1)) * _UNITS[m.group(2)]
    if t.isascii() and t.isdigit():
        return float(t)
    try:
        dt = datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--since {text!r}: expected e.g. 6h, 2d, 2024-05-01, "
                         "2024-05-01T10:00 or epoch seconds") from None
    return dt.timestamp()


def status_reader(store: str) -> Callable[[str], Dict[str, NodeStatus]]:
    """Per-cluster node statuses, read once per cluster (for listing many jobs)."""
    cache: Dict[str, Dict[str, NodeStatus]] = {}

    def get(cluster: str) -> Dict[str, NodeStatus]:
        if cluster not in cache:
            cache[cluster] = read_node_statuses(store, cluster)
        return cache[cluster]

    return get
