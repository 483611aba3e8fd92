"""The head-node dashboard model: node status documents + recent jobs -> Dashboard -> one page.

Pure: no I/O, no clock (the caller passes `now`). dashboard/server.py reads the store and
serves the page; `efajob dashboard build` writes it to a file.

Inputs are what others wrote on a shared filesystem, so nothing is trusted: a status document
is parsed field by field (a wrong type is absent, never 0 and never an exception), host and
cluster names must match the store's name alphabet and job ids must be job ids.
dashboard/page.py turns the model into the page; `nodes_to_dict`/`jobs_to_dict` below are the
server's JSON.

A node is *stale* when its status file is older than `max_status_age` (the CLI passes
max(60 s, 4 x status_interval), as `efajob report` does): its daemon stopped writing, the node
is down, or the shared filesystem is stuck. Stale nodes stay on the page, marked, and are left
out of the cluster totals and of the running jobs (their numbers are old).
"""
from __future__ import annotations

import functools
import re
from dataclasses import asdict, dataclass, field, fields
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

from efajob.values import as_number as as_number  # re-exported for the server
from efajob.values import as_object, loads_checked
from efajob.report.nodeverdict import HEALTH_RATES, Problem, device_problems, live_problems, parse_verdict, rules_key
from efajob.slurm.jobid import status_job_key
from efajob.fmt import fmt_duration
from efajob.dashboard.tally import Items, Sums, items
from efajob.node.readings import natural_key

# A node clock this far ahead of ours is reported: ages computed from it would lie.
SKEW_S = 30.0
# The store's name alphabet (config.validate_name): clusters and hosts become path components.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# No script at all; the one form (the node table's filter) submits to this server by GET.
CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
       "form-action 'self'")


@dataclass(frozen=True)
class DeviceView:
    name: str
    # The port state without its number, shown only: the EFA driver hard-codes ACTIVE, so it
    # is no health signal. `errors` (error counters that rose, per second) and
    # `port_counters` (how many were readable; 0: unreadable) are.
    state: Optional[str]
    link_gbps: Optional[float]
    tx_gbps: Optional[float]
    rx_gbps: Optional[float]
    errors: Dict[str, float] = field(default_factory=dict)
    port_counters: Optional[int] = None

    @property
    def sick(self) -> bool:
        return bool(self.errors) or self.port_counters == 0


@dataclass(frozen=True)
class NodeJob:
    key: str
    job_id: str
    restart: int
    user: Optional[str]
    partition: Optional[str]
    start: Optional[float]


@dataclass
class NodeView:
    cluster: str
    host: str
    instance_type: Optional[str] = None
    time: Optional[float] = None  # when the daemon wrote the status (its clock)
    stale: bool = True  # as of the Dashboard's `generated` (its age: age_at(generated))
    daemon_healthy: Optional[bool] = None
    daemon_version: Optional[str] = None
    tx_gbps: Optional[float] = None
    rx_gbps: Optional[float] = None
    link_gbps: Optional[float] = None  # sum of the devices' link rates
    util: Optional[float] = None  # busier direction / link rate
    rates: Dict[str, float] = field(default_factory=dict)  # HEALTH_RATES present, per second
    jobs: List[NodeJob] = field(default_factory=list)
    problems: List[str] = field(default_factory=list)
    # (kind, severity) of each problem, in step with `problems`; the kind is a finding code
    # or one of KINDS: what the problem summary groups by.
    kinds: List[Tuple[str, str]] = field(default_factory=list)
    # From Slurm's node list (slurmnodes.py), when the dashboard reads it: the state as sinfo
    # prints it, and whether this node has any efajob status file at all.
    slurm_state: Optional[str] = None
    efajob: bool = True
    powered_down: bool = False  # a cloud node Slurm powered down: silence is expected
    # The devices: parsed when the file was (device_list), or their JSON as the daemon wrote
    # it (device_src), parsed when a page first draws them: a refresh that trusts the
    # daemon's verdict never parses 32 devices of each of 1,333 re-read files.
    device_list: Optional[List[DeviceView]] = field(default=None, repr=False, compare=False)
    device_src: Optional[bytes] = field(default=None, repr=False, compare=False)

    @property
    def devices(self) -> List[DeviceView]:
        got = self.device_list
        if got is None:  # two threads may both parse: the same answer, either one kept
            got = self.device_list = parse_devices(self.device_src)
        return got

    def age_at(self, now: float) -> Optional[float]:
        """Seconds since the daemon wrote the status, as of `now` (a clock ahead: 0). Not a
        field: a fresh node's view is shared by every refresh until its file changes."""
        return None if self.time is None else max(0.0, now - self.time)

    def add_problem(self, kind: str, message: str, severity: Optional[str] = None) -> None:
        self.kinds.append((kind, severity or KINDS.get(kind, ("", "warning"))[1]))
        self.problems.append(message)

    @property
    def state(self) -> str:
        if not self.efajob:
            return "no-efajob"
        if self.powered_down:
            return "powered-down"
        return "stale" if self.stale else ("warn" if self.problems else "ok")


