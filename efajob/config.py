"""Configuration: a TOML file, every top-level key overridable by `EFAJOB_<KEY>`.

Where the file comes from: the `path` argument, else `$EFAJOB_CONFIG`, else
`/etc/efajob/config.toml` when it exists, else built-in defaults. Unknown keys are an error
that names the key (a typo must not silently fall back to a default). Path values may contain
`{node}`: the Slurm node name in hooks (`SLURMD_NODENAME`), the daemon's `--node` /
`$EFAJOB_NODE` elsewhere, defaulting to the short host name. That lets several simulated nodes
share one host in tests and the demo.

On the hook import path: standard library only (plus `tomli` below Python 3.11), and as
little of it as the hooks need: no `re`, `typing`, `dataclasses` or (for the usual flat file)
`tomllib` at run time, which together cost more than the interpreter's own start
(bench/hooks.py; efajob/minitoml.py, efajob/frozen.py).
"""
from __future__ import annotations

import os
import sys

from efajob.errors import ConfigError
from efajob.frozen import Frozen, factory

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, Mapping, Optional, Tuple

DEFAULT_PATH = "/etc/efajob/config.toml"
_ALNUM = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
_NAME_CHARS = _ALNUM | frozenset("_.-")


def is_name(value: str) -> bool:
    """[A-Za-z0-9][A-Za-z0-9_.-]{0,63}, the whole string (no trailing newline either)."""
    return 0 < len(value) <= 64 and value[0] in _ALNUM and not (set(value) - _NAME_CHARS)


def placeholders(value: str) -> List[str]:
    """Every `{...}` in `value` (a `{` up to the next `}`), in order."""
    out, i = [], value.find("{")
    while i >= 0:
        j = value.find("}", i + 1)
        if j < 0:
            break
        out.append(value[i:j + 1])
        i = value.find("{", j + 1)
    return out

# (low, high, low allowed): a value outside is a typo or a unit slip, and would otherwise
# surface later as a traceback (a 1e300 s sleep overflows time_t) or as silent misbehaviour
# (negative retention deletes every sample).
_RANGES: Dict[str, Tuple[float, float, bool]] = {
    "interval": (0, 3600, False),
    "status_interval": (0, 86400, False),
    "status_expiry": (0, 3650 * 86400, True),
    "rediscover_interval": (0, 86400, False),
    "device_counter_interval": (0, 86400, False),
    "retention_hours": (0, 24 * 3650, False),
    "rollup_days": (0, 3650, False),
    "hook_wait": (0, 3600, True),
    "store_timeout": (0, 86400, False),
    "cloudwatch.period": (1, 3600, True),
    "cloudwatch.spool_max_bytes": (0, 1 << 40, True),
    "prometheus.port": (0, 65535, True),
    "store_retention.max_age_days": (0, 36500, True),
    "store_retention.max_gb": (0, 1e9, True),
    "accounting.settle_s": (0, 30 * 86400, True),
    "accounting.max_age_days": (0, 36500, False),
}


