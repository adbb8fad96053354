"""What a killed Open MPI launcher leaves behind on this host, and removing it.

Open MPI 5's ``prterun`` and ``prted`` keep a session directory named after their pid in
``$TMPDIR`` (``ompi.PID``, ``prted.PID``), holding the PMIx rendezvous file of that pid. A
process killed with SIGKILL (as distrain-run does to a job that will not stop, or a host that
dies) leaves it there, and a later launcher that is given the same pid cannot write its own
rendezvous file: it fails at once with "The PMIx server's listener thread failed to start"
(exit code 213; openpmix issue #4022, fixed in PMIx 7, after the PMIx of Open MPI 5.0.x).
distrain-run removes such directories before and after every launch: those of a pid that no
longer runs, owned by this user, untouched for :data:`QUIET_SECONDS`.

Example:
    >>> sweep("/nonexistent")
    []
"""
from __future__ import annotations

import os
import re
import shutil
import time

from distrain import environment as env

__all__ = ["sweep", "stale", "QUIET_SECONDS"]

QUIET_SECONDS = 10.0
_SESSION = re.compile(r"(?:ompi|prted|prterun)\.(\d+)")


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale(tmpdir: str | None = None, now: float | None = None) -> list[str]:
    """The session directories in ``tmpdir`` (``$TMPDIR`` or /tmp) left by processes gone.

    Returns:
        Their paths: a name ``ompi.PID``/``prted.PID``/``prterun.PID``, a directory owned by
        this user, a PID that no longer runs, nothing changed for :data:`QUIET_SECONDS`.
    """
    tmpdir = tmpdir or os.environ.get(env.TMPDIR) or "/tmp"
    now = time.time() if now is None else now
    found = []
    try:
        entries = list(os.scandir(tmpdir))
    except OSError:
        return found
    for entry in entries:
        match = _SESSION.fullmatch(entry.name)
        if not match:
            continue
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if (entry.is_dir(follow_symlinks=False) and info.st_uid == os.geteuid()
                and now - info.st_mtime > QUIET_SECONDS and not _running(int(match[1]))):
            found.append(entry.path)
    return found


def sweep(tmpdir: str | None = None) -> list[str]:
    """Removes :func:`stale` directories; returns those removed."""
    removed = []
    for path in stale(tmpdir):
        shutil.rmtree(path, ignore_errors=True)
        if not os.path.exists(path):
            removed.append(path)
    return removed
