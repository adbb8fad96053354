"""Resize requests: how distrain-run asks the ranks of an elastic job to stop at a checkpoint.

When discovery lists new hosts, distrain-run sends SIGUSR1 to mpirun, which forwards it to
every rank (:mod:`distrain.run.relaunch`). A rank only notes it; at the next checkpoint
boundary every rank calls :func:`agreed`, one small allreduce, so all ranks stop after the
same step whichever of them the signal reached first. distrain-run sends the signal only
once every rank has announced, by :func:`listen`, that it takes such requests: a program that
never listens is never signalled (SIGUSR1 would end it).

Example:
    >>> listen()            # doctest: +SKIP
    True
    >>> agreed()            # every rank, at the same step   # doctest: +SKIP
    False
"""
from __future__ import annotations

import atexit
import signal
import sys
import threading

from distrain import environment as env
from distrain.protocol import Record, format_record

__all__ = ["elastic_job", "listen", "requested", "agreed"]

_state = {"listening": False, "requested": False}
_lock = threading.Lock()


def elastic_job() -> bool:
    """Whether distrain-run started this rank as part of an elastic job."""
    return env.setting(env.ELASTIC) == "1"


def listen() -> bool:
    """Starts taking resize requests, once per process, if this is an elastic job: installs
    the SIGUSR1 handler and tells distrain-run (a record line on stdout).

    Returns:
        Whether this rank takes requests (False outside an elastic job, or off the main
        thread, where Python cannot install a signal handler).
    """
    with _lock:
        if _state["listening"]:
            return True
        if not elastic_job():
            return False
        try:
            signal.signal(signal.SIGUSR1, _on_request)
        except ValueError:
            return False
        # Python puts its signals back to their default action as it exits, and SIGUSR1's
        # ends a process: a request that arrives then must not turn a finished rank into a
        # killed one.
        atexit.register(signal.signal, signal.SIGUSR1, signal.SIG_IGN)
        _state["listening"] = True
    sys.stdout.write(format_record(Record.ELASTIC, listening=1))
    sys.stdout.flush()
    return True


def _on_request(signum, frame) -> None:
    _state["requested"] = True


def requested() -> bool:
    """Whether a request reached this rank (no collective)."""
    return _state["requested"]


def agreed() -> bool:
    """Whether any rank has a request: an allreduce, so every rank must call it at the same
    point of the program; outside an elastic job False at once, with no collective."""
    if not _state["listening"]:
        return False
    import numpy as np
    from distrain import collectives, ops
    if collectives.size() == 1:
        return _state["requested"]
    flag = collectives.allreduce(np.int32(int(_state["requested"])), op=ops.Max,
                                 name="elastic resize request")
    return bool(int(flag))