@dataclass
class RunningJob:
    cluster: str
    key: str
    job_id: str
    restart: int
    users: List[str]
    partitions: List[str]
    hosts: List[str]
    start: Optional[float]
    tx_gbps: Optional[float]  # sum over its nodes now (a shared node counts whole)
    rx_gbps: Optional[float]
    shared_hosts: List[str]  # nodes that also run another job


@dataclass
class Totals:
    nodes: int = 0
    fresh: int = 0
    stale: int = 0
    warn: int = 0
    tx_gbps: Optional[float] = None
    rx_gbps: Optional[float] = None
    link_gbps: Optional[float] = None
    util: Optional[float] = None
    rates: Dict[str, float] = field(default_factory=dict)
    running_jobs: int = 0
    users: int = 0


@dataclass(frozen=True)
class ProblemGroup:
    """Every node with one kind of problem: "31 nodes: rx drops"."""
    kind: str
    label: str
    severity: str  # critical | warning
    hosts: Tuple[Tuple[str, str], ...]  # (cluster, host), in node order
    example: str  # the first node's message, numbers included


@dataclass
class Dashboard:
    generated: float
    max_status_age: float
    clusters: List[str]
    nodes: List[NodeView]
    totals: Totals
    running: List[RunningJob]
    recent: List[dict]  # `jobreports.job_summary` rows, newest first
    notes: List[str] = field(default_factory=list)
    problems: List[ProblemGroup] = field(default_factory=list)
    # (cluster, host) -> node and (cluster, job key) -> running job, for the detail pages.
    by_host: Dict[Tuple[str, str], NodeView] = field(default_factory=dict, repr=False)
    by_job: Dict[Tuple[str, str], RunningJob] = field(default_factory=dict, repr=False)
    # What a renderer made of this snapshot once (the node map): requests only slice and render.
    cache: Dict[str, str] = field(default_factory=dict, repr=False, compare=False)


# Problem kinds that are not report finding codes, with their labels and severities; a finding
# code (efajob/report/findings.py) keeps its own severity and is labelled from its code.
KINDS: Dict[str, Tuple[str, str]] = {
    "device_missing": ("device missing", "critical"),
    "device_errors": ("EFA device errors", "critical"),
    "counters_unreadable": ("port counters unreadable", "critical"),
    "daemon_unhealthy": ("daemon unhealthy", "critical"),
    "stale": ("no recent status (stale)", "warning"),
    "no_time": ("status file without a time", "warning"),
    "clock_skew": ("node clock ahead", "warning"),
    "local_store": ("daemon's local store failing", "warning"),
    "rx_drops": ("rx drops", "warning"),
    "retrans_pkts": ("SRD retransmits", "warning"),
    "util_over_link": ("rate above link rate (check the link rate)", "warning"),
}
_LABELS = {"wr_errors": "work-request errors", "retransmits": "SRD retransmits",
           "impaired_connections": "impaired connections", "unresponsive_remote": "unresponsive remotes",
           "ena_allowance_exceeded": "ENA allowance exceeded", "straggler_node": "straggler",
           "device_idle": "idle device among busy ones", "efa_unused": "EFA unused"}
_SEVERITY_RANK = {"critical": 0, "warning": 1, "info": 2}
# Utilisation above this is a wrong link rate or a counter glitch, not traffic: flagged.
UTIL_SUSPECT = 1.05


# -- parsing ---------------------------------------------------------------------------------
def _text(v: object, limit: int = 64) -> Optional[str]:
    return v[:limit] if isinstance(v, str) and v else None


def _sum(values: Iterable[Optional[float]]) -> Optional[float]:
    vals = [v for v in values if v is not None]
    return sum(vals) if vals else None


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return a / b if a is not None and b else None


def _devices(raw: object) -> List[DeviceView]:
    out = []
    for d in raw[:256] if isinstance(raw, list) else []:
        if not isinstance(d, dict) or not _text(d.get("name")):
            continue
        state = _text(d.get("state"))
        errors = as_object(d.get("errors"))
        pc = d.get("port_counters")
        out.append(DeviceView(name=d["name"][:64], state=state.split(":")[-1].strip() if state else None,
                              link_gbps=as_number(d.get("link_gbps")), tx_gbps=as_number(d.get("tx_gbps")),
                              rx_gbps=as_number(d.get("rx_gbps")),
                              errors={str(k)[:64]: v for k, v in ((k, as_number(x)) for k, x in
                                                                   list(errors.items())[:32])
                                      if v is not None and v > 0},
                              port_counters=pc if isinstance(pc, int) and not isinstance(pc, bool)
                              else None))
    return sorted(out, key=lambda d: natural_key(d.name))


