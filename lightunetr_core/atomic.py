"""Atomic output: write to a temporary file or folder beside the target, then rename it into place.

A reader (or a crash) never sees a half-written checkpoint, image, bundle or dataset: the target either
keeps its old content or gets the complete new one. Every writer of LightUNETR goes through here:
:func:`atomic_output` (a file handle), :func:`atomic_path` (a file name, for writers that open it
themselves, such as SimpleITK or Slicer's storage nodes) and :func:`atomic_folder` (a whole folder).
Temporary names start with a dot, so folder listings (the model library) skip them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """Open a temporary file next to ``path`` for writing; on success it is flushed, synced and renamed
    to ``path``; on any exception it is removed and ``path`` is left untouched.

    Args:
        path: final file name (its folder is created if needed).
        mode: ``"wb"`` or ``"w"``.
        encoding: text encoding for ``mode="w"`` (default UTF-8).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_output writes whole files: mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        text = mode == "w"
        with os.fdopen(fd, mode, encoding=(encoding or "utf-8") if text else None, newline="" if text else None) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_output(path, "w") as handle:
        handle.write(text)
    return Path(path)


def _sibling(path: Path, kind: str) -> Path:
    return path.parent / f".{kind}-{uuid.uuid4().hex[:12]}-{path.name}"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary file name beside ``path`` that keeps its name and ending (``.nii.gz``: writers choose the
    format from it); renamed to ``path`` when the block succeeds and wrote it, removed otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(path, "tmp")
    try:
        yield tmp
        if not tmp.is_file():
            raise OSError(f"{path}: nothing was written")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class AtomicFolder:
    """A folder filled over several steps (one case per timer tick, say) that becomes ``path`` only on
    :meth:`commit`: until then it is a hidden sibling, removed by :meth:`abort`."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = _sibling(self.path, "tmp")
        self.tmp.mkdir()

    def commit(self) -> Path:
        """Put the folder in place: an existing ``path`` is moved aside first, put back if the swap fails,
        and deleted once it succeeded."""
        old = None
        try:
            if self.path.exists():
                old = _sibling(self.path, "old")
                os.replace(self.path, old)
            os.replace(self.tmp, self.path)
        except BaseException:
            if old is not None and old.exists() and not self.path.exists():
                os.replace(old, self.path)
            self.abort()
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.path

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """An empty temporary folder beside ``path`` to fill in the block; it becomes ``path`` when the block
    succeeds (:meth:`AtomicFolder.commit`) and is removed, leaving ``path`` untouched, when it raises."""
    folder = AtomicFolder(path)
    try:
        yield folder.tmp
    except BaseException:
        folder.abort()
        raise
    folder.commit()
