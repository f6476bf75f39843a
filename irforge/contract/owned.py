"""The one way irforge deletes or replaces anything: only inside the folders it owns.

irforge owns the folders a project run makes (``artifacts/``, ``runs/``, ``serve/``, the row cache, the
generated ``dvc.yaml``), the temporary folders it makes itself (:func:`temp_dir`), and an output a user names on
the command line for irforge to write (``judge import --out``). Everything else (the corpus, the judgments, a
model folder, the user's home) is read where it is and never removed, replaced or linked over, however its path is
written: absolute, relative, or through a symlink. Every ``rmtree``, ``unlink``, rename-over and symlink swap in
the code goes through this module, which resolves the path's folder (symlinks and ``..`` included) and refuses,
naming the path, when it is not strictly inside a claimed folder. A symlink is removed as a link: the guard
looks at where the link lives, and never follows it into what it points at.

A project's folders are claimed when its config is loaded or one of its stages runs (:func:`claim_project`); a
test or a script claims what it makes with :func:`claim`.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

ARTIFACTS, RUNS, SERVE = "artifacts", "runs", "serve"
GENERATED_FILES = ("dvc.yaml",)  # written by `irforge dag --write`, replaced on every rewrite

# claimed path -> whether the path itself may go too (a temporary folder, a generated file), or only what is inside
_claimed: dict[Path, bool] = {}
_lock = threading.Lock()


class NotOwnedError(PermissionError):
    """A delete or replace aimed at a path outside the folders irforge owns."""


def where(path: Path | str) -> Path:
    """Where ``path`` really lives: its folder resolved (symlinks, ``..``), its own name kept, so a symlink
    stands for the link itself and not its target."""
    path = Path(os.path.abspath(path))
    return path.parent.resolve() / path.name


def claim(*paths: Path | str, itself: bool = False) -> None:
    """Let irforge delete and replace inside these folders; with ``itself``, the paths themselves too."""
    with _lock:
        for p in paths:
            resolved = Path(p).resolve()
            _claimed[resolved] = _claimed.get(resolved, False) or itself


def claim_project(root: Path | str, cache_dir: Path | str | None = None) -> None:
    """Claim a project's run folders: ``artifacts/``, ``runs/``, ``serve/``, the row cache and ``dvc.yaml``.
    ``cache_dir`` may be absolute (it is then claimed where it is)."""
    root = Path(root)
    claim(root / ARTIFACTS, root / RUNS, root / SERVE)
    claim(*(root / f for f in GENERATED_FILES), itself=True)
    if cache_dir is not None:
        cache = (root / cache_dir).resolve()  # an absolute cache_dir stays absolute under '/'
        if root.resolve().is_relative_to(cache) or cache in (Path(cache.anchor), Path.home().resolve()):
            raise NotOwnedError(f"runtime.cache_dir {cache_dir} would make {cache} irforge's to write and delete in, "
                                f"and it holds the project or the user's files; give the row cache a folder of its own")
        claim(cache)


def claimed() -> list[Path]:
    with _lock:
        return sorted(_claimed)


def owner(path: Path | str) -> Path | None:
    """The claimed path that makes ``path`` irforge's to delete or replace, or None. A claimed folder itself
    is never removed (``artifacts/`` holds every stage's outputs), only what is inside it."""
    location = where(path)
    with _lock:
        claims = list(_claimed.items())
    for root, itself in claims:
        if location.is_relative_to(root) and (itself or location != root):
            return root
        if itself and location.parent == root.parent and location.name.startswith(f".{root.name}."):
            return root  # a claimed path's own temporaries beside it (.dvc.yaml.tmp-123)
    return None


def check(path: Path | str, action: str) -> Path:
    """``path`` if irforge may ``action`` it; otherwise :class:`NotOwnedError` naming the path."""
    if owner(path) is None:
        roots = claimed()
        roots = ", ".join(str(r) for r in roots[:6]) + (f" and {len(roots) - 6} more" if len(roots) > 6 else "") \
            if roots else "none claimed in this process"
        raise NotOwnedError(f"refusing to {action} {path} (at {where(path)}): it is outside the folders irforge owns "
                            f"({roots}); irforge never deletes or replaces a file it did not make")
    return Path(path)


def remove(path: Path | str) -> bool:
    """Delete a file, a symlink (the link, not its target) or a folder tree; False when nothing was there."""
    path = check(path, "delete")  # also when nothing is there: a bad path is a bug to see, not to skip
    if not path.exists() and not path.is_symlink():
        return False
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)
    return True


def replace(src: Path | str, dst: Path | str) -> None:
    """``os.replace``: ``src`` takes the place of ``dst`` (whatever was at ``dst`` goes); both must be ours."""
    check(src, "move")
    check(dst, "replace")
    os.replace(src, dst)


def rename(src: Path | str, dst: Path | str) -> None:
    """``os.rename`` into a new name (fails rather than replace an existing folder); both must be ours."""
    check(src, "move")
    check(dst, "create")
    os.rename(src, dst)


_RENAMEAT2 = None


def exchange(a: Path | str, b: Path | str) -> bool:
    """Atomically swap two paths (Linux ``renameat2(RENAME_EXCHANGE)``); False where it is not available."""
    global _RENAMEAT2
    check(a, "swap")
    check(b, "swap")
    if _RENAMEAT2 is None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            _RENAMEAT2 = libc.renameat2
            _RENAMEAT2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        except (OSError, AttributeError):
            _RENAMEAT2 = False
    if not _RENAMEAT2:
        return False
    at_cwd, rename_exchange = -100, 2  # AT_FDCWD, RENAME_EXCHANGE
    return _RENAMEAT2(at_cwd, os.fsencode(a), at_cwd, os.fsencode(b), rename_exchange) == 0


def symlink(target: Path | str, link: Path | str) -> None:
    """Make ``link`` a symlink to ``target``, replacing what was at ``link`` (one rename for a file or link; a
    folder is removed first). Only ``link`` must be ours: ``target`` is pointed at, never touched."""
    link = Path(link)
    check(link, "replace")
    if link.is_dir() and not link.is_symlink():
        remove(link)
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = link.with_name(f".{link.name}.link-{os.getpid()}")
    remove(tmp)
    os.symlink(target, tmp)
    replace(tmp, link)


@contextlib.contextmanager
def temp_dir(prefix: str = "irforge-", parent: Path | str | None = None) -> Iterator[Path]:
    """A new temporary folder (in ``parent``, or the system's temp folder), claimed, removed on exit."""
    folder = make_temp_dir(prefix, parent)
    try:
        yield folder
    finally:
        remove(folder)
        release(folder)


def make_temp_dir(prefix: str = "irforge-", parent: Path | str | None = None) -> Path:
    """A new temporary folder that irforge may remove (``mkdtemp`` made it: nobody else's)."""
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    claim(folder, itself=True)
    return folder


def release(*paths: Path | str) -> None:
    """Forget claims (a test that checks the guard, a script done with a folder)."""
    with _lock:
        for p in paths:
            _claimed.pop(Path(p).resolve(), None)
