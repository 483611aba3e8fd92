"""A dashboard refresh that costs the files that changed, not the nodes there are.

The full build (model.build_from_bases) passes over every status file's NodeBase: at 10,000
nodes that pass, Slurm's node list and the totals' comparison were ~40 ms of a refresh in
which 1,333 files had changed. Here the last build's nodes are carried over and only these
are made again: the nodes whose file changed, came or went (the StatusDir's delta), the
fresh nodes whose status has just grown old enough to turn stale or expire (a heap of those
times), and the nodes that are not fresh and on time (stale, skewed, undated: their age is
in their problem text, so each refresh words them anew, as the full build does; they are
few). The model is the full build's, node for node (tests/test_dashboard_incremental.py
checks it against a build from scratch after random changes).

The full build runs instead whenever that could not hold: the first refresh, Slurm's node
list or the settings changed, the clock went back, or two files name one host (the full
build chooses the newer file).
"""
from __future__ import annotations

import heapq
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple

from efajob.dashboard.model import (Dashboard, NodeBase, NodeView, Tally, build_from_bases,
                                    finish_build, is_fresh, no_efajob_view, quiet_if_powered_down,
                                    shown_view)

At = Tuple[str, str]  # (cluster, host)
Delta = Sequence[Tuple[str, Optional[NodeBase]]]  # (cluster, a file's parse; None: unusable)
# A fresh node is made again this long before its time to turn stale (its deadline and the
# comparisons of node_at round differently): it is made again and stays fresh, no harm.
_EARLY = 1.0


class _TwoFiles(Exception):
    """Two status files name one host: only the full build chooses between them."""


class _State:
    """What the last build knew of each node, for the next refresh to start from."""

    __slots__ = ("params", "slurm", "now", "nodes", "base_of", "skipped", "expired", "due",
                 "unfresh")

    def __init__(self, params: tuple, slurm: Optional[Mapping[str, str]], now: float,
                 nodes: Dict[At, NodeView]) -> None:
        self.params, self.slurm, self.now, self.nodes = params, slurm, now, nodes
        self.base_of: Dict[At, NodeBase] = {}  # the one file of each host that has one
        self.skipped = 0  # files naming no valid node
        self.expired: Set[At] = set()  # hosts whose file is left out (expired, deleted)
        self.due: List[Tuple[float, At]] = []  # heap: when a fresh node may turn stale or expire
        self.unfresh: Set[At] = set()  # shown, not fresh and on time: made again every refresh

    def came(self, cluster: str, base: Optional[NodeBase]) -> Optional[At]:
        """A file's parse joins: its host (None: a file naming no valid node)."""
        if base is None:
            self.skipped += 1
            return None
        at = (cluster, base.view.host)
        if at in self.base_of:
            raise _TwoFiles()
        self.base_of[at] = base
        return at

    def went(self, cluster: str, base: Optional[NodeBase]) -> Optional[At]:
        """A file's last parse leaves: its host (None: a file naming no valid node)."""
        if base is None:
            self.skipped -= 1
            return None
        at = (cluster, base.view.host)
        if self.base_of.get(at) is not base:
            raise _TwoFiles()  # the host had another file, the one the full build chose
        del self.base_of[at]
        return at


def build(every: Callable[[], Sequence[Tuple[str, Optional[NodeBase]]]], removed: Delta, added: Delta,
          recent: Sequence[Mapping], *, now: float, max_status_age: float, notes: Sequence[str],
          private: bool, slurm_nodes: Optional[Mapping[str, str]], slurm_cluster: str,
          expire_after: Optional[float], memo: Dict[str, object]) -> Dashboard:
    """model.build_from_bases of `every()` (every file's parse now), moved from the last
    build kept in `memo` by the files `removed` (their parse of the last build) and `added`
    (their parse now; a rewritten file is in both)."""
    params = (max_status_age, slurm_cluster, expire_after, private)
    st = memo.get("incremental")
    tally = memo.get("tally")
    if isinstance(st, _State) and st.params == params and st.slurm is slurm_nodes \
            and now >= st.now and isinstance(tally, Tally) and tally.nodes is st.nodes:
        nodes = dict(st.nodes)
        changed = _move(st, nodes, removed, added, now)
        if changed is not None:
            st.nodes, st.now = nodes, now
            return finish_build(nodes, recent, now=now, max_status_age=max_status_age,
                                notes=notes, private=private, skipped=st.skipped,
                                expired=len(st.expired), memo=memo, changed=changed)
    memo.pop("incremental", None)
    bases = every()
    d = build_from_bases(bases, recent, now=now, max_status_age=max_status_age, notes=notes,
                         private=private, slurm_nodes=slurm_nodes, slurm_cluster=slurm_cluster,
                         expire_after=expire_after, memo=memo)
    st = _state_of(bases, d, params, slurm_nodes, now)
    if st is not None:
        memo["incremental"] = st
    return d


def _deadline(st: _State, t: float) -> float:
    max_age, _cluster, expire_after, _private = st.params
    return t + (max_age if expire_after is None else min(max_age, expire_after)) - _EARLY


def _state_of(bases: Sequence[Tuple[str, Optional[NodeBase]]], d: Dashboard, params: tuple,
              slurm: Optional[Mapping[str, str]], now: float) -> Optional[_State]:
    """The state a full build leaves; None when two files name one host."""
    st = _State(params, slurm, now, d.by_host)
    try:
        for cluster, base in bases:
            st.came(cluster, base)
    except _TwoFiles:
        return None
    for at, base in st.base_of.items():
        n = d.by_host.get(at)
        if n is None or not n.efajob:  # left out (a Slurm node without it then shows as such)
            st.expired.add(at)
        elif is_fresh(base.view.time, now, params[0]):
            st.due.append((_deadline(st, base.view.time), at))  # type: ignore[arg-type]
        else:
            st.unfresh.add(at)
    heapq.heapify(st.due)
    return st


def _move(st: _State, nodes: Dict[At, NodeView], removed: Delta, added: Delta,
          now: float) -> Optional[Set[At]]:
    """Make again, in `nodes` (a copy of the last build's), the nodes that may have changed;
    their set, or None when only a full build can say (two files naming one host)."""
    try:  # the parses that went first: a rewritten file's host leaves, then joins again
        moved = [st.went(c, b) for c, b in removed] + [st.came(c, b) for c, b in added]
    except _TwoFiles:
        return None
    changed: Set[At] = {at for at in moved if at is not None}
    due = st.due
    while due and due[0][0] <= now:
        changed.add(heapq.heappop(due)[1])
    changed |= st.unfresh
    max_age, slurm_cluster, expire_after, _private = st.params
    slurm = st.slurm
    for at in changed:
        st.expired.discard(at)
        st.unfresh.discard(at)
        smap = slurm if at[0] == slurm_cluster else None
        state = None if smap is None else smap.get(at[1])
        base = st.base_of.get(at)
        n = None if base is None else shown_view(base, now, max_age, smap, expire_after)
        if base is not None and n is None:
            st.expired.add(at)
        if n is None:
            if state is not None:
                nodes[at] = no_efajob_view(at[0], at[1], state)
            else:
                nodes.pop(at, None)
            continue
        if state is not None:
            quiet_if_powered_down(n, state)
        nodes[at] = n
        if base is not None and is_fresh(base.view.time, now, max_age):
            heapq.heappush(due, (_deadline(st, base.view.time), at))  # type: ignore[arg-type]
        else:
            st.unfresh.add(at)
    return changed
