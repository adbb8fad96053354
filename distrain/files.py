"""Writing files atomically: a reader sees the old content or the whole new one."""
from __future__ import annotations

import os
import secrets
import shutil
from typing import Callable

from distrain.errors import UsageError

__all__ = ["write_atomically", "replace_atomically"]


def write_atomically(path: str, write: Callable) -> None:
    """Writes a file so that ``path`` holds the old or the whole new content, never a part.

    The content goes to a temporary file in the same directory, is flushed and fsynced,
    then renamed over ``path``; the directory is fsynced after. The file gets the usual
    permissions (0666 less the umask).

    Args:
        path: the file to write.
        write: called with the open binary file.

    Raises:
        UsageError: the file cannot be written (missing directory, no permission...).
    """
    def write_file(temporary: str) -> None:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
    _replace(path, write_file, "", fsync_file=False)


def replace_atomically(path: str, write_to: Callable[[str], None], suffix: str = "") -> None:
    """Has another writer (a library that takes a path) write one file, atomically.

    ``write_to`` writes a temporary file in the same directory as ``path``, named to end in
    ``suffix`` (for writers that choose the format by extension, e.g. ``.keras``); the file
    is fsynced and renamed over ``path``, and the directory fsynced after.

    Args:
        path: the file to write.
        write_to: called with the temporary path; must leave one regular file there.
        suffix: the ending the temporary name must keep.

    Raises:
        UsageError: the file cannot be written (missing directory, no permission...).
        ValueError: ``write_to`` left something other than one regular file.
    """
    _replace(path, write_to, suffix, fsync_file=True)


def _replace(path: str, write_to: Callable[[str], None], suffix: str,
             fsync_file: bool) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    temporary = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}."
                                        f"{secrets.token_hex(4)}.tmp{suffix}")
    try:
        try:
            write_to(temporary)
            if not os.path.isfile(temporary):
                raise ValueError(f"writing {path!r} left no single file to put in place; "
                                 f"use a single-file format")
            if fsync_file:
                fd = os.open(temporary, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            os.replace(temporary, path)
        except BaseException:
            if os.path.isdir(temporary):
                shutil.rmtree(temporary, ignore_errors=True)
            elif os.path.lexists(temporary):
                os.unlink(temporary)
            raise
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise UsageError(f"cannot write {path!r} ({exc.strerror or exc}); choose another "
                         f"path") from None