def _jobs(raw: object, private: bool = False) -> List[NodeJob]:
    """The document's `jobs` (objects with `key`, or `job_id` + `restart`); bad entries left out."""
    out, keys = [], set()
    for entry in raw[:1000] if isinstance(raw, list) else []:
        parsed = status_job_key(entry)
        if parsed is None or parsed[0] in keys:  # a job listed twice runs once on the node
            continue
        key, job_id, restart, j = parsed
        keys.add(key)
        out.append(NodeJob(key=key, job_id=job_id, restart=restart,
                           user=None if private else _text(j.get("user")),
                           partition=None if private else _text(j.get("partition")),
                           start=as_number(j.get("start"))))
    return out


def parse_devices(src: Optional[bytes]) -> List[DeviceView]:
    """NodeView.device_src -> DeviceViews; none when it does not parse (anyone may write it)."""
    if not src:
        return []
    try:
        return _devices(loads_checked(src))
    except ValueError:
        return []


@dataclass
class NodeBase:
    """What one status file says of its node whatever the time: parsed once per write of the
    file (the server keeps it by the file's inode) and made into each refresh's NodeView by
    `node_at` (staleness) in microseconds."""
    # The node while fresh and on time, problems included: the NodeView every refresh shares
    # until the file changes (nothing writes to it once made; a refresh decides `stale`, and
    # the age is taken from the snapshot's time). A stale or skewed node is a copy.
    view: NodeView
    always: List[Problem]  # the daemon's health, its local store, the devices
    fresh: List[Problem]  # the last minute's rules, a rate above the link: while fresh only
    # The document's `jobs` as written, so that the next write of the file, most often with
    # the same jobs, reuses `view.jobs` instead of parsing them again.
    raw_jobs: object = field(default=None, repr=False, compare=False)
    _slurm: Optional[Tuple[str, NodeView]] = field(default=None, repr=False)  # fresh, in a Slurm state

    def fresh_view(self, slurm_state: Optional[str] = None) -> NodeView:
        if slurm_state is None:
            return self.view
        got = self._slurm
        if got is not None and got[0] == slurm_state:
            return got[1]
        n = self._clone()
        n.slurm_state = slurm_state
        self._slurm = (slurm_state, n)
        return n

    def _copy(self, slurm_state: Optional[str]) -> NodeView:
        """A view to judge anew: no problems yet, stale until node_at says otherwise."""
        n = self._clone()
        n.problems, n.kinds, n.slurm_state, n.stale = [], [], slurm_state, True
        return n

    def _clone(self) -> NodeView:
        n = object.__new__(NodeView)  # no __init__: the fields are all copied
        n.__dict__.update(self.view.__dict__)
        return n


@functools.lru_cache(maxsize=1 << 16)
def _order_key(cluster: str, host: str) -> tuple:
    """A node's place in the table: natural_key costs microseconds, paid once per host."""
    return (cluster, natural_key(host))


