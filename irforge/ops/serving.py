"""Served indexes: immutable versions and an atomically switched pointer, outside DVC's outputs.

Layout, per system (``serve/<system>/``)::

    versions/v000001/   index/ (Lucene), chunks.parquet, quarantine.parquet, manifest.json
    versions/v000002/   ...
    served -> versions/v000002      (a symlink, replaced with one rename)

A version is built in a hidden temporary folder and renamed into ``versions/`` only once complete; the
``served`` link is then swapped with ``os.replace``, which is atomic on POSIX. A reader resolves the link
once (:func:`served_dir`) and keeps a complete, never-modified folder even while a new version goes live.
Older versions are kept (``reindex.keep``) for :func:`rollback`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from irforge.contract import owned

log = logging.getLogger(__name__)

SERVE = "serve"  # served versions live here, outside DVC's outputs (kept across runs)
MANIFEST = "manifest.json"
_VERSION = re.compile(r"^v(\d{6})$")


class ServeError(RuntimeError):
    pass


def system_dir(root: Path | str, system: str) -> Path:
    return Path(root) / SERVE / system


def _pointer(root: Path | str, system: str) -> Path:
    return system_dir(root, system) / "served"


def versions(root: Path | str, system: str) -> list[str]:
    """Complete versions, oldest first."""
    folder = system_dir(root, system) / "versions"
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if _VERSION.match(p.name) and (p / MANIFEST).exists())


def manifest(root: Path | str, system: str, version: str) -> dict[str, Any]:
    return json.loads((system_dir(root, system) / "versions" / version / MANIFEST).read_text())


def served_version(root: Path | str, system: str) -> str | None:
    link = _pointer(root, system)
    return Path(os.readlink(link)).name if link.is_symlink() else None


def served_dir(root: Path | str, system: str) -> Path:
    """The served version's folder, resolved once: what a reader opens (``<dir>/index``)."""
    version = served_version(root, system)
    if version is None:
        raise ServeError(f"nothing is served as '{system}' yet (no {_pointer(root, system)}): run `irforge publish` "
                         "to serve the experiment's best system (after `make repro`), then search it; "
                         "`irforge reindex` keeps a published system fresh")
    return system_dir(root, system) / "versions" / version


@contextlib.contextmanager
def exclusive(root: Path | str, system: str) -> Iterator[None]:
    """Hold the system's re-index lock (one refresh at a time, e.g. a cron tick overlapping a manual run)."""
    import fcntl

    folder = system_dir(root, system)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ServeError(f"another re-index of '{system}' is running (lock {folder / '.lock'})") from None
        yield  # the lock goes with the file descriptor, also when the process is killed


def begin_version(root: Path | str, system: str) -> tuple[str, Path]:
    """The next version's name and a hidden temporary folder to build it in."""
    folder = system_dir(root, system) / "versions"
    folder.mkdir(parents=True, exist_ok=True)
    taken = [int(m.group(1)) for p in folder.iterdir() if (m := _VERSION.match(p.name))]
    name = f"v{max(taken, default=0) + 1:06d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=folder))
    tmp.chmod(0o755)  # mkdtemp makes it private; a served version is read by other users
    return name, tmp


def commit_version(root: Path | str, system: str, name: str, tmp: Path) -> Path:
    """Rename a fully built version folder (manifest written last) into ``versions/``."""
    if not (tmp / MANIFEST).exists():
        raise ServeError(f"version {name} was built without a {MANIFEST}")
    target = system_dir(root, system) / "versions" / name
    owned.rename(tmp, target)  # fails rather than overwrite if a concurrent run took the same name
    return target


def switch(root: Path | str, system: str, version: str) -> None:
    """Point ``served`` at ``version`` with one atomic rename."""
    target = system_dir(root, system) / "versions" / version
    if not (target / MANIFEST).exists():
        raise ServeError(f"no complete version '{version}' for '{system}' (have: {', '.join(versions(root, system)) or 'none'})")
    link = _pointer(root, system)
    owned.symlink(f"versions/{version}", link)  # one rename over the old link
    log.info("serving %s %s", system, version)


def rollback(root: Path | str, system: str, to: str | None = None) -> str:
    """Serve ``to``, or the version the served one was built from; returns the version now served."""
    current = served_version(root, system)
    if to is None:
        if current is None:
            raise ServeError(f"nothing is served for '{system}', nothing to roll back")
        to = manifest(root, system, current).get("served_before")
        if not to or to not in versions(root, system):
            raise ServeError(f"{system} {current}: no earlier served version is kept to roll back to")
    switch(root, system, to)
    return to


def prune(root: Path | str, system: str, keep: int) -> list[str]:
    """Delete the oldest versions beyond ``keep``, never the served one nor the one it would roll back to."""
    current = served_version(root, system)
    protected = {current, manifest(root, system, current).get("served_before") if current else None}
    removed = []
    for version in versions(root, system)[: max(0, len(versions(root, system)) - keep)]:
        if version not in protected:
            owned.remove(system_dir(root, system) / "versions" / version)
            removed.append(version)
    return removed
