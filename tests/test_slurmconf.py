"""ClusterName from slurm.conf, and the CLI/daemon using it when the config says "default"."""
import json

import pytest
from click.testing import CliRunner

from efajob.cli.main import main
from efajob.cli.common import get_config
from efajob.slurm.conf import parse_cluster_name, read_cluster_name


@pytest.mark.parametrize("text,want", [
    ("ClusterName=efa-prod\nSlurmctldHost=head\n", "efa-prod"),
    ("  clustername = MyCluster   # upper case is mapped to lower case by Slurm\n", "mycluster"),
    ("#ClusterName=old\nClusterName=new\n", "new"),
    ("ClusterName=a\nClusterName=b\n", "b"),  # the last setting wins
    ("SlurmctldHost=head\n", None),
    ("ClusterName=\n", None),
    ('ClusterName="quoted"\n', "quoted"),
    ("NodeName=ClusterName=x\n", None),  # not at the start of a line
])
def test_parse_cluster_name(text, want):
    assert parse_cluster_name(text) == want


def test_read_cluster_name_prefers_slurm_conf_and_does_not_fall_back(tmp_path):
    a, b = tmp_path / "a.conf", tmp_path / "b.conf"
    a.write_text("ClusterName=from-env\n")
    b.write_text("ClusterName=from-path\n")
    assert read_cluster_name({"SLURM_CONF": str(a)}, paths=[str(b)]) == "from-env"
    assert read_cluster_name({}, paths=[str(tmp_path / "none"), str(b)]) == "from-path"
    assert read_cluster_name({"SLURM_CONF": str(tmp_path / "none")}, paths=[str(b)]) is None
    assert read_cluster_name({}, paths=[]) is None


def test_cli_uses_slurms_cluster_name_unless_the_config_names_one(tmp_path, monkeypatch):
    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=Trn2-Prod\n")
    monkeypatch.setenv("SLURM_CONF", str(conf))
    cfg_file = tmp_path / "efajob.toml"
    cfg_file.write_text(f'run_dir = "{tmp_path}/run"\nstate_dir = "{tmp_path}/state"\n'
                        f'store = "{tmp_path}/store"\nsysfs_root = "{tmp_path}/sys"\n')
    assert get_config(str(cfg_file), node="n1").cluster == "trn2-prod"
    assert get_config(str(cfg_file), node="n1", cluster="other").cluster == "other"
    res = CliRunner().invoke(main, ["status", "--config", str(cfg_file), "--node", "n1",
                                   "--format", "json"])
    assert res.exit_code == 2, res.output  # no daemon ever ran here
    assert json.loads(res.output)["cluster"] == "trn2-prod"
    conf.write_text("ClusterName=bad/name\n")  # unusable in paths: "default", as the hooks do
    assert get_config(str(cfg_file), node="n1").cluster == "default"
    cfg_file.write_text(cfg_file.read_text() + 'cluster = "mine"\n')
    conf.write_text("ClusterName=other\n")
    assert get_config(str(cfg_file), node="n1").cluster == "mine"