def parse_node_base(doc: object, cluster: str, *, private: bool = False,
                    thresholds: Optional[Mapping[str, float]] = None, rules: Optional[str] = None,
                    device_src: Optional[bytes] = None,
                    verdict: Optional[Tuple[List[Problem], List[Problem]]] = None,
                    previous: Optional[NodeBase] = None) -> Optional[NodeBase]:
    """A node status document (efajob/daemon/nodestatus.py) -> NodeBase; None when it names no
    valid host. Unknown keys are ignored; wrong types are absent. (Not jobstore.parse_node_status:
    the dashboard shows more of the document, and one corrupt number must not hide a node.)

    The daemon's `verdict` is taken when it was judged by `rules` (rules_key of this
    dashboard's thresholds); else the devices and the health rules are judged here. With
    `device_src` (node_base_from_bytes: a usable verdict, the devices left unparsed) the
    document's `link_gbps` stands for the devices' sum."""
    if not isinstance(doc, dict):
        return None
    host = doc.get("node")
    if not isinstance(host, str) or not NAME_RE.fullmatch(host):
        return None
    raw_jobs = doc.get("jobs")
    # The file's last parse (`previous`, by the same reader) with the same jobs: its NodeJobs.
    jobs = previous.view.jobs if previous is not None and previous.raw_jobs == raw_jobs \
        and previous.view.cluster == cluster else _jobs(raw_jobs, private)
    n = NodeView(cluster=cluster, host=host, instance_type=_text(doc.get("instance_type")),
                 time=as_number(doc.get("time")), tx_gbps=as_number(doc.get("tx_gbps")),
                 rx_gbps=as_number(doc.get("rx_gbps")), jobs=jobs)
    daemon = as_object(doc.get("daemon"))
    healthy = daemon.get("healthy")
    n.daemon_healthy = healthy if isinstance(healthy, bool) else None
    n.daemon_version = _text(daemon.get("version"), 32)
    rates = as_object(doc.get("rates"))
    # In HEALTH_RATES's order; most files hold a few of them (the absent cost a lookup).
    n.rates = {k: f for k in HEALTH_RATES
               if (v := rates.get(k)) is not None and (f := as_number(v)) is not None}
    if verdict is None and rules is not None:
        verdict = parse_verdict(doc.get("verdict"), rules)
    if device_src is not None and verdict is not None:
        n.device_src = device_src
        n.link_gbps = as_number(doc.get("link_gbps"))
    else:
        n.device_list = _devices(doc.get("devices"))
        n.link_gbps = _sum(d.link_gbps for d in n.device_list)
    if verdict is None:
        verdict = (device_problems([(d.name, d.errors, d.port_counters) for d in n.device_list or ()],
                                   doc.get("expected_devices")),
                   live_problems(host, doc.get("recent"), n.rates, thresholds, n.instance_type))
    busier = [v for v in (n.tx_gbps, n.rx_gbps) if v is not None]
    n.util = ratio(max(busier), n.link_gbps) if busier else None
    always: List[Problem] = []
    # Staleness comes from the write time (node_at): a daemon that died cannot say it is unhealthy.
    if n.daemon_healthy is False:
        age = as_number(daemon.get("last_sample_age"))
        always.append(("daemon_unhealthy", "daemon unhealthy"
                       + (f" (last sample {age:.0f} s old)" if age is not None else ""), None))
    store = daemon.get("store")
    if isinstance(store, str) and store != "ok":
        always.append(("local_store", f"local store: {store[:120]}", None))
    always += verdict[0]
    fresh = list(verdict[1])
    if n.util is not None and n.util > UTIL_SUSPECT:
        # More than the link carries: a wrong link rate or a counter glitch, not a fact.
        fresh.append(("util_over_link", f"sends or receives {n.util * 100:.0f}% of the "
                      "link rate: the link rate or a counter is wrong", None))
    n.stale = False  # the view while fresh (node_at copies it otherwise)
    for kind, message, severity in always + fresh:
        n.add_problem(kind, message, severity)
    return NodeBase(view=n, always=always, fresh=fresh, raw_jobs=raw_jobs)


class NeedWhole(Exception):
    """node_base_from_bytes was given the start of a file and needs all of it."""


def node_base_from_bytes(data: bytes, cluster: str, *, private: bool = False,
                         thresholds: Optional[Mapping[str, float]] = None,
                         rules: Optional[str] = None, previous: Optional[NodeBase] = None,
                         whole: bool = True) -> Optional[NodeBase]:
    """A status file's bytes -> NodeBase. A file laid out as the daemon writes it, with a
    verdict by these rules, is parsed up to its devices only (a few hundred bytes of its
    30 kB: store/reader.py split_status); any other file whole. ValueError: not JSON.
    `previous`: this file's last NodeBase, read with the same `private` (parts reused).
    `whole=False`: `data` is the file's start; NeedWhole when the head and the devices are
    not all in it, or the file must be judged whole."""
    from efajob.store.reader import split_status

    split = split_status(data, whole) if rules is not None else None
    if split is not None:
        head, devices = split
        verdict = parse_verdict(head.get("verdict"), rules or "")
        if verdict is not None and "link_gbps" in head:
            return parse_node_base(head, cluster, private=private, device_src=devices,
                                   verdict=verdict, previous=previous)
    if not whole:
        raise NeedWhole()
    return parse_node_base(loads_checked(data), cluster, private=private, thresholds=thresholds,
                           rules=rules, previous=previous)


def node_at(base: NodeBase, now: float, max_status_age: float,
            slurm_state: Optional[str] = None) -> NodeView:
    """The node as of `now` with its staleness and problems. 10,000 a refresh: a node fresh
    and on time is its base's shared view; any other is a new NodeView (the last refresh's
    stays as it was for the pages still rendering it)."""
    t = base.view.time
    if t is not None and now - t <= max_status_age and t - now <= SKEW_S:
        return base.fresh_view(slurm_state)
    n = base._copy(slurm_state)
    if t is None:  # stale: nothing says when it was written
        n.add_problem("no_time", "status file has no time")
    else:
        age = max(0.0, now - t)
        n.stale = age > max_status_age
        if n.stale:
            n.add_problem("stale", f"no status for {fmt_duration(age)}")
        if t - now > SKEW_S:
            n.add_problem("clock_skew", f"node clock {fmt_duration(t - now)} ahead")
    for kind, message, severity in base.always:
        n.add_problem(kind, message, severity)
    if not n.stale:
        for kind, message, severity in base.fresh:
            n.add_problem(kind, message, severity)
    return n


def parse_node_view(doc: object, cluster: str, *, now: float, max_status_age: float,
                    private: bool = False,
                    thresholds: Optional[Mapping[str, float]] = None) -> Optional[NodeView]:
    """parse_node_base then node_at: one document as of `now`."""
    base = parse_node_base(doc, cluster, private=private, thresholds=thresholds,
                           rules=rules_key(thresholds))
    return None if base is None else node_at(base, now, max_status_age)


