"""`efajob nodes` output: text, JSON, CSV, from a Ranking (score.py). Pure."""
from __future__ import annotations

import csv
import io
import json
from typing import List, Optional

from efajob.fabric.score import CATEGORIES, NodeScore, Ranking
from efajob.fmt import table

SCHEMA = "efajob/nodes"
VERSION = 1
TEXT_EVIDENCE = 8  # job ids shown per category in text (JSON has up to score.EVIDENCE_MAX)
_LABELS = {"straggler": "straggler", "device_idle": "idle device", "rx_drops": "rx drops",
           "retransmits": "retransmits", "errors": "errors", "device_missing": "device missing"}


def _why(n: NodeScore) -> str:
    parts = [f"{_LABELS[c]} {s.jobs_with}/{s.jobs}" for c, s in n.categories.items()]
    return "; ".join(n.now + parts) or "-"


def render_text(r: Ranking, *, source: str, since: Optional[float], limit: Optional[int] = None,
                cluster_column: bool = False) -> str:
    shown = r.nodes if limit is None else r.nodes[:limit]
    lines: List[str] = []
    rates = ", ".join(f"{_LABELS[c]} {v:.1f}" for c, v in r.cluster_per_100.items() if v)
    lines.append(f"{len(r.nodes)} nodes, {r.node_jobs} node-job runs (from the {source}); "
                 f"{len(r.suspects)} suspect")
    lines.append(f"cluster rate per 100 jobs: {rates or 'no findings on any node'}")
    lines.append("")
    head = ["RANK", "NODE", "JOBS", "SCORE", "CONF", "SUSPECT", "MARKED IN (jobs)"]
    if cluster_column:
        head.insert(1, "CLUSTER")
    rows = []
    for n in shown:
        row = [str(n.rank), n.node, str(n.jobs), f"{n.score:.1f}", f"{n.confidence:.2f}",
               "yes" if n.suspect else "", _why(n)]
        if cluster_column:
            row.insert(1, n.cluster)
        rows.append(row)
    right = [h in ("RANK", "JOBS", "SCORE", "CONF") for h in head]
    lines.extend(table(head, rows, right, indent=""))
    suspects = [n for n in shown if n.suspect]
    if suspects:
        lines.append("")
        lines.append("Evidence (newest jobs first):")
    for n in suspects:
        for p in n.now:
            lines.append(f"  {n.node}: {p} (its daemon's status file)")
        for c, s in n.categories.items():
            if s.confidence < 0.5:
                continue
            ids = s.evidence[:TEXT_EVIDENCE]
            more = f" (+{s.jobs_with - len(ids)})" if s.jobs_with > len(ids) else ""
            lines.append(f"  {n.node}: {_LABELS[c]} in {s.jobs_with} of {s.jobs} jobs "
                         f"({s.per_100:.0f} per 100, cluster {s.cluster_per_100:.1f}; "
                         f"confidence {s.confidence:.2f}): {' '.join(ids)}{more}")
    if len(shown) < len(r.nodes):
        lines.append("")
        lines.append(f"({len(r.nodes) - len(shown)} more nodes not shown: --limit)")
    return "\n".join(lines) + "\n"


def render_json(r: Ranking, *, source: str, since: Optional[float],
                limit: Optional[int] = None) -> str:
    shown = r.nodes if limit is None else r.nodes[:limit]
    doc = {"schema": SCHEMA, "version": VERSION, "source": source, "since": since,
           "node_jobs": r.node_jobs,
           "cluster_per_100": {c: round(v, 3) for c, v in r.cluster_per_100.items()},
           "suspects": [n.node for n in r.suspects], "nodes": [n.to_dict() for n in shown]}
    return json.dumps(doc, indent=2) + "\n"


CSV_COLUMNS = (["rank", "cluster", "node", "jobs", "score", "confidence", "suspect", "now"]
               + [f"{c}_{k}" for c in CATEGORIES for k in ("jobs_with", "confidence")]
               + ["evidence"])


def render_csv(r: Ranking, *, limit: Optional[int] = None) -> str:
    """One line per node; `evidence` is `category:job;job ...` per category, ` | `-separated."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for n in (r.nodes if limit is None else r.nodes[:limit]):
        row = [n.rank, n.cluster, n.node, n.jobs, f"{n.score:.2f}", f"{n.confidence:.4f}",
               int(n.suspect), "; ".join(n.now)]
        for c in CATEGORIES:
            s = n.categories.get(c)
            row += [s.jobs_with, f"{s.confidence:.4f}"] if s else [0, ""]
        row.append(" | ".join(f"{c}:{';'.join(s.evidence)}" for c, s in n.categories.items()))
        w.writerow(row)
    return buf.getvalue()
