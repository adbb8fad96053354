"""Collectives matched by name in TensorFlow 1 graphs (``tf.compat.v1`` sessions).

In eager code and in ``tf.function`` every rank issues collectives in program order (a
``tf.function``'s stateful ops keep it), so they run as they come. A TF1 graph gives no such
order: a session runs independent ops in whatever order its threads reach them, so rank 0
may start ``grad/a`` while rank 1 starts ``grad/b``. As Horovod does, such collectives are
matched by name: each one, when its op runs, is put in this rank's *pending* table under its
op name (the same on every rank that built the same graph), and the ranks agree in rounds
which names every rank has pending. A round is one ``allgather_object`` of the pending names;
the names pending everywhere run at once, in sorted order, on every rank, and the ops waiting
for them return. A rank takes part in rounds while it has something pending, so a collective
waits until every rank has reached it, as any collective does; the stall inspector names the
ranks that have not.

One thread at a time drives the rounds; the others wait for their results. A session needs
as many inter-op threads as collectives it may run at once (TensorFlow's default is the
core count).

Example:
    >>> matcher = NameMatcher(allgather_object)      # doctest: +SKIP
    >>> matcher.run("grad/a", lambda: reduce(a))      # doctest: +SKIP
"""
from __future__ import annotations

import threading
import time
from typing import Callable

__all__ = ["NameMatcher"]

_IDLE_PAUSE = 0.0005   # between rounds that matched nothing


class _Pending:
    __slots__ = ("work", "done", "result", "error")

    def __init__(self, work: Callable[[], object]):
        self.work = work
        self.done = threading.Event()
        self.result = None
        self.error: BaseException | None = None


class NameMatcher:
    """Runs collectives once every rank has reached the one of the same name.

    Args:
        exchange: every rank's object, in rank order (``allgather_object``); a collective
            over every rank.
    """

    def __init__(self, exchange: Callable[[object], list]):
        self.exchange = exchange
        self._pending: dict[str, _Pending] = {}
        self._table = threading.Lock()      # guards _pending
        self._driver = threading.Lock()     # held by the thread that runs rounds

    def run(self, name: str, work: Callable[[], object]):
        """``work()``, run when every rank has a collective ``name`` pending.

        Raises:
            ValueError: a collective of this name is pending already on this rank.
            Exception: what ``work`` raised.
        """
        entry = _Pending(work)
        with self._table:
            if name in self._pending:
                raise ValueError(f"two collectives named {name!r} are pending at once; give "
                                 f"each collective in a graph its own name")
            self._pending[name] = entry
        while not entry.done.is_set():
            if self._driver.acquire(timeout=0.001):
                try:
                    if not entry.done.is_set():
                        self._round()
                finally:
                    self._driver.release()
        if entry.error is not None:
            raise entry.error
        return entry.result

    def _round(self) -> None:
        with self._table:
            mine = sorted(self._pending)
        everyone = self.exchange(mine)
        ready = sorted(set.intersection(*(set(names) for names in everyone)))
        if not ready:
            time.sleep(_IDLE_PAUSE)
            return
        for name in ready:
            with self._table:
                entry = self._pending.pop(name)
            try:
                entry.result = entry.work()
            except BaseException as exc:  # handed to the op that waits for it
                entry.error = exc
            entry.done.set()
