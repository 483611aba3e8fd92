"""Files replaced whole: a temp file in the same directory, then rename(2), so a reader sees
the old file, the new one or none, never half of one. Temp files start with "." (readers of
the run dir, the outbox and the job store skip those).

On the hook import path: standard library only.
"""
from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional

FILE_MODE = 0o644


def atomic_write(path: str, data: bytes, *, mode: int = FILE_MODE, fsync: bool = False,
                 uid: Optional[int] = None, gid: Optional[int] = None) -> None:
    """Write `data` to `path` through a temp file in the same directory and rename(2).

    Either the whole new file is there afterwards or the old one (or nothing) is: on any error
    the temp file is removed and the OSError propagates. `fsync` makes it durable (the file and
    the directory entry) before returning: needed for the outbox and the job store, not /run.
    """
    d, base = os.path.split(path)
    tmp = os.path.join(d, f".{base}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fchmod(fd, mode)  # O_CREAT's mode is filtered by the umask
            if uid is not None or gid is not None:
                os.fchown(fd, -1 if uid is None else uid, -1 if gid is None else gid)
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if fsync:
        fsync_dir(d or ".")


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
