"""The job index file: schema, opening (one writer, read-only readers), rows in and out.

A SQLite file on the head node's local disk (config `index_path`, default
`<state_dir>/jobindex.db`), never on the shared store: SQLite's locking is unreliable over NFS,
and the index has exactly one writer (`efajob index update|rebuild`), serialised by an
exclusive flock on `<index>.lock` held for the whole run. The rollback journal (not WAL) keeps
the readers' side simple: they open `mode=ro` and need no write access to the directory (a
WAL reader must create the `-shm` file). `rebuild` writes a new file beside the old one and
renames it into place, so a reader sees the old index or the new one, never half of one.

Versioned with `PRAGMA user_version`. The writer migrates an older version in place
(`MIGRATIONS`); any other version is a JobIndexError saying to rebuild (the index holds
nothing the store does not, except job names from Slurm, which a rebuild keeps).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
from typing import Iterator, List, Optional, Sequence, Tuple

from efajob.errors import JobIndexError
from efajob.report.jobfilter import JobFilter

VERSION = 4
# One row per job whose summary `efajob accounting sync` handled: the landing time of the
# row it wrote (a job re-indexed later is written again), what came of it, and when to look
# again (0: never; a job not yet in slurmdbd, or an error, is retried).
ACCT_TABLE = ("CREATE TABLE IF NOT EXISTS acct (cluster TEXT NOT NULL, job_id TEXT NOT NULL, "
              "landed REAL NOT NULL, status TEXT NOT NULL, at REAL NOT NULL, "
              "retry_at REAL NOT NULL, PRIMARY KEY (cluster, job_id)); ")
# Version -> the SQL that brings it to the next one, run by the writer (`efajob index update`).
MIGRATIONS = {
    # 2: `efajob compare` and `jobs --name` look rows up by name and user, and show the peak
    # (rows indexed before stay without one until their directory changes or a rebuild).
    # Retention (`efajob index prune`) weighs the store by the rows' `bytes`.
    1: "ALTER TABLE jobs ADD COLUMN peak_gbps_per_node REAL; "
       "ALTER TABLE jobs ADD COLUMN bytes INTEGER; "
       "CREATE INDEX IF NOT EXISTS jobs_name ON jobs (name, user, landed DESC);",
    # 3: the node_jobs table (`efajob nodes`). Rows come as directories are (re)indexed: jobs
    # indexed before the migration have none until `efajob index rebuild` (docs/fabric.md).
    2: "CREATE TABLE IF NOT EXISTS node_jobs (cluster TEXT NOT NULL, node TEXT NOT NULL, "
       "job_id TEXT NOT NULL, restart INTEGER NOT NULL, \"end\" REAL, num_nodes INTEGER, "
       "codes TEXT NOT NULL, PRIMARY KEY (cluster, job_id, restart, node)); "
       "CREATE INDEX IF NOT EXISTS node_jobs_end ON node_jobs (\"end\");",
    # 4: which jobs' summaries are in Slurm's accounting (efajob/accounting/), and the
    # indexes `efajob jobs -A` and `-N` look rows up by.
    3: ACCT_TABLE + "CREATE INDEX IF NOT EXISTS jobs_account ON jobs (account, landed DESC); "
       "CREATE INDEX IF NOT EXISTS node_jobs_node ON node_jobs (node, job_id);",
}
TIMEOUT = 10.0  # seconds a reader waits for the writer's lock (a commit takes milliseconds)
# The columns of `efajob jobs` rows kept in the index, in table order (`findings` as JSON).
COLUMNS = ("cluster", "job_id", "restart", "alias", "user", "account", "partition", "name",
           "state", "num_nodes", "start", "end", "elapsed_s", "tx_bytes", "rx_bytes",
           "avg_gbps_per_node", "verdict", "findings", "peak_gbps_per_node")
_SCHEMA = f"""
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE jobs (
    cluster TEXT NOT NULL, job_id TEXT NOT NULL, restart INTEGER NOT NULL, alias TEXT,
    user TEXT, account TEXT, partition TEXT, name TEXT, state TEXT, num_nodes INTEGER,
    start REAL, "end" REAL, elapsed_s REAL, tx_bytes INTEGER, rx_bytes INTEGER,
    avg_gbps_per_node REAL, verdict TEXT, findings TEXT,
    records INTEGER NOT NULL,  -- record files behind the row
    latest INTEGER NOT NULL,   -- 1: the job's newest restart (what `efajob jobs` lists)
    landed REAL NOT NULL,      -- the job directory's mtime: when its last record arrived
    job_num INTEGER NOT NULL,  -- the id's leading number, for the listing's order
    peak_gbps_per_node REAL,   -- version 2: after the others, where a migration adds them
    bytes INTEGER,             -- version 2: the size of the record files behind the row
    PRIMARY KEY (cluster, job_id, restart));
