"""What the viewer asked the node table for: the query string -> View -> one page of nodes.

Pure. The URL keeps the whole view (filter, search, sort, page), so a view can be shared;
`to_query` writes only what differs from the default. Values come from any browser, so each
is bounded and checked: an unknown sort or state is the default, never an error.

Search (`q`) is a Slurm hostlist (`gpu-[001-064],login1`, expanded by slurm/hostlist.py) or,
when it is not one, a case-insensitive substring of the node name.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import urlencode

from efajob.dashboard.model import Dashboard, NodeView, nodes_to_dict
from efajob.errors import UsageError
from efajob.node.readings import natural_key
from efajob.slurm.hostlist import expand

PER_PAGE = 100
MAX_PER_PAGE = 1000
STATES = ("ok", "warn", "stale", "no-efajob", "powered-down")
_FIELD_MAX = 2000  # a hostlist of a few hundred names folds into far less


def _busier(n: NodeView) -> Optional[float]:
    vals = [v for v in (n.tx_gbps, n.rx_gbps) if v is not None]
    return max(vals) if vals else None


# Sort keys; absent values sort last whatever the direction (see select()).
SORTS: Dict[str, Callable[[NodeView], object]] = {
    "node": lambda n: (n.cluster, natural_key(n.host)),
    "state": lambda n: STATES.index(n.state) if n.state in STATES else 9,
    "tx": lambda n: n.tx_gbps, "rx": lambda n: n.rx_gbps, "util": lambda n: n.util,
    "drops": lambda n: n.rates.get("rx_drops"), "retrans": lambda n: n.rates.get("retrans_pkts"),
    "problems": lambda n: len(n.problems), "updated": lambda n: None if n.time is None else -n.time,  # the newest first
    "type": lambda n: n.instance_type, "jobs": lambda n: len(n.jobs),
}


@dataclass(frozen=True)
class View:
    q: str = ""  # a hostlist or part of a node name
    # Nodes running a job (its key or id), of a user, of a partition:
    job: str = ""
    user: str = ""
    partition: str = ""
    state: str = ""  # one of STATES
    problem: str = ""  # a problem kind (the summary's links)
    sort: str = "node"  # one of SORTS
    desc: bool = False
    page: int = 1
    per: int = PER_PAGE


DEFAULT = View()


def _int(v: Optional[str], default: int, lo: int, hi: int) -> int:
    try:
        return max(lo, min(hi, int(v))) if v is not None else default
    except ValueError:
        return default


def parse_view(query: Mapping[str, Sequence[str]]) -> View:
    """A parsed query string (urllib.parse.parse_qs) -> View; bad values are the defaults."""
    def first(name: str) -> Optional[str]:
        vals = query.get(name)
        return vals[0][:_FIELD_MAX].strip() if vals else None

    sort = first("sort") or "node"
    state = first("state") or ""
    return View(q=first("q") or "", job=first("job") or "", user=first("user") or "",
                partition=first("partition") or "", state=state if state in STATES else "",
                problem=first("problem") or "", sort=sort if sort in SORTS else "node",
                desc=first("desc") in ("1", "true", "yes"),
                page=_int(first("page"), 1, 1, 10 ** 6), per=_int(first("per"), PER_PAGE, 1, MAX_PER_PAGE))


def to_query(v: View, **changes: object) -> str:
    """`?key=value...` of the view with `changes`, only what differs from the default ("" for
    the default view); a change of filter or sort starts again at page 1."""
    if any(k != "page" for k in changes):
        changes.setdefault("page", 1)
    v = replace(v, **changes)  # type: ignore[arg-type]
    pairs: List[Tuple[str, str]] = []
    for f in fields(View):
        val = getattr(v, f.name)
        if val != getattr(DEFAULT, f.name):
            pairs.append((f.name, "1" if val is True else str(val)))
    return "?" + urlencode(pairs) if pairs else ""


def _host_match(q: str) -> Callable[[NodeView], bool]:
    if any(c in q for c in "[,"):
        try:
            names = set(expand(q))
            return lambda n: n.host in names
        except UsageError:
            pass
    low = q.lower()
    return lambda n: low in n.host.lower()


def matches(v: View) -> Callable[[NodeView], bool]:
    tests: List[Callable[[NodeView], bool]] = []
    if v.q:
        tests.append(_host_match(v.q))
    if v.job:
        tests.append(lambda n: any(v.job in (j.key, j.job_id) for j in n.jobs))
    if v.user:
        tests.append(lambda n: any(j.user == v.user for j in n.jobs))
    if v.partition:
        tests.append(lambda n: any(j.partition == v.partition for j in n.jobs))
    if v.state:
        tests.append(lambda n: n.state == v.state)
    if v.problem:
        tests.append(lambda n: any(k == v.problem for k, _ in n.kinds))
    return lambda n: all(t(n) for t in tests)


def select(nodes: Sequence[NodeView], v: View) -> Tuple[int, List[NodeView]]:
    """(how many nodes match, the nodes of the view's page in its order)."""
    ok = matches(v)
    picked = [n for n in nodes if ok(n)]
    if v.sort != "node" or v.desc:
        key = SORTS[v.sort]
        present = [n for n in picked if key(n) is not None]
        absent = [n for n in picked if key(n) is None]
        # Ties keep node order (the list comes sorted by node; sorted() is stable).
        present.sort(key=key, reverse=v.desc)  # type: ignore[arg-type]
        picked = present + absent
    start = (v.page - 1) * v.per
    return len(picked), picked[start:start + v.per]


def pages(total: int, v: View) -> int:
    return max(1, -(-total // v.per))


def view_to_dict(d: Dashboard, v: View) -> dict:
    """`GET /api/nodes?<view>`: the view's page of matching nodes; `matched` counts them all."""
    matched, nodes = select(d.nodes, v)
    return nodes_to_dict(d, nodes, {"matched": matched, "page": v.page, "per": v.per})