def _load_toml(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    from efajob.minitoml import parse

    doc = parse(data)  # the flat subset every efajob config uses, without importing tomllib
    return doc if doc is not None else _load_full_toml(path, data)


def _load_full_toml(path: str, data: bytes) -> dict:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised by CI's oldest-Python run
        import tomli as tomllib
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:  # tomllib decodes the whole file first
        raise ConfigError(f"config file {path} is not UTF-8 (byte {e.start}: "
                          f"{e.object[e.start:e.start + 1]!r})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None


class CloudWatchConfig(Frozen):
    enabled: bool = False
    region: Optional[str] = None
    namespace: str = "EFAJob"
    log_group: Optional[str] = None  # default: /efajob/<cluster>
    endpoint_url: Optional[str] = None
    period: int = 60  # seconds aggregated into one StatisticValues datum
    per_device: bool = False  # per-device metrics: cost grows with devices (docs/cloudwatch.md)
    job_metrics: bool = False  # JobId-dimension metrics while jobs run: explicit opt-in
    instance_id: Optional[str] = None  # default: IMDSv2, else the host name
    instance_type: Optional[str] = None
    spool_max_bytes: int = 64 * 1024 * 1024


class PrometheusConfig(Frozen):
    enabled: bool = False
    bind: str = "127.0.0.1"
    port: int = 9814


class StoreRetention(Frozen):
    """How long the job store keeps job directories (`efajob index prune`, docs/jobindex.md);
    0 is no bound. Not the daemon's local samples: those are `retention_hours`."""
    max_age_days: float = 0.0  # job directories whose last record landed longer ago go
    max_gb: float = 0.0  # then the oldest go until the store's records fit (decimal GB)


class AccountingConfig(Frozen):
    """Job summaries in Slurm's accounting (`efajob accounting sync`, docs/accounting.md):
    `admin_comment` append (after a site's own text), skip (jobs whose AdminComment holds
    other text are left alone) or off."""
    admin_comment: str = "append"
    settle_s: float = 600.0  # written once every node's record landed, or this long after the last
    max_age_days: float = 7.0  # jobs whose records landed longer ago are not written


# Finding thresholds are data, never code: report/model.py applies them with pure functions.
DEFAULT_THRESHOLDS: Dict[str, float] = {
    "efa_unused_bytes_per_node": 1e8,  # < 100 MB per node over EFA in a multi-node job
    "ena_fallback_bytes_per_node": 1e9,  # ... while ENA moved > 1 GB per node
    "straggler_ratio": 0.5,  # node below 50% of the job's median node bytes
    "device_idle_ratio": 0.1,  # device below 10% of its node's median device bytes
    "rx_drops": 1,  # any rx drop is worth a warning
    "rx_drops_critical_ratio": 1e-3,  # drops / rx_pkts above this is critical
    "retrans_ratio_warning": 1e-4,  # retrans_pkts / tx_pkts
    "retrans_ratio_critical": 1e-2,
    "impaired_events": 1,
    "unresponsive_events": 1,
    "ena_allowance_events": 1,
    "short_job_seconds": 30,
    # Work-request errors (rdma_*_wr_err) on one device: any is worth a warning, critical
    # above this share of the device's work requests of that kind.
    "wr_errors": 1,
    "wr_errors_critical_ratio": 1e-3,
    # Admin and verbs errors (cmds_err, no_completion_cmds, *_err) on one device.
    "device_errors": 1,
    # A sample or peak above this multiple of the link rate is questioned, not shown as fact.
    "rate_above_link_ratio": 1.05,
}


class Config(Frozen):
    cluster: str = "default"
    node: str = ""
    sysfs_root: str = "/sys"
    run_dir: str = "/run/efajob"
    state_dir: str = "/var/lib/efajob"
    store: str = "/var/lib/efajob/jobstore"
    interval: float = 1.0
    status_interval: float = 15.0
    # The dashboard leaves out node status files older than this (seconds; 0: never): nodes
    # that left the cluster. A day: a node down overnight is still listed, stale.
    status_expiry: float = 86400.0
    # The longest a hook waits for anything: its record's delivery when no daemon runs, the
    # run-dir lock for the history file. Short, because slurmd holds the job (and kills the
    # hook at PrologEpilogTimeout) meanwhile; nothing is lost when it runs out.
    hook_wait: float = 1.0
    # report, jobs and dashboard build give up (exit 4) when the job store answers nothing for
    # this long: a hung NFS mount. Progress resets it, so a big but moving read is never cut.
    store_timeout: float = 60.0
    rediscover_interval: float = 30.0
    # The daemon reads the device-level admin counters (a third of a p5's counter files, error
    # counters that rarely move) this often; the hooks read everything every time.
    device_counter_interval: float = 10.0
    retention_hours: float = 24.0
    rollup_days: float = 30.0
    instance_type: Optional[str] = None
    log_file: Optional[str] = None
    log_level: str = "info"
    private_records: bool = False
    # Quote NCCL's own log from the job's output (Slurm's StdOut) beside efa_unused
    # (report/nccllog.py). None: yes, unless private_records (a job's output is the user's).
    nccl_log: Optional[bool] = None
    # The job index (efajob/index/): head-node local disk, never the shared store. None:
    # `<state_dir>/jobindex.db`.
    index_path: Optional[str] = None
    # ENA allowance counters (efajob/node/ethtool.py): "ioctl", "off", or a directory of
    # `ethtool -S` text files named by interface (the simulator's; may contain {node}).
    ethtool: str = "ioctl"
    cloudwatch: CloudWatchConfig = factory(CloudWatchConfig)
    prometheus: PrometheusConfig = factory(PrometheusConfig)
    store_retention: StoreRetention = factory(StoreRetention)
    accounting: AccountingConfig = factory(AccountingConfig)
    thresholds: Mapping[str, float] = factory(lambda: dict(DEFAULT_THRESHOLDS))
    source: Optional[str] = None  # the file it came from, for messages

    @property
    def db_path(self) -> str:
        return os.path.join(self.state_dir, "efajob.db")

    @property
    def reads_nccl_log(self) -> bool:
        return (not self.private_records) if self.nccl_log is None else self.nccl_log

    @property
    def job_index_path(self) -> str:
        return self.index_path or os.path.join(self.state_dir, "jobindex.db")

    @property
    def outbox_dir(self) -> str:
        return os.path.join(self.state_dir, "outbox")

    @property
    def spare_outbox_dir(self) -> str:
        """Where a record goes when the outbox cannot take it (the local disk is full): the
        run dir, tmpfs on every systemd node, so another filesystem (hooks/outbox.py)."""
        return os.path.join(self.run_dir, "outbox")


# `ethtool` is a path only when it is not "ioctl"/"off"; those hold no {node}, so expanding
# it like a path leaves them alone.
_PATH_KEYS = ("sysfs_root", "run_dir", "state_dir", "store", "log_file", "ethtool", "index_path")
_SECTIONS = {"cloudwatch": CloudWatchConfig, "prometheus": PrometheusConfig,
             "store_retention": StoreRetention, "accounting": AccountingConfig}
# field name -> its annotation ("Optional[str]", "float", ...)
_TOP_KEYS = {n: t for n, t in Config._types.items() if n not in ("source",)}


def _type_name(annotation: str) -> str:
    return annotation.replace("Optional[", "").rstrip("]")


def _coerce(name: str, annotation: str, value: Any, from_env: bool) -> Any:
    """Turn a TOML or environment value into the field's type, or raise ConfigError naming it."""
    kind = _type_name(annotation)
    try:
        if kind == "bool":
            if isinstance(value, bool):
                return value
            if from_env and str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if from_env and str(value).lower() in ("0", "false", "no", "off", ""):
                return False
            raise ValueError
        if kind == "int":
            if isinstance(value, bool):
                raise ValueError
            return int(value) if from_env else _exact(value, int)
        if kind == "float":
            if isinstance(value, bool):
                raise ValueError
            v = float(value)
            if v != v or v in (float("inf"), float("-inf")):
                raise ValueError
            return v
        if kind == "str":
            if value is None and "Optional" in annotation:
                return None
            if not isinstance(value, str):
                raise ValueError
            return value
    except (TypeError, ValueError):
        raise ConfigError(f"config key {name!r}: expected {kind}, got {value!r}") from None
    raise ConfigError(f"config key {name!r}: unsupported type {kind}")  # pragma: no cover


def _exact(value: Any, typ: type) -> Any:
    if not isinstance(value, typ):
        raise ValueError
    return value


def _section(name: str, cls: type[Frozen], raw: Any) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"config section [{name}] must be a table")
    known = cls._types
    kwargs = {}
    for key, value in raw.items():
        if key not in known:
            raise ConfigError(f"unknown config key {name}.{key}")
        kwargs[key] = _coerce(f"{name}.{key}", known[key], value, from_env=False)
    return cls(**kwargs)


def _thresholds(raw: Any) -> Dict[str, float]:
    if not isinstance(raw, dict):
        raise ConfigError("config section [thresholds] must be a table")
    out = dict(DEFAULT_THRESHOLDS)
    for key, value in raw.items():
        if key not in DEFAULT_THRESHOLDS:
            raise ConfigError(f"unknown config key thresholds.{key}")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key thresholds.{key}: expected a number, got {value!r}")
        out[key] = float(value)
    return out


def default_node_name() -> str:
    # os.uname(), not socket.gethostname(): the same kernel host name on Linux, without
    # importing `socket` (a few ms of every command that loads the config).
    return os.uname().nodename.split(".")[0] or "localhost"


def validate_name(kind: str, value: object) -> str:
    """Cluster and node names become path components: allow a conservative alphabet only."""
    if not isinstance(value, str) or not is_name(value):
        raise ConfigError(
            f"{kind} name {value!r} is not allowed: use letters, digits, '_', '.', '-' "
            "(at most 64, not starting with '.' or '-')"
        )
    return value


def build_config(data: Mapping[str, Any], *, env: Mapping[str, str], node: Optional[str] = None,
                 source: Optional[str] = None) -> Config:
    """Pure: a parsed TOML document + environment -> Config. Raises ConfigError."""
    top: Dict[str, Any] = {}
    sections: Dict[str, Any] = {}
    for key, value in data.items():
        if key in _SECTIONS:
            sections[key] = _section(key, _SECTIONS[key], value)
        elif key == "thresholds":
            top["thresholds"] = _thresholds(value)
        elif key in _TOP_KEYS and key not in (*_SECTIONS, "thresholds", "node"):
            top[key] = _coerce(key, _TOP_KEYS[key], value, from_env=False)
        else:
            raise ConfigError(f"unknown config key {key!r}" + (f" in {source}" if source else ""))
    for key, annotation in _TOP_KEYS.items():
        if key in (*_SECTIONS, "thresholds", "node"):
            continue
        env_key = "EFAJOB_" + key.upper()
        if env_key in env:
            top[key] = _coerce(env_key, annotation, env[env_key], from_env=True)
    node_name = node or env.get("EFAJOB_NODE") or default_node_name()
    validate_name("node", node_name)
    cfg = Config(**top, **sections, node=node_name, source=source)
    validate_name("cluster", cfg.cluster)
    _check_ranges(cfg)
    _check_paths(cfg)
    _check_index_path(cfg)
    if cfg.accounting.admin_comment not in ("append", "skip", "off"):
        raise ConfigError("config key accounting.admin_comment must be \"append\", \"skip\" or "
                          f"\"off\", got {cfg.accounting.admin_comment!r}")
    if cfg.ethtool not in ("ioctl", "off") and not os.path.isabs(cfg.ethtool):
        raise ConfigError(f"config key 'ethtool' must be \"ioctl\", \"off\" or an absolute "
                          f"directory path, got {cfg.ethtool!r}")
    return expand_node(cfg, node_name)


def _check_ranges(cfg: Config) -> None:
    for key, (lo, hi, lo_ok) in _RANGES.items():
        section, _, name = key.rpartition(".")
        v = getattr(getattr(cfg, section) if section else cfg, name)
        if (v >= lo if lo_ok else v > lo) and v <= hi:
            continue
        unit = {"retention_hours": " hours", "rollup_days": " days", "port": "",
                "spool_max_bytes": " bytes", "max_age_days": " days",
                "max_gb": " GB"}.get(name, " seconds")
        if lo_ok:
            raise ConfigError(f"config key {key!r} must be between {lo:g} and {hi:g}{unit}, got {v:g}")
        raise ConfigError(f"config key {key!r} must be > {lo:g} and at most {hi:g}{unit}, got {v:g}")


def _check_paths(cfg: Config) -> None:
    """Paths are absolute (a relative one would follow whatever directory slurmd or systemd
    started in) and hold no placeholder but `{node}` (`{nodes}` is a typo, not a directory)."""
    for key in _PATH_KEYS:
        value = getattr(cfg, key)
        if not value or (key == "ethtool" and value in ("ioctl", "off")):
            continue
        bad = [p for p in placeholders(value) if p != "{node}"]
        if bad:
            raise ConfigError(f"config key {key!r}: unknown placeholder {bad[0]} in {value!r} "
                              "(only {node} is replaced)")
        if not os.path.isabs(value):
            raise ConfigError(f"config key {key!r} must be an absolute path, got {value!r}")
        if "\n" in value or "\0" in value:
            raise ConfigError(f"config key {key!r}: a path may not hold a newline or NUL")


def _check_index_path(cfg: Config) -> None:
    """The job index is SQLite with one writer on the head node: inside the shared store,
    every node that mounts it could open it, and SQLite's locks do not hold over NFS."""
    index = os.path.normpath(cfg.job_index_path)
    store = os.path.normpath(cfg.store)
    if index == store or index.startswith(store.rstrip("/") + "/"):
        raise ConfigError(f"config key 'index_path' ({index}) is inside the job store {store}: "
                          "put the job index on the head node's local disk (default "
                          "<state_dir>/jobindex.db)")


def expand_node(cfg: Config, node: str) -> Config:
    """Substitute `{node}` in every path value."""
    changes = {}
    for key in _PATH_KEYS:
        value = getattr(cfg, key)
        if value and "{node}" in value:
            changes[key] = value.replace("{node}", node)
    return cfg.replace(node=node, **changes)


def config_path(path: Optional[str], env: Mapping[str, str]) -> Tuple[Optional[str], bool]:
    """(path, required): an explicit or $EFAJOB_CONFIG path must exist; the default may not."""
    if path:
        return path, True
    if env.get("EFAJOB_CONFIG"):
        return env["EFAJOB_CONFIG"], True
    return DEFAULT_PATH, False


def load_config(path: Optional[str] = None, *, env: Optional[Mapping[str, str]] = None,
                node: Optional[str] = None) -> Config:
    """Read the config file (if any) and the environment. Raises ConfigError."""
    env = os.environ if env is None else env
    cfg_path, required = config_path(path, env)
    data: dict = {}
    source = None
    if cfg_path and (required or os.path.exists(cfg_path)):
        data = _load_toml(cfg_path)
        source = cfg_path
    return build_config(data, env=env, node=node, source=source)
