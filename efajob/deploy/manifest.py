"""What `efajob install` wrote, so that `efajob uninstall` removes exactly that.

The manifest is `<state_dir>/installed.json`: one entry per file, with the SHA-256 of the
bytes written. A file whose bytes differ at uninstall time was edited by the admin since: it
is kept, and said so. Every path is the path on the target system; `root` (tests, image
builds) is prefixed to each when it is read or written, as DESTDIR is in `make install`, and
the files' contents still name the unprefixed paths.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

from efajob.errors import StoreError

MANIFEST_NAME = "installed.json"
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class FileSpec:
    """One file install writes: where on the target system, its bytes and mode, and which
    part of the installation it belongs to (hooks, systemd, dashboard, logrotate)."""

    path: str
    content: bytes
    mode: int
    component: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


@dataclass(frozen=True)
class Removal:
    """What uninstall does to one manifest entry: `remove`, `keep` (edited since install) or
    `gone` (already removed)."""

    path: str
    action: str
    component: str


def rooted(root: Optional[str], path: str) -> str:
    """`path` on the target system as seen from here (under `root` when given)."""
    return os.path.join(root, path.lstrip("/")) if root else path


def manifest_path(state_dir: str) -> str:
    return os.path.join(state_dir, MANIFEST_NAME)


def render_plan(specs: Sequence[FileSpec]) -> str:
    """A dry run's output: every file with its mode and content (pure)."""
    out = []
    for s in specs:
        text = s.content.decode("utf-8", "replace")
        out.append(f"--- would write {s.path} (mode {s.mode:04o}, {len(s.content)} bytes)\n{text}")
        if not text.endswith("\n"):
            out.append("\n")
    return "".join(out)


def read_manifest(path: str) -> Dict[str, dict]:
    """path -> entry; {} when there is no manifest. StoreError when it cannot be trusted."""
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read().decode("utf-8"))
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise StoreError(f"cannot read the install manifest {path}: {e.strerror}") from None
    except (UnicodeDecodeError, ValueError):
        raise StoreError(f"install manifest {path} is not valid JSON: remove what efajob "
                         "installed by hand, then the manifest") from None
    files = doc.get("files") if isinstance(doc, dict) else None
    if doc.get("version") != MANIFEST_VERSION or not isinstance(files, list) or not all(
            isinstance(e, dict) and isinstance(e.get("path"), str)
            and isinstance(e.get("sha256"), str) for e in files):
        raise StoreError(f"install manifest {path} has an unknown layout (version "
                         f"{doc.get('version')!r}, this efajob writes {MANIFEST_VERSION})")
    return {e["path"]: e for e in files}


def _write_manifest(path: str, entries: Dict[str, dict]) -> None:
    from efajob.hooks.runfiles import atomic_write, ensure_dir

    ensure_dir(os.path.dirname(path))
    doc = {"version": MANIFEST_VERSION, "files": [entries[p] for p in sorted(entries)]}
    atomic_write(path, (json.dumps(doc, indent=2) + "\n").encode(), fsync=True)


def install_files(specs: Sequence[FileSpec], *, state_dir: str,
                  root: Optional[str] = None) -> str:
    """Write every file (atomically, parent directories created 0755) and record it in the
    manifest. Each file is recorded just before it is written, so that no file efajob wrote
    can be missing from the manifest (a full state dir fails before the file is written);
    a file whose write fails is taken out of the record again. Returns the manifest's path.
    OSError propagates."""
    from efajob.hooks.runfiles import atomic_write, ensure_dir

    mpath = rooted(root, manifest_path(state_dir))
    entries = read_manifest(mpath)
    existed = os.path.exists(mpath)
    for s in specs:
        target = rooted(root, s.path)
        before = entries.get(s.path)
        entries[s.path] = {"path": s.path, "sha256": s.sha256, "mode": f"{s.mode:04o}",
                           "component": s.component}
        _write_manifest(mpath, entries)
        try:
            ensure_dir(os.path.dirname(target))
            atomic_write(target, s.content, mode=s.mode, fsync=True)
        except OSError:
            if before is None:
                entries.pop(s.path)
            else:
                entries[s.path] = before
            if entries or existed:
                _write_manifest(mpath, entries)
            else:
                os.unlink(mpath)
            raise
    return mpath


def _sha256_of(path: str) -> Optional[str]:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 16), b""):
                h.update(block)
    except FileNotFoundError:
        return None
    return h.hexdigest()


def plan_uninstall(entries: Dict[str, dict], root: Optional[str] = None) -> List[Removal]:
    """What uninstall would do to each recorded file (reads the files, changes nothing)."""
    out = []
    for path in sorted(entries):
        e = entries[path]
        try:
            digest = _sha256_of(rooted(root, path))
        except OSError as err:
            raise StoreError(f"cannot read {path}: {err.strerror}") from None
        action = "gone" if digest is None else "remove" if digest == e["sha256"] else "keep"
        out.append(Removal(path, action, str(e.get("component", "?"))))
    return out


def apply_uninstall(plan: Sequence[Removal], *, state_dir: str,
                    root: Optional[str] = None) -> None:
    """Remove the `remove` files; the manifest afterwards lists only the kept ones (or is
    removed when none is left), so running uninstall again says the same about them."""
    mpath = rooted(root, manifest_path(state_dir))
    entries = read_manifest(mpath)
    for r in plan:
        if r.action == "remove":
            try:
                os.unlink(rooted(root, r.path))
            except FileNotFoundError:
                pass
        if r.action != "keep":
            entries.pop(r.path, None)
    if entries:
        _write_manifest(mpath, entries)
    else:
        try:
            os.unlink(mpath)
        except FileNotFoundError:
            pass


def purge_targets(*, state_dir: str, run_dir: str) -> List[str]:
    """The data `--purge` removes: this node's state dir (local store, outbox, manifest, and a
    job store kept inside it) and run dir. A job store elsewhere is shared by every node and
    the head node (store_is_shared): never this node's to delete."""
    return [state_dir, run_dir]


def store_is_shared(*, state_dir: str, store: str) -> bool:
    """True unless the job store lives inside the state dir (then it is this node's own)."""
    return os.path.commonpath([os.path.abspath(store), os.path.abspath(state_dir)]) \
        != os.path.abspath(state_dir)


def purge(targets: Sequence[str], root: Optional[str] = None) -> List[str]:
    """Remove each existing target directory tree; returns those removed."""
    done = []
    for t in targets:
        p = rooted(root, t)
        if os.path.isdir(p):
            try:
                shutil.rmtree(p)
            except OSError as e:
                raise StoreError(f"cannot remove {t}: {e.strerror}") from None
            done.append(t)
    return done
