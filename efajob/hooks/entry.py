"""`efajob-hook prolog|epilog`: the Slurm Prolog/Epilog entry point (docs/hooks.md).

What slurmd gives a hook (shared/notes/slurm.md): no PATH, no HOME, the job in `SLURM_*`
variables, `SLURMD_NODENAME`; a non-zero exit DRAINS the node (and requeues and holds the job
for a prolog). So this module:
- always exits 0, logging a failure as one line to syslog (/dev/log) and stderr;
- reads counters directly (exact totals with or without a daemon), writes only to local disk
  (the run dir and the outbox), never calls Slurm commands or the network;
- validates every environment value before it becomes a path or a record field;
- imports only the standard library and efajob's hook path, lazily where it can (the prolog
  should cost little over interpreter start: bench/hooks.py, docs/performance.md "Hooks").

prolog: start snapshot + active-job file (runfiles.write_active).
epilog: end snapshot, start snapshot, daemon rows from the local store (if any), overlap,
        the job-node record into the outbox, the active file removed (hooks/finish.py, shared with
        the daemon's reconcile); then, when no daemon is running, a detached child delivers
        the outbox to the job store while the epilog waits at most `hook_wait` seconds (1 s).
"""
from __future__ import annotations

import os
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:  # no `typing` at run time; logging is imported where it is used (the happy
    import logging  # path logs nothing)
    from typing import Callable, List, Mapping, Optional

# The grammar of each environment value, checked with sets and str methods rather than `re`
# (importing re and compiling costs the hooks milliseconds):
_ALNUM = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
_NAME_FIRST = _ALNUM | {"_"}  # user, partition, account: [A-Za-z0-9_][A-Za-z0-9_.@+-]{0,127}
_NAME_CHARS = _NAME_FIRST | frozenset(".@+-")
_NODELIST_CHARS = _ALNUM | frozenset("_.,[]-")  # [A-Za-z0-9_.,\[\]-]{1,65536}


def _is_name(v: str) -> bool:
    return len(v) <= 128 and v[0] in _NAME_FIRST and not (set(v) - _NAME_CHARS)


def _is_digits(v: str) -> bool:  # [0-9]{1,10}
    return len(v) <= 10 and v.isascii() and v.isdigit()


def _is_nodelist(v: str) -> bool:
    return len(v) <= 65536 and not (set(v) - _NODELIST_CHARS)
# Job names and directories are the user's free text: printable, no control characters
# (they reach terminals and CSV), bounded (Slurm caps names at 1024 bytes; PATH_MAX 4096).
_CONTROL = frozenset(map(chr, range(32))) | {"\x7f"}


def _is_text(v: str) -> bool:  # [^\x00-\x1f\x7f]{1,1024}
    return len(v) <= 1024 and not (set(v) & _CONTROL)


def _is_dir(v: str) -> bool:  # /[^\x00-\x1f\x7f]{0,4095}
    return v[0] == "/" and len(v) <= 4096 and not (set(v) & _CONTROL)
USAGE = "usage: efajob-hook prolog|epilog   (run by slurmd; always exits 0)"


# -- the environment -------------------------------------------------------------------------
def _name(env: Mapping[str, str], var: str) -> Optional[str]:
    v = env.get(var)
    return v if v and _is_name(v) else None


def _text(env: Mapping[str, str], var: str, check: Callable[[str], bool]) -> Optional[str]:
    v = env.get(var)
    return v if v and check(v) else None


def _int(env: Mapping[str, str], var: str) -> Optional[int]:
    v = env.get(var)
    return int(v) if v and _is_digits(v) else None


def _digits(env: Mapping[str, str], var: str) -> Optional[str]:
    v = env.get(var)
    return v if v and _is_digits(v) else None


def resolve_cluster(cfg, env: Mapping[str, str]) -> str:
    """The config's `cluster` wins; when it is left at the built-in "default", Slurm's
    ClusterName (SLURM_CLUSTER_NAME) is used, so an unconfigured node still files its records
    under the right cluster. The daemon never sees that variable: reconcile uses the cluster
    saved in the active-job file."""
    from efajob.config import validate_name
    from efajob.errors import ConfigError

    if cfg.cluster != "default":
        return cfg.cluster
    name = env.get("SLURM_CLUSTER_NAME")
    if name:
        try:
            return validate_name("cluster", name)
        except ConfigError:
            pass
    return cfg.cluster


