from __future__ import annotations

import pytest

from efajob.config import DEFAULT_THRESHOLDS, build_config, load_config
from efajob.errors import ConfigError


def test_defaults_without_a_file(tmp_path):
    cfg = load_config(None, env={}, node="n1")  # no /etc/efajob/config.toml on test machines
    assert cfg.sysfs_root == "/sys" and cfg.run_dir == "/run/efajob"
    assert cfg.state_dir == "/var/lib/efajob" and cfg.interval == 1.0
    assert cfg.node == "n1" and cfg.db_path == "/var/lib/efajob/efajob.db"
    assert dict(cfg.thresholds) == DEFAULT_THRESHOLDS


def test_file_env_and_node_templating(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('cluster = "pc1"\nsysfs_root = "/sim/{node}"\nrun_dir = "/run/efajob/{node}"\n'
                 'interval = 2\n[prometheus]\nenabled = true\nport = 9999\n'
                 '[cloudwatch]\nenabled = true\nregion = "us-east-1"\n[thresholds]\nstraggler_ratio = 0.4\n')
    env = {"EFAJOB_CONFIG": str(f), "EFAJOB_INTERVAL": "0.5", "EFAJOB_STATE_DIR": "/st/{node}"}
    cfg = load_config(env=env, node="gpu-3")
    assert cfg.cluster == "pc1" and cfg.sysfs_root == "/sim/gpu-3" and cfg.run_dir == "/run/efajob/gpu-3"
    assert cfg.interval == 0.5  # env beats file
    assert cfg.state_dir == "/st/gpu-3"
    assert cfg.prometheus.enabled and cfg.prometheus.port == 9999 and cfg.prometheus.bind == "127.0.0.1"
    assert cfg.cloudwatch.enabled and cfg.cloudwatch.region == "us-east-1"
    assert cfg.thresholds["straggler_ratio"] == 0.4
    assert cfg.source == str(f)


def test_node_from_env(tmp_path):
    cfg = load_config(env={"EFAJOB_NODE": "n7", "EFAJOB_RUN_DIR": "/r/{node}"})
    assert cfg.node == "n7" and cfg.run_dir == "/r/n7"


@pytest.mark.parametrize("text,msg", [
    ("colour = 1\n", "unknown config key 'colour'"),
    ("[cloudwatch]\nregoin = 'x'\n", "unknown config key cloudwatch.regoin"),
    ("[thresholds]\nstragler_ratio = 1\n", "unknown config key thresholds.stragler_ratio"),
    ("[thresholds]\nstraggler_ratio = '__import__(\"os\")'\n", "expected a number"),
    ("interval = 'fast'\n", "'interval': expected float"),
    ("interval = 0\n", "must be > 0"),
    ("hook_wait = -1\n", "'hook_wait' must be between 0 and 3600 seconds, got -1"),
    ("hook_wait = nan\n", "'hook_wait': expected float, got nan"),
    # Once tracebacks or silent misbehaviour (issue 13, case 8):
    ("interval = 1e300\n", "'interval' must be > 0 and at most 3600 seconds, got 1e.300"),
    ("[prometheus]\nport = 70000\n", "'prometheus.port' must be between 0 and 65535, got 70000"),
    ("retention_hours = -1\n", "'retention_hours' must be > 0 and at most 87600 hours, got -1"),
    ("rollup_days = 0\n", "'rollup_days' must be > 0"),
    ("status_interval = -5\n", "'status_interval' must be > 0"),
    ("[cloudwatch]\nperiod = 0\n", "'cloudwatch.period' must be between 1 and 3600 seconds"),
    ("store = 'relative/store'\n", "'store' must be an absolute path, got 'relative/store'"),
    ("state_dir = '/var/{nodes}'\n", "'state_dir': unknown placeholder {nodes} in '/var/{nodes}'"),
    ("log_file = 'efajob.log'\n", "'log_file' must be an absolute path"),
    ('cluster = "a\\n"\n', "cluster name 'a.*' is not allowed"),
    ("[prometheus]\nport = '80'\n", "prometheus.port': expected int"),
    ("[prometheus]\nenabled = 'yes'\n", "prometheus.enabled': expected bool"),
    ("cluster = '../etc'\n", "cluster name '../etc' is not allowed"),
    ("prometheus = 3\n", "must be a table"),
    ("x = [\n", "not valid TOML"),
])
def test_bad_files_name_the_problem(tmp_path, text, msg):
    f = tmp_path / "c.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=msg.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        load_config(str(f), env={}, node="n1")


def test_bad_env_values():
    with pytest.raises(ConfigError, match="EFAJOB_INTERVAL"):
        build_config({}, env={"EFAJOB_INTERVAL": "soon"}, node="n1")
    with pytest.raises(ConfigError, match="EFAJOB_PRIVATE_RECORDS"):
        build_config({}, env={"EFAJOB_PRIVATE_RECORDS": "maybe"}, node="n1")
    assert build_config({}, env={"EFAJOB_PRIVATE_RECORDS": "yes"}, node="n1").private_records


def test_hostile_node_name():
    with pytest.raises(ConfigError, match="node name"):
        build_config({}, env={}, node="../../etc")


def test_explicit_missing_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "none.toml"), env={}, node="n1")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(env={"EFAJOB_CONFIG": str(tmp_path / "none.toml")}, node="n1")


def test_invalid_utf8_is_a_config_error(tmp_path):
    f = tmp_path / "c.toml"
    f.write_bytes(b'cluster = "\xff"\n')
    with pytest.raises(ConfigError, match=r"is not UTF-8 \(byte 11"):
        load_config(str(f), env={}, node="n1")


def test_names_with_a_trailing_newline_are_refused():
    with pytest.raises(ConfigError, match="node name"):
        build_config({}, env={}, node="n1\n")
    with pytest.raises(ConfigError, match="cluster name"):
        build_config({}, env={"EFAJOB_CLUSTER": "c1\n"}, node="n1")


def test_a_log_file_that_cannot_be_opened_is_a_config_error(tmp_path):
    import logging

    from efajob.daemon.loop import configure_logging

    good = build_config({"log_file": str(tmp_path / "d.log")}, env={}, node="n1")
    configure_logging(good)
    bad = build_config({"log_file": str(tmp_path / "missing" / "d.log")}, env={}, node="n1")
    with pytest.raises(ConfigError, match="cannot open .*missing/d.log: No such file"):
        configure_logging(bad)
    # The handler in place stays: a SIGHUP with a bad path keeps logging where it did.
    handlers = [h for h in logging.getLogger("efajob").handlers if getattr(h, "_efajob_daemon", 0)]
    assert [h.baseFilename for h in handlers] == [str(tmp_path / "d.log")]
    for h in handlers:
        logging.getLogger("efajob").removeHandler(h)
        h.close()