CREATE INDEX jobs_recent ON jobs (latest, landed DESC);
CREATE INDEX jobs_user ON jobs (user, landed DESC);
CREATE INDEX jobs_name ON jobs (name, user, landed DESC);
-- Job directories seen, with the mtime indexed; `settled` ones are not stat'ed again.
CREATE TABLE dirs (cluster TEXT NOT NULL, job_id TEXT NOT NULL, mtime REAL NOT NULL,
                   settled INTEGER NOT NULL, PRIMARY KEY (cluster, job_id));
CREATE INDEX dirs_open ON dirs (settled);
-- One row per node per job run: the finding codes (warning, critical) the job's report put on
-- that node, for `efajob nodes` (efajob/fabric/, docs/fabric.md). `codes` space-separated.
CREATE TABLE node_jobs (cluster TEXT NOT NULL, node TEXT NOT NULL, job_id TEXT NOT NULL,
                        restart INTEGER NOT NULL, "end" REAL, num_nodes INTEGER,
                        codes TEXT NOT NULL, PRIMARY KEY (cluster, job_id, restart, node));
CREATE INDEX node_jobs_end ON node_jobs ("end");
CREATE INDEX node_jobs_node ON node_jobs (node, job_id);
CREATE INDEX jobs_account ON jobs (account, landed DESC);
{ACCT_TABLE}
PRAGMA user_version = {VERSION};
"""


def _check_version(conn: sqlite3.Connection, path: str) -> None:
    v = conn.execute("PRAGMA user_version").fetchone()[0]
    if v != VERSION:
        fix = "`efajob index update` migrates it" if v in MIGRATIONS else "run `efajob index rebuild`"
        raise JobIndexError(f"job index {path} has version {v}, this efajob reads {VERSION}: {fix}")


def _migrate(conn: sqlite3.Connection) -> None:
    v = conn.execute("PRAGMA user_version").fetchone()[0]
    while v in MIGRATIONS:
        with conn:
            conn.executescript(f"BEGIN; {MIGRATIONS[v]} PRAGMA user_version = {v + 1}; COMMIT;")
        v += 1


def open_reader(path: str) -> sqlite3.Connection:
    """The index, read-only. JobIndexError when it is missing, unreadable or of another
    version (the caller falls back to scanning the store)."""
    if not os.path.exists(path):
        raise JobIndexError(f"no job index at {path} (`efajob index rebuild` makes one)")
    try:
        conn = sqlite3.connect(f"file:{_quote(path)}?mode=ro", uri=True, timeout=TIMEOUT)
        _check_version(conn, path)
    except sqlite3.Error as e:
        raise JobIndexError(f"cannot read the job index {path}: {e}") from None
    return conn


def open_store_reader(path: str, store: str) -> sqlite3.Connection:
    """open_reader, and a JobIndexError when the index was built from another store (a config
    pointing two stores at one index path would otherwise list the wrong jobs)."""
    conn = open_reader(path)
    indexed = get_meta(conn, "store")
    if indexed != os.path.abspath(store):
        conn.close()
        raise JobIndexError(f"the job index {path} is of the store {indexed}, not {store}")
    return conn


def _quote(path: str) -> str:
    from urllib.parse import quote

    return quote(os.path.abspath(path))


def create(path: str, mode: int) -> sqlite3.Connection:
    """A new, empty index file at `path` (which must not exist), chmod `mode`."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    os.fchmod(fd, mode)  # whatever the umask: 0600 under private_records
    os.close(fd)
    conn = sqlite3.connect(path, timeout=TIMEOUT)
    conn.executescript(_SCHEMA)
    _writer_pragmas(conn)
    return conn


