"""Ranking nodes by suspicion from their jobs' findings (`efajob nodes`), pure.

Input: one `NodeJob` per node per job run (the finding codes a job's report put on that node,
from the job index's `node_jobs` table or a scan of the store) and, optionally, what each
node's daemon says now (`Baseline`, from its node status file). Output: every node, ranked.

Per node and per kind of trouble (CATEGORIES: straggler, idle device, drops, retransmits,
errors, device missing) the node was marked in `k` of its `n` jobs; the cluster's rate is
`p` (all marks / all node-jobs). Is this node worse than the cluster, or was it unlucky?

- A plain ratio damns a node seen in 2 jobs for 1 bad one (50 per 100 jobs), and a Wilson
  lower bound on k/n alone does too when the cluster's rate is low (1 of 1 gives a lower
  bound of 21%, far above a 2% cluster). What an operator wants is shrinkage: with few jobs
  the node is presumed to be like the cluster, and only its own evidence moves it. So the
  node's rate gets the beta-binomial (empirical Bayes) posterior with a prior at the
  cluster's rate worth PRIOR_JOBS jobs: Beta(M r + k, M (1 - r) + n - k).
- Its confidence is the posterior probability that the node's rate is at least EXCESS times
  the cluster's (a node a little above average is not a suspect: somebody is always above
  average), with the cluster's rate floored at FLOOR (one bad job in 50 is noise whatever
  the cluster's own rate: with 2,000 nodes and six kinds of trouble, a floor of 1 per 100
  let chance alone make a suspect of a healthy node, bench/nodes.py). A node is a suspect at SUSPECT confidence in any category.
  With these constants one mark never flags a node, whatever its job count and the cluster's
  rate (0.75 at most, for a cluster rate below 2 per 100); 2 of 2 does when the cluster's
  rate is below ~2 per 100, 15 of 50 at a cluster rate of 5 per 100 (tests/test_fabric.py).
- The score that ranks them: the posterior mean's excess over the cluster's rate, per 100
  jobs, weighted by that confidence and summed over the categories; plus NOW_SCORE for each
  problem the node's daemon sees right now (a device missing or error counters rising: a
  direct observation, not a rate).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, Optional, Tuple

from efajob.fabric.betainc import betainc
from efajob.node.readings import natural_key

# Finding codes (report/findings.py) that name a node, by the kind of trouble they show.
CATEGORIES: Dict[str, Tuple[str, ...]] = {
    "straggler": ("straggler_node",),
    "device_idle": ("device_idle",),
    "rx_drops": ("rx_drops",),
    "retransmits": ("retransmits", "impaired_connections", "unresponsive_remote"),
    "errors": ("wr_errors", "device_errors"),
    "device_missing": ("device_missing",),
}
_CATEGORY_OF = {code: cat for cat, codes in CATEGORIES.items() for code in codes}
# A straggler is judged against the job's other nodes: only multi-node jobs count.
MULTI_NODE_ONLY = frozenset({"straggler"})
PRIOR_JOBS = 10.0
FLOOR = 0.02
EXCESS = 2.0
SUSPECT = 0.95
NOW_SCORE = 100.0  # one problem seen now weighs as much as one extra bad job in every job
EVIDENCE_MAX = 50  # job ids kept per node and category (the newest)


@dataclass(frozen=True)
class NodeJob:
    """One node's part in one job run (a row of the index's node_jobs table)."""

    cluster: str
    node: str
    job_id: str
    restart: int
    end: Optional[float]
    num_nodes: Optional[int]
    codes: Tuple[str, ...]  # finding codes (warning or critical) the report put on the node


@dataclass(frozen=True)
class Baseline:
    """What a node's daemon says now (its status file, fresh)."""

    cluster: str
    node: str
    devices: int
    expected_devices: Optional[int]
    errors: Tuple[str, ...]  # error counters rising now (per device or summed)


@dataclass
class CategoryScore:
    jobs_with: int  # k: jobs where the node was marked
    jobs: int  # n: jobs that could mark it
    per_100: float  # k/n * 100
    cluster_per_100: float
    posterior_per_100: float  # shrunk towards the cluster's rate
    confidence: float  # P(rate >= EXCESS x max(cluster rate, FLOOR))
    evidence: List[str] = field(default_factory=list)  # job ids, newest first

    def to_dict(self) -> dict:
        return {"jobs_with": self.jobs_with, "jobs": self.jobs, "per_100": round(self.per_100, 2),
                "cluster_per_100": round(self.cluster_per_100, 2),
                "posterior_per_100": round(self.posterior_per_100, 2),
                "confidence": round(self.confidence, 4), "evidence": list(self.evidence)}


@dataclass
class NodeScore:
    cluster: str
    node: str
    jobs: int
    score: float
    confidence: float  # the highest of its categories' (1.0 with a problem seen now)
    suspect: bool
    categories: Dict[str, CategoryScore]  # only those where it was marked at least once
    now: List[str] = field(default_factory=list)  # problems its daemon sees now
    rank: int = 0

    def to_dict(self) -> dict:
        return {"rank": self.rank, "cluster": self.cluster, "node": self.node, "jobs": self.jobs,
                "score": round(self.score, 2), "confidence": round(self.confidence, 4),
                "suspect": self.suspect, "now": list(self.now),
                "categories": {c: s.to_dict() for c, s in self.categories.items()}}


@dataclass
class Ranking:
    nodes: List[NodeScore]
    cluster_per_100: Dict[str, float]  # per category
    node_jobs: int  # rows scored

    @property
    def suspects(self) -> List[NodeScore]:
        return [n for n in self.nodes if n.suspect]