def identity_from_env(env: Mapping[str, str], cfg, *, epilog: bool = False):
    """Slurm's hook environment -> JobIdentity. Raises UsageError when the job id or restart
    count is missing or malformed (they become paths); other bad values become None."""
    from efajob.errors import UsageError
    from efajob.slurm.jobid import parse_restart, validate_job_id
    from efajob.slurm.jobid import JobIdentity, format_exit_code

    raw = env.get("SLURM_JOB_ID")
    if not raw:
        raise UsageError("SLURM_JOB_ID is not set (is this run by slurmd as Prolog/Epilog?)")
    # Records are filed under SLURM_JOB_ID, the unique numeric id every Slurm gives the hooks.
    # Slurm 22.05's slurmd sets no array or het variables in Prolog/Epilog (measured: an array
    # task 7_8 runs its hooks as SLURM_JOB_ID=10 and nothing else), so the user-facing form
    # (7_8, 8+1) is recorded only when present; the report maps it through Slurm.
    job_id = validate_job_id(raw)
    array_job, array_task = _digits(env, "SLURM_ARRAY_JOB_ID"), _digits(env, "SLURM_ARRAY_TASK_ID")
    het_job, het_off = _digits(env, "SLURM_HET_JOB_ID"), _digits(env, "SLURM_HET_JOB_OFFSET")
    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")  # 23.02+ / 22.05
    start_time = _int(env, "SLURM_JOB_START_TIME")  # 23.02+
    return JobIdentity(
        cluster=resolve_cluster(cfg, env),
        job_id=job_id,
        restart=parse_restart(env.get("SLURM_JOB_RESTART_COUNT")),
        host=cfg.node,
        user=_name(env, "SLURM_JOB_USER"),
        uid=_int(env, "SLURM_JOB_UID"),
        partition=_name(env, "SLURM_JOB_PARTITION"),
        account=_name(env, "SLURM_JOB_ACCOUNT"),
        nodelist=nodelist if nodelist and _is_nodelist(nodelist) else None,
        num_nodes=_int(env, "SLURM_JOB_NUM_NODES"),
        array_job_id=array_job if array_task else None,
        array_task_id=array_task if array_job else None,
        het_job_id=het_job if het_off else None,
        het_job_offset=het_off if het_job else None,
        exit_code=format_exit_code(env.get("SLURM_JOB_EXIT_CODE"), env.get("SLURM_JOB_EXIT_CODE2"))
        if epilog else None,
        derived_exit_code=format_exit_code(env.get("SLURM_JOB_DERIVED_EC")) if epilog else None,
        start_wall=float(start_time) if start_time else None,
        job_name=_text(env, "SLURM_JOB_NAME", _is_text),
        work_dir=_text(env, "SLURM_JOB_WORK_DIR", _is_dir),
    )


# -- the hooks -------------------------------------------------------------------------------
def run_prolog(cfg, env: Mapping[str, str]) -> str:
    """Start snapshot + active-job file. Returns the job key. Raises on failure."""
    from efajob.hooks.runfiles import ActiveJob, read_boot_id, write_active
    from efajob.node.devcache import cache_path, read_once
    from efajob.node.ethtool import ethtool_reader_from_config

    ident = identity_from_env(env, cfg)
    snap = read_once(cfg.sysfs_root, cache=cache_path(cfg.run_dir),
                     ethtool=ethtool_reader_from_config(cfg))[0]
    job = ActiveJob(
        key=ident.key, job_id=ident.job_id, restart=ident.restart, user=ident.user, uid=ident.uid,
        partition=ident.partition, account=ident.account, cluster=ident.cluster, node=ident.host,
        nodelist=ident.nodelist, num_nodes=ident.num_nodes, start_wall=snap.wall,
        start_mono=snap.mono, boot_id=read_boot_id())
    write_active(cfg.run_dir, job, snap, private=cfg.private_records, durable_dir=cfg.state_dir)
    return job.key


def run_epilog(cfg, env: Mapping[str, str]) -> str:
    """Build the record, put it in the outbox, forget the job. Returns the outbox path."""
    from efajob.hooks.finish import finish_job
    from efajob.hooks.runfiles import read_boot_id

    ident = identity_from_env(env, cfg, epilog=True)
    ident = ident.replace(restart=epilog_restart(cfg.run_dir, ident.job_id, ident.restart))
    key = ident.key
    path = finish_job(cfg, ident=ident, key=key, source="epilog", boot_id=read_boot_id(),
                      now_wall=time.time())
    return path


def epilog_restart(run_dir: str, job_id: str, restart: int, lookback: int = 8) -> int:
    """Which run of the job this epilog ends. Measured on Slurm 22.05: when a job is requeued,
    the Epilog of the run being requeued already sees SLURM_JOB_RESTART_COUNT incremented. So
    when no run-dir files exist for `restart`, the newest earlier run that has them is the one
    ending here (the next run cannot have started on this node before this epilog ends)."""
    from efajob.slurm.jobid import job_key
    from efajob.hooks.runfiles import active_path, start_path

    def seen(r: int) -> bool:
        k = job_key(job_id, r)
        return os.path.exists(active_path(run_dir, k)) or os.path.exists(start_path(run_dir, k))

    if restart == 0 or seen(restart):
        return restart
    for r in range(restart - 1, max(-1, restart - 1 - lookback), -1):
        if seen(r):
            return r
    return restart


