"""The series a live efajob exporter really serves, for tests that check names in the
Prometheus rules and the Grafana dashboard: a daemon on a simulated p5 node (the same as
tests/test_prometheus_server.py's), one active job, two ticks, one scrape of /metrics."""
from __future__ import annotations

import urllib.request
from typing import Dict, FrozenSet, Set

from prometheus_client.parser import text_string_to_metric_families

# Labels the scrape adds to every series (target labels), not the exporter.
SCRAPE_LABELS = frozenset({"instance", "job"})


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