def confidence(k: int, n: int, cluster_rate: float) -> float:
    """P(the node's rate >= EXCESS x max(cluster_rate, FLOOR)) under the posterior."""
    if k <= 0:
        return 0.0
    r = max(cluster_rate, FLOOR)
    bar = EXCESS * r
    if bar >= 1.0:
        return 0.0  # no node can be twice as bad as a cluster marked in half its jobs or more
    a, b = PRIOR_JOBS * r + k, PRIOR_JOBS * (1.0 - r) + (n - k)
    return 1.0 - betainc(a, b, bar)


def posterior_rate(k: int, n: int, cluster_rate: float) -> float:
    r = max(cluster_rate, FLOOR)
    return (PRIOR_JOBS * r + k) / (PRIOR_JOBS + n)


def baseline_problems(b: Baseline) -> List[str]:
    out = []
    if b.expected_devices is not None and b.devices < b.expected_devices:
        out.append(f"{b.devices} of {b.expected_devices} EFA devices now")
    if b.errors:
        out.append("error counters rising now: " + ", ".join(sorted(b.errors)))
    return out


@dataclass
class History:
    """What the ranking needs of the node-job rows: per node its runs and multi-node runs,
    and the rows that carry a finding code (most rows carry none: the index hands over only
    these and the counts, so 100,000 clean rows never reach Python)."""

    totals: Dict[Tuple[str, str], Tuple[int, int]]  # (cluster, node) -> (runs, multi-node runs)
    marked: List[NodeJob]

    @property
    def runs(self) -> int:
        return sum(n for n, _ in self.totals.values())

    @classmethod
    def from_rows(cls, rows: Iterable[NodeJob]) -> "History":
        totals: Dict[Tuple[str, str], Tuple[int, int]] = {}
        marked = []
        for r in rows:
            n, m = totals.get((r.cluster, r.node), (0, 0))
            totals[(r.cluster, r.node)] = (n + 1, m + _multi(r.num_nodes))
            if r.codes:
                marked.append(r)
        return cls(totals, marked)


def _multi(num_nodes: Optional[int]) -> int:
    return int(num_nodes is None or num_nodes > 1)


class _Tally:
    __slots__ = ("jobs", "multi", "marks")

    def __init__(self, jobs: int = 0, multi: int = 0) -> None:
        self.jobs = jobs
        self.multi = multi
        # category -> [(end, job id)] of the jobs that marked the node
        self.marks: Dict[str, List[Tuple[float, str]]] = {}


def _tally(history: History) -> Dict[Tuple[str, str], _Tally]:
    tallies = {key: _Tally(n, m) for key, (n, m) in history.totals.items()}
    for r in history.marked:
        t = tallies.get((r.cluster, r.node))
        if t is None:
            continue  # a marked row without its count: not from this history
        multi = _multi(r.num_nodes)
        seen = set()
        for code in r.codes:
            cat = _CATEGORY_OF.get(code)
            if cat is None or cat in seen or (cat in MULTI_NODE_ONLY and not multi):
                continue
            seen.add(cat)
            job = r.job_id if not r.restart else f"{r.job_id} (restart {r.restart})"
            t.marks.setdefault(cat, []).append((r.end or 0.0, job))
    return tallies


def rank_nodes(rows: Iterable[NodeJob], baselines: Mapping[Tuple[str, str], Baseline] = {},
               ) -> Ranking:
    """Every node seen in `rows` or `baselines`, suspects first, then by score."""
    return rank_history(History.from_rows(rows), baselines)


def rank_history(history: History, baselines: Mapping[Tuple[str, str], Baseline] = {},
                 ) -> Ranking:
    """rank_nodes from a History (what the job index gives)."""
    tallies = _tally(history)
    count = history.runs
    for key in baselines:
        tallies.setdefault(key, _Tally())
    total = sum(t.jobs for t in tallies.values())
    total_multi = sum(t.multi for t in tallies.values())
    rates: Dict[str, float] = {}
    for cat in CATEGORIES:
        k = sum(len(t.marks.get(cat, ())) for t in tallies.values())
        n = total_multi if cat in MULTI_NODE_ONLY else total
        rates[cat] = k / n if n else 0.0
    out: List[NodeScore] = []
    for (cluster, node), t in tallies.items():
        cats: Dict[str, CategoryScore] = {}
        score, conf = 0.0, 0.0
        for cat, marks in t.marks.items():
            n = t.multi if cat in MULTI_NODE_ONLY else t.jobs
            k = len(marks)
            c = confidence(k, n, rates[cat])
            post = posterior_rate(k, n, rates[cat])
            marks.sort(reverse=True)
            cats[cat] = CategoryScore(
                jobs_with=k, jobs=n, per_100=100.0 * k / n, cluster_per_100=100.0 * rates[cat],
                posterior_per_100=100.0 * post, confidence=c,
                evidence=list(dict.fromkeys(j for _, j in marks))[:EVIDENCE_MAX])
            score += 100.0 * max(0.0, post - rates[cat]) * c
            conf = max(conf, c)
        b = baselines.get((cluster, node))
        now = baseline_problems(b) if b is not None else []
        if now:
            score += NOW_SCORE * len(now)
            conf = 1.0
        out.append(NodeScore(cluster=cluster, node=node, jobs=t.jobs, score=score,
                             confidence=conf, suspect=conf >= SUSPECT,
                             categories={c: cats[c] for c in CATEGORIES if c in cats}, now=now))
    out.sort(key=lambda s: (not s.suspect, -s.score, -s.confidence, s.cluster, natural_key(s.node)))
    for i, s in enumerate(out, 1):
        s.rank = i
    return Ranking(nodes=out, cluster_per_100={c: 100.0 * r for c, r in rates.items()},
                   node_jobs=count)