def _writer_pragmas(conn: sqlite3.Connection) -> None:
    # A transaction whose pages outgrow the cache spills them into the file early, taking the
    # exclusive lock and blocking readers until the commit; 64 MB holds an update of ~100,000
    # rows (a first `update` of a big store; `rebuild` writes another file anyway).
    conn.execute("PRAGMA cache_size = -65536")


def open_writer(path: str) -> sqlite3.Connection:
    """The index for writing; JobIndexError if it is of another version."""
    try:
        conn = sqlite3.connect(path, timeout=TIMEOUT)
        _migrate(conn)
        _check_version(conn, path)
        _writer_pragmas(conn)
    except sqlite3.Error as e:
        raise JobIndexError(f"cannot open the job index {path}: {e}") from None
    return conn


@contextlib.contextmanager
def writer_lock(path: str) -> Iterator[None]:
    """The one-writer rule: an exclusive flock on `<index>.lock`, not waited for (a second
    `efajob index update` while one runs has nothing to add: JobIndexError, exit 4)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise JobIndexError(f"another `efajob index` is writing {path}") from None
        yield
    finally:
        os.close(fd)


def read_names(path: str) -> List[Tuple[str, str, int, str]]:
    """(cluster, job_id, restart, name) of the named rows of the index at `path`, of any
    version that has them (a rebuild keeps Slurm's names); [] when there is none."""
    if not os.path.exists(path):
        return []
    try:
        conn = sqlite3.connect(f"file:{_quote(path)}?mode=ro", uri=True, timeout=TIMEOUT)
        try:
            return conn.execute("SELECT cluster, job_id, restart, name FROM jobs "
                                "WHERE name IS NOT NULL").fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return []  # unreadable, or no such table: nothing to keep


def get_meta(conn: sqlite3.Connection, key: str) -> Optional[str]:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else row[0]


def set_meta(conn: sqlite3.Connection, key: str, value: str) -> None:
    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))


# By name: a migrated table has its columns in another order than a new one.
_NAMES = ", ".join('"' + c + '"' for c in COLUMNS)  # quoted: "end" is a keyword
INSERT = (f"INSERT INTO jobs ({_NAMES}, records, latest, landed, job_num, bytes) "
          f"VALUES ({', '.join('?' * (len(COLUMNS) + 5))})")


def to_db(row: dict, *, records: int, latest: bool, landed: float,
          nbytes: Optional[int] = None) -> Tuple:
    """An `efajob jobs` row (assemble.jobs_row) -> the table's values."""
    values = [row.get(c) for c in COLUMNS]
    values[COLUMNS.index("findings")] = json.dumps(row.get("findings") or [])
    num = row["job_id"].split("_")[0].split("+")[0]
    return (*values, records, int(latest), landed, int(num) if num.isdigit() else 0, nbytes)


def from_db(values: Sequence) -> dict:
    row = dict(zip(COLUMNS, values))
    row["findings"] = json.loads(row["findings"] or "[]")
    row["running"] = False
    return row


