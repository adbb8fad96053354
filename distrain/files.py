"""Writing files atomically: a reader sees the old content or the whole new one."""
from __future__ import annotations

import os
import secrets
from typing import Callable

from distrain.errors import UsageError

__all__ = ["write_atomically"]


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
    directory = os.path.dirname(os.path.abspath(path))
    temporary = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}."
                                        f"{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "wb") as handle:
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        except BaseException:
            if os.path.exists(temporary):
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
