"""Atomic directory and file writes, and temporary directories that outlive no one.

A single file is written with :func:`write_atomic`: into a hidden temporary sibling, then renamed.

A dataset (or one object of it) is written into a hidden temporary sibling ``OUT.tmp-xxxxxxxx`` and renamed
to ``OUT`` only when complete, so an interrupted run never leaves something that looks finished. Readers
skip ``*.tmp-*`` folders. Renames within one parent directory are atomic on POSIX file systems.

A process holds each temporary directory it works in with an exclusive ``flock`` (:func:`held_directory`); the
kernel drops the lock when the process dies, however it dies. So a directory nobody holds is the leftover of a
killed process, and :func:`remove_stale` deletes exactly those: the next ``data synth`` to the same ``OUT``
removes what a ``kill -9`` left, and the web server does the same with its results directories. (Where ``flock``
does not exist, nothing is held and nothing is removed.)
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from novelview.errors import DataError

try:
    import fcntl
except ImportError:  # not POSIX
    fcntl = None  # type: ignore[assignment]

TMP_MARKER = ".tmp-"


def is_temporary(path: Path) -> bool:
    """True for the leftovers of an unfinished atomic write (``NAME.tmp-xxxx`` / ``NAME.old-xxxx``)."""
    return TMP_MARKER in path.name or ".old-" in path.name


def is_nonempty_dir(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


def check_writable_target(out: Path, overwrite: bool) -> None:
    """Refuse to replace an existing non-empty ``out`` unless ``overwrite`` (raise DataError); even then, only
    a dataset we wrote (it has a ``dataset.json``) is replaced, never a folder of anything else."""
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a directory")
    if is_nonempty_dir(out):
        if not overwrite:
            raise DataError(f"{out}: output directory exists and is not empty (pass --overwrite to replace it)")
        if not written_by_novelview(out):
            raise DataError(f"{out}: not a dataset written by novelview (no dataset.json naming it), so --overwrite "
                            "will not delete it; choose another folder or remove it yourself")


def written_by_novelview(folder: Path) -> bool:
    """Whether ``folder`` holds a dataset our generators wrote (its ``dataset.json`` says so)."""
    try:
        info = json.loads((folder / "dataset.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and str(info.get("generator", "")).startswith("novelview")


@contextmanager
def atomic_directory(out: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary directory next to ``out``; on success it replaces ``out`` in one rename.

    On an exception the temporary directory is removed and ``out`` is left untouched. An existing non-empty
    ``out`` is refused up front unless ``overwrite`` is true.
    """
    out = Path(out)
    check_writable_target(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(p for p in out.parent.iterdir() if p.name.startswith(f"{out.name}{TMP_MARKER}"))
    held = held_directory(out.parent, f"{out.name}{TMP_MARKER}")
    try:
        try:
            yield held.path
        except BaseException:
            shutil.rmtree(held.path, ignore_errors=True)
            raise
        _replace_directory(held.path, out)
    finally:
        held.release()  # after the rename: the lock is on the directory itself, whatever its name


def _replace_directory(src: Path, dst: Path) -> None:
    if not dst.exists():
        os.rename(src, dst)
        return
    # Move the old directory aside first so that dst is never missing its complete contents for long and
    # is never a mixture of old and new.
    old = dst.with_name(f"{dst.name}.old-{secrets.token_hex(4)}")
    os.rename(dst, old)
    try:
        os.rename(src, dst)
    except BaseException:
        os.rename(old, dst)
        raise
    shutil.rmtree(old, ignore_errors=True)


class HeldDirectory:
    """A directory this process holds (see the module docstring) until :meth:`release` or its death."""

    def __init__(self, path: Path, fd: int | None) -> None:
        self.path = path
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _lock(path: Path) -> int | None:
    """A descriptor of directory ``path`` holding its exclusive lock, or None while another process holds it."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def held_directory(parent: str | os.PathLike, prefix: str, mode: int = 0o777) -> HeldDirectory:
    """Create ``parent/<prefix><random hex>`` (permissions ``mode`` less the umask) and hold it."""
    parent = Path(parent)
    while True:
        path = parent / f"{prefix}{secrets.token_hex(4)}"
        try:
            path.mkdir(mode=mode)
        except FileExistsError:
            continue
        if fcntl is None:
            return HeldDirectory(path, None)
        try:
            fd = _lock(path)
            # A concurrent remove_stale may have taken the new directory for a leftover before it was locked.
            if fd is not None and not os.path.samestat(os.fstat(fd), os.stat(path)):
                os.close(fd)
                fd = None
        except FileNotFoundError:
            fd = None
        if fd is not None:
            return HeldDirectory(path, fd)


def remove_stale(candidates: Iterable[Path]) -> list[Path]:
    """Delete the directories among ``candidates`` that this user owns and no living process holds."""
    removed: list[Path] = []
    if fcntl is None:
        return removed
    for path in candidates:
        try:
            if path.is_symlink() or not path.is_dir() or path.stat().st_uid != os.getuid():
                continue
            fd = _lock(path)
        except OSError:  # gone meanwhile, or not ours to open
            continue
        if fd is None:
            continue
        try:
            shutil.rmtree(path, ignore_errors=True)
        finally:
            os.close(fd)
        removed.append(path)
    return removed


def write_atomic(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a hidden temporary sibling of ``path``, then rename it to ``path``: a reader never
    sees half a file, and a failed write leaves nothing behind. The temporary name keeps ``path``'s suffix, so
    writers that choose the format by it (PIL, ffmpeg) choose the right one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}{TMP_MARKER}{secrets.token_hex(4)}{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write a text file atomically (see :func:`write_atomic`)."""
    return write_atomic(path, lambda tmp: tmp.write_text(text))


__all__ = [
    "HeldDirectory",
    "atomic_directory",
    "check_writable_target",
    "held_directory",
    "is_temporary",
    "remove_stale",
    "write_atomic",
    "write_text_atomic",
]