def query(conn: sqlite3.Connection, flt: JobFilter, *, limit: int,
          cluster: Optional[str] = None, since: Optional[float] = None) -> List[dict]:
    """The newest `limit` rows (the latest restart of each job) that `flt` keeps, in the
    scan's order: by landing time, newest first. The filter is SQL here; JobFilter.match is
    the same rule for the scan (tests/test_jobindex.py checks both agree)."""
    where, args = ["latest = 1"], []  # type: Tuple[List[str], List[object]]
    for col, values in (("user", flt.users), ("account", flt.accounts),
                        ("partition", flt.partitions),
                        ("state", flt.states), ("name", flt.names),
                        ("cluster", {cluster} if cluster else set())):
        if values:
            where.append(f"{col} IN ({', '.join('?' * len(values))})")
            args.extend(sorted(values))
    if flt.nodes:  # node_jobs holds the nodes with data of each run
        where.append("EXISTS (SELECT 1 FROM node_jobs n WHERE n.cluster = jobs.cluster AND "
                     "n.job_id = jobs.job_id AND n.restart = jobs.restart AND n.node IN "
                     f"({', '.join('?' * len(flt.nodes))}))")
        args.extend(sorted(flt.nodes))
    if flt.start is not None:
        where.append('("end" IS NULL OR "end" >= ?)')
        args.append(flt.start)
    if flt.end is not None:
        where.append("(start IS NULL OR start <= ?)")
        args.append(flt.end)
    if since is not None:  # the scan's --since: ended (or started) after it
        where.append('(COALESCE("end", start) IS NULL OR COALESCE("end", start) >= ?)')
        args.append(since)
    cols = ", ".join(f'"{c}"' for c in COLUMNS)
    sql = (f"SELECT {cols} FROM jobs WHERE {' AND '.join(where)} "
           "ORDER BY landed DESC, cluster, job_num, job_id LIMIT ?")
    try:
        return [from_db(v) for v in conn.execute(sql, (*args, limit))]
    except sqlite3.Error as e:
        raise JobIndexError(f"job index query failed: {e}") from None


NODE_JOB_COLUMNS = ("cluster", "node", "job_id", "restart", "end", "num_nodes", "codes")


def query_node_jobs(conn: sqlite3.Connection, *, since: Optional[float] = None,
                    cluster: Optional[str] = None, marked_only: bool = False) -> List[Tuple]:
    """node_jobs rows (NODE_JOB_COLUMNS, codes a space-separated string) of the runs that ended
    at or after `since` (or whose end is unknown); `marked_only`: those with a code."""
    where, args = _node_where(since, cluster)
    if marked_only:
        where.append("codes != ''")
    cols = ", ".join(f'"{c}"' for c in NODE_JOB_COLUMNS)
    return _fetch(conn, f"SELECT {cols} FROM node_jobs WHERE {' AND '.join(where)}", args)


def count_node_jobs(conn: sqlite3.Connection, *, since: Optional[float] = None,
                    cluster: Optional[str] = None) -> List[Tuple]:
    """(cluster, node, runs, multi-node runs) per node, as query_node_jobs selects them."""
    where, args = _node_where(since, cluster)
    return _fetch(conn, "SELECT cluster, node, COUNT(*), SUM(num_nodes IS NULL OR num_nodes > 1) "
                  f"FROM node_jobs WHERE {' AND '.join(where)} GROUP BY cluster, node", args)


def _node_where(since: Optional[float], cluster: Optional[str]) -> Tuple[List[str], List[object]]:
    where, args = ["1"], []  # type: Tuple[List[str], List[object]]
    if since is not None:
        where.append('("end" IS NULL OR "end" >= ?)')
        args.append(since)
    if cluster:
        where.append("cluster = ?")
        args.append(cluster)
    return where, args


def _fetch(conn: sqlite3.Connection, sql: str, args: Sequence[object]) -> List[Tuple]:
    try:
        return conn.execute(sql, args).fetchall()
    except sqlite3.Error as e:
        raise JobIndexError(f"job index query failed: {e}") from None
