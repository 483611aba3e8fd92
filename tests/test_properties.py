"""Property-based tests (hypothesis) for parsers of outside input: whatever bytes or values
arrive, each parser either gives the value back or raises its one documented error type,
never a crash of another kind (issue 13: RecursionError and OverflowError once escaped).

Covered here: JSON from other processes' files (values.loads_checked), record file names
(slurm.jobid.record_stem / split_record_stem), job ids, and the config builder.
"""
from __future__ import annotations

import json
import sys

import pytest

if sys.version_info < (3, 10):  # hypothesis is a test dependency from Python 3.10 (pyproject)
    pytest.importorskip("hypothesis")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from efajob.config import build_config  # noqa: E402
from efajob.errors import ConfigError, UsageError  # noqa: E402
from efajob.slurm.jobid import (job_key, parse_key, record_stem,  # noqa: E402
                                split_record_stem, validate_job_id)
from efajob.store.reader import parse_record_name  # noqa: E402
from efajob.values import loads_checked  # noqa: E402

# Deterministic: a property test whose examples change from run to run is a landing lottery.
settings.register_profile("efajob", derandomize=True, max_examples=200, deadline=None)
settings.load_profile("efajob")

U64 = st.integers(min_value=0, max_value=(1 << 64) - 1)
JSON_LEAF = (st.none() | st.booleans() | U64 | st.integers(-(1 << 63), 0)
             | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40))
JSON_DOC = st.recursive(JSON_LEAF, lambda kids: st.lists(kids, max_size=5)
                        | st.dictionaries(st.text(max_size=10), kids, max_size=5), max_leaves=40)


@given(JSON_DOC)
def test_real_documents_parse_exactly_as_json_does(doc):
    data = json.dumps(doc).encode()
    assert loads_checked(data) == json.loads(data)


@given(st.binary(max_size=300))
def test_any_bytes_give_a_value_or_a_valueerror(data):
    try:
        loads_checked(data)
    except ValueError:
        pass


@given(st.integers(min_value=1, max_value=200000), st.booleans())
def test_any_nesting_gives_a_value_or_a_valueerror(depth, arrays):
    text = ("[" * depth + "]" * depth) if arrays else ('{"a":' * depth + "1" + "}" * depth)
    try:
        loads_checked(text.encode())
    except ValueError:
        pass


HOST = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,40}", fullmatch=True)


@given(HOST, st.integers(min_value=0, max_value=999999))
def test_record_names_round_trip(host, restart):
    stem = record_stem(host, restart)
    assert split_record_stem(stem) == (host, restart)
    assert parse_record_name(stem + ".json") == (host, restart)


@given(st.tuples(HOST, st.integers(0, 999999)), st.tuples(HOST, st.integers(0, 999999)))
def test_two_runs_never_share_a_record_name(a, b):
    if a != b:
        assert record_stem(*a) != record_stem(*b)


@given(st.text(max_size=30))
def test_job_ids_are_valid_or_a_usage_error(text):
    try:
        validate_job_id(text)
    except UsageError:
        return
    assert text.isascii() and "\n" not in text and "/" not in text


@given(st.text(max_size=30))
def test_keys_parse_or_raise_a_usage_error(text):
    try:
        job_id, restart = parse_key(text)
    except UsageError:
        return
    assert job_key(job_id, restart) == text  # a key that parses is its own canonical form


VALUE = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
         | st.lists(st.integers(), max_size=3) | st.dictionaries(st.text(max_size=5), st.integers(), max_size=3))
KEYS = st.sampled_from(["cluster", "interval", "status_interval", "hook_wait", "store", "run_dir",
                        "retention_hours", "log_level", "private_records", "ethtool", "prometheus",
                        "cloudwatch", "thresholds", "no_such_key"])


@given(st.dictionaries(KEYS, VALUE, max_size=4))
def test_any_config_document_is_a_config_or_a_config_error(doc):
    try:
        cfg = build_config(doc, env={}, node="n1")
    except ConfigError:
        return
    assert cfg.interval > 0 and cfg.store.startswith("/")


@given(st.dictionaries(st.sampled_from(["EFAJOB_INTERVAL", "EFAJOB_HOOK_WAIT", "EFAJOB_CLUSTER",
                                        "EFAJOB_PRIVATE_RECORDS", "EFAJOB_STORE"]),
                       st.text(max_size=20), max_size=3))
def test_any_environment_is_a_config_or_a_config_error(env):
    try:
        build_config({}, env=env, node="n1")
    except ConfigError:
        pass