# -- the model -------------------------------------------------------------------------------
_COLUMNS = ("tx", "rx", "link") + HEALTH_RATES  # what the cluster totals sum


def _contribution(n: NodeView) -> Items:
    """What a fresh node adds to the cluster totals, exactly (dashboard/tally.py)."""
    r = n.rates
    return items((n.tx_gbps, n.rx_gbps, n.link_gbps, *map(r.get, HEALTH_RATES)))


class Tally:
    """The totals and running jobs of one build's fresh nodes, moved to the next build by the
    nodes whose view changed. A node whose file did not change and that stays fresh keeps its
    view object (node_at), so `move` compares views by identity: at 10,000 nodes a refresh
    costs a pass of comparisons plus the nodes that changed, not a sum over every node."""

    def __init__(self) -> None:
        self.nodes: Dict[Tuple[str, str], NodeView] = {}  # the last build's, as it built them
        self.counted: Dict[Tuple[str, str], Items] = {}  # fresh nodes: what each added
        self.sums = Sums(_COLUMNS)
        self.warn = 0
        self.members: Dict[Tuple[str, str], Dict[Tuple[str, str], Tuple[NodeView, NodeJob]]] = {}
        self.running: Dict[Tuple[str, str], RunningJob] = {}
        self._sort: Dict[Tuple[str, str], tuple] = {}
        self._hosts: Dict[Tuple[str, str], Tuple["_Order", List[Tuple[str, str]]]] = {}

    def move(self, nodes: Dict[Tuple[str, str], NodeView], order: "_Order",
             changed: Optional[Set[Tuple[str, str]]] = None) -> None:
        """From the last build's nodes to `nodes` (a new dict, never changed after).
        `changed`: the only nodes that may differ from the last build's (joined, left or
        another view), when the caller knows; else every node is compared."""
        last, seen = self.nodes, 0
        touched: Set[Tuple[str, str]] = set()
        if changed is not None:
            for at in changed:
                p, n = last.get(at), nodes.get(at)
                if p is n:
                    continue
                if p is not None:
                    self._out(at, p, touched)
                if n is not None:
                    self._in(at, n, touched)
        else:
            for at, n in nodes.items():
                p = last.get(at)
                if p is not None:
                    seen += 1
                    if p is n:
                        continue
                    self._out(at, p, touched)
                self._in(at, n, touched)
            if seen < len(last):  # nodes that left
                for at in last.keys() - nodes.keys():
                    self._out(at, last[at], touched)
        self.nodes = nodes
        for jat in touched:
            m = self.members.get(jat)
            if not m:
                self.members.pop(jat, None)
                self.running.pop(jat, None)
                self._sort.pop(jat, None)
                self._hosts.pop(jat, None)
                continue
            # Its nodes in table order: kept while the same nodes run it in the same order
            # (most refreshes: only their views changed), sorted again otherwise.
            got = self._hosts.get(jat)
            pairs = None
            if got is not None and got[0] is order and len(got[1]) == len(m):
                try:
                    pairs = [m[at] for at in got[1]]
                except KeyError:
                    pass
            if pairs is None:
                ats = sorted(m, key=order.positions().__getitem__)
                self._hosts[jat] = (order, ats)
                pairs = [m[at] for at in ats]
            self.running[jat] = r = _running_job(jat, pairs)
            self._sort[jat] = (-(r.start or 0.0), r.cluster, natural_key(r.key))

    def _in(self, at: Tuple[str, str], n: NodeView, touched: Set[Tuple[str, str]]) -> None:
        if n.stale:
            return
        self.counted[at] = items = _contribution(n)
        self.sums.add(items)
        self.warn += bool(n.problems)
        for j in n.jobs:
            jat = (at[0], j.key)
            self.members.setdefault(jat, {})[at] = (n, j)
            touched.add(jat)

    def _out(self, at: Tuple[str, str], n: NodeView, touched: Set[Tuple[str, str]]) -> None:
        if n.stale:
            return
        self.sums.take(self.counted.pop(at))
        self.warn -= bool(n.problems)
        for j in n.jobs:
            jat = (at[0], j.key)
            self.members.get(jat, {}).pop(at, None)
            touched.add(jat)

    def running_jobs(self) -> List[RunningJob]:
        """Newest first."""
        return sorted(self.running.values(), key=lambda r: self._sort[(r.cluster, r.key)])

    def totals(self, nodes: int, running: Sequence[RunningJob]) -> Totals:
        fresh = len(self.counted)
        t = Totals(nodes=nodes, fresh=fresh, stale=nodes - fresh, warn=self.warn,
                   running_jobs=len(running), users=len({u for r in running for u in r.users}),
                   tx_gbps=self.sums.total("tx"), rx_gbps=self.sums.total("rx"),
                   link_gbps=self.sums.total("link"))
        busier = [v for v in (t.tx_gbps, t.rx_gbps) if v is not None]
        t.util = ratio(max(busier), t.link_gbps) if busier else None
        t.rates = {k: v for k, v in ((k, self.sums.total(k)) for k in HEALTH_RATES)
                   if v is not None}
        return t