# -- delivery without a daemon -----------------------------------------------------------------
def deliver_detached(cfg, wait: float, first: Optional[str] = None) -> Optional[bool]:
    """Deliver the outbox in a child process in its own session, with stdio on /dev/null (slurmd
    reads our stdout until EOF and kills our process group on timeout: the child must hold
    neither). The child delivers `first` (this epilog's outbox file) before the rest and says
    so through a pipe; the parent waits at most `wait` seconds for that, never for the rest.
    True: `first` (or everything, without `first`) delivered in time; False: not yet (a hung
    NFS server, a backoff: the child or the daemon carries on); None: no child started."""
    import select

    try:
        r, w = os.pipe()
        pid = os.fork()
    except OSError:
        return None
    if pid == 0:  # pragma: no cover - runs in the child (tests check its effect)
        code = 1
        try:
            os.close(r)
            os.setsid()
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            from efajob.hooks.outbox import deliver_pending

            def tell(ok: bool) -> None:
                os.write(w, b"1" if ok else b"0")

            res = deliver_pending(cfg, first=first, on_first=tell)
            code = 0 if not res.pending else 1
        except BaseException:
            pass
        finally:
            os._exit(code)  # closes `w`: the parent's select() sees EOF
    os.close(w)
    try:
        ready, _, _ = select.select([r], [], [], wait)
        said = os.read(r, 1) if ready else b""
    finally:
        os.close(r)
    if not ready:
        return False
    if said == b"1":
        # Ours has landed; the child may still deliver older records. Reap it if it is done,
        # else init will (it is in its own session and holds none of slurmd's pipes).
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        return True
    try:  # EOF without a word: the child has exited
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return None
    return first is None and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


# -- logging and main --------------------------------------------------------------------------
# The config's `log_file`, once the config is read: hook messages go there too, because
# slurmd throws a hook's stderr away and a node may have no syslog (/dev/log).
_log_file: Optional[str] = None


def _setup_logging() -> None:
    """stderr always; syslog (/dev/log) when there is one; the config's `log_file` when set.
    Hooks have no journal of their own: slurmd keeps only the exit status. Called on the
    first message only (LazyLogger)."""
    import logging

    log = logging.getLogger("efajob")
    log.setLevel(logging.INFO)
    log.propagate = False
    fmt = logging.Formatter("efajob-hook[%(process)d]: %(message)s")
    err = logging.StreamHandler(sys.stderr)
    err.setFormatter(fmt)
    err.setLevel(logging.WARNING)
    log.addHandler(err)
    if os.path.exists("/dev/log"):
        log.addHandler(_lazy_syslog_class()(fmt))
    if _log_file:
        try:
            from logging.handlers import WatchedFileHandler  # survives logrotate

            fh = WatchedFileHandler(_log_file)
            fh.setFormatter(logging.Formatter(
                "%(asctime)s efajob-hook[%(process)d] %(levelname)s %(message)s"))
            fh.setLevel(logging.WARNING)
            log.addHandler(fh)
        except OSError as e:
            log.warning("cannot open log_file %s: %s", _log_file, e.strerror)


def _lazy_syslog_class() -> Callable[[logging.Formatter], logging.Handler]:
    import logging

    class LazySyslog(logging.Handler):
        """Connects to /dev/log on the first message it is given (importing logging.handlers
        and socket costs a few ms)."""

        def __init__(self, fmt):
            super().__init__(logging.WARNING)
            self.setFormatter(fmt)
            self._h = None

        def emit(self, record):
            try:
                if self._h is None:
                    from logging.handlers import SysLogHandler

                    self._h = SysLogHandler("/dev/log", SysLogHandler.LOG_DAEMON)
                    self._h.setFormatter(self.formatter)
                self._h.emit(record)
            except Exception:  # noqa: BLE001 - no syslog: stderr still has it
                pass

    return LazySyslog


def main(argv: Optional[List[str]] = None) -> int:
    """Always returns 0 (`sys.exit(main())`): a failing hook would drain the node."""
    argv = sys.argv[1:] if argv is None else argv
    from efajob.hooks.runfiles import LazyLogger

    LazyLogger.on_first_use = _setup_logging
    log = LazyLogger("efajob.hook")
    what = argv[0] if argv else ""
    job = os.environ.get("SLURM_JOB_ID", "?")
    job = job if len(job) <= 32 and job.isprintable() else repr(job[:32])
    if what not in ("prolog", "epilog"):
        log.error("%s (got %r)", USAGE, " ".join(argv)[:80])
        return 0
    try:
        from efajob.config import load_config

        cfg = load_config(node=os.environ.get("SLURMD_NODENAME") or None)
        global _log_file
        _log_file = cfg.log_file
        if what == "prolog":
            run_prolog(cfg, os.environ)
        else:
            path = run_epilog(cfg, os.environ)
            from efajob.hooks.outbox import daemon_alive

            if not daemon_alive(cfg):
                if deliver_detached(cfg, cfg.hook_wait, first=os.path.basename(path)) is False:
                    log.warning("%s job %s: record not in the job store %s yet (slow or "
                                "backing off); it stays in the outbox until it lands",
                                what, job, cfg.store)
    except Exception as e:  # noqa: BLE001 - the whole point: never fail the job or the node
        if isinstance(e, OSError) and e.strerror:
            msg = f"{e.strerror}: {e.filename}" if e.filename else e.strerror
        else:
            msg = str(e)
        log.error("%s job %s failed: %s: %s", what, job, type(e).__name__, msg)
    return 0


if __name__ == "__main__":  # `python -m efajob.hooks.entry prolog`
    sys.exit(main())
