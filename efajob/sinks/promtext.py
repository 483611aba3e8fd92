"""The exposition text of efajob's own metric families, written directly.

Why: a p5 scrape is ~1,230 samples, and prometheus_client formats each one through its
generic path (a Sample tuple with a label dict, label-name validation and escaping per label,
per sample): ~12 ms of CPU a scrape, a third of the daemon's CPU at a 15 s scrape interval
(docs/performance.md). Our families are few and regular: names are checked once
(sinks/prometheus.py), every family's labels are fixed, and the label sets repeat across
families (each device's {device, port}), so each label string is escaped once per scrape.

The output is byte-for-byte what prometheus_client's `generate_latest` (text 0.0.4) and
`openmetrics.exposition.generate_latest` write for the same families
(tests/test_promexp.py compares them), so Prometheus, promtool and the rules see no change;
only names and labels that match [a-zA-Z_][a-zA-Z0-9_]* may go in (the collector's caps and
name checks ensure that), for which every escaping scheme of the newer formats is the same.
Pure: no I/O, no prometheus_client import beyond its float formatting.
"""
from __future__ import annotations

from typing import Callable, Dict, Iterable, List, Tuple, Union

from prometheus_client.utils import floatToGoString as _float_to_go

Value = Union[int, float]
floatToGoString: Callable[[Value], str] = _float_to_go  # the formatting prometheus_client uses


class Fam:
    """One metric family: name (without a counter's `_total`), kind, help, label names, and
    samples as (label values, value). The collector's single description of a family: the
    fast text below and prometheus_client's Metric objects are both made from it."""

    __slots__ = ("name", "kind", "doc", "labels", "samples")

    def __init__(self, name: str, kind: str, doc: str, labels: Tuple[str, ...] = ()):
        if kind == "counter" and name.endswith("_total"):
            name = name[:-6]  # as CounterMetricFamily does: the sample adds it back
        self.name, self.kind, self.doc, self.labels = name, kind, doc, tuple(labels)
        self.samples: List[Tuple[Tuple[str, ...], Value]] = []

    @classmethod
    def counter(cls, name: str, doc: str, labels: Tuple[str, ...] = ()) -> "Fam":
        return cls(name, "counter", doc, labels)

    @classmethod
    def gauge(cls, name: str, doc: str, labels: Tuple[str, ...] = ()) -> "Fam":
        return cls(name, "gauge", doc, labels)

    def add(self, values: Tuple[str, ...], value: Value) -> None:
        self.samples.append((values, value))


def _escape_value(v: str) -> str:
    return v.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _number(v: Value) -> str:
    # floatToGoString(float(v)) for every value; small non-negative ints (most of the
    # health and job gauges, idle counters) skip its float formatting: repr(float(n)) is
    # str(n) + ".0" below 10**6, where Go's formatting does not switch to an exponent yet.
    if v.__class__ is int and 0 <= v < 1_000_000:
        return f"{v}.0"
    return floatToGoString(v)


def render(families: Iterable[Fam], *, openmetrics: bool) -> str:
    """The families as Prometheus text 0.0.4, or as OpenMetrics 1.0 without its `# EOF`
    line (the caller appends the rest of the registry, which ends with it)."""
    out: List[str] = []
    label_strings: Dict[Tuple[Tuple[str, ...], Tuple[str, ...]], str] = {}
    for fam in families:
        sample = fam.name + "_total" if fam.kind == "counter" else fam.name
        if openmetrics:
            out.append(f"# HELP {fam.name} {_escape_value(fam.doc)}\n"
                       f"# TYPE {fam.name} {fam.kind}\n")
        else:
            doc = fam.doc.replace("\\", r"\\").replace("\n", r"\n")
            out.append(f"# HELP {sample} {doc}\n# TYPE {sample} {fam.kind}\n")
        names = fam.labels
        if not names:
            out.extend(f"{sample} {_number(v)}\n" for _, v in fam.samples)
            continue
        order = sorted(range(len(names)), key=names.__getitem__)  # labels sorted by name
        for values, v in fam.samples:
            key = (names, values)
            ls = label_strings.get(key)
            if ls is None:
                ls = label_strings[key] = "{" + ",".join(
                    f'{names[i]}="{_escape_value(values[i])}"' for i in order) + "}"
            out.append(f"{sample}{ls} {_number(v)}\n")
    return "".join(out)