def _running_job(at: Tuple[str, str], pairs: Sequence[Tuple[NodeView, NodeJob]]) -> RunningJob:
    """One job from its fresh nodes, `pairs` in the table's (natural) order."""
    j0 = pairs[0][1]
    return RunningJob(
        cluster=at[0], key=at[1], job_id=j0.job_id, restart=j0.restart,
        users=sorted({j.user for _, j in pairs if j.user}),
        partitions=sorted({j.partition for _, j in pairs if j.partition}),
        hosts=[n.host for n, _ in pairs],
        start=min((j.start for _, j in pairs if j.start is not None), default=None),
        tx_gbps=_sum(n.tx_gbps for n, _ in pairs), rx_gbps=_sum(n.rx_gbps for n, _ in pairs),
        shared_hosts=[n.host for n, _ in pairs if len(n.jobs) > 1])


class _Order:
    """The node table's order of one set of nodes, and each node's place in it (made when a
    job's hosts are put in order)."""

    def __init__(self, keys: List[Tuple[str, str]]):
        self.keys, self.members = keys, set(keys)
        self.clusters = {c for c, _ in keys}
        self._pos: Optional[Dict[Tuple[str, str], int]] = None

    def positions(self) -> Dict[Tuple[str, str], int]:
        if self._pos is None:
            self._pos = {k: i for i, k in enumerate(self.keys)}
        return self._pos


def build_dashboard(docs: Iterable[Tuple[str, object]], recent: Sequence[Mapping], *, now: float,
                    max_status_age: float, notes: Sequence[str] = (),
                    private: bool = False,
                    thresholds: Optional[Mapping[str, float]] = None,
                    slurm_nodes: Optional[Mapping[str, str]] = None, slurm_cluster: str = "",
                    expire_after: Optional[float] = None) -> Dashboard:
    """`docs`: (cluster, parsed status JSON) pairs; `recent`: job summary rows, newest first.
    `private` (private_records): no user or partition anywhere on the page, whatever the
    files say (the service may run as root and read every record). The rest: build_from_bases."""
    rules = rules_key(thresholds)
    bases = [(c, parse_node_base(doc, c, private=private, thresholds=thresholds, rules=rules)
              if isinstance(c, str) and NAME_RE.fullmatch(c) else None) for c, doc in docs]
    return build_from_bases(bases, recent, now=now, max_status_age=max_status_age, notes=notes,
                            private=private, slurm_nodes=slurm_nodes, slurm_cluster=slurm_cluster,
                            expire_after=expire_after)


def build_from_bases(bases: Iterable[Tuple[str, Optional[NodeBase]]], recent: Sequence[Mapping], *,
                     now: float, max_status_age: float, notes: Sequence[str] = (),
                     private: bool = False, slurm_nodes: Optional[Mapping[str, str]] = None,
                     slurm_cluster: str = "", expire_after: Optional[float] = None,
                     memo: Optional[Dict[str, object]] = None) -> Dashboard:
    """The model of one refresh from every status file's NodeBase (None: a file that names
    no valid node, counted in the notes), as of `now`.

    `slurm_nodes` ({node: sinfo state} of `slurm_cluster`, when Slurm is read): nodes without
    a status file are shown as such; a powered-down cloud node is no stale alert; a stale
    status file of a node Slurm no longer has (a deleted cloud node) is left out. Status files
    older than `expire_after` seconds are left out whatever Slurm says (nodes that left).

    `memo` (a dict the caller keeps between refreshes, the Collector's): the last build's node
    order and its Tally (totals, running jobs), moved by the nodes that changed. A
    10,000-node refresh then costs a pass over the nodes plus the files that changed."""
    nodes: Dict[Tuple[str, str], NodeView] = {}
    skipped = expired = 0
    for cluster, base in bases:
        if base is None:
            skipped += 1
            continue
        n = shown_view(base, now, max_status_age, slurm_nodes if cluster == slurm_cluster else None,
                       expire_after)
        if n is None:
            expired += 1
            continue
        at = (cluster, n.host)
        if at not in nodes or (n.time or 0) > (nodes[at].time or 0):
            nodes[at] = n  # two files naming one host: the newer wins
    if slurm_nodes is not None:
        _reconcile(nodes, slurm_nodes, slurm_cluster)
    return finish_build(nodes, recent, now=now, max_status_age=max_status_age, notes=notes,
                        private=private, skipped=skipped, expired=expired, memo=memo)


