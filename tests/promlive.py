"""The series a live efajob exporter really serves, for tests that check names in the
Prometheus rules and the Grafana dashboard: a daemon on a simulated p5 node (the same as
tests/test_prometheus_server.py's), one active job, two ticks, one scrape of /metrics."""
from __future__ import annotations

import re
import urllib.request
from typing import Dict, FrozenSet, Set

from prometheus_client.parser import text_string_to_metric_families

# Labels the scrape adds to every series (target labels), not the exporter.
SCRAPE_LABELS = frozenset({"instance", "job"})
# Labels the rules make themselves (label_replace) rather than read.
MADE_LABELS = frozenset({"counter"})


def live_series(tmp_path) -> Dict[str, Set[FrozenSet[str]]]:
    """{sample name: {label-name sets}} from one scrape of a live exporter."""
    from test_prometheus_server import exporter_node

    d, node, port, mono = exporter_node(tmp_path, "n1", [("77", "bob")], devices=2)
    try:
        d.tick()
        node.traffic(400, 200, 1.0)
        mono[0] += 1.0
        d.tick()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60) as r:
            text = r.read().decode()
    finally:
        d.close()
    out: Dict[str, Set[FrozenSet[str]]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, set()).add(frozenset(s.labels))
    return out


def check_names(expr, live, made=frozenset()):
    """Every metric an expression names exists live (a regex matcher on __name__ must match
    one); every label it groups or matches on is a live label of some series."""
    expr_wo_strings = re.sub(r'"[^"]*"', '""', expr)
    names = set(re.findall(r"\b(efajob_[a-z0-9_]+)\b", expr_wo_strings))
    missing = {n for n in names if n not in live}
    assert not missing, f"{missing} not served by the exporter (in {expr!r})"
    for rx in re.findall(r'__name__=~"([^"]+)"', expr):
        assert [n for n in live if re.fullmatch(rx, n)], f"{rx} matches no live series"
    all_labels = set().union(*(ls for sets in live.values() for ls in sets)) | SCRAPE_LABELS
    for group in re.findall(r"\b(?:by|on|without|ignoring|group_left|group_right)\s*\(([^)]*)\)",
                            expr):
        for label in filter(None, (x.strip() for x in group.split(","))):
            assert label in all_labels | MADE_LABELS | made, f"label {label} in {expr!r}"
    for label in re.findall(r"\{?\s*([a-z_]+)\s*(?:=~|!=|!~|=)\s*\"", expr):
        if label != "__name__":
            assert label in all_labels, f"label {label} in {expr!r}"
