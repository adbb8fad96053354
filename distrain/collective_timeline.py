"""Horovod's timeline of collectives: every collective this rank runs, as a Chrome trace.

``start_timeline(path)`` starts recording on every rank that calls it; each collective adds
two slices on its rank's track, ``NEGOTIATE`` (the wait for every rank's signature) and the
collective itself (``ALLREDUCE``, ``BROADCAST``, ...), named by the tensor label.
``stop_timeline()`` writes the file atomically: rank 0 writes ``path``, rank ``r`` > 0
``path`` with ``.rank<r>`` before the extension, so no two ranks write one file. Open it in
chrome://tracing or ui.perfetto.dev. ``mark_cycles`` is accepted for Horovod's signature
(distrain runs no background cycle).

``DISTRAIN_TIMELINE`` (or Horovod's ``HOROVOD_TIMELINE``) records the whole run the same way:
``init()`` starts it (:func:`start_from_setting`), ``shutdown()`` or the process's exit writes
it.

Example:
    >>> hvd.start_timeline("/tmp/timeline.json")    # doctest: +SKIP
    >>> hvd.allreduce(x)                           # doctest: +SKIP
    >>> hvd.stop_timeline()                        # doctest: +SKIP
"""
from __future__ import annotations

import atexit
import json
import os
import threading
import time

from distrain import environment as env
from distrain.files import write_atomically

__all__ = ["start", "stop", "active", "record", "rank_path", "start_from_setting",
           "stop_from_setting"]

_lock = threading.Lock()
_state: dict = {}
_from_setting: dict = {}   # the path a DISTRAIN_TIMELINE recording writes, while it runs
_exit_hook: list = []


def rank_path(path: str, rank: int) -> str:
    """Where ``rank`` writes a timeline asked for at ``path``."""
    if rank == 0:
        return path
    root, ext = os.path.splitext(path)
    return f"{root}.rank{rank}{ext or '.json'}"


def start(path: str, rank: int) -> None:
    """Starts recording this rank's collectives (a running recording is replaced).

    Raises:
        ValueError: ``path`` is empty or its directory does not exist.
    """
    if not path:
        raise ValueError("start_timeline needs a file path")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ValueError(f"start_timeline: directory {directory} does not exist")
    with _lock:
        _state.update(path=rank_path(path, rank), rank=rank, events=[],
                      origin=time.perf_counter())


def active() -> bool:
    """True while a timeline records."""
    return bool(_state)


def record(phase: str, label: str, start: float, end: float) -> None:
    """Adds one slice (times from ``time.perf_counter()``); does nothing when not recording."""
    with _lock:
        if not _state:
            return
        origin = _state["origin"]
        _state["events"].append({
            "name": phase, "cat": label, "ph": "X", "pid": _state["rank"], "tid": 0,
            "ts": round((start - origin) * 1e6, 3), "dur": round((end - start) * 1e6, 3),
            "args": {"tensor": label}})


def stop() -> str | None:
    """Stops recording and writes the trace.

    Returns:
        The path written, or None when nothing was recording.
    """
    with _lock:
        if not _state:
            return None
        state = dict(_state)
        _state.clear()
    meta = [{"name": "process_name", "ph": "M", "pid": state["rank"], "tid": 0,
             "args": {"name": f"rank {state['rank']}"}}]
    trace = {"traceEvents": meta + state["events"], "displayTimeUnit": "ms"}
    write_atomically(state["path"], lambda stream: stream.write(json.dumps(trace).encode()))
    return state["path"]


def start_from_setting(rank: int) -> None:
    """Starts recording the run when ``DISTRAIN_TIMELINE`` names a file; the trace is written
    by :func:`stop_from_setting` or, failing that, when the process exits.

    Raises:
        ValueError: the file's directory does not exist.
    """
    path = env.setting(env.TIMELINE)
    if path is None:
        return
    try:
        start(path, rank)
    except ValueError as exc:
        raise ValueError(f"{env.TIMELINE}={path!r}: {exc}; create the directory or set the "
                         f"variable to a file in another one") from None
    if not _exit_hook:
        atexit.register(stop_from_setting)
        _exit_hook.append(stop_from_setting)
    _from_setting["path"] = _state["path"]


def stop_from_setting() -> None:
    """Writes the recording :func:`start_from_setting` began, if it still runs."""
    path = _from_setting.pop("path", None)
    if path is not None and _state.get("path") == path:
        stop()