def finish_build(nodes: Dict[Tuple[str, str], NodeView], recent: Sequence[Mapping], *, now: float,
                 max_status_age: float, notes: Sequence[str], private: bool, skipped: int,
                 expired: int, memo: Optional[Dict[str, object]],
                 changed: Optional[Set[Tuple[str, str]]] = None) -> Dashboard:
    """The Dashboard of this refresh's `nodes` (a new dict, never changed after): their
    order, totals and running jobs (moved from the last build's in `memo`, by `changed`
    alone when the caller knows which nodes may differ: dashboard/incremental.py)."""
    last = memo.get("order") if memo is not None else None
    if isinstance(last, _Order) and len(last.keys) == len(nodes) and nodes.keys() == last.members:
        order = last  # the same nodes as the last refresh: the same order
    else:
        order = _Order(sorted(nodes, key=lambda at: _order_key(*at)))
    tally = memo.get("tally") if memo is not None else None
    if not isinstance(tally, Tally):
        tally, changed = Tally(), None  # nothing to move from: every node counts anew
    tally.move(nodes, order, changed)
    if memo is not None:
        memo["order"], memo["tally"] = order, tally
    views = list(map(nodes.__getitem__, order.keys))
    running = tally.running_jobs()
    all_notes = list(notes) + ([f"{skipped} node status file(s) unusable (no valid node name)"]
                               if skipped else [])
    if expired:
        all_notes.append(f"{expired} node status file(s) of nodes that left are not shown")
    return Dashboard(generated=now, max_status_age=max_status_age,
                     clusters=sorted(order.clusters | {str(r.get("cluster")) for r in recent}),
                     nodes=views, totals=tally.totals(len(views), running), running=running,
                     recent=[dict(r, user=None) if private else dict(r) for r in recent],
                     notes=all_notes, problems=group_problems(views),
                     by_host=nodes, by_job={(r.cluster, r.key): r for r in running})


def is_fresh(t: Optional[float], now: float, max_status_age: float) -> bool:
    """A status written at `t` is fresh and on time as of `now` (node_at's first case)."""
    return t is not None and now - t <= max_status_age and t - now <= SKEW_S


def shown_view(base: NodeBase, now: float, max_status_age: float,
               smap: Optional[Mapping[str, str]], expire_after: Optional[float]) -> Optional[NodeView]:
    """The view of one status file's node as of `now` (`smap`: Slurm's node list when it
    is read for this node's cluster), or None when the file is left out (expired)."""
    n = base.view
    # node_at's first case inline (10,000 calls a cold build): fresh, on time, no Slurm state.
    if smap is not None or not is_fresh(n.time, now, max_status_age):
        n = node_at(base, now, max_status_age, None if smap is None else smap.get(n.host))
    if (expire_after is not None or smap is not None) and _expired(n, now, expire_after, smap):
        return None
    return n


def no_efajob_view(cluster: str, host: str, state: str) -> NodeView:
    """A node Slurm lists without any status file."""
    return NodeView(cluster=cluster, host=host, slurm_state=state, efajob=False)


def quiet_if_powered_down(n: NodeView, state: str) -> None:
    """A stale node Slurm powered down: no instance behind the name, its old status is
    history, not an alert (`n` is this refresh's own copy: node_at made it)."""
    from efajob.slurm.nodes import is_powered_down

    if n.stale and is_powered_down(state):
        n.powered_down = True
        n.problems, n.kinds = [], []


def _expired(n: NodeView, now: float, expire_after: Optional[float],
             slurm_nodes: Optional[Mapping[str, str]]) -> bool:
    if n.time is not None and expire_after is not None and now - n.time > expire_after:
        return True
    # Stale and unknown to Slurm: a deleted cloud node or one taken out of slurm.conf.
    return slurm_nodes is not None and n.stale and n.host not in slurm_nodes


def _reconcile(nodes: Dict[Tuple[str, str], NodeView], slurm_nodes: Mapping[str, str],
               cluster: str) -> None:
    """Nodes Slurm lists without a status file; a stale node Slurm powered down is quiet.
    (node_at gave each node its Slurm state; a stale node's view is this refresh's own.)"""
    for host, state in slurm_nodes.items():
        n = nodes.get((cluster, host))
        if n is None:
            if NAME_RE.fullmatch(host):
                nodes[(cluster, host)] = no_efajob_view(cluster, host, state)
            continue
        quiet_if_powered_down(n, state)


def kind_label(kind: str) -> str:
    return KINDS[kind][0] if kind in KINDS else _LABELS.get(kind, kind.replace("_", " "))


