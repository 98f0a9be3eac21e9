"""Atomic directory and file writes.

A dataset (or one object of it) is written into a hidden temporary sibling ``OUT.tmp-xxxxxxxx`` and renamed
to ``OUT`` only when complete, so an interrupted run never leaves something that looks finished. Readers
skip ``*.tmp-*`` folders. Renames within one parent directory are atomic on POSIX file systems.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from novelview.errors import DataError

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
    tmp = out.with_name(f"{out.name}{TMP_MARKER}{secrets.token_hex(4)}")
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _replace_directory(tmp, out)


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


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write a text file via a temporary sibling and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{TMP_MARKER}{secrets.token_hex(4)}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


__all__ = ["atomic_directory", "check_writable_target", "is_temporary", "write_text_atomic"]
