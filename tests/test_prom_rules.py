"""slurm/prometheus/: the rules pass `promtool check rules` and their unit tests (`promtool
test rules`), and every series they and their tests name is one a live exporter serves, with
its real labels; `efajob prometheus targets` writes the file_sd targets from sinfo."""
from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from conftest import require, require_binary
from efajob.deploy.promtargets import build_file_sd, parse_sinfo_nodes
from promlive import SCRAPE_LABELS, check_names, live_series

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROM_DIR = os.path.join(REPO, "slurm", "prometheus")
RULES = os.path.join(PROM_DIR, "efajob-rules.yml")
RULE_TESTS = os.path.join(PROM_DIR, "efajob-rules.test.yml")
PROMETHEUS_OWN = {"up"}  # series Prometheus itself writes for every target


def load_yaml(path):
    try:
        import yaml
    except ImportError:
        require("pyyaml", False, "pip install pyyaml")
    with open(path) as f:
        return yaml.safe_load(f)


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    return live_series(tmp_path_factory.mktemp("live"))


def rules():
    return [r for g in load_yaml(RULES)["groups"] for r in g["rules"]]


def recorded():
    return {r["record"] for r in rules() if "record" in r}


def test_every_rule_names_live_series_and_labels(live):
    for r in rules():
        expr = r["expr"]
        for rec in recorded():
            expr = expr.replace(rec, "")  # our own recording rules, checked as they are made
        check_names(expr, live)
        for v in (r.get("annotations") or {}).values():
            for label in re.findall(r"\$labels\.([a-z_]+)", v):
                assert label in {"instance", "job_id", "device", "kind"}, label


def test_rule_tests_feed_series_the_exporter_really_serves(live):
    doc = load_yaml(RULE_TESTS)
    n = 0
    for case in doc["tests"]:
        for s in case["input_series"]:
            name, labels = re.fullmatch(r"([a-z_:]+)\{(.*)\}", s["series"]).groups()
            keys = frozenset(re.findall(r'([a-z_]+)="', labels))
            if name in PROMETHEUS_OWN:
                assert keys == SCRAPE_LABELS
                continue
            assert name in live, name
            assert keys - SCRAPE_LABELS in live[name], (name, sorted(keys))
            n += 1
    assert n > 40


@pytest.mark.prometheus
def test_promtool_checks_the_rules_and_runs_their_tests():
    promtool = require_binary("promtool")
    for argv in ([promtool, "check", "rules", RULES], [promtool, "test", "rules", RULE_TESTS]):
        p = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=PROM_DIR)
        assert p.returncode == 0, p.stdout + p.stderr
        assert "SUCCESS" in p.stdout


@pytest.mark.prometheus
def test_promtool_finds_a_broken_rule(tmp_path):
    # The rule tests can fail: the same tests against a rule file whose drop threshold is off.
    promtool = require_binary("promtool")
    with open(RULES) as f:
        text = f.read()
    (tmp_path / "efajob-rules.yml").write_text(
        text.replace("expr: instance:efajob_rx_drops:rate5m > 0", "expr: instance:efajob_rx_drops:rate5m > 50"))
    with open(RULE_TESTS) as f:
        (tmp_path / "efajob-rules.test.yml").write_text(f.read())
    p = subprocess.run([promtool, "test", "rules", "efajob-rules.test.yml"], capture_output=True,
                       text=True, timeout=300, cwd=str(tmp_path))
    assert p.returncode != 0 and "EfajobRxDrops" in p.stdout + p.stderr


def test_scrape_config_names_the_job_and_files_the_rules_use():
    doc = load_yaml(os.path.join(PROM_DIR, "prometheus-efajob.yml"))
    (job,) = doc["scrape_configs"]
    assert job["job_name"] == "efajob"  # EfajobExporterDown: up{job="efajob"}
    assert 'up{job="efajob"}' in open(RULES).read()
    assert doc["rule_files"] == ["/etc/prometheus/efajob-rules.yml"]
    assert job["file_sd_configs"][0]["files"] == ["/etc/prometheus/efajob-targets.json"]