def group_problems(nodes: Sequence[NodeView]) -> List[ProblemGroup]:
    """Problems by kind, worst first (critical before warning, then the most nodes): a fault
    every node shares is one line, not a thousand."""
    hosts: Dict[str, List[Tuple[str, str]]] = {}
    example: Dict[str, str] = {}
    worst: Dict[str, str] = {}
    for n in nodes:
        if not n.kinds:
            continue
        for (kind, severity), message in zip(n.kinds, n.problems):
            at = hosts.setdefault(kind, [])
            if not at or at[-1] != (n.cluster, n.host):
                at.append((n.cluster, n.host))
            example.setdefault(kind, f"{n.host}: {message}")
            if _SEVERITY_RANK.get(severity, 3) < _SEVERITY_RANK.get(worst.get(kind, "info"), 3):
                worst[kind] = severity
    groups = [ProblemGroup(kind=k, label=kind_label(k), severity=worst.get(k, "warning"),
                           hosts=tuple(h), example=example[k]) for k, h in hosts.items()]
    return sorted(groups, key=lambda g: (_SEVERITY_RANK.get(g.severity, 3), -len(g.hosts), g.kind))


def _rounded(v: object) -> object:
    """Floats to 4 decimals (a rate of 1882.4942836542532 Gbps is noise past the third)."""
    if isinstance(v, float):
        return round(v, 4)
    if isinstance(v, dict):
        return _rounded_object(v)
    if isinstance(v, list):
        return [_rounded(x) for x in v]
    return v


def _rounded_object(d: dict) -> dict:
    return {k: _rounded(x) for k, x in d.items()}


_ROW_FIELDS = [f for f in fields(NodeView) if f.name not in ("device_list", "device_src")]


def _node_row(n: NodeView, now: float) -> dict:
    row: dict = {}
    for f in _ROW_FIELDS:
        v = getattr(n, f.name)
        if f.name == "stale":  # where the age was when it was a field
            row["age_s"] = n.age_at(now)
        row[f.name] = [asdict(j) for j in v] if f.name == "jobs" else \
            dict(v) if isinstance(v, dict) else list(v) if isinstance(v, list) else v
        if f.name == "rates":  # where the devices were when they were a field
            row["devices"] = [asdict(d) for d in n.devices]
    row["state"] = n.state
    row["kinds"] = [k for k, _ in n.kinds]
    row["severities"] = [sev for _, sev in n.kinds]
    return row


def node_to_dict(n: NodeView, now: float) -> dict:
    """`GET /api/node/<cluster>/<host>`: one node, as in /api/nodes (its age as of `now`, the
    snapshot's time)."""
    return _rounded_object({"schema": "efajob/dashboard-node", "version": 1,
                            "node": _node_row(n, now)})


def nodes_to_dict(d: Dashboard, nodes: Optional[Sequence[NodeView]] = None,
                  extra: Optional[Mapping[str, object]] = None) -> dict:
    """`GET /api/nodes`: the model as JSON (absent values are null, never 0); `nodes`: only
    these (a page of a view: dashboard/view.py's view_to_dict), `extra`: keys that say which."""
    nodes = d.nodes if nodes is None else nodes
    extra = extra or {}
    return _rounded_object({"schema": "efajob/dashboard-nodes", "version": 1,
                            "generated": d.generated, "max_status_age": d.max_status_age,
                            "clusters": d.clusters, "totals": asdict(d.totals),
                            "nodes": [_node_row(n, d.generated) for n in nodes], "notes": d.notes,
                            "problems": [_group_row(g) for g in d.problems], **extra})


def _group_row(g: ProblemGroup) -> dict:
    return {"kind": g.kind, "label": g.label, "severity": g.severity, "count": len(g.hosts),
            "hosts": [h for _, h in g.hosts], "clusters": sorted({c for c, _ in g.hosts}),
            "example": g.example}


def problems_to_dict(d: Dashboard) -> dict:
    """`GET /api/problems`: problems by kind, worst first, every node named."""
    return {"schema": "efajob/dashboard-problems", "version": 1, "generated": d.generated,
            "problems": [_group_row(g) for g in d.problems], "notes": d.notes}


def job_to_dict(d: Dashboard, running: Optional[RunningJob], summary: Optional[Mapping]) -> dict:
    """`GET /api/job/<cluster>/<key>`: the job now (its nodes' rates and problems) and its
    summary row among the recent jobs; either may be null."""
    nodes = [_node_row(d.by_host[(running.cluster, h)], d.generated) for h in running.hosts
             if (running.cluster, h) in d.by_host] if running else []
    return _rounded_object({"schema": "efajob/dashboard-job", "version": 1, "generated": d.generated,
                            "running": asdict(running) if running else None, "nodes": nodes,
                            "summary": dict(summary) if summary else None})


def jobs_to_dict(d: Dashboard) -> dict:
    """`GET /api/jobs`: running jobs (from fresh node status files) and recent jobs (records)."""
    return _rounded_object({"schema": "efajob/dashboard-jobs", "version": 1,
                            "generated": d.generated,
                            "running": [asdict(r) for r in d.running], "recent": d.recent})