@pytest.mark.prometheus
def test_promtool_checks_the_scrape_config(tmp_path):
    promtool = require_binary("promtool")
    doc = load_yaml(os.path.join(PROM_DIR, "prometheus-efajob.yml"))
    # The same config with the paths in tmp_path (promtool reads the files it names).
    import shutil

    shutil.copy(RULES, tmp_path / "efajob-rules.yml")
    (tmp_path / "efajob-targets.json").write_text(
        json.dumps(build_file_sd([("n1", "10.0.0.1")], 9814)))
    doc["rule_files"] = [str(tmp_path / "efajob-rules.yml")]
    doc["scrape_configs"][0]["file_sd_configs"][0]["files"] = [str(tmp_path / "efajob-targets.json")]
    import yaml

    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(doc))
    p = subprocess.run([promtool, "check", "config", str(tmp_path / "prometheus.yml")],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr


@pytest.mark.parametrize("text,want", [
    ("", []),
    ("n1|10.0.0.1|idle\nn2|10.0.0.2|alloc\n", [("n1", "10.0.0.1"), ("n2", "10.0.0.2")]),
    # -N lists a node once per partition; down nodes stay (the exporter-down alert is for them).
    ("n1|10.0.0.1|mix\nn1|10.0.0.1|mix\nn3|n3|down*\n", [("n1", "10.0.0.1"), ("n3", "n3")]),
    # Powered off, powering up, powering down, pending power-down: nothing to scrape.
    ("q-dy-1|q-dy-1|idle~\nq-dy-2|q-dy-2|alloc#\nq-dy-3|q-dy-3|idle%\nq-dy-4|q-dy-4|idle!\n"
     "q-st-1|10.1.0.9|idle\n", [("q-st-1", "10.1.0.9")]),
    ("garbage\nn5||idle\n", [("n5", "n5")]),
])
def test_parse_sinfo_nodes(text, want):
    assert parse_sinfo_nodes(text) == want


def test_build_file_sd_labels_by_slurm_node():
    assert build_file_sd([("n1", "10.0.0.1")], 9814) == [
        {"targets": ["10.0.0.1:9814"], "labels": {"slurm_node": "n1"}}]


def test_targets_command_writes_the_file_from_sinfo(tmp_path, monkeypatch):
    from conftest import cli_runner
    from efajob.cli.main import main

    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "sinfo").write_text('#!/bin/sh\n[ "$*" = "-h -N -o %N|%o|%t -p gpu" ] || exit 3\n'
                                  'printf "n1|10.0.0.1|idle\\nn2|10.0.0.2|idle~\\n"\n')
    (bindir / "sinfo").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    out = tmp_path / "targets.json"
    r = cli_runner().invoke(main, ["prometheus", "targets", "--partition", "gpu", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert r.stdout == f"wrote {out}: 1 target(s)\n"
    assert json.loads(out.read_text()) == [{"targets": ["10.0.0.1:9814"], "labels": {"slurm_node": "n1"}}]
    r = cli_runner().invoke(main, ["prometheus", "targets", "--port", "9999"])
    assert r.exit_code != 0 and "sinfo failed" in r.stderr


def test_check_names_refuses_what_the_exporter_does_not_serve(live):
    check_names('sum by (instance) (rate(efajob_tx_bytes_total{device="x"}[5m]))', live)
    for bad in ("rate(efajob_tx_byte_total[5m])", 'sum by (host) (efajob_tx_bytes_total)',
                '{__name__=~"efajob_nothing_.*"}', 'efajob_job_active{jobid="1"}'):
        with pytest.raises(AssertionError):
            check_names(bad, live)


def test_check_names_refuses_a_join_on_a_label_nobody_has(live):
    with pytest.raises(AssertionError):
        check_names("efajob_daemon_devices * on (instance) group_left (hostname) efajob_node_info",
                    live)
